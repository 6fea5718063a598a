"""The chapter 05 checks accept the library's Reptile pieces and catch the classic mistakes."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from mlcourse.checks import CheckFailed
from mlcourse.checks.ch05 import check_inner_sgd, check_reptile_closed_form, check_reptile_step
from mlcourse.optim import adapt, inner_train, reptile_update


# -- reference answers: the library behind the exercise's signatures ---------------------
def library_inner_sgd(model, params, x, y, steps, lr):
    return adapt(model, params, {}, x, y, steps=steps, lr=lr, first_order=True)


def library_inner_train(model, params, x, y, steps, lr):
    return inner_train(model, params, {}, x, y, steps=steps, lr=lr, optimizer="sgd", batch_size=None)


def solution_inner_sgd(model, params, x, y, steps, lr):
    """What the solution notebook writes."""
    with torch.enable_grad():
        phi = {n: p.detach().requires_grad_() for n, p in params.items()}
        for _ in range(steps):
            loss = F.cross_entropy(functional_call(model, phi, (x,)), y)
            grads = torch.autograd.grad(loss, list(phi.values()))
            phi = {n: p - lr * g for (n, p), g in zip(phi.items(), grads)}
    return {n: p.detach() for n, p in phi.items()}


def solution_reptile_step(params, adapted, epsilon):
    return {n: p + epsilon * (torch.stack([a[n] for a in adapted]).mean(0) - p) for n, p in params.items()}


@pytest.mark.parametrize("inner", [library_inner_sgd, library_inner_train, solution_inner_sgd])
@pytest.mark.parametrize("step", [reptile_update, solution_reptile_step])
def test_reference_solutions_pass(inner, step, capsys):
    check_inner_sgd(inner)
    check_reptile_step(step)
    check_reptile_closed_form(inner, step)
    out = capsys.readouterr().out
    assert out.count("✓") == 3
    assert "AvgGradInner" in out


def unimplemented(*args):
    raise NotImplementedError()


def test_unimplemented_says_so():
    for check in (check_inner_sgd, check_reptile_step):
        with pytest.raises(CheckFailed, match="is not implemented yet"):
            check(unimplemented)
    with pytest.raises(CheckFailed, match="is not implemented yet"):
        check_reptile_closed_form(unimplemented, solution_reptile_step)
    with pytest.raises(CheckFailed, match="is not implemented yet"):
        check_reptile_closed_form(solution_inner_sgd, unimplemented)


# -- inner_sgd mistakes -------------------------------------------------------------------
def _sgd(sign=1.0, reduction="mean", grads_at_start=False, one_step=False):
    def inner_sgd(model, params, x, y, steps, lr):
        with torch.enable_grad():
            phi = {n: p.detach().requires_grad_() for n, p in params.items()}
            g0 = None
            for _ in range(1 if one_step and steps else steps):
                if grads_at_start and g0 is not None:
                    grads = g0
                else:
                    loss = F.cross_entropy(functional_call(model, phi, (x,)), y, reduction=reduction)
                    grads = torch.autograd.grad(loss, list(phi.values()))
                    g0 = grads
                phi = {n: (p - sign * lr * g).detach().requires_grad_() for (n, p), g in zip(phi.items(), grads)}
        return {n: p.detach() for n, p in phi.items()}

    return inner_sgd


def accumulating(model, params, x, y, steps, lr):
    """.backward() into leaves that are updated through .data and never zeroed."""
    with torch.enable_grad():
        phi = {n: p.detach().clone().requires_grad_() for n, p in params.items()}
        for _ in range(steps):
            F.cross_entropy(functional_call(model, phi, (x,)), y).backward()
            for p in phi.values():
                p.data -= lr * p.grad
    return {n: p.detach() for n, p in phi.items()}


def writes_into_params(model, params, x, y, steps, lr):
    """Updates the caller's tensors through .data."""
    with torch.enable_grad():
        phi = {n: p if p.requires_grad else p.requires_grad_() for n, p in params.items()}
        for _ in range(steps):
            loss = F.cross_entropy(functional_call(model, phi, (x,)), y)
            grads = torch.autograd.grad(loss, list(phi.values()))
            for p, g in zip(phi.values(), grads):
                p.data -= lr * g
    return phi


