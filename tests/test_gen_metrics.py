"""Generation metrics: Fréchet distance, k-NN precision/recall, class consistency, the cached
feature net. Image-level checks use a fixed *random* Conv-4 (documented in mlcourse.metrics:
random convolutional features already tell blur, noise and displacement from real strokes)
on synthetic pen strokes, so they need no data and no training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mlcourse.data.base import ImageClassDataset
from mlcourse.metrics import (
    NearestClassMean,
    class_consistency,
    extract_features,
    feature_net,
    frechet_distance,
    generation_report,
    precision_recall,
    random_feature_net,
    trace_sqrt_product,
)


def strokes(n: int, seed: int, classes: int = 8, size: int = 28, jitter: float = 1.5):
    """Synthetic characters: each class is 3 line segments; each image redraws them with its
    endpoints jittered (a different "drawer"). Bright strokes on black, float in [0, 1]."""
    g = torch.Generator().manual_seed(1234)  # the classes are the same for every seed
    protos = torch.rand(classes, 3, 2, 2, generator=g) * (size - 8) + 4  # [class, segment, end, xy]
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    ends = protos[y] + jitter * torch.randn(n, 3, 2, 2, generator=g)
    coords = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij"), -1).float() + 0.5
    p = coords.view(1, 1, size * size, 2)
    a, b = ends[:, :, 0].unsqueeze(2), ends[:, :, 1].unsqueeze(2)  # [n, 3, 1, 2]
    ab = b - a
    t = (((p - a) * ab).sum(-1) / ab.pow(2).sum(-1).clamp(min=1e-6)).clamp(0, 1)
    dist = (p - (a + t.unsqueeze(-1) * ab)).norm(dim=-1)  # [n, 3, HW]
    ink = (1.6 - dist).clamp(0, 1).amax(1)
    return ink.view(n, 1, size, size), y


@pytest.fixture(scope="module")
def net():
    return random_feature_net(seed=0)


@pytest.fixture(scope="module")
def feats(net):
    a, _ = strokes(300, seed=1)
    b, _ = strokes(300, seed=2)
    return extract_features(a, net), extract_features(b, net)


# -- Fréchet distance ---------------------------------------------------------------------
def test_trace_sqrt_product_on_known_matrices():
    a, b = torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64), torch.tensor([4.0, 1.0, 0.0], dtype=torch.float64)
    assert trace_sqrt_product(torch.diag(a), torch.diag(b)).item() == pytest.approx(2 + 2 + 0)
    g = torch.Generator().manual_seed(0)
    m = torch.randn(5, 5, generator=g, dtype=torch.float64)
    s = m @ m.T
    assert trace_sqrt_product(s, s).item() == pytest.approx(torch.trace(s).item(), rel=1e-9)
    # a non-commuting pair, against the eigenvalues of the (non-symmetric) product itself
    m2 = torch.randn(5, 5, generator=g, dtype=torch.float64)
    s2 = m2 @ m2.T
    expected = torch.linalg.eigvals(s @ s2).real.clamp(min=0).sqrt().sum().item()
    assert trace_sqrt_product(s, s2).item() == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_of_a_set_to_itself_and_to_a_shifted_copy():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(200, 8, generator=g, dtype=torch.float64) @ torch.randn(8, 8, generator=g, dtype=torch.float64)
    assert frechet_distance(f, f) == pytest.approx(0.0, abs=1e-8)
    shift = torch.arange(8, dtype=torch.float64) / 4
    # same covariance, so only the squared distance of the means remains
    assert frechet_distance(f, f + shift) == pytest.approx(shift.pow(2).sum().item(), rel=1e-8)
    # scaling by 2: cov 4S, tr(S + 4S - 2 * 2S) = tr(S), plus the moved mean
    mu = f.mean(0)
    expected = mu.pow(2).sum().item() + torch.trace(torch.cov(f.T)).item()
    assert frechet_distance(f, 2 * f) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_rejects_too_few_samples():
    with pytest.raises(ValueError, match=r"50 samples of 64-dimensional features; use at least 65"):
        frechet_distance(torch.randn(50, 64), torch.randn(100, 64))
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(torch.randn(100, 64), torch.randn(100, 32))


def test_real_split_is_much_closer_than_noise_blur_or_shift(net, feats):
    fa, fb = feats
    b, _ = strokes(300, seed=2)
    noise = torch.rand(300, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    blurred = F.avg_pool2d(b, 5, stride=1, padding=2)
    shifted = torch.zeros_like(b)
    shifted[..., 6:, 6:] = b[..., :-6, :-6]
    real_vs_real = frechet_distance(fa, fb)
    for name, other in (("noise", noise), ("blurred", blurred), ("shifted", shifted)):
        fd = frechet_distance(fa, extract_features(other, net))
        assert fd > 10 * real_vs_real, f"{name}: FD {fd:.4g} vs real-vs-real {real_vs_real:.4g}"


# -- precision / recall -------------------------------------------------------------------
def test_precision_recall_sanity():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(100, 4, generator=g)
    assert precision_recall(a, a) == (1.0, 1.0)
    assert precision_recall(a, a + 100.0) == (0.0, 0.0)



def test_precision_recall_of_fakes_covering_half_the_data():
    """Fakes = the reals with x_0 > 0: realistic (precision 1), not diverse (recall low). The
    reals they are (about half) are covered exactly; the k-NN balls of the fakes also reach
    some reals across the x_0 = 0 boundary. Measured recall over seeds 0-29: 0.60-0.67 with
    1,000 points (0.62-0.81 with 100 points, too close to a threshold of 0.8)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1000, 4, generator=g)
    half = a[a[:, 0] > 0]
    p, r = precision_recall(a, half)
    assert p == 1.0
    assert len(half) / len(a) <= r < 0.75  # a recall of 1 (say precision returned twice) fails


