"""The chapter 06 checks accept the Meta-SGD meta-gradient written by hand (and the library's),
agree with finite differences, and name each classic mistake."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from mlcourse.checks import CheckFailed
from mlcourse.checks import ch06
from mlcourse.checks.ch06 import check_hessian_vector_product, check_lr_meta_gradient, check_param_meta_gradient
from mlcourse.optim.maml import meta_gradient


# -- the solution notebook's answers ------------------------------------------------------
def loss_gradient(model, params, x, y, loss_fn=F.cross_entropy):
    with torch.enable_grad():
        leaves = {n: p.detach().requires_grad_() for n, p in params.items()}
        loss = loss_fn(functional_call(model, leaves, (x,)), y)
        return dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))


def solution_hvp(model, params, x, y, v, loss_fn=F.cross_entropy):
    with torch.enable_grad():
        theta = {n: p.detach().requires_grad_() for n, p in params.items()}
        loss = loss_fn(functional_call(model, theta, (x,)), y)
        grads = torch.autograd.grad(loss, list(theta.values()), create_graph=True)
        dot = sum((g * v[n]).sum() for n, g in zip(theta, grads))
        hv = torch.autograd.grad(dot, list(theta.values()))
    return dict(zip(theta, hv))


def _meta(hvp=solution_hvp, query_at_theta=False, transposed=True, hessian_sign=-1.0, second_order=True, lr_sign=-1.0,
          lr_extra_alpha=False):
    """The solution's meta-gradient, with switches for each classic mistake."""

    def metasgd_meta_gradient(model, params, lrs, support, query, loss_fn=F.cross_entropy):
        (xs, ys), (xq, yq) = support, query
        g_s = loss_gradient(model, params, xs, ys, loss_fn)
        alpha = {n: a.detach() for n, a in lrs.items()}
        adapted = {n: p.detach() - alpha[n] * g_s[n] for n, p in params.items()}
        g_q = loss_gradient(model, params if query_at_theta else adapted, xq, yq, loss_fn)
        if not second_order:
            d_theta = g_q
        elif transposed:
            hv = hvp(model, params, xs, ys, {n: alpha[n] * g_q[n] for n in params}, loss_fn)
            d_theta = {n: g_q[n] + hessian_sign * hv[n] for n in params}
        else:
            hv = hvp(model, params, xs, ys, g_q, loss_fn)
            d_theta = {n: g_q[n] + hessian_sign * alpha[n] * hv[n] for n in params}
        d_alpha = {n: lr_sign * g_q[n] * g_s[n] * (alpha[n] if lr_extra_alpha else 1) for n in params}
        return d_theta, d_alpha

    return metasgd_meta_gradient


solution_meta_gradient = _meta()


def library_meta_gradient(model, params, lrs, support, query, loss_fn=F.cross_entropy):
    """mlcourse.optim.maml.meta_gradient with a dict of rates that require grad (as MetaSGD does)."""
    (xs, ys), (xq, yq) = support, query
    lrs = {n: a.detach().requires_grad_() for n, a in lrs.items()}
    result = meta_gradient(model, (xs[None], ys[None], xq[None], yq[None]), inner_steps=1, inner_lr=lrs,
                           params={n: p.detach().requires_grad_() for n, p in params.items()}, buffers={}, loss_fn=loss_fn)
    return result.grads, result.lr_grads


def autograd_through_the_update(model, params, lrs, support, query, loss_fn=F.cross_entropy):
    """What the exercise forbids, but it is right: the checks cannot tell, and need not."""
    return ch06.reference_meta_gradient(model, params, lrs, support, query, loss_fn)


@pytest.mark.parametrize("fn", [solution_meta_gradient, library_meta_gradient, autograd_through_the_update],
                         ids=["by-hand", "library", "autograd"])
def test_right_answers_pass(fn, capsys):
    check_lr_meta_gradient(fn)
    check_param_meta_gradient(fn)
    assert capsys.readouterr().out.count("✓") == 2


def test_hvp_passes(capsys):
    check_hessian_vector_product(solution_hvp)
    assert "✓" in capsys.readouterr().out


def unimplemented(*args, **kwargs):
    raise NotImplementedError()


def test_unimplemented_says_so():
    for check in (check_hessian_vector_product, check_lr_meta_gradient, check_param_meta_gradient):
        with pytest.raises(CheckFailed, match="is not implemented yet"):
            check(unimplemented)


# -- the references are right: central finite differences ---------------------------------
def _finite_difference(f, tensors, eps=1e-6):
    out = {}
    for n, t in tensors.items():
        grad = torch.zeros_like(t)
        for i in range(t.numel()):
            plus = {k: v.detach().clone() for k, v in tensors.items()}
            minus = {k: v.detach().clone() for k, v in tensors.items()}
            plus[n].view(-1)[i] += eps
            minus[n].view(-1)[i] -= eps
            grad.view(-1)[i] = (f(plus) - f(minus)) / (2 * eps)
        out[n] = grad
    return out


