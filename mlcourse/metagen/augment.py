"""Generated drawings as extra support images: the augmentation loop of chapter 11.

A few-shot classifier sees ``K`` drawings per class. A generator that, given those drawings,
draws more of the same character can enlarge the support set before the classifier reads it:
``K`` real drawings become ``K (1 + m)`` drawings, ``m`` generated per real one. Whether that
helps is an empirical question (chapter 11 measures it); *how* to do it without fooling
oneself is not, and it is what this module fixes:

* **Labels are kept.** Every generated image is drawn from the support images of one class
  and gets that class's label. The generator is called once per class, with only that
  class's drawings, so it cannot mix characters.
* **Only the support set goes in.** :func:`augment_support` takes the support images and
  labels and nothing else, and :class:`AugmentedPredictor` passes it only those; the query
  images reach the classifier untouched. A generator that saw the queries (or a loop that
  appended them) would be scored on images it had already been shown.
* **Same episodes for every arm.** :class:`AugmentedPredictor` wraps any predictor
  ``predict(support_x, support_y, query_x)``, so :func:`mlcourse.evaluate.evaluate` scores
  "no augmentation", "affine jitter" and "generated drawings" on identical episodes (same
  seed, same fingerprint), and :func:`mlcourse.evaluate.compare` pairs them.
* **Deterministic.** The generated images of an episode depend on the wrapper's ``seed`` and
  the episode's support images only, not on how many episodes came before.

An *augmenter* is anything with ``generate(support [k, C, H, W], n, *, seed) -> [n, C, H, W]``
in ``[0, 1]``: the :class:`~mlcourse.metagen.common.FewShotGenerator` protocol. The DAGAN
(:mod:`.dagan`), the Neural Statistician (sampling ``z`` around the support set's context,
:mod:`.statistician`) and :class:`AffineJitter`, the classical arm, all qualify.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch

from ..metric.augment import random_affine
from .common import check_support


class Augmenter(Protocol):
    def generate(self, support: torch.Tensor, n: int, *, seed: int = 0) -> torch.Tensor: ...


class AffineJitter:
    """The classical arm: each new image is a support image under a random rotation, scaling,
    shear and shift (:func:`mlcourse.metric.augment.random_affine` at ``strength``).
    Image ``i`` comes from ``support[i % k]``."""

    def __init__(self, strength: float = 1.0):
        if not isinstance(strength, (int, float)) or isinstance(strength, bool) or not strength > 0:
            raise ValueError(f"strength must be a number above 0, got {strength!r}")
        self.strength = float(strength)

    def generate(self, support: torch.Tensor, n: int, *, seed: int = 0) -> torch.Tensor:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        support = check_support(support).cpu()
        sources = support[torch.arange(n) % support.shape[0]]
        return random_affine(sources, self.strength, torch.Generator().manual_seed(seed)).clamp(0, 1)

    def __repr__(self) -> str:
        return f"AffineJitter(strength={self.strength:g})"


class ContextSampler:
    """The latent-space arm: new drawings from a Neural Statistician (:mod:`.statistician`) by
    *sampling around the support set's context*: one context ``c ~ q(c | support)`` per image
    (``context="sample"``), then ``z ~ p(z | c)`` and the decoder's mean image. The support set
    of one class goes in; nothing else does."""

    def __init__(self, model, context: str = "sample"):
        if not hasattr(model, "generate") or not hasattr(model, "context"):
            raise TypeError(f"model must be a NeuralStatistician (generate and context), got {type(model).__name__}")
        if context not in ("sample", "mean"):
            raise ValueError(f"context must be 'sample' or 'mean', got {context!r}")
        self.model, self.context = model, context

    @torch.no_grad()
    def generate(self, support: torch.Tensor, n: int, *, seed: int = 0) -> torch.Tensor:
        return self.model.generate(support, n, seed=seed, mode="mean", context=self.context)

    def __repr__(self) -> str:
        return f"ContextSampler({type(self.model).__name__}, context={self.context!r})"


def _check_per_image(per_image) -> None:
    if not isinstance(per_image, int) or isinstance(per_image, bool) or per_image < 0:
        raise ValueError(f"per_image must be an int >= 0 (generated images per support image), got {per_image!r}")


def augment_support(support_x: torch.Tensor, support_y: torch.Tensor, augmenter: Augmenter, per_image: int,
                    seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The support set plus ``per_image`` generated drawings per support image.

    For each class ``c`` the augmenter gets only the support images labelled ``c`` and draws
    ``per_image`` times as many, all labelled ``c``; they are appended after the real support
    images (which come first, unchanged). Returns ``(x, y)`` on ``support_x``'s device.
    ``per_image=0`` returns the support set as it is. Raises ``ValueError`` for mismatched
    images and labels, and when the augmenter returns the wrong number, shape or range of images.
    """
    _check_per_image(per_image)
    if not isinstance(support_x, torch.Tensor) or not isinstance(support_y, torch.Tensor):
        raise TypeError("support_x and support_y must be tensors")
    if support_x.dim() != 4:
        raise ValueError(f"support_x must be [S, C, H, W], got shape {tuple(support_x.shape)}")
    if support_y.dim() != 1 or support_y.shape[0] != support_x.shape[0]:
        raise ValueError(f"{support_x.shape[0]} support images but labels of shape {tuple(support_y.shape)}")
    if support_x.shape[0] == 0:
        raise ValueError("the support set is empty")
    if support_y.is_floating_point():
        raise ValueError(f"support labels must be integers, got {support_y.dtype}")
    if not hasattr(augmenter, "generate"):
        raise TypeError(f"augmenter must have generate(support, n, *, seed), got {type(augmenter).__name__}")
    if per_image == 0:
        return support_x, support_y
    xs, ys = [support_x], [support_y]
    for c in torch.unique(support_y).tolist():
        images = support_x[support_y == c]
        n = per_image * images.shape[0]
        # one stream per class: the drawings of class c do not depend on the other classes
        new = augmenter.generate(images.detach().cpu(), n, seed=(seed * 1_000_003 + 7919 * int(c)) % 2**62)
        if not isinstance(new, torch.Tensor) or tuple(new.shape) != (n, *support_x.shape[1:]):
            got = tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
            raise ValueError(f"the augmenter returned {got} for class {c}; expected {(n, *support_x.shape[1:])}")
        if new.numel() and (new.min() < 0 or new.max() > 1):
            raise ValueError(f"the augmenter returned values in {new.min().item():.3g}..{new.max().item():.3g}, not [0, 1]")
        xs.append(new.to(support_x.device, support_x.dtype))
        ys.append(torch.full((n,), int(c), dtype=support_y.dtype, device=support_y.device))
    return torch.cat(xs), torch.cat(ys)


