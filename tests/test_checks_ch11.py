"""The chapter 11 checks accept the library's augmentation loop and name each classic mistake:
generated drawings under the wrong label, the wrong count, and query leakage."""

from __future__ import annotations

import pytest
import torch

from mlcourse.checks import CheckFailed
from mlcourse.checks.ch11 import (
    check_augment_support,
    check_predict_with_augmentation,
    reference_augment_support,
    reference_predict_with_augmentation,
)


def unimplemented(*args):
    raise NotImplementedError()


def test_the_reference_passes(capsys):
    check_augment_support(reference_augment_support)
    check_predict_with_augmentation(reference_predict_with_augmentation)
    out = capsys.readouterr().out
    assert "✓ check_augment_support" in out and "✓ check_predict_with_augmentation" in out


def all_label_zero(sx, sy, aug, m, seed=0):
    xs, ys = [sx], [sy]
    for c in torch.unique(sy).tolist():
        imgs = sx[sy == c]
        xs.append(aug.generate(imgs, m * len(imgs), seed=seed + c))
        ys.append(torch.zeros(m * len(imgs), dtype=sy.dtype))
    return torch.cat(xs), torch.cat(ys)


def whole_support_at_once(sx, sy, aug, m, seed=0):
    if m == 0:
        return sx, sy
    new = aug.generate(sx, m * len(sx), seed=seed)
    return torch.cat([sx, new]), torch.cat([sy, sy.repeat(m)])


def cycled_labels(sx, sy, aug, m, seed=0):
    x, y = reference_augment_support(sx, sy, aug, m, seed)
    n = len(y) - len(sy)
    return x, torch.cat([sy, torch.arange(n) % (int(sy.max()) + 1)])


def no_seed(sx, sy, aug, m, seed=0):
    return reference_augment_support(sx, sy, aug, m, 0)


def generated_only(sx, sy, aug, m, seed=0):
    x, y = reference_augment_support(sx, sy, aug, m, seed)
    return (x[len(sx):], y[len(sy):]) if m else (x, y)


def one_per_class(sx, sy, aug, m, seed=0):
    xs, ys = [sx], [sy]
    for c in torch.unique(sy).tolist():
        xs.append(aug.generate(sx[sy == c], m, seed=seed + c))
        ys.append(torch.full((m,), c, dtype=sy.dtype))
    return torch.cat(xs), torch.cat(ys)


@pytest.mark.parametrize("fn, message", [
    (unimplemented, "not implemented yet"),
    (all_label_zero, "labelled with another class"),
    (cycled_labels, "labelled with another class"),
    (whole_support_at_once, "different classes at once"),
    (no_seed, "seeds 5 and 6 gave the same images"),
    (generated_only, "expected 24 images"),
    (one_per_class, "expected 24 images"),
])  # fmt: skip
def test_augment_support_mistakes_are_named(fn, message):
    with pytest.raises(CheckFailed, match=message):
        check_augment_support(fn)


def queries_to_augmenter(predict, aug, m, sx, sy, qx, seed=0):
    if m:
        aug.generate(qx, m, seed=seed)  # "more data for the generator"
    return reference_predict_with_augmentation(predict, aug, m, sx, sy, qx, seed)


def queries_in_support(predict, aug, m, sx, sy, qx, seed=0):
    x, y = reference_augment_support(sx, sy, aug, m, seed)
    pseudo = torch.zeros(len(qx), dtype=sy.dtype)
    return predict(torch.cat([x, qx]), torch.cat([y, pseudo]), qx)


def augmented_queries(predict, aug, m, sx, sy, qx, seed=0):
    x, y = reference_augment_support(sx, sy, aug, m, seed)
    return predict(x, y, qx.flip(0))


def not_augmented(predict, aug, m, sx, sy, qx, seed=0):
    return predict(sx, sy, qx)


@pytest.mark.parametrize("fn, message", [
    (unimplemented, "not implemented yet"),
    (queries_to_augmenter, "augmenter was shown"),
    (queries_in_support, "reached the support set"),
    (augmented_queries, "exactly as they came"),
    (not_augmented, "2 generated per real one"),
])  # fmt: skip
def test_predict_with_augmentation_mistakes_are_named(fn, message):
    with pytest.raises(CheckFailed, match=message):
        check_predict_with_augmentation(fn)
