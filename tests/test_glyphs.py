"""Tests of the offline glyph dataset (mlcourse.data.glyphs).

Most tests use the fast-mode subset (12 characters of every alphabet) or a handful of
characters; the one full build is marked ``slow``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace

import pytest
import torch

from mlcourse.data import glyphs as G
from mlcourse.data.base import ImageClassDataset


@pytest.fixture(scope="module")
def subset(tmp_path_factory) -> ImageClassDataset:
    return G.load_glyphs(subset=True, root=tmp_path_factory.mktemp("glyphs"))


@pytest.fixture(scope="module")
def few() -> G.BaseGlyphs:
    """The clean renders of ten characters from different alphabets."""
    base = G.render_base_glyphs(subset=True)
    keep = list(range(0, len(base), len(base) // 10))[:10]
    return G.BaseGlyphs(
        base.images[keep],
        [base.class_names[i] for i in keep],
        [base.class_groups[i] for i in keep],
        [base.code_points[i] for i in keep],
        [base.fonts[i] for i in keep],
    )


# -- the dataset's shape --------------------------------------------------------------------
def test_subset_shapes_and_dtype(subset):
    assert isinstance(subset, ImageClassDataset) and subset.name == "glyphs"
    assert subset.images.dtype == torch.uint8
    assert subset.images.shape[1:] == (1, 28, 28)
    assert len(subset) == G.NUM_DRAWERS * subset.num_classes
    assert (subset.class_sizes() == 20).all()
    # Class-major order: the 20 drawings of class c are images 20c .. 20c+19.
    assert torch.equal(subset.targets, torch.arange(subset.num_classes).repeat_interleave(20))


def test_subset_keeps_every_alphabet(subset):
    # Groups are the script families; class names keep the alphabet (block).
    groups = Counter(subset.class_groups)
    assert list(groups) == G.GLYPH_FAMILIES and len(groups) >= 15
    blocks = Counter(name.split("/")[0] for name in subset.class_names)
    assert set(blocks) == {a.name for a in G.GLYPH_ALPHABETS}
    full = Counter(name for name, _ in G.select_characters(subset=False))
    assert blocks == {b: min(full[b], G.SUBSET_PER_ALPHABET) for b in full}
    for name, group in zip(subset.class_names, subset.class_groups):
        assert re.fullmatch(r"\w+/U\+[0-9A-F]{4,5}", name), name
        assert G.family_of(name.split("/")[0]) == group, (name, group)
    assert len(set(subset.class_names)) == subset.num_classes


def test_families():
    family = {a.name: a.family for a in G.GLYPH_ALPHABETS}
    assert len(G.GLYPH_FAMILIES) == len(set(G.GLYPH_FAMILIES)) == 17
    assert {b for b, f in family.items() if f == "Latin"} == {
        "Latin", "Latin_extended_B", "Latin_extended_CD", "IPA", "Math_script_upper",
        "Math_script_lower", "Fraktur_upper", "Fraktur_lower", "Letterlike_symbols"}
    assert sum(f == "Canadian_syllabics" for f in family.values()) == 5
    assert {b for b, f in family.items() if f == "Greek"} == {"Greek", "Greek_archaic_Coptic", "Old_Italic"}
    assert G.family_of("Supplemental_arrows") == "Arrows" and G.family_of("Math_symbols_B") == "Math_operators"
    # Blocks named alike (Cyrillic_*, Georgian_*, Arabic_*) belong to one family.
    for prefix in ("Cyrillic", "Georgian", "Arabic", "Canadian_syllabics", "Latin"):
        assert {f for b, f in family.items() if b.startswith(prefix)} == {prefix}, prefix


def test_full_selection_is_large_and_balanced():
    chosen = G.select_characters(subset=False)
    per_alphabet = Counter(name for name, _ in chosen)
    per_family = Counter(G.family_of(name) for name, _ in chosen)
    assert len(chosen) >= 1000
    assert len(per_alphabet) == len(G.GLYPH_ALPHABETS) >= 30
    assert max(per_alphabet.values()) <= G.MAX_PER_ALPHABET
    assert min(per_alphabet.values()) >= 10  # a block rarely loses more to look-alikes
    assert min(per_family.values()) >= 10 and len(per_family) == len(G.GLYPH_FAMILIES)
    assert len(set(chosen)) == len(chosen)
    # The subset is the start of each alphabet of the full selection.
    assert set(G.select_characters(subset=True)) <= set(chosen)
    assert G.select_characters(subset=False) == G._select_all()  # and the choice is deterministic


def test_only_code_points_the_fonts_have():
    fonts = {a.name: a.font for a in G.GLYPH_ALPHABETS}
    for name, cp in G.select_characters(subset=False):
        assert cp in G._charmap(fonts[name]), (name, hex(cp))


# -- what the images look like -----------------------------------------------------------------
def test_images_are_bright_strokes_on_black(subset):
    x = subset.as_float()
    per_image_max = x.amax(dim=(1, 2, 3))
    assert (per_image_max > 0.5).all(), "some drawing is blank or faint"
    ink = x.mean(dim=(1, 2, 3))
    assert (ink > 0.01).all() and (ink < 0.6).all(), (ink.min(), ink.max())
    # The background is black: the outer ring of pixels is (almost) empty, and most pixels are 0.
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1)
    assert border.mean() < 0.02
    assert (subset.images == 0).float().mean() > 0.5


def test_drawers_differ_but_stay_recognisable(subset):
    x = subset.as_float().view(subset.num_classes, 20, -1)
    x = x / x.norm(dim=-1, keepdim=True)
    same = torch.einsum("cdp,cep->cde", x, x)  # cosine between drawings of one class
    off_diagonal = ~torch.eye(20, dtype=torch.bool)
    within = same[:, off_diagonal]
    assert within.max() < 0.995, "two drawers produced the same image"
    # Even in raw pixel space, most drawings are closest to the mean drawing of their own
    # class among ~500 classes (chance: 0.2%): the drawers distort, they do not destroy.
    means = x.mean(dim=1)
    means = means / means.norm(dim=-1, keepdim=True)
    nearest = (x.reshape(-1, x.shape[-1]) @ means.T).argmax(dim=1)
    accuracy = (nearest == subset.targets).float().mean()
    assert accuracy > 0.5, accuracy


def test_no_lookalikes_among_base_renders():
    base = G.render_base_glyphs(subset=False)
    features = G._shape_features(base.images)
    upright = features @ features.T
    upright.fill_diagonal_(-1)
    assert upright.max() <= G.DEDUP_MAX_COSINE + 1e-4
    # Across families, no rotation or reflection of one character looks like another.
    turned = G._dihedral_similarity(features, features)
    groups = base.class_groups
    same_family = torch.tensor([[a == b for b in groups] for a in groups])
    assert turned[~same_family].max() <= G.DEDUP_MAX_COSINE + 1e-4
    assert turned[same_family].max() > G.DEDUP_MAX_COSINE  # rotated siblings within a family stay
    chosen = set(G.select_characters(subset=False))
    # Latin A, Greek Alpha and Cyrillic A are one shape: only Latin (listed first) keeps it.
    assert ("Latin", ord("A")) in chosen
    assert ("Greek", 0x0391) not in chosen and ("Cyrillic", 0x0410) not in chosen
    assert ("Cyrillic", 0x0430) not in chosen and ("Cyrillic", 0x043E) not in chosen  # a, o
    # l and I are the same bar once scaled to fill the box.
    assert not {("Latin", ord("l")), ("Latin", ord("I"))} <= chosen
    # Turned or mirrored copies of an earlier family's character are gone: Cyrillic Я is a
    # mirrored R, the subset sign ⊂ a turned U, Cyrillic komi Ԁ a mirrored P.
    assert ("Latin", ord("R")) in chosen and ("Cyrillic", 0x042F) not in chosen
    assert ("Latin", ord("U")) in chosen and ("Math_operators", 0x2282) not in chosen
    assert ("Latin", ord("P")) in chosen and ("Cyrillic_supplement", 0x0500) not in chosen
    # Within a family they stay: Latin C and Ɔ (Latin Extended-B), the Canadian syllabics ᐅ
    # and ᐊ (one sign pointing right and left).
    assert {("Latin", ord("C")), ("Latin_extended_B", 0x0186)} <= chosen
    assert {("Canadian_syllabics_A", 0x1405), ("Canadian_syllabics_A", 0x140A)} <= chosen


def test_leak_similarity_sees_what_an_upright_check_misses():
    # Ɔ is C turned by 180 degrees, Ǝ is E mirrored: the upright cosine is far below the
    # threshold (the old filter's blind spot), the measure over rotations and reflections above.
    for train, held_out in (("Latin/U+0043", "Latin_extended_B/U+0186"), ("Latin/U+0045", "Latin_extended_B/U+018E"),
                            ("Canadian_syllabics_A/U+1405", "Canadian_syllabics_A/U+140A")):
        upright = G.leak_similarity([train], [held_out], dihedral=False)
        assert upright.similarity < 0.7, (train, held_out, upright)
        closest = G.leak_similarity([train], [held_out])
        assert closest.similarity > G.DEDUP_MAX_COSINE, (train, held_out, closest)
        assert (closest.train_class, closest.held_out_class) == (train, held_out)
    # Rotated class names (as with_rotations makes them) are rendered rotated.
    assert G.leak_similarity(["Latin/U+0043/rot180"], ["Latin_extended_B/U+0186"], dihedral=False).similarity > 0.9
    assert G.leak_similarity(["Latin/U+0043/rot0"], ["Latin/U+0043"], dihedral=False).similarity > 0.999
    # The closest pair is found among many; the measure is symmetric.
    best = G.leak_similarity(["Latin/U+0041", "Latin/U+0043", "Latin/U+0058"], ["Greek/U+03A9", "Latin_extended_B/U+0186"])
    assert best.train_class == "Latin/U+0043" and best.held_out_class == "Latin_extended_B/U+0186"
    back = G.leak_similarity(["Latin_extended_B/U+0186"], ["Latin/U+0043"])
    assert back.similarity == pytest.approx(best.similarity, abs=1e-5)
    with pytest.raises(ValueError):
        G.leak_similarity([], ["Latin/U+0043"])
    with pytest.raises(ValueError):
        G.leak_similarity(["Klingon/U+0043"], ["Latin/U+0043"])
    with pytest.raises(ValueError):
        G.leak_similarity(["Latin/U+0043/flip"], ["Latin/U+0043"])


# -- determinism, seeds, sizes -----------------------------------------------------------------
def test_same_seed_same_tensors_other_seed_other_tensors(few):
    a = G.draw_variants(few, seed=0)
    b = G.draw_variants(few, seed=0)
    c = G.draw_variants(few, seed=1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert (a != c).float().mean() > 0.05


def test_drawings_do_not_depend_on_batching_or_neighbours(few):
    whole = G.draw_variants(few, seed=3)
    assert torch.equal(whole, G.draw_variants(few, seed=3, chunk=3))
    # The drawings of one character are the same whatever characters are built with it.
    alone = replace(
        few, images=few.images[4:5], class_names=few.class_names[4:5], class_groups=few.class_groups[4:5],
        code_points=few.code_points[4:5], fonts=few.fonts[4:5],
    )
    assert torch.equal(G.draw_variants(alone, seed=3), whole[4 * 20 : 5 * 20])


def test_drawer_styles_are_shared_across_characters():
    s0, s1 = G.drawer_styles(0), G.drawer_styles(1)
    assert s0.pen.shape == (20,)
    assert torch.equal(s0.pen, G.drawer_styles(0).pen)
    assert not torch.equal(s0.pen, s1.pen)
    assert s0.pen.std() > 0.3 and s0.slant.std() > 0.05  # drawers really differ


@pytest.mark.parametrize("size", [32, 105])
def test_other_sizes(size):
    base = G.render_base_glyphs(canvas=max(G.CANVAS, size), subset=True)
    first = G.BaseGlyphs(base.images[:3], base.class_names[:3], base.class_groups[:3],
                         base.code_points[:3], base.fonts[:3])
    x = G.draw_variants(first, seed=0, size=size)
    assert x.shape == (60, 1, size, size) and x.dtype == torch.uint8
    assert (x.flatten(1).amax(dim=1) > 128).all()


# -- load_glyphs and its cache --------------------------------------------------------------
@pytest.fixture
def tiny(monkeypatch):
    """Make builds cheap: only the first three characters of the subset are chosen."""
    chosen = G.select_characters(subset=True)[:3]
    monkeypatch.setattr(G, "select_characters", lambda subset=False: chosen)
    return chosen


def test_load_glyphs_size_argument(tiny, tmp_path):
    ds = G.load_glyphs(size=32, subset=True, root=tmp_path)
    assert ds.images.shape == (60, 1, 32, 32) and ds.num_classes == 3
    assert G.cache_path(32, 0, True, tmp_path).exists()


def test_cache_round_trip(tiny, tmp_path, monkeypatch):
    first = G.load_glyphs(subset=True, root=tmp_path)
    path = G.cache_path(28, 0, True, tmp_path)
    assert path.exists() and path.suffix == ".pt"
    assert all(part in path.name for part in (f"v{G.FORMAT_VERSION}", "28px", "seed0", "subset"))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind

    def no_build(*args, **kwargs):
        raise AssertionError("the cached file should have been read")

    monkeypatch.setattr(G, "build_glyphs", no_build)
    second = G.load_glyphs(subset=True, root=tmp_path)
    assert torch.equal(first.images, second.images)
    assert torch.equal(first.targets, second.targets)
    assert first.class_names == second.class_names and first.class_groups == second.class_groups
    assert second.name == "glyphs"


def test_cache_file_of_the_module_fixture_reads_back(subset, tmp_path_factory):
    # The fixture went through load_glyphs too: reading its file gives the same tensors.
    root = tmp_path_factory.getbasetemp()
    files = sorted(root.glob("glyphs*/glyphs-v*-28px-seed0-subset-*.pt"))
    assert files
    again = G.load_glyphs(subset=True, root=files[0].parent)
    assert torch.equal(again.images, subset.images)


def test_seed_and_size_and_subset_have_their_own_files(tmp_path):
    names = {G.cache_path(size, seed, sub, tmp_path).name for size in (28, 32) for seed in (0, 1)
             for sub in (True, False)}
    assert len(names) == 8


def test_corrupt_cache_is_rebuilt(tiny, tmp_path):
    path = G.cache_path(28, 5, True, tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a torch file")
    ds = G.load_glyphs(seed=5, subset=True, root=tmp_path)
    assert len(ds) == 60
    assert torch.equal(G.load_glyphs(seed=5, subset=True, root=tmp_path).images, ds.images)


def test_default_root_is_the_course_cache(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("MLCOURSE_CACHE", str(tmp_path))
    G.load_glyphs(subset=True)
    assert G.cache_path(28, 0, True).parent == tmp_path / "glyphs"
    assert G.cache_path(28, 0, True).exists()


def test_subset_none_follows_fast_mode(monkeypatch):
    seen = {}

    def fake_build(size, seed, subset):
        seen["subset"] = subset
        return ImageClassDataset(torch.zeros(20, 1, size, size, dtype=torch.uint8), torch.zeros(20),
                                 ["x/U+0041"], ["x"], name="glyphs")

    monkeypatch.setattr(G, "build_glyphs", fake_build)
    monkeypatch.setenv("MLCOURSE_FAST", "1")
    G.load_glyphs(cache=False)
    assert seen["subset"] is True
    monkeypatch.setenv("MLCOURSE_FAST", "0")
    G.load_glyphs(cache=False)
    assert seen["subset"] is False


# -- the full build ------------------------------------------------------------------------
@pytest.mark.slow
def test_full_build(subset):
    # Through the session's private cache, which tests/test_splits.py then reuses.
    full = G.load_glyphs(size=28, seed=0, subset=False)
    assert full.num_classes >= 1000 and full.groups == G.GLYPH_FAMILIES
    assert len({name.split("/")[0] for name in full.class_names}) == len(G.GLYPH_ALPHABETS)
    assert (full.class_sizes() == 20).all()
    assert full.images.shape == (20 * full.num_classes, 1, 28, 28)
    # The subset shows exactly the drawings of the same characters in the full set.
    index = {name: c for c, name in enumerate(full.class_names)}
    same = full.subset_classes([index[name] for name in subset.class_names])
    assert torch.equal(same.images, subset.images)
