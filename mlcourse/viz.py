"""Pictures: image grids, episodes, learning curves and accuracy bars.

Each function draws on a matplotlib ``Axes`` (made for you when not given) and returns it,
so that a chapter can compose figures, and tests can call them headless.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import torch

from .train import History


def _as_images(images) -> torch.Tensor:
    x = torch.as_tensor(images).detach().cpu()
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    if x.dim() == 3:  # [B, H, W]
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise ValueError(f"expected images [B, C, H, W], got shape {tuple(x.shape)}")
    return x.float()


def image_grid(images, nrow: int | None = None, pad: int = 2, pad_value: float = 0.5) -> torch.Tensor:
    """Tile ``[B, C, H, W]`` images into one ``[C, H', W']`` picture, ``nrow`` images per row."""
    x = _as_images(images)
    b, c, h, w = x.shape
    nrow = nrow or math.ceil(math.sqrt(b))
    rows = math.ceil(b / nrow)
    grid = torch.full((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), pad_value)
    for i in range(b):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top : top + h, left : left + w] = x[i]
    return grid


def show_images(images, nrow: int | None = None, title: str | None = None, ax=None, cmap="gray", figsize=None):
    """Show a batch of images as one grid."""
    grid = image_grid(images, nrow)
    if ax is None:
        _, ax = plt.subplots(figsize=figsize or (min(12, 1 + grid.shape[2] / 40), min(12, 1 + grid.shape[1] / 40)))
    if grid.shape[0] == 1:
        ax.imshow(grid[0], cmap=cmap, vmin=0, vmax=1)
    else:
        ax.imshow(grid.permute(1, 2, 0).clamp(0, 1))
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def show_episode(episode, class_names: Sequence[str] | None = None, max_query: int = 5, figsize=None):
    """Support images in the left column block, queries to the right, one row per class."""
    n_way = int(episode.support_y.max()) + 1
    k = len(episode.support_y) // n_way
    q = min(max_query, len(episode.query_y) // n_way)
    fig, axes = plt.subplots(n_way, k + q, figsize=figsize or (1.1 * (k + q), 1.1 * n_way), squeeze=False)
    for j in range(n_way):
        sup = episode.support_x[episode.support_y == j]
        qry = episode.query_x[episode.query_y == j]
        for i in range(k + q):
            ax = axes[j, i]
            img = sup[i] if i < k else qry[i - k]
            ax.imshow(_as_images(img[None])[0, 0], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i < k:
                for s in ax.spines.values():
                    s.set_edgecolor("tab:blue")
                    s.set_linewidth(2)
        label = f"label {j}"
        if class_names is not None:
            label += f"\n{class_names[int(episode.classes[j])]}"
        axes[j, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    axes[0, 0].set_title("support", fontsize=9, loc="left")
    axes[0, k].set_title("query", fontsize=9, loc="left")
    fig.tight_layout()
    return fig


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average (the first points average what exists so far)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_history(history: History | Mapping[str, Sequence[float]], keys: Sequence[str] | None = None, window: int = 20, axes=None):
    """One panel per metric, raw values faint and a moving average on top."""
    values = history.values if isinstance(history, History) else dict(history)
    steps = history.steps if isinstance(history, History) else {k: list(range(len(v))) for k, v in values.items()}
    keys = list(keys or values.keys())
    if axes is None:
        _, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
        axes = axes[0]
    for ax, key in zip(axes, keys):
        ax.plot(steps[key], values[key], alpha=0.3, color="tab:blue")
        ax.plot(steps[key], smooth(values[key], window), color="tab:blue")
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    return axes


def plot_accuracies(results: Mapping[str, object], ax=None, title: str | None = None):
    """Horizontal bars of mean accuracy with 95% intervals, from ``{name: AccuracyResult}``."""
    names = list(results)
    means = [100 * results[n].mean for n in names]
    cis = [100 * results[n].ci95 for n in names]
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.5 + 0.5 * len(names)))
    ax.barh(names, means, xerr=cis, color="tab:blue", alpha=0.8, capsize=4)
    for y, (m, c) in enumerate(zip(means, cis)):
        ax.text(m + c + 0.5, y, f"{m:.1f}±{c:.1f}", va="center", fontsize=8)
    ax.set_xlim(0, 110)
    ax.set_xlabel("accuracy (%)")
    ax.invert_yaxis()
    if title:
        ax.set_title(title)
    return ax


def plot_paired_differences(comparisons: Sequence[object], ax=None, labels: Sequence[str] | None = None, title: str | None = None):
    """Paired differences ``a − b`` (points) with their 95% intervals, one row each.

    ``comparisons`` are :class:`~mlcourse.evaluate.PairedComparison` objects (from
    :func:`~mlcourse.evaluate.compare`); a row whose interval misses the dotted zero line is a
    difference the episodes resolve. ``labels`` default to ``"A − B"`` from each comparison's names.
    """
    comparisons = list(comparisons)
    labels = list(labels) if labels is not None else [f"{c.names[0]} − {c.names[1]}" for c in comparisons]
    if len(labels) != len(comparisons):
        raise ValueError(f"{len(labels)} labels for {len(comparisons)} comparisons")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.6 + 0.5 * len(comparisons)))
    y = list(range(len(comparisons)))
    colours = ["tab:green" if c.significant else "tab:grey" for c in comparisons]
    for yi, c, colour in zip(y, comparisons, colours):
        ax.errorbar(100 * c.difference, yi, xerr=100 * c.ci95, fmt="o", capsize=4, color=colour)
    ax.axvline(0, color="grey", ls=":")
    ax.set_yticks(y, labels)
    ax.set_ylim(len(comparisons) - 0.5, -0.5)
    ax.set_xlabel("paired difference on the same episodes (points, 95% CI)")
    if title:
        ax.set_title(title)
    return ax


def maml_loop_diagram(tasks: int = 3, ax=None):
    """MAML's two loops as a picture: θ fans out to ``tasks`` inner loops (gradient steps on
    each task's support set give θ'_i), each adapted θ'_i is scored on its query set, and the
    outer loop moves θ along the gradient of the summed query losses, *through* the inner steps.
    Returns the axes; every label is a text artist, so a test can read them."""
    if not isinstance(tasks, int) or tasks < 1:
        raise ValueError(f"tasks must be an int of at least 1, got {tasks!r}")
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 1.3 + 0.9 * tasks))
    ax.set_xlim(0, 10)
    ax.set_ylim(-1.1, tasks - 0.4)
    ax.axis("off")
    box = {"boxstyle": "round,pad=0.35", "fc": "white", "ec": "0.3"}
    mid = (tasks - 1) / 2
    ax.text(0.9, mid, "$\\theta$\n(meta-parameters)", ha="center", va="center", bbox={**box, "fc": "#e8f0fe"}, fontsize=10)
    for i in range(tasks):
        y = tasks - 1 - i
        k = str(i + 1)
        ax.annotate("", xy=(2.75, y), xytext=(1.85, mid), arrowprops={"arrowstyle": "->", "color": "tab:blue"})
        ax.text(4.1, y, f"inner loop, task {k} (support set):\n$\\theta'_{k} = \\theta - \\alpha \\nabla L^{{s}}_{k}(\\theta)$",
                ha="center", va="center", bbox=box, fontsize=8)  # fmt: skip
        ax.annotate("", xy=(6.55, y), xytext=(5.45, y), arrowprops={"arrowstyle": "->", "color": "tab:blue"})
        ax.text(7.4, y, f"query loss\n$L^{{q}}_{k}(\\theta'_{k})$", ha="center", va="center", bbox=box, fontsize=8)
        ax.annotate("", xy=(9.05, mid), xytext=(8.2, y), arrowprops={"arrowstyle": "->", "color": "tab:red"})
    ax.text(9.3, mid, "$\\Sigma$", ha="center", va="center", fontsize=14, color="tab:red")
    # the outer update returns to θ: down from Σ, along the bottom, up into θ
    ax.plot([9.3, 9.3, 0.9], [mid - 0.3, -0.75, -0.75], color="tab:red", lw=1.2)
    ax.annotate("", xy=(0.9, mid - 0.35), xytext=(0.9, -0.76), arrowprops={"arrowstyle": "->", "color": "tab:red", "lw": 1.2})
    ax.text(5.0, -0.85, "outer loop: $\\theta \\leftarrow \\theta - \\beta\\, \\nabla_\\theta \\sum_i L^{q}_i(\\theta'_i)$"
            "   (the gradient goes back through the inner steps)", ha="center", va="top", fontsize=9, color="tab:red")  # fmt: skip
    ax.set_title("MAML: an inner loop per task, one outer loop over tasks", fontsize=10)
    return ax
