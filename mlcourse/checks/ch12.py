"""Checks for the chapter 12b exercise: preparing an upload for the generator.

The learner's signatures (pictures are numpy arrays ``float [H, W]`` in ``[0, 1]``):

* ``strokes_bright(grey) -> [H, W]``: the same picture with bright strokes on dark paper, as
  the course stores every image. Inverted when the strokes are darker than the paper (a pen
  on paper), returned unchanged when they already are bright (the course's own images,
  chalk on a board). The checks name an image left dark-on-light, one inverted although it
  was already bright (a rule that always inverts, or decides from a fixed pixel value), a
  changed shape and an input changed in place.
* ``crop_and_resize(ink, size) -> tensor [1, size, size]``: bright strokes on 0 to the
  course's format: a square around the ink whose larger side fills ``FILL`` (0.63, as in
  an Omniglot frame) of it, centred on the ink, paper outside the picture 0, resized to
  ``size``. The checks name the classic wrong sizes (no channel axis, ``size`` ignored, not
  square), an image that comes out inverted (paper bright), a numpy result or an integer
  tensor, values outside ``[0, 1]``, ink that is not centred or not scaled to ``FILL``, and
  an input changed in place.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from . import Check
from ..metagen.personal import FILL, ink_box, resize_like_the_loader, square_around_ink
from ..metagen.personal import strokes_bright as library_strokes_bright


def reference_strokes_bright(grey: np.ndarray) -> np.ndarray:
    return library_strokes_bright(grey)[0]


def reference_crop_and_resize(ink: np.ndarray, size: int = 28) -> torch.Tensor:
    return torch.from_numpy(resize_like_the_loader(square_around_ink(ink), size)).float()[None]


def pen_drawing(seed: int, width: int = 90, height: int = 70, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Dark strokes on light (not white) paper, ``float [height, width]``: a few lines drawn
    with PIL in a part of the page, so that the ink is off-centre."""
    rng = np.random.default_rng(seed)
    page = Image.new("L", (width, height), 230)
    draw = ImageDraw.Draw(page)
    box = (width // 6 + offset[0], height // 6 + offset[1], width // 2 + offset[0], height // 2 + offset[1])
    points = [(int(rng.integers(box[0], box[2])), int(rng.integers(box[1], box[3]))) for _ in range(4)]
    draw.line(points, fill=20, width=3)
    return np.asarray(page, dtype=np.float64) / 255.0


def ink_drawing(seed: int, width: int = 90, height: int = 70, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """The same drawing as the next step receives it: bright strokes (1) on paper of 0."""
    pen = pen_drawing(seed, width, height, offset)
    return np.clip((pen.max() - pen) / (pen.max() - pen.min()), 0.0, 1.0)


def _picture(chk: Check, out, shape: tuple[int, int], what: str) -> np.ndarray:
    if torch.is_tensor(out):
        out = out.detach().cpu().numpy()
    chk.expect(isinstance(out, np.ndarray), f"expected {what} as a numpy array, got {type(out).__name__}")
    chk.expect(out.shape == shape, f"expected {what} of shape {shape} (the input's), got {out.shape}")
    return out.astype(np.float64)


def _untouched(chk: Check, fn, picture: np.ndarray, *args):
    before = picture.copy()
    out = chk.call(fn, picture, *args)
    chk.expect(np.array_equal(picture, before),
               "your function changed its input in place (an `-=`, `1 - x` written back into it, `np.clip(..., out=x)`): "
               "the panel shows every step's picture, so each step must return a new array and leave the input alone.")  # fmt: skip
    return out


def check_strokes_bright(strokes_bright) -> None:
    """``strokes_bright(grey [H, W])``: bright strokes on dark, inverting only dark-on-light."""
    chk = Check("check_strokes_bright", "strokes_bright")

    with chk.case("dark pen strokes on light grey paper (a scan or photo)"):
        grey = pen_drawing(0)
        out = _picture(chk, _untouched(chk, strokes_bright, grey), grey.shape, "the picture")
        if np.allclose(out, grey):
            chk.fail("the picture came back unchanged: its strokes are dark on light paper (the paper, most of the "
                     f"picture, is at {np.median(grey):.2f}; the strokes near {grey.min():.2f}). The course's images "
                     "are bright strokes on a dark background: invert it, 1 - grey.")  # fmt: skip
        chk.expect(np.allclose(out, 1 - grey, atol=1e-6),
                   f"expected 1 - grey (the paper at {1 - np.median(grey):.2f}, the strokes near {1 - grey.min():.2f}), "
                   f"got paper at {np.median(out):.2f} and strokes near {out.max():.2f}")  # fmt: skip

    with chk.case("strokes already bright on a dark background (a course image, chalk on a board)"):
        grey = 1 - pen_drawing(1)
        out = _picture(chk, _untouched(chk, strokes_bright, grey), grey.shape, "the picture")
        if np.allclose(out, 1 - grey):
            chk.fail("you inverted a picture whose strokes already were bright on dark: it came out dark-on-light, "
                     "inverted. Decide from the picture: most of it is paper (its median); invert only when the "
                     "strokes deviate from the paper towards black.")  # fmt: skip
        chk.expect(np.allclose(out, grey, atol=1e-6), "a bright-on-dark picture must come back unchanged")

    with chk.case("a dark page with darker strokes is not a bright page (no fixed threshold at 0.5)"):
        grey = pen_drawing(2) * 0.45  # grey paper at 0.41 in dim light, strokes near 0.04
        out = _picture(chk, _untouched(chk, strokes_bright, grey), grey.shape, "the picture")
        chk.expect(np.allclose(out, 1 - grey, atol=1e-6),
                   "dark strokes on dim paper (median 0.41, below 0.5) must still be inverted: the strokes are "
                   "*darker than the paper*, whatever the paper's level. A rule 'invert when the mean is above 0.5' "
                   "fails here; compare the strokes with the paper (the median).")  # fmt: skip
        grey = 0.55 + 0.45 * (1 - pen_drawing(3))  # bright strokes on a light-grey board, median above 0.5
        out = _picture(chk, _untouched(chk, strokes_bright, grey), grey.shape, "the picture")
        chk.expect(np.allclose(out, grey, atol=1e-6),
                   "bright strokes on a light-grey background (median above 0.5) are already bright strokes: they "
                   "must not be inverted. Compare the strokes with the paper (the median), not with 0.5.")  # fmt: skip
    chk.done()


def _result(chk: Check, out, size: int) -> torch.Tensor:
    if isinstance(out, np.ndarray):
        chk.fail(f"expected a torch tensor [1, {size}, {size}] (what the generators take), got a numpy array of shape "
                 f"{out.shape}: torch.from_numpy(...).float()[None]")  # fmt: skip
    chk.expect(torch.is_tensor(out), f"expected a tensor [1, {size}, {size}], got {type(out).__name__}")
    shape = tuple(out.shape)
    if shape == (size, size):
        chk.fail(f"the result has shape {shape}: the channel axis is missing. The course's images are "
                 f"[1, {size}, {size}] (one grey channel): add it, x[None].")  # fmt: skip
    if len(shape) == 3 and shape[0] == 1 and shape[1] != shape[2]:
        chk.fail(f"the result is {shape[1]} x {shape[2]}, not square: pad the crop to a square before resizing "
                 "(stretching a tall character to a square changes its shape).")  # fmt: skip
    if len(shape) == 3 and shape[0] == 1 and shape[1] != size:
        chk.fail(f"the result is {shape[1]} x {shape[2]}, but size = {size} was asked for: resize to (size, size), "
                 "not to a fixed 28 or to the crop's own size.")  # fmt: skip
    chk.expect(shape == (1, size, size), f"expected shape (1, {size}, {size}), got {shape}")
    chk.expect(out.is_floating_point(), f"expected float values in [0, 1], got dtype {out.dtype} (divide by 255?)")
    low, high = out.min().item(), out.max().item()
    chk.expect(low >= -1e-6 and high <= 1 + 1e-6, f"values must lie in [0, 1], got {low:.3g}..{high:.3g}")
    return out.detach().double()


def _judge_crop(chk: Check, out: torch.Tensor, ink: np.ndarray, size: int) -> None:
    image = out[0].numpy()
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    if border.mean() > 0.5:
        chk.fail("the result is inverted: its border (paper) is bright and the strokes dark. The input already "
                 "has bright strokes on 0, and the course keeps it so: do not invert here.")  # fmt: skip
    chk.expect(image.max() > 0.3, "the result is (nearly) empty: no stroke survived. Crop around the ink "
                                  "(the pixels above 0), not around the paper.")  # fmt: skip
    left, top, right, bottom = ink_box(image)
    cx, cy, half = (left + right) / 2, (top + bottom) / 2, size / 2
    chk.expect(abs(cx - half) <= 0.08 * size + 1 and abs(cy - half) <= 0.08 * size + 1,
               f"the ink is not centred: its box's centre lies at ({cx:.1f}, {cy:.1f}) in a {size} x {size} image, "
               f"expected about ({half:.0f}, {half:.0f}). Centre the square on the ink's bounding box.")  # fmt: skip
    fill = max(right - left, bottom - top) / size
    chk.expect(abs(fill - FILL) <= 0.12,
               f"the ink's larger side fills {fill:.2f} of the image, expected about FILL = {FILL}: make the square's "
               f"side the ink box's larger side divided by FILL (the margin an Omniglot frame has), so the generator "
               "sees characters at the size it was trained on.")  # fmt: skip
    want = reference_crop_and_resize(ink, size)[0].numpy()
    correlation = float(np.corrcoef(image.ravel(), want.ravel())[0, 1])
    chk.expect(correlation > 0.8, f"the result looks unlike the reference preparation (pixel correlation "
                                  f"{correlation:.2f}; expected above 0.8)")  # fmt: skip


def check_crop_and_resize(crop_and_resize) -> None:
    """``crop_and_resize(ink [H, W], size) -> [1, size, size]``: centred, scaled, resized."""
    chk = Check("check_crop_and_resize", "crop_and_resize")
    for description, ink, size in (
        ("a drawing in the top-left part of a wide page, size 28", ink_drawing(4, 120, 80), 28),
        ("a drawing low on a tall page, size 28", ink_drawing(5, 60, 140, offset=(10, 60)), 28),
        ("a drawing right of centre, size 16 (another model's images)", ink_drawing(6, 100, 100, offset=(30, 20)), 16),
    ):
        with chk.case(description):
            out = _result(chk, _untouched(chk, crop_and_resize, ink, size), size)
            _judge_crop(chk, out, ink, size)
    chk.done()
