"""Omniglot: 1,623 handwritten characters from 50 alphabets, 20 drawers each.

Omniglot (Lake, Salakhutdinov and Tenenbaum, 2015) is the "transpose of MNIST": few images
per class and very many classes, which is exactly what few-shot learning needs. The
official release comes as zips laid out as::

    images_background/ALPHABET/characterNN/XXXX_YY.png     30 alphabets, 964 characters
    images_evaluation/ALPHABET/characterNN/XXXX_YY.png     20 alphabets, 659 characters
    images_background_small1/...  images_background_small2/...   the "minimal" subsets

Every PNG is a 105x105 black-on-white drawing. :func:`load_omniglot` turns one of these sets
into an :class:`~mlcourse.data.base.ImageClassDataset`: strokes are inverted to be *bright*
on a dark background (so that zero padding, rotations and convolutions treat the empty
paper as "nothing"), images are shrunk to ``size`` with an anti-aliasing filter, and the
decoded tensor is cached as a ``.pt`` file so the second load takes milliseconds.

Where the data is looked for, in order (nothing is ever downloaded unless you ask)::

    1. load_omniglot(..., root=FOLDER)          an explicit folder
    2. $MLCOURSE_OMNIGLOT                       an environment variable naming a folder
    3. <cache_dir>/omniglot                     where download=True (torchvision) puts it
    4. ../shared/data/omniglot                  the course's development checkout

In each folder a set may be an unpacked folder (``images_background/``) or the official
zip (``images_background.zip``), directly or inside torchvision's ``omniglot-py/``.
Zips are read in place: nothing is unpacked.

Meta-learning needs *classes* that were never seen in training, and the honest version of
that holds out whole *alphabets* (:func:`omniglot_splits`). The split popularised by
Vinyals et al. (2016) is a split of characters instead (:func:`vinyals_split`).
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import tempfile
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from .. import config
from .base import ImageClassDataset, concat, with_rotations

# The names a set has in the official release (and in torchvision's download).
SOURCES = {
    "background": "images_background",
    "evaluation": "images_evaluation",
    "small1": "images_background_small1",
    "small2": "images_background_small2",
}
# The only sets torchvision.datasets.Omniglot knows how to download.
DOWNLOADABLE = ("background", "evaluation")
# Where the official zips live, for the messages that tell a learner what to fetch by hand.
OFFICIAL_URL = "the python/ folder of https://github.com/brendenlake/omniglot"
# Bump when the decoding changes, so that old cache files are not reused.
_CACHE_FORMAT = 1
_DOWNLOAD_TIMEOUT_S = 20.0


# ---------------------------------------------------------------------------------------
# Finding the files
# ---------------------------------------------------------------------------------------
def _search_roots(root: str | os.PathLike | None) -> list[tuple[str, Path]]:
    """The folders to look in, in order, each with a label for error messages."""
    roots: list[tuple[str, Path]] = []
    if root is not None:
        roots.append(("root argument", Path(root).expanduser()))
    env = os.environ.get(config.OMNIGLOT_ENV)
    if env:
        roots.append((f"${config.OMNIGLOT_ENV}", Path(env).expanduser()))
    roots.append(("cache folder", config.cache_dir() / "omniglot"))
    shared = config.shared_dir()
    if shared is not None:
        roots.append(("shared folder", shared / "data" / "omniglot"))
    return roots


def _candidates(base: Path, stem: str) -> list[Path]:
    """Where set ``stem`` may sit in ``base``: unpacked folders before zips, as torchvision lays it out."""
    places = []
    if base.name in (stem, stem + ".zip"):  # root points at the set itself
        places.append(base)
    for folder in (base, base / "omniglot-py"):
        places += [folder / stem, folder / (stem + ".zip")]
    return places


def _is_set(path: Path) -> bool:
    """Cheap test: a folder with at least one ALPHABET/characterNN/*.png, or a real zip (no decoding)."""
    if path.is_dir():
        return _looks_like_set_folder(path)  # an empty leftover folder must not hide a good zip
    return path.is_file() and zipfile.is_zipfile(path)


def _looks_like_set_folder(folder: Path) -> bool:
    """True when ``folder`` itself holds ``ALPHABET/characterNN/*.png``."""
    return next(folder.glob("*/*/*.png"), None) is not None


def _resolve_explicit(path: Path) -> Path:
    """An explicit path given as ``source``: a set folder, a set zip, or a folder holding one set."""
    if not path.exists():
        raise FileNotFoundError(f"Omniglot source {str(path)!r} does not exist")
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{path} is not a zip file")
        return path
    if _looks_like_set_folder(path):
        return path
    # A folder holding images_* folders or zips (perhaps inside omniglot-py/): accept exactly one set.
    found: dict[str, Path] = {}
    for folder in (path, path / "omniglot-py"):
        if not folder.is_dir():
            continue
        for child in sorted(folder.iterdir()):
            stem = child.name[:-4] if child.name.endswith(".zip") else child.name
            if stem.startswith("images_") and _is_set(child):
                found.setdefault(stem, child)  # sorted(): the folder wins over the zip of that name
    if len(found) == 1:
        return next(iter(found.values()))
    if not found:
        raise FileNotFoundError(
            f"{path} holds no Omniglot set: expected ALPHABET/characterNN/*.png inside it, "
            "or images_*/ folders or images_*.zip files"
        )
    names = ", ".join(sorted(found))
    raise ValueError(
        f"{path} holds several Omniglot sets ({names}); pick one with "
        f"load_omniglot(source=NAME, root={str(path)!r}) where NAME is one of {sorted(SOURCES)}"
    )


