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


LOG_EVERY = 30.0  # seconds between the plain progress lines of progress="log"


def _progress_mode(progress) -> tuple[str, float | None]:
    """``("bar" | "log" | "off", seconds between log lines)`` for a ``progress`` argument."""
    if progress is True or progress == "bar":
        return "bar", None
    if progress is False or progress is None or progress == "off":
        return "off", None
    if progress == "log":
        return "log", None
    if progress == "auto":
        import sys

        stream = sys.stderr
        interactive = getattr(stream, "isatty", lambda: False)() or "ipykernel" in sys.modules
        return ("bar" if interactive else "log"), None
    if isinstance(progress, (int, float)) and not isinstance(progress, bool):
        if not (progress > 0 and math.isfinite(progress)):
            raise ValueError(f"progress={progress!r}: a number means seconds between log lines and must be above 0")
        return "log", float(progress)
    raise ValueError(f"progress={progress!r}: use True (a bar), False, 'log', 'auto' or seconds between log lines")


def _seconds(x: float) -> str:
    return f"{x:.1f}" if x < 10 else f"{x:.0f}"


class _ProgressLog:
    """Plain progress lines on standard error, for output that is not a terminal (a log file,
    a pipe, CI): ``DESC: step 1200/13000, 52 s, loss 0.412`` every ``every`` seconds, after the
    first step, and at the end. The numbers are the means over the steps since the last line."""

    def __init__(self, desc: str, steps: int, every: float, time_budget: float | None, start: float):
        self.desc, self.steps, self.every, self.time_budget, self.start = desc, steps, every, time_budget, start
        self.last_line = None  # time of the last line; None until the first step has been shown
        self.done = 0
        self.sums: dict[str, float] = {}
        self.count = 0
        self.means: dict[str, float] = {}  # those of the last line, for a final line that follows at once

    def update(self, metrics: Mapping[str, float], last: bool = False) -> None:
        self.done += 1
        self.count += 1
        for name, value in metrics.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        now = time.perf_counter()
        if not last and (self.last_line is None or now - self.last_line >= self.every):
            self.emit(now)  # (the last step gets the final line from close())

    def emit(self, now: float, note: str = "") -> None:
        import sys

        elapsed = now - self.start
        clock = f"{_seconds(elapsed)} s" if self.time_budget is None else f"{_seconds(elapsed)} of {_seconds(self.time_budget)} s"
        parts = [f"{self.desc}: step {self.done}/{self.steps}", clock]
        if self.count:
            self.means = {n: total / self.count for n, total in self.sums.items()}
        # "loss" first, the way a reader looks for it, then the rest in the order step() returned them
        parts += [f"{n} {v:.4g}" for n, v in sorted(self.means.items(), key=lambda item: item[0] != "loss")]
        print(", ".join(parts) + note, file=sys.stderr, flush=True)
        self.last_line, self.sums, self.count = now, {}, 0

    def close(self, stopped_by_budget: bool) -> None:
        note = " (done: time budget reached)" if stopped_by_budget else " (done)"
        self.emit(time.perf_counter(), note)


def train_loop(
    step: Callable[[int], Mapping[str, float]],
    steps: int,
    *,
    time_budget: float | None = None,
    history: History | None = None,
    desc: str = "training",
    progress: bool | str | float = True,
    postfix_every: int = 10,
    log_every: float | None = None,
) -> History:
    """Call ``step(i)`` for ``i = 0..steps-1`` (or until ``time_budget`` seconds pass).

    Every value ``step`` returns is logged. A non-finite value of ``"loss"`` stops training
    with a ``FloatingPointError`` that names the step, instead of silently training on NaNs.

    ``progress`` chooses what the learner sees while it runs:

    ``True`` (or ``"bar"``)
        a ``tqdm.auto`` progress bar (a widget in Jupyter, text in a terminal);
    ``"log"``
        plain lines on standard error, for output that is not a terminal (a log file, a
        pipe, CI, a benchmark whose stdout holds JSON)::

            meta-train ProtoNet: step 1200/13000, 52 s, loss 0.412, acc 0.875

        after the first step, then every ``log_every`` seconds (default ``LOG_EVERY``, 30),
        and once at the end; each line shows the mean of every metric over the steps since
        the previous line, and ``52 of 600 s`` when there is a time budget;
    a number
        ``"log"`` with that many seconds between lines (so callers that only forward
        ``progress`` can choose the interval);
    ``"auto"``
        the bar when standard error is a terminal or a Jupyter kernel runs, ``"log"`` otherwise;
    ``False``
        nothing.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    mode, every = _progress_mode(progress)
    if log_every is not None:
        if not (log_every > 0 and math.isfinite(log_every)):
            raise ValueError(f"log_every must be a number of seconds above 0, got {log_every!r}")
        every = float(log_every)
    history = history or History()
    start = time.perf_counter()
    first = max((s for ss in history.steps.values() for s in ss), default=-1) + 1
    bar = tqdm(range(first, first + steps), desc=desc, disable=mode != "bar", leave=False)
    log = _ProgressLog(desc, steps, every or LOG_EVERY, time_budget, start) if mode == "log" else None
    stopped_by_budget = False
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
            if mode == "bar" and i % postfix_every == 0:
                bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)
            if log is not None:
                log.update(metrics, last=i == first + steps - 1)
            if time_budget is not None and time.perf_counter() - start >= time_budget:
                stopped_by_budget = i < first + steps - 1
                break
        if log is not None:
            log.close(stopped_by_budget)
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
