"""Glyphs: an offline, Omniglot-like dataset drawn from the fonts that ship with matplotlib.

Why this dataset exists
-----------------------
Omniglot (Lake et al., 2015) is *the* few-shot benchmark: 1,623 handwritten characters from
50 alphabets, each drawn once by 20 different people. It has to be downloaded, though, and a
course that must run on a laptop with no network needs a stand-in with the same *structure*:

* many **classes** (characters) with few examples each -- here 20, like Omniglot;
* classes grouped into **alphabets** (here: script families), so that meta-training and meta-testing can use
  disjoint alphabets and the test characters are truly new;
* examples that differ the way handwriting differs: the same character, drawn by
  different hands, wobbly, slanted, thicker or thinner.

How it is made
--------------
1. **Characters.** Every alphabet in :data:`GLYPH_ALPHABETS` is a Unicode block (or part of
   one: Latin Extended-B, IPA, Cyrillic supplement, Canadian syllabics, math fraktur, arrows
   ...) paired with a font from ``matplotlib.get_data_path()/fonts/ttf`` that really contains
   it, and belongs to a **script family** (:data:`GLYPH_FAMILIES`: Latin, Greek, Cyrillic,
   Armenian, Georgian, Hebrew, Arabic, N'Ko, Lao, Tifinagh, Canadian syllabics, Ogham, and
   five kinds of symbols). The families are the dataset's groups, the "alphabets" that
   meta-training and meta-testing keep apart: the IPA is no new alphabet to a model trained
   on Latin. Class names keep the block (``"Latin_extended_B/U+0180"``). We keep only code
   points whose glyph exists in the font, renders to something visible, is not a tiny mark
   (a dot, an accent) and is not a solid blob (Omniglot characters are pen strokes).
2. **Base renders.** Each character is drawn once, cleanly, with FreeType (matplotlib's
   ``FT2Font``; no figures involved, so it costs ~0.1 ms a glyph), at the size that makes
   its bounding box fill a fixed fraction of a 64x64 canvas, and centred -- Omniglot
   characters also fill their canvas whatever their "font size" would have been. Then its
   strokes are redrawn to one width (:func:`normalize_strokes`): a hand holds one pen, while
   fonts mix hairlines and heavy stems.
3. **No look-alikes.** Latin ``A``, Greek ``Alpha`` and Cyrillic ``A`` are the same shape; so are
   ``l``, ``I`` and ``|`` once scaled to fill the box, and so are ``C`` turned upside down and
   ``Ɔ``. If one of them sat in a training family and another in a held-out family,
   "generalising to a new alphabet" would be a lie. We compare the clean renders at 28x28
   (cosine similarity; across families also turned by 90, 180, 270 degrees and mirrored, as
   training turns its classes) and keep only the *first* occurrence of each shape (alphabets
   are listed in a fixed order, so the result is deterministic); see
   :func:`select_characters`. Each alphabet is capped at :data:`MAX_PER_ALPHABET` characters
   so that no block dominates.
4. **Drawers.** Each character gets :data:`NUM_DRAWERS` variants. Variant ``d`` is drawn by
   "drawer" ``d``, who has a personal *style* shared by every character they draw (a slant,
   a pen thickness, a size, a shaky or steady hand), plus per-drawing randomness: a small
   affine jitter and a smooth random displacement field (an *elastic warp*, Simard et al.
   2003) that bends strokes the way a hand does. Everything is batched ``torch`` on the CPU
   with ``F.grid_sample``.
5. **Output.** Images are downsampled with area averaging (i.e. antialiased) to the size
   asked for (28 by default) and stored as ``uint8`` bright strokes on a black background,
   the convention of :class:`~mlcourse.data.base.ImageClassDataset`.

Everything random comes from ``torch.Generator`` objects seeded from ``seed``, so the same
seed always gives bit-identical tensors. The random numbers of a character depend only on
the seed and the character's name, so the fast-mode *subset* (the first few characters of
every alphabet) shows exactly the same drawings as the full set.

Typical use::

    from mlcourse.data.glyphs import load_glyphs
    glyphs = load_glyphs()            # built once (~12 s of CPU), then read from the cache
    print(glyphs)                     # ImageClassDataset('glyphs': ... classes in 17 groups)
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .. import config
from .base import ImageClassDataset

__all__ = [
    "GLYPH_ALPHABETS",
    "GLYPH_FAMILIES",
    "GlyphAlphabet",
    "Lookalike",
    "family_of",
    "leak_similarity",
    "BaseGlyphs",
    "DrawerStyles",
    "font_path",
    "render_glyph",
    "stroke_width",
    "normalize_strokes",
    "select_characters",
    "render_base_glyphs",
    "drawer_styles",
    "draw_variants",
    "build_glyphs",
    "load_glyphs",
    "cache_path",
]

# Bump when anything below changes the images, so that old cache files are not reused.
FORMAT_VERSION = 2  # 2: look-alikes across families compared turned and mirrored; groups are families

NUM_DRAWERS = 20  # examples per character, as in Omniglot
MAX_PER_ALPHABET = 55  # Omniglot's largest alphabet (Tifinagh) has 55 characters
SUBSET_PER_ALPHABET = 12  # fast mode: this many characters of every alphabet

# Base renders. Lengths in pixels are for the 64x64 working canvas and scale with it.
CANVAS = 64  # working resolution of the base renders and of the drawers
BOX_FRACTION = 0.72  # a character's bounding box fills this fraction of the canvas side
REF_PIXELS = 64  # font size (pixels per em) of the first, measuring render
MIN_EXTENT = 0.28  # ink spanning less of the em than this is a mark (dot, accent), not a character
PEN_WIDTH = 4.5  # every base render is redrawn with strokes this wide (about 2 px at 28x28)
STROKE_SIGMA = 2.0  # blur used to thicken or thin strokes (see _restroke)
MIN_INK = 150.0  # after that, less ink than this (in pixels) is a faint dotted mark, not a character
MAX_SOLID = 0.1  # ... and a larger fraction of ink inside 7x7 solid squares is a filled shape
MIN_WIDTH = 0.7  # ... and strokes still thinner than this times PEN_WIDTH are too close to redraw

# Look-alikes.
DEDUP_SIZE = 28  # resolution at which shapes are compared
DEDUP_MAX_COSINE = 0.82  # renders more similar than this count as the same shape


# ---------------------------------------------------------------------------------------
# Alphabets
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GlyphAlphabet:
    """One alphabet of the dataset: a name, a script family, a font file and its code points.

    ``name`` is a Unicode block (or part of one) and names the classes (``"IPA/U+0250"``);
    ``family`` is the script family it belongs to, the dataset's *group*: meta-training and
    meta-testing split whole families, never the blocks of one family (see the comment above
    :data:`GLYPH_ALPHABETS`).
    ``ranges`` are inclusive ``(first, last)`` code-point pairs. ``kind`` says which Unicode
    general categories count as characters: ``"letters"`` keeps letters (``L*`` except
    modifier letters), ``"symbols"`` keeps symbols and "other numbers" (``S*``, ``No``).
    ``names``, when given, keeps only code points whose Unicode name contains one of
    these words (e.g. the "INITIAL" forms of Arabic letters).
    """

    name: str
    family: str
    font: str
    ranges: tuple[tuple[int, int], ...]
    kind: str = "letters"
    names: tuple[str, ...] = ()

    def code_points(self) -> list[int]:
        return [cp for first, last in self.ranges for cp in range(first, last + 1)]


SANS = "DejaVuSans.ttf"  # the widest coverage of scripts, uniform stroke width
STIX = "STIXGeneral.ttf"  # the mathematical alphabets (script, fraktur) and extra symbols


def _alphabet(name, family, font, *ranges, kind="letters", names=()) -> GlyphAlphabet:
    return GlyphAlphabet(name, family, font, tuple(ranges), kind, tuple(names))


# The order matters: when two alphabets contain the same shape, the earlier one keeps it.
# Everyday scripts come first so that, e.g., the letter "A" belongs to Latin, not Greek.
# Big Unicode blocks are split in several alphabets (each capped at MAX_PER_ALPHABET).
#
# Families (the second field) are what the splits keep together. A block is no alphabet of
# its own: Latin Extended and the IPA are Latin letters with hooks, bars and turns, so a model
# meta-trained on Latin and tested on IPA has seen the test "alphabet" already. Our choices:
# * Latin: the Latin blocks, the IPA, the bold math script and fraktur alphabets (Latin
#   letters in other styles) and the Letterlike symbols (mostly styled or turned Latin
#   letters: the script l, the turned F and G ...);
# * Greek: Greek, archaic Greek with Coptic, and Old Italic (the Etruscan-family alphabets,
#   taken from Western Greek; many letters are Greek ones mirrored, written right to left);
# * Cyrillic, Georgian, Arabic (with its positional forms), the Canadian syllabics: all their
#   blocks together; Armenian, Hebrew, N'Ko, Tifinagh, Lao and Ogham: one block each;
# * the symbol blocks by kind: arrows (both blocks), mathematical operators (the operators,
#   miscellaneous symbols B, supplemental operators), and astrological, technical and
#   geometric symbols on their own.
GLYPH_ALPHABETS: list[GlyphAlphabet] = [
    # --- European scripts ---------------------------------------------------------------
    _alphabet("Latin", "Latin", SANS, (0x0041, 0x005A), (0x0061, 0x007A)),
    _alphabet("Latin_extended_B", "Latin", SANS, (0x0180, 0x024F)),
    _alphabet("Latin_extended_CD", "Latin", SANS, (0x2C60, 0x2C7F), (0xA720, 0xA7FF)),
    _alphabet("IPA", "Latin", SANS, (0x0250, 0x02AF)),
    _alphabet("Greek", "Greek", SANS, (0x0391, 0x03A9), (0x03B1, 0x03C9)),
    _alphabet("Greek_archaic_Coptic", "Greek", SANS, (0x0370, 0x0377), (0x03CF, 0x03FF)),
    _alphabet("Cyrillic", "Cyrillic", SANS, (0x0410, 0x044F)),
    _alphabet("Cyrillic_historic", "Cyrillic", SANS, (0x0460, 0x0489), (0xA640, 0xA69F)),
    _alphabet("Cyrillic_supplement", "Cyrillic", SANS, (0x0400, 0x040F), (0x0450, 0x045F), (0x048A, 0x052F)),
    _alphabet("Old_Italic", "Greek", SANS, (0x10300, 0x1031F)),
    _alphabet("Ogham", "Ogham", SANS, (0x1681, 0x169A)),
    # --- Caucasus and Middle East --------------------------------------------------------
    _alphabet("Armenian", "Armenian", SANS, (0x0531, 0x0556), (0x0561, 0x0587)),
    _alphabet("Georgian_Mkhedruli", "Georgian", SANS, (0x10D0, 0x10FA)),
    _alphabet("Georgian_Asomtavruli", "Georgian", SANS, (0x10A0, 0x10C5)),
    _alphabet("Georgian_Nuskhuri", "Georgian", SANS, (0x2D00, 0x2D25)),
    _alphabet("Hebrew", "Hebrew", SANS, (0x05D0, 0x05F2)),
    _alphabet("Arabic", "Arabic", SANS, (0x0620, 0x064A)),
    _alphabet("Arabic_extended", "Arabic", SANS, (0x066E, 0x06FF)),
    # Arabic letters change shape with their position in a word; the isolated forms
    # duplicate the plain letters above, the others are new shapes.
    _alphabet("Arabic_initial_medial_forms", "Arabic", SANS, (0xFE80, 0xFEFC), names=("INITIAL", "MEDIAL")),
    _alphabet("Arabic_final_forms", "Arabic", SANS, (0xFE80, 0xFEFC), names=("FINAL",)),
    # --- Africa, Asia, the Americas ---------------------------------------------------------
    _alphabet("NKo", "NKo", SANS, (0x07CA, 0x07EA)),
    _alphabet("Tifinagh", "Tifinagh", SANS, (0x2D30, 0x2D67)),
    _alphabet("Lao", "Lao", SANS, (0x0E81, 0x0EC4)),
    # The syllabics of Cree, Ojibwe, Inuktitut, Carrier, Blackfoot ... share one block.
    _alphabet("Canadian_syllabics_A", "Canadian_syllabics", SANS, (0x1401, 0x145F)),
    _alphabet("Canadian_syllabics_B", "Canadian_syllabics", SANS, (0x1460, 0x14BF)),
    _alphabet("Canadian_syllabics_C", "Canadian_syllabics", SANS, (0x14C0, 0x151F)),
    _alphabet("Canadian_syllabics_D", "Canadian_syllabics", SANS, (0x1520, 0x157F)),
    _alphabet("Canadian_syllabics_E", "Canadian_syllabics", SANS, (0x1580, 0x167F)),
    # --- mathematical alphabets (STIX has them all) -----------------------------------------
    # We use the *bold* script and fraktur code points: unlike the regular ones they have no
    # holes (regular script B lives in the Letterlike block) and their strokes are sturdier.
    _alphabet("Math_script_upper", "Latin", STIX, (0x1D4D0, 0x1D4E9)),
    _alphabet("Math_script_lower", "Latin", STIX, (0x1D4EA, 0x1D503)),
    _alphabet("Fraktur_upper", "Latin", STIX, (0x1D56C, 0x1D585)),
    _alphabet("Fraktur_lower", "Latin", STIX, (0x1D586, 0x1D59F)),
    # (Double-struck letters are left out: once their thin double lines are redrawn with a
    # pen of normal width they merge into bold copies of the Latin letters.)
    # --- symbol blocks ------------------------------------------------------------------------
    _alphabet("Astrological_symbols", "Astrological_symbols", SANS, (0x2609, 0x2653), (0x26A2, 0x26B8), kind="symbols"),
    _alphabet("Letterlike_symbols", "Latin", SANS, (0x2100, 0x214F), kind="symbols"),
    _alphabet("Arrows", "Arrows", SANS, (0x2190, 0x21FF), kind="symbols"),
    _alphabet("Supplemental_arrows", "Arrows", STIX, (0x27F0, 0x27FF), (0x2900, 0x297F), kind="symbols"),
    _alphabet("Math_operators", "Math_operators", SANS, (0x2200, 0x22FF), kind="symbols"),
    _alphabet("Math_symbols_B", "Math_operators", STIX, (0x2980, 0x29FF), kind="symbols"),
    _alphabet("Supplemental_math_operators", "Math_operators", STIX, (0x2A00, 0x2AFF), kind="symbols"),
    _alphabet("Technical_symbols", "Technical_symbols", SANS, (0x2300, 0x23FF), kind="symbols"),
    _alphabet("Geometric_shapes", "Geometric_shapes", SANS, (0x25A0, 0x25FF), (0x2B00, 0x2BFF), kind="symbols"),
]

# The script families in order of first appearance: the groups of the dataset.
GLYPH_FAMILIES: list[str] = list(dict.fromkeys(a.family for a in GLYPH_ALPHABETS))
_FAMILY_OF = {a.name: a.family for a in GLYPH_ALPHABETS}


def family_of(alphabet: str) -> str:
    """The script family of an alphabet (a block name such as ``"IPA"`` -> ``"Latin"``)."""
    return _FAMILY_OF[alphabet]


_CATEGORIES = {
    # Modifier letters (Lm) are mostly small copies of other letters; leave them out.
    "letters": {"Lu", "Ll", "Lt", "Lo"},
    "symbols": {"Sm", "So", "No"},
}


# ---------------------------------------------------------------------------------------
# Rendering one clean glyph with FreeType
# ---------------------------------------------------------------------------------------
def font_path(font: str) -> Path:
    """The full path of a font file shipped with matplotlib."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / font


