"""Upload preparation (mlcourse.metagen.personal): real files of every bad kind, made here with
PIL or by hand, each get a one-sentence message naming the file; odd but valid images (CMYK,
palette, RGBA, 16-bit, EXIF-rotated photos) work; an Omniglot scan comes out as the loader
gives it."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from mlcourse.data.omniglot import find_omniglot
from mlcourse.metagen.personal import (
    FILL,
    LIMITS,
    UploadError,
    UploadLimits,
    as_files,
    digit_examples,
    flatten,
    ink_box,
    omniglot_examples,
    photo_like,
    prepare_image,
    prepare_upload,
    square_around_ink,
    strokes_bright,
    uploaded_files,
)

needs_omniglot = pytest.mark.skipif(find_omniglot("small2") is None, reason="the Omniglot zips of ../shared are not here")


# -- real files, made here ------------------------------------------------------------------
def drawing(seed: int = 0, side: int = 120, mode: str = "L") -> Image.Image:
    """A dark pen drawing on white paper: a few random thick strokes in the middle."""
    rng = np.random.default_rng(seed)
    image = Image.new("L", (side, side), 255)
    draw = ImageDraw.Draw(image)
    points = [tuple(int(v) for v in rng.integers(side // 4, 3 * side // 4, size=2)) for _ in range(5)]
    draw.line(points, fill=0, width=max(2, side // 25))
    return image.convert(mode)


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG file whose header declares ``width x height`` pixels (one zlib-compressed
    row follows, so decoding would try to allocate the whole picture)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1)))
            + chunk(b"IEND", b""))  # fmt: skip


def animated_gif() -> bytes:
    frames = [drawing(seed) for seed in range(3)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def cut_in_half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def good_files(n: int = 4) -> list[tuple[str, bytes]]:
    return [(f"drawing-{i}.png", encode(drawing(i))) for i in range(n)]


BAD_FILES = {
    "random bytes": ("notes.png", bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8)),
                     "is not an image this panel can read"),
    "a PNG cut in half": ("half.png", cut_in_half(encode(drawing(0, side=300))), "damaged or cut short"),
    "a photo (JPEG) cut in half": ("half.jpg", cut_in_half(photo_like(encode(drawing(0)))), "damaged or cut short"),
    "an animated GIF": ("wave.gif", animated_gif(), "holds 3 frames"),
    "an empty file": ("empty.png", b"", "is empty"),
    "a decompression bomb (our pixel limit, from the header)": ("bomb.png", png_declaring(8_000, 8_000),
                                                                "8000 x 8000 pixels"),
    "a decompression bomb (beyond PIL's own limit)": ("huge.png", png_declaring(100_000, 100_000), "decompression bomb"),
    "an all-white page": ("white.png", encode(Image.new("L", (400, 300), 255)), "looks blank"),
    "a grey page with JPEG noise": ("grey.jpg", encode(Image.fromarray(np.uint8(np.clip(
        np.random.default_rng(1).normal(150, 2, (300, 400)), 0, 255))), "JPEG", quality=70), "looks blank"),
}  # fmt: skip


# -- every bad kind gets its message ----------------------------------------------------------
@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_each_bad_file_gets_a_message_naming_it(kind):
    name, data, message = BAD_FILES[kind]
    with pytest.raises(UploadError, match=message) as caught:
        prepare_image(data, name)
    text = str(caught.value)
    assert text.startswith(name) and text.endswith(".") and "\n" not in text, text
    assert "Traceback" not in text


def test_a_bomb_is_refused_before_decoding(monkeypatch):
    """The pixel limit is read from the header: ``load()`` is never reached."""
    loaded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: loaded.append(1))
    with pytest.raises(UploadError, match="megapixels"):
        prepare_image(png_declaring(8_000, 8_000), "bomb.png")
    assert not loaded


def test_a_file_over_the_byte_limit_is_refused_before_opening(monkeypatch):
    opened = []
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(1))
    data = encode(drawing(0, side=200))
    with pytest.raises(UploadError, match=rf"big.png is {len(data)} bytes, more than the {len(data) - 1} bytes"):
        prepare_image(data, "big.png", limits=UploadLimits(max_bytes=len(data) - 1))
    assert not opened
    with pytest.raises(UploadError, match="more than the 20.0 MB"):  # the default limit, on a real oversized file
        prepare_image(data + b"\0" * (LIMITS.max_bytes - len(data) + 1), "photo.png")


def test_an_upload_never_raises_and_lists_every_problem():
    files = good_files(3) + [(name, data) for name, data, _ in BAD_FILES.values()]
    upload = prepare_upload(files)
    assert len(upload.images) == 3 and not upload.ok
    assert len(upload.problems) == len(BAD_FILES) + 1
    for (name, _, message), problem in zip(BAD_FILES.values(), upload.problems):
        assert problem.startswith(name)
    assert upload.problems[-1].startswith(f"3 of the {len(files)} files are ready")


def test_too_few_and_too_many_images():
    one = prepare_upload(good_files(1))
    assert not one.ok and one.problems == [
        "Only 1 image was uploaded: the generator needs at least 2 drawings of the same character (4 work best); add more."]
    none = prepare_upload(())
    assert not none.ok and "No image yet" in none.problems[0]
    many = prepare_upload(good_files(13))
    assert not many.ok and not many.images and "13 images were uploaded, more than the 12" in many.problems[0]
    broken = prepare_upload(good_files(1) + [BAD_FILES["random bytes"][:2]])
    assert not broken.ok and "Only 1 of the 2 files could be used" in broken.problems[-1]
    assert prepare_upload(good_files(2)).ok and prepare_upload(good_files(12)).ok


# -- odd but valid files work -----------------------------------------------------------------
def _reference(seed: int = 0) -> torch.Tensor:
    return prepare_image(encode(drawing(seed)), "reference.png").image


def rgba_on_transparent(seed: int = 0) -> Image.Image:
    """The drawing's strokes, black, on a fully transparent sheet."""
    grey = np.asarray(drawing(seed))
    rgba = np.zeros(grey.shape + (4,), dtype=np.uint8)
    rgba[..., 3] = 255 - grey
    return Image.fromarray(rgba, "RGBA")


