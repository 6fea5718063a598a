"""What every few-shot generator shares: the protocol, the character sets, save and load.

A *few-shot generator* is meta-trained on many characters of the training alphabets and then,
given ``K`` drawings of a character it has never seen (its *support set*), draws new images
of that character::

    model.meta_train(train_set, steps=..., time_budget=..., seed=0)
    images = model.generate(support, n=16, seed=0)      # support: float [K, C, H, W] in [0, 1]

``generate`` returns ``float [n, C, H, W]`` in ``[0, 1]``, like every picture in the course
(:mod:`mlcourse.generative.common`), and is deterministic under ``seed``: the same support
set and seed give the same images. What happens between the two calls (fine-tuning a copy
of a GAN, inferring a context vector, adapting a decoder) is each method's business.

Models record their constructor arguments, like :class:`~mlcourse.fewshot.FewShotClassifier`,
so :meth:`FewShotGenerator.save` / :meth:`FewShotGenerator.load` rebuild them.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from ..data.base import ImageClassDataset
from ..fewshot import constructor_arguments, rebuild
from ..train import History, save_checkpoint


def check_support(support: torch.Tensor, image_shape: tuple[int, int, int] | None = None, name: str = "support") -> torch.Tensor:
    """``support`` as a float tensor ``[K, C, H, W]`` in ``[0, 1]``, or a clear ``ValueError``.

    Accepts ``uint8`` images (divided by 255). Refuses an empty set, a wrong number of
    dimensions, values outside ``[0, 1]`` and, when ``image_shape`` is given, another image size.
    """
    if not isinstance(support, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of images [K, C, H, W], got {type(support).__name__}")
    if support.dim() == 3:
        raise ValueError(f"{name} must be [K, C, H, W]; got shape {tuple(support.shape)} (one image? use x[None])")
    if support.dim() != 4:
        raise ValueError(f"{name} must be [K, C, H, W], got shape {tuple(support.shape)}")
    if support.shape[0] == 0:
        raise ValueError(f"{name} is empty: a few-shot generator needs at least one image of the character")
    if image_shape is not None and tuple(support.shape[1:]) != tuple(image_shape):
        raise ValueError(f"{name} images are {tuple(support.shape[1:])}, this model was built for {tuple(image_shape)}")
    if support.dtype == torch.uint8:
        support = support.float() / 255.0
    support = support.float()
    if support.numel() and (support.min() < 0 or support.max() > 1):
        raise ValueError(f"{name} values must lie in [0, 1], got {support.min().item():.3g}..{support.max().item():.3g}")
    return support


def character_sets(dataset: ImageClassDataset, k: int, classes=None, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """For each class (all, or ``classes``): ``(support [k, C, H, W], rest [M - k, C, H, W])``,
    floats in ``[0, 1]``, the ``k`` support drawings chosen at random under ``seed``.

    ``rest`` holds the character's *other* real drawings: what generated images are scored
    against. A class with ``k`` or fewer drawings has nothing left to score against, so it is
    refused with a message naming it.
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    g = torch.Generator().manual_seed(seed)
    classes = range(dataset.num_classes) if classes is None else classes
    out = []
    for c in classes:
        idx = dataset.indices_by_class()[int(c)]
        if len(idx) <= k:
            raise ValueError(
                f"class {dataset.class_names[int(c)]!r} has {len(idx)} images: K = {k} support images leave none to "
                f"score against (use K <= {len(idx) - 1})"
            )
        order = idx[torch.randperm(len(idx), generator=g)]
        images = dataset.as_float(order)
        out.append((images[:k], images[k:]))
    return out


class FewShotGenerator(nn.Module):
    """Base class: meta-train on characters, generate from a support set, save and load.

    Subclasses call ``super().__init__()`` first (their constructor arguments are recorded)
    and implement :meth:`meta_train` and :meth:`generate`.
    """

    registry: ClassVar[dict[str, type]] = {}
    method_name: ClassVar[str] = "fewshot-generator"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        FewShotGenerator.registry[cls.__name__] = cls

    def __init__(self):
        super().__init__()
        self._config = constructor_arguments(self)

    def meta_train(self, dataset: ImageClassDataset, *, steps: int, time_budget: float | None = None, seed: int = 0,
                   device=None, progress=True) -> History:  # fmt: skip
        raise NotImplementedError

    def generate(self, support: torch.Tensor, n: int, *, seed: int = 0) -> torch.Tensor:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def save(self, path: str | Path, **extra) -> Path:
        """Write class name, constructor arguments and weights (atomically)."""
        return save_checkpoint(path, {"class": type(self).__name__, "config": self._config, "state_dict": self.state_dict(), **extra})

    @classmethod
    def load(cls, path: str | Path, map_location="cpu") -> "FewShotGenerator":
        """Rebuild a model saved with :meth:`save`."""
        return rebuild(path, FewShotGenerator, cls, ("mlcourse.metagen",), map_location)
