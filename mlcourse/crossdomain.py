"""Cross-domain few-shot learning: meta-train on one source, evaluate (and adapt) on another.

Chapter 12 asks what a meta-learner carries across a *domain shift*: glyphs rendered from
fonts -> handwritten Omniglot characters, Omniglot -> scikit-learn's blurry upscaled digits.
The benches do the work (``python -m mlcourse.bench ... --data omniglot --train-data glyphs``,
``python -m mlcourse.genbench ... --data digits --train-data omniglot``); this module holds
what they need beyond the course's usual sources:

* :func:`digit_splits`: the digits as a *target* domain. Ten classes cannot be split into
  disjoint training and test alphabets with any variety of 5-way episodes, so the digits are
  never meta-trained on: their images (not their classes) are split three ways. ``train`` is
  the unlabelled pool an adaptation may look at (BatchNorm statistics, a short fine-tune),
  ``val`` chooses adaptation settings, ``test`` is scored once per reported figure. A model
  meta-trained on another source has never seen a digit, in any split.
* :func:`target_splits`: the evaluation splits of any target source by name.
* :func:`unlabelled`: a source's images with their labels thrown away (random pseudo-classes),
  so that an adaptation which should need no labels (AdaBN) provably gets none.
* :func:`domain_samples`: a few images of each domain side by side, for the chapter's figure.
* :func:`paired_row`: one row of the chapter's tables, a paired difference of two committed
  runs (bench or genbench JSONs) that must have met the same episodes or characters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .data.base import ImageClassDataset

#: where the digits' images go, per class: (train, val); the rest is test
DIGIT_FRACTIONS = (1 / 3, 1 / 3)
#: the sources a model can be meta-trained on, and those it can be scored on
TRAIN_SOURCES = ("glyphs", "omniglot")
TARGET_SOURCES = ("glyphs", "omniglot", "digits")


@dataclass
class DomainSplits:
    """Training (adaptation pool), validation and test images of a target-only source.

    The same interface as :class:`mlcourse.data.sources.MetaSplits` (``train``, ``val``,
    ``test``, ``source``, ``description``, :meth:`evaluation_set`), but the three parts share
    their classes and split the *images*: such a source is only ever a target.
    """

    train: ImageClassDataset
    val: ImageClassDataset
    test: ImageClassDataset
    source: str
    description: str

    def evaluation_set(self, split: str) -> ImageClassDataset:
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        return self.val if split == "val" else self.test

    def __str__(self) -> str:
        return (f"{self.description}\n  adaptation pool: {self.train}\n  validation: {self.val}"
                f"\n  meta-test:  {self.test}")  # fmt: skip


def split_images(dataset: ImageClassDataset, fractions: tuple[float, float] = DIGIT_FRACTIONS,
                 seed: int = 0) -> tuple[ImageClassDataset, ImageClassDataset, ImageClassDataset]:  # fmt: skip
    """Split every class's images (not the classes) into train/val/test at random under ``seed``.

    ``fractions = (train, val)``; test gets the rest. Each part keeps every class, so each
    class needs at least three images.
    """
    a, b = fractions
    if not (a > 0 and b > 0 and a + b < 1):
        raise ValueError(f"fractions must be two numbers above 0 that sum below 1, got {fractions!r}")
    g = torch.Generator().manual_seed(seed)
    parts: list[list[torch.Tensor]] = [[], [], []]
    for c, idx in enumerate(dataset.indices_by_class()):
        if len(idx) < 3:
            raise ValueError(f"class {dataset.class_names[c]!r} has {len(idx)} images: splitting its images in three needs 3")
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_train = max(1, round(a * len(idx)))
        n_val = max(1, min(len(idx) - n_train - 1, round(b * len(idx))))
        for part, chunk in zip(parts, (idx[:n_train], idx[n_train:n_train + n_val], idx[n_train + n_val:])):
            part.append(chunk)
    out = []
    for name, chunks in zip(("train", "val", "test"), parts):
        index = torch.cat(chunks)
        out.append(ImageClassDataset(dataset.images[index], dataset.targets[index], list(dataset.class_names),
                                     list(dataset.class_groups), name=f"{dataset.name}/{name}"))  # fmt: skip
    return out[0], out[1], out[2]


def digit_splits(size: int = 28, seed: int = 0) -> DomainSplits:
    """scikit-learn's 1,797 digits as a target domain: a third of each digit's images for
    adaptation, a third to validate, a third (about 600 images, 60 per digit) to test."""
    from .data.digits import load_digits

    train, val, test = split_images(load_digits(size=size), seed=seed)
    return DomainSplits(train, val, test, "digits",
                        "digits (scikit-learn's 8x8 handwritten digits upscaled; a target only: every digit's images split "
                        "into an unlabelled adaptation pool, validation and test)")  # fmt: skip


def target_splits(source: str, size: int = 28):
    """The splits of a target source: :func:`digit_splits` or the course's ``meta_splits``."""
    if source not in TARGET_SOURCES:
        raise ValueError(f"unknown target source {source!r}: choose one of {TARGET_SOURCES}")
    if source == "digits":
        return digit_splits(size=size)
    from .data.sources import meta_splits

    return meta_splits(source, size=size)