VALID = {
    "RGB": lambda: encode(drawing(0, mode="RGB")),
    "CMYK JPEG": lambda: encode(drawing(0, mode="CMYK"), "JPEG", quality=95),
    "palette PNG": lambda: encode(drawing(0, mode="P")),
    "RGBA on a transparent sheet": lambda: encode(rgba_on_transparent(0)),
    "grey with alpha": lambda: encode(drawing(0, mode="LA")),
    "1-bit": lambda: encode(drawing(0, mode="1")),
    "16-bit grey PNG": lambda: encode(Image.fromarray(np.asarray(drawing(0), dtype=np.uint16) * 257)),
    "TIFF": lambda: encode(drawing(0), "TIFF"),
    "WebP": lambda: encode(drawing(0), "WEBP", lossless=True),
    "BMP": lambda: encode(drawing(0), "BMP"),
}


@pytest.mark.parametrize("kind", list(VALID))
def test_odd_but_valid_images_are_converted(kind):
    prepared = prepare_image(VALID[kind](), f"{kind}.img")
    assert prepared.image.shape == (1, 28, 28) and prepared.image.dtype == torch.float32
    difference = (prepared.image - _reference(0)).abs().max().item()
    assert difference < 0.1, f"{kind}: differs from the plain grey PNG by {difference:.3f}"


def test_a_16_bit_image_is_read_as_16_bit():
    image = Image.fromarray(np.asarray(drawing(0), dtype=np.uint16) * 257)
    assert image.mode.startswith("I")
    prepared = prepare_image(encode(image), "deep.png")
    assert any("16/32-bit" in note for note in prepared.notes)


