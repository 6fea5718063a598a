"""Siamese networks for one-shot recognition (Koch, Zemel and Salakhutdinov, 2015, "Siamese
Neural Networks for One-shot Image Recognition", ICML Deep Learning Workshop).

The oldest metric idea in the chapter, and the only one that is *not* trained to classify.
A Siamese network learns **verification**: given two images, are they the same character?
Both images go through the same ("twin") network ``f``; the prediction is a weighted L1
distance squashed by a sigmoid::

    p(same | x1, x2) = sigmoid( sum_j alpha_j |f(x1)_j - f(x2)_j| + b )

trained with binary cross-entropy on pairs labelled same/different. One-shot classification
then *reuses* the verifier: a query gets the class of the support image it is most likely
to match, i.e. ``score_n = max_{i : y_i = n} logit(x, x_i)``.

Differences from the paper, to fit the course: the twin is our Conv-4 (Koch et al. used a
larger network on 105x105 images), and pairs are drawn from episodes: every (query, support)
pair of an N-way episode is a training pair, "same" when their labels agree. Only 1 in N of
those pairs is positive, so the positives are weighted by N-1 to balance the two kinds, as
the paper's balanced pair sampling does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..fewshot import FewShotClassifier, validate_task
from ..models import Conv4
from .common import embed_in_chunks


class SiameseNet(FewShotClassifier):
    """Twin Conv-4 with an L1-distance verification head; predicts by the best-matching support image.

    Args:
        in_channels: image channels.
        hidden: channels of every Conv-4 block (the embedding length for 28x28 images).
    """

    method_name = "siamese"

    def __init__(self, in_channels: int = 1, hidden: int = 64):
        super().__init__()
        self.backbone = Conv4(in_channels, hidden, hidden)
        self.head = nn.Linear(hidden, 1)  # the alpha_j and b of the paper

    def pair_logits(self, support_x: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
        """Verification logits ``[Q, S]``: ``logit(same)`` of every query with every support image."""
        if self.training:
            z = self.backbone(torch.cat([support_x, query_x]))
            zs, zq = z[: len(support_x)], z[len(support_x) :]
        else:
            zs, zq = embed_in_chunks(self.backbone, support_x), embed_in_chunks(self.backbone, query_x)
        return self.head((zq.unsqueeze(1) - zs.unsqueeze(0)).abs()).squeeze(-1)

    def forward(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
        n_way = validate_task(support_x, support_y, query_x)
        pairs = self.pair_logits(support_x, query_x)  # [Q, S]
        # score_n = max over the support images of class n (every class has at least one).
        scores = pairs.new_full((len(query_x), n_way), float("-inf"))
        return scores.scatter_reduce(1, support_y.long().expand_as(pairs), pairs, reduce="amax")

    def episode_loss(self, episode) -> tuple[torch.Tensor, torch.Tensor]:
        """Balanced binary cross-entropy on every (query, support) pair of the episode."""
        n_way = validate_task(episode.support_x, episode.support_y, episode.query_x)
        pairs = self.pair_logits(episode.support_x, episode.query_x)
        same = (episode.query_y.unsqueeze(1) == episode.support_y.unsqueeze(0)).to(pairs.dtype)
        loss = F.binary_cross_entropy_with_logits(pairs, same, pos_weight=pairs.new_tensor(float(max(1, n_way - 1))))
        scores = pairs.new_full((len(episode.query_x), n_way), float("-inf"))
        scores = scores.scatter_reduce(1, episode.support_y.long().expand_as(pairs), pairs.detach(), reduce="amax")
        return loss, scores
