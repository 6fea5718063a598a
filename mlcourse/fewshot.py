"""The protocol every few-shot classifier in the course follows.

A few-shot classifier is an ``nn.Module`` that

1. **meta-trains** on a class-indexed dataset: ``model.meta_train(train_set, steps=...,
   time_budget=..., seed=..., device=..., progress=True) -> History``;
2. **predicts**: given a support set (images and labels ``0..N-1``, any N and K) and query
   images, ``model(support_x, support_y, query_x)`` returns logits ``[num_queries, N]``;
3. **saves and loads** itself: ``model.save(path)``; ``FewShotClassifier.load(path)``.

The default :meth:`FewShotClassifier.meta_train` is *episodic training* (Vinyals et al.,
2016): draw an N-way K-shot episode from the training classes, compute the loss of the
query predictions, take an optimiser step. A method only has to define
:meth:`FewShotClassifier.forward`; methods whose training is different (MAML's inner
loop, say) override :meth:`FewShotClassifier.meta_train` or :meth:`episode_loss`.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .config import get_device
from .data.episodes import EpisodeDataset
from .train import History, load_checkpoint, save_checkpoint, train_loop


def validate_task(support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor) -> int:
    """Check a support/query pair and return N, the number of classes.

    Raises ``ValueError`` for images that are not ``[B, C, H, W]``, support and query images
    of different shapes, labels that do not match the images, labels outside ``0..N-1`` and
    classes with no support image.
    """
    if support_x.dim() != 4 or query_x.dim() != 4:
        raise ValueError(
            f"images must be [B, C, H, W]: got support {tuple(support_x.shape)}, query {tuple(query_x.shape)}"
        )
    if support_x.shape[1:] != query_x.shape[1:]:
        raise ValueError(
            f"support images {tuple(support_x.shape[1:])} and query images {tuple(query_x.shape[1:])} differ in shape"
        )
    if support_y.dim() != 1 or support_y.shape[0] != support_x.shape[0]:
        raise ValueError(f"{support_x.shape[0]} support images but labels of shape {tuple(support_y.shape)}")
    if support_x.shape[0] == 0:
        raise ValueError("the support set is empty")
    if support_y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"support labels must be integers, got {support_y.dtype}")
    lo, hi = int(support_y.min()), int(support_y.max())
    if lo < 0:
        raise ValueError(f"support labels must lie in 0..N-1, found {lo}")
    n_way = hi + 1
    counts = torch.bincount(support_y.long(), minlength=n_way)
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if empty:
        raise ValueError(
            f"support labels must cover 0..{n_way - 1} with no gaps: classes {empty} have no support image "
            "(remap labels per episode, e.g. with mlcourse.data.episodes.relabel)"
        )
    return n_way


def constructor_arguments(obj) -> dict:
    """The arguments the most derived ``__init__`` of ``obj`` was called with, by name.

    Called from a base class's ``__init__`` (itself called first thing in the subclass's), it
    walks up to the frame of ``type(obj).__init__`` (a subclass of a subclass calls through its
    parent's ``__init__``, whose frame lacks the extra arguments) and reads its parameters, so
    a saved model can be rebuilt with ``type(obj)(**arguments)``.
    """
    target = type(obj).__init__.__code__
    here = inspect.currentframe().f_back  # type: ignore[union-attr]
    frame = here
    while frame is not None and frame.f_code is not target:
        frame = frame.f_back
    frame = frame or here.f_back  # type: ignore[union-attr]
    sig = inspect.signature(type(obj).__init__)
    return {name: frame.f_locals[name] for name in sig.parameters if name != "self" and name in frame.f_locals}  # type: ignore[union-attr]


def rebuild(path, base, cls, modules, map_location="cpu"):
    """The model saved at ``path`` by ``save``: its class looked up in ``base.registry`` (after
    importing ``modules``, where the course's models register themselves), built from the
    stored constructor arguments, weights loaded, in eval mode; refused when it is not a ``cls``."""
    import importlib

    state = load_checkpoint(path, map_location=map_location)
    name = state.get("class")
    if name not in base.registry:
        for module in modules:
            importlib.import_module(module)
    if name not in base.registry:
        raise ValueError(f"{path}: unknown model class {name!r} (known: {sorted(base.registry)})")
    model_cls = base.registry[name]
    if cls is not base and not issubclass(model_cls, cls):
        raise ValueError(f"{path} holds a {name}, not a {cls.__name__}")
    model = model_cls(**state["config"])
    model.load_state_dict(state["state_dict"])
    return model.eval()


class FewShotClassifier(nn.Module):
    """Base class: episodic meta-training, chunked prediction, save/load.

    Subclasses implement ``forward(support_x, support_y, query_x) -> logits [Q, N]`` and
    record their constructor arguments by calling ``super().__init__()`` first: the base
    class captures them so :meth:`load` can rebuild the model.
    """

    registry: ClassVar[dict[str, type]] = {}
    method_name: ClassVar[str] = "fewshot"
    # True for models whose prediction for one query depends on the other queries of the
    # batch: MAML, its relatives and Reptile use BatchNorm with the statistics of the batch at
    # hand (no running averages), so the query batch is normalised with its own statistics.
    # Their scores are only defined for the whole query set of an episode, so predict() never
    # splits it into chunks.
    transductive: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        FewShotClassifier.registry[cls.__name__] = cls

    def __init__(self):
        super().__init__()
        self._config = constructor_arguments(self)  # for load()

    # -- prediction ---------------------------------------------------------------------
    def forward(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, support_x, support_y, query_x, chunk: int = 1024) -> torch.Tensor:
        """Logits for any number of queries, in eval mode, on the model's device.

        Queries go through in chunks of ``chunk`` to bound memory, except for a
        :attr:`transductive` model, whose outputs would change with the chunking: it sees the
        whole query set at once.
        """
        validate_task(support_x, support_y, query_x)
        if self.transductive:
            chunk = max(1, len(query_x))
        was_training = self.training
        self.eval()
        device = self.device
        sx, sy = support_x.to(device), support_y.to(device)
        out = [self(sx, sy, query_x[i : i + chunk].to(device)) for i in range(0, len(query_x), chunk)]
        self.train(was_training)
        return torch.cat(out)

    @property
    def device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    # -- meta-training ------------------------------------------------------------------
    def episode_loss(self, episode) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of the query predictions of one episode, and the logits."""
        logits = self(episode.support_x, episode.support_y, episode.query_x)
        return F.cross_entropy(logits, episode.query_y), logits

    def make_optimizer(self, lr: float, steps: int):
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        # halve the learning rate four times over training: the schedule of Snell et al.
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, steps // 4), gamma=0.5)
        return opt, sched

    def meta_train(
        self,
        dataset,
        *,
        n_way: int = 5,
        k_shot: int = 1,
        q_query: int = 15,
        steps: int = 1000,
        lr: float = 1e-3,
        time_budget: float | None = None,
        seed: int = 0,
        device: torch.device | str | None = None,
        progress: bool = True,
        history: History | None = None,
    ) -> History:
        """Episodic training: ``steps`` episodes (or ``time_budget`` seconds), one Adam step each."""
        device = torch.device(device) if device is not None else get_device()
        self.to(device)
        torch.manual_seed(seed)
        episodes = EpisodeDataset(dataset, n_way, k_shot, q_query, num_episodes=max(1, steps), seed=seed)
        opt, sched = self.make_optimizer(lr, steps)

        def step(i):
            self.train()
            ep = episodes[i % len(episodes)].to(device)
            loss, logits = self.episode_loss(ep)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            acc = (logits.argmax(-1) == ep.query_y).float().mean()
            return {"loss": loss.item(), "acc": acc.item()}

        history = train_loop(step, steps, time_budget=time_budget, history=history, desc=f"meta-train {type(self).__name__}", progress=progress)
        self.eval()
        return history

    @torch.no_grad()
    def recalibrate_batchnorm(
        self,
        dataset,
        *,
        n_way: int = 5,
        k_shot: int = 1,
        q_query: int = 15,
        episodes: int = 200,
        seed: int = 0,
        device: torch.device | str | None = None,
    ) -> int:
        """Recompute BatchNorm running statistics as exact averages over ``episodes`` episodes.

        Meta-training updates the running mean and variance of every BatchNorm layer with an
        exponential average of recent *training* batches: with augmented training images
        (:mod:`mlcourse.metric.augment`) those are statistics of distorted images, which the
        test images are not. Passing clean training episodes through the network in train
        mode, with ``momentum=None`` (an equal-weight running average), replaces them with
        the statistics of undistorted data ("precise BatchNorm", Wu & Johnson, 2021). Only
        training data is used; the weights do not change. Returns the number of layers
        recalibrated (0 for models that always use batch statistics, like MAML's).
        """
        layers = [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        if not layers or episodes < 1:
            return 0
        device = torch.device(device) if device is not None else self.device
        was_training = self.training
        momenta = [m.momentum for m in layers]
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: every batch counts the same
        self.train()
        try:
            for ep in EpisodeDataset(dataset, n_way, k_shot, q_query, num_episodes=episodes, seed=seed):
                ep = ep.to(device)
                self(ep.support_x, ep.support_y, ep.query_x)
        finally:
            for m, momentum in zip(layers, momenta):
                m.momentum = momentum
            self.train(was_training)
        return len(layers)

    # -- persistence --------------------------------------------------------------------
    def save(self, path: str | Path, **extra) -> Path:
        """Write class name, constructor arguments and weights (atomically)."""
        state = {"class": type(self).__name__, "config": self._config, "state_dict": self.state_dict(), **extra}
        return save_checkpoint(path, state)

    @classmethod
    def load(cls, path: str | Path, map_location="cpu") -> "FewShotClassifier":
        """Rebuild a model saved with :meth:`save`."""
        # the course's classifiers register themselves when their module is imported
        return rebuild(path, FewShotClassifier, cls, ("mlcourse.metric", "mlcourse.metric.siamese", "mlcourse.optim", "mlcourse.blackbox"), map_location)