def test_an_exif_rotated_photo_is_turned_upright():
    scan = encode(drawing(3, side=105))
    upright = prepare_image(photo_like(scan, seed=1), "upright.jpg")
    sideways_bytes = photo_like(scan, seed=1, exif_rotate=True)
    with Image.open(io.BytesIO(sideways_bytes)) as raw:
        assert raw.size[1] > raw.size[0], "the stored pixels should be sideways (portrait)"
    sideways = prepare_image(sideways_bytes, "sideways.jpg")
    assert any("EXIF orientation 6" in note for note in sideways.notes)
    assert (sideways.image - upright.image).abs().mean() < 0.01
    unrotated = torch.rot90(upright.image, 1, dims=(1, 2))
    assert (sideways.image - unrotated).abs().mean() > 5 * (sideways.image - upright.image).abs().mean()


def test_a_photo_like_page_comes_out_like_the_clean_drawing():
    """Grey paper, a slope of light, grain, blue ink and a tilt of up to 8 degrees: flattening
    and cropping recover the drawing (pixel correlation with the clean version's preparation
    above 0.6, the tilt costing the rest, and well above that with another drawing)."""
    scan = encode(drawing(5, side=105))
    clean = prepare_image(scan, "clean.png").image.flatten()
    other = prepare_image(encode(drawing(6, side=105)), "other.png").image.flatten()
    for seed in range(3):
        photo = prepare_image(photo_like(scan, seed=seed), "photo.jpg").image.flatten()
        same = torch.corrcoef(torch.stack([clean, photo]))[0, 1].item()
        different = torch.corrcoef(torch.stack([other, photo]))[0, 1].item()
        assert same > 0.6 and same > different + 0.2, (seed, same, different)


@pytest.mark.parametrize("fmt, mode", [("JPEG", "RGB"), ("PNG", "P"), ("PNG", "I;16")])
def test_a_12_megapixel_photo_is_shrunk_while_decoding(fmt, mode):
    """A phone-sized picture (4000 x 3000) never becomes a full-size float array: JPEGs shrink
    in the decoder, other formats by averaging blocks first; the result is the drawing's."""
    page = Image.new("L", (4000, 3000), 255)
    page.paste(drawing(0, side=1200), (1400, 900))
    image = Image.fromarray(np.asarray(page, dtype=np.uint16) * 257) if mode == "I;16" else page.convert(mode)
    prepared = prepare_image(encode(image, fmt), f"big.{fmt.lower()}")
    assert max(prepared.steps["grey"].shape) <= 512 and max(prepared.steps["uploaded"].shape) <= 1024
    direct = prepare_image(encode(drawing(0, side=1200)), "direct.png").image
    assert (prepared.image - direct).abs().mean() < 0.03


# -- the steps --------------------------------------------------------------------------------
def test_polarity_dark_strokes_are_inverted_bright_ones_kept():
    dark_on_light = np.asarray(drawing(0), dtype=np.float64) / 255
    bright, inverted = strokes_bright(dark_on_light)
    assert inverted and np.allclose(bright, 1 - dark_on_light)
    again, inverted_again = strokes_bright(bright)
    assert not inverted_again and np.array_equal(again, bright)
    prepared = prepare_image(encode(drawing(0)), "d.png").image
    assert prepared[0, 0, 0] == 0 and prepared.max() == 1  # paper 0 at the corner, strokes up to 1


def test_the_digits_are_bright_already_and_not_inverted():
    for name, data in digit_examples(3, 2):
        prepared = prepare_image(data, name)
        assert any("not inverted" in note for note in prepared.notes)
        assert prepared.image[0, 0, 0] == 0 and prepared.image.max() > 0.9


