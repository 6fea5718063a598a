"""Checks for the chapter 05 exercise: Reptile's inner loop and outer update, written by hand.

The learner writes

* ``inner_sgd(model, params, x, y, steps, lr) -> dict``: ``steps`` steps of plain SGD on
  ``cross_entropy(model(x), y)`` starting from the tensors in ``params``, done functionally
  (``torch.func.functional_call``, out-of-place updates): neither ``params`` nor the model's
  own weights may change;
* ``reptile_step(params, adapted, epsilon) -> dict``: ``θ + ε · mean_i(φ̃_i − θ)``, a new dict.

Each check compares with a float64 reference and, before the generic "expected / got", tests
the answer against the classic wrong answers so that the message says which mistake it is.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from . import Check, CheckFailed

ATOL = 1e-8


# ---------------------------------------------------------------------------------------
# References and fixtures
# ---------------------------------------------------------------------------------------
def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def _start(model: nn.Module, seed: int = 1) -> dict[str, torch.Tensor]:
    """Starting parameters that differ from the model's own weights (leaves that require grad)."""
    g = torch.Generator().manual_seed(seed)
    return {n: (0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype)).requires_grad_() for n, p in model.named_parameters()}


def _task(seed: int = 2, n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)
    y = torch.arange(n) % 3
    return x, y


def _grad(model, params, x, y, reduction="mean") -> dict[str, torch.Tensor]:
    with torch.enable_grad():
        leaves = {n: p.detach().requires_grad_() for n, p in params.items()}
        loss = F.cross_entropy(functional_call(model, leaves, (x,)), y, reduction=reduction)
        return dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))


def _sgd(model, params, x, y, steps, lr, *, sign=1.0, reduction="mean", grads_at_start=False, accumulate=False):
    """Plain SGD and its classic variants (wrong sign, summed loss, stale or accumulated gradients)."""
    phi = {n: p.detach() for n, p in params.items()}
    g0 = _grad(model, phi, x, y, reduction)
    total = {n: torch.zeros_like(p) for n, p in phi.items()}
    for _ in range(steps):
        g = g0 if grads_at_start else _grad(model, phi, x, y, reduction)
        if accumulate:
            total = {n: total[n] + g[n] for n in phi}
            g = total
        phi = {n: p - sign * lr * g[n] for n, p in phi.items()}
    return phi


def reference_inner_sgd(model, params, x, y, steps, lr):
    """The answer :func:`check_inner_sgd` expects (detached tensors)."""
    return _sgd(model, params, x, y, steps, lr)


def reference_reptile_step(params, adapted, epsilon):
    """The answer :func:`check_reptile_step` expects."""
    return {n: p.detach() + epsilon * (torch.stack([a[n].detach() for a in adapted]).mean(0) - p.detach()) for n, p in params.items()}


def _snapshot(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in tensors.items()}


def _unchanged(tensors: Mapping[str, torch.Tensor], snapshot: Mapping[str, torch.Tensor]) -> list[str]:
    """Names whose values differ from the snapshot."""
    return [n for n, t in tensors.items() if not torch.equal(t.detach(), snapshot[n])]


def _close(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], atol: float = 1e-7) -> bool:
    return all(torch.allclose(a[n].detach().to(b[n].dtype), b[n], atol=atol, rtol=1e-6) for n in b)


def _max_error(got: Mapping[str, torch.Tensor], want: Mapping[str, torch.Tensor]) -> str:
    name = max(want, key=lambda n: float((got[n].detach() - want[n]).abs().max()))
    err = float((got[name].detach() - want[name]).abs().max())
    return f"largest difference {err:.3g} in '{name}': expected\n{want[name]}\n    got\n{got[name].detach()}"


def _call(chk: Check, fn, *args):
    """``chk.call`` plus hints for the errors autograd raises on the usual mistakes."""
    try:
        return chk.call(fn, *args)
    except CheckFailed as err:
        cause = str(err.__cause__ or "")
        if "does not require grad" in cause or "does not have a grad_fn" in cause:
            chk.fail(
                f"`{chk.fn_name}` raised RuntimeError: {cause.splitlines()[0]}\n    autograd had nothing to differentiate. "
                "Start from copies that require grad, `{n: p.detach().requires_grad_() for n, p in params.items()}`, and "
                "wrap the loop in `with torch.enable_grad():` (at test time the caller may be inside torch.no_grad())."
            )
        if "not have been used in the graph" in cause:
            chk.fail(
                f"`{chk.fn_name}` raised RuntimeError: {cause.splitlines()[0]}\n    the loss does not depend on the "
                "tensors you differentiate: run the network *with* them, `torch.func.functional_call(model, phi, (x,))`, "
                "not `model(x)` (which uses the model's own weights)."
            )
        if "leaf Variable that requires grad" in cause or "in-place operation" in cause:
            chk.fail(
                f"`{chk.fn_name}` raised RuntimeError: {cause.splitlines()[0]}\n    in-place update: write new tensors "
                "(`p - lr * g`, `p + eps * d`) instead of modifying the given ones (`-=`, `.add_()`, `.data`)."
            )
        raise


