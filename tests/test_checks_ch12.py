"""The chapter 12b checks accept the library's preparation steps and name each classic mistake:
an image left inverted or inverted twice, the wrong size, a missing channel axis, ink off
centre or at the wrong scale, an input changed in place."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mlcourse.checks import CheckFailed
from mlcourse.checks.ch12 import (
    check_crop_and_resize,
    check_strokes_bright,
    ink_drawing,
    pen_drawing,
    reference_crop_and_resize,
    reference_strokes_bright,
)
from mlcourse.metagen.personal import FILL, ink_box


def unimplemented(*args):
    raise NotImplementedError()


# -- 1. polarity ------------------------------------------------------------------------------
def test_the_reference_polarity_passes(capsys):
    check_strokes_bright(reference_strokes_bright)
    assert "✓ check_strokes_bright" in capsys.readouterr().out


def in_place_invert(grey):
    grey *= -1
    grey += 1
    return grey


@pytest.mark.parametrize("fn, message", [
    (lambda g: g, "came back unchanged"),
    (lambda g: g.copy(), "came back unchanged"),
    (lambda g: 1 - g, "you inverted a picture whose strokes already were bright"),
    (lambda g: 1 - g if g.mean() > 0.5 else g.copy(), "dim paper"),
    (lambda g: 1 - g if np.median(g) > 0.5 else g.copy(), "dim paper"),
    (lambda g: 1 - g if np.median(g) > 0.3 else g.copy(), "light-grey background"),
    (lambda g: (1 - g)[1:], "of shape"),
    (lambda g: (1 - g).tolist(), "as a numpy array"),
    (in_place_invert, "changed its input in place"),
    (unimplemented, "is not implemented yet"),
])  # fmt: skip
def test_each_polarity_mistake_is_named(fn, message):
    with pytest.raises(CheckFailed, match=message):
        check_strokes_bright(fn)


# -- 2. crop and resize -----------------------------------------------------------------------
def test_the_reference_crop_passes(capsys):
    check_crop_and_resize(reference_crop_and_resize)
    assert "✓ check_crop_and_resize" in capsys.readouterr().out


def a_plain_solution(ink, size=28):
    """What a learner might write: a bounding box of the pixels above 0, no trimming, the
    square cut with numpy padding, PIL's bilinear resize. Different details, still right."""
    ys, xs = np.nonzero(ink > 0)
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = int(round(max(bottom - top, right - left) / FILL))
    cy, cx = (top + bottom) // 2, (left + right) // 2
    padded = np.pad(ink, side)
    square = padded[cy + side - side // 2 : cy + side - side // 2 + side, cx + side - side // 2 : cx + side - side // 2 + side]
    resized = Image.fromarray(square.astype(np.float32), "F").resize((size, size), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.clip(np.asarray(resized), 0, 1)).float()[None]


def test_a_differently_written_correct_solution_passes(capsys):
    check_crop_and_resize(a_plain_solution)
    assert "✓ check_crop_and_resize" in capsys.readouterr().out


def stretched(ink, size=28):
    ys, xs = np.nonzero(ink > 0)
    crop = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    resized = Image.fromarray(crop.astype(np.float32), "F").resize((size, size), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(resized).copy()).float()[None]


def in_place_crop(ink, size=28):
    np.clip(ink, 0.2, 1, out=ink)  # "remove the noise", written back into the caller's array
    return reference_crop_and_resize(ink, size)


def resized(ink, shape):
    """The whole page resized (width, height): no crop at all."""
    picture = Image.fromarray(ink.astype(np.float32), "F").resize(shape, Image.Resampling.BILINEAR)
    return torch.from_numpy(np.clip(np.asarray(picture), 0, 1)).float()[None]


@pytest.mark.parametrize("fn, message", [
    (lambda ink, size: 1 - reference_crop_and_resize(ink, size), "the result is inverted"),
    (lambda ink, size: reference_crop_and_resize(ink, 28), "but size = 16 was asked for"),
    (lambda ink, size: reference_crop_and_resize(ink, size)[0], "the channel axis is missing"),
    (lambda ink, size: reference_crop_and_resize(ink, size).numpy(), "got a numpy array"),
    (lambda ink, size: (reference_crop_and_resize(ink, size) * 255).to(torch.uint8), "expected float values"),
    (lambda ink, size: reference_crop_and_resize(ink, size) * 2, r"values must lie in \[0, 1\]"),
    (lambda ink, size: resized(ink, (size, size)), "the ink is not centred"),
    (lambda ink, size: resized(ink, (size, 2 * size)), "not square"),
    (stretched, "fills 1.00 of the image"),
    (in_place_crop, "changed its input in place"),
    (lambda ink, size: torch.zeros(1, size, size), "nearly\\) empty"),
    (unimplemented, "is not implemented yet"),
])  # fmt: skip
def test_each_crop_mistake_is_named(fn, message):
    with pytest.raises(CheckFailed, match=message):
        check_crop_and_resize(fn)


def test_the_pictures_the_checks_use():
    pen = pen_drawing(0)
    assert np.median(pen) > 0.8 and pen.min() < 0.2  # dark strokes on light paper
    ink = ink_drawing(4, 120, 80)
    assert ink.min() == 0 and ink.max() == 1 and np.median(ink) == 0
    left, top, right, bottom = ink_box(ink)
    assert (left + right) / 2 < 60 and (top + bottom) / 2 < 40  # off-centre, so centring is tested
