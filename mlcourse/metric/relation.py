"""Relation Networks (Sung, Yang, Zhang, Xiang, Torr and Hospedales, 2018, "Learning to Compare:
Relation Network for Few-Shot Learning", CVPR).

ProtoNet and Matching Networks fix the comparison (a squared distance, a cosine) and learn only
the embedding. A Relation Network *learns the comparison too*:

1. an **embedding module** ``f`` turns every image into a *feature map* (not a vector: the
   spatial layout is kept so the comparison can look at where strokes are);
2. the K support maps of each class are **summed** into one class map ``f_n`` (the paper's
   choice; with K = 1 it is just the one support map);
3. each query map ``f(x)`` is **concatenated** channel-wise with each class map and fed to a
   **relation module** ``g``, a small CNN ending in a sigmoid, which outputs the relation score
   ``r_n = g([f_n, f(x)])`` in ``[0, 1]``.

Because the scores are "how similar", not probabilities, the paper trains them by **regression**:
mean squared error against the one-hot label (1 for the matching class, 0 otherwise), and so
does :meth:`RelationNet.episode_loss`. The scores are returned as the logits: the argmax is the
prediction.

Architecture, as in the paper's Omniglot model: four blocks of ``3x3 conv (64) -> BatchNorm ->
ReLU``; the first two are followed by a ``2x2`` max-pool and have no padding, the last two have
neither. A 28x28 image goes 28 -> 26 -> 13 -> 11 -> 5 -> 5 -> 5, so its feature map is
``64 x 5 x 5`` (84x84 images give ``64 x 19 x 19``). The relation module is two blocks of
``3x3 conv (64) -> BatchNorm -> ReLU -> 2x2 max-pool`` (5 -> 2 -> 1) and two fully connected
layers of 8 and 1 units.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..fewshot import FewShotClassifier, validate_task
from .common import embed_in_chunks, one_hot

PAIRS_PER_CHUNK = 8192  # (query, class) pairs per relation-module pass in eval mode


def relation_block(in_channels: int, out_channels: int, padding: int, pool: bool) -> nn.Sequential:
    """``3x3 conv -> BatchNorm -> ReLU`` (``-> 2x2 max-pool`` when ``pool``)."""
    layers = [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=padding),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class RelationEmbedding(nn.Module):
    """The embedding module: images ``[B, C, H, W]`` to feature maps ``[B, 64, h, w]``."""

    def __init__(self, in_channels: int = 1, hidden: int = 64):
        super().__init__()
        self.encoder = nn.Sequential(
            relation_block(in_channels, hidden, padding=0, pool=True),
            relation_block(hidden, hidden, padding=0, pool=True),
            relation_block(hidden, hidden, padding=1, pool=False),
            relation_block(hidden, hidden, padding=1, pool=False),
        )
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected images [B, {self.in_channels}, H, W], got {tuple(x.shape)}")
        return self.encoder(x)

    @staticmethod
    def map_size(image_size: int) -> int:
        """Side of the feature map for square images of side ``image_size``."""
        return ((image_size - 2) // 2 - 2) // 2


class RelationModule(nn.Module):
    """``g``: a pair of feature maps, concatenated to ``[B, 2C, h, w]``, to a score in ``[0, 1]``.

    Args:
        in_channels: channels of the concatenated pair (2 x 64 in the paper).
        hidden: channels of the two conv blocks.
        fc_hidden: units of the first fully connected layer (8 in the paper).
        map_size: side of the input maps (5 for 28x28 images); sets the size of the first
            fully connected layer. The two poolings need ``map_size >= 4``.
    """

    def __init__(self, in_channels: int = 128, hidden: int = 64, fc_hidden: int = 8, map_size: int = 5):
        super().__init__()
        if map_size < 4:
            raise ValueError(f"the relation module needs feature maps of at least 4x4, got {map_size}x{map_size}")
        self.convs = nn.Sequential(
            relation_block(in_channels, hidden, padding=1, pool=True),
            relation_block(hidden, hidden, padding=1, pool=True),
        )
        side = map_size // 2 // 2
        self.fc1 = nn.Linear(hidden * side * side, fc_hidden)
        self.fc2 = nn.Linear(fc_hidden, 1)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:  # [B, 2C, h, w] -> [B]
        h = self.convs(pairs).flatten(1)
        return torch.sigmoid(self.fc2(F.relu(self.fc1(h)))).squeeze(1)


class RelationNet(FewShotClassifier):
    """Relation network: learned embedding *and* learned comparison.

    Args:
        in_channels: image channels.
        hidden: channels of the embedding (64 in the paper).
        image_size: side of the (square) input images; fixes the size of the relation module.
        fc_hidden: units of the relation module's first fully connected layer (8 in the paper).
    """

    method_name = "relation"

    def __init__(self, in_channels: int = 1, hidden: int = 64, image_size: int = 28, fc_hidden: int = 8):
        super().__init__()
        self.embedding = RelationEmbedding(in_channels, hidden)
        self.map_size = RelationEmbedding.map_size(image_size)
        self.image_size = image_size
        self.relation = RelationModule(2 * hidden, hidden, fc_hidden, self.map_size)

    def scores(self, class_maps: torch.Tensor, query_maps: torch.Tensor) -> torch.Tensor:
        """Relation scores ``[Q, N]`` of every query map ``[Q, C, h, w]`` with every class map ``[N, C, h, w]``."""
        q, n = len(query_maps), len(class_maps)
        pairs = torch.cat(
            [
                class_maps.unsqueeze(0).expand(q, -1, -1, -1, -1),  # [Q, N, C, h, w]
                query_maps.unsqueeze(1).expand(-1, n, -1, -1, -1),  # [Q, N, C, h, w]
            ],
            dim=2,
        )  # [Q, N, 2C, h, w]: support first, then query, as in the paper's code
        return self.relation(pairs.flatten(0, 1)).view(q, n)

    def forward(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
        n_way = validate_task(support_x, support_y, query_x)
        if support_x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"this RelationNet was built for {self.image_size}x{self.image_size} images, "
                f"got {tuple(support_x.shape[-2:])}"
            )
        if self.training:
            z = self.embedding(torch.cat([support_x, query_x]))
            zs, zq = z[: len(support_x)], z[len(support_x) :]
        else:
            zs, zq = embed_in_chunks(self.embedding, support_x), embed_in_chunks(self.embedding, query_x)
        # Sum the K maps of each class (a matrix product with the one-hot labels).
        class_maps = (one_hot(support_y, n_way, zs.dtype).T @ zs.flatten(1)).view(n_way, *zs.shape[1:])
        if self.training:
            return self.scores(class_maps, zq)
        # In eval mode the relation module sees each pair on its own: score the pairs in chunks.
        step = max(1, PAIRS_PER_CHUNK // n_way)
        return torch.cat([self.scores(class_maps, zq[i : i + step]) for i in range(0, len(zq), step)])

    def episode_loss(self, episode) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean squared error between the relation scores and the one-hot labels (the paper's loss)."""
        scores = self(episode.support_x, episode.support_y, episode.query_x)
        target = one_hot(episode.query_y, scores.shape[1], scores.dtype)
        return F.mse_loss(scores, target), scores
