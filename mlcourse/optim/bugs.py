"""A gallery of broken MAML inner loops, each next to the correct one and finite differences.

Tutorials and blog posts on MAML often ship an inner loop that runs, trains, and reports
numbers, yet does not compute the meta-gradient it claims to. None of these mistakes raises
an error; each one only shows when the meta-gradient is compared with finite differences of
the MAML objective. This module writes each mistake as a small function with the same
signature as :func:`correct_meta_gradient`, so that chapter 04 can run them side by side:

* :func:`inplace_update_meta_gradient`: ``p.data -= lr * g`` on the model itself;
* :func:`spent_generator_meta_gradient`: ``model.named_parameters()`` (a generator) read twice;
* :func:`no_create_graph_meta_gradient`: ``create_graph=False`` where second order is meant;
* :func:`batchnorm_leak_meta_gradient`: BatchNorm running statistics shared across tasks.

The problem (:func:`tiny_problem`) is a float64 network small enough for finite differences
on *every* coordinate: ``BatchNorm1d(3, track_running_stats=True) -> Linear(3, 8) -> Tanh ->
Linear(8, 2)``, and a meta-batch of 2-way tasks whose inputs have task-specific means and
scales. The BatchNorm layer comes first on purpose: its running statistics then depend on the
inputs only, not on θ, so the MAML objective below is a smooth function of θ that finite
differences can check (a BatchNorm deeper in the network would make the running statistics
depend on θ through an in-place buffer update that autograd does not record).

The MAML objective every variant claims to differentiate, for a meta-batch of T tasks::

    f(θ) = (1/T) Σ_τ L_τ^query(θ'_τ),   θ'_τ = k plain SGD steps from θ on τ's support set,

each task starting from the model's own BatchNorm statistics (a fresh copy per task); the
support steps run in train mode (batch statistics, which also update the task's copy of the
running statistics); the queries are scored in eval mode (the task's running statistics).

:func:`gallery` runs every variant on the same problem and returns one row per variant: its
relative error against the finite-difference gradient, its cosine with it, and whether the
call changed the model's parameters or buffers.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .inner_loop import Params, fresh_buffers, functional_forward

# (support_x, support_y, query_x, query_y), each with a leading task dimension
Tasks = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
MetaGradientFn = Callable[[nn.Module, Tasks, int, float], Params]


def tiny_problem(seed: int = 0, tasks: int = 3, shots: int = 6, dim: int = 3) -> tuple[nn.Module, Tasks]:
    """A float64 network with BatchNorm running statistics and a meta-batch of 2-way tasks.

    Each task draws its own input mean (standard deviation 2) and scale (0.5 to 2), so the
    BatchNorm statistics of one task are wrong for another: what makes a leak visible.
    """
    if tasks < 2:
        raise ValueError(f"tasks must be at least 2 (a leak needs a task after the first), got {tasks}")
    if shots < 2 or dim < 1:
        raise ValueError(f"shots must be at least 2 and dim at least 1, got shots={shots}, dim={dim}")
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.BatchNorm1d(dim), nn.Linear(dim, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    model.train()

    def draw(mean, scale):
        x = mean + scale * torch.randn(tasks, 2 * shots, dim, generator=g, dtype=torch.float64)
        y = torch.arange(2).repeat_interleave(shots).expand(tasks, -1).clone()
        x = x + y[..., None].double()  # class 1 sits one unit further along every axis
        return x, y

    mean = 2 * torch.randn(tasks, 1, dim, generator=g, dtype=torch.float64)
    scale = 0.5 + 1.5 * torch.rand(tasks, 1, 1, generator=g, dtype=torch.float64)
    sx, sy = draw(mean, scale)
    qx, qy = draw(mean, scale)
    return model, (sx, sy, qx, qy)


def _own_params(model: nn.Module) -> Params:
    return {name: p for name, p in model.named_parameters()}


def _task_query_loss(model: nn.Module, params: Params, buffers: Params, task, steps: int, lr: float,
                     create_graph: bool = True) -> torch.Tensor:
    """k SGD steps on the support set (train mode), then the query loss (eval mode).

    ``buffers`` is written in place by the support passes: the caller decides whether it is
    a fresh copy (correct) or shared with other tasks (the leak).
    """
    sx, sy, qx, qy = task
    was_training = model.training
    model.train()
    adapted = dict(params)
    for _ in range(steps):
        loss = F.cross_entropy(functional_forward(model, adapted, buffers, sx), sy)
        grads = torch.autograd.grad(loss, list(adapted.values()), create_graph=create_graph)
        adapted = {name: w - lr * g for (name, w), g in zip(adapted.items(), grads)}
    model.eval()
    try:
        return F.cross_entropy(functional_forward(model, adapted, buffers, qx), qy)
    finally:
        model.train(was_training)


def maml_objective(model: nn.Module, params: Params, tasks: Tasks, steps: int, lr: float) -> torch.Tensor:
    """The MAML objective f(θ) at ``params``: every task from a fresh copy of the model's buffers."""
    T = tasks[0].shape[0]
    own = dict(model.named_buffers())
    losses = [_task_query_loss(model, params, fresh_buffers(own), [t[i] for t in tasks], steps, lr) for i in range(T)]
    return torch.stack(losses).mean()


