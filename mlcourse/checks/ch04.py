"""Checks for the chapter 04 exercise: the functional inner loop and the MAML meta-gradient.

The expected answers do not come from the library's own ``mlcourse.optim.adapt`` and
``meta_gradient`` (a bug there would then pass as correct): they come from the reference
below, the inner loop written out by hand for the one small network the checks use, with
no ``functional_call``. ``tests/test_checks_ch04.py`` checks that this reference agrees with
central finite differences of the MAML objective and with the library.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import Check, CheckFailed

DETACHED = ("the adapted parameters are detached from θ: no .detach(), .data, torch.no_grad() or .item() "
            "in the inner loop")


def _call(chk: Check, fn, *args, **kwargs):
    """Call the learner's function; a 'does not require grad' crash means a detached update."""
    try:
        return chk.call(fn, *args, **kwargs)
    except CheckFailed as err:
        if "does not require grad" in str(err):
            chk.fail(DETACHED + " (a later step could not differentiate the previous step's output)")
        raise


def _problem(seed=0, tasks=1):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    sx = torch.randn(tasks, 9, 3, generator=g, dtype=torch.float64)
    sy = torch.randint(0, 3, (tasks, 9), generator=g)
    qx = torch.randn(tasks, 6, 3, generator=g, dtype=torch.float64)
    qy = torch.randint(0, 3, (tasks, 6), generator=g)
    return model, params, (sx, sy, qx, qy)


# ---- the reference: the network of _problem and its inner loop, by hand -----------------
def reference_forward(params: dict, x: torch.Tensor) -> torch.Tensor:
    """``Linear(3, 6) -> Tanh -> Linear(6, 3)`` of :func:`_problem`, from its weights."""
    hidden = torch.tanh(x @ params["0.weight"].T + params["0.bias"])
    return hidden @ params["2.weight"].T + params["2.bias"]


def reference_inner_loop(params: dict, x, y, steps: int, lr: float, first_order: bool = False) -> dict:
    """``steps`` SGD steps θ' <- θ' - lr ∇L(θ'), out of place; the inner gradients are recorded
    in the graph (second order) unless ``first_order``."""
    fast = dict(params)
    for _ in range(steps):
        loss = F.cross_entropy(reference_forward(fast, x), y)
        grads = torch.autograd.grad(loss, list(fast.values()), create_graph=not first_order)
        fast = {n: p - lr * g for (n, p), g in zip(fast.items(), grads)}
    return fast


def reference_meta_loss(params: dict, tasks, steps: int, lr: float, first_order: bool = False) -> torch.Tensor:
    """Mean over the tasks of the query loss after adapting to the support set."""
    sx, sy, qx, qy = tasks
    losses = [F.cross_entropy(reference_forward(reference_inner_loop(params, sx[t], sy[t], steps, lr, first_order), qx[t]), qy[t])
              for t in range(len(sx))]  # fmt: skip
    return torch.stack(losses).mean()


def reference_meta_gradient(params: dict, tasks, steps: int, lr: float, first_order: bool = False) -> dict:
    """∇_θ of :func:`reference_meta_loss`: MAML's meta-gradient, or FOMAML's with ``first_order``."""
    grads = torch.autograd.grad(reference_meta_loss(params, tasks, steps, lr, first_order), list(params.values()))
    return dict(zip(params, grads))


def _detached(params: dict) -> dict:
    return {n: p.detach() for n, p in params.items()}


def _close(a, b, tol=1e-8):
    return all(torch.allclose(a[n], b[n], atol=tol, rtol=1e-6) for n in b)


