"""Tests of mlcourse.data.omniglot.

Two kinds: tests on a tiny synthetic set in the official layout, written with PIL into
``tmp_path`` (they always run, offline, in a second), and tests on the real Omniglot subsets
in ``../shared/data/omniglot`` (marked ``shared_data``, skipped in a fresh clone).
Every test points the cache at a temporary folder, so nothing touches ``~/.cache``.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlcourse import config
from mlcourse.data import omniglot
from mlcourse.data.base import with_rotations
from mlcourse.data.omniglot import (
    find_omniglot,
    load_omniglot,
    omniglot_available,
    omniglot_splits,
    vinyals_split,
)

SHARED = config.shared_dir()
SHARED_OMNIGLOT = SHARED / "data" / "omniglot" if SHARED is not None else None
HAS_SHARED = SHARED_OMNIGLOT is not None and all(
    (SHARED_OMNIGLOT / f"images_background_small{i}.zip").is_file() for i in (1, 2)
)


def needs_shared(test):
    """Mark a test as needing the real subsets, and skip it with a clear reason without them."""
    skip = pytest.mark.skipif(
        not HAS_SHARED,
        reason="needs the real Omniglot subsets ../shared/data/omniglot/images_background_small{1,2}.zip "
        "(present in the course's development checkout, absent in a fresh clone)",
    )
    return pytest.mark.shared_data(skip(test))


SMALL1_ALPHABETS = ["Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"]
NEW_IN_SMALL2 = ["Japanese_(katakana)", "Sanskrit", "Tagalog"]


# ---------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------
@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Cache in tmp, no $MLCOURSE_OMNIGLOT, no ../shared: the view of a learner's fresh clone."""
    monkeypatch.setenv("MLCOURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(config.OMNIGLOT_ENV, raising=False)
    monkeypatch.setattr(config, "shared_dir", lambda: None)
    return tmp_path


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to resolve a host, open a connection or build torchvision's Omniglot fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the network was touched")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "Omniglot", refuse)


@pytest.fixture(scope="module")
def shared_env(tmp_path_factory):
    """For the real-data tests: one temporary cache for the module, decoded once, reused."""
    if not HAS_SHARED:
        pytest.skip("needs ../shared/data/omniglot")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLCOURSE_CACHE", str(tmp_path_factory.mktemp("omniglot_cache")))
        mp.delenv(config.OMNIGLOT_ENV, raising=False)
        yield


# A synthetic set: each class is a black rectangle at its own place on white paper, and each
# drawer shifts it by a pixel, so classes and images are distinguishable after resizing.
FAKE = {"Beta": 3, "Alpha": 2, "Gamma_(x)": 4}  # alphabet -> characters (not sorted on purpose)
DRAWERS = 3


def _fake_png(class_index: int, drawer: int) -> Image.Image:
    paper = np.full((105, 105), 255, dtype=np.uint8)
    top, left = 5 + 9 * class_index + drawer, 10 + 7 * (class_index % 5)
    paper[top : top + 8, left : left + 40] = 0  # black ink
    return Image.fromarray(paper).convert("1")  # 1-bit, like the originals


def make_fake_set(folder: Path) -> Path:
    """Write ``folder/ALPHABET/characterNN/XXXX_YY.png``; class index follows sorted order."""
    index = 0
    for alphabet in sorted(FAKE):
        for ch in range(1, FAKE[alphabet] + 1):
            char_dir = folder / alphabet / f"character{ch:02d}"
            char_dir.mkdir(parents=True)
            for drawer in range(DRAWERS):
                _fake_png(index, drawer).save(char_dir / f"{index:04d}_{drawer + 1:02d}.png")
            index += 1
    return folder


def zip_folder(folder: Path, zip_path: Path, top: str | None, junk: bool = False) -> Path:
    """Zip ``folder`` with member names under ``top/`` (or at the zip's root when ``None``)."""
    with zipfile.ZipFile(zip_path, "w") as archive:
        for file in sorted(folder.rglob("*.png"), reverse=True):  # shuffled order: the loader must sort
            rel = file.relative_to(folder).as_posix()
            archive.write(file, f"{top}/{rel}" if top else rel)
        if junk:
            archive.writestr(f"__MACOSX/{top}/Alpha/character01/._0000_01.png", b"junk")
            archive.writestr(f"{top}/.DS_Store", b"junk")
    return zip_path


N_FAKE_CLASSES = sum(FAKE.values())


def assert_same(a, b):
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.targets, b.targets)
    assert a.class_names == b.class_names and a.class_groups == b.class_groups