def correct_meta_gradient(model: nn.Module, tasks: Tasks, steps: int, lr: float) -> Params:
    """The meta-gradient done right: out-of-place updates of a dict of tensors, every inner
    gradient recorded (``create_graph=True``), a fresh copy of the BatchNorm buffers per task."""
    params = _own_params(model)
    loss = maml_objective(model, params, tasks, steps, lr)
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))


def finite_difference_meta_gradient(model: nn.Module, tasks: Tasks, steps: int, lr: float, h: float = 1e-6) -> Params:
    """Central differences of :func:`maml_objective`, one coordinate at a time (float64)."""
    base = {name: p.detach().clone() for name, p in model.named_parameters()}
    grads = {}
    for name, value in base.items():
        grad = torch.zeros_like(value)
        for i in range(value.numel()):
            plus, minus = dict(base), dict(base)
            plus[name] = value.clone().view(-1).index_add_(0, torch.tensor([i]), torch.tensor([h], dtype=value.dtype)).view_as(value)
            minus[name] = value.clone().view(-1).index_add_(0, torch.tensor([i]), torch.tensor([-h], dtype=value.dtype)).view_as(value)
            f_plus = _objective_value(model, plus, tasks, steps, lr)
            f_minus = _objective_value(model, minus, tasks, steps, lr)
            grad.view(-1)[i] = (f_plus - f_minus) / (2 * h)
        grads[name] = grad
    return grads


def _objective_value(model, params, tasks, steps, lr) -> float:
    # the inner loop needs gradients with respect to the adapted weights, so these must be leaves
    leaves = {name: p.detach().requires_grad_() for name, p in params.items()}
    return maml_objective(model, leaves, tasks, steps, lr).item()


def no_create_graph_meta_gradient(model: nn.Module, tasks: Tasks, steps: int, lr: float) -> Params:
    """Wrong: the inner gradients are taken with ``create_graph=False``.

    Autograd then returns each inner gradient as a constant: θ' = θ − α·g keeps only the
    identity path to θ, the Hessian term of ``dθ'/dθ = I − α∇²L^s`` is lost, and what comes
    back is ∇L^q(θ'): first-order MAML, without any warning. It is close to the meta-gradient
    when α∇²L^s is small and far from it otherwise.
    """
    params = _own_params(model)
    T = tasks[0].shape[0]
    own = dict(model.named_buffers())
    loss = torch.stack([_task_query_loss(model, params, fresh_buffers(own), [t[i] for t in tasks], steps, lr, create_graph=False)
                        for i in range(T)]).mean()
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))