def test_precision_recall_of_a_dropped_mode_is_exactly_half():
    """Two far-apart clusters of 100 reals; fakes = the reals of one of them. Every real of the
    kept cluster is a fake's centre (covered), no k-NN ball reaches the other cluster."""
    g = torch.Generator().manual_seed(0)
    shift = torch.tensor([20.0, 0.0, 0.0, 0.0])
    a = torch.cat([torch.randn(100, 4, generator=g), torch.randn(100, 4, generator=g) + shift])
    assert precision_recall(a, a[:100]) == (1.0, 0.5)
    assert precision_recall(a[:100], a) == (0.5, 1.0)  # and the other way round


def test_precision_recall_on_a_line_matches_hand_computation():
    """Reals at 0, 1, 2, 3, 4 on a line. k = 1: every ball has radius 1; k = 2: radii 2, 1, 1, 1, 2
    (the end points' second neighbours are 2 away). Fakes at 4.5, 5.5 and 7."""
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0]])
    fake = torch.tensor([[4.5], [5.5], [7.0]])
    # k=1: 4.5 is in the ball of 4; 5.5 and 7 are outside. k=2: 5.5 is 1.5 from 4 (radius 2).
    assert precision_recall(real, fake, k=1)[0] == pytest.approx(1 / 3)
    assert precision_recall(real, fake, k=2)[0] == pytest.approx(2 / 3)
    # recall, fake radii for k=1: 1, 1, 1.5 (the fakes' nearest other fakes); reals within: 4 (0.5 from 4.5)
    assert precision_recall(real, fake, k=1)[1] == pytest.approx(1 / 5)
    # k=2: radii 2.5, 1.5, 2.5: 4.5 covers 2, 3 and 4 (2 is 2.5 away): 3 of 5 reals
    assert precision_recall(real, fake, k=2)[1] == pytest.approx(3 / 5)


