"""Reptile (Nichol, Achiam and Schulman, 2018, "On First-Order Meta-Learning Algorithms").

Reptile is the simplest optimisation-based meta-learner: train on a task as usual, then move
the initialisation a little towards the weights you ended up with::

    φ̃ = SGD_k(θ, task)            k steps of SGD or Adam on the task, starting from θ
    θ ← θ + ε (φ̃ − θ)             the outer update, ε the outer step size

No second derivatives, no support/query split, no functional tricks in the inner loop: it
is ordinary training of a copy of the network. With a meta-batch of n tasks (the "batched"
version) θ moves towards the average of their adapted weights, ``θ ← θ + ε (mean_i φ̃_i − θ)``;
``meta_batch=1`` is the serial version of the paper's Algorithm 1.

Why it works (section 5 of the paper). With one inner step of SGD, ``φ̃ − θ = −α ∇L(θ)``
and Reptile is plain SGD on the expected task loss (joint training, no meta-learning).
With two steps on minibatches A then B, a Taylor expansion gives::

    θ − φ̃ = α (g_A + g_B) − α² H_B g_A + O(α³)      (g: gradients, H: Hessian, at θ)

and in expectation ``H_B g_A`` is ``½ ∇(g_A · g_B)``: besides lowering the loss, the update
*increases the inner product of the gradients of different minibatches of the same task*,
i.e. it moves θ to where a step on one batch also helps on the next one, which is fast
adaptation. MAML and first-order MAML contain the same term with other weights (section
5.2), which is why the three behave alike in practice.

Practical choices, as in the paper's transductive 5-way 1-shot Omniglot run: Adam with
β1 = 0 and lr 1e-3 in the inner loop (a fresh one per task here; β1 = 0 because momentum
from a handful of steps is mostly noise), 3 inner steps on minibatches of 25, 10 tasks per
outer step, ε annealed linearly from 1 to 0, and each training task uses all its images
(here the episode's support *and* query images: Reptile has no use for the split). At test
time the network is fine-tuned on the support set (5 steps in that run) and then labels
the queries, with BatchNorm statistics of the batch at hand.
"""

from __future__ import annotations

import time

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import get_device
from ..data.episodes import EpisodeDataset, check_episode_request
from ..fewshot import FewShotClassifier, validate_task
from ..models import conv4_classifier
from ..train import History, train_loop
from .inner_loop import LossFn, Params, fresh_buffers, functional_forward, named_params

INNER_OPTIMIZERS = ("sgd", "adam")


def _minibatches(n: int, batch_size: int | None, steps: int, generator: torch.Generator | None):
    """Index sets for ``steps`` minibatches: a shuffled pass over ``0..n-1`` in chunks of
    ``batch_size``, reshuffled when used up (the whole set each step when ``batch_size`` is
    ``None`` or at least ``n``)."""
    if batch_size is None or batch_size >= n:
        return [torch.arange(n)] * steps
    out, order = [], torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        if len(order) < batch_size:
            order = torch.cat([order, torch.randperm(n, generator=generator)])
        out.append(order[:batch_size])
        order = order[batch_size:]
    return out