def spent_generator_meta_gradient(model: nn.Module, tasks: Tasks, steps: int, lr: float) -> Params:
    """Wrong: ``model.named_parameters()`` is a generator, and the inner loop reads it twice.

    The first read (the list handed to ``torch.autograd.grad``) spends it; the second (the
    ``zip`` that builds the adapted weights) sees nothing and builds an empty dict. The
    forward pass then falls back on the module's own weights: every "adapted" model is θ
    itself, the queries are scored before any adaptation, and the result is ∇L^q(θ), the
    gradient of plain multi-task training. Nothing fails; the inner loop just does nothing.
    """
    T = tasks[0].shape[0]
    own = dict(model.named_buffers())
    losses = []
    for i in range(T):
        sx, sy, qx, qy = (t[i] for t in tasks)
        buffers = fresh_buffers(own)
        adapted: Params = {}
        model.train()
        for _ in range(steps):
            loss = F.cross_entropy(functional_forward(model, adapted, buffers, sx), sy)
            weights = model.named_parameters()  # a generator: one pass only
            grads = torch.autograd.grad(loss, [p for _, p in weights], create_graph=True)  # the pass
            adapted = {name: p - lr * g for (name, p), g in zip(weights, grads)}  # zip over a spent generator: {}
        model.eval()
        losses.append(F.cross_entropy(functional_forward(model, adapted, buffers, qx), qy))
        model.train()
    params = _own_params(model)
    return dict(zip(params, torch.autograd.grad(torch.stack(losses).mean(), list(params.values()))))


def inplace_update_meta_gradient(model: nn.Module, tasks: Tasks, steps: int, lr: float) -> Params:
    """Wrong: the inner step writes ``p.data -= lr * g`` into the model's own weights.

    Writing through ``.data`` is invisible to autograd: the graph from θ to θ' is cut, so the
    query loss's gradient is taken at θ' with no path back through the steps (no Hessian
    term, like first order). Worse, the model now *holds* θ': the next task of the meta-batch
    adapts from the previous task's adapted weights, not from θ, and after the call the
    initialisation itself has moved. (This is why the gallery hands every variant a copy.)
    """
    T = tasks[0].shape[0]
    own = fresh_buffers(dict(model.named_buffers()))
    totals = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for i in range(T):
        sx, sy, qx, qy = (t[i] for t in tasks)
        buffers = fresh_buffers(own)
        model.train()
        for _ in range(steps):
            loss = F.cross_entropy(functional_forward(model, {}, buffers, sx), sy)
            grads = torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
            for p, g in zip(model.parameters(), grads):
                p.data -= lr * g.detach()  # in place, behind autograd's back
        model.eval()
        loss = F.cross_entropy(functional_forward(model, {}, buffers, qx), qy) / T
        model.train()
        for (name, p), g in zip(model.named_parameters(), torch.autograd.grad(loss, list(model.parameters()))):
            totals[name] += g
    return totals


def batchnorm_leak_meta_gradient(model: nn.Module, tasks: Tasks, steps: int, lr: float) -> Params:
    """Wrong: every task runs with the module's *own* BatchNorm buffers, not a fresh copy.

    In train mode BatchNorm updates ``running_mean``/``running_var`` in place on every forward
    pass. Shared across the meta-batch, the support statistics of task 1 are still in the
    buffers when task 2's queries are normalised with them in eval mode: task 2 is scored
    with statistics of inputs it has never seen, the result depends on the order of the
    tasks, and the module's buffers drift with every meta-batch.
    """
    params = _own_params(model)
    T = tasks[0].shape[0]
    shared = dict(model.named_buffers())  # the module's own tensors: written in place
    loss = torch.stack([_task_query_loss(model, params, shared, [t[i] for t in tasks], steps, lr) for i in range(T)]).mean()
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))


