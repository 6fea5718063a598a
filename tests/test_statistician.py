"""The Neural Statistician: a permutation-invariant statistic network, the importance-sampling
estimator checked exactly on linear-Gaussian models, and a tiny model trained on synthetic
"block" characters (the set ELBO improves, the support set raises the likelihood of held-out
drawings of its class, the context posterior classifies), generation, errors, save/load."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from mlcourse.data.base import ImageClassDataset
from mlcourse.evaluate import evaluate
from mlcourse.generative.vae import binarize_fixed, gaussian_kl, log_normal
from mlcourse.metagen.common import FewShotGenerator
from mlcourse.metagen.statistician import (
    NeuralStatistician,
    conditional_log_likelihood,
    gaussian_kl_between,
    importance_log_likelihood,
)

TINY = dict(size=16, context_dim=16, latent_dim=16, width=16, hidden=128)


def blocks(num_classes: int, per_class: int = 8, size: int = 16, cell: int = 4, seed: int = 0) -> ImageClassDataset:
    """Synthetic characters: a class switches on a random subset of the 4x4 cells of a 16x16
    grid; its drawings are that pattern shifted by up to one pixel each way (what ``z`` has to
    carry), in gray values 0.03 / 0.96 (dynamic binarisation adds pixel noise)."""
    g = torch.Generator().manual_seed(seed)
    n = size // cell
    images, targets = [], []
    for c in range(num_classes):
        grid = (torch.rand(n, n, generator=g) < 0.3).float()
        proto = grid.repeat_interleave(cell, 0).repeat_interleave(cell, 1)
        for _ in range(per_class):
            dy, dx = torch.randint(-1, 2, (2,), generator=g).tolist()
            images.append(torch.roll(proto, (dy, dx), (0, 1)) * 0.93 + 0.03)
            targets.append(c)
    x = (torch.stack(images)[:, None] * 255).round().to(torch.uint8)
    return ImageClassDataset(x, torch.tensor(targets), [f"c{c}" for c in range(num_classes)], ["g"] * num_classes, name="blocks")


@pytest.fixture(scope="module")
def trained():
    """A tiny statistician trained for 600 steps (about 7 s on one core) on 400 synthetic classes,
    the untrained copy, its history, and 10 held-out classes. Measured with seeds 0-3: final
    ELBO -128 to -144 nats per image from about -172, context KL 5-10 nats per set, 4 support
    images raise the held-out log-likelihood by 2.8-4.7 nats over none and by 10-18 over
    another class's 4 images, 5-way 1-shot accuracy 0.86-0.93."""
    torch.manual_seed(0)
    model = NeuralStatistician(**TINY)
    untrained = copy.deepcopy(model)
    history = model.meta_train(blocks(400, seed=0), steps=600, sets_per_batch=8, set_size=5, lr=1e-3, seed=0,
                               device="cpu", progress=False)  # fmt: skip
    return model, untrained, history, blocks(10, seed=1)


# -- the statistic network -----------------------------------------------------------------
def test_statistic_network_is_permutation_invariant_for_sets_of_1_to_20():
    torch.manual_seed(0)
    model = NeuralStatistician(**TINY).eval()
    images = blocks(1, per_class=20, seed=3).as_float()
    previous = None
    for k in range(1, 21):
        mu, logvar = model.context(images[:k])
        assert mu.shape == logvar.shape == (TINY["context_dim"],)
        perm = torch.randperm(k, generator=torch.Generator().manual_seed(k))
        mu_p, logvar_p = model.context(images[:k][perm])
        assert torch.allclose(mu, mu_p, atol=1e-5) and torch.allclose(logvar, logvar_p, atol=1e-5)
        if previous is not None and k <= 3:
            assert not torch.allclose(mu, previous, atol=1e-4)  # the set's content matters
        previous = mu
    # mean pooling: the set repeated twice has the same statistic (a sum would double it)
    mu, _ = model.context(images[:5])
    assert torch.allclose(model.context(torch.cat([images[:5], images[:5]]))[0], mu, atol=1e-5)
    # a batch of sets [B, S, ...] gives each set's own statistic
    sets = images[:12].view(3, 4, 1, 16, 16)
    mu_b, logvar_b = model.context(sets)
    assert mu_b.shape == (3, TINY["context_dim"])
    for b in range(3):
        assert torch.allclose(mu_b[b], model.context(sets[b])[0], atol=1e-5)


