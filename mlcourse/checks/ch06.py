"""Checks for the chapter 06 exercise: the Meta-SGD meta-gradient, derived and written by hand.

With one inner step ``θ' = θ − α ∘ ∇Lˢ(θ)`` (α: one learning rate per weight), the learner writes

* ``hessian_vector_product(model, params, x, y, v, loss_fn) -> dict``: ``∇²L(θ) v`` for the
  loss of ``model`` run with the tensors in ``params`` on ``(x, y)``, by autograd (twice);
* ``metasgd_meta_gradient(model, params, lrs, support, query, loss_fn) -> (dict, dict)``: the
  gradients of ``Lᵠ(θ')`` with respect to θ and to α, *without* differentiating through the
  update: ``dLᵠ/dθ = (I − ∇²Lˢ(θ) diag(α)) ∇Lᵠ(θ')`` (the transposed Jacobian of the update:
  a Hessian-vector product with ``α ∘ ∇Lᵠ(θ')``) and ``dLᵠ/dα = −∇Lᵠ(θ') ∘ ∇Lˢ(θ)``.

The expected answers come from float64 references that do what the learner must not: autograd
through the update (the meta-gradient) and the full Hessian matrix (the Hessian-vector
product); ``tests/test_checks_ch06.py`` checks both against central finite differences. Before
the generic "expected / got", each answer is compared with the classic wrong answers (the
untransposed Jacobian, the first-order gradient, the query gradient at θ instead of θ', a
flipped sign, ...) so that the message says which mistake it is.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, hessian

from . import Check, CheckFailed

TOL = dict(atol=1e-9, rtol=1e-6)


# ---------------------------------------------------------------------------------------
# Fixtures: two small networks, data, parameters that differ from the networks' own
# ---------------------------------------------------------------------------------------
def _classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def _regressor() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(1, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 1)).double()


def _start(model: nn.Module, seed: int, scale: float = 0.7) -> dict[str, torch.Tensor]:
    """Leaf tensors that require grad (like a model's parameters), not the model's own weights."""
    g = torch.Generator().manual_seed(seed)
    return {n: (scale * torch.randn(p.shape, generator=g, dtype=p.dtype)).requires_grad_() for n, p in model.named_parameters()}


def _rates(params: Mapping[str, torch.Tensor], low: float, high: float | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """Learning rates shaped like θ: all equal to ``low``, or uniform in ``[low, high]``; leaves
    that require grad (as Meta-SGD's rates are)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for n, p in params.items():
        rate = torch.full(p.shape, low, dtype=p.dtype) if high is None else low + (high - low) * torch.rand(p.shape, generator=g, dtype=p.dtype)
        out[n] = rate.requires_grad_()
    return out


def _classification(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def _regression(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = 4 * torch.rand(n, 1, generator=g, dtype=torch.float64) - 2
    return x, 1.5 * torch.sin(2 * x - 0.5)


# ---------------------------------------------------------------------------------------
# References, in a flat vector space (small networks: the full Hessian is affordable)
# ---------------------------------------------------------------------------------------
def _flat(tensors: Mapping[str, torch.Tensor], names) -> torch.Tensor:
    return torch.cat([tensors[n].detach().reshape(-1) for n in names])


def _unflat(vector: torch.Tensor, like: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out, i = {}, 0
    for n, p in like.items():
        out[n] = vector[i : i + p.numel()].view(p.shape)
        i += p.numel()
    return out


def _loss_of_vector(model, like, x, y, loss_fn):
    return lambda vector: loss_fn(functional_call(model, _unflat(vector, like), (x,)), y)


def reference_gradient(model, params, x, y, loss_fn=F.cross_entropy) -> torch.Tensor:
    """∇L(θ), flat and detached."""
    with torch.enable_grad():
        vector = _flat(params, params).requires_grad_()
        (grad,) = torch.autograd.grad(_loss_of_vector(model, params, x, y, loss_fn)(vector), vector)
    return grad.detach()


def reference_hessian(model, params, x, y, loss_fn=F.cross_entropy) -> torch.Tensor:
    """The full Hessian matrix ∇²L(θ) (flat, symmetric), by ``torch.func.hessian``."""
    return hessian(_loss_of_vector(model, params, x, y, loss_fn))(_flat(params, params)).detach()


def reference_hessian_vector_product(model, params, x, y, v, loss_fn=F.cross_entropy) -> dict[str, torch.Tensor]:
    """The answer :func:`check_hessian_vector_product` expects: the Hessian matrix times v."""
    return _unflat(reference_hessian(model, params, x, y, loss_fn) @ _flat(v, params), params)


def reference_meta_gradient(model, params, lrs, support, query, loss_fn=F.cross_entropy):
    """``(dLᵠ(θ')/dθ, dLᵠ(θ')/dα)`` by autograd *through* the update θ' = θ − α ∘ ∇Lˢ(θ)."""
    (xs, ys), (xq, yq) = support, query
    with torch.enable_grad():
        theta = {n: p.detach().clone().requires_grad_() for n, p in params.items()}
        alpha = {n: a.detach().clone().requires_grad_() for n, a in lrs.items()}
        g_s = torch.autograd.grad(loss_fn(functional_call(model, theta, (xs,)), ys), list(theta.values()), create_graph=True)
        adapted = {n: theta[n] - alpha[n] * g for n, g in zip(theta, g_s)}
        leaves = [*theta.values(), *alpha.values()]
        grads = torch.autograd.grad(loss_fn(functional_call(model, adapted, (xq,)), yq), leaves)
    k = len(theta)
    return dict(zip(theta, (g.detach() for g in grads[:k]))), dict(zip(alpha, (g.detach() for g in grads[k:])))


class _Pieces:
    """Everything the right and the wrong answers are made of, for one task, as flat vectors."""

    def __init__(self, model, params, lrs, support, query, loss_fn):
        (xs, ys), (xq, yq) = support, query
        self.like = params
        self.alpha = _flat(lrs, params)
        self.g_s = reference_gradient(model, params, xs, ys, loss_fn)  # ∇Lˢ(θ)
        self.hessian = reference_hessian(model, params, xs, ys, loss_fn)  # ∇²Lˢ(θ)
        adapted = _unflat(_flat(params, params) - self.alpha * self.g_s, params)
        self.g_q = reference_gradient(model, adapted, xq, yq, loss_fn)  # ∇Lᵠ(θ')
        self.g_q_at_theta = reference_gradient(model, params, xq, yq, loss_fn)  # ∇Lᵠ(θ): a mistake
        self.right = reference_meta_gradient(model, params, lrs, support, query, loss_fn)

    def d_theta(self, g_q=None, transposed=True, sign=-1.0):
        """(I − H diag α) g (transposed, the right Jacobian) or (I − diag α H) g; sign=+1: I + ..."""
        g = self.g_q if g_q is None else g_q
        second = self.hessian @ (self.alpha * g) if transposed else self.alpha * (self.hessian @ g)
        return _unflat(g + sign * second, self.like)

    def dict(self, vector):
        return _unflat(vector, self.like)


# ---------------------------------------------------------------------------------------
# Helpers: comparisons, side effects, autograd's error messages
# ---------------------------------------------------------------------------------------
def _close(got: Mapping[str, torch.Tensor], want: Mapping[str, torch.Tensor], **tol) -> bool:
    tol = tol or TOL
    return all(torch.allclose(got[n].detach().to(want[n].dtype), want[n], **tol) for n in want)


def _is(got, mistake, want) -> bool:
    """The answer is this mistake, and the mistake is not, on this case, the right answer too."""
    return _close(got, mistake) and not _close(mistake, want)


def _max_error(got: Mapping[str, torch.Tensor], want: Mapping[str, torch.Tensor]) -> str:
    name = max(want, key=lambda n: float((got[n].detach().to(want[n].dtype) - want[n]).abs().max()))
    err = float((got[name].detach().to(want[name].dtype) - want[name]).abs().max())
    return (f"largest difference {err:.3g} in '{name}': expected\n{want[name].flatten()[:6]}\n    got\n"
            f"{got[name].detach().flatten()[:6]}  (first entries)")


def _snapshot(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in tensors.items()}


def _expect_dict(chk: Check, out, like: Mapping[str, torch.Tensor], what: str) -> None:
    if not isinstance(out, Mapping):
        chk.fail(f"{what}: expected a dict name -> tensor (like `params`), got {type(out).__name__}")
    if set(out) != set(like):
        chk.fail(f"{what}: expected the names {sorted(like)}, got {sorted(out)}")
    for n, p in like.items():
        if not torch.is_tensor(out[n]):
            chk.fail(f"{what}, '{n}': expected a tensor, got {type(out[n]).__name__}")
        if tuple(out[n].shape) != tuple(p.shape):
            chk.fail(f"{what}, '{n}': expected shape {tuple(p.shape)}, got {tuple(out[n].shape)}")


def _no_side_effects(chk: Check, model: nn.Module, own: Mapping, inputs: dict[str, tuple[Mapping, Mapping]]) -> None:
    """The caller's tensors keep their values and receive nothing in ``.grad``."""
    for label, (tensors, before) in inputs.items():
        changed = [n for n, t in tensors.items() if not torch.equal(t.detach(), before[n])]
        if changed:
            chk.fail(f"your function changed {label} {changed}: build new tensors (`p - a * g`) instead of writing into "
                     "the given ones (`-=`, `.data`, `.copy_()`, an optimizer); the caller still needs them.")
        leaked = [n for n, t in tensors.items() if t.grad is not None]
        if leaked:
            chk.fail(f"gradients leaked into `.grad` of {label} {leaked}: `.backward()` accumulates into the leaves, and the "
                     "caller's optimizer would add them to the meta-gradient. `torch.autograd.grad(loss, tensors)` returns "
                     "gradients without storing them.")
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), own[n]) or p.grad is not None]
    if changed:
        chk.fail(f"your function changed the model's own weights or their .grad {changed}: the model only holds the "
                 "architecture here. Run it with the given tensors, `torch.func.functional_call(model, params, (x,))`.")


def _call(chk: Check, fn, *args, **kwargs):
    """``chk.call`` plus hints for the errors autograd raises on the usual mistakes."""
    try:
        return chk.call(fn, *args, **kwargs)
    except CheckFailed as err:
        cause = str(err.__cause__ or "")
        first = cause.splitlines()[0] if cause else ""
        if "does not require grad" in cause or "does not have a grad_fn" in cause:
            chk.fail(
                f"`{chk.fn_name}` raised RuntimeError: {first}\n    autograd had nothing to differentiate. To differentiate a "
                "gradient again, the first `torch.autograd.grad` needs `create_graph=True`; and start from tensors that "
                "require grad, `{n: p.detach().requires_grad_() for n, p in params.items()}` (the caller's may not), "
                "inside `with torch.enable_grad():`."
            )
        if "not have been used in the graph" in cause:
            chk.fail(
                f"`{chk.fn_name}` raised RuntimeError: {first}\n    the loss does not depend on the tensors you "
                "differentiate: run the network *with* them, `torch.func.functional_call(model, params, (x,))`, not "
                "`model(x)` (which uses the model's own weights)."
            )
        if "leaf Variable that requires grad" in cause or "in-place operation" in cause:
            chk.fail(f"`{chk.fn_name}` raised RuntimeError: {first}\n    in-place update: build new tensors instead of "
                     "modifying the given ones (`-=`, `.add_()`).")
        raise


def _own_weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters()}


# ---------------------------------------------------------------------------------------
# hessian_vector_product
# ---------------------------------------------------------------------------------------
def check_hessian_vector_product(hessian_vector_product) -> None:
    """``hessian_vector_product(model, params, x, y, v, loss_fn) -> dict``: ``∇²L(θ) v`` with
    ``L = loss_fn(model run with params on x, y)``, exact (autograd), with no side effects."""
    chk = Check("check_hessian_vector_product", "hessian_vector_product")
    cases = [
        ("a small classifier (Linear-Tanh-Linear, cross-entropy), a random v", _classifier, _classification, F.cross_entropy, True),
        ("a small regression network (mean squared error), a random v", _regressor, _regression, F.mse_loss, True),
        ("θ given as plain tensors that do not require grad", _classifier, _classification, F.cross_entropy, False),
    ]
    for i, (description, make_model, make_data, loss_fn, leaves) in enumerate(cases):
        with chk.case(description):
            model = make_model()
            own = _snapshot(dict(model.named_parameters()))
            params = _start(model, seed=10 + i)
            if not leaves:
                params = {n: p.detach() for n, p in params.items()}
            x, y = make_data(20 + i, 10)
            g = torch.Generator().manual_seed(30 + i)
            v = {n: torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in params.items()}
            before_p, before_v = _snapshot(params), _snapshot(v)
            out = _call(chk, hessian_vector_product, model, params, x, y, v, loss_fn=loss_fn)
            _expect_dict(chk, out, params, "the result")
            _no_side_effects(chk, model, own, {"the parameters `params`": (params, before_p), "the vector `v`": (v, before_v)})
            want = reference_hessian_vector_product(model, before_p, x, y, before_v, loss_fn)
            H = reference_hessian(model, before_p, x, y, loss_fn)
            flat_v = _flat(before_v, before_p)
            if _close(out, _unflat(reference_gradient(model, before_p, x, y, loss_fn), before_p)):
                chk.fail("that is the gradient ∇L(θ), not ∇²L(θ) v: differentiate the scalar ⟨∇L(θ), v⟩ once more. "
                         "The first gradient must be recorded for that (`create_graph=True`).")
            if _close(out, _unflat(-(H @ flat_v), before_p)):
                chk.fail("wrong sign: you returned −∇²L(θ) v.")
            if _close(out, _unflat(H @ torch.ones_like(flat_v), before_p)):
                chk.fail("`v` is ignored: you computed ∇²L(θ) times a vector of ones (the gradient of sum(∇L)). "
                         "Differentiate Σ_names (∇L[name] * v[name]).sum().")
            own_w = _own_weights(model)
            if _close(out, _unflat(reference_hessian(model, own_w, x, y, loss_fn) @ flat_v, own_w)):
                chk.fail("the Hessian was taken at the model's own weights, not at `params`: run the network with "
                         "`torch.func.functional_call(model, params, (x,))`.")
            scale = max(float(w.abs().max()) for w in want.values())
            if _close(out, want, atol=1e-2 * scale, rtol=1e-2) and not _close(out, want):
                chk.fail("approximately right, not exact (" + _max_error(out, want) + ")\n    finite differences of the gradient? "
                         "Autograd gives the exact product: differentiate ⟨∇L(θ), v⟩ with respect to θ.")
            chk.expect(_close(out, want), _max_error(out, want))
    chk.done()


# ---------------------------------------------------------------------------------------
# metasgd_meta_gradient: the problems, and the call both checks share
# ---------------------------------------------------------------------------------------
def _problems():
    """(description, model, θ, α, support, query, loss_fn) for each case both checks run."""
    clf = _classifier()
    theta = _start(clf, seed=40)
    reg = _regressor()
    theta_r = _start(reg, seed=41, scale=0.6)
    return [
        ("constant α = 0.3 in every entry (MAML's step): diag(α) = 0.3·I commutes with the Hessian",
         clf, theta, _rates(theta, 0.3), _classification(42, 9), _classification(43, 12), F.cross_entropy),
        ("per-weight α in [0.05, 0.6]: diag(α) and the Hessian do not commute",
         clf, _start(clf, seed=44), _rates(theta, 0.05, 0.6, seed=45), _classification(46, 9), _classification(47, 12), F.cross_entropy),
        ("per-weight α in [−0.2, 0.5] (some rates negative), a regression network, mean squared error",
         reg, theta_r, _rates(theta_r, -0.2, 0.5, seed=48), _regression(49, 10), _regression(50, 10), F.mse_loss),
    ]  # fmt: skip


def _run_meta_gradient(chk: Check, fn, model, params, lrs, support, query, loss_fn):
    """Call the learner's function on copies (leaves that require grad, .grad empty); check the
    result's form and the side effects; return (dθ, dα, pieces)."""
    params = {n: p.detach().clone().requires_grad_() for n, p in params.items()}
    lrs = {n: a.detach().clone().requires_grad_() for n, a in lrs.items()}
    own = _snapshot(dict(model.named_parameters()))
    before_p, before_a = _snapshot(params), _snapshot(lrs)
    out = _call(chk, fn, model, params, lrs, support, query, loss_fn=loss_fn)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        chk.fail(f"expected a pair (gradients of θ, gradients of α): two dicts name -> tensor, got {type(out).__name__}"
                 + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
    _expect_dict(chk, out[0], params, "the gradients of θ (first of the pair)")
    _expect_dict(chk, out[1], params, "the gradients of α (second of the pair)")
    _no_side_effects(chk, model, own, {"the parameters θ": (params, before_p), "the learning rates α": (lrs, before_a)})
    return out[0], out[1], _Pieces(model, before_p, before_a, support, query, loss_fn)


# ---------------------------------------------------------------------------------------
# The gradient of α
# ---------------------------------------------------------------------------------------
def check_lr_meta_gradient(metasgd_meta_gradient) -> None:
    """The second result of ``metasgd_meta_gradient``: ``dLᵠ(θ')/dα = −∇Lᵠ(θ') ∘ ∇Lˢ(θ)``."""
    chk = Check("check_lr_meta_gradient", "metasgd_meta_gradient")
    for description, model, params, lrs, support, query, loss_fn in _problems():
        with chk.case(description):
            _, got, P = _run_meta_gradient(chk, metasgd_meta_gradient, model, params, lrs, support, query, loss_fn)
            want = P.right[1]
            if _is(got, P.dict(P.g_q * P.g_s), want):
                chk.fail("wrong sign: you returned +∇Lᵠ(θ') ∘ ∇Lˢ(θ). θ' = θ − α ∘ ∇Lˢ(θ), so ∂θ'/∂α = −∇Lˢ(θ): a larger "
                         "rate moves θ' *against* the support gradient.")
            if _is(got, P.dict(-P.g_q_at_theta * P.g_s), want) or _is(got, P.dict(P.g_q_at_theta * P.g_s), want):
                chk.fail("the query gradient was taken at θ, not at the adapted θ' = θ − α ∘ ∇Lˢ(θ): the query loss is "
                         "scored *after* the step, so its gradient is ∇Lᵠ(θ').")
            if _is(got, P.dict(-P.g_q), want) or _is(got, P.dict(-P.g_s), want):
                chk.fail("one factor is missing: by the chain rule, dLᵠ/dα = ∇Lᵠ(θ') ∘ ∂θ'/∂α, and ∂θ'/∂α = −∇Lˢ(θ) "
                         "(entry by entry: both gradients appear).")
            if _is(got, P.dict(-P.alpha * P.g_q * P.g_s), want):
                chk.fail("an extra factor α: θ' is *linear* in α, so ∂θ'/∂α = −∇Lˢ(θ), with no α left in it.")
            if _is(got, P.dict(-P.g_q * P.g_q), want) or _is(got, P.dict(-P.g_s * P.g_s), want):
                chk.fail("one gradient used twice: dLᵠ/dα multiplies the *query* gradient at θ' by the *support* gradient at θ.")
            chk.expect(_close(got, want), _max_error(got, want))
    chk.done()


# ---------------------------------------------------------------------------------------
# The gradient of θ
# ---------------------------------------------------------------------------------------
def check_param_meta_gradient(metasgd_meta_gradient) -> None:
    """The first result of ``metasgd_meta_gradient``:
    ``dLᵠ(θ')/dθ = (I − ∇²Lˢ(θ) diag(α)) ∇Lᵠ(θ') = ∇Lᵠ(θ') − ∇²Lˢ(θ) (α ∘ ∇Lᵠ(θ'))``."""
    chk = Check("check_param_meta_gradient", "metasgd_meta_gradient")
    for description, model, params, lrs, support, query, loss_fn in _problems():
        with chk.case(description):
            got, _, P = _run_meta_gradient(chk, metasgd_meta_gradient, model, params, lrs, support, query, loss_fn)
            want = P.right[0]
            if _is(got, P.dict(P.g_q), want):
                chk.fail("that is the first-order answer ∇Lᵠ(θ') (FOMAML's): the Hessian term is missing. θ' depends on θ "
                         "also through ∇Lˢ(θ), whose derivative is ∇²Lˢ(θ): subtract ∇²Lˢ(θ) (α ∘ ∇Lᵠ(θ')).")
            if _is(got, P.d_theta(sign=+1.0), want) or _is(got, P.d_theta(transposed=False, sign=+1.0), want):
                chk.fail("the Hessian term has the wrong sign: θ' = θ − α ∘ ∇Lˢ(θ), so its Jacobian is I − (…), and the "
                         "meta-gradient is ∇Lᵠ(θ') − ∇²Lˢ(θ) (α ∘ ∇Lᵠ(θ')).")
            if _is(got, P.d_theta(transposed=False), want):
                chk.fail("you multiplied ∇Lᵠ(θ') by the Jacobian of the update, (I − diag(α) ∇²Lˢ) ∇Lᵠ = ∇Lᵠ − α ∘ (∇²Lˢ ∇Lᵠ), "
                         "instead of by its *transpose*. The chain rule gives dL/dθ = J(θ)ᵀ ∇Lᵠ(θ') with "
                         "J = I − diag(α) ∇²Lˢ, and Jᵀ = I − ∇²Lˢ diag(α) (the Hessian is symmetric): scale by α "
                         "*before* the Hessian-vector product, ∇Lᵠ − ∇²Lˢ (α ∘ ∇Lᵠ). With one α for every weight "
                         "(MAML) the two orders agree, which is why the first case passed.")
            g = P.g_q_at_theta
            if _is(got, P.d_theta(g_q=g), want) or _is(got, P.d_theta(g_q=g, transposed=False), want) or _is(got, P.dict(g), want):
                chk.fail("the query gradient was taken at θ, not at the adapted θ' = θ − α ∘ ∇Lˢ(θ): the query loss is "
                         "scored *after* the step, so both terms use ∇Lᵠ(θ').")
            if _is(got, P.dict(P.g_q - P.hessian @ P.g_q), want) or _is(got, P.dict(P.g_q - P.alpha.mean() * (P.hessian @ P.g_q)), want):
                chk.fail("α is missing or replaced by one number in the Hessian term: each weight moves with its own rate, "
                         "so the vector to multiply by ∇²Lˢ(θ) is α ∘ ∇Lᵠ(θ').")
            own = _own_weights(model)
            if _is(got, reference_meta_gradient(model, own, lrs, support, query, loss_fn)[0], want):
                chk.fail("the gradients were taken at the model's own weights, not at `params`: run the network with "
                         "`torch.func.functional_call(model, params, (x,))`.")
            chk.expect(_close(got, want), _max_error(got, want))
    chk.done()
