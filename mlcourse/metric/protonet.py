"""Prototypical Networks (Snell, Swersky and Zemel, 2017, "Prototypical Networks for Few-shot
Learning", NeurIPS).

The idea in three lines. Embed every image with a network ``f`` (here Conv-4, 64 numbers for a
28x28 image). Summarise each class of the support set by its *prototype*, the mean embedding
of its K support images::

    c_n = (1/K) * sum_{i : y_i = n} f(x_i)

and classify a query ``x`` by a softmax over minus its squared distances to the prototypes::

    p(y = n | x) = softmax_n( -||f(x) - c_n||^2 )

Why the *squared Euclidean* distance: it is a Bregman divergence, and for those the point that
minimises the summed divergence to a cluster is exactly the cluster mean, so "prototype =
mean" is the right summary (Snell et al., section 2.3). Expanding the square also shows that
ProtoNet is a *linear* classifier on top of ``f``::

    -||f(x) - c_n||^2 = 2 c_n . f(x) - ||c_n||^2  - ||f(x)||^2,

with weights ``w_n = 2 c_n`` and bias ``b_n = -||c_n||^2`` (the last term is the same for every
class and drops out of the softmax). The network is trained *episodically*: sample an N-way
K-shot task from the training classes, take the cross-entropy of its queries, step. Snell et
al. found it helps to train with more ways than you test with (e.g. 60-way training for
5-way testing on Omniglot): ``model.meta_train(train_set, n_way=60, ...)``.

``distance="cosine"`` replaces the distance by a scaled cosine similarity,
``logit_n = t * cos(f(x), c_n)``, bounded by the temperature ``t`` (learnable by default,
as in Oreshkin et al., 2018, "TADAM", and Chen et al., 2019, "A Closer Look"): without the
scale, logits in ``[-1, 1]`` give a softmax that can never be confident.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..fewshot import FewShotClassifier, validate_task
from ..models import Conv4
from .common import embed_in_chunks, one_hot

DISTANCES = ("euclidean", "cosine")


def prototypes(embeddings: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """Class means ``[N, D]`` of ``embeddings [S, D]`` with ``labels`` in ``0..N-1``.

    Written as a matrix product (one-hot transposed times embeddings, divided by the counts)
    so it is differentiable, works for classes with different numbers of shots, and runs as
    one operation on a GPU.
    """
    if embeddings.dim() != 2 or labels.shape != embeddings.shape[:1]:
        raise ValueError(f"embeddings must be [S, D] with labels [S], got {tuple(embeddings.shape)} and {tuple(labels.shape)}")
    onehot = one_hot(labels, n_way, embeddings.dtype)  # [S, N]
    counts = onehot.sum(0)  # [N]
    if (counts == 0).any():
        empty = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"classes {empty} have no embedding, so no prototype")
    return (onehot.T @ embeddings) / counts.unsqueeze(1)


def squared_euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``d[i, j] = ||a_i - b_j||^2`` for ``a [A, D]`` and ``b [B, D]``; returns ``[A, B]``.

    Computed from the differences themselves rather than from ``|a|^2 + |b|^2 - 2 a.b``: the
    expanded form is faster for huge matrices but loses precision when two points are close
    (it subtracts large, nearly equal numbers) and can even turn slightly negative.
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected [A, D] and [B, D], got {tuple(a.shape)} and {tuple(b.shape)}")
    return (a.unsqueeze(1) - b.unsqueeze(0)).pow(2).sum(-1)


class ProtoNet(FewShotClassifier):
    """Prototypical network on a Conv-4 backbone.

    Args:
        in_channels: image channels (1 for Omniglot and the glyphs).
        hidden: channels of every Conv-4 block (64 in the paper).
        distance: ``"euclidean"`` (logits = minus squared distance, the paper) or
            ``"cosine"`` (logits = temperature * cosine similarity).
        temperature: initial scale of the cosine logits (ignored for ``"euclidean"``).
        learn_temperature: learn the scale (stored as its logarithm, so it stays positive)
            or keep it fixed.
    """

    method_name = "protonet"

    def __init__(
        self,
        in_channels: int = 1,
        hidden: int = 64,
        distance: str = "euclidean",
        temperature: float = 10.0,
        learn_temperature: bool = True,
    ):
        super().__init__()
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.backbone = Conv4(in_channels, hidden, hidden)
        self.distance = distance
        log_t = torch.tensor(math.log(temperature))
        if learn_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return embed_in_chunks(self.backbone, x)

    def forward(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
        n_way = validate_task(support_x, support_y, query_x)
        if self.training:
            # One pass over support and query together: BatchNorm sees one batch per episode,
            # as in the reference implementation.
            z = self.backbone(torch.cat([support_x, query_x]))
            zs, zq = z[: len(support_x)], z[len(support_x) :]
        else:
            zs, zq = self.embed(support_x), self.embed(query_x)
        protos = prototypes(zs, support_y, n_way)  # [N, D]
        if self.distance == "euclidean":
            return -squared_euclidean(zq, protos)  # [Q, N]
        return self.temperature * F.normalize(zq, dim=1) @ F.normalize(protos, dim=1).T
