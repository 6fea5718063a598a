"""Random affine augmentation of the training classes, drawn afresh for every episode.

With few training characters (the Omniglot subsets have 136, 544 with rotations), a metric
learner soon knows every training image by heart and its test accuracy stalls. Showing each
image slightly rotated, scaled, sheared and shifted every time it is drawn is the handwriting
variation a new drawer would add, so the embedding learns to ignore it (a standard trick since
Simard et al., 2003; Koch et al., 2015 used affine distortions to train Siamese networks on
Omniglot). Only *training* images are transformed; test episodes are left as they are.

:func:`random_affine` transforms a batch with one ``F.affine_grid``/``F.grid_sample`` call;
:class:`AffineAugmented` wraps an :class:`~mlcourse.data.base.ImageClassDataset` so that the
episode samplers (which read images through ``as_float``) get transformed images.

Where the random numbers come from decides what "reproducible" means. The episode samplers
(:class:`~mlcourse.data.episodes.EpisodeDataset`, :func:`~mlcourse.data.episodes.task_loader`)
seed one generator per episode from ``(seed, i)`` and pass it to ``as_float``, which draws the
distortions from it: episode ``i`` comes out the same, pixels included, with 0 or any number
of ``DataLoader`` workers and in any order, while every episode (and every appearance of an
image) gets distortions of its own. Read without a generator (``as_float(indices)``,
``dataset[i]``) the dataset draws from a generator of its own, seeded with ``seed``: a
fresh distortion at each read, reproducible in one process, but copied as is into each
``DataLoader`` worker, so do not rely on it there.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..data.base import ImageClassDataset

# The largest transformation at strength 1.
MAX_DEGREES = 15.0  # rotation
MAX_SCALE = 0.15  # relative change of size
MAX_SHEAR = 0.15
MAX_SHIFT = 3 / 28  # fraction of the image side (3 pixels at 28x28)


def random_affine(x: torch.Tensor, strength: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image of ``x [B, C, H, W]`` under its own random rotation, scaling, shear and shift.

    Every parameter is uniform in ``[-strength, strength]`` times its maximum above; empty
    paper (zero) fills what moves into view.
    """
    if strength <= 0:
        return x
    b = len(x)

    def uniform() -> torch.Tensor:
        return (torch.rand(b, generator=generator) * 2 - 1) * strength

    angle = uniform() * math.radians(MAX_DEGREES)
    scale = 1 + MAX_SCALE * uniform()
    shear = MAX_SHEAR * uniform()
    tx, ty = 2 * MAX_SHIFT * uniform(), 2 * MAX_SHIFT * uniform()  # grid coordinates span [-1, 1]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin + shear, tx], 1), torch.stack([sin, cos, ty], 1)], 1
    ).to(x.device, x.dtype)  # [B, 2, 3]: maps output coordinates to input coordinates
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


class AffineAugmented(ImageClassDataset):
    """``dataset`` whose images come out randomly transformed each time they are read."""

    def __init__(self, dataset: ImageClassDataset, strength: float = 1.0, seed: int = 0):
        super().__init__(
            dataset.images, dataset.targets, list(dataset.class_names), list(dataset.class_groups),
            name=f"{dataset.name}+affine",
        )  # fmt: skip
        self.strength = strength
        self.generator = torch.Generator().manual_seed(seed)

    def as_float(self, indices: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """The images at ``indices``, transformed with distortions drawn from ``generator``
        (the episode's, from the samplers) or, without one, from this dataset's own."""
        return random_affine(super().as_float(indices), self.strength, generator if generator is not None else self.generator)

    def __getitem__(self, index: int):
        image, label = super().__getitem__(index)
        return random_affine(image.unsqueeze(0), self.strength, self.generator)[0], label
