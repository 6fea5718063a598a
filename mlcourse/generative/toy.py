"""A GAN you can watch: 8 Gaussians on a ring, two small MLPs, and which modes the samples cover.

Chapter 07 and exercise 07 train a generator and a critic on two-dimensional points, where
mode collapse is visible at a glance. This module holds the bookkeeping (data, networks,
the training loop, snapshots, coverage); the *losses* stay in the notebooks, passed in as
functions, because they are what the chapter teaches::

    def critic_loss(critic, real, fake, gen):       # one critic step's loss
        return d_loss_nonsaturating(critic(real), critic(fake))

    run = train_toy_gan(critic_loss, g_loss_nonsaturating, steps=300)
    run.snapshots[-1].coverage.covered              # modes covered at the end (of 8)

A sample is *good* within 3 standard deviations of its nearest mode; a mode is *covered* when
it gets at least a quarter of its fair share (``n / modes / 4``) of the good samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

Critic = Callable[[torch.Tensor], torch.Tensor]
#: ``critic_loss(critic, real, fake, generator) -> scalar``; ``generator`` is the run's random
#: stream (for a gradient penalty's interpolation weights), so that runs are reproducible.
CriticLoss = Callable[[Critic, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]
#: ``generator_loss(critic scores of fakes) -> scalar``.
GeneratorLoss = Callable[[torch.Tensor], torch.Tensor]


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the body on one CPU thread, then restore the previous count.

    Networks this small train faster on one thread: sharing a 256 x 64 matrix product between
    threads costs more than it saves (far more when other programs share the cores). Also
    usable as a decorator (``@one_thread()``).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class Coverage(NamedTuple):
    """How a set of samples covers the ring's modes (unpacks as ``covered, good, per_mode``)."""

    covered: int  # modes that got at least a quarter of their fair share of good samples
    good_fraction: float  # fraction of samples within 3 std of their nearest mode
    per_mode: torch.Tensor  # good samples per mode, shape [modes]


