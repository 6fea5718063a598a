"""Accuracy over many test episodes, with a 95% confidence interval.

A few-shot result is a mean over random episodes, so it comes with sampling noise. The
field's convention (Vinyals et al., 2016; Snell et al., 2017; Finn et al., 2017) is to report
``mean ± 1.96 * std / sqrt(E)`` over ``E`` episodes (usually 600 or more): the half-width of a
normal-approximation 95% interval for the mean episode accuracy.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from .data.episodes import EpisodeDataset

Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal


def mean_confidence_interval(values: Sequence[float] | torch.Tensor, z: float = Z95) -> tuple[float, float]:
    """``(mean, half_width)`` of the normal-approximation interval ``mean ± z * s / sqrt(n)``.

    ``s`` is the sample standard deviation (dividing by ``n - 1``). One value gives a
    half-width of ``nan``: a single episode says nothing about the spread.
    """
    x = torch.as_tensor(values, dtype=torch.float64).flatten()
    n = x.numel()
    if n == 0:
        raise ValueError("mean_confidence_interval: no values")
    mean = float(x.mean())
    if n == 1:
        return mean, float("nan")
    return mean, float(z * x.std(unbiased=True) / math.sqrt(n))


@dataclass
class AccuracyResult:
    """Mean episode accuracy (a fraction), its 95% half-width, and the per-episode values."""

    mean: float
    ci95: float
    accuracies: list[float] = field(repr=False)
    n_way: int = 0
    k_shot: int = 0
    q_query: int = 0
    seconds: float = 0.0

    @property
    def episodes(self) -> int:
        return len(self.accuracies)

    def __str__(self) -> str:
        return (
            f"{100 * self.mean:.2f}% ± {100 * self.ci95:.2f}% "
            f"({self.n_way}-way {self.k_shot}-shot, {self.episodes} episodes)"
        )

    def as_dict(self) -> dict:
        return {
            "accuracy": self.mean,
            "ci95": self.ci95,
            "episodes": self.episodes,
            "n_way": self.n_way,
            "k_shot": self.k_shot,
            "q_query": self.q_query,
            "seconds": self.seconds,
        }


Predictor = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def episode_accuracy(scores: torch.Tensor, query_y: torch.Tensor) -> float:
    """Fraction of queries whose highest score is the true label (``scores`` is ``[Q, N]``)
    or whose predicted label equals it (``scores`` is ``[Q]``)."""
    predicted = scores.argmax(dim=-1) if scores.dim() == 2 else scores
    if predicted.shape != query_y.shape:
        raise ValueError(f"predictions of shape {tuple(predicted.shape)} for labels {tuple(query_y.shape)}")
    return (predicted.to(query_y.device) == query_y).float().mean().item()


def evaluate(
    predict: Predictor,
    dataset,
    n_way: int = 5,
    k_shot: int = 1,
    q_query: int = 15,
    episodes: int = 600,
    seed: int = 12345,
    device: torch.device | str | None = None,
    progress: bool = True,
    desc: str | None = None,
) -> AccuracyResult:
    """Accuracy of ``predict(support_x, support_y, query_x) -> scores [N*Q, N]`` over episodes.

    The episodes depend only on ``seed``, so two methods evaluated with the same seed see
    exactly the same tasks, which makes their comparison paired and fairer.
    """
    stream = EpisodeDataset(dataset, n_way, k_shot, q_query, episodes, seed)
    device = torch.device(device) if device is not None else None
    accs = []
    start = time.perf_counter()
    bar = tqdm(range(episodes), desc=desc or f"{n_way}-way {k_shot}-shot", disable=not progress, leave=False)
    for i in bar:
        ep = stream[i]
        if device is not None:
            ep = ep.to(device)
        with torch.no_grad() if not getattr(predict, "needs_grad", False) else torch.enable_grad():
            scores = predict(ep.support_x, ep.support_y, ep.query_x)
        accs.append(episode_accuracy(scores, ep.query_y))
        if progress and i % 20 == 0:
            bar.set_postfix(acc=f"{sum(accs) / len(accs):.3f}", refresh=False)
    bar.close()
    mean, ci = mean_confidence_interval(accs)
    return AccuracyResult(mean, ci, accs, n_way, k_shot, q_query, time.perf_counter() - start)
