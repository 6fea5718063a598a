"""Chapter 11's tables and pictures: the committed augmentation runs read back, and DAGAN siblings.

The runs are the JSON files of ``benchmarks/augment_table.py`` and ``benchmarks/lowdata_table.py``
in ``docs/runs/augment/``; nothing here trains or evaluates a model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import repo_root

RUNS = "docs/runs/augment"


def load_run(name: str, folder: str | Path | None = None) -> dict | None:
    """The committed JSON ``name`` of ``docs/runs/augment`` (or ``folder``), or ``None`` when absent."""
    path = Path(folder or repo_root() / RUNS) / name
    if not path.exists():
        return None
    return json.loads(path.read_text())


def augment_rows(run: dict) -> list[dict]:
    """One row per (method, shots, arm) of an ``augment_table.py`` run: accuracy ± CI, and the
    paired difference to ``none`` on the same episodes (``None`` for ``none`` itself)."""
    diffs = {(c["method"], c["shots"], c["arm"], c["per_image"], c["strength"]): c for c in run["comparisons"]}
    rows = []
    for r in run["runs"]:
        d = diffs.get((r["method"], r["shots"], r["arm"], r["per_image"], r["strength"]))
        rows.append({
            "method": r["method"], "shots": r["shots"], "arm": r["arm"], "per_image": r["per_image"], "strength": r["strength"],
            "accuracy": r["accuracy"], "ci95": r["ci95"], "episodes": r["episodes"], "fingerprint": r["fingerprint"],
            "difference": d["difference"] if d else None, "difference_ci95": d["ci95"] if d else None,
            "p_value": d["p_value"] if d else None,
        })  # fmt: skip
    return rows


def format_augment_table(run: dict) -> str:
    """The rows of :func:`augment_rows` as aligned text, with what was scored and how long it took."""
    lines = [f"{'method':9s} {'K':>2s}  {'arm':10s} {'m':>2s} {'jitter':>6s}  {'accuracy':>15s}  {'− none (paired)':>17s}  episodes  fingerprint"]
    for r in augment_rows(run):
        diff = "" if r["difference"] is None else f"{100 * r['difference']:+.2f} ± {100 * r['difference_ci95']:.2f}"
        strength = "" if r["strength"] is None else f"{r['strength']:g}"
        lines.append(f"{r['method']:9s} {r['shots']:2d}  {r['arm']:10s} {r['per_image']:2d} {strength:>6s}  "
                     f"{100 * r['accuracy']:6.2f} ± {100 * r['ci95']:4.2f}%  {diff:>17s}  {r['episodes']:8d}  {r['fingerprint']}")  # fmt: skip
    lines.append(f"({run['split']} alphabets {', '.join(run['eval_alphabets'])}; 5-way, 15 queries; episode seed {run['eval_seed']}; "
                 f"{run.get('seconds', 0) / 60:.0f} min on {run['hardware']}, {run['threads']} thread, "
                 f"load {run['load_average_start']:.1f} at the start)")  # fmt: skip
    return "\n".join(lines)


def pooled_differences(run: dict) -> list[dict]:
    """Per ``k`` and augmented arm: each character's difference to ``none`` averaged over the seeds
    that finished both arms, with the 95% CI over characters (what ``lowdata_table.py`` writes as
    ``pooled`` at the end; recomputed here so that an unfinished run can be read too)."""
    from ..evaluate import mean_confidence_interval

    out = []
    keys = sorted({(r["k"], r["arm"], r["per_image"]) for r in run["runs"] if r["arm"] != "none"})
    for k, arm, m in keys:
        none = {r["seed"]: torch.tensor(r["per_class"]) for r in run["runs"] if r["k"] == k and r["arm"] == "none"}
        aug = {r["seed"]: torch.tensor(r["per_class"]) for r in run["runs"] if r["k"] == k and r["arm"] == arm and r["per_image"] == m}
        seeds = sorted(set(none) & set(aug))
        if not seeds:
            continue
        d = torch.stack([aug[s] - none[s] for s in seeds]).mean(0)
        mean, ci = mean_confidence_interval(d)
        out.append({"k": k, "arm": arm, "per_image": m, "difference": mean, "ci95": ci, "seeds": seeds})
    return out


def lowdata_rows(run: dict) -> list[dict]:
    """Per ``k``: the mean accuracy of each arm over seeds, every seed's paired difference, and
    the pooled difference (per character averaged over seeds, CI over characters)."""
    rows = []
    for p in pooled_differences(run):
        k, arm, m = p["k"], p["arm"], p["per_image"]
        none = [r["accuracy"] for r in run["runs"] if r["k"] == k and r["arm"] == "none" and r["seed"] in p["seeds"]]
        aug = [r["accuracy"] for r in run["runs"] if r["k"] == k and r["arm"] == arm and r["per_image"] == m and r["seed"] in p["seeds"]]
        per_seed = [d for d in run["differences"] if d["k"] == k and d["arm"] == arm and d["per_image"] == m]
        rows.append({"k": k, "arm": arm, "per_image": m, "none": sum(none) / len(none), "augmented": sum(aug) / len(aug),
                     "difference": p["difference"], "ci95": p["ci95"], "per_seed": per_seed, "seeds": p["seeds"]})  # fmt: skip
    return rows


def format_lowdata_table(run: dict) -> str:
    lines = [f"{'k':>2s}  {'none':>7s}  {'+DAGAN':>7s}  {'pooled difference':>18s}  seeds  per seed (difference ± CI over characters)"]
    for r in lowdata_rows(run):
        seeds = "; ".join(f"seed {d['seed']}: {100 * d['difference']:+.1f} ± {100 * d['ci95']:.1f}" for d in r["per_seed"])
        lines.append(f"{r['k']:2d}  {100 * r['none']:6.2f}%  {100 * r['augmented']:6.2f}%  "
                     f"{100 * r['difference']:+7.2f} ± {100 * r['ci95']:5.2f}  {len(r['seeds']):5d}  {seeds}")  # fmt: skip
    c = run["classifier"]
    lines.append(f"({run['classes']}-way classifier from scratch ({c['model']}, {c['steps']} Adam steps), {run['test_per_class']} test drawings "
                 f"per character, {' or '.join(str(m) for m in run.get('per_image', []))} DAGAN drawings per real one; {run.get('seconds', 0) / 60:.0f} min on "
                 f"{run['hardware']}, {run['threads']} thread, load {run['load_average_start']:.1f} at the start)")  # fmt: skip
    return "\n".join(lines)


def plot_lowdata(run: dict, ax=None):
    """Accuracy against ``k`` for both arms, one faint line per seed and the mean in bold."""
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    for arm, colour in (("none", "tab:grey"), ("dagan", "tab:blue"), ("classical", "tab:orange")):
        acc = {(r["seed"], r["k"]): r["accuracy"] for r in run["runs"] if r["arm"] == arm}
        if not acc:
            continue
        seeds = sorted({s for s, _ in acc if all((s, k) in acc for k in {k for _, k in acc})})
        ks = sorted({k for _, k in acc})
        if not seeds:
            continue
        for s in seeds:
            ax.plot(ks, [100 * acc[(s, k)] for k in ks], color=colour, alpha=0.3, lw=1)
        ax.plot(ks, [100 * sum(acc[(s, k)] for s in seeds) / len(seeds) for k in ks], color=colour, lw=2, marker="o",
                label={"none": "real drawings only", "dagan": "+ DAGAN drawings", "classical": "+ affine copies"}[arm])  # fmt: skip
    ax.set_xlabel("real drawings per character (k)")
    ax.set_ylabel(f"test accuracy, {run['classes']}-way (%)")
    ax.set_xticks(ks)
    ax.legend(fontsize=8)
    return ax


def sibling_grid(sources: torch.Tensor, siblings: torch.Tensor) -> torch.Tensor:
    """Rows of ``[source | its siblings]``: ``sources [R, C, H, W]``, ``siblings [R, M, C, H, W]``
    -> images ``[R * (M + 1), C, H, W]`` to show with ``nrow = M + 1``."""
    if siblings.dim() != 5 or siblings.shape[0] != sources.shape[0] or siblings.shape[2:] != sources.shape[1:]:
        raise ValueError(f"siblings must be [R, M, C, H, W] for sources {tuple(sources.shape)}, got {tuple(siblings.shape)}")
    return torch.cat([sources[:, None], siblings], dim=1).flatten(0, 1)
