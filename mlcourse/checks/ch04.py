"""Checks for the chapter 04 exercise: the functional inner loop and the MAML meta-gradient."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..optim import adapt, meta_gradient
from ..optim.inner_loop import functional_forward
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


def _close(a, b, tol=1e-8):
    return all(torch.allclose(a[n], b[n], atol=tol, rtol=1e-6) for n in b)


def check_inner_loop(inner_loop) -> None:
    """``inner_loop(model, params, x, y, steps, lr, first_order=False) -> adapted params``."""
    chk = Check("check_inner_loop", "inner_loop")
    model, params, (sx, sy, qx, qy) = _problem()
    before = {n: p.detach().clone() for n, p in params.items()}
    want = {n: p.detach() for n, p in adapt(model, params, {}, sx[0], sy[0], steps=3, lr=0.5).items()}
    one_step = {n: p.detach() for n, p in adapt(model, params, {}, sx[0], sy[0], steps=1, lr=0.5).items()}
    maml = meta_gradient(model, (sx, sy, qx, qy), inner_steps=3, inner_lr=0.5, params=params).grads
    fo = meta_gradient(model, (sx, sy, qx, qy), inner_steps=3, inner_lr=0.5, params=params, first_order=True).grads
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
        loss = F.cross_entropy(functional_forward(model, out, {}, qx[0]), qy[0])
        chk.expect(loss.requires_grad, DETACHED)
        got = torch.autograd.grad(loss, list(params.values()), allow_unused=True, materialize_grads=True)
        got = dict(zip(params, got))
        if _close(got, fo, 1e-7) and not _close(got, maml, 1e-7):
            chk.fail("the meta-gradient through your loop is the *first-order* one: pass create_graph=True to "
                     "torch.autograd.grad so the inner gradients are recorded")
        chk.expect(_close(got, maml, 1e-7), "the meta-gradient through your loop differs from MAML's (check the update rule)")
    with chk.case("first_order=True treats the inner gradients as constants"):
        out = _call(chk, inner_loop, model, params, sx[0], sy[0], 3, 0.5, first_order=True)
        loss = F.cross_entropy(functional_forward(model, out, {}, qx[0]), qy[0])
        got = dict(zip(params, torch.autograd.grad(loss, list(params.values()), allow_unused=True, materialize_grads=True)))
        chk.expect(_close(got, fo, 1e-7), "with first_order=True the meta-gradient should be FOMAML's: "
                   "create_graph=False, but keep the update itself differentiable (no .detach() of the parameters)")
    chk.done()


def check_maml_meta_gradient(maml_meta_gradient) -> None:
    """``maml_meta_gradient(model, params, tasks, steps, lr) -> {name: gradient}``: the gradient
    of the mean query loss after adaptation, over a batch of tasks."""
    chk = Check("check_maml_meta_gradient", "maml_meta_gradient")
    model, params, tasks = _problem(seed=1, tasks=3)
    want = meta_gradient(model, tasks, inner_steps=2, inner_lr=0.3, params=params).grads
    with chk.case("3 tasks, 2 inner steps of 0.3"):
        out = chk.call(maml_meta_gradient, model, params, tasks, 2, 0.3)
        chk.expect(isinstance(out, dict) and set(out) == set(params), f"expected a dict with the keys {sorted(params)}")
        if _close(out, {n: 3 * g for n, g in want.items()}, 1e-7):
            chk.fail("your gradient is 3x too large: average the query losses over the tasks instead of summing them")
        fo = meta_gradient(model, tasks, inner_steps=2, inner_lr=0.3, params=params, first_order=True).grads
        if _close(out, fo, 1e-7):
            chk.fail("that is the first-order gradient: the inner loop must use create_graph=True")
        chk.expect(_close(out, want, 1e-7), "the meta-gradient differs from MAML's; "
                   f"e.g. {next(iter(want))}: expected {want[next(iter(want))].flatten()[:3].tolist()}, got {out[next(iter(want))].flatten()[:3].tolist()}")
    with chk.case("nothing is written into .grad of the parameters (return the gradients instead)"):
        stale = [n for n, p in params.items() if p.grad is not None]
        chk.expect(not stale, f"{stale} have a .grad: use torch.autograd.grad rather than .backward() so the caller decides what to do")
    chk.done()
