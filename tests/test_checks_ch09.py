"""The chapter 09 check accepts FIGR's outer update and names each classic mistake."""

from __future__ import annotations

import pytest
import torch

from mlcourse.checks import CheckFailed
from mlcourse.checks.ch09 import check_figr_outer_update, reference_figr_outer_update


def _mean_step(theta, phis, eps):
    return {n: theta[n] + eps * (torch.stack([p[n] for p in phis]).mean(0) - theta[n]) for n in theta}


def only_generator(tg, td, adapted, eps):
    return _mean_step(tg, [a[0] for a in adapted], eps), {n: t.clone() for n, t in td.items()}


def only_critic(tg, td, adapted, eps):
    return {n: t.clone() for n, t in tg.items()}, _mean_step(td, [a[1] for a in adapted], eps)


def swapped(tg, td, adapted, eps):
    g, d = reference_figr_outer_update(tg, td, adapted, eps)
    return d, g


def summed(tg, td, adapted, eps):
    def s(theta, phis):
        return {n: theta[n] + eps * sum(p[n] - theta[n] for p in phis) for n in theta}

    return s(tg, [a[0] for a in adapted]), s(td, [a[1] for a in adapted])


def first_task(tg, td, adapted, eps):
    return reference_figr_outer_update(tg, td, adapted[:1], eps)


def away(tg, td, adapted, eps):
    return reference_figr_outer_update(tg, td, adapted, -eps)


def no_epsilon(tg, td, adapted, eps):
    return reference_figr_outer_update(tg, td, adapted, 1.0)


def in_place(tg, td, adapted, eps):
    g, d = reference_figr_outer_update(tg, td, adapted, eps)
    for n in tg:
        tg[n].copy_(g[n])
    return g, d


def unimplemented(*args):
    raise NotImplementedError()


def test_the_library_update_passes(capsys):
    check_figr_outer_update(reference_figr_outer_update)
    assert "✓ check_figr_outer_update" in capsys.readouterr().out


@pytest.mark.parametrize("fn, message", [
    (only_generator, "the critic did not move"),
    (only_critic, "the generator did not move"),
    (swapped, "the pair is swapped"),
    (summed, "sum instead of mean"),
    (first_task, "only task 0 of the 3"),
    (away, "wrong direction"),
    (no_epsilon, "ε is ignored"),
    (in_place, "in-place update"),
    (unimplemented, "is not implemented yet"),
])  # fmt: skip
def test_each_mistake_is_named(fn, message):
    with pytest.raises(CheckFailed, match=message):
        check_figr_outer_update(fn)