# ---------------------------------------------------------------------------------------
# Synthetic official layout: always runs
# ---------------------------------------------------------------------------------------
def test_synthetic_folder_loads(isolated, no_network):
    folder = make_fake_set(isolated / "images_background")
    ds = load_omniglot(str(folder))
    assert ds.images.shape == (N_FAKE_CLASSES * DRAWERS, 1, 28, 28)
    assert ds.images.dtype == torch.uint8
    assert ds.num_classes == N_FAKE_CLASSES
    assert ds.groups == sorted(FAKE)  # alphabets sorted, whatever the file system says
    assert ds.class_names[:3] == ["Alpha/character01", "Alpha/character02", "Beta/character01"]
    assert ds.class_groups == [a for a in sorted(FAKE) for _ in range(FAKE[a])]
    assert ds.class_sizes().tolist() == [DRAWERS] * N_FAKE_CLASSES
    assert ds.targets.tolist() == [c for c in range(N_FAKE_CLASSES) for _ in range(DRAWERS)]
    # Strokes bright on dark: the rectangle is ~1/30 of the paper.
    assert ds.images.float().mean() < 30
    assert ds.images.max() == 255


def test_native_size_is_exact_inversion(isolated):
    folder = make_fake_set(isolated / "images_background")
    ds = load_omniglot(str(folder), size=105, cache=False)
    original = np.asarray(_fake_png(0, 0).convert("L"))
    assert torch.equal(ds.images[0, 0], torch.from_numpy(255 - original))


def test_resizing_is_antialiased(isolated):
    # 105 -> 28 is not an integer factor: an antialiased filter leaves grey edge pixels,
    # nearest-neighbour would leave only 0 and 255.
    folder = make_fake_set(isolated / "images_background")
    ds = load_omniglot(str(folder), size=28, cache=False)
    values = ds.images.unique()
    assert ((values > 0) & (values < 255)).any()
    big = load_omniglot(str(folder), size=150, cache=False)
    assert big.image_shape == (1, 150, 150)


@pytest.mark.parametrize("top", ["images_background", None])
def test_synthetic_zip_equals_folder(isolated, top):
    folder = make_fake_set(isolated / "unpacked" / "images_background")
    zipped = zip_folder(folder, isolated / "images_background.zip", top, junk=top is not None)
    assert_same(load_omniglot(str(folder), cache=False), load_omniglot(str(zipped), cache=False))


def test_zip_mixing_two_sets_is_refused(isolated):
    folder = make_fake_set(isolated / "set")
    path = isolated / "mixed.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for file in folder.rglob("*.png"):
            rel = file.relative_to(folder).as_posix()
            archive.write(file, f"images_background_small1/{rel}")
            archive.write(file, f"images_background_small2/{rel}")
    with pytest.raises(ValueError, match="mixes several"):
        load_omniglot(str(path))


def test_named_lookup_in_root_env_and_torchvision_layout(isolated, monkeypatch, no_network):
    assert not omniglot_available("background")
    make_fake_set(isolated / "mine" / "images_background")
    assert find_omniglot("background", root=isolated / "mine") == isolated / "mine" / "images_background"
    assert load_omniglot("background", root=isolated / "mine").num_classes == N_FAKE_CLASSES
    # The root may also name the set folder itself.
    assert omniglot_available("background", root=isolated / "mine" / "images_background")

    monkeypatch.setenv(config.OMNIGLOT_ENV, str(isolated / "mine"))
    assert omniglot_available("background")
    assert not omniglot_available("evaluation")

    # torchvision's download layout inside the cache folder.
    monkeypatch.delenv(config.OMNIGLOT_ENV)
    make_fake_set(config.cache_dir() / "omniglot" / "omniglot-py" / "images_evaluation")
    assert find_omniglot("evaluation") == config.cache_dir() / "omniglot" / "omniglot-py" / "images_evaluation"
    assert load_omniglot("evaluation").name == "omniglot-evaluation"


def test_folder_holding_sets(isolated):
    holder = isolated / "holder"
    fake = make_fake_set(isolated / "src")
    holder.mkdir()
    zip_folder(fake, holder / "images_background_small1.zip", "images_background_small1")
    # One set in the folder: the folder is enough.
    assert load_omniglot(str(holder), cache=False).num_classes == N_FAKE_CLASSES
    # Two sets: ambiguous, so say how to choose.
    zip_folder(fake, holder / "images_background_small2.zip", "images_background_small2")
    with pytest.raises(ValueError, match="several Omniglot sets"):
        load_omniglot(str(holder))
    assert load_omniglot("small2", root=holder, cache=False).num_classes == N_FAKE_CLASSES