def _stem(source: str) -> str:
    try:
        return SOURCES[source]
    except KeyError:
        raise ValueError(
            f"unknown Omniglot source {source!r}: use one of {sorted(SOURCES)}, 'all' (load_omniglot only) "
            "or a path to a set folder or zip"
        ) from None


def _as_path(source: str | os.PathLike) -> Path | None:
    """``None`` for a named source, a ``Path`` for an explicit one; a typo raises ``ValueError``."""
    if isinstance(source, os.PathLike):
        return Path(source).expanduser()
    if source in SOURCES:
        return None
    if any(sep in source for sep in "/\\") or source.endswith(".zip") or Path(source).exists():
        return Path(source).expanduser()
    _stem(source)  # "bakground": say "unknown source" rather than "path not found"
    raise AssertionError("unreachable")


def find_omniglot(source: str | os.PathLike = "background", root: str | os.PathLike | None = None) -> Path | None:
    """The folder or zip that :func:`load_omniglot` would read for ``source``, or ``None``.

    Only looks at file names (no decoding), so it is cheap enough to call from a notebook
    cell that decides between real Omniglot and an offline stand-in.
    """
    path = _as_path(source)
    if path is not None:
        try:
            return _resolve_explicit(path)
        except (FileNotFoundError, ValueError):
            return None
    stem = _stem(source)
    for _, base in _search_roots(root):
        for place in _candidates(base, stem):
            if _is_set(place):
                return place
    return None


def omniglot_available(source: str | os.PathLike = "background", root: str | os.PathLike | None = None) -> bool:
    """True when ``source`` can be loaded without a download (a cheap check, no decoding)."""
    return find_omniglot(source, root) is not None