@lru_cache(maxsize=None)
def _font(font: str):
    """One ``FT2Font`` per file, reused: opening a font costs far more than drawing a glyph."""
    from matplotlib.ft2font import FT2Font

    return FT2Font(str(font_path(font)))


@lru_cache(maxsize=None)
def _charmap(font: str) -> frozenset[int]:
    """The code points the font really has (glyph index 0 means "missing glyph")."""
    return frozenset(cp for cp, index in _font(font).get_charmap().items() if index != 0)


def _no_hinting():
    # Hinting snaps outlines to the pixel grid: good for small text on screens, but it
    # distorts shapes we are about to warp. matplotlib >= 3.10 has an enum, older an int.
    from matplotlib import ft2font

    flags = getattr(ft2font, "LoadFlags", None)
    return flags.NO_HINTING if flags is not None else ft2font.LOAD_NO_HINTING


def _draw(font: str, cp: int, pixels_per_em: float) -> np.ndarray:
    """Draw code point ``cp`` at the given size; the ink cropped to its bounding box.

    Returns float32 in [0, 1], of shape ``(0, 0)`` when nothing visible was drawn.
    """
    ft = _font(font)
    ft.set_size(pixels_per_em, 72)  # at 72 dpi one point is one pixel
    ft.set_text(chr(cp), 0.0, flags=_no_hinting())
    ft.draw_glyphs_to_bitmap(antialiased=True)
    image = np.asarray(ft.get_image(), dtype=np.float32) / 255.0
    rows = np.flatnonzero(image.max(axis=1) > 0.1)
    cols = np.flatnonzero(image.max(axis=0) > 0.1)
    if len(rows) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    return image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def render_glyph(font: str, cp: int, canvas: int = CANVAS) -> np.ndarray | None:
    """One clean, centred render of a character: ``float32 [canvas, canvas]`` in [0, 1], or None.

    We first measure the glyph's outline (``load_char`` gives its bounding box in 1/64
    pixel, without drawing), then draw it at the size that makes the longer side of the box
    ``BOX_FRACTION * canvas`` pixels. Drawing at the final size (rather than resizing a
    bitmap) keeps FreeType's clean antialiased edges. None means "not usable": missing from
    the font, nothing visible, or a small mark (dot, accent, comma) that would become a blob
    when blown up.
    """
    if cp not in _charmap(font):
        return None
    ft = _font(font)
    ft.set_size(REF_PIXELS, 72)
    glyph = ft.load_char(cp, _no_hinting())
    extent = max(glyph.width, glyph.height) / 64  # 26.6 fixed point -> pixels
    if extent < MIN_EXTENT * REF_PIXELS:
        return None
    ink = _draw(font, cp, REF_PIXELS * BOX_FRACTION * canvas / extent)
    if ink.size == 0:
        return None
    ink = ink[:canvas, :canvas]  # rounding can add a pixel; never spill off the canvas
    h, w = ink.shape
    out = np.zeros((canvas, canvas), dtype=np.float32)
    top, left = (canvas - h) // 2, (canvas - w) // 2  # centre the bounding box
    out[top : top + h, left : left + w] = ink
    return out


