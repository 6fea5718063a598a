"""Tests of mlcourse.data.digits: scikit-learn's bundled digits, and MNIST without a network."""

from __future__ import annotations

import socket
import struct
import time
import urllib.error

import numpy as np
import pytest
import torch

from mlcourse import config
from mlcourse.data import digits
from mlcourse.data.digits import load_digits, load_mnist, resize_uint8


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("MLCOURSE_CACHE", str(tmp_path / "cache"))
    return tmp_path


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the network was touched")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_load_digits(isolated, no_network):
    ds = load_digits()
    assert len(ds) == 1797 and ds.num_classes == 10
    assert ds.images.shape == (1797, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.class_names == [str(d) for d in range(10)]
    assert ds.class_groups == ["digits"] * 10
    assert ds.class_sizes().min() >= 170  # about 180 of each digit
    # Bright strokes on a dark background: the corners are empty paper, the ink reaches 255.
    assert ds.images[:, :, :2, :2].float().mean() < 5
    assert ds.images.float().mean() < 100
    assert ds.images.max() == 255


def test_digits_sizes_and_cache(isolated):
    small = load_digits(size=16)
    assert small.image_shape == (1, 16, 16)
    assert list((config.cache_dir() / "digits").glob("*16px*.pt"))
    again = load_digits(size=16)
    assert torch.equal(small.images, again.images) and torch.equal(small.targets, again.targets)
    assert torch.equal(small.images, load_digits(size=16, cache=False).images)
    with pytest.raises(ValueError):
        load_digits(size=0)


def test_resize_uint8_keeps_range():
    x = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
    x[:, :, 2:6, 3:5] = 255
    y = resize_uint8(x, 28)
    assert y.dtype == torch.uint8 and y.shape == (2, 1, 28, 28)
    assert y.max() == 255 and y[:, :, 0, 0].max() == 0
    assert torch.equal(resize_uint8(x, 8), x)


def test_mnist_missing_offline_is_clear_and_fast(isolated, no_network, monkeypatch):
    import torchvision.datasets  # noqa: F401  (imported before timing)

    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(download=False)
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert str(config.cache_dir() / "mnist") in message and "root=" in message and "download=True" in message


def test_mnist_failed_download_is_clear(isolated, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="offline") as info:
        load_mnist(download=True)
    assert time.perf_counter() - start < 5
    assert "root=" in str(info.value)


def _write_idx(path, array: np.ndarray) -> None:
    """MNIST's IDX format: magic (0, 0, type 0x08 = uint8, ndim), big-endian sizes, raw bytes."""
    with open(path, "wb") as fh:
        fh.write(struct.pack(">BBBB", 0, 0, 0x08, array.ndim))
        fh.write(struct.pack(f">{array.ndim}I", *array.shape))
        fh.write(array.astype(np.uint8).tobytes())


def test_mnist_from_local_files(tmp_path, no_network):
    # A tiny fake MNIST in torchvision's layout: the loading path, without the real files.
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 6), ("t10k", 4)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    train = load_mnist(root=tmp_path)
    assert train.images.shape == (6, 1, 28, 28) and train.targets.tolist() == list(range(6))
    assert train.class_groups == ["mnist"] * 10 and train.name == "mnist-train"
    test = load_mnist(root=tmp_path, train=False, size=14)
    assert test.images.shape == (4, 1, 14, 14) and test.images.dtype == torch.uint8


def test_digits_module_imports_nothing_heavy_at_import():
    # sklearn and torchvision are imported inside the loaders, not when the module loads.
    assert "sklearn" not in vars(digits) and "MNIST" not in vars(digits)