def _not_found_message(source: str, root) -> str:
    stem = _stem(source)
    lines = [f"Omniglot {source!r} ({stem}) was not found. Looked in:"]
    for label, base in _search_roots(root):
        names = ", ".join(sorted({str(p.relative_to(base)) if p != base else "." for p in _candidates(base, stem)}))
        lines.append(f"  - {base}  [{label}; as {names}]")
    if config.shared_dir() is None:
        lines.append("  (no ../shared/ folder beside the checkout)")
    hint = (
        f"Either call load_omniglot({source!r}, download=True) on a machine with network access "
        "(torchvision fetches it into the cache folder), or"
        if source in DOWNLOADABLE
        else "Either"
    )
    lines.append(
        f"{hint} put {stem}.zip (from {OFFICIAL_URL}) in a folder and pass "
        f"load_omniglot({source!r}, root=FOLDER) or set {config.OMNIGLOT_ENV}=FOLDER."
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Reading and decoding
# ---------------------------------------------------------------------------------------
def _is_junk(parts: tuple[str, ...]) -> bool:
    # macOS zips carry __MACOSX/ and ._resource-fork files that end in .png too.
    return any(p == "__MACOSX" or p.startswith(".") for p in parts)


def _list_pngs(path: Path) -> list[tuple[tuple[str, str, str], str]]:
    """``[((alphabet, character, file), member)]`` sorted, for a set folder or a set zip.

    ``member`` is the name inside the zip, or the file path for a folder. Only the last three
    path parts matter, so a zip with or without the top ``images_background/`` folder works;
    a zip that mixes several sets is refused rather than silently merged.
    """
    entries = []
    prefixes = set()
    if path.is_dir():
        for file in path.glob("*/*/*"):
            rel = file.relative_to(path).parts
            if file.suffix.lower() == ".png" and not _is_junk(rel) and file.is_file():
                entries.append((rel, str(file)))
    else:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                parts = PurePosixPath(info.filename).parts
                if info.is_dir() or not info.filename.lower().endswith(".png") or _is_junk(parts):
                    continue
                if len(parts) < 3:
                    continue
                prefixes.add(parts[:-3])
                entries.append((parts[-3:], info.filename))
        if len(prefixes) > 1:
            tops = sorted("/".join(p) or "." for p in prefixes)
            raise ValueError(f"{path} mixes several Omniglot sets ({', '.join(tops)}); give one set per zip")
    if not entries:
        raise FileNotFoundError(f"{path} holds no ALPHABET/characterNN/*.png images")
    # Sorting by (alphabet, character, file) makes class ids and image order reproducible
    # on every machine, whatever order the file system or the zip lists them in.
    entries.sort(key=lambda e: e[0])
    return entries


def _decode(stream, size: int) -> np.ndarray:
    """One PNG -> ``uint8 [size, size]`` with bright strokes."""
    with Image.open(stream) as image:
        gray = image.convert("L")  # the originals are 1-bit; "L" gives 0 (ink) / 255 (paper)
    # Invert first: then the paper is 0, and resizing blends strokes into 0, not into white.
    gray = Image.fromarray(255 - np.asarray(gray))
    if gray.size != (size, size):
        # BOX averages each output pixel over exactly the input area it covers: the right
        # anti-aliasing for shrinking (105 -> 28 keeps thin strokes as grey, not broken
        # dots, and never overshoots). For enlarging, BOX would be blocky, so use BICUBIC.
        shrinking = size < gray.size[0]
        gray = gray.resize((size, size), Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC)
    return np.asarray(gray, dtype=np.uint8)


def _decode_all(path: Path, size: int) -> dict:
    entries = _list_pngs(path)
    images = np.empty((len(entries), 1, size, size), dtype=np.uint8)
    class_ids: dict[tuple[str, str], int] = {}
    targets = np.empty(len(entries), dtype=np.int64)

    def read(opener) -> None:
        for i, ((alphabet, character, _), member) in enumerate(entries):
            targets[i] = class_ids.setdefault((alphabet, character), len(class_ids))
            with opener(member) as stream:
                images[i, 0] = _decode(stream, size)

    if path.is_dir():
        read(lambda member: open(member, "rb"))
    else:
        with zipfile.ZipFile(path) as archive:
            # Reading each member fully into memory is faster than PIL seeking in a zip stream.
            read(lambda member: io.BytesIO(archive.read(member)))
    return {
        "images": torch.from_numpy(images),
        "targets": torch.from_numpy(targets),
        "class_names": [f"{a}/{c}" for a, c in class_ids],
        "class_groups": [a for a, _ in class_ids],
    }


# ---------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------
def _fingerprint(path: Path) -> tuple:
    """What identifies the *contents* of a set without reading it: name, size and mtime."""
    if path.is_file():
        st = path.stat()
        return (path.name, st.st_size, st.st_mtime_ns)
    # A folder's own mtime does not change when a file deep inside it does: summarise the PNGs.
    stats = [p.stat() for p in path.glob("*/*/*.png")]
    return (path.name, len(stats), sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0))


def _cache_file(path: Path, size: int) -> Path:
    key = repr((_CACHE_FORMAT, _fingerprint(path), size)).encode()
    digest = hashlib.sha1(key).hexdigest()[:12]
    stem = path.name[:-4] if path.name.endswith(".zip") else path.name
    return config.cache_dir() / "omniglot" / f"{stem}_{size}px_{digest}.pt"


