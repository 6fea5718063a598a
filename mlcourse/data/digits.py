"""Handwritten digits: a second domain for cross-domain few-shot experiments.

Two sources, both turned into the same :class:`~mlcourse.data.base.ImageClassDataset` as
Omniglot (uint8 ``[M, 1, size, size]``, strokes bright on dark, ten classes ``"0"``..``"9"``):

* :func:`load_digits`: scikit-learn's bundled copy of the UCI optical digits, 1,797 images
  of 8x8 pixels with 17 grey levels. It ships inside scikit-learn, so it works offline,
  everywhere, instantly. Upscaled smoothly to ``size`` it looks blurry, which is itself a
  lesson: a meta-learner trained on sharp Omniglot strokes meets a *domain shift*.
* :func:`load_mnist`: MNIST through torchvision, when its files are on disk or when you pass
  ``download=True`` on a machine with network access.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import config
from .base import ImageClassDataset
from .omniglot import _socket_timeout, load_cached, save_atomic

DIGIT_NAMES = [str(d) for d in range(10)]
_CACHE_FORMAT = 1
_MNIST_FILES = "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``uint8 [M, 1, h, w]`` to ``[M, 1, size, size]`` smoothly, staying uint8.

    Bicubic interpolation gives round strokes when enlarging (bilinear leaves diamond-shaped
    artefacts from an 8x8 grid); ``antialias=True`` makes shrinking average over the covered
    area instead of skipping pixels. Bicubic can overshoot slightly, hence the clamp.
    """
    if images.shape[-2:] == (size, size):
        return images.clone()
    out = F.interpolate(images.float(), size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def load_digits(size: int = 28, cache: bool = True) -> ImageClassDataset:
    """scikit-learn's 1,797 handwritten digits (8x8) upscaled to ``size``, strokes bright.

    Intensities 0..16 are scaled to 0..255 (16 = full ink = 255) before resizing. Classes
    are the digits 0..9 in order; every class belongs to the group ``"digits"``. Reading
    the bundled file takes a fraction of a second; ``cache`` stores the resized tensor in
    ``<cache_dir>/digits`` all the same, to match the other loaders.
    """
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    import sklearn  # imported here: scikit-learn takes about a second to import
    from sklearn.datasets import load_digits as sklearn_digits

    cache_path = config.cache_dir() / "digits" / f"sklearn-digits_{size}px_v{_CACHE_FORMAT}_{sklearn.__version__}.pt"
    data = load_cached(cache_path) if cache else None
    if data is None:
        bunch = sklearn_digits()
        # In scikit-learn's digits 0 is blank paper and 16 is ink: already bright-on-dark.
        raw = torch.as_tensor(bunch.images, dtype=torch.float32)  # [1797, 8, 8], 0..16
        images = (raw * (255.0 / 16.0)).round().clamp(0, 255).to(torch.uint8).unsqueeze(1)
        data = {"images": resize_uint8(images, size), "targets": torch.as_tensor(bunch.target, dtype=torch.long)}
        if cache:
            try:
                save_atomic(data, cache_path)
            except OSError as error:
                print(f"mlcourse: could not write the digits cache {cache_path}: {error}")
    return ImageClassDataset(
        data["images"], data["targets"], list(DIGIT_NAMES), ["digits"] * 10, name="digits"
    )


def load_mnist(
    root: str | os.PathLike | None = None,
    train: bool = True,
    size: int = 28,
    download: bool = False,
) -> ImageClassDataset:
    """MNIST (60,000 training or 10,000 test images) through torchvision, strokes bright.

    ``root`` defaults to ``<cache_dir>/mnist``; torchvision looks for its files in
    ``root/MNIST/raw/``. Nothing is downloaded unless ``download=True``. Offline, a missing
    dataset raises :class:`FileNotFoundError` and a failed download :class:`RuntimeError`,
    both saying how to provide the files by hand. MNIST is white ink on black already,
    so no inversion is needed. Group name: ``"mnist"``.
    """
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    from torchvision.datasets import MNIST

    root = Path(root).expanduser() if root is not None else config.cache_dir() / "mnist"
    how_to = (
        f"put the four MNIST files ({_MNIST_FILES}, unzipped) in {root / 'MNIST' / 'raw'}, "
        "or pass load_mnist(root=FOLDER) for a FOLDER whose MNIST/raw/ holds them"
    )
    if download:
        try:
            with _socket_timeout(20.0):
                dataset = MNIST(str(root), train=train, download=True)
        except Exception as error:  # torchvision wraps URLError in RuntimeError; catch all
            raise RuntimeError(
                f"Downloading MNIST failed ({type(error).__name__}: {error}). "
                f"If this machine is offline, {how_to}."
            ) from error
    else:
        try:
            dataset = MNIST(str(root), train=train, download=False)
        except RuntimeError as error:  # torchvision's "Dataset not found"
            raise FileNotFoundError(
                f"MNIST was not found in {root}. Either call load_mnist(download=True) on a "
                f"machine with network access, or {how_to}."
            ) from error
    images = resize_uint8(dataset.data.unsqueeze(1).contiguous(), size)
    return ImageClassDataset(
        images,
        dataset.targets.clone(),
        list(DIGIT_NAMES),
        ["mnist"] * 10,
        name=f"mnist-{'train' if train else 'test'}",
    )


__all__ = ["load_digits", "load_mnist", "resize_uint8"]