# ---------------------------------------------------------------------------------------
# Stroke width: measuring it and changing it
# ---------------------------------------------------------------------------------------
@lru_cache(maxsize=16)
def _blur_matrix(n: int, sigma: float) -> torch.Tensor:
    """``[n, n]`` matrix ``B`` such that ``B @ v`` is the Gaussian blur of a length-``n`` signal.

    Outside the signal is zero (the background), so rows near the borders lose some weight.
    """
    t = torch.arange(n, dtype=torch.float32)
    kernel = torch.exp(-0.5 * ((t[:, None] - t[None, :]) / sigma) ** 2)
    radius = max(1, int(3 * sigma + 0.5))
    kernel = kernel * ((t[:, None] - t[None, :]).abs() <= radius)
    return kernel / kernel[n // 2].sum()  # normalise with an interior row


@lru_cache(maxsize=16)
def _box_matrix(n: int, radius: int) -> torch.Tensor:
    """``[n, n]`` matrix whose product with a signal sums it over windows of ``2 * radius + 1``."""
    t = torch.arange(n)
    return ((t[:, None] - t[None, :]).abs() <= radius).float()


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``[N, C, H, W]`` images: ``B_H @ image @ B_W^T``.

    A Gaussian is separable, so blurring is two small matrix products. On a CPU this is many
    times faster than ``F.conv2d`` with a one-channel input, which is badly optimised.
    """
    rows = _blur_matrix(x.shape[-2], float(sigma))
    cols = _blur_matrix(x.shape[-1], float(sigma))
    return rows @ x @ cols.T


def stroke_width(x: torch.Tensor) -> torch.Tensor:
    """Mean stroke width in pixels of each image in ``[N, 1, H, W]``.

    A stroke of width ``w`` and length ``L`` has area ``w * L`` and an outline about ``2 * L``
    long, so ``w ~ 2 * area / perimeter``. The area is the sum of the ink; the perimeter is
    the sum of the gradient magnitude (each edge pixel contributes its 0 -> 1 step).
    """
    gx = x[..., :-1, 1:] - x[..., :-1, :-1]
    gy = x[..., 1:, :-1] - x[..., :-1, :-1]
    perimeter = torch.hypot(gx, gy).sum(dim=(1, 2, 3))
    return 2 * x.sum(dim=(1, 2, 3)) / perimeter.clamp_min(1e-6)


def _restroke(x: torch.Tensor, delta: torch.Tensor, sigma: float) -> torch.Tensor:
    """Make every stroke of image ``i`` about ``delta[i]`` pixels wider (thinner if negative).

    Blur, then threshold. An edge blurred by a Gaussian of width ``sigma`` falls off like
    ``Phi(-t / sigma)`` at distance ``t`` outside the original edge, so keeping the pixels
    above ``tau = Phi(-delta / (2 sigma))`` moves each edge out by ``delta / 2``. Unlike
    ``max_pool2d`` dilation this changes widths by fractions of a pixel, and it rounds
    corners like a round pen tip. The threshold is a short linear ramp rather than a hard
    step, about one pixel wide, so that edges stay antialiased.
    """
    z = (delta / (2 * sigma)).clamp(-1.6, 1.6)  # |z| <= 1.6: tau stays within 5%..95%
    tau = 0.5 * (1 + torch.erf(-z / math.sqrt(2)))
    slope = torch.exp(-0.5 * z**2) / (math.sqrt(2 * math.pi) * sigma)  # of the blurred edge, per pixel
    half_ramp = (0.5 * slope).clamp(max=0.2)  # the ramp spans about one pixel
    tau, half_ramp = tau.view(-1, 1, 1, 1), half_ramp.view(-1, 1, 1, 1)
    return ((_gaussian_blur(x, sigma) - tau) / (2 * half_ramp) + 0.5).clamp_(0, 1)


def normalize_strokes(x: torch.Tensor, width: float, sigma: float) -> torch.Tensor:
    """Redraw the glyphs so that their mean stroke width is ``width`` pixels.

    Fonts differ in weight (bold fraktur, hairline arrows), but a person writing with one pen
    makes strokes of one width. Normalising also makes the look-alike test blind to weight.
    The width estimate is rough, so we correct once more after a first try.
    """
    first = width - stroke_width(x)
    second = first + (width - stroke_width(_restroke(x, first, sigma)))
    return _restroke(x, second, sigma)


# ---------------------------------------------------------------------------------------
# Choosing the characters: candidates, look-alikes, caps
# ---------------------------------------------------------------------------------------
def _is_candidate(alphabet: GlyphAlphabet, cp: int) -> bool:
    """Whether ``cp`` may be a character of ``alphabet`` (checked before rendering)."""
    ch = chr(cp)
    if unicodedata.category(ch) not in _CATEGORIES[alphabet.kind]:
        return False
    # Precomposed letters (A with ring, Ǎ) are a base letter plus an accent: near-copies of
    # another character. Their decomposition is canonical (no "<tag>"), or "<compat>" for
    # ligatures and digraphs such as "dž". Tags like "<font>" (bold script A) are fine:
    # those characters have shapes of their own.
    decomposition = unicodedata.decomposition(ch)
    if decomposition and (not decomposition.startswith("<") or decomposition.startswith("<compat>")):
        return False
    if alphabet.names and not any(word in unicodedata.name(ch, "") for word in alphabet.names):
        return False
    return cp in _charmap(alphabet.font)


def _spread_order(n: int, k: int) -> list[int]:
    """Visit ``range(n)`` so that the first ``k`` visited are spread over the whole range.

    Unicode blocks list related characters side by side (a syllable and its rotations, a
    letter and its variants). Taking the first 55 would keep one corner of a big block;
    striding through it gives a more varied sample: 0, s, 2s, ..., then 1, 1+s, ...
    """
    stride = max(1, -(-n // k))  # ceil(n / k)
    return [i for start in range(stride) for i in range(start, n, stride)]


def _render_clean(font_and_cps: list[tuple[str, int]], canvas: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Render characters and normalise their strokes: ``images [n, 1, canvas, canvas]`` and a
    boolean ``rendered [n]`` (False, with an all-zero image, where :func:`render_glyph` gave None)."""
    raw, rendered = [], []
    for font, cp in font_and_cps:
        image = render_glyph(font, cp, canvas)
        rendered.append(image is not None)
        raw.append(np.zeros((canvas, canvas), np.float32) if image is None else image)
    if not raw:
        return torch.zeros(0, 1, canvas, canvas), torch.zeros(0, dtype=torch.bool)
    scale = canvas / CANVAS
    x = torch.from_numpy(np.stack(raw))[:, None]
    return normalize_strokes(x, PEN_WIDTH * scale, STROKE_SIGMA * scale), torch.tensor(rendered)


def _usable(x: torch.Tensor, rendered: torch.Tensor) -> torch.Tensor:
    """Which clean renders ``[n, 1, 64, 64]`` make good characters (boolean ``[n]``).

    Not those that

    * do not render at all (see :func:`render_glyph`);
    * leave almost no ink (rows of dots);
    * are filled shapes rather than pen strokes: with strokes :data:`PEN_WIDTH` wide no 7x7
      square fits inside a stroke, so ink that survives an erosion by a 7x7 square belongs
      to a filled area;
    * could not be redrawn with the pen: in hatched squares or double-line arrows the lines
      are too close together to be thickened, so their mean width stays far below the pen's.

    The decision is made once, on the 64x64 renders, whatever size is built later.
    """
    ink = x.sum(dim=(1, 2, 3))
    # Erosion by a k x k square keeps a pixel when all k*k pixels around it are ink, i.e.
    # when their box sum is k*k. The box sum, like the blur, is two matrix products.
    radius = 3  # a 7x7 square
    box = _box_matrix(x.shape[-1], radius)
    inside = box @ (x > 0.5).float() @ box.T
    solid = (inside > (2 * radius + 1) ** 2 - 0.5).float()
    solid_fraction = solid.sum(dim=(1, 2, 3)) / ink.clamp_min(1e-6)
    thin = stroke_width(x) < MIN_WIDTH * PEN_WIDTH
    return rendered & (ink >= MIN_INK) & (solid_fraction <= MAX_SOLID) & ~thin


def _shape_features(images: torch.Tensor) -> torch.Tensor:
    """Unit-length vectors of the ``[N, 1, H, W]`` renders, downsampled to 28x28.

    Two renders have cosine similarity 1 when they are the same picture; as strokes are
    normalised to one width, what remains to compare is the shape.
    """
    small = F.interpolate(images, size=(DEDUP_SIZE, DEDUP_SIZE), mode="area")
    flat = small.flatten(1)
    return flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-8)