def test_cache_round_trip_and_key(isolated):
    zipped = zip_folder(make_fake_set(isolated / "src"), isolated / "images_background.zip", "images_background")
    first = load_omniglot(str(zipped))
    files = sorted((config.cache_dir() / "omniglot").glob("*.pt"))
    assert len(files) == 1 and files[0].name.startswith("images_background_28px_")
    assert not list((config.cache_dir() / "omniglot").glob("*.tmp"))  # atomic write left nothing behind

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(omniglot, "_decode_all", no_decoding)
        assert_same(first, load_omniglot(str(zipped)))

    # Another size, or a changed file (new mtime), is another cache entry.
    load_omniglot(str(zipped), size=20)
    stat = zipped.stat()
    os.utime(zipped, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    load_omniglot(str(zipped))
    assert len(list((config.cache_dir() / "omniglot").glob("*.pt"))) == 3

    # cache=False neither reads nor writes.
    load_omniglot(str(zipped), size=21, cache=False)
    assert len(list((config.cache_dir() / "omniglot").glob("*.pt"))) == 3


def test_corrupt_cache_is_rebuilt(isolated):
    folder = make_fake_set(isolated / "images_background")
    good = load_omniglot(str(folder))
    (cache_file,) = (config.cache_dir() / "omniglot").glob("*.pt")
    cache_file.write_bytes(b"not a torch file")
    assert_same(good, load_omniglot(str(folder)))


def test_not_found_lists_searched_places(isolated, monkeypatch, no_network):
    env_dir = isolated / "from_env"
    monkeypatch.setenv(config.OMNIGLOT_ENV, str(env_dir))
    with pytest.raises(FileNotFoundError) as info:
        load_omniglot("background", root=isolated / "given", download=False)
    message = str(info.value)
    for place in (isolated / "given", env_dir, config.cache_dir() / "omniglot"):
        assert str(place) in message
    assert "root=" in message and config.OMNIGLOT_ENV in message and "download=True" in message
    assert "../shared" in message  # says the shared folder is absent


def test_download_false_never_touches_network(isolated, no_network):
    for source in ("background", "evaluation", "small1", "small2"):
        with pytest.raises(FileNotFoundError):
            load_omniglot(source)
    with pytest.raises(FileNotFoundError):
        omniglot_splits()


def test_offline_download_fails_fast_and_clearly(isolated, monkeypatch):
    import torchvision.datasets

    calls = []

    def offline(root, background=True, download=False, **kwargs):
        calls.append((root, background, download))
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torchvision.datasets, "Omniglot", offline)
    start = time.perf_counter()
    with pytest.raises(RuntimeError) as info:
        load_omniglot("evaluation", download=True)
    assert time.perf_counter() - start < 5
    assert calls == [(str(config.cache_dir() / "omniglot"), False, True)]
    message = str(info.value)
    assert "images_evaluation.zip" in message and "root=" in message and config.OMNIGLOT_ENV in message


def test_small_subsets_are_not_downloadable(isolated, no_network):
    with pytest.raises(FileNotFoundError, match="cannot be downloaded"):
        load_omniglot("small1", download=True)


def test_bad_arguments(isolated):
    with pytest.raises(ValueError, match="unknown Omniglot source"):
        load_omniglot("bakground")
    with pytest.raises(ValueError, match="size"):
        load_omniglot("background", size=0)
    with pytest.raises(FileNotFoundError):
        load_omniglot(str(isolated / "nowhere" / "images_background.zip"))


def test_vinyals_split(isolated):
    ds = load_omniglot(str(make_fake_set(isolated / "images_background")))
    train, test = vinyals_split(ds, n_train_classes=5, seed=None)
    assert train.class_names == ds.class_names[:5] and test.class_names == ds.class_names[5:]
    for seed in (0, 1, 2):
        train, test = vinyals_split(ds, n_train_classes=5, seed=seed)
        assert train.num_classes == 5 and test.num_classes == N_FAKE_CLASSES - 5
        assert sorted(train.class_names + test.class_names) == sorted(ds.class_names)
        # Alphabets come in whole blocks: at most one alphabet is cut by the boundary.
        assert len(set(train.class_groups) & set(test.class_groups)) <= 1
    again = vinyals_split(ds, n_train_classes=5, seed=2)
    assert again[0].class_names == train.class_names  # deterministic
    with pytest.raises(ValueError):
        vinyals_split(ds, n_train_classes=N_FAKE_CLASSES)