def _expect_dict(chk: Check, out, like: Mapping[str, torch.Tensor]) -> None:
    if not isinstance(out, Mapping):
        chk.fail(f"expected a dict name -> tensor (like `params`), got {type(out).__name__}")
    if set(out) != set(like):
        chk.fail(f"expected the names {sorted(like)}, got {sorted(out)}")
    for n, p in like.items():
        if not torch.is_tensor(out[n]):
            chk.fail(f"'{n}': expected a tensor, got {type(out[n]).__name__}")
        if tuple(out[n].shape) != tuple(p.shape):
            chk.fail(f"'{n}': expected shape {tuple(p.shape)}, got {tuple(out[n].shape)}")


# ---------------------------------------------------------------------------------------
# inner_sgd
# ---------------------------------------------------------------------------------------
def check_inner_sgd(inner_sgd) -> None:
    """``inner_sgd(model, params, x, y, steps, lr) -> dict``: plain SGD on the cross-entropy,
    functional (the model and ``params`` unchanged)."""
    chk = Check("check_inner_sgd", "inner_sgd")
    model = _model()
    x, y = _task()
    own = _snapshot(dict(model.named_parameters()))

    with chk.case("0 steps: the starting parameters come back"):
        theta = _start(model)
        out = _call(chk, inner_sgd, model, theta, x, y, 0, 0.3)
        _expect_dict(chk, out, theta)
        chk.expect(_close(out, _snapshot(theta)), "with steps=0 nothing should move: " + _max_error(out, _snapshot(theta)))

    with chk.case("1 step of lr 0.3: θ − lr ∇L(θ)"):
        theta = _start(model)
        before = _snapshot(theta)
        out = _call(chk, inner_sgd, model, theta, x, y, 1, 0.3)
        _expect_dict(chk, out, theta)
        changed = _unchanged(theta, before)
        if changed:
            chk.fail(f"in-place update: your function changed the initial parameters {changed}. Build new tensors "
                     "(`phi = {n: p - lr * g ...}`) instead of writing into `params` (`-=`, `.data`, an optimizer).")
        changed = _unchanged(dict(model.named_parameters()), own)
        if changed:
            chk.fail(f"your function changed the model's own weights {changed}: the model is shared by every task. "
                     "Run it functionally with `torch.func.functional_call(model, phi, (x,))`; no optimizer on "
                     "model.parameters(), no writes into them.")
        want = reference_inner_sgd(model, before, x, y, 1, 0.3)
        if _close(out, before):
            chk.fail("the parameters did not move after one step")
        if _close(out, _sgd(model, before, x, y, 1, 0.3, sign=-1.0)):
            chk.fail("wrong direction: you computed θ + lr ∇L, which climbs the loss. Gradient *descent* subtracts: θ − lr ∇L.")
        if _close(out, _sgd(model, before, x, y, 1, 0.3, reduction="sum")):
            chk.fail(f"the step is {len(y)} times too large: the loss is summed over the {len(y)} examples. "
                     "Use the mean (F.cross_entropy's default) so that lr does not depend on the batch size.")
        own_weights = {n: p.detach() for n, p in model.named_parameters()}
        if _close(out, {n: before[n] - 0.3 * g for n, g in _grad(model, own_weights, x, y).items()}) or _close(
            out, reference_inner_sgd(model, own_weights, x, y, 1, 0.3)
        ):
            chk.fail("the gradient was taken with the model's own weights, not with `params`: run the network "
                     "with `torch.func.functional_call(model, phi, (x,))`.")
        chk.expect(_close(out, want), _max_error(out, want))

    with chk.case("3 steps of lr 0.2: each gradient at the current parameters"):
        theta = _start(model, seed=3)
        before = _snapshot(theta)
        out = _call(chk, inner_sgd, model, theta, x, y, 3, 0.2)
        _expect_dict(chk, out, theta)
        changed = _unchanged(theta, before)
        if changed:
            chk.fail(f"in-place update: your function changed the initial parameters {changed}.")
        want = reference_inner_sgd(model, before, x, y, 3, 0.2)
        if _close(out, reference_inner_sgd(model, before, x, y, 1, 0.2)):
            chk.fail("three steps gave the result of one: loop `steps` times.")
        if _close(out, _sgd(model, before, x, y, 3, 0.2, grads_at_start=True)):
            chk.fail("every step used the gradient at the starting point θ (that is one step of 3·lr). Recompute the loss "
                     "and its gradient at the *current* parameters in each step.")
        if _close(out, _sgd(model, before, x, y, 3, 0.2, accumulate=True)):
            chk.fail("the gradients accumulate from step to step (`.backward()` adds into `.grad`). Use "
                     "`torch.autograd.grad(loss, list(phi.values()))`, which returns fresh gradients.")
        chk.expect(_close(out, want), _max_error(out, want))

    with chk.case("inside torch.no_grad(), from parameters that do not require grad (as at test time)"):
        theta = {n: p.detach() for n, p in _start(model, seed=4).items()}
        with torch.no_grad():
            out = _call(chk, inner_sgd, model, theta, x, y, 2, 0.25)
        _expect_dict(chk, out, theta)
        want = reference_inner_sgd(model, theta, x, y, 2, 0.25)
        chk.expect(_close(out, want), _max_error(out, want))
    chk.done()