def _dihedral(maps: torch.Tensor) -> list[torch.Tensor]:
    """The 8 images of ``[..., H, W]`` square maps under the symmetries of the square: the
    rotations by 0, 90, 180 and 270 degrees (as :func:`~mlcourse.data.base.with_rotations`
    turns them), then the same of the mirror image. The identity comes first."""
    return [torch.rot90(m, k, dims=(-2, -1)) for m in (maps, maps.flip(-1)) for k in range(4)]


def _dihedral_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[n, m]``: the highest cosine similarity of shape ``a[i]`` with any rotation or
    reflection of shape ``b[j]`` (unit vectors of :func:`_shape_features`).

    Rotating and mirroring permute pixels, so they keep the vectors' length, and area
    downsampling commutes with them: transforming the 28x28 features is transforming the
    render. As the 8 symmetries form a group, the measure is symmetric in ``a`` and ``b``.
    """
    maps = b.view(len(b), DEDUP_SIZE, DEDUP_SIZE)
    best = None
    for turned in _dihedral(maps):
        s = a @ turned.reshape(len(b), -1).T
        best = s if best is None else torch.maximum(best, s)
    return best


def select_characters(subset: bool = False) -> tuple[tuple[str, int], ...]:
    """The characters of the dataset as ``(alphabet name, code point)`` pairs, in class order.

    Cheap (a few seconds: every candidate is drawn once, no drawers) and cached for the
    process. The choice does not depend on the output size or the seed, so every build has
    the same classes; the subset is the first :data:`SUBSET_PER_ALPHABET` characters of each
    alphabet of the full selection (all of them where an alphabet has fewer).

    Look-alikes: a candidate is rejected when its similarity to a character already accepted
    (in its own alphabet or an earlier one) exceeds :data:`DEDUP_MAX_COSINE`. Going through
    the alphabets in the order of :data:`GLYPH_ALPHABETS` means "keep the first occurrence".
    The threshold errs on the strict side: losing a distinct but similar character (A vs Λ)
    costs little, keeping a duplicate would leak test characters into training.

    The similarity is the cosine of the 28x28 renders, but which renders depends on the pair:

    * **across script families** (which the splits may put on opposite sides), the highest
      cosine over the 8 symmetries of the square: the rotations by 0, 90, 180 and 270 degrees
      and their mirror images. Training adds the rotated copies of its characters as classes
      of their own (``meta_splits(rotations=True)``), so a test ``Ɔ`` is not new when a
      training ``C`` turned by 180 degrees is a class (an upright-only filter let about a
      quarter of the held-out characters through this way). Reflections are not used in
      training today, but a mirror image is no new character either (Cyrillic ``Я`` vs ``R``,
      Old Italic letters are mirrored Greek ones), and a flip augmentation added later must
      not reopen the leak; the full group costs 8 matrix products, a few seconds.
    * **within a family**, the upright cosine only: some scripts are built from turned copies
      of one shape (the Canadian syllabics ``ᐁ ᐃ ᐅ ᐊ`` are one sign pointing four ways, the
      vowel they write), and those are distinct characters of the script. A family is never
      split, so its rotated siblings cannot leak from training into a test.

    :func:`leak_similarity` measures a split the same way.
    """
    full = _select_all()
    if not subset:
        return full
    # The first characters of each alphabet (in code-point order) make the subset.
    count: dict[str, int] = {}
    chosen = []
    for name, cp in full:
        count[name] = count.get(name, 0) + 1
        if count[name] <= SUBSET_PER_ALPHABET:
            chosen.append((name, cp))
    return tuple(chosen)


@lru_cache(maxsize=1)
def _select_all() -> tuple[tuple[str, int], ...]:
    """The full selection (see :func:`select_characters`), computed once per process."""
    owner, candidates = [], []
    for a, alphabet in enumerate(GLYPH_ALPHABETS):
        for cp in alphabet.code_points():
            if _is_candidate(alphabet, cp):
                owner.append(a)
                candidates.append((alphabet.font, cp))
    images, rendered = _render_clean(candidates, CANVAS)
    usable = _usable(images, rendered).numpy()
    index = np.flatnonzero(usable)  # compare only the usable candidates
    owner_np = np.asarray(owner)[index]
    features = _shape_features(images[index])
    # Which similarity counts: within a family the upright one, across families the highest
    # over all rotations and reflections (see select_characters for why).
    family = np.asarray([GLYPH_FAMILIES.index(GLYPH_ALPHABETS[a].family) for a in owner_np])
    same_family = torch.from_numpy(family[:, None] == family[None, :])
    upright = features @ features.T
    similarity = torch.where(same_family, upright, _dihedral_similarity(features, features)).numpy()

    chosen: list[tuple[str, int]] = []
    # closest[j]: the highest similarity of candidate j to any character accepted so far.
    closest = np.full(len(index), -1.0, dtype=np.float32)
    for a, alphabet in enumerate(GLYPH_ALPHABETS):
        mine = np.flatnonzero(owner_np == a)
        kept: list[int] = []
        for i in mine[_spread_order(len(mine), MAX_PER_ALPHABET)]:
            if len(kept) == MAX_PER_ALPHABET:
                break
            if closest[i] > DEDUP_MAX_COSINE:
                continue  # this shape (or a turned or mirrored copy) is already in the dataset
            np.maximum(closest, similarity[i], out=closest)
            kept.append(int(i))
        kept.sort()  # list each alphabet in code-point order
        chosen += [(alphabet.name, candidates[index[i]][1]) for i in kept]
    return tuple(chosen)


class Lookalike(NamedTuple):
    """The closest pair found by :func:`leak_similarity`."""

    similarity: float
    train_class: str
    held_out_class: str


def _parse_class_name(name: str) -> tuple[str, int, int]:
    """``"Latin/U+0043"`` -> ``("Latin", 0x43, 0)``; ``"Latin/U+0043/rot90"`` -> ``(..., 1)``."""
    parts = name.split("/")
    if len(parts) not in (2, 3) or parts[0] not in _FAMILY_OF or not parts[1].startswith("U+"):
        raise ValueError(f"not a glyph class name: {name!r} (expected like 'Latin/U+0043')")
    turns = 0
    if len(parts) == 3:
        if not parts[2].startswith("rot") or parts[2][3:] not in ("0", "90", "180", "270"):
            raise ValueError(f"not a glyph class name: {name!r} (unknown suffix {parts[2]!r})")
        turns = int(parts[2][3:]) // 90
    return parts[0], int(parts[1][2:], 16), turns


def _class_features(names) -> torch.Tensor:
    """The look-alike filter's shape vectors of the named classes (rotated as their names say)."""
    fonts = {alphabet.name: alphabet.font for alphabet in GLYPH_ALPHABETS}
    parsed = [_parse_class_name(name) for name in names]
    characters = list(dict.fromkeys((fonts[block], cp) for block, cp, _ in parsed))  # render each once
    images, rendered = _render_clean(characters, CANVAS)
    if not rendered.all():
        bad = [f"U+{cp:04X}" for (_, cp), ok in zip(characters, rendered.tolist()) if not ok]
        raise ValueError(f"glyph characters {bad[:5]} do not render")
    row = {character: i for i, character in enumerate(characters)}
    maps = _shape_features(images).view(-1, DEDUP_SIZE, DEDUP_SIZE)
    turned = [torch.rot90(maps[row[fonts[block], cp]], turns, dims=(0, 1)) for block, cp, turns in parsed]
    return torch.stack(turned).flatten(1)


