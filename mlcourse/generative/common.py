"""What the GAN and the VAE share: turning the course's data into batches, and the shape plan.

Pixel ranges
------------
The datasets hold ``uint8`` images, bright strokes on black. Each model chooses the range
that suits its output layer and says so:

* the **GAN** works in ``[-1, 1]`` (generator ends in ``tanh``, as in DCGAN, Radford et al.,
  2016): the inputs of the discriminator are centred on zero, and ``tanh`` has a useful
  gradient at both ends, where ``sigmoid`` flattens out.
* the **VAE** works in ``[0, 1]``: its decoder outputs the *logits* of a Bernoulli
  distribution per pixel, and Bernoulli targets must be probabilities (or 0/1).

Everything that leaves a model as a *picture* (``sample``, snapshots, the metrics of
:mod:`mlcourse.metrics`) is a float in ``[0, 1]`` so it can be compared with the data.

Shape plan
----------
A 28x28 image is 7x7 doubled twice; a 32x32 one is 4x4 doubled three times, a 64x64 one
4x4 doubled four times. :func:`upsampling_plan` finds that split (the most doublings that
leave a start of at least 4 pixels), so the same generator, discriminator, encoder and
decoder code serves every size.
"""

from __future__ import annotations

import torch

from ..data.base import ImageClassDataset


def upsampling_plan(size: int, stages: int | None = None) -> tuple[int, int]:
    """``(base, stages)`` with ``base * 2**stages == size``: the start size and number of doublings.

    With ``stages=None`` the largest number of doublings that keeps ``base >= 4`` is chosen
    (28 -> 7 x 2 x 2, 32 -> 4 x 2 x 2 x 2, 64 -> 4 x 2^4).
    """
    if size < 4:
        raise ValueError(f"image size must be at least 4, got {size}")
    if stages is None:
        stages = 0
        while size % 2 ** (stages + 1) == 0 and size // 2 ** (stages + 1) >= 4:
            stages += 1
        if stages == 0:
            raise ValueError(f"image size {size} is not divisible by 2 with a base of 4 or more; use e.g. 28, 32 or 64")
    if stages < 1 or size % 2**stages != 0:
        raise ValueError(f"image size {size} cannot be reached from an integer base by {stages} doublings")
    return size // 2**stages, stages


def as_unit_float(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` in ``0..255`` -> float in ``[0, 1]``; floats are returned as they are."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def to_tanh_range(images01: torch.Tensor) -> torch.Tensor:
    """``[0, 1]`` -> ``[-1, 1]`` (the GAN's range)."""
    return images01 * 2.0 - 1.0


def from_tanh_range(images: torch.Tensor) -> torch.Tensor:
    """``[-1, 1]`` -> ``[0, 1]`` (clamped, for pictures and metrics)."""
    return ((images + 1.0) * 0.5).clamp_(0.0, 1.0)


def unpack_data(data) -> tuple[torch.Tensor, torch.Tensor | None, int | None]:
    """``(uint8 or float images [M, C, H, W], labels or None, number of classes or None)``.

    Accepts an :class:`~mlcourse.data.base.ImageClassDataset`, a tensor of images, or a pair
    ``(images, labels)``.
    """
    if isinstance(data, ImageClassDataset):
        return data.images, data.targets, data.num_classes
    if isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = data
        labels = torch.as_tensor(labels, dtype=torch.long)
        return images, labels, int(labels.max()) + 1
    if isinstance(data, torch.Tensor):
        return data, None, None
    raise TypeError(f"expected an ImageClassDataset, an image tensor or (images, labels); got {type(data).__name__}")


def check_images(images: torch.Tensor) -> None:
    if images.dim() != 4:
        raise ValueError(f"images must be [M, C, H, W], got shape {tuple(images.shape)}")
    if images.shape[2] != images.shape[3]:
        raise ValueError(f"square images expected, got {images.shape[2]}x{images.shape[3]}")