def test_gaussian_kl_between_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mq, lq, mp, lp = (torch.randn(5, 3, generator=g) for _ in range(4))
    d = torch.distributions
    expected = d.kl_divergence(d.Normal(mq, (0.5 * lq).exp()), d.Normal(mp, (0.5 * lp).exp())).sum(-1)
    assert torch.allclose(gaussian_kl_between(mq, lq, mp, lp), expected, atol=1e-5)
    assert torch.allclose(gaussian_kl_between(mq, lq, torch.zeros(3), torch.zeros(3)), gaussian_kl(mq, lq), atol=1e-6)


# -- the importance-sampling estimator, exact on a linear-Gaussian model ---------------------
S = 0.5  # z ~ N(0, 1), x | z ~ N(z, S^2), so p(x) = N(0, 1 + S^2) and p(z | x) = N(x / (1 + S^2), S^2 / (1 + S^2))


def _log_weights(x: torch.Tensor, k: int, shift: float, scale: float, seed: int) -> torch.Tensor:
    """``[k, M]`` log-weights ``log p(x, z_i) - log q(z_i | x)`` for z_i from the posterior with its
    mean moved by ``shift`` standard deviations and its standard deviation multiplied by ``scale``."""
    var = S**2 / (1 + S**2)
    mu, sd = x / (1 + S**2) + shift * math.sqrt(var), scale * math.sqrt(var)
    z = mu + sd * torch.randn(k, x.shape[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    log_joint = log_normal(z[..., None]) + log_normal(x[..., None], z[..., None], 2 * math.log(S))
    return log_joint - log_normal(z[..., None], mu[..., None], 2 * math.log(sd))


def _check_estimator(estimate) -> None:
    """What the exercises check: exact for every k with the true posterior, and convergence from
    below with a poorer proposal, for M = 7 images (k = 7 too, so a wrong axis keeps the shape)."""
    x = torch.linspace(-2.0, 2.5, 7, dtype=torch.float64)
    truth = -0.5 * (math.log(2 * math.pi * (1 + S**2)) + x**2 / (1 + S**2))
    for k in (1, 7, 50):
        est = estimate(_log_weights(x, k, 0.0, 1.0, seed=k))
        assert est.shape == (7,), f"one estimate per image expected, got shape {tuple(est.shape)}"
        assert torch.allclose(est, truth, atol=1e-9), f"k={k}: the exact posterior must give log p(x) exactly"
    errors = []
    for k in (1, 30, 3000):
        est = torch.stack([estimate(_log_weights(x, k, 1.0, 1.5, seed=100 * r + k)) for r in range(20)])
        errors.append((est - truth).mean().item())  # mean over 20 repeats and the 7 images
    assert errors[0] < -0.3, f"k=1 with a shifted proposal is an ELBO, well below log p(x): {errors}"
    assert errors[0] < errors[1] < errors[2] <= 0.02, f"the estimate must rise with k: {errors}"
    assert abs(errors[2]) < 0.02, f"k=3000 must be close to log p(x): {errors}"


def test_importance_log_likelihood_is_exact_and_converges():
    _check_estimator(importance_log_likelihood)


@pytest.mark.parametrize(
    "wrong",
    [
        lambda lw: torch.logsumexp(lw, dim=0),  # forgot - log k
        lambda lw: torch.logsumexp(lw, dim=1) - math.log(lw.shape[0]),  # over the images
        lambda lw: torch.logsumexp(lw, dim=1) - math.log(lw.shape[1]),  # over the images, their count
        lambda lw: lw.mean(dim=0),  # the average log-weight: an ELBO, it does not improve with k
        lambda lw: torch.log(lw.exp().mean(dim=0)) + 0.05,  # biased
    ],
    ids=["no-log-k", "wrong-axis", "wrong-axis-log-M", "mean-log-weight", "biased"],
)
def test_the_estimator_checks_detect_wrong_estimators(wrong):
    with pytest.raises(AssertionError):
        _check_estimator(wrong)


def test_importance_log_likelihood_refuses_bad_shapes():
    with pytest.raises(ValueError, match=r"\[k samples, M images\]"):
        importance_log_likelihood(torch.zeros(5))
    with pytest.raises(ValueError, match="k = 0"):
        importance_log_likelihood(torch.zeros(0, 3))


class LinearGaussianStatistician:
    """c ~ N(0, I), z | c ~ N(c, I), x | z ~ N(z, S^2 I): then x | c ~ N(c, (1 + S^2) I), and the
    exact posterior of c given a set D of K points is N(sum(D) / (1 + S^2) / P, I / P) with
    P = 1 + K / (1 + S^2). The context network and q(z | x, c) are these exact posteriors."""

    context_dim = 2

    def context(self, support):
        precision = 1 + support.shape[0] / (1 + S**2)
        mu = support.sum(0) / (1 + S**2) / precision
        return mu, torch.full_like(mu, -math.log(precision))

    def features(self, x):
        return x

    def posterior_z(self, h, c):
        var = S**2 / (1 + S**2)
        return (c + h / S**2) * var, torch.full_like(c, math.log(var))

    def prior_z(self, c):
        return c, torch.zeros_like(c)

    def log_px(self, x, z, c):
        return log_normal(x, z, 2 * math.log(S))

    def predictive(self, x, support):
        """Exact log E_q(c|D) p(x | c) = log N(x; mu_c, (var_c + 1 + S^2) I)."""
        if support is None:
            mu, var = torch.zeros(2, dtype=x.dtype), 1.0
        else:
            mu, logvar = self.context(support)
            var = logvar.exp()
        return log_normal(x, mu, torch.log(torch.as_tensor(var, dtype=x.dtype) + 1 + S**2))


def test_conditional_log_likelihood_converges_to_the_exact_predictive():
    model = LinearGaussianStatistician()
    g = torch.Generator().manual_seed(0)
    support = 1.5 + torch.randn(4, 2, generator=g, dtype=torch.float64)
    x = 1.5 + torch.randn(6, 2, generator=g, dtype=torch.float64)
    for d, empty in ((support, "posterior"), (None, "prior"), (support[:0], "prior")):  # four points, none, an empty set
        exact = model.predictive(x, d if d is not None and len(d) else None)
        est = conditional_log_likelihood(model, x, d, k=20000, seed=1, empty=empty)
        assert est.shape == (6,)
        assert torch.allclose(est, exact, atol=0.03), (est - exact)
        small = torch.stack([conditional_log_likelihood(model, x, d, k=1, seed=s, empty=empty) for s in range(200)])
        assert (small.mean(0) - exact).mean() < -0.05  # k = 1 is a bound: low in expectation
    # With no support set the default proposes c from the image's own context posterior; here both
    # proposals are the exact posteriors, so every weight is p(x): exact for every k, even k = 1.
    exact = model.predictive(x, None)
    for d in (None, support[:0]):
        for k in (1, 7):
            assert torch.allclose(conditional_log_likelihood(model, x, d, k=k, seed=2), exact, atol=1e-9)
    with pytest.raises(ValueError, match="empty must be"):
        conditional_log_likelihood(model, x, None, k=3, empty="uniform")
    # the support moves the predictive towards its points: here, where x lies
    assert (model.predictive(x, support) > model.predictive(x, None)).all()
    a = conditional_log_likelihood(model, x, support, k=50, seed=3)
    assert torch.equal(a, conditional_log_likelihood(model, x, support, k=50, seed=3))
    assert not torch.equal(a, conditional_log_likelihood(model, x, support, k=50, seed=4))
    assert torch.allclose(a, conditional_log_likelihood(model, x, support, k=50, seed=3, chunk=7), atol=0.5)


# -- training on tiny data -------------------------------------------------------------------
def _held_out_sets(test: ImageClassDataset, seed: int = 0) -> torch.Tensor:
    """Every held-out class as one binarised set of 8 drawings: ``[10, 8, 1, 16, 16]``."""
    x = torch.stack([test.as_float(idx) for idx in test.indices_by_class()])
    return binarize_fixed(x, seed=seed)


def test_training_improves_the_set_elbo(trained):
    model, untrained, history, test = trained
    assert set(history.values) >= {"loss", "elbo", "reconstruction", "kl_z", "kl_c", "alpha"}
    first, last = sum(history["elbo"][:20]) / 20, history.last("elbo", 20)
    assert last > first + 20, (first, last)  # nats per image
    assert history["alpha"][0] == 1.0 and history["alpha"][-1] == 0.0
    sets = _held_out_sets(test)
    with torch.no_grad():
        before = untrained.set_elbo(sets, generator=torch.Generator().manual_seed(0))
        after = model.set_elbo(sets, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(after.elbo, after.reconstruction - after.kl_z - after.kl_c)
    assert torch.allclose(after.loss, -after.elbo_per_image.mean())  # alpha = 0: the loss is the bound
    gain = after.elbo_per_image - before.elbo_per_image
    assert gain.mean() > 20 and (gain > 0).all(), gain  # nats per image on every held-out class
    assert history.last("kl_c", 20) > 2.0  # the context is used: not collapsed onto the prior


def test_support_of_the_class_raises_the_likelihood_of_its_held_out_drawings(trained):
    model, _, _, test = trained
    own, none, other = [], [], []
    for c, idx in enumerate(test.indices_by_class()):
        support, x = test.as_float(idx[:4]), binarize_fixed(test.as_float(idx[4:]), seed=c)
        other_support = test.as_float(test.indices_by_class()[(c + 1) % test.num_classes][:4])
        own.append(conditional_log_likelihood(model, x, support, k=50, seed=c))
        none.append(conditional_log_likelihood(model, x, None, k=50, seed=c))
        other.append(conditional_log_likelihood(model, x, other_support, k=50, seed=c))
    own, none, other = torch.cat(own), torch.cat(none), torch.cat(other)
    assert own.shape == (40,)
    assert (own - none).mean() > 1.0, ((own - none).mean(), own.mean(), none.mean())
    assert (own - other).mean() > 4.0, ((own - other).mean(), own.mean(), other.mean())  # its own class, not any set
    assert (own > other).float().mean() > 0.75


def test_predict_classifies_through_the_context_posterior(trained):
    model, _, _, test = trained
    result = evaluate(model.predict, test, n_way=5, k_shot=1, q_query=5, episodes=40, seed=0, progress=False)
    assert result.mean > 0.6, result  # chance is 0.20
    idx = test.indices_by_class()
    sx = torch.cat([test.as_float(idx[c][:2]) for c in range(3)])
    sy = torch.tensor([0, 0, 1, 1, 2, 2])
    logits = model.predict(sx, sy, test.as_float(idx[1][2:5]))
    assert logits.shape == (3, 3) and (logits <= 1e-5).all()  # minus a KL
    # a query equal to a one-image support set is at KL 0 from it: the highest possible logit
    same = model.predict(sx[::2], torch.tensor([0, 1, 2]), sx[::2])
    assert torch.allclose(same.diagonal(), torch.zeros(3), atol=1e-4)


# -- generation, errors, save and load ------------------------------------------------------
def test_generate_is_deterministic_under_seed(trained):
    model, _, _, test = trained
    support = test.as_float(test.indices_by_class()[0][:4])
    a = model.generate(support, 6, seed=0)
    assert a.shape == (6, 1, 16, 16) and a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, model.generate(support, 6, seed=0))
    assert not torch.equal(a, model.generate(support, 6, seed=1))
    assert not torch.allclose(a, model.generate(test.as_float(test.indices_by_class()[1][:4]), 6, seed=0))
    binary = model.generate(support, 6, seed=0, mode="sample")
    assert ((binary == 0) | (binary == 1)).all()
    assert torch.equal(binary, model.generate(support, 6, seed=0, mode="sample"))
    sampled_c = model.generate(support, 6, seed=0, context="sample")
    assert not torch.allclose(sampled_c, a)
    # the drawings look like the class: closer to its pattern than to another class's
    target, wrong = support.mean(0), test.as_float(test.indices_by_class()[1][:4]).mean(0)
    gen = model.generate(support, 16, seed=2)
    assert ((gen - target).pow(2).mean() < (gen - wrong).pow(2).mean()).item()


def test_bad_inputs_raise_clear_errors():
    model = NeuralStatistician(**TINY)
    good = torch.rand(3, 1, 16, 16)
    with pytest.raises(ValueError, match="empty"):
        model.generate(good[:0], 4)
    with pytest.raises(ValueError, match=r"this model was built for \(1, 16, 16\)"):
        model.generate(torch.rand(3, 1, 28, 28), 4)
    with pytest.raises(ValueError, match="one image"):
        model.generate(good[0], 4)
    with pytest.raises(ValueError, match="one image"):
        model.context(good[0])
    with pytest.raises(ValueError, match="mode"):
        model.generate(good, 4, mode="median")
    with pytest.raises(ValueError, match="n must be"):
        model.generate(good, 0)
    with pytest.raises(ValueError, match=r"sets must be \[B sets, S images"):
        model.set_elbo(good)
    with pytest.raises(ValueError, match="binary"):
        conditional_log_likelihood(model, good, good, k=2)
    with pytest.raises(ValueError, match="k must be"):
        conditional_log_likelihood(model, (good > 0.5).float(), good, k=0)
    with pytest.raises(ValueError, match="no gaps"):
        model.predict(good, torch.tensor([0, 0, 2]), good)
    with pytest.raises(ValueError, match="was built for"):
        model.meta_train(blocks(3, size=32), steps=1, progress=False, device="cpu")
    with pytest.raises(ValueError, match="set_size = 9"):
        model.meta_train(blocks(3), steps=1, set_size=9, progress=False, device="cpu")


def test_save_load_round_trip(trained, tmp_path):
    model, _, _, test = trained
    path = model.save(tmp_path / "ns.pt")
    loaded = FewShotGenerator.load(path)
    assert type(loaded) is NeuralStatistician and loaded.method_name == "statistician"
    assert loaded._config == {**TINY, "channels": 1, "stages": None}
    support = test.as_float(test.indices_by_class()[2][:3])
    assert torch.equal(model.generate(support, 5, seed=7), loaded.generate(support, 5, seed=7))
    assert torch.equal(NeuralStatistician.load(path).generate(support, 5, seed=7, mode="sample"),
                       model.generate(support, 5, seed=7, mode="sample"))  # fmt: skip


def test_a_time_budget_anneals_alpha_to_zero_before_it_ends():
    """With far more steps than the budget allows, alpha follows the clock: the run ends on the true ELBO."""
    torch.manual_seed(0)
    model = NeuralStatistician(**TINY)
    history = model.meta_train(blocks(20, seed=0), steps=10**6, time_budget=1.5, sets_per_batch=2, set_size=3, alpha=1.0,
                               seed=0, device="cpu", progress=False)  # fmt: skip
    assert history["alpha"][0] > 0.5 and history["alpha"][-1] == 0.0 and len(history["alpha"]) < 10**6