def unlabelled(dataset: ImageClassDataset, classes: int = 20, seed: int = 0) -> ImageClassDataset:
    """The images of ``dataset`` with their labels thrown away: dealt at random into
    ``classes`` pseudo-classes of (nearly) equal size.

    Episode samplers group images by class; an adaptation that should use no labels (AdaBN's
    BatchNorm statistics) draws its episodes from this, so each "class" of an episode is a
    random handful of target images, not one character or one digit.
    """
    if classes < 2 or classes > len(dataset):
        raise ValueError(f"classes must be between 2 and the {len(dataset)} images, got {classes}")
    g = torch.Generator().manual_seed(seed)
    targets = torch.empty(len(dataset), dtype=torch.long)
    targets[torch.randperm(len(dataset), generator=g)] = torch.arange(len(dataset)) % classes
    return ImageClassDataset(dataset.images, targets, [f"pseudo{c}" for c in range(classes)], ["unlabelled"] * classes,
                             name=f"{dataset.name} (unlabelled)")  # fmt: skip


def domain_samples(datasets: dict[str, ImageClassDataset], classes: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    """One image of each of ``classes`` random classes per domain: ``{name: float [classes, C, H, W]}``."""
    if classes < 1:
        raise ValueError(f"classes must be at least 1, got {classes}")
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, ds in datasets.items():
        if ds.num_classes < classes:
            raise ValueError(f"{name} has {ds.num_classes} classes, fewer than the {classes} asked for")
        chosen = torch.randperm(ds.num_classes, generator=g)[:classes].tolist()
        by_class = ds.indices_by_class()
        picks = torch.stack([by_class[c][torch.randint(len(by_class[c]), (1,), generator=g)][0] for c in chosen])
        out[name] = ds.as_float(picks)
    return out


def paired_row(a: dict, b: dict, score: str = "accuracy", names: tuple[str, str] = ("A", "B")) -> dict:
    """The paired difference ``a - b`` of two committed runs on the same episodes or characters.

    ``a`` and ``b`` are ``mlcourse.bench --json`` results (``score="accuracy"``: per-episode
    accuracies) or ``mlcourse.genbench --json`` results (``score`` one of their per-character
    scores, e.g. ``"recognisability"`` or ``"fd"``). Their fingerprints must be equal: a paired
    difference of different episodes means nothing, so that raises ``ValueError``.
    """
    from .evaluate import compare

    fa, fb = a.get("fingerprint"), b.get("fingerprint")
    if not fa or fa != fb:
        raise ValueError(f"paired_row: {names[0]} and {names[1]} were not scored on the same episodes or characters "
                         f"(fingerprints {fa} and {fb})")  # fmt: skip
    if score == "accuracy":
        x, y = a["episode_accuracies"], b["episode_accuracies"]
        mean_a, mean_b = a["accuracy"], b["accuracy"]
    else:
        if score not in a.get("scores", {}) or score not in b.get("scores", {}):
            raise ValueError(f"paired_row: no per-character {score!r} scores in these runs")
        x, y = a["scores"][score], b["scores"][score]
        mean_a, mean_b = a["summary"][score]["mean"], b["summary"][score]["mean"]
    result = compare(x, y, names=names).as_dict()
    return {**result, "mean_a": mean_a, "mean_b": mean_b, "score": score}
