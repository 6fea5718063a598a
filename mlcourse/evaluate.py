"""Accuracy over many test episodes, with a 95% confidence interval, and paired comparisons.

A few-shot result is a mean over random episodes, so it comes with sampling noise. The
field's convention (Vinyals et al., 2016; Snell et al., 2017; Finn et al., 2017) is to report
``mean ± 1.96 * std / sqrt(E)`` over ``E`` episodes (usually 600 or more): the half-width of a
normal-approximation 95% interval for the mean episode accuracy.

Comparing two methods is a different question, and two such intervals do not answer it.
Evaluated on the *same* episodes (same dataset, way, shot, queries and seed), the two
accuracies of one episode move together: an easy episode is easy for both. :func:`compare`
takes the per-episode differences, whose spread is much smaller than either method's, and
reports their mean with its own 95% interval and a sign-flip permutation p-value. Two
intervals that overlap can still hide a clear paired difference; intervals that do not
overlap do mean a difference, but the paired interval says how large it is.

``python -m mlcourse.evaluate A.json B.json`` compares two ``mlcourse.bench --json`` results.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
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
    # Which episodes were scored: a digest of the dataset's class names and of every episode's
    # classes and images (see episodes_fingerprint). Equal fingerprints = a valid pairing.
    fingerprint: str = ""

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
            "fingerprint": self.fingerprint,
            "episode_accuracies": list(self.accuracies),
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
    digest = _fingerprint_start(dataset, n_way, k_shot, q_query)
    start = time.perf_counter()
    bar = tqdm(range(episodes), desc=desc or f"{n_way}-way {k_shot}-shot", disable=not progress, leave=False)
    for i in bar:
        ep = stream[i]
        _fingerprint_add(digest, ep)
        if device is not None:
            ep = ep.to(device)
        with torch.no_grad() if not getattr(predict, "needs_grad", False) else torch.enable_grad():
            scores = predict(ep.support_x, ep.support_y, ep.query_x)
        accs.append(episode_accuracy(scores, ep.query_y))
        if progress and i % 20 == 0:
            bar.set_postfix(acc=f"{sum(accs) / len(accs):.3f}", refresh=False)
    bar.close()
    mean, ci = mean_confidence_interval(accs)
    return AccuracyResult(mean, ci, accs, n_way, k_shot, q_query, time.perf_counter() - start, digest.hexdigest()[:16])


def _fingerprint_start(dataset, n_way: int, k_shot: int, q_query: int):
    digest = hashlib.sha256(f"{n_way}-{k_shot}-{q_query}".encode())
    for name in getattr(dataset, "class_names", []):
        digest.update(name.encode() + b"\0")
    return digest


def _fingerprint_add(digest, episode) -> None:
    # The classes and the images themselves (as bytes) identify an episode; a checksum of the
    # pixels is enough to tell two different draws apart and cheap next to a forward pass.
    digest.update(episode.classes.numpy().tobytes())
    digest.update(episode.support_x.sum(dim=(1, 2, 3)).numpy().tobytes())
    digest.update(episode.query_x.sum(dim=(1, 2, 3)).numpy().tobytes())


def episodes_fingerprint(dataset, n_way: int, k_shot: int, q_query: int, episodes: int, seed: int) -> str:
    """The fingerprint :func:`evaluate` records for these episodes, without running a model."""
    digest = _fingerprint_start(dataset, n_way, k_shot, q_query)
    stream = EpisodeDataset(dataset, n_way, k_shot, q_query, episodes, seed)
    for i in range(episodes):
        _fingerprint_add(digest, stream[i])
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------
# Paired comparison of two methods on the same episodes
# ---------------------------------------------------------------------------------------
@dataclass
class PairedComparison:
    """``a - b`` on the same episodes: mean difference (a fraction), its 95% half-width, the
    two-sided sign-flip p-value, and how many episodes each method won."""

    difference: float
    ci95: float
    p_value: float
    episodes: int
    wins: int  # episodes where a scored higher than b
    losses: int
    ties: int
    names: tuple[str, str] = ("A", "B")

    @property
    def low(self) -> float:
        return self.difference - self.ci95

    @property
    def high(self) -> float:
        return self.difference + self.ci95

    @property
    def significant(self) -> bool:
        """Whether the 95% interval of the difference excludes zero."""
        return self.low > 0 or self.high < 0

    def verdict(self) -> str:
        """One sentence a chapter can print: who is ahead, by how much, and whether it is clear."""
        a, b = self.names
        if not self.significant:
            return (
                f"{a} and {b} cannot be told apart on these {self.episodes} episodes: {self}"
            )
        better, worse = (a, b) if self.difference > 0 else (b, a)
        return f"{better} beats {worse} on the same {self.episodes} episodes: {self}"

    def __str__(self) -> str:
        a, b = self.names
        p = f"p < {1 / 10_000:g}" if self.p_value < 1e-4 else f"p = {self.p_value:.3g}"
        return (
            f"{a} − {b} = {100 * self.difference:+.2f} ± {100 * self.ci95:.2f} points "
            f"(95% CI of the paired difference; sign-flip {p}; {a} higher in {self.wins}, "
            f"lower in {self.losses}, tied in {self.ties} of {self.episodes} episodes)"
        )

    def as_dict(self) -> dict:
        return {
            "a": self.names[0], "b": self.names[1], "difference": self.difference, "ci95": self.ci95,
            "p_value": self.p_value, "episodes": self.episodes, "wins": self.wins, "losses": self.losses,
            "ties": self.ties,
        }  # fmt: skip


def _accuracies(x) -> tuple[torch.Tensor, str]:
    if isinstance(x, AccuracyResult):
        return torch.as_tensor(x.accuracies, dtype=torch.float64), x.fingerprint
    if isinstance(x, dict):  # a bench --json result, or AccuracyResult.as_dict()
        if "episode_accuracies" not in x:
            raise ValueError("compare: this result has no per-episode accuracies ('episode_accuracies')")
        return torch.as_tensor(x["episode_accuracies"], dtype=torch.float64), x.get("fingerprint", "")
    return torch.as_tensor(x, dtype=torch.float64).flatten(), ""


def sign_flip_p_value(differences: torch.Tensor, permutations: int = 10_000, seed: int = 0) -> float:
    """Two-sided p-value of "mean difference is 0" by random sign flips (a paired permutation test).

    Under the null hypothesis the two methods are exchangeable on every episode, so each
    difference is as likely to have the opposite sign. We flip signs at random ``permutations``
    times and count how often the mean is at least as far from 0 as the observed one (with the
    observed one counted, so p is never 0). Exact for small n would be 2**n flips; random flips
    estimate it.
    """
    d = torch.as_tensor(differences, dtype=torch.float64).flatten()
    observed = d.mean().abs()
    if observed == 0:
        return 1.0
    g = torch.Generator().manual_seed(seed)
    hits = 0
    for start in range(0, permutations, 1000):  # chunks bound memory for long episode lists
        rows = min(1000, permutations - start)
        signs = torch.randint(0, 2, (rows, d.numel()), generator=g, dtype=torch.float64) * 2 - 1
        hits += int(((signs * d).mean(dim=1).abs() >= observed - 1e-12).sum())
    return (hits + 1) / (permutations + 1)


def compare(a, b, names: tuple[str, str] = ("A", "B"), permutations: int = 10_000, seed: int = 0, z: float = Z95) -> PairedComparison:
    """Paired difference ``a - b`` of two evaluations on the same episodes.

    ``a`` and ``b`` are :class:`AccuracyResult` objects, ``mlcourse.bench --json`` results (dicts
    with ``episode_accuracies``) or plain sequences of per-episode accuracies in the same episode
    order. When both carry an episode fingerprint, they must match: a paired comparison of
    different episodes would be meaningless, so it raises ``ValueError``.
    """
    x, fa = _accuracies(a)
    y, fb = _accuracies(b)
    if x.numel() != y.numel():
        raise ValueError(f"compare: {x.numel()} episodes against {y.numel()}: a paired comparison needs the same episodes")
    if x.numel() < 2:
        raise ValueError("compare: at least two episodes are needed")
    if fa and fb and fa != fb:
        raise ValueError(
            f"compare: the two results were scored on different episodes (fingerprints {fa} and {fb}): "
            "evaluate both on the same data, way, shot, queries, episodes and seed"
        )
    d = x - y
    mean, half = mean_confidence_interval(d, z=z)
    return PairedComparison(
        difference=mean,
        ci95=0.0 if math.isnan(half) else half,
        p_value=sign_flip_p_value(d, permutations, seed),
        episodes=d.numel(),
        wins=int((d > 0).sum()),
        losses=int((d < 0).sum()),
        ties=int((d == 0).sum()),
        names=tuple(names),  # type: ignore[arg-type]
    )


def main(argv: list[str] | None = None) -> dict:
    """``python -m mlcourse.evaluate A.json B.json [--json]``: the paired difference of two bench runs."""
    from .cli import ArgumentParser, fail

    parser = ArgumentParser(prog="python -m mlcourse.evaluate", description="Paired difference of two `mlcourse.bench --json` results on the same episodes.")
    parser.add_argument("a", help="JSON file of method A (the output of python -m mlcourse.bench ... --json)")
    parser.add_argument("b", help="JSON file of method B")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    results = []
    for name, path in (("a", args.a), ("b", args.b)):
        try:
            with open(path) as f:
                results.append(json.load(f))
        except (OSError, ValueError) as error:
            fail(parser.prog, f"{name} {path}: must be a readable JSON file from mlcourse.bench --json ({error})")
        if "episode_accuracies" not in results[-1]:
            fail(parser.prog, f"{name} {path}: must hold 'episode_accuracies' (rerun mlcourse.bench with --json)")
    label = [f"{r.get('method', '?')}" for r in results]
    if label[0] == label[1]:
        label = [f"{label[0]} ({p})" for p in (args.a, args.b)]
    try:
        result = compare(results[0], results[1], names=tuple(label))
    except ValueError as error:
        fail(parser.prog, str(error))
    print(json.dumps(result.as_dict()) if args.json else result.verdict())
    return result.as_dict()


if __name__ == "__main__":
    main(sys.argv[1:])
