"""Measuring cost in a notebook: wall time of a call, and the peak memory it adds.

:func:`peak_memory_bytes` (and :func:`peak_memory_mb`) runs a function once and reports the
largest amount of memory in use *on top of what was in use before the call*, at any moment
during it: what the call needs to have free. For a training step that is the activations of
the forward pass, the graph autograd keeps for the backward pass and the gradients, at the
moment they all coexist; second-order MAML keeps more of them for longer. How it is measured:

* on a CUDA device, with the caching allocator's statistics:
  ``torch.cuda.max_memory_allocated`` after ``torch.cuda.reset_peak_memory_stats``, minus
  ``torch.cuda.memory_allocated`` before the call (tensor memory, not the allocator's
  cache). This resets the device's peak statistics: do not nest it in another peak
  measurement of the same device;
* on the CPU, with the PyTorch profiler (``profile_memory=True``): it records every
  allocation and free of a tensor made during the call, in time order, and the peak of their
  running sum is the peak extra memory. The profiler does not see the free of a tensor
  allocated before the call, so there it is the peak of what the call itself allocated and
  still held, never less than zero. (``tracemalloc`` does not see PyTorch's allocations, and
  the process RSS rarely goes down, so neither would do.)

Either way only PyTorch tensors count: Python objects and the allocator's own overhead do
not. Only the memory of ``device`` is counted (a call on the GPU allocates little on the CPU).
"""

from __future__ import annotations

import math
import statistics
import time

import torch


def _device(device) -> torch.device:
    device = torch.device("cpu" if device is None else device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def peak_memory_bytes(fn, device: torch.device | str | None = None) -> int:
    """The peak memory ``fn()`` allocates on ``device`` (default the CPU) beyond what was
    allocated before the call, in bytes. See the module notes for how it is measured.

    Raises ``RuntimeError`` if this version of PyTorch's profiler does not expose its memory
    events (CPU only).
    """
    device = _device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    if device.type != "cpu":
        raise ValueError(f"peak memory is measured on 'cpu' or 'cuda' devices, not {device.type!r}")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    try:
        # every allocation (nbytes > 0) and free (< 0) of a tensor, in time order
        events = sorted(
            (e.start_ns(), e.nbytes())
            for e in prof.profiler.kineto_results.events()
            if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
        )
    except AttributeError as error:  # profiler internals changed
        raise RuntimeError(f"cannot read the profiler's memory events on torch {torch.__version__}: {error}") from error
    running = peak = 0
    for _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
    return peak


def peak_memory_mb(fn, device: torch.device | str | None = None) -> float:
    """:func:`peak_memory_bytes` in MiB (``2**20`` bytes), or NaN where it cannot be measured
    (a profiler without memory events) rather than an error: for tables of results."""
    try:
        return peak_memory_bytes(fn, device) / 2**20
    except RuntimeError:
        return math.nan


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