# ---------------------------------------------------------------------------------------
# reptile_step
# ---------------------------------------------------------------------------------------
def _weights(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(3, 2, generator=g, dtype=torch.float64), "b": torch.randn(3, generator=g, dtype=torch.float64)}


def check_reptile_step(reptile_step) -> None:
    """``reptile_step(params, adapted, epsilon) -> dict``: ``θ + ε · mean_i(φ̃_i − θ)``."""
    chk = Check("check_reptile_step", "reptile_step")
    theta = _weights(0)
    tasks = [_weights(s) for s in (1, 2, 3)]

    with chk.case("one task, ε = 1: θ moves all the way to φ̃"):
        out = _call(chk, reptile_step, _snapshot(theta), [_snapshot(tasks[0])], 1.0)
        _expect_dict(chk, out, theta)
        if _close(out, {n: 2 * theta[n] - tasks[0][n] for n in theta}):
            chk.fail("wrong direction: you computed θ − ε(φ̃ − θ), which moves *away* from the adapted weights. "
                     "Reptile moves towards them: θ + ε(φ̃ − θ).")
        chk.expect(_close(out, tasks[0]), "with ε = 1 and one task the result is φ̃ itself: " + _max_error(out, tasks[0]))

    with chk.case("one task, ε = 0.25: a quarter of the way"):
        out = _call(chk, reptile_step, _snapshot(theta), [_snapshot(tasks[0])], 0.25)
        _expect_dict(chk, out, theta)
        want = reference_reptile_step(theta, [tasks[0]], 0.25)
        if _close(out, reference_reptile_step(theta, [tasks[0]], -0.25)):
            chk.fail("wrong direction: you computed θ − ε(φ̃ − θ), which moves *away* from the adapted weights. "
                     "Reptile moves towards them: θ + ε(φ̃ − θ).")
        if _close(out, tasks[0]) or _close(out, theta):
            chk.fail("ε is ignored: the result should lie a fraction ε of the way from θ to φ̃.")
        if _close(out, {n: theta[n] + 0.25 * tasks[0][n] for n in theta}) or _close(out, {n: 0.25 * (tasks[0][n] - theta[n]) for n in theta}):
            chk.fail("use the *difference* φ̃ − θ: θ + ε(φ̃ − θ).")
        chk.expect(_close(out, want), _max_error(out, want))

    with chk.case("three tasks, ε = 0.5: towards the mean of the adapted weights"):
        before, adapted = _snapshot(theta), [_snapshot(t) for t in tasks]
        out = _call(chk, reptile_step, before, adapted, 0.5)
        _expect_dict(chk, out, theta)
        want = reference_reptile_step(theta, tasks, 0.5)
        if _close(out, {n: theta[n] + 0.5 * sum(t[n] - theta[n] for t in tasks) for n in theta}):
            chk.fail("sum instead of mean over tasks: the step grows with the number of tasks (3 times too large here). "
                     "Average the differences: θ + ε · mean_i(φ̃_i − θ).")
        if _close(out, {n: theta[n] - 0.5 * sum(t[n] - theta[n] for t in tasks) / 3 for n in theta}):
            chk.fail("wrong direction: you computed θ − ε · mean(φ̃_i − θ), away from the adapted weights.")
        for i, t in enumerate(tasks):
            if _close(out, reference_reptile_step(theta, [t], 0.5)):
                chk.fail(f"only task {i} of the 3 was used: average over all the adapted weights in the list.")
        chk.expect(_close(out, want), _max_error(out, want))
        if _unchanged(before, theta):
            chk.fail(f"in-place update: your function changed the initial parameters {_unchanged(before, theta)}. "
                     "Return a new dict of new tensors; leave `params` as it was.")
        for i, (a, t) in enumerate(zip(adapted, tasks)):
            if _unchanged(a, t):
                chk.fail(f"in-place update: your function changed the adapted parameters of task {i}. Leave the inputs as they were.")

    with chk.case("θ holds the network's own parameters (leaf tensors that require grad)"):
        leaves = {n: p.clone().requires_grad_() for n, p in theta.items()}
        out = _call(chk, reptile_step, leaves, [_snapshot(t) for t in tasks], 0.5)
        _expect_dict(chk, out, theta)
        if _unchanged(leaves, theta):
            chk.fail("in-place update: your function changed the initial parameters.")
        chk.expect(_close(out, reference_reptile_step(theta, tasks, 0.5)), _max_error(out, reference_reptile_step(theta, tasks, 0.5)))
    chk.done()


