"""ProtoMAML (Triantafillou et al., 2020, "Meta-Dataset", ICLR): MAML whose linear head starts,
for every task, as the prototypical network of that task's support set.

Why
---
MAML's head is part of the initialisation θ: one ``n_way x d`` matrix that must suit every
task, although class 0 of one task has nothing to do with class 0 of the next. The inner loop
spends its first steps undoing that arbitrary start. Chapter 02 showed that a prototypical
network *is* a linear classifier on the embedding: with class means ``c_k = mean f(x)`` over
the support images of class ``k``,

    −‖f(x) − c_k‖² = 2 c_kᵀ f(x) − ‖c_k‖² − ‖f(x)‖²,

and the last term is the same for every class, so the logits ``W f(x) + b`` with

    W_k = 2 c_k,    b_k = −‖c_k‖²

give exactly ProtoNet's predictions. ProtoMAML starts the inner loop from this head (and the
meta-learned body), then takes MAML's gradient steps on the support set. The head is a
function of θ (through ``f``), so the meta-gradient flows through the prototypes into the body
as well as through the inner steps. A stored head is not needed, and the model works for any
N: the head has as many rows as the support set has classes.

With zero inner steps ProtoMAML predicts exactly as ProtoNet with the same embedding (tested).
First-order ProtoMAML (``first_order=True``, Triantafillou et al.'s fo-Proto-MAML) drops the
inner steps' second-order terms but keeps the path through the prototypes, which is cheap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..fewshot import validate_task
from .inner_loop import Params, adapt_func, functional_forward, named_params
from .maml import MAML, MetaGradient, _accuracy, _unpack_tasks

HEAD = ("head.weight", "head.bias")


def prototype_head(features: torch.Tensor, labels: torch.Tensor, n_way: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The linear head equal to a prototypical network: ``W_k = 2 c_k``, ``b_k = −‖c_k‖²``.

    ``features [K·N, d]`` of the support images, ``labels [K·N]`` in ``0..n_way−1``. Gradients
    flow back into ``features`` (and so into the embedding that made them).
    """
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"features must be [M, d] with one label each, got {tuple(features.shape)} and {tuple(labels.shape)}")
    onehot = F.one_hot(labels.long(), n_way).to(features.dtype)  # [M, N]
    counts = onehot.sum(0)
    if (counts == 0).any():
        raise ValueError(f"every class needs a support image; classes {torch.nonzero(counts == 0).flatten().tolist()} have none")
    prototypes = onehot.t() @ features / counts[:, None]  # [N, d]
    return 2 * prototypes, -(prototypes**2).sum(1)


class ProtoMAML(MAML):
    """MAML on Conv-4 whose head is initialised from the support set's prototypes in every task.

    Arguments as :class:`~mlcourse.optim.MAML` (``n_way`` only sets the size of the unused
    stored head and the training way; prediction works for any N). ``anil=True`` adapts only
    the prototype-initialised head ("Proto-ANIL"). Meta-gradients loop over the tasks.
    """

    method_name = "protomaml"

    def _body(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        body = {n[len("backbone.") :]: p for n, p in params.items() if n.startswith("backbone.")}
        return functional_forward(self.net.backbone, body, {}, x)

    def initial_params(self, params: Params, support_x: torch.Tensor, support_y: torch.Tensor) -> Params:
        """``params`` with the head replaced by the prototype head of this support set."""
        n_way = int(support_y.max()) + 1
        weight, bias = prototype_head(self._body(params, support_x), support_y, n_way)
        return {**params, HEAD[0]: weight, HEAD[1]: bias}

    def adapt(self, support_x, support_y, *, training: bool | None = None, keep_graph: bool | None = None) -> Params:
        training = self.training if training is None else training
        keep_graph = torch.is_grad_enabled() if keep_graph is None else keep_graph
        params = named_params(self.net)
        if not keep_graph:
            params = {n: p.detach() for n, p in params.items()}
        with torch.set_grad_enabled(keep_graph):
            params = self.initial_params(params, support_x, support_y)
        steps = self.inner_steps if training else self.test_inner_steps
        # torch.func.grad, not torch.autograd.grad: the inner step needs the *partial* derivative
        # in the body with the head held fixed. autograd.grad would also follow the head back
        # through the prototypes into the body (the total derivative), as if the head stayed
        # tied to the prototypes while it adapts. The outer meta-gradient does follow that path.
        with torch.set_grad_enabled(keep_graph):
            return adapt_func(
                self.net, params, {}, support_x, support_y, steps=steps, lr=self.inner_lr_for(training),
                first_order=self.first_order or not keep_graph, trainable=self.trainable_names(),
            )  # fmt: skip

    def forward(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
        validate_task(support_x, support_y, query_x)  # any N: the head comes from the support set
        keep_graph = torch.is_grad_enabled()
        adapted = self.adapt(support_x, support_y, keep_graph=keep_graph)
        with torch.set_grad_enabled(keep_graph):
            return functional_forward(self.net, adapted, {}, query_x)

    def meta_gradient(self, tasks, vectorize: bool | None = None) -> MetaGradient:
        """The meta-gradient of a meta-batch, task by task, through the prototypes and the inner steps.

        The stored head gets a zero gradient: every task replaces it.
        """
        sx, sy, qx, qy = _unpack_tasks(tasks)
        T = sx.shape[0]
        params = named_params(self.net)
        names = list(params)
        totals = [torch.zeros_like(p) for p in params.values()]
        losses, accuracies = [], []
        with torch.enable_grad():
            for t in range(T):
                adapted = self.adapt(sx[t], sy[t], training=True, keep_graph=True)
                logits = functional_forward(self.net, adapted, {}, qx[t])
                loss = F.cross_entropy(logits, qy[t])
                grads = torch.autograd.grad(loss / T, list(params.values()), materialize_grads=True, allow_unused=True)
                for total, g in zip(totals, grads):
                    total.add_(g)
                losses.append(loss.detach())
                accuracies.append(_accuracy(logits.detach(), qy[t]))
        return MetaGradient(dict(zip(names, totals)), None, torch.stack(losses).mean().item(), torch.stack(accuracies).mean().item())