def leak_similarity(train_names, held_out_names, dihedral: bool = True) -> Lookalike:
    """How close the held-out characters come to the training ones: the most similar pair.

    The measure is the look-alike filter's (cosine similarity of the clean 28x28 renders, see
    :func:`select_characters`); a split leaks when it exceeds :data:`DEDUP_MAX_COSINE`.
    Names are class names such as ``"Latin/U+0043"``, or ``"Latin/U+0043/rot90"`` for the
    rotated copies that :func:`~mlcourse.data.base.with_rotations` adds (rendered rotated).

    ``dihedral=True`` compares every held-out character with every rotation and reflection of
    every training character: the training classes *as used in training*, where rotated
    copies are classes of their own and augmentation turns images further. ``dihedral=False``
    compares the characters as named, upright: the check the filter made before
    ``FORMAT_VERSION`` 2, blind to a test ``Ɔ`` whose rotated training twin is ``C``.
    """
    train_names, held_out_names = list(train_names), list(held_out_names)
    if not train_names or not held_out_names:
        raise ValueError("leak_similarity: needs at least one training and one held-out class")
    train = _class_features(train_names)
    held_out = _class_features(held_out_names)
    similarity = _dihedral_similarity(held_out, train) if dihedral else held_out @ train.T
    best = int(similarity.argmax())
    i, j = divmod(best, len(train_names))
    return Lookalike(float(similarity[i, j]), train_names[j], held_out_names[i])


