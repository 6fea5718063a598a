"""The one dataset shape every source in the course is turned into.

Omniglot, the offline glyphs and the digits all become an :class:`ImageClassDataset`: all
images in one ``uint8`` tensor ``[M, C, H, W]`` (strokes bright on a dark background), one
integer class per image, a name for each class and the *group* it belongs to (an Omniglot
alphabet, a Unicode script for the glyphs). Keeping everything in memory is what makes
episode sampling on a laptop CPU fast: a 28x28 Omniglot is 25 MB.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch
from torch.utils.data import Dataset


@dataclass
class ImageClassDataset(Dataset):
    """Images grouped by class, with class names and the group (alphabet) of each class.

    ``images`` is ``uint8 [M, C, H, W]``; ``targets`` is ``long [M]`` with values ``0..C-1``
    where ``C = len(class_names)``; ``class_groups[c]`` is the alphabet of class ``c``.
    Indexing returns ``(float image in [0, 1], class)``.
    """

    images: torch.Tensor
    targets: torch.Tensor
    class_names: list[str]
    class_groups: list[str]
    name: str = "dataset"
    _by_class: list[torch.Tensor] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.images.dim() != 4:
            raise ValueError(f"images must be [M, C, H, W], got shape {tuple(self.images.shape)}")
        if self.images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8, got {self.images.dtype}")
        self.targets = torch.as_tensor(self.targets, dtype=torch.long)
        if self.targets.shape != (self.images.shape[0],):
            raise ValueError(
                f"{self.images.shape[0]} images but targets has shape {tuple(self.targets.shape)}"
            )
        if len(self.class_names) != len(self.class_groups):
            raise ValueError(
                f"{len(self.class_names)} class names but {len(self.class_groups)} class groups"
            )
        if len(self.targets) and (self.targets.min() < 0 or self.targets.max() >= self.num_classes):
            raise ValueError(
                f"targets must lie in 0..{self.num_classes - 1}, "
                f"got {int(self.targets.min())}..{int(self.targets.max())}"
            )

    # -- basic protocol -------------------------------------------------------------------
    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int):
        return self.images[index].float().div_(255.0), int(self.targets[index])

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        return (
            f"ImageClassDataset({self.name!r}: {len(self)} images of {c}x{h}x{w}, "
            f"{self.num_classes} classes in {len(self.groups)} groups)"
        )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def groups(self) -> list[str]:
        """The distinct groups (alphabets), in first-seen order."""
        return list(dict.fromkeys(self.class_groups))

    def indices_by_class(self) -> list[torch.Tensor]:
        """``result[c]`` holds the indices of the images of class ``c`` (computed once)."""
        if self._by_class is None:
            order = torch.argsort(self.targets, stable=True)
            counts = torch.bincount(self.targets, minlength=self.num_classes).tolist()
            self._by_class = list(torch.split(order, counts))
        return self._by_class

    def class_sizes(self) -> torch.Tensor:
        return torch.bincount(self.targets, minlength=self.num_classes)

    def as_float(self, indices: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images (all, or the given indices) as float in [0, 1].

        ``generator`` is for subclasses that transform images at random as they are read
        (the episode samplers pass each episode's generator); plain images draw nothing.
        """
        images = self.images if indices is None else self.images[indices]
        return images.float().div_(255.0)

    # -- building new datasets ------------------------------------------------------------
    def subset_classes(self, classes: Sequence[int], name: str | None = None) -> "ImageClassDataset":
        """Keep only ``classes`` (in the given order), relabelled ``0..len(classes)-1``."""
        classes = [int(c) for c in classes]
        if len(set(classes)) != len(classes):
            raise ValueError("subset_classes: the class list repeats a class")
        bad = [c for c in classes if not 0 <= c < self.num_classes]
        if bad:
            raise ValueError(f"subset_classes: classes {bad[:5]} not in 0..{self.num_classes - 1}")
        by_class = self.indices_by_class()
        index = torch.cat([by_class[c] for c in classes]) if classes else torch.zeros(0, dtype=torch.long)
        new_targets = torch.cat(
            [torch.full((len(by_class[c]),), i, dtype=torch.long) for i, c in enumerate(classes)]
        ) if classes else torch.zeros(0, dtype=torch.long)
        return ImageClassDataset(
            images=self.images[index],
            targets=new_targets,
            class_names=[self.class_names[c] for c in classes],
            class_groups=[self.class_groups[c] for c in classes],
            name=name or self.name,
        )

    def subset_groups(self, groups: Iterable[str], name: str | None = None) -> "ImageClassDataset":
        """Keep the classes of the given groups (alphabets)."""
        wanted = set(groups)
        missing = wanted - set(self.class_groups)
        if missing:
            raise ValueError(f"subset_groups: unknown groups {sorted(missing)}")
        classes = [c for c, g in enumerate(self.class_groups) if g in wanted]
        return self.subset_classes(classes, name=name)

    def map_images(self, fn, name: str | None = None) -> "ImageClassDataset":
        """A copy whose images are ``fn(images)`` (uint8 in, uint8 out)."""
        return ImageClassDataset(
            self.images if fn is None else fn(self.images),
            self.targets.clone(),
            list(self.class_names),
            list(self.class_groups),
            name=name or self.name,
        )