VARIANTS: dict[str, MetaGradientFn] = {
    "correct (out of place, create_graph=True, fresh buffers)": correct_meta_gradient,
    "in-place p.data -= lr * g": inplace_update_meta_gradient,
    "spent named_parameters() generator": spent_generator_meta_gradient,
    "create_graph=False": no_create_graph_meta_gradient,
    "BatchNorm statistics shared across tasks": batchnorm_leak_meta_gradient,
}


def _flat(grads: Params, names: Sequence[str]) -> torch.Tensor:
    return torch.cat([grads[n].reshape(-1) for n in names])


@dataclass
class GalleryRow:
    """One variant's meta-gradient against finite differences (``relative_error`` is
    ``‖g − g_fd‖ / ‖g_fd‖``; ``cosine`` the cosine between them)."""

    variant: str
    relative_error: float
    cosine: float
    changes_model: bool


def gallery(seed: int = 0, steps: int = 2, lr: float = 0.5, tasks: int = 3, variants: dict[str, MetaGradientFn] | None = None) -> list[GalleryRow]:
    """Every variant's meta-gradient on :func:`tiny_problem`, against finite differences.

    Each variant gets its own copy of the model, so one that writes into the model (the
    in-place update, the BatchNorm leak) cannot change what the next one sees; whether it
    *did* change its copy is the ``changes_model`` column.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if not lr > 0 or not math.isfinite(lr):
        raise ValueError(f"lr must be a positive number, got {lr}")
    model, problem = tiny_problem(seed, tasks=tasks)
    names = [n for n, _ in model.named_parameters()]
    reference = _flat(finite_difference_meta_gradient(copy.deepcopy(model), problem, steps, lr), names)
    rows = []
    for name, fn in (variants or VARIANTS).items():
        candidate = copy.deepcopy(model)
        before = {k: v.detach().clone() for k, v in candidate.state_dict().items()}
        g = _flat(fn(candidate, problem, steps, lr), names).detach()
        changed = any(not torch.equal(before[k], v) for k, v in candidate.state_dict().items())
        rows.append(GalleryRow(name, ((g - reference).norm() / reference.norm()).item(),
                               F.cosine_similarity(g, reference, dim=0).item(), changed))
    return rows


def format_gallery(rows: Sequence[GalleryRow]) -> str:
    """The gallery as a plain-text table."""
    width = max(len(r.variant) for r in rows)
    lines = [f"{'inner loop':{width}s}  {'rel. error vs FD':>16s}  {'cosine':>7s}  changes the model"]
    for r in rows:
        lines.append(f"{r.variant:{width}s}  {r.relative_error:16.2e}  {r.cosine:7.3f}  {'yes' if r.changes_model else 'no'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    """``python -m mlcourse.optim.bugs [--seeds 0 1 2] [--lr 0.5] [--steps 2] [--json]``: the gallery."""
    import json
    from dataclasses import asdict

    from ..cli import ArgumentParser, check_at_least, check_positive

    p = ArgumentParser(prog="python -m mlcourse.optim.bugs", description="Broken MAML inner loops against finite differences.")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="problems to run (default: 0)")
    p.add_argument("--steps", type=int, default=2, help="inner steps (default 2)")
    p.add_argument("--lr", type=float, nargs="+", default=[0.5], help="inner learning rates (default 0.5)")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    args = p.parse_args(argv)
    check_at_least(p, "--steps", args.steps, 1)
    for lr in args.lr:
        check_positive(p, "--lr", lr)
    torch.set_num_threads(1)
    rows = []
    for seed in args.seeds:
        for lr in args.lr:
            table = gallery(seed=seed, steps=args.steps, lr=lr)
            rows += [{"seed": seed, "lr": lr, "steps": args.steps, **asdict(r)} for r in table]
            if not args.json:
                print(f"seed {seed}, {args.steps} inner steps of {lr}:\n{format_gallery(table)}\n")
    if args.json:
        print(json.dumps(rows))
    return rows


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
