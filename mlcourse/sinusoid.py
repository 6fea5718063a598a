"""The sinusoid regression toy of Finn et al. (2017), section 5.1: MAML's intuition in 1-D.

Each *task* is a sine wave ``y = A sin(x - φ)`` with amplitude ``A ~ U[0.1, 5]`` and phase
``φ ~ U[0, π]``, observed at ``x ~ U[-5, 5]``. Given K points of a new wave, regress the whole
curve. A network *pretrained* on all tasks at once can only learn their average wave,
``E[A] E[sin(x - φ)] = 2.55 · (−2/π) cos x ≈ −1.62 cos x`` (with φ in ``[0, π]`` only, the
phases do *not* cancel; :func:`average_wave`), one fixed curve whatever the task, and a few gradient steps from
there go slowly.
MAML learns an initialisation from which a few steps on K points recover the wave.

Everything here is small enough to train in seconds on a CPU; chapter 04 plots it and puts
the number of adaptation steps on a slider (:func:`adaptation_curves` + :func:`plot_adaptation`,
plain functions the widget calls).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .optim.inner_loop import adapt, named_params
from .optim.maml import meta_gradient
from .train import History, train_loop

AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)


@dataclass
class SineTasks:
    """A batch of ``T`` sine tasks: ``amplitude [T]``, ``phase [T]``."""

    amplitude: torch.Tensor
    phase: torch.Tensor

    def __len__(self) -> int:
        return len(self.amplitude)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Values ``[T, n, 1]`` of every task at inputs ``x [T, n, 1]``."""
        return self.amplitude[:, None, None] * torch.sin(x - self.phase[:, None, None])


def sample_tasks(num_tasks: int, generator: torch.Generator) -> SineTasks:
    a = torch.empty(num_tasks).uniform_(*AMPLITUDE, generator=generator)
    p = torch.empty(num_tasks).uniform_(*PHASE, generator=generator)
    return SineTasks(a, p)


