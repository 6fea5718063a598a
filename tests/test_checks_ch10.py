"""The chapter 10 checks accept the statistic network's mean pooling and the importance-sampling
estimate, and name each classic mistake."""

from __future__ import annotations

import math

import pytest
import torch

from mlcourse.checks import CheckFailed
from mlcourse.checks.ch10 import (
    check_importance_log_likelihood,
    check_statistic_pooling,
    linear_gaussian_log_weights,
    reference_importance_log_likelihood,
    reference_pool,
)
from mlcourse.metagen import NeuralStatistician


def unimplemented(*args):
    raise NotImplementedError()


# -- 1. pooling ------------------------------------------------------------------------------
def test_the_reference_pooling_passes(capsys):
    check_statistic_pooling(reference_pool)
    assert "✓ check_statistic_pooling" in capsys.readouterr().out


def test_the_library_statistic_network_pools_like_the_reference():
    """What the check accepts is what NeuralStatistician._statistic does."""
    torch.manual_seed(0)
    model = NeuralStatistician(size=16, context_dim=4, latent_dim=4, width=4, hidden=16).eval()
    h = torch.randn(3, 5, 16)
    with torch.no_grad():
        mu, logvar = model.post_pool(reference_pool(model.instance(h))).chunk(2, dim=-1)
        want_mu, want_logvar = model._statistic(h)
    assert torch.allclose(mu, want_mu) and torch.allclose(logvar, want_logvar)


def in_place_pool(f):
    f /= f.shape[1]
    return f.sum(1)


def position_weighted(f):
    w = torch.linspace(0.5, 1.5, f.shape[1], dtype=f.dtype)
    return (f * w[None, :, None]).sum(1) / w.sum()


@pytest.mark.parametrize("fn, message", [
    (lambda f: f[:, 0], "the first image of each set"),
    (lambda f: f[:, -1], "the last image of each set"),
    (position_weighted, "depends on the order"),
    (lambda f: f.cumsum(1).mean(1), "depends on the order"),
    (lambda f: f.sum(1), "you summed over the set"),
    (lambda f: f.sum(1) / 5, "depends on the set size"),
    (lambda f: f.sum(1) / f.shape[0], "divided the sum by the number of sets B"),
    (lambda f: f.sum(1) / f.shape[2], "divided the sum by the number of features H"),
    (lambda f: f.mean(0), "pooled over axis 0, the \\*sets\\*"),
    (lambda f: f.sum(0), "pooled over axis 0, the \\*sets\\*"),
    (lambda f: f.mean(2), "pooled over the last axis, the \\*features\\*"),
    (lambda f: f.mean(1, keepdim=True), "keepdim=True"),
    (lambda f: f.max(1).values, "the maximum"),
    (in_place_pool, "changed `features` in place"),
    (lambda f: f.mean(1).detach(), "detached"),
    (lambda f: f.mean(1).tolist(), "as a tensor"),
    (unimplemented, "is not implemented yet"),
])  # fmt: skip
def test_each_pooling_mistake_is_named(fn, message):
    with pytest.raises(CheckFailed, match=message):
        check_statistic_pooling(fn)


# -- 2. the importance-sampling estimate ------------------------------------------------------
def test_the_reference_estimator_passes(capsys):
    check_importance_log_likelihood(reference_importance_log_likelihood)
    assert "✓ check_importance_log_likelihood" in capsys.readouterr().out


def test_a_hand_written_stable_estimator_passes(capsys):
    def by_hand(log_w):
        top = log_w.max(dim=0).values
        return top + torch.log(torch.exp(log_w - top).mean(dim=0))

    check_importance_log_likelihood(by_hand)
    assert "✓" in capsys.readouterr().out


def test_the_exact_posterior_gives_every_weight_equal_to_p_x():
    x = torch.linspace(-1, 1, 4, dtype=torch.float64)
    log_w, truth = linear_gaussian_log_weights(x, 9)
    assert torch.allclose(log_w, truth.expand(9, 4), atol=1e-12)
    shifted, _ = linear_gaussian_log_weights(x, 9, shift=1.0, scale=1.5)
    assert (shifted.mean(0) < truth).all()  # Jensen, and the KL of a poorer proposal


def in_place_estimate(log_w):
    top = log_w.max(dim=0).values
    log_w -= top
    return top + torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


@pytest.mark.parametrize("fn, message", [
    (lambda lw: torch.logsumexp(lw, dim=0), "missing - log k"),
    (lambda lw: torch.logsumexp(lw, dim=1) - math.log(lw.shape[0]), "reduced over axis 1, the images"),
    (lambda lw: torch.logsumexp(lw, dim=1) - math.log(lw.shape[1]), "reduced over axis 1, the images"),
    (lambda lw: torch.logsumexp(lw, dim=0) - math.log(lw.shape[1]), "subtracted log M"),
    (lambda lw: torch.log(torch.exp(lw).mean(dim=0)), "underflows"),
    (lambda lw: torch.log(torch.exp(lw.double()).mean(dim=0)), "keep the dtype"),
    (lambda lw: torch.log(torch.exp(lw.double()).mean(dim=0)).to(lw.dtype), "underflows"),
    (lambda lw: lw.mean(dim=0), "mean of the log-weights: the ELBO"),
    (lambda lw: torch.logsumexp(lw, dim=0, keepdim=True) - math.log(lw.shape[0]), "one estimate per image"),
    (lambda lw: torch.logsumexp(lw.flatten(), 0) - math.log(lw.numel()), "one estimate per image"),
    (lambda lw: torch.logsumexp(lw, dim=0) - math.log(lw.shape[0]) + 0.01, "expected"),
    (in_place_estimate, "changed `log_w` in place"),
    (unimplemented, "is not implemented yet"),
])  # fmt: skip
def test_each_estimator_mistake_is_named(fn, message):
    with pytest.raises(CheckFailed, match=message):
        check_importance_log_likelihood(fn)


def test_wrong_axis_is_named_when_the_shapes_agree():
    """k = M: reducing over the images keeps the shape; the check still says which axis."""
    from mlcourse.checks import Check
    from mlcourse.checks.ch10 import _name_estimator_mistake

    log_w = torch.randn(6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(CheckFailed, match="axis 1, the images, instead of axis 0"):
        _name_estimator_mistake(Check("c", "f"), torch.logsumexp(log_w, 1) - math.log(6), log_w)