def inner_train(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    buffers: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int,
    lr: float,
    optimizer: str = "adam",
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    loss_fn: LossFn = F.cross_entropy,
) -> Params:
    """Ordinary training of a *copy* of ``params`` on one task; returns the trained copy φ̃.

    The copies are fresh leaf tensors, so a standard ``torch.optim`` optimiser can step them
    and nothing links φ̃ back to θ (Reptile needs no graph through the inner loop). Buffers
    are copied too: BatchNorm statistics of this task never reach the module.
    """
    if optimizer not in INNER_OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {INNER_OPTIMIZERS}, got {optimizer!r}")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    fast = {n: p.detach().clone().requires_grad_() for n, p in params.items()}
    buffers = fresh_buffers(buffers)
    if optimizer == "sgd":
        opt = torch.optim.SGD(fast.values(), lr=lr)
    else:  # beta1 = 0: no momentum over a few steps on a tiny task (the paper's choice)
        opt = torch.optim.Adam(fast.values(), lr=lr, betas=(0.0, 0.999))
    with torch.enable_grad():
        for idx in _minibatches(len(x), batch_size, steps, generator):
            loss = loss_fn(functional_forward(model, fast, buffers, x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return {n: p.detach() for n, p in fast.items()}


def reptile_update(params: Mapping[str, torch.Tensor], adapted: Sequence[Mapping[str, torch.Tensor]], step_size: float) -> Params:
    """The outer update ``θ + ε (mean_i φ̃_i − θ)``, as a new dict (no gradients involved)."""
    if not adapted:
        raise ValueError("reptile_update needs at least one adapted set of weights")
    with torch.no_grad():
        return {n: p + step_size * (torch.stack([a[n] for a in adapted]).mean(0) - p) for n, p in params.items()}


class Reptile(FewShotClassifier):
    """Reptile on Conv-4 with an ``n_way``-output linear head.

    Args:
        n_way, in_channels, image_size, hidden: the network, as for :class:`~mlcourse.optim.maml.MAML`.
        inner_steps, inner_lr, inner_batch, inner_optimizer: training on one task
            (``"adam"`` with β1 = 0, or ``"sgd"``); ``inner_batch=None`` uses all images.
        meta_batch: tasks per outer step (1 = serial Reptile, more = batched).
        test_inner_steps, test_inner_lr, test_inner_batch: fine-tuning on the support set
            at prediction time (``test_inner_lr=None``: the training one).
        final_step_size: ε decays linearly from ``meta_train(lr=...)`` to this value.

    In :meth:`meta_train`, ``lr`` is the *outer* step size ε (1.0 in the paper).
    """

    method_name = "reptile"
    transductive = True  # BatchNorm always uses batch statistics, as in the paper's transductive setting

    def __init__(
        self,
        n_way: int = 5,
        in_channels: int = 1,
        image_size: int | tuple[int, int] = 28,
        hidden: int = 64,
        inner_steps: int = 3,
        inner_lr: float = 1e-3,
        inner_batch: int | None = 25,
        inner_optimizer: str = "adam",
        meta_batch: int = 10,
        test_inner_steps: int = 5,
        test_inner_lr: float | None = None,
        test_inner_batch: int | None = 25,
        final_step_size: float = 0.0,
    ):
        super().__init__()  # first: records the arguments above for save/load
        for name, value, low in (("n_way", n_way, 2), ("inner_steps", inner_steps, 0), ("test_inner_steps", test_inner_steps, 0), ("meta_batch", meta_batch, 1), ("hidden", hidden, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        for name, value in (("inner_batch", inner_batch), ("test_inner_batch", test_inner_batch)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")
        if inner_optimizer not in INNER_OPTIMIZERS:
            raise ValueError(f"inner_optimizer must be one of {INNER_OPTIMIZERS}, got {inner_optimizer!r}")
        if not inner_lr > 0 or (test_inner_lr is not None and not test_inner_lr > 0):
            raise ValueError(f"inner learning rates must be > 0, got {inner_lr!r} and {test_inner_lr!r}")
        self.n_way, self.meta_batch, self.inner_optimizer = n_way, meta_batch, inner_optimizer
        self.inner_steps, self.inner_lr, self.inner_batch = inner_steps, float(inner_lr), inner_batch
        self.test_inner_steps, self.test_inner_batch = test_inner_steps, test_inner_batch
        self.test_inner_lr = float(inner_lr if test_inner_lr is None else test_inner_lr)
        self.final_step_size = float(final_step_size)
        shape = (in_channels, *((image_size, image_size) if isinstance(image_size, int) else image_size))
        # Batch statistics always (no running averages): fine-tuning on 5 images must not
        # overwrite statistics that other tasks rely on.
        self.net = conv4_classifier(n_way, shape, hidden=hidden, out_channels=hidden, track_running_stats=False)

    def fine_tune(self, x, y, *, training: bool, generator: torch.Generator | None = None) -> Params:
        """φ̃: a copy of the weights trained on ``(x, y)`` with the training or test settings."""
        steps, lr, batch = (self.inner_steps, self.inner_lr, self.inner_batch) if training else (self.test_inner_steps, self.test_inner_lr, self.test_inner_batch)
        return inner_train(self.net, named_params(self.net), dict(self.net.named_buffers()), x, y,
                           steps=steps, lr=lr, optimizer=self.inner_optimizer, batch_size=batch, generator=generator)  # fmt: skip

    def forward(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
        """Fine-tune a copy on the support set, then classify the queries with it.

        The logits carry no gradient back to the meta-parameters: Reptile never
        differentiates through fine-tuning.
        """
        n = validate_task(support_x, support_y, query_x)
        if n != self.n_way:
            raise ValueError(
                f"this Reptile has a {self.n_way}-way head: support labels must cover 0..{self.n_way - 1}, "
                f"got {n} classes (build the model with n_way={n})"
            )
        # a fixed generator: the same support set always gives the same fine-tuned weights
        g = torch.Generator().manual_seed(0)
        adapted = self.fine_tune(support_x, support_y, training=False, generator=g)
        with torch.no_grad():
            return functional_forward(self.net, adapted, dict(self.net.named_buffers()), query_x)

    @torch.no_grad()
    def outer_step(self, tasks: Iterable[tuple[torch.Tensor, torch.Tensor]], step_size: float, generator: torch.Generator | None = None) -> list[Params]:
        """One Reptile update of ``self.net`` from a list of ``(x, y)`` tasks; returns the φ̃s."""
        theta = named_params(self.net)
        adapted = [self.fine_tune(x, y, training=True, generator=generator) for x, y in tasks]
        new = reptile_update(theta, adapted, step_size)
        for name, p in theta.items():
            p.copy_(new[name])  # writing .data is right *here*: nothing differentiates through it
        return adapted

    def meta_train(
        self,
        dataset,
        *,
        n_way: int | None = None,
        k_shot: int = 1,
        q_query: int = 15,
        steps: int = 1000,
        lr: float = 1.0,
        time_budget: float | None = None,
        seed: int = 0,
        device: torch.device | str | None = None,
        progress: bool = True,
        history: History | None = None,
        meta_batch: int | None = None,
    ) -> History:
        """``steps`` Reptile updates of ``meta_batch`` tasks; ``lr`` is the outer step size ε,
        decayed linearly to ``final_step_size`` over the ``steps`` or the ``time_budget``, whichever
        ends first. Each task trains on all its ``k_shot +
        q_query`` images per class.

        Logs ``loss`` and ``acc``: the query loss and accuracy of the first task of each
        batch after fine-tuning a copy on its support set with the *training* inner settings
        (computed before the update). A cheap estimate of what evaluation will see: with the
        test settings (50 fine-tuning steps, say) this one number would cost more than the
        outer step itself.
        """
        n_way = self.n_way if n_way is None else n_way
        if n_way != self.n_way:
            raise ValueError(f"this Reptile has a {self.n_way}-way head; cannot meta-train on {n_way}-way tasks")
        check_episode_request(n_way, k_shot, q_query)
        meta_batch = self.meta_batch if meta_batch is None else meta_batch
        if not isinstance(meta_batch, int) or meta_batch < 1:
            raise ValueError(f"meta_batch must be a positive int, got {meta_batch!r}")
        if not lr > 0:
            raise ValueError(f"the outer step size lr must be > 0, got {lr!r}")
        device = torch.device(device) if device is not None else get_device()
        self.to(device)
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        episodes = EpisodeDataset(dataset, n_way, k_shot, q_query, num_episodes=max(1, steps) * meta_batch, seed=seed)
        total = max(1, steps)
        start = time.perf_counter()

        def step(i):
            self.train()
            batch = [episodes[(i * meta_batch + t) % len(episodes)].to(device) for t in range(meta_batch)]
            first = batch[0]
            with torch.no_grad():
                probe = self.fine_tune(first.support_x, first.support_y, training=True, generator=torch.Generator().manual_seed(0))
                logits = functional_forward(self.net, probe, dict(self.net.named_buffers()), first.query_x)
                loss = F.cross_entropy(logits, first.query_y)
                acc = (logits.argmax(-1) == first.query_y).float().mean()
            frac = min(i, total) / total
            if time_budget:  # decay over the steps or the seconds, whichever run out first
                frac = min(1.0, max(frac, (time.perf_counter() - start) / time_budget))
            step_size = (1 - frac) * lr + frac * self.final_step_size
            tasks = [(torch.cat([ep.support_x, ep.query_x]), torch.cat([ep.support_y, ep.query_y])) for ep in batch]
            self.outer_step(tasks, step_size, generator)
            return {"loss": loss.item(), "acc": acc.item(), "step_size": step_size}

        history = train_loop(step, steps, time_budget=time_budget, history=history, desc="meta-train Reptile", progress=progress)
        self.eval()
        return history


@dataclass
class FitLog:
    """What :func:`meta_train_logging_fit` records: one loss per task seen, and the time taken."""

    task_losses: list[float]  # loss of each task's φ̃ on the task's own images, in the order seen
    seconds: float


def meta_train_logging_fit(model: Reptile, episodes: Sequence, updates: int, step_size: float, *,
                           seed: int = 0, device: torch.device | str | None = None) -> FitLog:
    """``updates`` Reptile updates of ``model.meta_batch`` tasks each, logging how well each task is fit.

    Update ``i`` trains on episodes ``i * meta_batch`` to ``(i + 1) * meta_batch - 1`` (support
    and query images together), with the outer step size ε annealed linearly from
    ``step_size`` to 0, as in the paper. After each update it records the loss of every task's
    fine-tuned weights φ̃ on that task's own images: a meta-learned initialisation fits a new
    task in ``inner_steps`` steps better, so this loss falls as meta-training goes on. Giving
    serial (``meta_batch=1``) and batched Reptile the same episode stream makes them see the
    same tasks in the same order. The inner loops' minibatches come from ``seed``; the model is
    left in eval mode.
    """
    if not isinstance(model, Reptile):
        raise TypeError(f"model must be a Reptile, got {type(model).__name__}")
    if isinstance(updates, bool) or not isinstance(updates, int) or updates < 1:
        raise ValueError(f"updates must be a positive integer, got {updates!r}")
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size!r}")
    needed = updates * model.meta_batch
    if len(episodes) < needed:
        raise ValueError(f"{updates} updates of {model.meta_batch} tasks need {needed} episodes, got {len(episodes)}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    task_losses: list[float] = []
    start = time.perf_counter()
    model.train()
    for i in range(updates):
        eps = step_size * (1 - i / updates)  # annealed linearly to 0
        tasks = []
        for t in range(model.meta_batch):
            ep = episodes[i * model.meta_batch + t].to(device)
            tasks.append((torch.cat([ep.support_x, ep.query_x]), torch.cat([ep.support_y, ep.query_y])))
        adapted = model.outer_step(tasks, eps, generator)  # returns the φ̃ of every task
        with torch.no_grad():
            for (x, y), phi in zip(tasks, adapted):
                task_losses.append(F.cross_entropy(torch.func.functional_call(model.net, phi, (x,)), y).item())
    model.eval()
    return FitLog(task_losses, time.perf_counter() - start)