def test_precision_recall_on_images(net, feats):
    fa, fb = feats
    p, r = precision_recall(fa, fb)
    # measured on stroke sets of seeds (1, 2), (3, 4) ... (9, 10) and feature nets 0-2:
    # precision 0.83-0.89, recall 0.84-0.89 (k off by one: 0.74-0.82 / 0.90-0.92); noise: 0.00
    assert p > 0.75 and r > 0.75
    noise = extract_features(torch.rand(300, 1, 28, 28, generator=torch.Generator().manual_seed(0)), net)
    p, r = precision_recall(fa, noise)
    assert p < 0.1 and r < 0.1


def test_precision_recall_rejects_too_few_samples():
    with pytest.raises(ValueError, match=r"got 3 samples .* need at least 4"):
        precision_recall(torch.randn(3, 8), torch.randn(10, 8), k=3)


# -- class consistency --------------------------------------------------------------------
def test_class_consistency_with_a_given_predictor():
    support_x, support_y = torch.rand(6, 1, 28, 28), torch.tensor([0, 0, 1, 1, 2, 2])
    gen_x, intended = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 2])

    def always_class_2(sx, sy, qx):
        return F.one_hot(torch.full((len(qx),), 2), 3).float()

    assert class_consistency(support_x, support_y, gen_x, intended, predictor=always_class_2) == 0.5
    with pytest.raises(ValueError, match="intended labels"):
        class_consistency(support_x, support_y, gen_x, intended[:3], predictor=always_class_2)


def test_class_consistency_nearest_class_mean(net):
    support, sy = strokes(40, seed=5)  # 5 real images per class
    generated, y = strokes(80, seed=6)  # "generated" = new drawings of the intended classes
    good = class_consistency(support, sy, generated, y, net=net)
    wrong = class_consistency(support, sy, generated, (y + 1) % 8, net=net)
    assert good > 0.8 and wrong < 0.2
    scores = NearestClassMean(net)(support, sy, generated)
    assert scores.shape == (80, 8)


# -- features, reports, determinism -------------------------------------------------------
def test_features_reject_tanh_range_images(net):
    with pytest.raises(ValueError, match=r"\(x \+ 1\) / 2"):
        extract_features(torch.rand(4, 1, 28, 28) * 2 - 1, net)
    u8 = (torch.rand(4, 1, 28, 28) * 255).to(torch.uint8)
    assert torch.allclose(extract_features(u8, net), extract_features(u8.float() / 255, net))


def test_generation_report_is_deterministic(net):
    a, _ = strokes(200, seed=1)
    b, _ = strokes(200, seed=3)
    r1, r2 = generation_report(a, b, net, n=150, seed=7), generation_report(a, b, net, n=150, seed=7)
    assert r1 == r2 and r1.n_real == r1.n_fake == 150
    assert math.isfinite(r1.fd) and "FD" in str(r1)
    assert random_feature_net(seed=0)(a[:5]).shape == (5, 64)
    assert torch.equal(random_feature_net(seed=0)(a[:5]), random_feature_net(seed=0)(a[:5]))


def test_feature_net_is_trained_once_then_loaded_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MLCOURSE_CACHE", str(tmp_path))
    x, y = strokes(64, seed=0, classes=8, size=16)  # 16x16: the smallest Conv-4 takes, for speed
    data = ImageClassDataset((x * 255).to(torch.uint8), y, [f"c{i}" for i in range(8)], ["g"] * 8, name="strokes")
    cpu = torch.device("cpu")
    net1 = feature_net(dataset=data, steps=1, progress=False, device=cpu)
    files = list((tmp_path / "feature_net").glob("*.pt"))
    assert len(files) == 1 and "16px-seed0-1steps" in files[0].name and net1.cache_path == files[0]
    net2 = feature_net(dataset=data, steps=1, progress=False, device=cpu)  # loaded, not trained
    assert torch.equal(net1(x[:4]), net2(x[:4]))
    assert "trained 1 steps" in net2.description and net2.dim == 64
    net3 = feature_net(dataset=data, steps=2, progress=False, device=cpu)  # another key, another file
    assert len(list((tmp_path / "feature_net").glob("*.pt"))) == 2
    assert not torch.equal(net1(x[:4]), net3(x[:4]))
