"""Chapter 10's pictures and the one measurement behind them: conditional NLL by support size.

* :func:`nll_by_shots`: how many nats a held-out drawing costs once the model has seen ``s``
  drawings of its character, for ``s`` in ``(0, 1, 2, 4, 9)``; measured exactly as the
  generation benchmark measures it (:mod:`mlcourse.genbench`: the same characters for every
  ``s``, nested support sets, the same binarisation and seeds), so a learner's curve and a
  committed run's are the same quantity; with a progress bar.
* :func:`reference_curves`: the committed full-mode runs of some methods
  (:func:`mlcourse.genbench.reference_runs`), and one line for each method whose run is not
  there, so that a chapter keeps running before the runs are committed.
* :func:`plot_nll_by_shots`: NLL against the number of conditioning drawings, one line per
  curve, with 95% intervals over characters.
* :func:`show_conditional_samples`: for each character, its support drawings, a gap, then
  what a model drew from them.
* :func:`describe_run`: one paragraph of a committed run's numbers, read from its JSON, so
  that the prose of a chapter never has to copy a number that a rerun would change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch

from ..viz import show_images

NLL_SHOTS = (0, 1, 2, 4, 9)

#: how each method is named in the chapters' legends
METHOD_LABELS = {
    "statistician": "Neural Statistician",
    "vae": "VAE (chapter 08, ignores the support set)",
    "reptile-vae": "Reptile-VAE (adapted by gradient steps)",
}


def choose_characters(dataset, n: int, largest_shots: int = max(NLL_SHOTS), seed: int = 12345) -> list[int]:
    """``n`` classes of ``dataset`` with at least ``largest_shots + 2`` drawings, chosen under ``seed``
    (sorted): the support, and at least two drawings to score."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    need = largest_shots + 2
    eligible = torch.nonzero(dataset.class_sizes() >= need).flatten()
    if n > len(eligible):
        raise ValueError(f"{dataset.name!r} has {len(eligible)} classes with at least {need} drawings; asked for {n}")
    order = eligible[torch.randperm(len(eligible), generator=torch.Generator().manual_seed(seed))]
    return sorted(order[:n].tolist())


