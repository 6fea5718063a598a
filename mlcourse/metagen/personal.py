"""A person's own drawings, turned into the course's image format (chapter 12b).

The generators of chapters 09-10 were trained on Omniglot as the course loads it
(:mod:`mlcourse.data.omniglot`): ``float [1, 28, 28]`` in ``[0, 1]``, **bright strokes on a
dark background** (the loader inverts the black-on-white scans so that empty paper is 0),
the whole 105 x 105 frame shrunk with a box filter. A photo of handwriting is nothing like
that: colour, any size, dark ink on light paper that is grey rather than white and lit
unevenly, the character somewhere in a large frame, maybe turned sideways by the phone's
EXIF tag. :func:`prepare_image` makes it look like a loaded Omniglot drawing, one visible
step at a time::

    decode      bytes -> picture, after checking bytes, pixels (from the header, before
                decoding), frames; a large photo shrunk while decoding (JPEG) or by block
                averages, so it never exists in memory as a full-size float array; EXIF
                rotation applied; any mode (palette, RGBA, CMYK, 16-bit) made grey in
                [0, 1], transparency composited onto white paper
    polarity    strokes made bright: inverted when they are darker than the paper
    flatten     the paper made 0 (an estimate of its uneven level is subtracted), the
                strokes stretched to reach 1, faint paper texture cut
    crop        a square around the ink, the ink's larger side filling ``FILL`` of it
                (the median Omniglot drawing fills 63% of its frame)
    resize      to ``size`` with the loader's filters (box to shrink, bicubic to enlarge),
                stored like the data sets store images: 256 grey levels

For an Omniglot PNG, ``crop=False`` gives exactly what the loader gives (tested); cropping
moves the character to the centre and rescales it slightly, nothing else.

Bad uploads never raise out of :func:`prepare_upload`: every file that cannot be used gets
one sentence naming it and saying what to do (:class:`UploadError`'s message), and the
upload as a whole is refused when it holds too few or too many images. Everything happens in
memory: nothing here opens a file.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

# The median share of its 105 x 105 frame that an Omniglot drawing's larger side fills
# (400 drawings of images_background_small1: quartiles 0.55 / 0.63 / 0.73).
FILL = 0.63
# Pictures larger than this (longer side, pixels) are shrunk first: 28 x 28 is the goal, and
# the background estimate and percentiles need no more.
WORK_SIDE = 512
# Strokes whose contrast with the paper is below this (on [0, 1]) are not there: a blank page.
MIN_CONTRAST = 0.08
# After stretching the strokes to 1, values below this are paper texture, JPEG noise or shadow.
NOISE_FLOOR = 0.2
# Fewer stroke pixels than this (values above 0.5, at working size) is a blank page too.
MIN_INK_PIXELS = 4

FORMATS_HINT = "PNG, JPEG, GIF, BMP, TIFF or WebP"
# The modes PIL's Image.reduce averages blocks of (the others are shrunk after conversion to grey).
_REDUCIBLE = ("L", "LA", "La", "RGB", "RGBA", "RGBa", "CMYK", "YCbCr", "I", "F")


@dataclass(frozen=True)
class UploadLimits:
    """What one upload may hold: number of images, bytes per file, pixels per image.

    ``max_pixels`` is checked from the image header, before anything is decoded: a small file
    can declare a huge picture (a "decompression bomb") that would fill the memory.
    """

    min_images: int = 2
    max_images: int = 12
    max_bytes: int = 20 * 2**20
    max_pixels: int = 40_000_000

    def __post_init__(self):
        for name in ("min_images", "max_images", "max_bytes", "max_pixels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"UploadLimits.{name} must be an int >= 1, got {value!r}")
        if self.max_images < self.min_images:
            raise ValueError(f"UploadLimits: max_images ({self.max_images}) is below min_images ({self.min_images})")


LIMITS = UploadLimits()


class UploadError(ValueError):
    """One uploaded file cannot be used; the message names it and says what to do."""


@dataclass
class PreparedImage:
    """One drawing in the course's format, with the pictures of each preparation step.

    ``image`` is ``float [1, size, size]`` in ``[0, 1]``, bright strokes on 0. ``steps`` maps
    each step's name to its picture (``uint8 [h, w, 3]`` for the upload as decoded, float
    ``[h, w]`` in ``[0, 1]`` after). ``notes`` says what was done that is worth telling
    (rotated, converted, inverted).
    """

    name: str
    image: torch.Tensor
    steps: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class PreparedUpload:
    """The outcome of one upload: the images that could be used and a message per problem."""

    images: list[PreparedImage]
    problems: list[str]
    limits: UploadLimits = LIMITS

    @property
    def ok(self) -> bool:
        """True when there is nothing to complain about and the number of images is right."""
        return not self.problems and self.limits.min_images <= len(self.images) <= self.limits.max_images

    def support(self) -> torch.Tensor:
        """The prepared images as a support set ``float [K, 1, size, size]``."""
        if not self.images:
            raise ValueError("no prepared images: nothing to make a support set from")
        return torch.stack([p.image for p in self.images])


# ---------------------------------------------------------------------------------------
# Reading what was uploaded
# ---------------------------------------------------------------------------------------
def uploaded_files(value: Any) -> list[tuple[str, bytes]]:
    """``[(name, bytes)]`` from what an upload holds.

    Accepts ipywidgets 8's ``FileUpload.value`` (a tuple of dicts with ``name`` and
    ``content``, a memoryview), ipywidgets 7's (a dict from name to a dict with ``content``),
    or a plain sequence of ``(name, bytes)`` pairs.
    """
    if value is None:
        return []
    if isinstance(value, dict):  # ipywidgets 7
        return [(str(name), bytes(item["content"])) for name, item in value.items()]
    files = []
    for item in value:
        if isinstance(item, dict):
            files.append((str(item.get("name", "unnamed")), bytes(item["content"])))
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            files.append((str(item[0]), bytes(item[1])))
        else:
            raise TypeError(f"an uploaded file must be a dict with 'name' and 'content' or a (name, bytes) pair, "
                            f"got {type(item).__name__}")  # fmt: skip
    return files


def _megabytes(n: int) -> str:
    """A file size as people read it: MB, KB or bytes."""
    if n >= 2**20:
        return f"{n / 2**20:.1f} MB"
    return f"{n / 1024:.0f} KB" if n >= 1024 else f"{n} bytes"


def _open_checked(data: bytes, name: str, limits: UploadLimits) -> Image.Image:
    """Open ``data`` lazily (header only) and refuse what must not be decoded."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"{name}: the file's content must be bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise UploadError(f"{name} is empty (0 bytes): upload the image file itself.")
    if len(data) > limits.max_bytes:
        raise UploadError(f"{name} is {_megabytes(len(data))}, more than the {_megabytes(limits.max_bytes)} this panel "
                          "accepts: save it smaller (a JPEG of a few megapixels is plenty) and upload it again.")  # fmt: skip
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own, lower limit comes next
            image = Image.open(io.BytesIO(bytes(data)))
    except Image.DecompressionBombError:
        raise UploadError(f"{name} declares a picture of more pixels than PIL will ever decode (a decompression "
                          f"bomb?): upload a picture of at most {limits.max_pixels / 1e6:.0f} megapixels.") from None  # fmt: skip
    except UnidentifiedImageError:
        raise UploadError(f"{name} is not an image this panel can read: upload a {FORMATS_HINT} file.") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise UploadError(f"{name} is damaged and cannot be opened ({error}): export or save it again and upload "
                          "the new file.") from None  # fmt: skip
    width, height = image.size
    if width * height > limits.max_pixels:
        image.close()
        raise UploadError(f"{name} is {width} x {height} pixels ({width * height / 1e6:.0f} megapixels), more than the "
                          f"{limits.max_pixels / 1e6:.0f} megapixels this panel accepts: shrink it and upload it "
                          "again.")  # fmt: skip
    if width < 1 or height < 1:
        raise UploadError(f"{name} has no pixels ({width} x {height}): upload a real picture.")
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        image.close()
        raise UploadError(f"{name} holds {frames} frames (an animation or a multi-page file): upload a single still "
                          "picture, a PNG or JPEG.")  # fmt: skip
    return image


