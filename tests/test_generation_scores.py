"""Few-shot generation scores: each reference row lands where it must, bad input is refused."""

from __future__ import annotations

import pytest
import torch

from mlcourse.evaluation import compare_scores, copy_with_jitter, memorisation_ratio, real_vs_real, score_characters
from mlcourse.metrics import random_feature_net


def synthetic_sets(n_chars: int = 10, per_char: int = 24, k: int = 4, seed: int = 0):
    """Characters made of a few random strokes; each drawing shifts them and adds noise."""
    g = torch.Generator().manual_seed(seed)
    sets = []
    for _ in range(n_chars):
        base = torch.zeros(1, 28, 28)
        for _ in range(3):  # three random bars
            r, c = torch.randint(4, 20, (2,), generator=g).tolist()
            if torch.rand(1, generator=g) < 0.5:
                base[0, r : r + 2, c : c + 8] = 1
            else:
                base[0, r : r + 8, c : c + 2] = 1
        drawings = []
        for _ in range(per_char):
            dy, dx = torch.randint(-2, 3, (2,), generator=g).tolist()
            x = torch.roll(base, (dy, dx), dims=(1, 2)) + 0.15 * torch.rand(1, 28, 28, generator=g)
            drawings.append(x.clamp(0, 1))
        drawings = torch.stack(drawings)
        sets.append((drawings[:k], drawings[k:]))
    return sets


@pytest.fixture(scope="module")
def net():
    return random_feature_net(0)


@pytest.fixture(scope="module")
def sets():
    return synthetic_sets()


def exact_copy(support, n, seed):
    g = torch.Generator().manual_seed(seed)
    return support[torch.randint(len(support), (n,), generator=g)]


def noise(support, n, seed):
    return torch.rand(n, *support.shape[1:], generator=torch.Generator().manual_seed(seed))


def test_memorisation_ranks_a_copied_support_set_worst(net, sets):
    real = score_characters(*real_vs_real(sets), net, samples=12, ways=4)
    jitter = score_characters(copy_with_jitter(0.1), sets, net, samples=12, ways=4)  # small jitter
    copy = score_characters(exact_copy, sets, net, samples=12, ways=4)
    m = {name: s.summary()["memorisation"]["mean"] for name, s in (("real", real), ("jitter", jitter), ("copy", copy))}
    assert m["copy"] == pytest.approx(0.0, abs=1e-9)
    assert m["copy"] < m["jitter"] < m["real"]
    assert 0.6 < m["real"] < 1.6  # new real drawings sit as far from the support as real drawings do
    paired = compare_scores(copy, jitter, names=("copy", "jitter"))["memorisation"]
    assert paired.difference < 0 and paired.significant


def test_recognisability_and_diversity_separate_real_drawings_from_noise(net, sets):
    real = score_characters(*real_vs_real(sets), net, samples=12, ways=4).summary()
    rand = score_characters(noise, sets, net, samples=12, ways=4).summary()
    assert real["recognisability"]["mean"] > 0.8 and rand["recognisability"]["mean"] < 0.6
    assert real["fd"]["mean"] < rand["fd"]["mean"] and real["pooled_fd"] < rand["pooled_fd"]  # 100 pooled real drawings > 64 dims

    def one_image(support, n, seed):  # no variety at all
        return support[:1].repeat(n, 1, 1, 1)

    frozen = score_characters(one_image, sets, net, samples=12, ways=4).summary()
    assert frozen["diversity"]["mean"] < 1e-6 < real["diversity"]["mean"]


def test_scores_are_deterministic_and_paired_by_character(net, sets):
    a = score_characters(copy_with_jitter(0.5), sets, net, samples=8, ways=4, seed=3)
    b = score_characters(copy_with_jitter(0.5), sets, net, samples=8, ways=4, seed=3)
    assert a.fd == b.fd and a.recognisability == b.recognisability
    other = score_characters(copy_with_jitter(0.5), sets[:5], net, samples=8, ways=4)
    with pytest.raises(ValueError, match="different characters"):
        compare_scores(a, other)


def test_memorisation_ratio_by_hand():
    support = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    real = torch.tensor([[0.0, 2.0], [10.0, 2.0]])  # 2 away from the nearest support point
    fake = torch.tensor([[0.0, 1.0], [9.0, 0.0]])  # 1 away
    assert memorisation_ratio(fake, support, real) == pytest.approx(0.5)


@pytest.mark.parametrize("kwargs, message", [
    ({"ways": 20}, "at least 20 characters"),
    ({"samples": 1}, "samples must be at least 2"),
])  # fmt: skip
def test_bad_arguments(net, sets, kwargs, message):
    with pytest.raises(ValueError, match=message):
        score_characters(exact_copy, sets, net, **{"samples": 8, "ways": 4, **kwargs})


def test_a_generator_returning_the_wrong_shape_is_named(net, sets):
    with pytest.raises(ValueError, match="generate returned"):
        score_characters(lambda s, n, seed: torch.rand(n, 1, 14, 14), sets, net, samples=8, ways=4)
