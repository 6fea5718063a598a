"""The augmentation loop: labels kept, the queries never reach the augmenter or the support
set, determinism under a seed, shapes and range, the affine arm, pairing with evaluate, and
every bad input's error."""

from __future__ import annotations

import pytest
import torch

from conftest import toy_dataset
from mlcourse.evaluate import compare, evaluate
from mlcourse.metagen.augment import AffineJitter, AugmentedPredictor, augment_support, episode_seed, leaked_queries


class MarkClass:
    """Draws images whose every pixel is the mean of the support pixel (0, 0): a generated
    image tells which class's images it was drawn from. Records everything it was shown."""

    def __init__(self):
        self.seen = []

    def generate(self, support, n, *, seed=0):
        self.seen.append(support.clone())
        g = torch.Generator().manual_seed(seed)
        mark = support[:, :, 0, 0].mean()
        out = torch.rand(n, *support.shape[1:], generator=g) * 0.01
        out[:, :, 0, 0] = mark
        return out


def episode(n_way=3, k=2, q=4, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    sx = torch.rand(n_way * k, 1, size, size, generator=g)
    sy = torch.arange(n_way).repeat_interleave(k)
    sx[:, 0, 0, 0] = sy.float() / 10  # the class, readable from the pixel
    qx = torch.rand(n_way * q, 1, size, size, generator=g)
    return sx, sy, qx


def test_labels_kept_and_support_first():
    sx, sy, _ = episode()
    x, y = augment_support(sx, sy, MarkClass(), per_image=3, seed=0)
    assert x.shape == (6 + 18, 1, 8, 8) and y.shape == (24,)
    assert torch.equal(x[:6], sx) and torch.equal(y[:6], sy)
    # each generated image carries the mark of the class it was drawn from, and that class's label
    assert torch.allclose(x[6:, 0, 0, 0], y[6:].float() / 10)
    assert torch.equal(torch.bincount(y), torch.tensor([8, 8, 8]))


def test_augmenter_sees_one_class_at_a_time_and_never_a_query():
    sx, sy, qx = episode()
    aug = MarkClass()
    predict_seen = []

    def predict(x, y, q):
        predict_seen.append((x, y))
        return torch.zeros(len(q), 3)

    AugmentedPredictor(predict, aug, per_image=2)(sx, sy, qx)
    assert len(aug.seen) == 3
    for shown in aug.seen:
        assert len(torch.unique(shown[:, 0, 0, 0])) == 1  # a single class
        assert len(leaked_queries(shown, qx)) == 0
    x, _ = predict_seen[0]
    assert len(leaked_queries(x, qx)) == 0


def test_a_leaking_augmenter_is_caught():
    sx, sy, qx = episode()

    class Leaky:
        def generate(self, support, n, *, seed=0):
            return qx[:n]

    with pytest.raises(ValueError, match="leaked"):
        AugmentedPredictor(lambda x, y, q: torch.zeros(len(q), 3), Leaky(), per_image=1)(sx, sy, qx)
    assert leaked_queries(torch.cat([sx, qx[5:6]]), qx).tolist() == [5]


def test_deterministic_and_independent_of_episode_order():
    sx, sy, _ = episode()
    a = augment_support(sx, sy, AffineJitter(1.0), 2, seed=episode_seed(0, sx))
    b = augment_support(sx, sy, AffineJitter(1.0), 2, seed=episode_seed(0, sx))
    c = augment_support(sx, sy, AffineJitter(1.0), 2, seed=episode_seed(1, sx))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    sx2, _, _ = episode(seed=5)
    assert episode_seed(0, sx) != episode_seed(0, sx2)


def test_affine_jitter_range_and_sources():
    support = torch.zeros(2, 1, 28, 28)
    support[0, 0, 10:18, 10:18] = 1.0
    out = AffineJitter(0.5).generate(support, 4, seed=0)
    assert out.shape == (4, 1, 28, 28) and out.min() >= 0 and out.max() <= 1
    assert out[1].sum() == 0 and out[3].sum() == 0  # drawn from the blank second image
    assert out[0].sum() > 0 and not torch.equal(out[0], out[2])


def test_zero_per_image_is_the_plain_predictor_on_the_same_episodes():
    ds = toy_dataset(num_classes=6, per_class=8, size=8)

    def nearest_mean(x, y, q):
        means = torch.stack([x[y == c].mean(0) for c in range(int(y.max()) + 1)])
        return -torch.cdist(q.flatten(1), means.flatten(1))

    plain = evaluate(nearest_mean, ds, 3, 1, 2, episodes=10, seed=1, progress=False)
    same = evaluate(AugmentedPredictor(nearest_mean, AffineJitter(), 0), ds, 3, 1, 2, episodes=10, seed=1, progress=False)
    jitter = evaluate(AugmentedPredictor(nearest_mean, AffineJitter(), 2), ds, 3, 1, 2, episodes=10, seed=1, progress=False)
    assert plain.accuracies == same.accuracies
    assert plain.fingerprint == jitter.fingerprint  # the arms pair
    assert compare(jitter, plain).episodes == 10


def test_needs_grad_passes_through():
    def predict(x, y, q):
        return torch.zeros(len(q), 2)

    predict.needs_grad = True
    assert AugmentedPredictor(predict, AffineJitter(), 1).needs_grad is True


def test_bad_inputs():
    sx, sy, _ = episode()
    with pytest.raises(ValueError, match="per_image"):
        augment_support(sx, sy, AffineJitter(), -1)
    with pytest.raises(ValueError, match="per_image"):
        AugmentedPredictor(lambda *a: None, AffineJitter(), 1.5)
    with pytest.raises(ValueError, match="labels of shape"):
        augment_support(sx, sy[:-1], AffineJitter(), 1)
    with pytest.raises(ValueError, match="integers"):
        augment_support(sx, sy.float(), AffineJitter(), 1)
    with pytest.raises(ValueError, match=r"\[S, C, H, W\]"):
        augment_support(sx[0], sy, AffineJitter(), 1)
    with pytest.raises(TypeError, match="generate"):
        augment_support(sx, sy, object(), 1)
    with pytest.raises(TypeError, match="callable"):
        AugmentedPredictor(3, AffineJitter(), 1)
    with pytest.raises(ValueError, match="strength"):
        AffineJitter(0)

    class WrongCount:
        def generate(self, support, n, *, seed=0):
            return torch.zeros(n + 1, *support.shape[1:])

    class OutOfRange:
        def generate(self, support, n, *, seed=0):
            return torch.full((n, *support.shape[1:]), 2.0)

    with pytest.raises(ValueError, match="expected"):
        augment_support(sx, sy, WrongCount(), 1)
    with pytest.raises(ValueError, match=r"not \[0, 1\]"):
        augment_support(sx, sy, OutOfRange(), 1)


# --- the low-data protocol ---------------------------------------------------------------
from mlcourse.metagen.lowdata import lowdata_run, lowdata_split, per_class_accuracy, train_from_scratch  # noqa: E402


def test_lowdata_split_is_disjoint_and_the_test_drawings_do_not_depend_on_k():
    ds = toy_dataset(num_classes=4, per_class=10, size=16)
    train, test = lowdata_split(ds, 3, 5, seed=0)
    assert train.shape == (4, 3) and test.shape == (4, 5)
    for c in range(4):
        assert not set(train[c].tolist()) & set(test[c].tolist())
        assert (ds.targets[train[c]] == c).all() and (ds.targets[test[c]] == c).all()
    again = lowdata_split(ds, 3, 5, seed=0)
    assert torch.equal(train, again[0]) and torch.equal(test, again[1])
    with pytest.raises(ValueError, match="fewer than"):
        lowdata_split(ds, 6, 5)
    with pytest.raises(ValueError, match="k_max"):
        lowdata_split(ds, 0, 5)


def test_classifier_from_scratch_learns_and_the_augmented_arm_only_adds_training_images():
    ds = toy_dataset(num_classes=3, per_class=12, size=16)
    # make the classes easy: class c brightens row c
    images = ds.images.clone()
    for c in range(3):
        images[ds.targets == c, 0, 4 * c : 4 * c + 4] = 255
    ds.images = images
    split = lowdata_split(ds, 4, 6, seed=0)
    acc = lowdata_run(ds, split, 4, seed=0, steps=60, hidden=8)
    assert acc.shape == (3,) and acc.mean() > 0.6
    seen = []

    class Recorder(AffineJitter):
        def generate(self, support, n, *, seed=0):
            seen.append(support)
            return super().generate(support, n, seed=seed)

    lowdata_run(ds, split, 2, Recorder(0.5), 1, seed=0, steps=2, hidden=8)
    shown = torch.cat(seen)
    assert len(shown) == 6 and len(leaked_queries(shown, ds.as_float(split[1].reshape(-1)))) == 0
    with pytest.raises(ValueError, match="k must"):
        lowdata_run(ds, split, 5)
    with pytest.raises(ValueError, match="steps"):
        train_from_scratch(torch.zeros(2, 1, 16, 16), torch.tensor([0, 1]), 2, steps=0)
    model = train_from_scratch(torch.zeros(2, 1, 16, 16), torch.tensor([0, 1]), 2, steps=1, hidden=4)
    assert per_class_accuracy(model, torch.zeros(4, 1, 16, 16), torch.tensor([0, 0, 1, 1]), 2).tolist() in ([1.0, 0.0], [0.0, 1.0])


# --- chapter 11's report of the committed runs ----------------------------------------------
from mlcourse.metagen import augment_report  # noqa: E402


def fake_augment_run():
    def run(arm, m, s, acc):
        return {"method": "protonet", "shots": 1, "arm": arm, "per_image": m, "strength": s, "accuracy": acc, "ci95": 0.01,
                "episodes": 3, "fingerprint": "abc"}

    return {"runs": [run("none", 0, None, 0.9), run("dagan", 4, None, 0.92)],
            "comparisons": [{"method": "protonet", "shots": 1, "arm": "dagan", "per_image": 4, "strength": None,
                             "difference": 0.02, "ci95": 0.005, "p_value": 0.01}],
            "split": "test", "eval_alphabets": ["A"], "eval_seed": 12345, "seconds": 60, "hardware": "cpu", "threads": 1,
            "load_average_start": 1.0}  # fmt: skip


def test_augment_rows_pair_each_arm_with_its_difference():
    rows = augment_report.augment_rows(fake_augment_run())
    assert rows[0]["difference"] is None and rows[1]["difference"] == 0.02
    text = augment_report.format_augment_table(fake_augment_run())
    assert "+2.00 ± 0.50" in text and "dagan" in text


def test_lowdata_rows_average_over_seeds_and_keep_every_seed():
    runs = [{"seed": s, "k": 1, "arm": a, "per_image": m, "accuracy": acc, "per_class": [acc, acc]}
            for s, (x, y) in enumerate([(0.2, 0.3), (0.4, 0.3)]) for a, m, acc in (("none", 0, x), ("dagan", 2, y))]
    run = {"runs": runs + [{"seed": 2, "k": 1, "arm": "none", "per_image": 0, "accuracy": 0.9, "per_class": [0.9, 0.9]}],
           "differences": [{"seed": 0, "k": 1, "arm": "dagan", "per_image": 2, "difference": 0.1, "ci95": 0.05},
                           {"seed": 1, "k": 1, "arm": "dagan", "per_image": 2, "difference": -0.1, "ci95": 0.05}]}  # fmt: skip
    (row,) = augment_report.lowdata_rows(run)
    # seed 2 has no augmented run yet: left out of both means
    assert row["none"] == pytest.approx(0.3) and row["augmented"] == pytest.approx(0.3) and len(row["per_seed"]) == 2
    assert row["seeds"] == [0, 1] and row["difference"] == pytest.approx(0.0, abs=1e-6)
    grid = augment_report.sibling_grid(torch.zeros(2, 1, 4, 4), torch.ones(2, 3, 1, 4, 4))
    assert grid.shape == (8, 1, 4, 4) and grid[0].sum() == 0 and grid[1].sum() == 16
    with pytest.raises(ValueError, match="siblings"):
        augment_report.sibling_grid(torch.zeros(2, 1, 4, 4), torch.ones(3, 3, 1, 4, 4))


def test_the_context_sampler_draws_around_the_support_set():
    """The latent-space arm: an (untrained) Neural Statistician sampled around one class's context,
    deterministic under a seed, a new context per image, labels kept by the augmentation loop."""
    from mlcourse.metagen.augment import ContextSampler
    from mlcourse.metagen.statistician import NeuralStatistician

    torch.manual_seed(0)
    sampler = ContextSampler(NeuralStatistician(size=28, width=8, hidden=32))
    support = torch.rand(3, 1, 28, 28)
    a, b = sampler.generate(support, 4, seed=1), sampler.generate(support, 4, seed=1)
    assert a.shape == (4, 1, 28, 28) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, sampler.generate(support, 4, seed=2))
    x, y = augment_support(support, torch.tensor([0, 1, 1]), sampler, per_image=2, seed=0)
    assert x.shape[0] == 9 and y.tolist() == [0, 1, 1, 0, 0, 1, 1, 1, 1]
    with pytest.raises(TypeError, match="NeuralStatistician"):
        ContextSampler(object())
    with pytest.raises(ValueError, match="context must be"):
        ContextSampler(sampler.model, context="prior")
