"""Chapter 06b's pictures and tables: the episode drawn as a sequence, the learned optimiser's
update against SGD's, and the black-box family beside ProtoNet and MAML on the committed runs.

Nothing here trains a model: the functions read what a model or a committed benchmark JSON
already holds, so the chapter's cells stay short and the tables are tested code.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import repo_root

SELECTION = Path("docs") / "runs" / "selection"
ANALYSIS = Path("docs") / "runs" / "blackbox" / "analysis.json"

# What each method needs once meta-training is over, to answer a new task.
TEST_TIME_NEEDS = {
    "lstm-learner": "one forward pass per query (support read as a sequence)",
    "snail": "one forward pass per query (support read as a sequence)",
    "learned-opt": "gradients of the base net + the LSTM, per test step",
    "protonet": "one embedding per image, class means",
    "maml": "gradients of the base net, per test step",
}


def load_final_runs(methods=("snail", "lstm-learner", "learned-opt", "protonet", "maml"), data: str = "omniglot",
                    root: Path | None = None) -> dict[str, dict]:  # fmt: skip
    """``{method: bench JSON}`` of each method's test run, scored once after selection on
    validation (``docs/runs/selection/<method>-<data>/final-test-*.json``); missing methods are
    left out, and a folder with several final runs is an error (which one would be the figure?)."""
    root = repo_root() if root is None else Path(root)
    runs = {}
    for method in methods:
        found = sorted((root / SELECTION / f"{method}-{data}").glob("final-test-*.json"))
        if len(found) > 1:
            raise ValueError(f"{method}: {len(found)} final test runs in {found[0].parent}: expected one")
        if found:
            runs[method] = json.loads(found[0].read_text(encoding="utf-8"))
    return runs


def load_analysis(root: Path | None = None) -> dict | None:
    """``docs/runs/blackbox/analysis.json`` (support order, learned optimiser by test steps), or None."""
    path = (repo_root() if root is None else Path(root)) / ANALYSIS
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def train_seconds(run: dict) -> float:
    """Meta-training wall time of a bench run (a run from a checkpoint reports the checkpoint's)."""
    return float(run.get("checkpoint_train_seconds") or run.get("meta_train_seconds") or 0.0)


def family_rows(runs: dict[str, dict]) -> list[dict]:
    """One row per run: accuracy ± 95% CI (percent), meta-training steps and seconds, test-time
    cost per episode (milliseconds) and what the method needs at test time."""
    rows = []
    for method, run in runs.items():
        rows.append({
            "method": method, "accuracy": 100 * run["accuracy"], "ci95": 100 * run["ci95"],
            "steps": int(run["meta_train_steps"]), "train_seconds": train_seconds(run),
            "ms_per_episode": 1000 * run["eval_seconds"] / run["episodes"], "episodes": int(run["episodes"]),
            "transductive": bool(run.get("transductive")), "needs": TEST_TIME_NEEDS.get(method, "?"),
        })  # fmt: skip
    return rows


def format_family_table(rows: list[dict]) -> str:
    """The rows of :func:`family_rows` as a plain-text table, best accuracy first."""
    head = f"{'method':13s} {'test accuracy':>16s} {'steps':>6s} {'train s':>8s} {'ms/episode':>10s}  transd.  needs at test time"
    lines = [head, "-" * len(head)]
    for r in sorted(rows, key=lambda r: -r["accuracy"]):
        lines.append(f"{r['method']:13s} {r['accuracy']:9.2f} ± {r['ci95']:4.2f}% {r['steps']:6d} {r['train_seconds']:8.0f} "
                     f"{r['ms_per_episode']:10.1f}  {'yes' if r['transductive'] else 'no':7s}  {r['needs']}")  # fmt: skip
    return "\n".join(lines)


def update_rule_summary(trace: list[dict]) -> list[dict]:
    """Per step of ``MetaLearnerLSTM.adapt(..., trace=list)``: the support loss, the mean input
    gate (the learning rate it chose) and forget gate, their spread over weights, and the
    least-squares slope of update on gradient (``-lr`` for SGD with rate ``lr``)."""
    out = []
    for step, t in enumerate(trace):
        g, u = t["grad"].double(), t["update"].double()
        slope = (g * u).sum() / (g * g).sum().clamp_min(1e-300)
        out.append({"step": step, "loss": t["loss"], "i_mean": t["i"].mean().item(), "i_std": t["i"].std().item(),
                    "f_mean": t["f"].mean().item(), "f_min": t["f"].min().item(), "slope": slope.item()})  # fmt: skip
    return out


def plot_update_vs_gradient(trace: list[dict], step: int, lr_init: float, ax=None, points: int = 4000, seed: int = 0):
    """Scatter of each weight's gradient against its update at ``step`` (a random subset of
    ``points`` weights), with SGD's line ``update = -lr_init * grad`` for reference."""
    import matplotlib.pyplot as plt

    if not 0 <= step < len(trace):
        raise ValueError(f"step must lie in 0..{len(trace) - 1}, got {step}")
    ax = ax or plt.gca()
    g, u = trace[step]["grad"], trace[step]["update"]
    pick = torch.randperm(g.numel(), generator=torch.Generator().manual_seed(seed))[:points]
    g, u = g[pick].numpy(), u[pick].numpy()
    ax.scatter(g, u, s=3, alpha=0.4, label="learned update")
    lim = float(abs(g).max()) or 1.0
    ax.plot([-lim, lim], [lr_init * lim, -lr_init * lim], color="k", lw=1, label=f"SGD: -{lr_init:g} · grad")
    ax.set(xlabel="gradient of the support loss", ylabel="update of the weight", title=f"step {step + 1}")
    ax.legend(loc="upper right", fontsize=8)
    return ax


def draw_sequence_diagram(n_way: int = 5, k_shot: int = 1, ax=None):
    """The episode as the sequence a black-box learner reads: support tokens (image, one-hot
    label), then the query with a zero label, every token an arrow into the network, whose
    output at the last position is the query's answer."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, Rectangle

    ax = ax or plt.gca()
    labels = [c for c in range(n_way) for _ in range(k_shot)]
    tokens = len(labels) + 1
    for t in range(tokens):
        query = t == tokens - 1
        ax.add_patch(Rectangle((t, 0), 0.8, 0.8, facecolor="#f4d6a0" if query else "#cfe2f3", edgecolor="k"))
        ax.text(t + 0.4, 0.55, "$x_q$" if query else f"$x_{{{t + 1}}}$", ha="center", va="center", fontsize=11)
        for c in range(n_way):  # the one-hot label as a little column of cells
            on = (not query) and labels[t] == c
            ax.add_patch(Rectangle((t + 0.15 + 0.5 * c / n_way, -0.55), 0.5 / n_way, 0.4,
                                   facecolor="k" if on else "white", edgecolor="grey", lw=0.5))  # fmt: skip
        ax.text(t + 0.4, -0.75, "label ?" if query else f"label {labels[t]}", ha="center", va="top", fontsize=8)
        ax.add_patch(FancyArrowPatch((t + 0.4, 0.85), (t + 0.4, 1.45), arrowstyle="-|>", mutation_scale=10))
    ax.add_patch(Rectangle((0, 1.5), tokens - 0.2, 0.6, facecolor="#e6e6e6", edgecolor="k"))
    ax.text(tokens / 2 - 0.1, 1.8, "sequence model (LSTM / SNAIL), causal: step t sees steps 1..t", ha="center", va="center")
    ax.add_patch(FancyArrowPatch((tokens - 0.6, 2.15), (tokens - 0.6, 2.7), arrowstyle="-|>", mutation_scale=12, color="C3"))
    ax.text(tokens - 0.6, 2.8, "logits for $y_q$", ha="center", va="bottom", color="C3")
    ax.set(xlim=(-0.3, tokens + 0.1), ylim=(-1.2, 3.2))
    ax.set_axis_off()
    return ax


def format_analysis(analysis: dict) -> str:
    """``docs/runs/blackbox/analysis.json`` as text: the support-order effect of each sequence
    learner, and the learned optimiser's accuracy by test steps beside SGD's from the same θ_0."""
    lines = [f"{analysis['data']} {analysis['split']}, {analysis['ways']}-way {analysis['shots']}-shot, eval seed {analysis['eval_seed']}"]
    for method, e in analysis.get("order", {}).items():
        lines.append(f"  {method:13s} order: given {100 * e['accuracy_given_order']:.2f}%, random {100 * e['accuracy_random_orders']:.2f}% "
                     f"(spread {100 * e['accuracy_spread']:.2f} points), predictions flipped {100 * e['prediction_flip_rate']:.1f}% "
                     f"({e['episodes']} episodes x {e['orders']} orders)")  # fmt: skip
    steps = analysis.get("learned_opt_steps")
    if steps:
        lines.append(f"  learned optimiser (trained with {steps['trained_steps']} steps) vs SGD at lr {steps['sgd_lr']:g} "
                     f"from the same θ_0, {steps['episodes']} episodes:")  # fmt: skip
        for k in sorted(steps["learned"], key=int):
            a, b = steps["learned"][k], steps["sgd"].get(k)
            sgd = f"{100 * b['accuracy']:6.2f} ± {100 * b['ci95']:.2f}%" if b else "-"
            lines.append(f"    {int(k):3d} test steps: learned {100 * a['accuracy']:6.2f} ± {100 * a['ci95']:.2f}%   SGD {sgd}")
    return "\n".join(lines)