def leaked_queries(images: torch.Tensor, query_x: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    """Indices of the query images that appear, pixel for pixel (within ``tol``), among ``images``."""
    if images.numel() == 0 or query_x.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    a = images.detach().flatten(1).double().cpu()
    b = query_x.detach().flatten(1).double().cpu()
    if a.shape[1] != b.shape[1]:
        return torch.zeros(0, dtype=torch.long)
    hit = (torch.cdist(b, a, p=float("inf")) <= tol).any(dim=1)
    return torch.nonzero(hit).flatten()


def episode_seed(seed: int, support_x: torch.Tensor) -> int:
    """A seed for one episode from the wrapper's ``seed`` and the episode's support pixels: the
    same episode gets the same generated drawings whatever order episodes come in."""
    checksum = int(torch.round(support_x.detach().double().sum() * 1000).item())
    return (int(seed) * 1_000_003 + checksum) % 2**62


class AugmentedPredictor:
    """``predict`` reading an augmented support set: a predictor for :func:`mlcourse.evaluate.evaluate`.

    ``AugmentedPredictor(model.predict, DAGANAugmenter, per_image=2)(support_x, support_y,
    query_x)`` enlarges the support set with :func:`augment_support` (which never sees the
    queries) and calls ``predict`` on it. As a guard, a generated image equal to a query image
    raises ``ValueError``. ``needs_grad`` is passed through (MAML fine-tunes at test time).
    """

    def __init__(self, predict: Callable, augmenter: Augmenter, per_image: int, seed: int = 0):
        if not callable(predict):
            raise TypeError(f"predict must be callable, got {type(predict).__name__}")
        if not hasattr(augmenter, "generate"):
            raise TypeError(f"augmenter must have generate(support, n, *, seed), got {type(augmenter).__name__}")
        _check_per_image(per_image)
        self.predict, self.augmenter, self.per_image, self.seed = predict, augmenter, per_image, seed
        self.needs_grad = getattr(predict, "needs_grad", False)

    def __call__(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
        x, y = augment_support(support_x, support_y, self.augmenter, self.per_image, episode_seed(self.seed, support_x))
        leaks = leaked_queries(x[support_x.shape[0]:], query_x)
        if len(leaks):
            raise ValueError(f"generated support images equal query images {leaks.tolist()[:5]}: the queries leaked into the support set")
        return self.predict(x, y, query_x)
