"""MAML and first-order MAML (Finn, Abbeel and Levine, 2017, "Model-Agnostic Meta-Learning for
Fast Adaptation of Deep Networks", ICML), with ANIL (Raghu et al., 2020, "Rapid Learning or
Feature Reuse?") as a one-flag variant.

The idea
--------
Metric methods learn an embedding and compare. MAML learns an *initialisation*: weights θ
from which a few gradient steps on a new task's support set already give a good classifier.
For a meta-batch of tasks ``τ_1..τ_T`` it minimises the loss on each task's queries *after*
adapting to its support set::

    θ'_τ = θ − α ∇L_τ^support(θ)                    (one inner step; k steps repeat it)
    min_θ  (1/T) Σ_τ L_τ^query(θ'_τ)                (the outer, meta-objective; Adam)

Differentiating the meta-objective goes *through* the inner step::

    ∇_θ L^query(θ') = (I − α ∇²L^support(θ)) ∇L^query(θ')

The Hessian factor is the "second-order" term. First-order MAML drops it (replaces the
bracket by ``I``): much cheaper, and Finn et al. found it nearly as accurate on
MiniImagenet (48.1% against 48.7%, 5-way 1-shot). :mod:`mlcourse.optim.inner_loop`
explains how ``create_graph`` chooses between the two, and how BatchNorm is handled.

The classifier here is Conv-4 with a linear head of ``n_way`` outputs: the head *is* part of
the initialisation, so the model is tied to one N, and support labels must be ``0..N-1``.
At test time the model adapts on the support set (usually with more steps than in
training) and classifies the queries with the adapted weights.

Hyper-parameters of the paper for 5-way 1-shot Omniglot (the reference code): one inner step
of α = 0.4, meta-batch of 32 tasks, Adam with 1e-3, 10 inner steps at test time; 64 filters
and strided convolutions where this Conv-4 has max-pooling.

Looping over the tasks or vectorising with ``vmap``
---------------------------------------------------
The T tasks of a meta-batch are independent, so :func:`meta_gradient` can either loop over
them (``vectorize=False``) or push them through ``torch.func.vmap(torch.func.grad(...))``
in one go (``vectorize=True``): vmap runs the T per-task convolutions, each with its own
adapted weights, as one grouped convolution, and all tasks' activations live at once.

Measured on a 2-core CPU with one thread (``python benchmarks/maml_speed.py --threads 1
--clock cpu --hidden 32``: Conv-4 with 32 filters, 5-way 1-shot, 15 queries per class,
meta-batch 16 and 32, 1 and 5 inner steps, second and first order), vmap took 1.4-2.6x the
time of the loop (e.g. 2.5 s against 0.9 s of CPU time per meta-step for 16 tasks, one
inner step, second order) and 30-80x its memory (1-3.7 GB against 30-45 MB: the loop
backpropagates each task as soon as it is done and frees its graph). With 64 filters
(meta-batch 16, one step) it was 2.5-3x slower. On a CPU a single task already keeps the
cores busy, so batching tasks saves nothing, while the grouped convolutions are slower
than the dense ones and the bigger working set costs memory traffic. ``vectorize="auto"``
therefore loops on the CPU (and whenever the model has BatchNorm running statistics,
which vmap can only update with one copy per task). On a GPU the balance can turn: T small
kernel launches per layer become one, so ``"auto"`` vectorises on CUDA. That choice is not
measured here; check it on your GPU with ``python benchmarks/maml_speed.py --device cuda``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import get_device
from ..data.episodes import EpisodeDataset, check_episode_request
from ..fewshot import FewShotClassifier, validate_task
from ..models import conv4_classifier
from ..train import History, train_loop
from .inner_loop import LearningRate, LossFn, Params, adapt, adapt_func, fresh_buffers, functional_forward, named_params

VECTORIZE_CHOICES = ("auto", True, False)


@dataclass
class MetaGradient:
    """What one meta-batch gives: the meta-gradient and how the adapted models did.

    ``grads[name]`` is ``d meta-loss / d θ[name]`` (the mean over the tasks);
    ``lr_grads`` the same for learned step sizes (Meta-SGD), else ``None``; ``loss`` and
    ``accuracy`` are the query loss and accuracy after adaptation, averaged over tasks
    (``accuracy`` is ``nan`` when the targets are not class labels).
    """

    grads: Params
    lr_grads: Params | None
    loss: float
    accuracy: float


def resolve_vectorize(vectorize, device: torch.device, buffers: Mapping[str, torch.Tensor] | None = None) -> bool:
    """``True``/``False`` as given; ``"auto"`` vectorises only on CUDA and only without
    BatchNorm running statistics (see the module docstring for the measurement)."""
    if vectorize not in VECTORIZE_CHOICES or not isinstance(vectorize, (bool, str)):
        raise ValueError(f"vectorize must be 'auto', True or False, got {vectorize!r}")
    if vectorize == "auto":
        return torch.device(device).type == "cuda" and not buffers
    return bool(vectorize)


def _unpack_tasks(tasks):
    """``(support_x, support_y, query_x, query_y)`` with a leading task dimension ``T``."""
    if len(tasks) < 4:
        raise ValueError("tasks must be (support_x, support_y, query_x, query_y), each with a leading task dimension")
    sx, sy, qx, qy = tasks[:4]
    sizes = {t.shape[0] for t in (sx, sy, qx, qy)}
    if len(sizes) != 1:
        raise ValueError(f"support and query tensors disagree on the number of tasks: {[t.shape[0] for t in (sx, sy, qx, qy)]}")
    if sx.shape[0] == 0:
        raise ValueError("the meta-batch holds no task")
    return sx, sy, qx, qy


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if y.dtype.is_floating_point or logits.dim() < 2:
        return torch.tensor(float("nan"), device=logits.device)
    return (logits.argmax(-1) == y).float().mean()


def meta_gradient(
    model: nn.Module,
    tasks,
    *,
    inner_steps: int,
    inner_lr: LearningRate,
    first_order: bool = False,
    params: Mapping[str, torch.Tensor] | None = None,
    buffers: Mapping[str, torch.Tensor] | None = None,
    loss_fn: LossFn = F.cross_entropy,
    trainable: Iterable[str] | None = None,
    vectorize: bool = False,
) -> MetaGradient:
    """The MAML meta-gradient of a meta-batch: ``∇_θ (1/T) Σ_τ L_τ^query(adapt(θ, support_τ))``.

    Args:
        model: any ``nn.Module`` (only run, never modified).
        tasks: ``(support_x, support_y, query_x, query_y)`` with a leading task dimension,
            e.g. a batch from :func:`mlcourse.data.episodes.task_loader`.
        inner_steps, inner_lr, first_order, loss_fn, trainable: as in
            :func:`~mlcourse.optim.inner_loop.adapt`. A dict ``inner_lr`` whose tensors
            require grad (Meta-SGD) gets its own meta-gradient, ``lr_grads``.
        params, buffers: where to start (default: the model's own parameters and buffers).
        vectorize: ``False`` loops over the tasks; ``True`` uses ``vmap`` over tasks.

    Returns:
        a :class:`MetaGradient`. Nothing is written into ``.grad``: the caller decides what
        to do with the gradients (an optimiser step, a check against finite differences).
    """
    sx, sy, qx, qy = _unpack_tasks(tasks)
    params = dict(named_params(model) if params is None else params)
    # plain tensors (not parameters) become leaves that autograd can differentiate
    params = {n: p if p.requires_grad else p.detach().requires_grad_() for n, p in params.items()}
    buffers = dict(model.named_buffers()) if buffers is None else dict(buffers)
    learned_lr = isinstance(inner_lr, Mapping) and any(t.requires_grad for t in inner_lr.values())
    run = _vmap_meta_gradient if vectorize else _loop_meta_gradient
    return run(model, params, buffers, (sx, sy, qx, qy), inner_steps, inner_lr, first_order, loss_fn, trainable, learned_lr)


def _loop_meta_gradient(model, params, buffers, tasks, steps, lr, first_order, loss_fn, trainable, learned_lr) -> MetaGradient:
    """One task at a time: adapt, score the queries, backpropagate, accumulate.

    Backpropagating each task as soon as its loss is known frees its graph before the next
    task starts, so memory holds one task's graph, not T of them.
    """
    sx, sy, qx, qy = tasks
    T = sx.shape[0]
    inputs = list(params.values()) + (list(lr.values()) if learned_lr else [])
    totals = [torch.zeros_like(t) for t in inputs]
    losses, accuracies = [], []
    with torch.enable_grad():
        for t in range(T):
            adapted = adapt(model, params, buffers, sx[t], sy[t], steps=steps, lr=lr, first_order=first_order, loss_fn=loss_fn, trainable=trainable)
            logits = functional_forward(model, adapted, fresh_buffers(buffers), qx[t])
            loss = loss_fn(logits, qy[t])
            grads = torch.autograd.grad(loss / T, inputs, materialize_grads=True, allow_unused=True)
            for total, g in zip(totals, grads):
                total.add_(g)
            losses.append(loss.detach())  # .item() only once at the end: no sync per task on a GPU
            accuracies.append(_accuracy(logits.detach(), qy[t]))
    names = list(params)
    grads = dict(zip(names, totals[: len(names)]))
    lr_grads = dict(zip(lr.keys(), totals[len(names) :])) if learned_lr else None
    return MetaGradient(grads, lr_grads, torch.stack(losses).mean().item(), torch.stack(accuracies).mean().item())


def _vmap_meta_gradient(model, params, buffers, tasks, steps, lr, first_order, loss_fn, trainable, learned_lr) -> MetaGradient:
    """All tasks at once: ``vmap`` over tasks of ``grad`` of (adapt, then query loss)."""
    sx, sy, qx, qy = tasks
    T = sx.shape[0]
    detached = {n: p.detach() for n, p in params.items()}
    lrs = {n: a.detach() for n, a in lr.items()} if learned_lr else None
    # one copy of the buffers per task: BatchNorm updates them in place, task by task
    task_buffers = {n: b.detach().expand(T, *b.shape).clone() for n, b in buffers.items()}

    def task_meta_loss(p, task_lr, b, sx, sy, qx, qy):
        adapted = adapt_func(model, p, b, sx, sy, steps=steps, lr=task_lr if learned_lr else lr, first_order=first_order, loss_fn=loss_fn, trainable=trainable)
        logits = functional_forward(model, adapted, b, qx)
        loss = loss_fn(logits, qy)
        return loss, (loss, logits)

    grad_fn = torch.func.grad(task_meta_loss, argnums=(0, 1) if learned_lr else 0, has_aux=True)
    in_dims = (None, None, 0 if task_buffers else None, 0, 0, 0, 0)
    with torch.enable_grad():
        per_task, (losses, logits) = torch.func.vmap(grad_fn, in_dims=in_dims)(detached, lrs, task_buffers, sx, sy, qx, qy)
    g_params, g_lrs = per_task if learned_lr else (per_task, None)
    mean = lambda d: {n: g.mean(0) for n, g in d.items()}  # noqa: E731
    acc = _accuracy(logits.flatten(0, 1), qy.flatten()).item()
    return MetaGradient(mean(g_params), mean(g_lrs) if learned_lr else None, losses.mean().item(), acc)


# ---------------------------------------------------------------------------------------
# The few-shot classifier
# ---------------------------------------------------------------------------------------
def _image_shape(in_channels: int, image_size) -> tuple[int, int, int]:
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    return (in_channels, h, w)


class MAML(FewShotClassifier):
    """MAML on Conv-4 with an ``n_way``-output linear head.

    Args:
        n_way: classes per task (the head's outputs); support labels must be ``0..n_way-1``.
        in_channels, image_size: the images (``image_size`` an int or ``(H, W)``).
        hidden: filters of every Conv-4 block (64 in the paper; 16-32 train fast on a CPU).
        inner_steps, inner_lr: the inner loop during meta-training.
        test_inner_steps, test_inner_lr: the inner loop at prediction time (``None``: the
            training step size).
        first_order: ``True`` is first-order MAML (see :class:`FOMAML`).
        meta_batch: tasks per outer step.
        vectorize: ``"auto"``, ``True`` (vmap over tasks) or ``False`` (loop); see the module
            docstring.
        anil: adapt only the head in the inner loop (ANIL, Raghu et al., 2020): the body is
            meta-learned as a feature extractor that is *reused*, not adapted.

    ``model(support_x, support_y, query_x)`` adapts on the support set and returns query
    logits. In train mode with gradients enabled it uses the training inner loop and keeps
    the graph back to θ, so ``cross_entropy(logits, query_y).backward()`` is a MAML
    meta-gradient for one task; otherwise (``predict``, eval mode) it uses the test inner loop.
    """

    method_name = "maml"
    transductive = True  # BatchNorm always uses batch statistics (see __init__)

    def __init__(
        self,
        n_way: int = 5,
        in_channels: int = 1,
        image_size: int | tuple[int, int] = 28,
        hidden: int = 64,
        inner_steps: int = 1,
        inner_lr: float = 0.4,
        test_inner_steps: int = 10,
        test_inner_lr: float | None = None,
        first_order: bool = False,
        meta_batch: int = 32,
        vectorize: bool | str = "auto",
        anil: bool = False,
    ):
        super().__init__()  # first: records the arguments above for save/load
        for name, value, low in (("n_way", n_way, 2), ("inner_steps", inner_steps, 0), ("test_inner_steps", test_inner_steps, 0), ("meta_batch", meta_batch, 1), ("hidden", hidden, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        for name, value in (("inner_lr", inner_lr), ("test_inner_lr", test_inner_lr)):
            if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        resolve_vectorize(vectorize, torch.device("cpu"))  # validates the value
        self.n_way, self.first_order, self.meta_batch, self.vectorize, self.anil = n_way, first_order, meta_batch, vectorize, anil
        self.inner_steps, self.inner_lr = inner_steps, float(inner_lr)
        self.test_inner_steps = test_inner_steps
        self.test_inner_lr = float(inner_lr if test_inner_lr is None else test_inner_lr)
        # BatchNorm with batch statistics always and no running averages, as MAML's reference
        # code: nothing can leak between tasks, and train/eval mode behave the same.
        self.net = conv4_classifier(n_way, _image_shape(in_channels, image_size), hidden=hidden, out_channels=hidden, track_running_stats=False)

    # -- the pieces subclasses change -----------------------------------------------------
    def inner_lr_for(self, training: bool) -> LearningRate:
        """The step size of the inner loop (Meta-SGD returns learned tensors)."""
        return self.inner_lr if training else self.test_inner_lr

    def trainable_names(self) -> list[str] | None:
        """Parameters adapted in the inner loop: all (``None``) or only the head (ANIL)."""
        return [n for n, _ in self.net.named_parameters() if n.startswith("head.")] if self.anil else None

    # -- adaptation and prediction -------------------------------------------------------
    def adapt(self, support_x, support_y, *, training: bool | None = None, keep_graph: bool | None = None) -> Params:
        """Adapted parameters of ``self.net`` for one support set.

        ``training`` picks the training or the test inner loop (default: ``self.training``);
        ``keep_graph`` keeps the graph back to θ (default: whether gradients are enabled).
        """
        training = self.training if training is None else training
        keep_graph = torch.is_grad_enabled() if keep_graph is None else keep_graph
        params = named_params(self.net)
        if not keep_graph:  # no meta-gradient wanted: start from detached copies
            params = {n: p.detach() for n, p in params.items()}
        steps = self.inner_steps if training else self.test_inner_steps
        lr = self.inner_lr_for(training)
        if not keep_graph and isinstance(lr, Mapping):
            lr = {n: a.detach() for n, a in lr.items()}
        return adapt(
            self.net, params, {}, support_x, support_y, steps=steps, lr=lr,
            first_order=self.first_order or not keep_graph, trainable=self.trainable_names(),
        )  # fmt: skip

    def forward(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
        n = validate_task(support_x, support_y, query_x)
        if n != self.n_way:
            raise ValueError(
                f"this {type(self).__name__} has a {self.n_way}-way head: support labels must cover 0..{self.n_way - 1}, "
                f"got {n} classes (build the model with n_way={n})"
            )
        keep_graph = torch.is_grad_enabled()
        adapted = self.adapt(support_x, support_y, keep_graph=keep_graph)
        with torch.set_grad_enabled(keep_graph):
            return functional_forward(self.net, adapted, {}, query_x)

    # -- meta-training -------------------------------------------------------------------
    def meta_gradient(self, tasks, vectorize: bool | None = None) -> MetaGradient:
        """The meta-gradient of a meta-batch for the current weights (see :func:`meta_gradient`)."""
        lr = self.inner_lr_for(True)
        vectorize = resolve_vectorize(self.vectorize, self.device) if vectorize is None else vectorize
        return meta_gradient(
            self.net, tasks, inner_steps=self.inner_steps, inner_lr=lr, first_order=self.first_order,
            params=named_params(self.net), buffers={}, trainable=self.trainable_names(), vectorize=vectorize,
        )  # fmt: skip

    def _apply_meta_gradient(self, result: MetaGradient) -> None:
        """Store the meta-gradient in ``.grad`` of the parameters, for the outer optimiser."""
        for name, p in self.net.named_parameters():
            p.grad = result.grads[name]
        if result.lr_grads is not None:
            lrs = self.inner_lr_for(True)
            for name, g in result.lr_grads.items():
                lrs[name].grad = g

    def meta_train(
        self,
        dataset,
        *,
        n_way: int | None = None,
        k_shot: int = 1,
        q_query: int = 15,
        steps: int = 1000,
        lr: float = 1e-3,
        time_budget: float | None = None,
        seed: int = 0,
        device: torch.device | str | None = None,
        progress: bool = True,
        history: History | None = None,
        meta_batch: int | None = None,
    ) -> History:
        """``steps`` outer steps, each on ``meta_batch`` tasks, with Adam (``lr``) on θ.

        The outer learning rate follows :meth:`make_optimizer` (the protocol's schedule:
        halved at each quarter of training), as for every few-shot classifier of the course.

        Logs the mean query ``loss`` and ``acc`` *after* adaptation, per outer step.
        """
        n_way = self.n_way if n_way is None else n_way
        if n_way != self.n_way:
            raise ValueError(f"this {type(self).__name__} has a {self.n_way}-way head; cannot meta-train on {n_way}-way tasks")
        check_episode_request(n_way, k_shot, q_query)
        meta_batch = self.meta_batch if meta_batch is None else meta_batch
        if not isinstance(meta_batch, int) or meta_batch < 1:
            raise ValueError(f"meta_batch must be a positive int, got {meta_batch!r}")
        device = torch.device(device) if device is not None else get_device()
        self.to(device)
        torch.manual_seed(seed)
        episodes = EpisodeDataset(dataset, n_way, k_shot, q_query, num_episodes=max(1, steps) * meta_batch, seed=seed)
        opt, sched = self.make_optimizer(lr, steps)
        vectorize = resolve_vectorize(self.vectorize, device)

        def step(i):
            self.train()
            batch = [episodes[(i * meta_batch + t) % len(episodes)] for t in range(meta_batch)]
            tasks = [torch.stack([getattr(ep, f) for ep in batch]).to(device) for f in ("support_x", "support_y", "query_x", "query_y")]
            result = self.meta_gradient(tasks, vectorize=vectorize)
            opt.zero_grad(set_to_none=True)
            self._apply_meta_gradient(result)
            opt.step()
            sched.step()
            return {"loss": result.loss, "acc": result.accuracy}

        history = train_loop(step, steps, time_budget=time_budget, history=history, desc=f"meta-train {type(self).__name__}", progress=progress)
        self.eval()
        return history


class FOMAML(MAML):
    """First-order MAML: the same model, with the inner gradients treated as constants.

    The meta-gradient becomes ``∇L^query(θ')``, the query gradient at the adapted weights,
    applied to θ: no Hessian, about the cost of an ordinary backward pass per task.
    """

    method_name = "fomaml"

    def __init__(
        self,
        n_way: int = 5,
        in_channels: int = 1,
        image_size: int | tuple[int, int] = 28,
        hidden: int = 64,
        inner_steps: int = 1,
        inner_lr: float = 0.4,
        test_inner_steps: int = 10,
        test_inner_lr: float | None = None,
        meta_batch: int = 32,
        vectorize: bool | str = "auto",
        anil: bool = False,
    ):
        super().__init__(
            n_way, in_channels, image_size, hidden, inner_steps, inner_lr, test_inner_steps, test_inner_lr,
            first_order=True, meta_batch=meta_batch, vectorize=vectorize, anil=anil,
        )  # fmt: skip
