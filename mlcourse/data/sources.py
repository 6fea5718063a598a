"""Choose the data a chapter trains on: real Omniglot when it can be had, glyphs otherwise.

``meta_splits()`` returns three sets of *disjoint alphabets*:

``train``
    what every method meta-trains on;
``val``
    validation alphabets carved out of the training alphabets: every default, step count,
    architecture and schedule of the course is chosen by accuracy on these;
``test``
    held-out alphabets, scored **once** per reported figure, never used to choose anything.

No character (and no script) of the validation or test episodes is ever seen in
meta-training, and ``check_disjoint`` proves it for every split the course builds. Which
source is used is decided by the ``MLCOURSE_DATA`` environment variable or the ``source``
argument:

``"auto"`` (default)
    the full Omniglot release if it is on disk, else the Omniglot subsets in
    ``../shared/data/omniglot`` (development checkouts), else the glyphs.
``"omniglot"``
    Omniglot or a clear error saying what is missing.
``"glyphs"``
    the project's own offline glyph dataset (always available).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .base import ImageClassDataset, split_groups_by_fraction, with_rotations

DATA_ENV = "MLCOURSE_DATA"
SOURCES = ("auto", "omniglot", "glyphs")
SPLITS = ("val", "test")  # the splits an evaluation may score

# The validation alphabet of the Omniglot subsets, carved out of small1 (Balinese, Early
# Aramaic, Greek, Korean, Latin). Balinese: a middle-sized alphabet (24 characters, so 5-way
# validation episodes have variety) and, like two of the three test alphabets (Sanskrit,
# Tagalog), a Brahmic script. Chosen by these properties alone, before any model was scored.
OMNIGLOT_SMALL_VAL_ALPHABETS = ("Balinese",)
# The full release: about this fraction of the background characters, in whole alphabets
# drawn with a fixed seed, validates; the evaluation alphabets test.
OMNIGLOT_FULL_VAL_FRACTION = 0.15
# The glyphs: fractions of all characters, in whole script families (see glyphs.py).
GLYPH_TEST_FRACTION = 0.25
GLYPH_VAL_FRACTION = 0.15


@dataclass
class MetaSplits:
    """Training, validation and test sets of disjoint alphabets, and where they came from."""

    train: ImageClassDataset
    val: ImageClassDataset
    test: ImageClassDataset
    source: str
    description: str

    def __post_init__(self) -> None:
        check_disjoint(self.train, self.val, self.test)

    def evaluation_set(self, split: str) -> ImageClassDataset:
        """The set that ``split`` ("val" or "test") scores."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self.val if split == "val" else self.test

    def __str__(self) -> str:
        return (
            f"{self.description}\n  meta-train: {self.train}\n  validation: {self.val}"
            f"\n  meta-test:  {self.test}"
        )


def _base_names(dataset: ImageClassDataset) -> set[str]:
    # "Greek/character01/rot90" and "Greek/character01" are the same character.
    return {name.split("/rot")[0] for name in dataset.class_names}


def check_disjoint(train: ImageClassDataset, val: ImageClassDataset, test: ImageClassDataset) -> None:
    """Raise ``ValueError`` if any alphabet or character is in two of the three sets."""
    for (a, sa), (b, sb) in (
        (("train", train), ("val", val)), (("train", train), ("test", test)), (("val", val), ("test", test)),
    ):  # fmt: skip
        groups = set(sa.class_groups) & set(sb.class_groups)
        if groups:
            raise ValueError(f"alphabets in both {a} and {b}: {sorted(groups)[:5]}")
        names = _base_names(sa) & _base_names(sb)
        if names:
            raise ValueError(f"characters in both {a} and {b}: {sorted(names)[:5]}")


def carve_validation(train: ImageClassDataset, val_groups) -> tuple[ImageClassDataset, ImageClassDataset]:
    """``(train without val_groups, the classes of val_groups)``: whole alphabets move."""
    val_groups = list(val_groups)
    missing = sorted(set(val_groups) - set(train.class_groups))
    if missing:
        raise ValueError(f"validation alphabets {missing} are not in the training set {train.groups}")
    rest = [g for g in train.groups if g not in set(val_groups)]
    if not rest:
        raise ValueError("carve_validation: no alphabet left for training")
    return (
        train.subset_groups(rest, name=f"{train.name}/train"),
        train.subset_groups(val_groups, name=f"{train.name}/val"),
    )


def glyph_splits(
    size: int = 28,
    seed: int = 0,
    subset: bool | None = None,
    test_fraction: float = GLYPH_TEST_FRACTION,
    val_fraction: float = GLYPH_VAL_FRACTION,
) -> MetaSplits:
    """Glyphs split by *script family* (the dataset's groups): about a quarter of the
    characters test, about a sixth validate, the rest train."""
    from .glyphs import load_glyphs

    data = load_glyphs(size=size, seed=seed, subset=subset)
    train, val, test = split_groups_by_fraction(data, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed)
    return MetaSplits(
        train,
        val,
        test,
        "glyphs",
        f"glyphs (offline, rendered from matplotlib's fonts), split by script family: "
        f"{len(train.groups)} training families, validation: {', '.join(val.groups)}; "
        f"test: {', '.join(test.groups)}",
    )


def omniglot_meta_splits(size: int = 28) -> MetaSplits:
    """Omniglot's alphabet split with a validation part carved out of the training alphabets."""
    from . import omniglot

    train, test = omniglot.omniglot_splits(size=size)
    full = omniglot.omniglot_available("background") and omniglot.omniglot_available("evaluation")
    if full:
        # the held-out part that split_groups_by_fraction draws from the background set validates
        train, val = split_groups_by_fraction(train, test_fraction=OMNIGLOT_FULL_VAL_FRACTION, seed=0)
        description = (
            "Omniglot, full release: background alphabets for training and validation, "
            "evaluation alphabets for testing"
        )
    else:
        train, val = carve_validation(train, OMNIGLOT_SMALL_VAL_ALPHABETS)
        description = (
            "Omniglot subsets (../shared/data/omniglot): images_background_small1 for training "
            f"(validation: {', '.join(OMNIGLOT_SMALL_VAL_ALPHABETS)}), the alphabets of "
            "images_background_small2 that small1 lacks for testing"
        )
    return MetaSplits(
        train, val, test, "omniglot",
        f"{description}; validation alphabets: {', '.join(val.groups)}; test alphabets: {', '.join(test.groups)}",
    )  # fmt: skip


def meta_splits(source: str | None = None, size: int = 28, rotations: bool = False, seed: int = 0) -> MetaSplits:
    """Training, validation and test sets with disjoint alphabets, from the chosen source.

    ``rotations=True`` adds the 90/180/270-degree copies of every training class as new
    classes (the standard Omniglot augmentation); validation and test are left as they are.
    """
    source = (source or os.environ.get(DATA_ENV) or "auto").lower()
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}: choose one of {SOURCES} (or set {DATA_ENV})")
    splits = None
    if source in ("auto", "omniglot"):
        from . import omniglot

        if source == "omniglot" or omniglot.omniglot_available("background") or omniglot.omniglot_available("small1"):
            splits = omniglot_meta_splits(size=size)
    if splits is None:
        splits = glyph_splits(size=size, seed=seed)
    if rotations:
        splits.train = with_rotations(splits.train)
    return splits