# ---------------------------------------------------------------------------------------
# The two together: Reptile with one inner step is SGD on the task loss
# ---------------------------------------------------------------------------------------
def check_reptile_closed_form(inner_sgd, reptile_step) -> None:
    """With one inner SGD step of size α, one Reptile update of size ε is ``θ − εα ∇L(θ)``
    (for several tasks, the gradient of their average loss): Reptile with k = 1 is joint training."""
    chk = Check("check_reptile_closed_form", "inner_sgd` or `reptile_step")
    model = _model()
    alpha, eps = 0.3, 0.5
    theta = _start(model, seed=5)
    tasks = [_task(seed=s) for s in (6, 7, 8)]

    def reptile(k, task_list):
        adapted = [_call(chk, inner_sgd, model, _start(model, seed=5), x, y, k, alpha) for x, y in task_list]
        return _call(chk, reptile_step, {n: p.detach() for n, p in theta.items()}, [{n: p.detach() for n, p in a.items()} for a in adapted], eps)

    with chk.case("one task, one inner step: θ − εα ∇L(θ)"):
        out = reptile(1, tasks[:1])
        _expect_dict(chk, out, theta)
        g = _grad(model, theta, *tasks[0])
        want = {n: theta[n].detach() - eps * alpha * g[n] for n in theta}
        if _close(out, {n: theta[n].detach() + eps * alpha * g[n] for n in theta}):
            chk.fail("the update climbs the loss (θ + εα∇L): one of your two functions has its sign flipped.")
        chk.expect(_close(out, want), _max_error(out, want))

    with chk.case("three tasks, one inner step each: SGD on the average loss, θ − εα ∇(mean_i L_i)(θ)"):
        out = reptile(1, tasks)
        grads = [_grad(model, theta, x, y) for x, y in tasks]
        want = {n: theta[n].detach() - eps * alpha * sum(g[n] for g in grads) / 3 for n in theta}
        if _close(out, {n: theta[n].detach() - eps * alpha * sum(g[n] for g in grads) for n in theta}):
            chk.fail("three times the expected step: the tasks are summed, not averaged.")
        chk.expect(_close(out, want), _max_error(out, want))

    # Not a check, a pointer to chapter 05: with k = 2 the update is no longer joint SGD.
    x, y = tasks[0]
    two = reptile(2, tasks[:1])
    g = _grad(model, theta, x, y)
    joint = {n: theta[n].detach() - 2 * eps * alpha * g[n] for n in theta}
    gap = sum(float((two[n].detach() - joint[n]).norm() ** 2) for n in theta) ** 0.5
    chk.done()
    print(f"  (with k = 2 inner steps, Reptile differs from SGD with step 2εα by {gap:.2e}: the α² AvgGradInner "
          "term of chapter 05, which joint training lacks)")
