"""What every sequence learner shares: the episode as a sequence, and the order it comes in.

A metric method compares a query with the support set through a fixed rule (a distance); an
optimisation method adapts weights on the support set. A *black-box* learner does neither
explicitly: it reads the support set as a sequence of (image, label) pairs and answers the
query from its activations, so whatever "learning" happens on a new task happens in the
forward pass (Santoro et al., 2016; Mishra et al., 2018). For one query the sequence is::

    (x_1, onehot(y_1)), (x_2, onehot(y_2)), ..., (x_NK, onehot(y_NK)), (x_q, 0)

The query's own label slot is zeros: the network must produce it, so it must never see it.
Each query gets its own sequence (the support prefix is shared): queries cannot inform one
another, and the model is not transductive.

Two details make or break such a learner:

* **Labels are remapped per episode.** Label 0 means "the class that came first in this
  episode", nothing more. If the same character always carried the same label, the network
  could memorise characters instead of learning to read the support set, and it would fail on
  new characters. The episode sampler already draws the classes in a random order; in
  training :func:`shuffle_episode` additionally permutes the labels and the support order.
* **The support order is part of the input.** The episode sampler lists the support set class
  by class (labels 0, 0, 1, 1, ...). Trained on that order, an LSTM can learn "the k-th block
  is class k" and ignore the labels altogether; shuffled in training, it must read them.
  :func:`support_order_effect` measures how much a trained model's answers still depend on
  the order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..fewshot import FewShotClassifier, validate_task
from ..models import Conv4


def label_tokens(features: torch.Tensor, labels: torch.Tensor | None, n_way: int) -> torch.Tensor:
    """``[B, D]`` features and labels -> ``[B, D + n_way]`` tokens: features, then the one-hot
    label (all zeros where ``labels`` is None: a query, whose label the model must not see)."""
    if labels is None:
        onehot = features.new_zeros(features.shape[0], n_way)
    else:
        onehot = F.one_hot(labels.long(), n_way).to(features.dtype)
    return torch.cat([features, onehot], dim=1)


def episode_sequence(support_features: torch.Tensor, support_y: torch.Tensor, query_features: torch.Tensor, n_way: int) -> torch.Tensor:
    """One sequence per query: ``[Q, NK + 1, D + n_way]``.

    Every sequence is the support tokens in their given order followed by one query token
    with a zero label. The query's label is not an argument: it cannot leak.
    """
    if support_features.dim() != 2 or query_features.dim() != 2:
        raise ValueError(f"features must be [B, D]: got support {tuple(support_features.shape)}, query {tuple(query_features.shape)}")
    if support_features.shape[1] != query_features.shape[1]:
        raise ValueError(f"support features have {support_features.shape[1]} numbers and query features {query_features.shape[1]}")
    support = label_tokens(support_features, support_y, n_way)  # [NK, D+N]
    query = label_tokens(query_features, None, n_way)  # [Q, D+N]
    q = query.shape[0]
    return torch.cat([support.unsqueeze(0).expand(q, -1, -1), query.unsqueeze(1)], dim=1)


def shuffle_episode(support_x, support_y, query_y, n_way: int, generator: torch.Generator | None = None):
    """A random relabelling and a random support order: what training feeds a sequence learner.

    Returns ``(support_x, support_y, query_y)`` with labels mapped through a random
    permutation of ``0..n_way-1`` (the same map for support and query) and the support set in
    a random order. The task is unchanged: only its presentation differs.
    """
    device = support_y.device
    relabel = torch.randperm(n_way, generator=generator).to(device)
    order = torch.randperm(len(support_y), generator=generator).to(device)
    return support_x[order], relabel[support_y[order]], relabel[query_y]


class SequenceLearner(FewShotClassifier):
    """Base class: embed images with Conv-4, read the episode as a sequence, answer the query.

    Subclasses implement :meth:`read`: ``[Q, T, D + N]`` sequences -> ``[Q, N]`` logits taken
    at the last (query) position. The output layer has one unit per label, so the model is
    built for one way (``n_way``), like MAML's head; any number of shots works.

    In training mode :meth:`episode_loss` shuffles labels and support order every episode
    (:func:`shuffle_episode`); at prediction time the support set is read in the order given.
    """

    method_name = "sequence"
    transductive = False  # one sequence per query: the other queries are never seen

    def __init__(self, n_way: int = 5, in_channels: int = 1, hidden: int = 64):
        super().__init__()
        if not isinstance(n_way, int) or n_way < 2:
            raise ValueError(f"n_way must be an int >= 2, got {n_way!r}")
        self.n_way = n_way
        self.embed = Conv4(in_channels, hidden=hidden, out_channels=hidden)
        self._shuffle = torch.Generator().manual_seed(0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x).flatten(1)

    def read(self, sequences: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
        n = validate_task(support_x, support_y, query_x)
        if n > self.n_way:
            raise ValueError(
                f"this {type(self).__name__} reads {self.n_way}-way episodes (one output per label): support labels must lie "
                f"in 0..{self.n_way - 1}, got {n} classes (build the model with n_way={n})"
            )
        feats = self.features(torch.cat([support_x, query_x]))
        s, q = feats[: len(support_x)], feats[len(support_x) :]
        return self.read(episode_sequence(s, support_y, q, self.n_way))

    def episode_loss(self, episode):
        sx, sy, qy = shuffle_episode(episode.support_x, episode.support_y, episode.query_y, self.n_way, self._shuffle)
        logits = self(sx, sy, episode.query_x)
        return F.cross_entropy(logits, qy), logits

    def meta_train(self, dataset, *, n_way: int | None = None, seed: int = 0, **kwargs):
        n_way = self.n_way if n_way is None else n_way
        if n_way != self.n_way:
            raise ValueError(f"this {type(self).__name__} has {self.n_way} outputs; cannot meta-train on {n_way}-way tasks")
        self._shuffle.manual_seed(seed)
        return super().meta_train(dataset, n_way=n_way, seed=seed, **kwargs)


@torch.no_grad()
def support_order_effect(model: FewShotClassifier, episodes, orders: int = 8, seed: int = 0) -> dict:
    """How much a model's answers depend on the order of the support set.

    For each episode, scores the queries with the support set in its given (class-by-class)
    order and in ``orders`` random orders. Returns the mean accuracy in the given order, the
    mean and spread (std over orders, averaged over episodes) in random orders, and the
    fraction of queries whose predicted class changes with the order. A permutation-invariant
    model (ProtoNet) gives a spread and a flip rate of zero.
    """
    g = torch.Generator().manual_seed(seed)
    given, shuffled, spread, flips, total = [], [], [], 0, 0
    for ep in episodes:
        base = model.predict(ep.support_x, ep.support_y, ep.query_x).argmax(-1)
        given.append((base == ep.query_y).float().mean().item())
        accs, preds = [], []
        for _ in range(orders):
            order = torch.randperm(len(ep.support_y), generator=g)
            p = model.predict(ep.support_x[order], ep.support_y[order], ep.query_x).argmax(-1)
            accs.append((p == ep.query_y).float().mean().item())
            preds.append(p)
        preds = torch.stack(preds)
        flips += int((preds != preds[0]).any(0).sum())
        total += preds.shape[1]
        shuffled.append(sum(accs) / len(accs))
        spread.append(torch.tensor(accs).std().item() if len(accs) > 1 else 0.0)
    n = max(1, len(given))
    return {
        "episodes": len(given), "orders": orders,
        "accuracy_given_order": sum(given) / n, "accuracy_random_orders": sum(shuffled) / n,
        "accuracy_spread": sum(spread) / n, "prediction_flip_rate": flips / max(1, total),
    }  # fmt: skip


def count_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
