"""Metric-based meta-learning: learn an embedding in which a simple comparison classifies.

Every method here is a :class:`~mlcourse.fewshot.FewShotClassifier`: call
``model(support_x, support_y, query_x)`` for logits ``[num_queries, N]``, ``model.meta_train``
to train it on episodes, ``model.save``/``FewShotClassifier.load`` to keep it. They differ only
in *how* a query is compared with the support set:

=====================  ====================================================  ==================
method                 comparison                                            paper
=====================  ====================================================  ==================
:class:`ProtoNet`      minus squared distance to each class mean             Snell et al., 2017
:class:`MatchingNet`   cosine attention over every support image             Vinyals et al., 2016
:class:`RelationNet`   a learned CNN scores (class map, query map) pairs     Sung et al., 2018
:class:`SiameseNet`    learned L1 verification of pairs, max over support    Koch et al., 2015
=====================  ====================================================  ==================
"""

from .matching import AttentionLSTM, MatchingNet, SupportContext, cosine_attention
from .protonet import ProtoNet, prototypes, squared_euclidean
from .relation import RelationEmbedding, RelationModule, RelationNet
from .siamese import SiameseNet

__all__ = [
    "ProtoNet",
    "prototypes",
    "squared_euclidean",
    "MatchingNet",
    "SupportContext",
    "AttentionLSTM",
    "cosine_attention",
    "RelationNet",
    "RelationModule",
    "RelationEmbedding",
    "SiameseNet",
]