# ---------------------------------------------------------------------------------------
# Base renders of the chosen characters
# ---------------------------------------------------------------------------------------
@dataclass
class BaseGlyphs:
    """Clean renders of the chosen characters, before any drawer touches them.

    ``images`` is ``float [N, 1, canvas, canvas]`` in [0, 1] with strokes
    :data:`PEN_WIDTH` wide (at 64x64); ``class_names[i]`` is like ``"Greek/U+03A3"`` (its
    alphabet, i.e. block, and code point), ``class_groups[i]`` the script family
    (:func:`family_of`), ``fonts[i]`` the font file, ``code_points[i]`` the character.
    """

    images: torch.Tensor
    class_names: list[str]
    class_groups: list[str]
    code_points: list[int]
    fonts: list[str]

    def __len__(self) -> int:
        return len(self.class_names)


def _class_name(alphabet: str, cp: int) -> str:
    return f"{alphabet}/U+{cp:04X}"


def render_base_glyphs(canvas: int = CANVAS, subset: bool = False) -> BaseGlyphs:
    """The clean renders of the characters chosen by :func:`select_characters`."""
    fonts = {alphabet.name: alphabet.font for alphabet in GLYPH_ALPHABETS}
    chosen = select_characters(subset)
    images, rendered = _render_clean([(fonts[name], cp) for name, cp in chosen], canvas)
    if not rendered.all():  # cannot happen with the fonts matplotlib ships, but be loud
        bad = [_class_name(*chosen[i]) for i, ok in enumerate(rendered.tolist()) if not ok]
        raise RuntimeError(f"glyphs: characters {bad[:5]} do not render at canvas {canvas}")
    return BaseGlyphs(
        images=images,
        class_names=[_class_name(name, cp) for name, cp in chosen],
        class_groups=[family_of(name) for name, _ in chosen],
        code_points=[cp for _, cp in chosen],
        fonts=[fonts[name] for name, _ in chosen],
    )


# ---------------------------------------------------------------------------------------
# Drawers: twenty hands, each with a style of its own
# ---------------------------------------------------------------------------------------
@dataclass
class DrawerStyles:
    """What makes drawer ``d`` recognisable across all the characters they draw.

    All tensors have one entry per drawer.
    """

    slant: torch.Tensor  # horizontal shear; > 0 leans right like italics
    rotation: torch.Tensor  # how the whole page is tilted (radians)
    size: torch.Tensor  # small (< 1) or large handwriting, as a factor
    aspect: torch.Tensor  # narrow (< 1) or wide (> 1) letters, as a factor
    pen: torch.Tensor  # stroke width in pixels of the 64x64 canvas
    shakiness: torch.Tensor  # factor of the fine wobble of the strokes