@pytest.mark.parametrize("case", [0, 1, 2])
def test_reference_meta_gradient_matches_finite_differences(case):
    _, model, params, lrs, (xs, ys), (xq, yq), loss_fn = ch06._problems()[case]

    def query_loss(theta, alpha):
        g = loss_gradient(model, theta, xs, ys, loss_fn)
        adapted = {n: theta[n] - alpha[n] * g[n] for n in theta}
        return float(loss_fn(functional_call(model, adapted, (xq,)), yq).detach())

    d_theta, d_alpha = ch06.reference_meta_gradient(model, params, lrs, (xs, ys), (xq, yq), loss_fn)
    fd_theta = _finite_difference(lambda t: query_loss(t, lrs), params)
    fd_alpha = _finite_difference(lambda a: query_loss(params, a), lrs)
    for n in params:
        torch.testing.assert_close(d_theta[n], fd_theta[n], atol=1e-7, rtol=1e-5)
        torch.testing.assert_close(d_alpha[n], fd_alpha[n], atol=1e-7, rtol=1e-5)


def test_reference_hvp_matches_finite_differences():
    model = ch06._classifier()
    params = ch06._start(model, seed=3)
    x, y = ch06._classification(4, 10)
    v = {n: torch.randn_like(p) for n, p in params.items()}
    want = ch06.reference_hessian_vector_product(model, params, x, y, v)
    # central differences of the gradient along v
    eps = 1e-6
    plus = loss_gradient(model, {n: p.detach() + eps * v[n] for n, p in params.items()}, x, y)
    minus = loss_gradient(model, {n: p.detach() - eps * v[n] for n, p in params.items()}, x, y)
    for n in params:
        torch.testing.assert_close(want[n], (plus[n] - minus[n]) / (2 * eps), atol=1e-7, rtol=1e-5)


def test_the_cases_tell_the_transpose_apart():
    """With per-weight α, the untransposed Jacobian is far from the answer (not within round-off)."""
    for _, model, params, lrs, support, query, loss_fn in ch06._problems()[1:]:
        P = ch06._Pieces(model, params, lrs, support, query, loss_fn)
        wrong, right = P.d_theta(transposed=False), P.right[0]
        gap = max(float((wrong[n] - right[n]).abs().max()) for n in right)
        assert gap > 1e-4, gap


# -- the mistakes are named ---------------------------------------------------------------
def first_order_hvp(model, params, x, y, v, loss_fn=F.cross_entropy):
    return loss_gradient(model, params, x, y, loss_fn)


def negative_hvp(model, params, x, y, v, loss_fn=F.cross_entropy):
    return {n: -h for n, h in solution_hvp(model, params, x, y, v, loss_fn).items()}


def hvp_ignores_v(model, params, x, y, v, loss_fn=F.cross_entropy):
    return solution_hvp(model, params, x, y, {n: torch.ones_like(t) for n, t in v.items()}, loss_fn)


def finite_difference_hvp(model, params, x, y, v, loss_fn=F.cross_entropy):
    eps = 1e-4
    moved = loss_gradient(model, {n: p.detach() + eps * v[n] for n, p in params.items()}, x, y, loss_fn)
    here = loss_gradient(model, params, x, y, loss_fn)
    return {n: (moved[n] - here[n]) / eps for n in params}


def hvp_without_create_graph(model, params, x, y, v, loss_fn=F.cross_entropy):
    theta = {n: p.detach().requires_grad_() for n, p in params.items()}
    grads = torch.autograd.grad(loss_fn(functional_call(model, theta, (x,)), y), list(theta.values()))
    dot = sum((g * v[n]).sum() for n, g in zip(theta, grads))
    return dict(zip(theta, torch.autograd.grad(dot, list(theta.values()))))


def hvp_with_backward(model, params, x, y, v, loss_fn=F.cross_entropy):
    """Uses the caller's tensors and .backward(): the Hessian-vector product lands in their .grad."""
    loss = loss_fn(functional_call(model, params, (x,)), y)
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
    sum((g * v[n]).sum() for n, g in zip(params, grads)).backward()
    return {n: p.grad.clone() for n, p in params.items()}


def hvp_on_model(model, params, x, y, v, loss_fn=F.cross_entropy):
    own = dict(model.named_parameters())
    loss = loss_fn(model(x), y)
    grads = torch.autograd.grad(loss, list(own.values()), create_graph=True)
    dot = sum((g * v[n]).sum() for n, g in zip(own, grads))
    return dict(zip(own, torch.autograd.grad(dot, list(own.values()))))


