"""The chapter 04 checks judge the learner against an independent reference: a hand-written
inner loop on the checks' small network, itself checked here against central finite
differences of the MAML objective, and against the library (which must agree with it)."""

from __future__ import annotations

import pytest
import torch

from mlcourse.checks import CheckFailed
from mlcourse.checks import ch04
from mlcourse.checks.ch04 import (
    _problem,
    check_maml_meta_gradient,
    reference_forward,
    reference_inner_loop,
    reference_meta_gradient,
    reference_meta_loss,
)
from mlcourse.optim import adapt, meta_gradient

# (seed, tasks, inner steps, inner lr): the two problems the checks pose, and a longer one
PROBLEMS = [(0, 1, 3, 0.5), (1, 3, 2, 0.3), (2, 2, 5, 0.4)]


def finite_differences(params, tasks, steps, lr, h=1e-6):
    """Central differences of the MAML objective, every coordinate of every parameter."""
    theta = {n: p.detach().clone() for n, p in params.items()}
    grads = {}
    for name, p in theta.items():
        g = torch.zeros_like(p)
        for i in range(p.numel()):
            values = []
            for sign in (1, -1):
                moved = {n: q.clone() for n, q in theta.items()}
                moved[name].view(-1)[i] += sign * h
                moved = {n: q.requires_grad_() for n, q in moved.items()}
                values.append(reference_meta_loss(moved, tasks, steps, lr).item())
            g.view(-1)[i] = (values[0] - values[1]) / (2 * h)
        grads[name] = g
    return grads


def max_diff(a, b):
    return max((a[n] - b[n]).abs().max().item() for n in b)


def test_reference_network_is_the_checks_network():
    model, params, (sx, _, qx, _) = _problem(seed=0, tasks=2)
    for x in (sx[0], qx[1]):
        torch.testing.assert_close(reference_forward(params, x), model(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed,tasks,steps,lr", PROBLEMS)
def test_reference_meta_gradient_matches_finite_differences(seed, tasks, steps, lr):
    _, params, problem = _problem(seed=seed, tasks=tasks)
    fd = finite_differences(params, problem, steps, lr)
    second = reference_meta_gradient(params, problem, steps, lr)
    assert max_diff(second, fd) < 1e-7
    # the first-order reference is a different vector: the comparison above can tell them apart
    first = reference_meta_gradient(params, problem, steps, lr, first_order=True)
    assert max_diff(first, fd) > 1e-3


@pytest.mark.parametrize("seed,tasks,steps,lr", PROBLEMS)
def test_library_agrees_with_the_reference(seed, tasks, steps, lr):
    model, params, problem = _problem(seed=seed, tasks=tasks)
    sx, sy = problem[0], problem[1]
    for first_order in (False, True):
        ours = adapt(model, params, {}, sx[0], sy[0], steps=steps, lr=lr, first_order=first_order)
        ref = reference_inner_loop(params, sx[0], sy[0], steps, lr, first_order)
        assert max_diff({n: p.detach() for n, p in ours.items()}, {n: p.detach() for n, p in ref.items()}) < 1e-12
        for vectorize in (False, True):
            lib = meta_gradient(model, problem, inner_steps=steps, inner_lr=lr, params=params,
                                first_order=first_order, vectorize=vectorize).grads  # fmt: skip
            assert max_diff(lib, reference_meta_gradient(params, problem, steps, lr, first_order)) < 1e-10


def test_a_bug_in_the_library_cannot_pass_as_the_expected_answer(monkeypatch):
    """With the library wrong (here: its inner step 5% too long), an exercise that calls the
    library must fail the check: the expected answer does not come from the library."""

    def buggy_meta_gradient(model, tasks, *, inner_lr, **kwargs):
        return meta_gradient(model, tasks, inner_lr=1.05 * inner_lr, **kwargs)

    def buggy_adapt(model, params, buffers, x, y, *, lr, **kwargs):
        return adapt(model, params, buffers, x, y, lr=1.05 * lr, **kwargs)

    # where the checks would find the library, had they used it
    monkeypatch.setattr(ch04, "meta_gradient", buggy_meta_gradient, raising=False)
    monkeypatch.setattr(ch04, "adapt", buggy_adapt, raising=False)
    learner = lambda m, p, t, s, lr: buggy_meta_gradient(m, t, inner_steps=s, inner_lr=lr, params=p).grads  # noqa: E731
    with pytest.raises(CheckFailed, match="differs from MAML's"):
        check_maml_meta_gradient(learner)
    inner = lambda m, p, x, y, s, lr, first_order=False: buggy_adapt(m, p, {}, x, y, steps=s, lr=lr, first_order=first_order)  # noqa: E731
    with pytest.raises(CheckFailed, match="adapted values differ"):
        ch04.check_inner_loop(inner)
