"""A small training loop: progress bar, history for plots, budgets, atomic checkpoints.

Methods in the course write one function, ``step(i) -> {"loss": ..., ...}``, that performs
one optimisation step and returns numbers to record. :func:`train_loop` runs it for a
number of steps or a time budget, shows a ``tqdm.auto`` progress bar (a widget in Jupyter,
text in a terminal), stops with a clear error if the loss stops being a finite number, and
returns a :class:`History` ready to plot.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import torch
from tqdm.auto import tqdm


@dataclass
class History:
    """Recorded metrics: ``history["loss"]`` is a list of values, ``history.steps["loss"]``
    the steps at which they were recorded."""

    values: dict[str, list[float]] = field(default_factory=dict)
    steps: dict[str, list[int]] = field(default_factory=dict)
    seconds: float = 0.0

    def log(self, step: int, **metrics: float) -> None:
        for name, value in metrics.items():
            self.values.setdefault(name, []).append(float(value))
            self.steps.setdefault(name, []).append(int(step))

    def __getitem__(self, name: str) -> list[float]:
        return self.values[name]

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def last(self, name: str, n: int = 1) -> float:
        """Mean of the last ``n`` recorded values of ``name``."""
        vals = self.values[name][-n:]
        return sum(vals) / len(vals)

    def state_dict(self) -> dict:
        return {"values": self.values, "steps": self.steps, "seconds": self.seconds}

    @classmethod
    def from_state_dict(cls, state: Mapping) -> "History":
        return cls(dict(state["values"]), dict(state["steps"]), float(state.get("seconds", 0.0)))


def train_loop(
    step: Callable[[int], Mapping[str, float]],
    steps: int,
    *,
    time_budget: float | None = None,
    history: History | None = None,
    desc: str = "training",
    progress: bool = True,
    postfix_every: int = 10,
) -> History:
    """Call ``step(i)`` for ``i = 0..steps-1`` (or until ``time_budget`` seconds pass).

    Every value ``step`` returns is logged. A non-finite value of ``"loss"`` stops training
    with a ``FloatingPointError`` that names the step, instead of silently training on NaNs.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    history = history or History()
    start = time.perf_counter()
    first = max((s for ss in history.steps.values() for s in ss), default=-1) + 1
    bar = tqdm(range(first, first + steps), desc=desc, disable=not progress, leave=False)
    try:
        for i in bar:
            metrics = {k: float(v) for k, v in step(i).items()}
            for name, value in metrics.items():
                if not math.isfinite(value):
                    raise FloatingPointError(
                        f"{desc}: {name} became {value} at step {i}; lower the learning rate, "
                        "check the loss for log(0) or a division by zero, or clip gradients"
                    )
            history.log(i, **metrics)
            if progress and i % postfix_every == 0:
                bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)
            if time_budget is not None and time.perf_counter() - start >= time_budget:
                break
    finally:
        bar.close()
        history.seconds += time.perf_counter() - start
    return history


def save_checkpoint(path: str | os.PathLike, state: Mapping) -> Path:
    """Write ``state`` with ``torch.save`` atomically: a crash mid-write never leaves a
    truncated file under ``path`` (we write a temporary file beside it, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location=map_location, weights_only=False)