def nll_by_shots(model, dataset, classes: Sequence[int], shots: Sequence[int] = NLL_SHOTS, k: int = 100, seed: int = 12345,
                 progress: bool = True) -> dict[str, dict]:  # fmt: skip
    """Mean conditional NLL (nats per drawing) of each character's held-out drawings given ``s`` support drawings.

    ``model`` has ``conditional_log_likelihood(x, support, k=..., seed=...)`` (the Neural
    Statistician, Reptile-VAE and the VAE rows do). For each class of ``classes`` the
    ``max(shots)`` support drawings are drawn under ``seed``; the support of size ``s`` is their
    first ``s`` (nested sets) and the drawings scored are the rest, the same ones for every
    ``s`` (so the curve is paired character by character). Images are binarised once, with
    seeds derived from ``seed``. The result has the shape of a benchmark JSON's
    ``"nll_by_shots"``: ``{"0": {"mean", "ci95", "per_character"}, "1": ...}``; it *is* the
    benchmark's number for the same arguments (a test holds it to that).
    """
    from ..evaluate import mean_confidence_interval
    from ..generative.vae import binarize_fixed
    from .common import character_sets

    shots = sorted({int(s) for s in shots})
    if not shots or shots[0] < 0:
        raise ValueError(f"shots must be support sizes >= 0, got {shots}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    from tqdm.auto import tqdm

    largest = max(shots)
    per_size: dict[int, list[float]] = {s: [] for s in shots}
    sets = character_sets(dataset, max(largest, 1), classes=list(classes), seed=seed)
    for i, (support, rest) in enumerate(tqdm(sets, desc="conditional NLL", disable=not progress, leave=False)):
        x = binarize_fixed(rest, "dynamic", seed=seed + i)
        for s in shots:
            d = binarize_fixed(support[:s], "dynamic", seed=seed + i) if s else support[:0]
            nll = -model.conditional_log_likelihood(x, d, k=k, seed=seed + i)
            per_size[s].append(float(nll.mean()))
    out = {}
    for s, values in per_size.items():
        mean, half = mean_confidence_interval(values)
        out[str(s)] = {"mean": mean, "ci95": half, "per_character": values}
    return out


def reference_curves(data: str, methods: Sequence[str] = tuple(METHOD_LABELS), split: str = "test",
                     folder=None) -> tuple[dict[str, dict], list[str]]:  # fmt: skip
    """``(runs, missing)``: the committed runs of ``methods`` on ``data`` (by method), and one
    line for each method whose run is not there (or holds no ``nll_by_shots``).

    Never raises for a missing run: a chapter prints ``missing`` and goes on.
    """
    from ..genbench import reference_runs

    try:
        found = reference_runs(data, split, folder=folder)
    except FileNotFoundError:
        found = {}
    runs, missing = {}, []
    for m in methods:
        run = found.get(m)
        if run is None:
            missing.append(f"the committed run of {m!r} on {data}/{split} is missing (docs/runs/genbench/{data}/"
                           f"{m}-{data}-{split}.json is not there yet): nothing to show for it")  # fmt: skip
        elif "nll_by_shots" not in run:
            missing.append(f"the committed run of {m!r} on {data}/{split} has no conditional NLL (nll_by_shots)")
        else:
            runs[m] = run
    return runs, missing


def plot_nll_by_shots(curves: Mapping[str, Mapping[str, Mapping]], ax=None, title: str | None = None, styles=None):
    """NLL (nats) against the number of conditioning drawings, one line per curve, 95% CI bars.

    ``curves`` maps a label to an ``nll_by_shots`` dict (:func:`nll_by_shots`, or a benchmark
    JSON's ``"nll_by_shots"``); ``styles`` optionally maps a label to ``plot`` keyword arguments.
    Lower is better: a line that falls from left to right is a model that uses its support set.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    styles = styles or {}
    for label, curve in curves.items():
        shots = sorted(curve, key=int)
        means = [curve[s]["mean"] for s in shots]
        cis = [0.0 if curve[s]["ci95"] != curve[s]["ci95"] else curve[s]["ci95"] for s in shots]  # nan: one character
        ax.errorbar([int(s) for s in shots], means, yerr=cis, marker="o", capsize=3, label=label, **styles.get(label, {}))
    ax.set_xlabel("conditioning drawings of the character (support size)")
    ax.set_ylabel("NLL of a held-out drawing (nats, lower is better)")
    if curves:
        ticks = sorted({int(s) for c in curves.values() for s in c})
        ax.set_xticks(ticks)
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def show_conditional_samples(rows: Sequence[tuple[torch.Tensor, torch.Tensor]], ax=None, title: str | None = None):
    """One row per character: its support drawings, a blank, then the samples drawn from them.

    ``rows`` is a list of ``(support [K, C, H, W], samples [n, C, H, W])`` with the same ``K`` and
    ``n`` in every row (images in ``[0, 1]``). Returns the axes.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("no rows to show")
    k, n = rows[0][0].shape[0], rows[0][1].shape[0]
    shape = tuple(rows[0][0].shape[1:])
    for support, samples in rows:
        if (support.shape[0], samples.shape[0]) != (k, n) or {tuple(support.shape[1:]), tuple(samples.shape[1:])} != {shape}:
            raise ValueError(f"every row needs {k} support images and {n} samples of shape {shape}")
    blank = torch.full((1, *shape), 0.5)
    images = torch.cat([torch.cat([s.detach().float().cpu(), blank, g.detach().float().cpu()]) for s, g in rows])
    if ax is None:
        _, ax = plt.subplots(figsize=(min(14, 0.6 * (k + 1 + n)), 0.65 * len(rows) + 0.6))
    return show_images(images, nrow=k + 1 + n, ax=ax, title=title)


def describe_run(run: Mapping) -> str:
    """A committed run in words and numbers, all read from its JSON (see :func:`reference_curves`)."""
    s = run["summary"]
    head = (f"{run['method']} on {run.get('data', '?')}/{run.get('split', '?')} ({run.get('mode', '?')} mode): "
            f"{run.get('meta_train_steps', '?')} meta-training steps in {float(run.get('meta_train_seconds', 'nan')):.0f} s "
            f"on {run.get('device', '?')}, torch threads: {run.get('threads', '?')}")  # fmt: skip
    if run.get("load_average") is not None:
        head += f" (load average {run['load_average']:.1f})"
    parts = [head]
    if run.get("adapt_steps") is not None:
        parts.append(f"{run['adapt_steps']} adaptation steps on the support set")
    nll = run.get("nll_by_shots")
    if nll:
        by_size = sorted(nll.items(), key=lambda t: int(t[0]))
        characters = len(by_size[0][1].get("per_character", []))
        parts.append("NLL " + ", ".join(f"given {size}: {v['mean']:.1f} ± {v['ci95']:.1f}" for size, v in by_size)
                     + f" nats ({characters} characters, k = {run.get('nll_k', '?')})")  # fmt: skip
    parts.append(f"K = {run.get('shots', '?')} samples: FD {s['fd']['mean']:.1f} ± {s['fd']['ci95']:.1f}, "
                 f"recognisability {s['recognisability']['mean']:.2f} ± {s['recognisability']['ci95']:.2f}, "
                 f"diversity {s['diversity']['mean']:.2f}, memorisation {s['memorisation']['mean']:.2f}")  # fmt: skip
    return "; ".join(parts)


__all__ = ["NLL_SHOTS", "METHOD_LABELS", "choose_characters", "nll_by_shots", "reference_curves", "plot_nll_by_shots",
           "show_conditional_samples", "describe_run"]  # fmt: skip
