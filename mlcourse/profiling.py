"""Measuring cost in a notebook: wall time of a call, and memory of the autograd graph.

:func:`saved_for_backward` counts the bytes of the tensors autograd *saves for the backward
pass* while a function runs. That is the memory a training step holds on to between its
forward and backward passes, the part that grows with second-order MAML's longer graph. It is
measured the same way on CPU and GPU (no allocator statistics needed) and does not depend on
what else the machine is doing. Each distinct piece of memory is counted once.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch


@dataclass
class SavedTensors:
    bytes: int = 0
    tensors: int = 0

    @property
    def megabytes(self) -> float:
        return self.bytes / 2**20


@contextmanager
def saved_for_backward():
    """``with saved_for_backward() as saved: ...`` then read ``saved.bytes``."""
    stats = SavedTensors()
    seen: set[tuple] = set()

    def pack(t: torch.Tensor):
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
        if key not in seen:
            seen.add(key)
            stats.bytes += t.numel() * t.element_size()
            stats.tensors += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield stats


def time_call(fn, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs (after ``warmup`` runs)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
