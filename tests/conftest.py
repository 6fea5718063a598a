"""Shared test set-up: fast mode, a private cache folder, and small synthetic datasets."""

from __future__ import annotations

import os

import pytest
import torch

# Tests always run in fast mode and never touch the user's cache (set before mlcourse loads).
os.environ.setdefault("MLCOURSE_FAST", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

from mlcourse.config import shared_dir  # noqa: E402
from mlcourse.data.base import ImageClassDataset  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    if shared_dir() is not None and (shared_dir() / "data" / "omniglot").is_dir():
        return
    skip = pytest.mark.skip(reason="real Omniglot subsets not found in ../shared/data/omniglot")
    for item in items:
        if "shared_data" in item.keywords:
            item.add_marker(skip)


def toy_dataset(num_classes=10, per_class=20, size=8, groups=2, seed=0, sizes=None) -> ImageClassDataset:
    """A dataset whose every image encodes its class and example index, for exact checks:
    pixel (0, 0) holds the class id and pixel (0, 1) the example number."""
    g = torch.Generator().manual_seed(seed)
    sizes = sizes or [per_class] * num_classes
    images, targets = [], []
    for c, n in enumerate(sizes):
        x = torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8)
        x[:, 0, 0, 0] = c
        x[:, 0, 0, 1] = torch.arange(n, dtype=torch.uint8)
        images.append(x)
        targets += [c] * n
    return ImageClassDataset(
        torch.cat(images),
        torch.tensor(targets),
        [f"class{c}" for c in range(len(sizes))],
        [f"group{c % groups}" for c in range(len(sizes))],
        name="toy",
    )


@pytest.fixture
def toy():
    return toy_dataset()


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    cache = os.environ.get("MLCOURSE_TEST_CACHE") or str(tmp_path_factory.getbasetemp() / "mlcourse-cache")
    monkeypatch.setenv("MLCOURSE_CACHE", cache)


def load_benchmark(name: str):
    """The script ``benchmarks/NAME.py`` imported as a module (the benchmarks are scripts, not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