def _seed_from(*parts) -> int:
    """A 63-bit seed from any printable parts (stable across runs, unlike ``hash()``)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def drawer_styles(seed: int, num_drawers: int = NUM_DRAWERS) -> DrawerStyles:
    """Draw the styles of ``num_drawers`` drawers from ``seed`` (one generator, fixed order)."""
    g = torch.Generator().manual_seed(_seed_from("glyph-drawers", seed))

    def uniform(low, high):
        return low + (high - low) * torch.rand(num_drawers, generator=g)

    return DrawerStyles(
        slant=uniform(-0.3, 0.3),
        rotation=uniform(-math.radians(4), math.radians(4)),
        size=uniform(0.88, 1.04),
        aspect=torch.exp(uniform(-0.12, 0.12)),
        pen=uniform(3.5, 7.0),
        shakiness=uniform(0.3, 1.0),
    )


# How much each drawing differs from the drawer's usual style (standard deviations).
JITTER_ROTATION = math.radians(5)  # ... and at most 10 degrees in all
JITTER_SCALE = 0.05
JITTER_SHEAR = 0.05
JITTER_SHIFT = 0.04  # fraction of the half-canvas
JITTER_PEN = 0.4  # pixels
PEN_MIN, PEN_MAX = 3.5, 8.0  # pen widths in pixels (64x64 canvas): 1.5 to 3.5 pixels at 28x28
PEN_SIGMA = 1.2  # blur of the pen-width change; small, so a thin pen does not fade
MAX_THINNING = 1.0  # pixels: thinning more would erase the dots of i, j and Arabic letters
WARP_COARSE = 0.08  # a 3x3 grid of random displacements: the whole character bends
WARP_FINE = 0.02  # a 7x7 grid: strokes wobble (times the drawer's shakiness)
_COARSE, _FINE = 3, 7  # sizes of the random grids

# The standard-normal numbers of one drawing, by column: rotation, scale, shear, shift
# (x, y), pen, then the x and y displacements of the coarse and of the fine grid.
_ROTATION, _SCALE, _SHEAR, _SHIFT, _PEN = 0, 1, 2, slice(3, 5), 5
_COARSE_FIELD = slice(6, 6 + 2 * _COARSE**2)
_FINE_FIELD = slice(_COARSE_FIELD.stop, _COARSE_FIELD.stop + 2 * _FINE**2)
_NUM_RANDOM = _FINE_FIELD.stop


def _drawing_noise(seed: int, class_name: str, num_drawers: int) -> torch.Tensor:
    """The standard-normal numbers behind the drawings of one character: ``[D, _NUM_RANDOM]``.

    Each character has its own generator, seeded from the dataset seed and the character's
    name: its drawings do not depend on which other characters are built (so the fast-mode
    subset shows exactly the drawings of the full set) nor on how the work is batched.
    """
    g = torch.Generator().manual_seed(_seed_from("glyph-drawings", seed, class_name))
    return torch.randn(num_drawers, _NUM_RANDOM, generator=g)


@lru_cache(maxsize=8)
def _upsample_matrix(grid: int, canvas: int) -> torch.Tensor:
    """``[canvas, grid]`` matrix ``U``: ``U @ c @ U.T`` is the bicubic upsampling of a ``grid x grid`` ``c``.

    Bicubic interpolation is separable, so upsampling is two small matrix products; we get
    ``U`` by upsampling the ``grid`` unit vectors once. (On a CPU this is ~10x faster than
    calling ``F.interpolate`` on a large batch of tiny images.)
    """
    basis = torch.eye(grid).view(grid, 1, grid, 1)
    columns = F.interpolate(basis, size=(canvas, 1), mode="bicubic", align_corners=True)
    return columns.view(grid, canvas).T.contiguous()


def _smooth_field(noise: torch.Tensor, grid: int, canvas: int) -> torch.Tensor:
    """Displacements ``[N, 2, canvas, canvas]`` interpolated smoothly from ``[N, 2*grid*grid]`` noise.

    Bicubic upsampling of a coarse random grid gives a smooth displacement field: nearby
    pixels move together, so strokes bend instead of breaking up (an *elastic* distortion).
    """
    up = _upsample_matrix(grid, canvas)
    return up @ noise.view(-1, 2, grid, grid) @ up.T


def _sampling_grid(theta: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """``F.affine_grid(theta, align_corners=False)`` plus ``displacement`` ``[N, 2, H, W]``.

    Computed by broadcasting rather than with ``F.affine_grid``, which is slow on a CPU for
    big batches; the result is the same ``[N, H, W, 2]`` grid of (x, y) in [-1, 1].
    """
    h, w = displacement.shape[-2:]
    xs = (torch.arange(w, dtype=theta.dtype) * 2 + 1) / w - 1  # pixel centres
    ys = ((torch.arange(h, dtype=theta.dtype) * 2 + 1) / h - 1).view(-1, 1)
    t = theta.view(-1, 6, 1, 1)
    gx = t[:, 0] * xs + t[:, 1] * ys + t[:, 2] + displacement[:, 0]
    gy = t[:, 3] * xs + t[:, 4] * ys + t[:, 5] + displacement[:, 1]
    return torch.stack([gx, gy], dim=-1)


def _draw_batch(
    base: torch.Tensor, noise: torch.Tensor, styles: DrawerStyles, size: int
) -> torch.Tensor:
    """Draw ``[n, 1, R, R]`` base glyphs by all drawers: float ``[n * D, 1, size, size]``.

    ``noise`` is ``[n, D, _NUM_RANDOM]``; image ``i * D + d`` is character ``i`` by drawer ``d``.
    """
    n, d = noise.shape[:2]
    canvas = base.shape[-1]
    px = canvas / CANVAS  # lengths in pixels below are for the 64x64 canvas
    z = noise.reshape(n * d, _NUM_RANDOM)
    s = {name: value.repeat(n) for name, value in vars(styles).items()}  # style of each image

    # 1. Affine jitter around the drawer's style. The sampling grid maps each *output* pixel
    #    to the input position it reads from, so it holds the *inverse* of the motion we
    #    want: to make a glyph k times bigger we read from positions k times closer to the
    #    centre. We build the forward motion A = rotation @ shear @ scale, then invert it.
    limit = math.radians(10)
    angle = (s["rotation"] + JITTER_ROTATION * z[:, _ROTATION]).clamp(-limit, limit)
    scale = s["size"] * torch.exp(JITTER_SCALE * z[:, _SCALE])
    sx, sy = scale * s["aspect"].sqrt(), scale / s["aspect"].sqrt()
    shear = s["slant"] + JITTER_SHEAR * z[:, _SHEAR]
    shift = JITTER_SHIFT * z[:, _SHIFT]
    cos, sin = torch.cos(angle), torch.sin(angle)
    a11, a12 = cos * sx, (-cos * shear - sin) * sy  # image y points down: -shear leans right
    a21, a22 = sin * sx, (-sin * shear + cos) * sy
    det = a11 * a22 - a12 * a21
    inverse = torch.stack([a22, -a12, -a21, a11], dim=1).view(-1, 2, 2) / det.view(-1, 1, 1)
    theta = torch.cat([inverse, -(inverse @ shift.unsqueeze(-1))], dim=2)  # [n*d, 2, 3]

    # 2. Elastic warp: a coarse bend of the whole character plus a wobble of the strokes
    #    whose amplitude is the drawer's shakiness.
    displacement = WARP_COARSE * _smooth_field(z[:, _COARSE_FIELD], _COARSE, canvas)
    wobble = (WARP_FINE * s["shakiness"]).view(-1, 1)
    displacement += _smooth_field(wobble * z[:, _FINE_FIELD], _FINE, canvas)

    images = base.repeat_interleave(d, dim=0)  # [n*d, 1, R, R], drawer index fastest
    grid = _sampling_grid(theta, displacement)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    # 3. The drawer's pen: redraw the strokes (now PEN_WIDTH * scale wide) with the drawer's
    #    own width. A narrow blur keeps thin pens from fading (see _restroke); dots, which
    #    a blur dims more than lines, would vanish if we thinned too much.
    pen = (s["pen"] + JITTER_PEN * z[:, _PEN]).clamp(PEN_MIN, PEN_MAX)
    change = (pen - PEN_WIDTH * scale).clamp(min=-MAX_THINNING)
    images = _restroke(images, change * px, PEN_SIGMA * px)

    # 4. Antialiased downsampling: 'area' averages all the pixels each output pixel covers.
    if size != canvas:
        images = F.interpolate(images, size=(size, size), mode="area")
    return images


def draw_variants(
    base: BaseGlyphs, seed: int = 0, size: int = 28, num_drawers: int = NUM_DRAWERS, chunk: int = 64
) -> torch.Tensor:
    """All drawings of all base glyphs: ``uint8 [N * num_drawers, 1, size, size]``, class-major.

    Work is done ``chunk`` characters at a time to bound memory (20 drawers x 64 characters x
    64x64 floats is 21 MB per intermediate tensor); the result does not depend on ``chunk``.
    """
    styles = drawer_styles(seed, num_drawers)
    out = torch.empty(len(base) * num_drawers, 1, size, size, dtype=torch.uint8)
    for start in range(0, len(base), chunk):
        names = base.class_names[start : start + chunk]
        noise = torch.stack([_drawing_noise(seed, name, num_drawers) for name in names])
        images = _draw_batch(base.images[start : start + chunk], noise, styles, size)
        rows = slice(start * num_drawers, (start + len(names)) * num_drawers)
        out[rows] = images.mul(255).round_().clamp_(0, 255).to(torch.uint8)
    return out


# ---------------------------------------------------------------------------------------
# Building, caching, loading
# ---------------------------------------------------------------------------------------
def _canvas_for(size: int) -> int:
    # Drawing happens on a canvas at least as large as the output, so that the final step
    # is always an antialiased *down*sampling (or none at all).
    return max(CANVAS, size)


def build_glyphs(size: int = 28, seed: int = 0, subset: bool = False) -> ImageClassDataset:
    """Build the glyphs dataset in memory (no cache): ``NUM_DRAWERS`` images per character.

    ``size`` is the side of the square output images; ``subset`` keeps the first
    :data:`SUBSET_PER_ALPHABET` characters of every alphabet (same drawings as the full set).
    Class names are ``"block/U+XXXX"``, class groups the script families.
    """
    if size < 8:
        raise ValueError(f"glyphs: size must be at least 8 pixels, got {size}")
    base = render_base_glyphs(_canvas_for(size), subset=subset)
    images = draw_variants(base, seed=seed, size=size)
    targets = torch.arange(len(base)).repeat_interleave(NUM_DRAWERS)
    return ImageClassDataset(images, targets, base.class_names, base.class_groups, name="glyphs")


def _fingerprint() -> str:
    """A short hash of everything that shapes the dataset besides size, seed and subset.

    The fonts come with matplotlib, so its version is part of it; editing the alphabets or
    the constants of this module without bumping FORMAT_VERSION still invalidates the cache.
    """
    import matplotlib

    parts = [
        FORMAT_VERSION, matplotlib.__version__, GLYPH_ALPHABETS, NUM_DRAWERS, MAX_PER_ALPHABET,
        SUBSET_PER_ALPHABET, CANVAS, BOX_FRACTION, MIN_EXTENT, PEN_WIDTH, STROKE_SIGMA, MIN_INK,
        MAX_SOLID, MIN_WIDTH, DEDUP_SIZE, DEDUP_MAX_COSINE, PEN_MIN, PEN_MAX, PEN_SIGMA, MAX_THINNING, JITTER_ROTATION,
        JITTER_SCALE, JITTER_SHEAR, JITTER_SHIFT, JITTER_PEN, WARP_COARSE, WARP_FINE,
    ]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:8]


def cache_path(size: int = 28, seed: int = 0, subset: bool = False, root: str | Path | None = None) -> Path:
    """Where :func:`load_glyphs` keeps a build, e.g. ``.../glyphs/glyphs-v1-28px-seed0-full-1a2b3c4d.pt``."""
    folder = Path(root).expanduser() if root is not None else config.cache_dir() / "glyphs"
    part = "subset" if subset else "full"
    return folder / f"glyphs-v{FORMAT_VERSION}-{size}px-seed{seed}-{part}-{_fingerprint()}.pt"


def _save(dataset: ImageClassDataset, path: Path) -> None:
    """Write atomically: a reader never sees half a file, even if we are killed mid-write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format_version": FORMAT_VERSION,
        "images": dataset.images,
        "targets": dataset.targets,
        "class_names": list(dataset.class_names),
        "class_groups": list(dataset.class_groups),
    }
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load(path: Path) -> ImageClassDataset | None:
    """Read a cached build; None if the file is unreadable or from another format."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format_version") != FORMAT_VERSION:
            return None
        return ImageClassDataset(
            payload["images"], payload["targets"], payload["class_names"], payload["class_groups"],
            name="glyphs",
        )
    except Exception:  # a truncated or foreign file: rebuild rather than fail
        return None


def load_glyphs(
    size: int = 28,
    seed: int = 0,
    subset: bool | None = None,
    cache: bool = True,
    root: str | Path | None = None,
) -> ImageClassDataset:
    """The glyphs dataset: built on first use (~12 s of CPU time; the subset ~6 s), then read from disk.

    Args:
        size: side of the square images (28 like the usual Omniglot setting; 105 is
            Omniglot's original size).
        seed: seeds the drawers; the same seed always gives the same tensors.
        subset: keep :data:`SUBSET_PER_ALPHABET` characters of every alphabet; ``None``
            means "in fast mode" (:func:`mlcourse.config.fast_mode`).
        cache: read and write the ``.pt`` cache file (see :func:`cache_path`).
        root: folder of the cache; default ``config.cache_dir() / "glyphs"``.

    Returns:
        An :class:`ImageClassDataset` named ``"glyphs"``: ``uint8 [M, 1, size, size]`` images,
        bright strokes on black, ``NUM_DRAWERS`` per class, classes grouped by script family
        (:data:`GLYPH_FAMILIES`).
    """
    subset = config.fast_mode() if subset is None else bool(subset)
    if not cache:
        return build_glyphs(size, seed, subset)
    path = cache_path(size, seed, subset, root)
    if path.exists():
        dataset = _load(path)
        if dataset is not None:
            return dataset
    dataset = build_glyphs(size, seed, subset)
    _save(dataset, path)
    return dataset
