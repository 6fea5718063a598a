"""Tests of the alphabet splits: mlcourse.data.base (split_by_groups, split_groups_by_fraction)
and mlcourse.data.sources (glyph_splits, carve_validation, check_disjoint, MetaSplits).

Most tests use small synthetic datasets; the glyph tests use the real default split (the full
build is shared with tests/test_glyphs.py through the session's private cache).
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from mlcourse.data import glyphs as G
from mlcourse.data import sources as S
from mlcourse.data.base import (
    ImageClassDataset, concat, split_by_groups, split_groups_by_fraction, with_rotations,
)
from mlcourse.data.episodes import sample_episode

from conftest import toy_dataset


def grouped(sizes: list[int], per_class: int = 2, size: int = 4) -> ImageClassDataset:
    """Group ``g`` has ``sizes[g]`` classes; pixel (0, 0) of each image holds its class id (mod 256),
    pixel (0, 1) its group, so that moved images can be traced back."""
    images, targets, names, groups = [], [], [], []
    c = 0
    for g, n in enumerate(sizes):
        for _ in range(n):
            x = torch.zeros(per_class, 1, size, size, dtype=torch.uint8)
            x[:, 0, 0, 0] = c % 256
            x[:, 0, 0, 1] = g
            images.append(x)
            targets += [c] * per_class
            names.append(f"alpha{g}/char{c}")
            groups.append(f"alpha{g}")
            c += 1
    return ImageClassDataset(torch.cat(images), torch.tensor(targets), names, groups, name="syn")


def assert_partition(dataset: ImageClassDataset, *parts: ImageClassDataset) -> None:
    """The parts split ``dataset``'s groups and classes exactly: none lost, none in two parts,
    every class with its own images."""
    seen_groups = [g for p in parts for g in p.groups]
    assert len(seen_groups) == len(set(seen_groups)), "a group is in two parts"
    assert set(seen_groups) == set(dataset.groups), "a group was lost"
    names = [n for p in parts for n in p.class_names]
    assert sorted(names) == sorted(dataset.class_names)
    index = {n: c for c, n in enumerate(dataset.class_names)}
    by_class = dataset.indices_by_class()
    for p in parts:
        for c, (name, group) in enumerate(zip(p.class_names, p.class_groups)):
            original = index[name]
            assert dataset.class_groups[original] == group
            assert torch.equal(p.images[p.indices_by_class()[c]], dataset.images[by_class[original]])


# -- split_by_groups -------------------------------------------------------------------------
def test_split_by_groups_holds_out_whole_groups():
    data = toy_dataset(num_classes=12, groups=4)
    train, test = split_by_groups(data, ["group1"])
    assert test.groups == ["group1"] and "group1" not in train.class_groups
    assert_partition(data, train, test)
    train, val, test = split_by_groups(data, ["group3", "group0"], val_groups=["group2"])
    assert train.groups == ["group1"] and val.groups == ["group2"] and set(test.groups) == {"group0", "group3"}
    assert_partition(data, train, val, test)
    assert (train.name, val.name, test.name) == ("toy/train", "toy/val", "toy/test")


def test_split_by_groups_errors():
    data = toy_dataset(num_classes=6, groups=3)
    with pytest.raises(ValueError, match="both val and test"):
        split_by_groups(data, ["group0"], val_groups=["group0"])
    with pytest.raises(ValueError, match="no group left"):
        split_by_groups(data, ["group0", "group1"], val_groups=["group2"])
    with pytest.raises(ValueError, match="unknown groups"):
        split_by_groups(data, ["group9"])


# -- split_groups_by_fraction ----------------------------------------------------------------
def test_fraction_split_meets_the_fractions_with_whole_groups():
    sizes = [3, 7, 5, 11, 2, 9, 4, 6, 8, 5, 3, 10, 7, 4, 6, 12, 2, 5, 9, 3]
    data = grouped(sizes)
    for seed in range(5):
        train, val, test = split_groups_by_fraction(data, test_fraction=0.25, val_fraction=0.15, seed=seed)
        assert_partition(data, train, val, test)
        total, largest = data.num_classes, max(sizes)
        for part, fraction in ((test, 0.25), (val, 0.15)):
            # groups are drawn until the fraction is met: never short of it, over by less than a group
            assert fraction * total <= part.num_classes < fraction * total + largest, (seed, part)
        assert train.num_classes == total - val.num_classes - test.num_classes > 0.4 * total


def test_fraction_split_without_validation():
    data = grouped([4] * 10)
    parts = split_groups_by_fraction(data, test_fraction=0.3, seed=1)
    assert len(parts) == 2
    train, test = parts
    assert test.num_classes == 12 and train.num_classes == 28  # 3 groups of 4 meet 30% of 40
    assert_partition(data, train, test)


def test_fraction_split_is_deterministic_and_depends_on_the_seed():
    data = grouped([4] * 30)

    def draw(seed):
        return tuple(tuple(part.groups) for part in split_groups_by_fraction(data, 0.25, 0.15, seed=seed))

    assert draw(0) == draw(0)
    assert draw(7) == draw(7)
    draws = {draw(seed) for seed in range(6)}
    assert len(draws) == 6, "different seeds should hold out different groups"
    held_out = Counter(g for d in draws for g in d[2])
    assert len(held_out) > 10  # over seeds, many groups take their turn in the test set


@pytest.mark.parametrize("test_fraction, val_fraction", [(0, 0.1), (1.0, 0), (-0.1, 0), (0.25, -0.1), (0.6, 0.4), (0.5, 0.7)])
def test_fraction_split_rejects_bad_fractions(test_fraction, val_fraction):
    with pytest.raises(ValueError, match="fractions"):
        split_groups_by_fraction(grouped([3] * 8), test_fraction=test_fraction, val_fraction=val_fraction)


# -- check_disjoint, carve_validation, MetaSplits ---------------------------------------------
def test_check_disjoint():
    data = grouped([3, 3, 3, 3])
    train, val, test = split_by_groups(data, ["alpha3"], val_groups=["alpha2"])
    S.check_disjoint(train, val, test)  # fine
    with pytest.raises(ValueError, match="alphabets in both train and test"):
        S.check_disjoint(data.subset_groups(["alpha0", "alpha1", "alpha3"]), val, test)  # test alphabet left in training
    with pytest.raises(ValueError, match="alphabets in both train and val"):
        S.check_disjoint(data.subset_groups(["alpha0", "alpha2"]), val, test)
    with pytest.raises(ValueError, match="alphabets in both val and test"):
        S.check_disjoint(train, test, test)
    # A character renamed into another group, or a rotated copy of it, is still the same character.
    stolen = ImageClassDataset(test.images, test.targets, [f"{n}/rot90" for n in test.class_names],
                               ["elsewhere"] * test.num_classes)
    with pytest.raises(ValueError, match="characters in both train and test"):
        S.check_disjoint(concat([train, stolen]), val, test)


def test_carve_validation_moves_whole_groups_out_of_training():
    data = grouped([3, 4, 5, 6])
    train, val = S.carve_validation(data, ["alpha2", "alpha0"])
    assert set(val.groups) == {"alpha0", "alpha2"} and train.groups == ["alpha1", "alpha3"]
    assert_partition(data, train, val)
    with pytest.raises(ValueError, match="not in the training set"):
        S.carve_validation(data, ["alpha9"])
    with pytest.raises(ValueError, match="no alphabet left"):
        S.carve_validation(data, data.groups)


def test_meta_splits_refuse_overlaps_and_name_their_sets():
    data = grouped([3, 3, 3, 3])
    train, val, test = split_by_groups(data, ["alpha3"], val_groups=["alpha2"])
    splits = S.MetaSplits(train, val, test, "syn", "synthetic")
    assert splits.evaluation_set("val") is val and splits.evaluation_set("test") is test
    with pytest.raises(ValueError, match="split must be"):
        splits.evaluation_set("train")
    with pytest.raises(ValueError, match="alphabets in both"):
        S.MetaSplits(data, val, test, "syn", "test alphabets left in training")


# -- the glyphs -----------------------------------------------------------------------------
@pytest.fixture(params=[False, True], ids=["full", "subset"])
def glyph_split(request) -> tuple[bool, S.MetaSplits]:
    # The default split (seed 0), built once per session into the private cache (see
    # conftest), then read back.
    return request.param, S.glyph_splits(subset=request.param)


def test_glyph_splits_are_usable_family_splits(glyph_split):
    subset, splits = glyph_split
    full = G.load_glyphs(subset=subset)
    assert_partition(full, splits.train, splits.val, splits.test)
    for part in (splits.train, splits.val, splits.test):
        assert set(part.groups) <= set(G.GLYPH_FAMILIES)
        for name, group in zip(part.class_names, part.class_groups):
            assert G.family_of(name.split("/")[0]) == group  # blocks of one family stay together
        assert (part.class_sizes() == G.NUM_DRAWERS).all()
    # Enough classes for 20-way training and 5-way evaluation, 1 shot + 15 queries each.
    assert splits.train.num_classes >= 100 and len(splits.train.groups) >= 3
    assert splits.val.num_classes >= 20 and splits.test.num_classes >= 20
    g = torch.Generator().manual_seed(0)
    assert sample_episode(splits.train, 20, 1, 15, generator=g).query_x.shape[0] == 300
    for part in (splits.val, splits.test):
        assert sample_episode(part, 5, 1, 15, generator=g).query_x.shape[0] == 75
    # The fractions are met with whole families (over by less than the largest family).
    total = full.num_classes
    largest = max(Counter(full.class_groups).values())
    for part, fraction in ((splits.test, S.GLYPH_TEST_FRACTION), (splits.val, S.GLYPH_VAL_FRACTION)):
        assert fraction * total <= part.num_classes < fraction * total + largest


def test_glyph_splits_do_not_leak_turned_or_mirrored_lookalikes(glyph_split):
    _, splits = glyph_split
    train = splits.train.class_names
    for held_out in (splits.val, splits.test):
        closest = G.leak_similarity(train, held_out.class_names)  # all rotations and reflections
        assert closest.similarity <= G.DEDUP_MAX_COSINE + 1e-4, closest
        # ... and the training classes exactly as meta_splits(rotations=True) makes them
        rotated = with_rotations(splits.train).class_names
        assert G.leak_similarity(rotated, held_out.class_names, dihedral=False).similarity <= G.DEDUP_MAX_COSINE + 1e-4


def test_the_leak_measure_catches_a_split_by_block():
    # Split the same characters by Unicode block (the old groups) instead of family: rotated
    # siblings and Latin variants land on both sides, and the measure says so.
    chosen = G.select_characters(subset=True)
    names = [f"{block}/U+{cp:04X}" for block, cp in chosen]
    by_block = ImageClassDataset(torch.zeros(len(names), 1, 2, 2, dtype=torch.uint8), torch.arange(len(names)),
                                 names, [block for block, _ in chosen])
    train, val, test = split_groups_by_fraction(by_block, S.GLYPH_TEST_FRACTION, S.GLYPH_VAL_FRACTION, seed=0)
    held_out = val.class_names + test.class_names
    assert G.leak_similarity(train.class_names, held_out).similarity > G.DEDUP_MAX_COSINE
    # Test characters left in training: check_disjoint refuses the split, the measure is ~1.
    splits = S.glyph_splits(subset=True)
    leaky = concat([splits.train, splits.test.subset_classes(range(5))])
    with pytest.raises(ValueError, match="in both train and test"):
        S.check_disjoint(leaky, splits.val, splits.test.subset_classes(range(5, splits.test.num_classes)))
    assert G.leak_similarity(leaky.class_names, splits.test.class_names).similarity > 0.999


def test_meta_splits_rotate_only_the_training_classes(monkeypatch):
    monkeypatch.delenv(S.DATA_ENV, raising=False)
    plain = S.meta_splits(source="glyphs")
    rotated = S.meta_splits(source="glyphs", rotations=True)
    assert rotated.train.num_classes == 4 * plain.train.num_classes
    assert Counter(n.rsplit("/", 1)[1] for n in rotated.train.class_names) == {
        f"rot{k}": plain.train.num_classes for k in (0, 90, 180, 270)}
    for split in ("val", "test"):
        a, b = plain.evaluation_set(split), rotated.evaluation_set(split)
        assert a.class_names == b.class_names and torch.equal(a.images, b.images)
        assert not any("/rot" in n for n in b.class_names)
    assert rotated.train.groups == plain.train.groups
    # rot90 of a class really is its images turned by 90 degrees
    c = rotated.train.class_names.index(plain.train.class_names[0] + "/rot90")
    turned = rotated.train.images[rotated.train.indices_by_class()[c]]
    assert torch.equal(turned, torch.rot90(plain.train.images[plain.train.indices_by_class()[0]], 1, dims=(2, 3)))
