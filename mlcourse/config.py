"""Run-time configuration: fast mode, device choice, seeding and cache folders.

Fast mode
---------
Set the environment variable ``MLCOURSE_FAST=1`` to shrink every training run so that each
notebook finishes in about a minute on two CPU cores (this is what the tests and CI use).
Leave it unset (or ``0``) to train for real. Code chooses its sizes with :func:`pick`::

    steps = pick(fast=50, full=5000)
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

FAST_ENV = "MLCOURSE_FAST"
CACHE_ENV = "MLCOURSE_CACHE"
OMNIGLOT_ENV = "MLCOURSE_OMNIGLOT"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def fast_mode() -> bool:
    """True when ``MLCOURSE_FAST`` asks for the shrunken, test-sized runs."""
    value = os.environ.get(FAST_ENV, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{FAST_ENV}={value!r}: use 1/true/yes/on or 0/false/no/off")


FAST = fast_mode()


def pick(fast, full):
    """Return ``fast`` in fast mode, ``full`` otherwise (read at call time)."""
    return fast if fast_mode() else full


def get_device(prefer: str | None = None) -> torch.device:
    """CUDA when present, else Apple MPS, else CPU. ``prefer`` (or ``MLCOURSE_DEVICE``) overrides."""
    prefer = prefer or os.environ.get("MLCOURSE_DEVICE")
    if prefer:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def device_info(device: torch.device | None = None) -> str:
    """One line a chapter prints at the top: device, torch version, threads and mode."""
    device = device or get_device()
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif device.type == "mps":
        name = "Apple GPU (MPS)"
    else:
        name = f"CPU, {torch.get_num_threads()} threads"
    mode = "FAST (MLCOURSE_FAST=1)" if fast_mode() else "full"
    return f"device: {device} ({name}) | torch {torch.__version__} | mode: {mode}"


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a fresh generator with that seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)


def cache_dir() -> Path:
    """Where built datasets and checkpoints live: ``$MLCOURSE_CACHE`` or ``~/.cache/mlcourse``."""
    root = os.environ.get(CACHE_ENV)
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "mlcourse"
    path.mkdir(parents=True, exist_ok=True)
    return path


def repo_root() -> Path:
    """The checkout this package lives in (meaningful for the editable install the course uses)."""
    return Path(__file__).resolve().parents[1]


def shared_dir() -> Path | None:
    """``../shared`` beside the checkout, when present (development and CI only)."""
    path = repo_root().parent / "shared"
    return path if path.is_dir() else None