def save_atomic(obj, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it into place.

    ``os.replace`` is atomic, so a reader never sees half a file, even when two notebooks
    build the same cache at once or a run is interrupted mid-write.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
        os.chmod(tmp, 0o644)  # mkstemp makes it private (0600); a cache may be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_cached(path: Path) -> dict | None:
    """The dict saved at ``path``, or ``None`` when missing or unreadable (it is then rebuilt)."""
    if not path.is_file():
        return None
    try:
        # weights_only: a cache file is data, never code to run.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None


# ---------------------------------------------------------------------------------------
# Download (only when asked)
# ---------------------------------------------------------------------------------------
@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    # torchvision's urlopen has no timeout: a half-open network would otherwise hang forever.
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _download(source: str, root: str | os.PathLike | None) -> Path:
    if source not in DOWNLOADABLE:
        raise FileNotFoundError(
            f"Omniglot {source!r} cannot be downloaded through torchvision (only {list(DOWNLOADABLE)}). "
            + _not_found_message(source, root)
        )
    dest = Path(root).expanduser() if root is not None else config.cache_dir() / "omniglot"
    try:
        from torchvision.datasets import Omniglot

        with _socket_timeout(_DOWNLOAD_TIMEOUT_S):
            Omniglot(str(dest), background=(source == "background"), download=True)
    except Exception as error:  # URLError, timeouts, bad checksums, ...: all mean "get it by hand"
        raise RuntimeError(
            f"Downloading Omniglot {source!r} failed ({type(error).__name__}: {error}). "
            f"If this machine is offline, fetch {SOURCES[source]}.zip from {OFFICIAL_URL} "
            f"elsewhere, put it in a folder and pass load_omniglot({source!r}, root=FOLDER) "
            f"or set {config.OMNIGLOT_ENV}=FOLDER."
        ) from error
    found = find_omniglot(source, dest)
    if found is None:  # torchvision changed its layout: say so instead of a confusing error later
        raise RuntimeError(f"torchvision reported success but no {SOURCES[source]} is in {dest}")
    return found


# ---------------------------------------------------------------------------------------
# Public loaders
# ---------------------------------------------------------------------------------------
def load_omniglot(
    source: str | os.PathLike = "background",
    root: str | os.PathLike | None = None,
    size: int = 28,
    download: bool = False,
    cache: bool = True,
    verbose: bool = False,
) -> ImageClassDataset:
    """Load one Omniglot set as an :class:`ImageClassDataset` (uint8 ``[M, 1, size, size]``).

    Args:
        source: ``"background"`` (30 alphabets, 964 characters, 19,280 images),
            ``"evaluation"`` (20 alphabets, 659 characters), ``"small1"``/``"small2"`` (the
            authors' small background subsets), ``"all"`` (background + evaluation, for
            :func:`vinyals_split`), or a path to a set folder, a set zip, or a folder holding
            exactly one of them.
        root: a folder to look in before ``$MLCOURSE_OMNIGLOT``, the cache and ``../shared``;
            with ``download=True``, where torchvision puts the files.
        size: output side in pixels (28 is the usual few-shot size; 105 keeps the originals).
        download: fetch ``background``/``evaluation`` through torchvision when not found.
            Never happens otherwise.
        cache: read/write the decoded tensor in ``<cache_dir>/omniglot``.
        verbose: print where the data came from and how long it took.

    Classes are numbered in sorted (alphabet, character) order; ``class_names`` are
    ``"Alphabet/characterNN"`` and ``class_groups`` the alphabet of each class.
    """
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    size = int(size)
    if source == "all":
        parts = [load_omniglot(s, root, size, download, cache, verbose) for s in ("background", "evaluation")]
        return concat(parts, name="omniglot-all")

    explicit = _as_path(source)
    if explicit is not None:
        path = _resolve_explicit(explicit)  # raises a precise error when it is not a set
        name = f"omniglot:{path.name}"
    else:
        path = find_omniglot(source, root)
        if path is None:
            if not download:
                raise FileNotFoundError(_not_found_message(source, root))
            path = _download(source, root)
        name = f"omniglot-{source}"

    start = time.perf_counter()
    cache_path = _cache_file(path, size) if cache else None
    data = load_cached(cache_path) if cache_path is not None else None
    origin = "cache"
    if data is None:
        data = _decode_all(path, size)
        origin = "decoded"
        if cache_path is not None:
            try:
                save_atomic(data, cache_path)
            except OSError as error:  # a read-only cache is no reason to fail the load
                print(f"mlcourse: could not write the Omniglot cache {cache_path}: {error}")
    dataset = ImageClassDataset(
        data["images"], data["targets"], list(data["class_names"]), list(data["class_groups"]), name=name
    )
    if verbose:
        print(f"{dataset} from {path} ({origin}, {time.perf_counter() - start:.2f} s)")
    return dataset


def _check_alphabet_split(train: ImageClassDataset, test: ImageClassDataset) -> None:
    """Refuse a split where any test alphabet (hence any test character) is also in training."""
    shared_groups = set(train.class_groups) & set(test.class_groups)
    shared_classes = set(train.class_names) & set(test.class_names)
    if shared_groups or shared_classes:
        raise ValueError(
            f"alphabet split leaks: alphabets {sorted(shared_groups)[:5]}, "
            f"characters {sorted(shared_classes)[:5]} are in both train and test"
        )


def omniglot_splits(
    size: int = 28,
    rotations: bool = False,
    *,
    root: str | os.PathLike | None = None,
    which: str = "auto",
    download: bool = False,
    cache: bool = True,
) -> tuple[ImageClassDataset, ImageClassDataset]:
    """``(train, test)`` for meta-learning, split by *alphabet* (Lake et al.'s protocol).

    Holding out whole alphabets means a test character shares neither drawer style nor
    script with anything seen in training: the honest measure of learning to learn.

    * ``which="full"``: train = background (964 characters), test = evaluation (659).
    * ``which="small"``: train = ``small1`` (5 alphabets, 136 characters); test = the
      alphabets of ``small2`` that ``small1`` lacks (Japanese_(katakana), Sanskrit, Tagalog:
      106 characters). Greek and Latin are in both subsets, so they are dropped from test.
    * ``which="auto"`` (default): the full release when it is found or ``download=True``,
      else the small subsets, else :class:`FileNotFoundError`.

    With ``rotations=True`` each split gets its rotated copies (90, 180, 270 degrees) as new
    classes *within that split* (:func:`~mlcourse.data.base.with_rotations`), so rotation
    never carries a test character into training.
    """
    if which not in ("auto", "full", "small"):
        raise ValueError(f"which must be 'auto', 'full' or 'small', got {which!r}")
    if which == "auto":
        full = download or all(omniglot_available(s, root) for s in ("background", "evaluation"))
        small = all(omniglot_available(s, root) for s in ("small1", "small2"))
        if not full and not small:
            raise FileNotFoundError(
                "Neither the full Omniglot release nor the small subsets were found.\n"
                + _not_found_message("background", root)
            )
        which = "full" if full else "small"

    if which == "full":
        train = load_omniglot("background", root, size, download, cache)
        test = load_omniglot("evaluation", root, size, download, cache)
    else:
        train = load_omniglot("small1", root, size, cache=cache)
        small2 = load_omniglot("small2", root, size, cache=cache)
        new_alphabets = [g for g in small2.groups if g not in set(train.class_groups)]
        test = small2.subset_groups(new_alphabets, name="omniglot-small2-new-alphabets")
    _check_alphabet_split(train, test)
    if rotations:
        train, test = with_rotations(train), with_rotations(test)
    return train, test


def vinyals_split(
    dataset_all: ImageClassDataset, n_train_classes: int = 1200, seed: int | None = 0
) -> tuple[ImageClassDataset, ImageClassDataset]:
    """The character split of Vinyals et al. (2016): 1,200 characters to train, the rest to test.

    ``dataset_all`` is usually ``load_omniglot("all")`` (background + evaluation, 1,623
    characters, so test gets 423); any dataset works given ``n_train_classes``. Apply
    :func:`~mlcourse.data.base.with_rotations` to each returned part for the usual 4,800
    training classes.

    How the 1,200 are chosen: with ``seed=None``, simply the first ``n_train_classes``
    classes in dataset order. With an int ``seed``, the *alphabets* are shuffled with that
    seed and kept whole, and the first ``n_train_classes`` characters of that order train;
    this mimics the shape of the split files Snell et al. (2017) published, where alphabets
    come in contiguous blocks. It does **not** reproduce those exact lists.

    Be honest about what this measures: it ignores the background/evaluation division, so
    train and test each mix alphabets from both, and the alphabet at the 1,200 boundary is
    cut in two, with some of its characters in training and the rest in test. It tests
    generalisation to new *characters*, partly of familiar scripts, which is easier than the
    alphabet split of :func:`omniglot_splits`. Use it to compare with published numbers.
    """
    n = dataset_all.num_classes
    if not 0 < n_train_classes < n:
        raise ValueError(f"n_train_classes must be in 1..{n - 1}, got {n_train_classes}")
    if seed is None:
        order = list(range(n))
    else:
        groups = dataset_all.groups
        g = torch.Generator().manual_seed(seed)
        shuffled = [groups[i] for i in torch.randperm(len(groups), generator=g).tolist()]
        by_group: dict[str, list[int]] = {grp: [] for grp in groups}
        for c, grp in enumerate(dataset_all.class_groups):
            by_group[grp].append(c)
        order = [c for grp in shuffled for c in by_group[grp]]
    base = dataset_all.name
    train = dataset_all.subset_classes(order[:n_train_classes], name=f"{base}/vinyals-train")
    test = dataset_all.subset_classes(order[n_train_classes:], name=f"{base}/vinyals-test")
    return train, test


__all__ = [
    "SOURCES",
    "find_omniglot",
    "omniglot_available",
    "load_omniglot",
    "omniglot_splits",
    "vinyals_split",
]