def _decode(image: Image.Image, name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode fully; ``(grey float [h, w] in [0, 1], preview uint8 [h, w, 3], notes)``.

    Truncated and corrupt files fail here, when the pixels are actually read.
    """
    notes = []
    try:
        if image.format == "JPEG" and max(image.size) > 2 * WORK_SIDE:
            # A phone photo: let the JPEG decoder shrink by 1/2, 1/4 or 1/8 as it decodes (a 12-megapixel
            # photo never exists at full size in memory); the longer side stays at least WORK_SIDE.
            scale = WORK_SIDE / max(image.size)
            image.draft(None, (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale))))
        image.load()
        transposed = ImageOps.exif_transpose(image)
        if max(transposed.size) >= 2 * WORK_SIDE:  # other formats: average blocks of pixels before anything else
            if transposed.mode == "P":
                transposed = transposed.convert("RGBA" if "transparency" in transposed.info else "RGB")
            elif transposed.mode.startswith("I;16"):
                transposed = transposed.convert("I")  # 32-bit integers, same values
            factor = max(transposed.size) // WORK_SIDE
            transposed = transposed.reduce(factor) if transposed.mode in _REDUCIBLE else transposed
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as error:
        raise UploadError(f"{name} is damaged or cut short ({error}): upload the complete file, or save the picture "
                          "again and upload the new file.") from None  # fmt: skip
    orientation = image.getexif().get(0x0112)
    if orientation not in (None, 1):
        notes.append(f"turned upright (EXIF orientation {orientation})")
    source_mode, image = image.mode, transposed
    mode = image.mode
    alpha = None
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if mode == "F":
            low, high = float(values.min()), float(values.max())
            grey = (values - low) / (high - low) if high > low else np.zeros_like(values)
        else:
            grey = values / max(65535.0, float(values.max()))
        notes.append(f"converted from {source_mode} ({'floating point' if mode == 'F' else '16/32-bit'}) to grey")
    else:
        if source_mode not in ("1", "L"):
            notes.append(f"converted from {source_mode} to grey")
        has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode in ("P", "L", "RGB") and "transparency" in image.info)
        if has_alpha:
            rgba = image.convert("RGBA")
            alpha = np.asarray(rgba, dtype=np.float64)[..., 3] / 255.0
            paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(paper, rgba)  # transparency is white paper
            notes.append("transparent parts treated as white paper")
        grey = np.asarray(image.convert("L"), dtype=np.float64) / 255.0
        if alpha is not None and _contrast(grey)[0] < MIN_CONTRAST and _contrast(alpha)[0] >= MIN_CONTRAST:
            grey = 1.0 - alpha  # light strokes on a transparent sheet: the opaque parts are the drawing
            notes[-1] = "light strokes on a transparent background: the opaque parts taken as ink"
    preview = np.asarray(Image.fromarray(np.uint8(np.round(grey * 255))).convert("RGB")) if mode not in (
        "RGB", "RGBA", "P", "CMYK", "YCbCr") else np.asarray(image.convert("RGB"))  # fmt: skip
    return grey, preview, notes


# ---------------------------------------------------------------------------------------
# The steps, on grey float pictures
# ---------------------------------------------------------------------------------------
def _contrast(grey: np.ndarray) -> tuple[float, bool]:
    """``(contrast, strokes_are_dark)``: how far the extremes lie from the paper (the median,
    as most of a page is paper), and on which side the larger deviation is."""
    paper = float(np.median(grey))
    dark = paper - float(np.percentile(grey, 0.5))
    bright = float(np.percentile(grey, 99.5)) - paper
    return max(dark, bright), dark > bright


def shrink_to_work_size(grey: np.ndarray, side: int = WORK_SIDE) -> np.ndarray:
    """``grey`` with its longer side at most ``side`` pixels (box filter: an area average)."""
    h, w = grey.shape
    if max(h, w) <= side:
        return grey
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(grey.astype(np.float32), "F").resize(size, Image.Resampling.BOX), dtype=np.float64)


def strokes_bright(grey: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(picture with bright strokes on dark paper, inverted?)``: inverted when the strokes
    deviate from the paper towards black, as a pen on paper does; kept when they already
    are bright (chalk on a board, the course's own images)."""
    _, dark = _contrast(grey)
    return (1.0 - grey, True) if dark else (grey.copy(), False)


def paper_level(ink: np.ndarray) -> np.ndarray:
    """An estimate of the paper's level under the strokes, ``[h, w]``, for a picture with
    bright strokes: uneven light makes it a slope or a vignette, not a constant.

    On a coarse grid (about 32 cells on the shorter side; each cell the mean of its pixels),
    a 7 x 7 minimum keeps the paper and drops the strokes (strokes rarely fill 7 x 7
    cells); a blur smooths the steps; bilinear enlargement brings it back to full size.
    """
    h, w = ink.shape
    cell = max(1.0, min(h, w) / 32)
    coarse_size = (max(1, round(w / cell)), max(1, round(h / cell)))
    coarse = Image.fromarray(ink.astype(np.float32), "F").resize(coarse_size, Image.Resampling.BOX)
    grid = torch.tensor(np.asarray(coarse, dtype=np.float32))[None, None]
    grid = -F.max_pool2d(-F.pad(grid, (3, 3, 3, 3), mode="replicate"), 7, stride=1)  # 7 x 7 minimum
    grid = F.avg_pool2d(F.pad(grid, (2, 2, 2, 2), mode="replicate"), 5, stride=1)  # 5 x 5 blur
    coarse = Image.fromarray(grid[0, 0].numpy(), "F")
    return np.asarray(coarse.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float64)


def flatten(ink: np.ndarray) -> tuple[np.ndarray, float]:
    """``(strokes on a paper of 0, contrast)``: the paper level subtracted, the strokes
    stretched so that their brightest (99.9th percentile) reach 1, and what is left below
    ``NOISE_FLOOR`` set to 0 (the rest rescaled to keep 1 at 1). ``contrast`` is the
    strokes' height above the paper before stretching: near 0 for a blank page.

    A clean scan (paper exactly 0, strokes exactly 1) comes out unchanged.
    """
    lifted = np.clip(ink - paper_level(ink), 0.0, 1.0)
    contrast = float(np.percentile(lifted, 99.9))
    if contrast < MIN_CONTRAST:
        return np.zeros_like(lifted), contrast
    stretched = np.clip(lifted / contrast, 0.0, 1.0)
    return np.clip((stretched - NOISE_FLOOR) / (1.0 - NOISE_FLOOR), 0.0, 1.0), contrast


def ink_box(ink: np.ndarray, trim: float = 0.002) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` (right and bottom exclusive) of the ink, ignoring the
    outer ``trim`` of its mass on each side so that a speck of dust far away does not count."""
    if not ink.any():
        raise ValueError("ink_box: the picture holds no ink")

    def span(profile):
        cum = np.cumsum(profile) / profile.sum()
        first = int(np.searchsorted(cum, trim, side="right"))
        last = min(int(np.searchsorted(cum, 1 - trim, side="left")), int(np.flatnonzero(profile)[-1]))  # rounding
        return first, last + 1

    left, right = span(ink.sum(0))
    top, bottom = span(ink.sum(1))
    return left, top, max(right, left + 1), max(bottom, top + 1)


def square_around_ink(ink: np.ndarray, fill: float = FILL) -> np.ndarray:
    """A square picture centred on the ink whose larger side fills ``fill`` of it; the
    parts outside the original picture are empty paper (0)."""
    if not 0 < fill <= 1:
        raise ValueError(f"fill must lie in (0, 1], got {fill!r}")
    left, top, right, bottom = ink_box(ink)
    side = max(1, round(max(right - left, bottom - top) / fill))
    cx, cy = (left + right) / 2, (top + bottom) / 2
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    # PIL's crop fills whatever lies outside the picture with 0: empty paper, what we want.
    return np.asarray(Image.fromarray(ink.astype(np.float32), "F").crop((x0, y0, x0 + side, y0 + side)), dtype=np.float64)


def pad_to_square(ink: np.ndarray) -> np.ndarray:
    """The whole picture, centred on a square of empty paper (no cropping)."""
    h, w = ink.shape
    side = max(h, w)
    out = np.zeros((side, side))
    y0, x0 = (side - h) // 2, (side - w) // 2
    out[y0 : y0 + h, x0 : x0 + w] = ink
    return out


def resize_like_the_loader(square: np.ndarray, size: int) -> np.ndarray:
    """``[size, size]`` in ``[0, 1]`` on 256 levels, as the data sets store images (``uint8``):
    box filter to shrink, bicubic to enlarge, as :func:`mlcourse.data.omniglot._decode` does."""
    # In 8-bit grey, like the loader: then its rounding is ours too, to the last level.
    picture = Image.fromarray(np.uint8(np.round(np.clip(square, 0.0, 1.0) * 255.0)))
    if picture.size != (size, size):
        shrinking = size < picture.size[0]
        picture = picture.resize((size, size), Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC)
    return np.asarray(picture, dtype=np.float64) / 255.0


# ---------------------------------------------------------------------------------------
# One file, one upload
# ---------------------------------------------------------------------------------------
def prepare_image(data: bytes, name: str = "image", *, size: int = 28, limits: UploadLimits = LIMITS,
                  crop: bool = True) -> PreparedImage:  # fmt: skip
    """One uploaded file (its bytes) as a drawing in the course's format, or an
    :class:`UploadError` whose message names ``name`` and says what to do.

    ``crop=False`` keeps the whole frame (padded to a square) instead of cropping to the ink:
    what the Omniglot loader does with its scans.
    """
    if not isinstance(size, int) or isinstance(size, bool) or size < 4:
        raise ValueError(f"size must be an int >= 4, got {size!r}")
    image = _open_checked(data, name, limits)
    try:
        grey, preview, notes = _decode(image, name)
    finally:
        image.close()
    grey = shrink_to_work_size(grey)
    ink, inverted = strokes_bright(grey)
    notes.append("inverted: dark strokes on light paper became bright strokes on dark" if inverted
                 else "strokes already bright on dark: not inverted")  # fmt: skip
    flat, contrast = flatten(ink)
    if contrast < MIN_CONTRAST or int((flat > 0.5).sum()) < MIN_INK_PIXELS:
        raise UploadError(f"{name} looks blank: no strokes stand out from the paper. Upload a picture with the "
                          "drawing in it, dark pen on light paper, filling a good part of the frame.")  # fmt: skip
    square = square_around_ink(flat) if crop else pad_to_square(flat)
    final = resize_like_the_loader(square, size)
    notes.append(f"{'cropped to the ink' if crop else 'padded to a square'} and resized to {size} x {size}")
    steps = {"uploaded": preview, "grey": grey, "strokes bright": ink, "paper flattened": flat,
             "cropped to the ink" if crop else "padded to a square": square, f"{size} x {size}": final}  # fmt: skip
    return PreparedImage(name, torch.from_numpy(final).float()[None], steps, notes)


def prepare_upload(files: Any, *, size: int = 28, limits: UploadLimits = LIMITS, crop: bool = True) -> PreparedUpload:
    """Every uploaded file prepared, or a message for it; never raises for bad content.

    ``files``: what :func:`uploaded_files` accepts. Too many files are refused as a whole
    (nothing is decoded); otherwise each file is prepared on its own, and too few usable ones
    add a message of their own.
    """
    files = uploaded_files(files)
    problems: list[str] = []
    if len(files) > limits.max_images:
        return PreparedUpload([], [f"{len(files)} images were uploaded, more than the {limits.max_images} this panel "
                                   f"takes: choose at most {limits.max_images} drawings of one character."], limits)  # fmt: skip
    images = []
    for name, data in files:
        try:
            images.append(prepare_image(data, name, size=size, limits=limits, crop=crop))
        except UploadError as error:
            problems.append(str(error))
        except Exception as error:  # noqa: BLE001 - a decoder's surprise must become a message, not a traceback
            problems.append(f"{name} could not be read ({type(error).__name__}: {error}): save it as PNG or JPEG and "
                            "upload it again.")  # fmt: skip
    if problems and len(images) >= limits.min_images:
        problems.append(f"{len(images)} of the {len(files)} files are ready; the others must be removed or replaced "
                        "before generating (upload the good ones again, without the files named above).")  # fmt: skip
    if len(images) < limits.min_images:
        if not files:
            problems.append(f"No image yet: upload {limits.min_images} to {limits.max_images} drawings of one "
                            "character (4 work best).")  # fmt: skip
        elif len(images) == len(files):
            problems.append(f"Only {len(images)} image{'s were' if len(images) != 1 else ' was'} uploaded: the generator "
                            f"needs at least {limits.min_images} drawings of the same character (4 work best); add more.")  # fmt: skip
        else:
            problems.append(f"Only {len(images)} of the {len(files)} files could be used: the generator needs at least "
                            f"{limits.min_images} drawings of the same character; fix or replace the files named above.")  # fmt: skip
    return PreparedUpload(images, problems, limits)


# ---------------------------------------------------------------------------------------
# Examples to try without an upload of one's own
# ---------------------------------------------------------------------------------------
def png_bytes(picture: np.ndarray | torch.Tensor | Image.Image) -> bytes:
    """A picture as PNG bytes, in memory: ``uint8`` arrays as they are, float ones in
    ``[0, 1]`` scaled to 255, a ``[1, h, w]`` tensor as grey."""
    if isinstance(picture, torch.Tensor):
        picture = picture.detach().cpu().numpy()
    if isinstance(picture, np.ndarray):
        array = picture[0] if picture.ndim == 3 and picture.shape[0] in (1, 3) and picture.shape[-1] not in (3, 4) else picture
        if array.dtype != np.uint8:
            array = np.uint8(np.round(np.clip(array, 0, 1) * 255))
        picture = Image.fromarray(array)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def digit_examples(digit: int = 3, n: int = 5) -> list[tuple[str, bytes]]:
    """``n`` real handwritten ``digit`` s from scikit-learn's bundled UCI digits, as 8 x 8 PNG
    files (bright strokes on black, 17 grey levels): available in every installation."""
    from sklearn.datasets import load_digits

    if not 0 <= digit <= 9:
        raise ValueError(f"digit must lie in 0..9, got {digit!r}")
    data = load_digits()
    pictures = data.images[data.target == digit][:n] / 16.0
    return [(f"digit-{digit}-{i + 1}.png", png_bytes(p)) for i, p in enumerate(pictures)]


def omniglot_examples(member_prefix: str = "images_background_small2/Sanskrit/character05/", n: int = 5,
                      source: str = "small2") -> list[tuple[str, bytes]]:  # fmt: skip
    """The first ``n`` original Omniglot scans (105 x 105 black-on-white PNGs) of one
    character, read from the official zip in memory; ``[]`` when the zip is not found
    (a fresh clone has no ``../shared``)."""
    import zipfile

    from ..data.omniglot import find_omniglot

    path = find_omniglot(source)
    if path is None or not path.is_file():
        return []
    with zipfile.ZipFile(path) as archive:
        names = sorted(m for m in archive.namelist() if m.startswith(member_prefix) and m.endswith(".png"))[:n]
        return [(name.rsplit("/", 1)[-1], archive.read(name)) for name in names]


def photo_like(data: bytes, *, seed: int = 0, canvas: int = 480, exif_rotate: bool = False, quality: int = 85) -> bytes:
    """A clean dark-on-light drawing (PNG bytes) made to look like a phone photo of a page, as
    JPEG bytes: a larger canvas of grey, slightly blue paper, lit unevenly (a slope and a
    vignette), grain, a small tilt and blur, the strokes grey-blue like ballpoint ink.

    ``exif_rotate``: store the pixels turned a quarter turn with an EXIF orientation tag
    that turns them back, as phones do (the preparation must read the tag).
    """
    rng = np.random.default_rng(seed)
    with Image.open(io.BytesIO(data)) as drawing:
        ink = 1.0 - np.asarray(drawing.convert("L"), dtype=np.float64) / 255.0  # 1 where the pen was
    side = int(canvas * rng.uniform(0.35, 0.5))
    ink_img = Image.fromarray(np.uint8(ink * 255)).resize((side, side), Image.Resampling.BICUBIC)
    ink_img = ink_img.rotate(float(rng.uniform(-8, 8)), resample=Image.Resampling.BICUBIC)
    page = np.zeros((canvas, int(canvas * 4 / 3)))
    h, w = page.shape
    y0, x0 = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
    page[y0 : y0 + side, x0 : x0 + side] = np.asarray(ink_img, dtype=np.float64) / 255.0
    page = np.asarray(Image.fromarray(np.uint8(page * 255)).filter(ImageFilter.GaussianBlur(1.0)), dtype=np.float64) / 255
    yy, xx = np.mgrid[0:h, 0:w]
    light = 0.8 - 0.25 * (xx / w) * rng.uniform(0.6, 1.0) - 0.1 * (yy / h)  # a window on one side
    light -= 0.15 * (((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2)  # vignette
    paper = np.stack([light * 0.97, light * 0.98, light * 1.02], axis=-1)
    pen = np.array([0.15, 0.17, 0.35])
    rgb = paper * (1 - page[..., None]) + pen * page[..., None] + rng.normal(0, 0.02, size=(h, w, 3))
    picture = Image.fromarray(np.uint8(np.clip(rgb, 0, 1) * 255), "RGB")
    exif = None
    if exif_rotate:
        picture = picture.transpose(Image.Transpose.ROTATE_90)  # stored sideways (a quarter turn anticlockwise) ...
        exif = Image.Exif()
        exif[0x0112] = 6  # ... and tagged "turn a quarter clockwise to view"
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality, **({"exif": exif.tobytes()} if exif is not None else {}))
    return buffer.getvalue()


def describe(upload: PreparedUpload) -> list[str]:
    """One line per prepared image: its name and what preparation did to it."""
    return [f"{p.name}: " + "; ".join(p.notes) for p in upload.images]


def as_files(pairs: Iterable[tuple[str, bytes]]) -> tuple[dict, ...]:
    """``(name, bytes)`` pairs as ipywidgets 8's ``FileUpload.value`` holds them (the
    modification time a UTC datetime, the content a memoryview)."""
    import datetime as dt

    epoch = dt.datetime.fromtimestamp(0, tz=dt.timezone.utc)
    return tuple({"name": n, "type": "", "size": len(b), "content": memoryview(b), "last_modified": epoch} for n, b in pairs)


__all__: Sequence[str] = [
    "FILL", "LIMITS", "UploadLimits", "UploadError", "PreparedImage", "PreparedUpload", "uploaded_files",
    "prepare_image", "prepare_upload", "strokes_bright", "paper_level", "flatten", "ink_box", "square_around_ink",
    "pad_to_square", "resize_like_the_loader", "shrink_to_work_size", "png_bytes", "digit_examples",
    "omniglot_examples", "photo_like", "describe", "as_files",
]  # fmt: skip