def check_inner_loop(inner_loop) -> None:
    """``inner_loop(model, params, x, y, steps, lr, first_order=False) -> adapted params``."""
    chk = Check("check_inner_loop", "inner_loop")
    model, params, (sx, sy, qx, qy) = _problem()
    before = {n: p.detach().clone() for n, p in params.items()}
    want = _detached(reference_inner_loop(params, sx[0], sy[0], 3, 0.5))
    one_step = _detached(reference_inner_loop(params, sx[0], sy[0], 1, 0.5))
    maml = reference_meta_gradient(params, (sx, sy, qx, qy), 3, 0.5)
    fo = reference_meta_gradient(params, (sx, sy, qx, qy), 3, 0.5, first_order=True)
    with chk.case("3 SGD steps of size 0.5 on a small network"):
        out = _call(chk, inner_loop, model, params, sx[0], sy[0], 3, 0.5)
        chk.expect(isinstance(out, dict) and set(out) == set(params),
                   f"expected a dict with the keys {sorted(params)}, got {type(out).__name__} {sorted(out) if isinstance(out, dict) else ''}")
        for n in params:
            chk.expect(out[n].shape == params[n].shape, f"{n}: shape {tuple(out[n].shape)}, expected {tuple(params[n].shape)}")
        if _close(out, one_step):
            chk.fail("the result equals one step: loop `steps` times, each step starting from the previous step's parameters")
        chk.expect(_close({n: p.detach() for n, p in out.items()}, want), "the adapted values differ from θ - α∇L applied 3 times "
                   f"(e.g. {n}: expected {want[n].flatten()[:3].tolist()}, got {out[n].detach().flatten()[:3].tolist()})")
    with chk.case("the initial parameters are left unchanged"):
        changed = [n for n in params if not torch.equal(params[n].detach(), before[n])]
        chk.expect(not changed, f"in-place update: your function changed the initial parameters {changed}. "
                   "Build new tensors (p - lr * g) instead of writing into p or p.data")
    with chk.case("the adapted parameters stay connected to θ (second order)"):
        loss = F.cross_entropy(reference_forward(out, qx[0]), qy[0])
        chk.expect(loss.requires_grad, DETACHED)
        got = torch.autograd.grad(loss, list(params.values()), allow_unused=True, materialize_grads=True)
        got = dict(zip(params, got))
        if _close(got, fo, 1e-7) and not _close(got, maml, 1e-7):
            chk.fail("the meta-gradient through your loop is the *first-order* one: pass create_graph=True to "
                     "torch.autograd.grad so the inner gradients are recorded")
        chk.expect(_close(got, maml, 1e-7), "the meta-gradient through your loop differs from MAML's (check the update rule)")
    with chk.case("first_order=True treats the inner gradients as constants"):
        out = _call(chk, inner_loop, model, params, sx[0], sy[0], 3, 0.5, first_order=True)
        loss = F.cross_entropy(reference_forward(out, qx[0]), qy[0])
        got = dict(zip(params, torch.autograd.grad(loss, list(params.values()), allow_unused=True, materialize_grads=True)))
        chk.expect(_close(got, fo, 1e-7), "with first_order=True the meta-gradient should be FOMAML's: "
                   "create_graph=False, but keep the update itself differentiable (no .detach() of the parameters)")
    chk.done()


def check_maml_meta_gradient(maml_meta_gradient) -> None:
    """``maml_meta_gradient(model, params, tasks, steps, lr) -> {name: gradient}``: the gradient
    of the mean query loss after adaptation, over a batch of tasks."""
    chk = Check("check_maml_meta_gradient", "maml_meta_gradient")
    model, params, tasks = _problem(seed=1, tasks=3)
    want = reference_meta_gradient(params, tasks, 2, 0.3)
    with chk.case("3 tasks, 2 inner steps of 0.3"):
        out = chk.call(maml_meta_gradient, model, params, tasks, 2, 0.3)
        chk.expect(isinstance(out, dict) and set(out) == set(params), f"expected a dict with the keys {sorted(params)}")
        if _close(out, {n: 3 * g for n, g in want.items()}, 1e-7):
            chk.fail("your gradient is 3x too large: average the query losses over the tasks instead of summing them")
        fo = reference_meta_gradient(params, tasks, 2, 0.3, first_order=True)
        if _close(out, fo, 1e-7):
            chk.fail("that is the first-order gradient: the inner loop must use create_graph=True")
        chk.expect(_close(out, want, 1e-7), "the meta-gradient differs from MAML's; "
                   f"e.g. {next(iter(want))}: expected {want[next(iter(want))].flatten()[:3].tolist()}, got {out[next(iter(want))].flatten()[:3].tolist()}")
    with chk.case("nothing is written into .grad of the parameters (return the gradients instead)"):
        stale = [n for n, p in params.items() if p.grad is not None]
        chk.expect(not stale, f"{stale} have a .grad: use torch.autograd.grad rather than .backward() so the caller decides what to do")
    chk.done()