@pytest.mark.parametrize(
    "fn,case,message",
    [
        (first_order_hvp, "a small classifier", "that is the gradient"),
        (negative_hvp, "a small classifier", "wrong sign"),
        (hvp_ignores_v, "a small classifier", "`v` is ignored"),
        (finite_difference_hvp, "a small classifier", "approximately right"),
        (hvp_without_create_graph, "a small classifier", "create_graph=True"),
        (hvp_with_backward, "a small classifier", "leaked into `.grad`"),
        (hvp_on_model, "a small classifier", "the model's own weights"),
    ],
    ids=["gradient", "sign", "ignores-v", "finite-differences", "no-create-graph", "backward", "model-weights"],
)
def test_hvp_mistakes_are_named(fn, case, message):
    with pytest.raises(CheckFailed) as err:
        check_hessian_vector_product(fn)
    assert case in str(err.value), str(err.value)
    assert message in str(err.value), str(err.value)


def meta_with_backward(model, params, lrs, support, query, loss_fn=F.cross_entropy):
    """Right values, but computed with .backward() into the caller's leaves."""
    d_theta, d_alpha = solution_meta_gradient(model, params, lrs, support, query, loss_fn)
    loss_fn(functional_call(model, params, (support[0],)), support[1]).backward()
    return d_theta, d_alpha


def meta_in_place(model, params, lrs, support, query, loss_fn=F.cross_entropy):
    """Takes the inner step in place, in the caller's θ (right values, computed before the damage)."""
    d_theta, d_alpha = solution_meta_gradient(model, params, lrs, support, query, loss_fn)
    g_s = loss_gradient(model, params, *support, loss_fn)
    with torch.no_grad():
        for n, p in params.items():
            p -= lrs[n] * g_s[n]
    return d_theta, d_alpha


def meta_on_model(model, params, lrs, support, query, loss_fn=F.cross_entropy):
    own = {n: p.detach() for n, p in model.named_parameters()}
    return solution_meta_gradient(model, own, lrs, support, query, loss_fn)


def meta_without_alpha(model, params, lrs, support, query, loss_fn=F.cross_entropy):
    """The right step, but MAML's Hessian term with one rate, the mean of α."""
    (xs, ys), (xq, yq) = support, query
    g_s = loss_gradient(model, params, xs, ys, loss_fn)
    g_q = loss_gradient(model, {n: p.detach() - lrs[n].detach() * g_s[n] for n, p in params.items()}, xq, yq, loss_fn)
    mean = float(torch.cat([a.detach().flatten() for a in lrs.values()]).mean())
    hv = solution_hvp(model, params, xs, ys, g_q, loss_fn)
    return {n: g_q[n] - mean * hv[n] for n in params}, {n: -g_q[n] * g_s[n] for n in params}


def meta_returns_one_dict(model, params, lrs, support, query, loss_fn=F.cross_entropy):
    d_theta, d_alpha = solution_meta_gradient(model, params, lrs, support, query, loss_fn)
    return d_theta | {f"lr.{n}": g for n, g in d_alpha.items()}


@pytest.mark.parametrize(
    "fn,case,message",
    [
        (_meta(lr_sign=1.0), "constant α", "wrong sign"),
        (_meta(query_at_theta=True), "constant α", "query gradient was taken at θ"),
        (_meta(lr_extra_alpha=True), "constant α", "an extra factor α"),
        (meta_with_backward, "constant α", "leaked into `.grad`"),
        (meta_in_place, "constant α", "your function changed the parameters θ"),
        (meta_returns_one_dict, "constant α", "expected a pair"),
    ],
    ids=["sign", "query-at-theta", "extra-alpha", "backward", "in-place", "one-dict"],
)
def test_lr_mistakes_are_named(fn, case, message):
    with pytest.raises(CheckFailed) as err:
        check_lr_meta_gradient(fn)
    assert case in str(err.value), str(err.value)
    assert message in str(err.value), str(err.value)


@pytest.mark.parametrize(
    "fn,case,message",
    [
        (_meta(transposed=False), "per-weight α in [0.05, 0.6]", "*transpose*"),
        (_meta(second_order=False), "constant α", "first-order answer"),
        (_meta(hessian_sign=1.0), "constant α", "the Hessian term has the wrong sign"),
        (_meta(query_at_theta=True), "constant α", "query gradient was taken at θ"),
        (meta_without_alpha, "per-weight α in [0.05, 0.6]", "α is missing"),
        (meta_on_model, "constant α", "the model's own weights"),
        (meta_with_backward, "constant α", "leaked into `.grad`"),
    ],
    ids=["untransposed", "first-order", "hessian-sign", "query-at-theta", "no-alpha", "model-weights", "backward"],
)
def test_theta_mistakes_are_named(fn, case, message):
    with pytest.raises(CheckFailed) as err:
        check_param_meta_gradient(fn)
    assert case in str(err.value), str(err.value)
    assert message in str(err.value), str(err.value)