def test_full_release_split_and_rotations(isolated):
    # A fake "full release": background and evaluation with different alphabets.
    make_fake_set(isolated / "full" / "images_background")
    evaluation = isolated / "full" / "images_evaluation"
    make_fake_set(isolated / "tmp_eval")
    for alphabet_dir in (isolated / "tmp_eval").iterdir():
        alphabet_dir.rename(isolated / "tmp_eval" / f"Eval_{alphabet_dir.name}")
    (isolated / "tmp_eval").rename(evaluation)

    train, test = omniglot_splits(root=isolated / "full")
    assert train.name == "omniglot-background" and test.name == "omniglot-evaluation"
    assert not set(train.class_groups) & set(test.class_groups)
    rtrain, rtest = omniglot_splits(root=isolated / "full", rotations=True)
    assert rtrain.num_classes == 4 * train.num_classes and rtest.num_classes == 4 * test.num_classes
    assert set(rtest.class_groups) == set(test.class_groups)

    everything = load_omniglot("all", root=isolated / "full")
    assert everything.num_classes == 2 * N_FAKE_CLASSES


# ---------------------------------------------------------------------------------------
# Real Omniglot subsets from ../shared
# ---------------------------------------------------------------------------------------
@needs_shared
def test_small1_contents(shared_env):
    ds = load_omniglot("small1")
    assert find_omniglot("small1") == SHARED_OMNIGLOT / "images_background_small1.zip"
    assert ds.groups == SMALL1_ALPHABETS
    assert ds.num_classes == 136 and len(ds) == 2720
    assert ds.class_sizes().tolist() == [20] * 136
    assert ds.images.shape == (2720, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.images.float().mean() < 60  # bright strokes on a dark background
    assert ds.images[:, :, 0, :].float().mean() < 5  # the paper's edge is empty
    assert ds.class_names[0] == "Balinese/character01"
    assert all(name.split("/")[0] == group for name, group in zip(ds.class_names, ds.class_groups))


@needs_shared
def test_small1_size_64(shared_env):
    ds = load_omniglot("small1", size=64)
    assert ds.images.shape == (2720, 1, 64, 64)
    assert ds.images.float().mean() < 60


@needs_shared
def test_shared_cache_round_trip(shared_env):
    first = load_omniglot("small1")  # decoded or cached by an earlier test
    start = time.perf_counter()
    second = load_omniglot("small1")
    assert time.perf_counter() - start < 2
    assert_same(first, second)
    assert_same(first, load_omniglot("small1", cache=False))


@needs_shared
def test_shared_alphabet_split(shared_env):
    train, test = omniglot_splits(which="small")
    assert train.groups == SMALL1_ALPHABETS
    assert test.groups == NEW_IN_SMALL2
    assert test.num_classes == 106 and len(test) == 2120
    assert not set(train.class_groups) & set(test.class_groups)
    assert not set(train.class_names) & set(test.class_names)
    # With no full release in sight, "auto" falls back to the subsets.
    auto_train, auto_test = omniglot_splits()
    assert_same(auto_train, train)
    assert auto_test.groups == NEW_IN_SMALL2


@needs_shared
def test_shared_zip_and_extracted_folder_identical(shared_env, tmp_path):
    zipped = SHARED_OMNIGLOT / "images_background_small1.zip"
    with zipfile.ZipFile(zipped) as archive:
        archive.extractall(tmp_path)
    folder = tmp_path / "images_background_small1"
    from_folder = load_omniglot(str(folder), cache=False)
    assert_same(load_omniglot(str(zipped), cache=False), from_folder)
    # An explicit root is searched first, and the unpacked folder wins there.
    assert find_omniglot("small1", root=tmp_path) == folder


@needs_shared
def test_shared_rotations(shared_env):
    ds = load_omniglot("small1")
    rotated = with_rotations(ds)
    assert rotated.num_classes == 4 * 136 and len(rotated) == 4 * 2720
    train, test = omniglot_splits(which="small", rotations=True)
    assert train.num_classes == 4 * 136 and test.num_classes == 4 * 106
    assert not set(train.class_groups) & set(test.class_groups)