def test_cropping_fills_the_frame_like_omniglot():
    """A small drawing in a corner of a big page ends up centred, its larger side filling
    FILL of the frame."""
    page = Image.new("L", (800, 600), 255)
    page.paste(drawing(1, side=80), (650, 40))
    prepared = prepare_image(encode(page), "corner.png")
    ink = prepared.image[0].numpy()
    left, top, right, bottom = ink_box(ink)
    assert abs(max(right - left, bottom - top) / 28 - FILL) < 0.12
    assert abs((left + right) / 2 - 14) <= 1.5 and abs((top + bottom) / 2 - 14) <= 1.5


def test_a_clean_scan_passes_flatten_unchanged():
    ink = 1 - np.asarray(drawing(2, side=105), dtype=np.float64) / 255
    flat, contrast = flatten(ink)
    assert contrast == 1 and np.array_equal(flat, ink)


def test_preparation_is_deterministic_and_changes_nothing_it_is_given():
    data = encode(drawing(4))
    copy = bytes(data)
    a, b = prepare_image(data, "a.png"), prepare_image(data, "a.png")
    assert torch.equal(a.image, b.image) and data == copy


def test_argument_errors():
    with pytest.raises(ValueError, match="min_images"):
        UploadLimits(min_images=0)
    with pytest.raises(ValueError, match="max_images"):
        UploadLimits(min_images=5, max_images=4)
    with pytest.raises(ValueError, match="size must be an int >= 4"):
        prepare_image(encode(drawing(0)), size=2)
    with pytest.raises(TypeError, match="must be bytes"):
        prepare_image("not bytes", "x.png")
    with pytest.raises(TypeError, match="a dict with 'name' and 'content'"):
        uploaded_files([42])
    with pytest.raises(ValueError, match="fill"):
        square_around_ink(np.ones((4, 4)), fill=0)
    with pytest.raises(ValueError, match="no prepared images"):
        prepare_upload(()).support()


def test_every_upload_format_is_read():
    pairs = good_files(2)
    as_widget = as_files(pairs)
    as_widget7 = {name: {"content": data, "metadata": {}} for name, data in pairs}
    for value in (pairs, as_widget, as_widget7):
        assert uploaded_files(value) == pairs
    assert uploaded_files(None) == []


# -- the same as the loader, on real Omniglot scans --------------------------------------------
@pytest.mark.shared_data
@needs_omniglot
def test_an_omniglot_scan_prepared_uncropped_is_exactly_what_the_loader_gives():
    from mlcourse.data.omniglot import _decode

    for name, data in omniglot_examples(n=5) + omniglot_examples("images_background_small2/Tagalog/character03/", n=5):
        want = torch.tensor(_decode(io.BytesIO(data), 28)).float() / 255
        got = prepare_image(data, name, crop=False).image[0]
        assert torch.equal(got, want), f"{name}: differs by {(got - want).abs().max().item() * 255:.0f} levels"


@pytest.mark.shared_data
@needs_omniglot
def test_an_omniglot_scan_prepared_with_cropping_is_the_loaders_image_moved_and_scaled():
    """Cropping only recentres and rescales the loader's image: the ink's box is centred, and
    the amount of ink grows by the square of the scale (side of the frame over the side of
    the square cut around the ink), as no stroke is lost or added."""
    from mlcourse.data.omniglot import _decode

    for name, data in omniglot_examples(n=5):
        loaded = _decode(io.BytesIO(data), 28) / 255.0
        got = prepare_image(data, name).image[0].numpy()
        ink = 1 - np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float64) / 255
        left, top, right, bottom = ink_box(ink)
        scale = 105 / round(max(right - left, bottom - top) / FILL)
        assert abs(got.sum() / loaded.sum() / scale**2 - 1) < 0.06, (name, got.sum() / loaded.sum(), scale**2)
        left, top, right, bottom = ink_box(got)
        assert abs((left + right) / 2 - 14) <= 1 and abs((top + bottom) / 2 - 14) <= 1