@dataclass(frozen=True)
class Ring:
    """``modes`` Gaussians of standard deviation ``std``, evenly spaced on a circle of ``radius``."""

    modes: int = 8
    radius: float = 2.0
    std: float = 0.05

    def __post_init__(self) -> None:
        if isinstance(self.modes, bool) or not isinstance(self.modes, int) or self.modes < 1:
            raise ValueError(f"modes must be a positive integer, got {self.modes!r}")
        if not self.radius > 0 or not self.std > 0:
            raise ValueError(f"radius and std must be positive, got radius={self.radius}, std={self.std}")

    def centres(self) -> torch.Tensor:
        """The modes' centres, shape ``[modes, 2]``, the first at angle 0."""
        angles = torch.arange(self.modes) * 2 * math.pi / self.modes
        return self.radius * torch.stack([angles.cos(), angles.sin()], dim=1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` points, shape ``[n, 2]``: a uniformly chosen mode plus Gaussian noise."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        mode = torch.randint(self.modes, (n,), generator=generator)
        return self.centres()[mode] + self.std * torch.randn(n, 2, generator=generator)

    def coverage(self, points: torch.Tensor) -> Coverage:
        """Modes covered, fraction of good samples and good samples per mode of ``points`` ``[n, 2]``."""
        if not isinstance(points, torch.Tensor) or points.dim() != 2 or points.shape[1] != 2 or len(points) == 0:
            shape = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
            raise ValueError(f"points must be a non-empty [n, 2] tensor, got {shape}")
        dist, nearest = torch.cdist(points.float(), self.centres()).min(dim=1)
        good = dist < 3 * self.std
        per_mode = torch.bincount(nearest[good], minlength=self.modes)
        covered = int((per_mode >= len(points) / self.modes / 4).sum())
        return Coverage(covered, good.float().mean().item(), per_mode)


def toy_mlp(d_in: int, d_out: int, hidden: int = 64) -> nn.Sequential:
    """Two hidden ReLU layers: enough for a generator or a critic on 2-D points."""
    if min(d_in, d_out, hidden) < 1:
        raise ValueError(f"sizes must be positive, got d_in={d_in}, d_out={d_out}, hidden={hidden}")
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, d_out))


class ToySnapshot(NamedTuple):
    """The generator's samples of a fixed noise batch after ``step`` generator steps."""

    step: int
    samples: torch.Tensor  # [n_samples, 2]
    coverage: Coverage


@dataclass
class ToyGanRun:
    """What :func:`train_toy_gan` returns: snapshots, one loss per generator step, the networks."""

    snapshots: list[ToySnapshot] = field(default_factory=list)
    d_losses: list[float] = field(default_factory=list)  # the last critic step's loss of each generator step
    g_losses: list[float] = field(default_factory=list)
    generator: nn.Module | None = None
    critic: nn.Module | None = None


def train_toy_gan(
    critic_loss: CriticLoss,
    generator_loss: GeneratorLoss,
    steps: int,
    *,
    critic_steps: int = 1,
    lr: float = 2e-3,
    betas: tuple[float, float] = (0.5, 0.999),
    ring: Ring | None = None,
    seed: int = 0,
    batch: int = 128,
    n_snapshots: int = 5,
    n_samples: int = 1000,
    z_dim: int = 2,
) -> ToyGanRun:
    """Train a generator ``toy_mlp(z_dim, 2)`` against a critic ``toy_mlp(2, 1)`` on ``ring``'s points.

    Each of the ``steps`` generator steps is preceded by ``critic_steps`` critic steps (5 for
    WGAN-GP). Both use Adam with ``lr`` and ``betas``. About ``n_snapshots`` times (and always
    after the last step) the generator maps a fixed batch of ``n_samples`` noise vectors to
    points, which are stored with their coverage. Everything random comes from ``seed``
    (network initialisation from torch's global stream, data and noise from a private one),
    and the run uses one CPU thread.
    """
    for name, value in [("steps", steps), ("critic_steps", critic_steps), ("batch", batch),
                        ("n_snapshots", n_snapshots), ("n_samples", n_samples), ("z_dim", z_dim)]:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not callable(critic_loss) or not callable(generator_loss):
        raise TypeError("critic_loss and generator_loss must be functions")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    ring = Ring() if ring is None else ring
    with one_thread():
        return _train(critic_loss, generator_loss, steps, critic_steps, lr, betas, ring, seed, batch,
                      n_snapshots, n_samples, z_dim)


def _train(critic_loss: CriticLoss, generator_loss: GeneratorLoss, steps: int, critic_steps: int, lr: float,
           betas: tuple[float, float], ring: Ring, seed: int, batch: int, n_snapshots: int, n_samples: int,
           z_dim: int) -> ToyGanRun:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the networks' initial weights
    G, D = toy_mlp(z_dim, 2), toy_mlp(2, 1)
    opt_g = torch.optim.Adam(G.parameters(), lr, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr, betas=betas)

    def critic(x: torch.Tensor) -> torch.Tensor:
        return D(x).squeeze(1)

    z_fixed = torch.randn(n_samples, z_dim, generator=gen)  # the same noise at every snapshot
    every = max(1, steps // n_snapshots)
    run = ToyGanRun(generator=G, critic=D)
    for i in range(steps):
        for _ in range(critic_steps):
            real = ring.sample(batch, gen)
            fake = G(torch.randn(batch, z_dim, generator=gen)).detach()  # the critic's step leaves G alone
            d_loss = critic_loss(critic, real, fake, gen)
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
        g_loss = generator_loss(critic(G(torch.randn(batch, z_dim, generator=gen))))
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        run.d_losses.append(d_loss.item())
        run.g_losses.append(g_loss.item())
        if (i + 1) % every == 0 or i == steps - 1:
            with torch.no_grad():
                points = G(z_fixed)
            if not run.snapshots or run.snapshots[-1].step != i + 1:
                run.snapshots.append(ToySnapshot(i + 1, points, ring.coverage(points)))
    return run


def plot_toy_snapshots(snapshots: list[ToySnapshot], title: str, ring: Ring | None = None):
    """One panel per snapshot: the samples (red) over 1,000 data points (gray); returns the figure."""
    import matplotlib.pyplot as plt

    if not snapshots:
        raise ValueError("no snapshots to plot")
    ring = Ring() if ring is None else ring
    fig, axes = plt.subplots(1, len(snapshots), figsize=(2.6 * len(snapshots), 2.8), squeeze=False)
    real = ring.sample(1000, torch.Generator().manual_seed(1))
    lim = ring.radius + 1.0
    for ax, (step, points, (covered, good, _)) in zip(axes[0], snapshots):
        ax.scatter(real[:, 0], real[:, 1], s=2, color="lightgray")
        ax.scatter(points[:, 0], points[:, 1], s=2, color="tab:red", alpha=0.5)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"step {step}: {covered}/{ring.modes} modes\n{100 * good:.0f}% good", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_coverage_over_training(runs: dict[str, ToyGanRun], ring: Ring | None = None):
    """Three panels comparing runs: modes covered and good samples (%) at each snapshot, and the
    good samples per mode at the last one (with the quarter-of-a-fair-share line). Returns the figure."""
    import matplotlib.pyplot as plt

    if not runs or any(not run.snapshots for run in runs.values()):
        raise ValueError("every run needs at least one snapshot")
    ring = Ring() if ring is None else ring
    fig, axes = plt.subplots(1, 3, figsize=(15, 3))
    width = 0.8 / len(runs)
    for j, (name, run) in enumerate(runs.items()):
        steps = [s.step for s in run.snapshots]
        axes[0].plot(steps, [s.coverage.covered for s in run.snapshots], marker="o", label=name)
        axes[1].plot(steps, [100 * s.coverage.good_fraction for s in run.snapshots], marker="o", label=name)
        offset = width * j - 0.4 + width / 2
        axes[2].bar(torch.arange(ring.modes) + offset, run.snapshots[-1].coverage.per_mode.numpy(), width=width, label=name)
    axes[0].set_ylabel(f"modes covered (of {ring.modes})")
    axes[0].set_ylim(-0.3, ring.modes + 0.3)
    axes[1].set_ylabel("good samples (%)")
    for ax in axes[:2]:
        ax.set_xlabel("generator step")
    n_samples = len(next(iter(runs.values())).snapshots[-1].samples)
    axes[2].axhline(n_samples / ring.modes / 4, color="gray", ls="--", lw=1, label="quarter of a fair share")
    axes[2].set_xlabel("mode")
    axes[2].set_ylabel("good samples at the end")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig
