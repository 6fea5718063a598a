"""The inner loop of optimisation-based meta-learning, written once for any ``nn.Module``.

MAML (Finn, Abbeel and Levine, 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of
Deep Networks", ICML) adapts a network to a task with a few gradient steps on the task's
*support* set, then judges the adapted network on the task's *queries*::

    θ'_0     = θ
    θ'_{j+1} = θ'_j − α_j ∇L_support(θ'_j)            j = 0 .. k−1
    meta-loss(θ) = L_query(θ'_k)

Meta-learning differentiates the meta-loss with respect to θ *through* the k steps. Two
things make that awkward with an ordinary ``nn.Module``:

1. the module owns its weights, but we must run it with θ'_j, tensors computed from θ;
2. every update must stay in the autograd graph: θ'_{j+1} is a *new* tensor made from θ'_j.
   Writing it into ``p.data`` in place (what an optimiser does) cuts the graph, and the
   meta-gradient silently loses every path through the inner loop.

:func:`torch.func.functional_call` solves the first: ``functional_call(model, (params,
buffers), (x,))`` runs ``model`` with the tensors of the two dicts in place of its own,
without touching the module. The second is :func:`sgd_update`: out-of-place arithmetic on
dicts of tensors.

Second order and first order
----------------------------
By the chain rule through one step, ``dθ'/dθ = I − α ∇²L_support(θ)``: the meta-gradient
contains a Hessian. For autograd to differentiate the inner gradient, it must record how
that gradient was computed: ``torch.autograd.grad(loss, params, create_graph=True)``. With
``create_graph=False`` the inner gradient comes back as a constant, the Jacobian becomes
``I``, and the meta-gradient is just ``∇L_query(θ'_k)``: *first-order MAML* (FOMAML, section
5.2 of the paper). Forgetting ``create_graph=True`` therefore gives FOMAML without any error.

BatchNorm
---------
MAML's reference code normalises with the statistics of the batch at hand, in training
*and* at test time, and keeps no running averages. That is ``Conv4(track_running_stats=
False)``: BatchNorm has no buffers, and ``model.train()``/``model.eval()`` change nothing.
(Antoniou et al., 2019, "How to train your MAML", call this transductive and propose
per-step running statistics instead.)

A model that *does* track running statistics writes its ``running_mean``/``running_var``
buffers in place on every forward pass in train mode. Run the tasks of a meta-batch through
it and the statistics of one task leak into the next, and the results depend on the order
of the tasks. :func:`adapt` therefore always runs on *copies* of the buffers
(:func:`fresh_buffers`): the module's own buffers are never written, and every task starts
from the same statistics. Which statistics BatchNorm *uses* is still decided by
``model.training``, as for any module: batch statistics in train mode, the (copied) running
ones in eval mode.

:func:`adapt` differentiates with ``torch.autograd.grad`` and is the one to read.
:func:`adapt_func` is the same loop written with ``torch.func.grad``, which composes with
``torch.func.vmap`` (``maml.meta_gradient(..., vectorize=True)`` uses it).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

Params = dict[str, torch.Tensor]
# A step size: one number, one number per inner step, or one tensor per parameter (Meta-SGD).
LearningRate = Union[float, Sequence[float], Mapping[str, torch.Tensor]]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def named_params(model: nn.Module) -> Params:
    """The trainable parameters of ``model`` as a ``name -> tensor`` dict (the tensors
    themselves, not copies, so gradients flow back to the module).

    A dict, not ``model.parameters()``: that is a generator, and a generator is spent after
    one pass. Code that iterates it twice (once for the inner step, once for the update)
    sees nothing the second time, with no error.
    """
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def fresh_buffers(buffers: Mapping[str, torch.Tensor]) -> Params:
    """Copies of ``buffers`` (BatchNorm running statistics): what one task may overwrite."""
    return {name: b.clone() for name, b in buffers.items()}


def module_buffers(model: nn.Module) -> Params:
    """Copies of the buffers of ``model``."""
    return fresh_buffers(dict(model.named_buffers()))


_TIED: "weakref.WeakKeyDictionary[nn.Module, bool]" = weakref.WeakKeyDictionary()


def has_tied_weights(model: nn.Module) -> bool:
    """Whether one tensor appears under two names in ``model`` (weight tying), remembered per model.

    ``functional_call`` must then substitute the tensor under both names, and by default it
    checks for this by walking the whole module tree on *every* call: for a small network
    that walk costs as much as the forward pass itself. The inner loop calls the model
    ``k + 1`` times per task, so we check once per model instead. (Tying weights *after*
    the first call is not noticed.)
    """
    if model not in _TIED:
        every = len(list(model.named_parameters(remove_duplicate=False))) + len(list(model.named_buffers(remove_duplicate=False)))
        _TIED[model] = every != len(list(model.named_parameters())) + len(list(model.named_buffers()))
    return _TIED[model]


def functional_forward(model: nn.Module, params: Mapping[str, torch.Tensor], buffers: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` computed with ``params`` and ``buffers`` instead of the module's own tensors.

    Parameters missing from ``params`` (frozen ones, say) are taken from the module.
    """
    return functional_call(model, {**params, **buffers}, (x,), tie_weights=has_tied_weights(model))


def step_sizes(lr: LearningRate, step: int, names: Iterable[str]) -> dict:
    """The step size of each parameter at inner step ``step``: a number, or a tensor shaped
    like the parameter (Meta-SGD)."""
    if isinstance(lr, Mapping):
        return {name: lr[name] for name in names}
    rate = lr if isinstance(lr, (int, float)) else lr[step]
    return dict.fromkeys(names, rate)


def check_learning_rate(lr: LearningRate, steps: int, names: Iterable[str]) -> None:
    """Raise ``ValueError`` for a step size that cannot drive ``steps`` steps of ``names``."""
    if isinstance(lr, bool):
        raise ValueError(f"lr must be a number, a list of numbers or a dict of tensors, got {lr!r}")
    if isinstance(lr, (int, float)):
        return
    if isinstance(lr, Mapping):
        missing = [n for n in names if n not in lr]
        if missing:
            raise ValueError(f"the per-parameter learning rates have no entry for {missing}")
        return
    if isinstance(lr, Sequence) and not isinstance(lr, str):
        if len(lr) < steps:
            raise ValueError(f"{steps} inner steps need {steps} learning rates, got {len(lr)}")
        return
    raise ValueError(f"lr must be a number, a list of numbers or a dict of tensors, got {type(lr).__name__}")


def sgd_update(params: Mapping[str, torch.Tensor], grads: Mapping[str, torch.Tensor], lr: LearningRate, step: int = 0) -> Params:
    """One plain gradient step, *out of place*: ``θ' = θ − α ∇``, for the names in ``grads``.

    A new dict of new tensors: the old ones stay in the autograd graph, which is what lets
    the meta-gradient flow back through the step. Parameters without a gradient (frozen
    in ANIL, say) are passed through unchanged.
    """
    rates = step_sizes(lr, step, grads)
    return {name: p - rates[name] * grads[name] if name in grads else p for name, p in params.items()}


def _trainable_names(params: Mapping[str, torch.Tensor], trainable: Iterable[str] | None) -> list[str]:
    names = list(params) if trainable is None else list(trainable)
    unknown = [n for n in names if n not in params]
    if unknown:
        raise ValueError(f"trainable names {unknown} are not parameters (known: {list(params)})")
    if not names:
        raise ValueError("nothing to adapt: the list of trainable parameters is empty")
    return names


def _check_steps(steps: int) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")


def adapt(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    buffers: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int,
    lr: LearningRate,
    first_order: bool = False,
    loss_fn: LossFn = F.cross_entropy,
    trainable: Iterable[str] | None = None,
) -> Params:
    """Take ``steps`` gradient steps on ``loss_fn(model(x), y)``, starting from ``params``.

    Args:
        model: any ``nn.Module``; it is only *run*, never modified.
        params: ``name -> tensor`` to start from (usually :func:`named_params`).
        buffers: ``name -> tensor`` buffers (BatchNorm running statistics; ``{}`` for none).
            They are copied first, so the caller's tensors are never written.
        x, y: the support set of one task.
        steps: number of inner gradient steps (0 returns ``params`` as they are).
        lr: a number, one number per step (MAML++ style), or a dict of tensors shaped like
            the parameters (Meta-SGD); a learned step size receives a meta-gradient too.
        first_order: ``False`` records the inner gradients (``create_graph=True``), so the
            meta-gradient includes the second-order term; ``True`` treats them as constants.
        loss_fn: ``loss_fn(outputs, y) -> scalar`` (cross-entropy by default).
        trainable: names to adapt (default all); the others stay fixed (ANIL adapts only
            the head).

    Returns:
        the adapted parameters, as a new dict (every name of ``params``).
    """
    _check_steps(steps)
    names = _trainable_names(params, trainable)
    check_learning_rate(lr, steps, names)
    buffers = fresh_buffers(buffers)
    with torch.enable_grad():  # adaptation needs gradients even inside torch.no_grad()
        # A parameter that does not require grad (a detached copy, at test time) gets a
        # fresh leaf that does: we need its inner gradient, and there is no outer graph.
        params = {n: p if p.requires_grad or n not in names else p.detach().requires_grad_() for n, p in params.items()}
        for step in range(steps):
            loss = loss_fn(functional_forward(model, params, buffers, x), y)
            grads = torch.autograd.grad(
                loss,
                [params[n] for n in names],
                create_graph=not first_order,  # the whole difference between MAML and FOMAML
                materialize_grads=True,  # a parameter the loss does not use gets a zero gradient
            )
            params = sgd_update(params, dict(zip(names, grads)), lr, step)
    return params


def adapt_func(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    buffers: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int,
    lr: LearningRate,
    first_order: bool = False,
    loss_fn: LossFn = F.cross_entropy,
    trainable: Iterable[str] | None = None,
) -> Params:
    """:func:`adapt` written with ``torch.func.grad``, for use inside ``torch.func`` transforms.

    ``torch.autograd.grad`` does not compose with ``torch.func.vmap``; ``torch.func.grad``
    does, and it always records the inner gradient (there is no ``create_graph`` flag), so
    the first-order variant detaches it explicitly. ``buffers`` are used as given (inside
    ``vmap`` the caller passes one copy per task).
    """
    _check_steps(steps)
    names = _trainable_names(params, trainable)
    check_learning_rate(lr, steps, names)

    def support_loss(fast: Params, frozen: Params, buffers: Params) -> torch.Tensor:
        return loss_fn(functional_forward(model, {**frozen, **fast}, buffers, x), y)

    params = dict(params)
    for step in range(steps):
        fast = {n: params[n] for n in names}
        frozen = {n: p for n, p in params.items() if n not in fast}
        # buffers go in as an argument, not from the closure: torch.func refuses in-place
        # writes (BatchNorm's running statistics) to tensors a transformed function captures
        grads = torch.func.grad(support_loss)(fast, frozen, dict(buffers))
        if first_order:
            grads = {n: g.detach() for n, g in grads.items()}
        params = sgd_update(params, grads, lr, step)
    return params
