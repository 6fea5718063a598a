"""Choose the data a chapter trains on: real Omniglot when it can be had, glyphs otherwise.

``meta_splits()`` returns a training set and a test set of *disjoint alphabets*, so that no
character (and no script) of the test episodes is ever seen in meta-training. Which source
is used is decided by the ``MLCOURSE_DATA`` environment variable or the ``source`` argument:

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


@dataclass
class MetaSplits:
    train: ImageClassDataset
    test: ImageClassDataset
    source: str
    description: str

    def __str__(self) -> str:
        return (
            f"{self.description}\n  meta-train: {self.train}\n  meta-test:  {self.test}"
        )


def glyph_splits(size: int = 28, seed: int = 0, subset: bool | None = None, test_fraction: float = 0.25) -> MetaSplits:
    """Glyphs split by alphabet (Unicode script): about a quarter of the characters for testing."""
    from .glyphs import load_glyphs

    data = load_glyphs(size=size, seed=seed, subset=subset)
    train, test = split_groups_by_fraction(data, test_fraction=test_fraction, seed=seed)
    return MetaSplits(
        train,
        test,
        "glyphs",
        f"glyphs (offline, rendered from matplotlib's fonts): {len(train.groups)} training "
        f"scripts, {len(test.groups)} test scripts: {', '.join(test.groups)}",
    )


def meta_splits(source: str | None = None, size: int = 28, rotations: bool = False, seed: int = 0) -> MetaSplits:
    """Training and test sets with disjoint alphabets, from the chosen source.

    ``rotations=True`` adds the 90/180/270-degree copies of every training class as new
    classes (the standard Omniglot augmentation); the test set is left as it is.
    """
    source = (source or os.environ.get(DATA_ENV) or "auto").lower()
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}: choose one of {SOURCES} (or set {DATA_ENV})")
    splits = None
    if source in ("auto", "omniglot"):
        from . import omniglot

        if source == "omniglot" or omniglot.omniglot_available("background") or omniglot.omniglot_available("small1"):
            train, test = omniglot.omniglot_splits(size=size)
            full = omniglot.omniglot_available("background") and omniglot.omniglot_available("evaluation")
            description = (
                "Omniglot, full release: background alphabets for training, evaluation alphabets for testing"
                if full
                else "Omniglot subsets (../shared/data/omniglot): images_background_small1 for training, "
                "the alphabets of images_background_small2 that small1 lacks for testing"
            )
            splits = MetaSplits(train, test, "omniglot", f"{description}; test alphabets: {', '.join(test.groups)}")
    if splits is None:
        splits = glyph_splits(size=size, seed=seed)
    if rotations:
        splits.train = with_rotations(splits.train)
    return splits