def concat(datasets: Sequence[ImageClassDataset], name: str = "concat") -> ImageClassDataset:
    """Join datasets with disjoint classes (class ids are offset)."""
    if not datasets:
        raise ValueError("concat: no datasets")
    shapes = {d.image_shape for d in datasets}
    if len(shapes) != 1:
        raise ValueError(f"concat: image shapes differ: {sorted(shapes)}")
    offset, targets = 0, []
    for d in datasets:
        targets.append(d.targets + offset)
        offset += d.num_classes
    return ImageClassDataset(
        torch.cat([d.images for d in datasets]),
        torch.cat(targets),
        [n for d in datasets for n in d.class_names],
        [g for d in datasets for g in d.class_groups],
        name=name,
    )


def with_rotations(dataset: ImageClassDataset, name: str | None = None) -> ImageClassDataset:
    """Each class rotated by 0, 90, 180 and 270 degrees becomes its own class (4x classes).

    The standard augmentation of Vinyals et al. (2016) and Snell et al. (2017). The rotated
    copies of a class stay in that class's group, so alphabet splits remain leak-free.
    """
    parts = []
    for k in range(4):
        parts.append(
            ImageClassDataset(
                torch.rot90(dataset.images, k, dims=(2, 3)).contiguous(),
                dataset.targets.clone(),
                [f"{n}/rot{90 * k}" for n in dataset.class_names],
                list(dataset.class_groups),
                name=dataset.name,
            )
        )
    return concat(parts, name=name or f"{dataset.name}+rot")


def split_by_groups(
    dataset: ImageClassDataset, test_groups: Iterable[str], val_groups: Iterable[str] = ()
) -> tuple[ImageClassDataset, ...]:
    """Split by alphabet: no class of a test (or validation) group is ever in training.

    Returns ``(train, test)`` or ``(train, val, test)`` when ``val_groups`` is given.
    """
    test_groups, val_groups = list(test_groups), list(val_groups)
    overlap = set(test_groups) & set(val_groups)
    if overlap:
        raise ValueError(f"split_by_groups: groups in both val and test: {sorted(overlap)}")
    held = set(test_groups) | set(val_groups)
    train_groups = [g for g in dataset.groups if g not in held]
    if not train_groups:
        raise ValueError("split_by_groups: no group left for training")
    train = dataset.subset_groups(train_groups, name=f"{dataset.name}/train")
    test = dataset.subset_groups(test_groups, name=f"{dataset.name}/test")
    if val_groups:
        return train, dataset.subset_groups(val_groups, name=f"{dataset.name}/val"), test
    return train, test


def split_groups_by_fraction(
    dataset: ImageClassDataset, test_fraction: float = 0.25, val_fraction: float = 0.0, seed: int = 0
) -> tuple[ImageClassDataset, ...]:
    """Alphabet split drawing whole groups at random until each held-out fraction of classes is met."""
    if not 0 < test_fraction < 1 or not 0 <= val_fraction < 1 or test_fraction + val_fraction >= 1:
        raise ValueError(f"fractions must be in (0,1) and sum below 1: test={test_fraction}, val={val_fraction}")
    g = torch.Generator().manual_seed(seed)
    groups = dataset.groups
    order = [groups[i] for i in torch.randperm(len(groups), generator=g).tolist()]
    sizes = {grp: dataset.class_groups.count(grp) for grp in groups}
    total = dataset.num_classes

    def take(fraction, pool):
        chosen, count = [], 0
        for grp in list(pool):
            if count >= fraction * total:
                break
            chosen.append(grp)
            count += sizes[grp]
            pool.remove(grp)
        return chosen

    pool = list(order)
    test_groups = take(test_fraction, pool)
    val_groups = take(val_fraction, pool) if val_fraction else []
    return split_by_groups(dataset, test_groups, val_groups)