def sample_points(tasks: SineTasks, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` random points of every task: ``x, y`` of shape ``[T, k, 1]``."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    x = torch.empty(len(tasks), k, 1).uniform_(*X_RANGE, generator=generator)
    return x, tasks(x)


def average_wave(x: torch.Tensor) -> torch.Tensor:
    """The mean over tasks of ``A sin(x - φ)``: the best a model that ignores the task can do
    (in squared error). ``E[A] E[sin(x - φ)]``, with ``E[sin(x - φ)] = (cos(x - b) - cos(x - a)) / (b - a)``
    for ``φ ~ U[a, b]``; for ``[0, π]`` that is ``-(2/π) cos x``, so the mean wave is about
    ``-1.62 cos x``, not flat."""
    a, b = PHASE
    mean_amplitude = (AMPLITUDE[0] + AMPLITUDE[1]) / 2
    return mean_amplitude * (torch.cos(x - b) - torch.cos(x - a)) / (b - a)


def sine_mlp(hidden: int = 40) -> nn.Module:
    """The paper's regressor: 1 -> 40 -> 40 -> 1 with ReLUs."""
    return nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))


def train_maml(
    steps: int = 10000,
    meta_batch: int = 25,
    k_shot: int = 10,
    inner_steps: int = 1,
    inner_lr: float = 0.01,
    outer_lr: float = 1e-3,
    first_order: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> tuple[nn.Module, History]:
    """Meta-train the MLP with MAML on sine tasks (paper: K=10, one inner step of 0.01, meta-batch 25)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = sine_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=outer_lr)

    def step(i):
        tasks = sample_tasks(meta_batch, g)
        sx, sy = sample_points(tasks, k_shot, g)
        qx, qy = sample_points(tasks, k_shot, g)
        # vmap over the tasks: for a network this small, one batched call is ~6x faster on a
        # CPU than a Python loop over the 25 tasks (the per-op overhead dominates)
        result = meta_gradient(model, (sx, sy, qx, qy), inner_steps=inner_steps, inner_lr=inner_lr,
                               first_order=first_order, loss_fn=F.mse_loss, vectorize=True)
        for name, p in model.named_parameters():
            p.grad = result.grads[name]
        opt.step()
        return {"loss": result.loss}

    history = train_loop(step, steps, desc="MAML on sines", progress=progress)
    return model, history


def train_pretrained(steps: int = 10000, batch: int = 25, k_shot: int = 10, lr: float = 1e-3, seed: int = 0, progress: bool = True) -> tuple[nn.Module, History]:
    """The baseline: one regressor trained on points of all tasks mixed together."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = sine_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def step(i):
        x, y = sample_points(sample_tasks(batch, g), k_shot, g)
        loss = F.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.item()}

    history = train_loop(step, steps, desc="pretraining on sines", progress=progress)
    return model, history


@dataclass
class AdaptationCurves:
    """Predictions on a grid after 0..max_steps adaptation steps, for one task."""

    x_grid: torch.Tensor  # [G]
    truth: torch.Tensor  # [G]
    support_x: torch.Tensor  # [K]
    support_y: torch.Tensor  # [K]
    predictions: dict[str, list[torch.Tensor]]  # model name -> [step] -> [G]
    mse: dict[str, list[float]]  # model name -> [step] -> MSE on the grid


def adaptation_curves(models: dict[str, nn.Module], k_shot: int = 10, max_steps: int = 10, lr: float = 0.01, seed: int = 0, grid: int = 200) -> AdaptationCurves:
    """Adapt every model to the same new task with ``k_shot`` points, recording each step."""
    g = torch.Generator().manual_seed(seed)
    task = sample_tasks(1, g)
    sx, sy = sample_points(task, k_shot, g)
    x_grid = torch.linspace(*X_RANGE, grid).view(1, grid, 1)
    truth = task(x_grid)
    preds, mses = {}, {}
    for name, model in models.items():
        params = {n: p.detach() for n, p in named_params(model).items()}
        preds[name], mses[name] = [], []
        for s in range(max_steps + 1):
            with torch.no_grad():
                out = torch.func.functional_call(model, params, (x_grid[0],))
            preds[name].append(out.view(-1))
            mses[name].append(F.mse_loss(out.view(-1), truth.view(-1)).item())
            params = {n: p.detach() for n, p in adapt(model, params, {}, sx[0], sy[0], steps=1, lr=lr, loss_fn=F.mse_loss).items()}
    return AdaptationCurves(x_grid.view(-1), truth.view(-1), sx.view(-1), sy.view(-1), preds, mses)


def plot_adaptation(curves: AdaptationCurves, step: int, axes=None, show_average: bool = True):
    """Left: each model's curve after ``step`` steps (and, dashed, the average wave over all
    tasks, where a pretrained model starts); right: MSE against steps."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    ax, ax2 = axes
    ax.plot(curves.x_grid, curves.truth, color="k", lw=2, label="true wave")
    ax.scatter(curves.support_x, curves.support_y, color="k", marker="^", zorder=5, label=f"{len(curves.support_x)} support points")
    if show_average:
        ax.plot(curves.x_grid, average_wave(curves.x_grid), color="grey", ls="--", lw=1, label="average wave over tasks")
    for name, preds in curves.predictions.items():
        ax.plot(curves.x_grid, preds[step], lw=1.5, label=f"{name} after {step} step{'s' * (step != 1)}")
    ax.set_ylim(-6, 6)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_xlabel("x")
    for name, m in curves.mse.items():
        ax2.plot(range(len(m)), m, marker="o", ms=3, label=name)
    ax2.axvline(step, color="grey", ls=":")
    ax2.set_xlabel("adaptation steps")
    ax2.set_ylabel("MSE on the whole wave")
    ax2.set_yscale("log")
    ax2.legend(fontsize=7)
    return axes