def optimizer_on_model(model, params, x, y, steps, lr):
    """The ordinary training loop on the shared model."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(params[n])
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def calls_model_directly(model, params, x, y, steps, lr):
    phi = {n: p.detach().requires_grad_() for n, p in params.items()}
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, list(phi.values()))
        phi = {n: p - lr * g for (n, p), g in zip(phi.items(), grads)}
    return phi


def no_enable_grad(model, params, x, y, steps, lr):
    phi = dict(params)
    for _ in range(steps):
        loss = F.cross_entropy(functional_call(model, phi, (x,)), y)
        grads = torch.autograd.grad(loss, list(phi.values()))
        phi = {n: p - lr * g for (n, p), g in zip(phi.items(), grads)}
    return phi


@pytest.mark.parametrize(
    "fn,case,message",
    [
        (_sgd(sign=-1.0), "1 step", "wrong direction"),
        (_sgd(reduction="sum"), "1 step", "12 times too large"),
        (_sgd(grads_at_start=True), "3 steps", "gradient at the starting point"),
        (_sgd(one_step=True), "3 steps", "three steps gave the result of one"),
        (accumulating, "3 steps", "gradients accumulate"),
        (writes_into_params, "1 step", "in-place update: your function changed the initial parameters"),
        (optimizer_on_model, "1 step", "changed the model's own weights"),
        (calls_model_directly, "1 step", "functional_call"),
        (no_enable_grad, "torch.no_grad()", "torch.enable_grad()"),
    ],
    ids=["ascent", "summed-loss", "stale-gradient", "one-step", "accumulated-grad", "in-place", "optimizer-on-model", "model(x)", "no-enable-grad"],
)
def test_inner_sgd_mistakes_are_named(fn, case, message):
    with pytest.raises(CheckFailed) as err:
        check_inner_sgd(fn)
    assert case in str(err.value), str(err.value)
    assert message in str(err.value), str(err.value)


# -- reptile_step mistakes ----------------------------------------------------------------
def wrong_direction(params, adapted, epsilon):
    return {n: p - epsilon * (torch.stack([a[n] for a in adapted]).mean(0) - p) for n, p in params.items()}


def summed(params, adapted, epsilon):
    return {n: p + epsilon * sum(a[n] - p for a in adapted) for n, p in params.items()}


def first_task_only(params, adapted, epsilon):
    return {n: p + epsilon * (adapted[0][n] - p) for n, p in params.items()}


def ignores_epsilon(params, adapted, epsilon):
    return {n: torch.stack([a[n] for a in adapted]).mean(0) for n in params}


def in_place_data(params, adapted, epsilon):
    for n, p in params.items():
        p.data += epsilon * (torch.stack([a[n] for a in adapted]).mean(0) - p.data)
    return params


def in_place_operator(params, adapted, epsilon):
    for n, p in params.items():
        p += epsilon * (torch.stack([a[n] for a in adapted]).mean(0) - p)
    return params


def returns_a_list(params, adapted, epsilon):
    return [p + epsilon * (torch.stack([a[n] for a in adapted]).mean(0) - p) for n, p in params.items()]


@pytest.mark.parametrize(
    "fn,case,message",
    [
        (wrong_direction, "ε = 1", "wrong direction"),
        (summed, "three tasks", "sum instead of mean over tasks"),
        (first_task_only, "three tasks", "only task 0 of the 3"),
        (ignores_epsilon, "ε = 0.25", "ε is ignored"),
        (in_place_data, "three tasks", "in-place update: your function changed the initial parameters"),
        (in_place_operator, "three tasks", "in-place update: your function changed the initial parameters"),
        (returns_a_list, "ε = 1", "expected a dict"),
    ],
    ids=["wrong-direction", "sum", "first-task", "no-epsilon", "in-place-data", "in-place-operator", "list"],
)
def test_reptile_step_mistakes_are_named(fn, case, message):
    with pytest.raises(CheckFailed) as err:
        check_reptile_step(fn)
    assert case in str(err.value), str(err.value)
    assert message in str(err.value), str(err.value)


def test_in_place_on_leaves_that_require_grad_is_named():
    """`p += ...` on a parameter that requires grad raises inside autograd: the message still says in-place."""

    def in_place_only_on_leaves(params, adapted, epsilon):
        if any(p.requires_grad for p in params.values()):
            return in_place_operator(params, adapted, epsilon)
        return solution_reptile_step(params, adapted, epsilon)

    with pytest.raises(CheckFailed, match="in-place update") as err:
        check_reptile_step(in_place_only_on_leaves)
    assert "require grad" in str(err.value)


def test_closed_form_names_a_flipped_sign_and_a_sum():
    with pytest.raises(CheckFailed, match="sign flipped"):
        check_reptile_closed_form(_sgd(sign=-1.0), solution_reptile_step)
    with pytest.raises(CheckFailed, match="summed, not averaged"):
        check_reptile_closed_form(solution_inner_sgd, summed)
