"""Black-box (memory-based) meta-learning: learning in activations instead of weights, and an
update rule that is itself learned.

Read in this order::

    common       the episode as a sequence of (image, label) pairs; per-episode relabelling;
                 how much the support order matters (support_order_effect)
    lstm         LSTMLearner: an LSTM reads the sequence and answers the query (the baseline)
    snail        SNAIL: causal temporal convolutions and soft attention over the sequence
    learned_opt  MetaLearnerLSTM: Ravi & Larochelle's learned optimiser, the base network's
                 weights as an LSTM's cell state

Every model is a :class:`~mlcourse.fewshot.FewShotClassifier`, so ``python -m mlcourse.bench``
and the evaluation helpers treat them like the metric and optimisation methods.
"""

from .common import SequenceLearner, episode_sequence, label_tokens, shuffle_episode, support_order_effect
from .learned_opt import MetaLearnerLSTM, preprocess
from .lstm import LSTMLearner
from .snail import SNAIL, AttentionBlock, CausalConv1d, DenseBlock, TCBlock

__all__ = [
    "SequenceLearner", "episode_sequence", "label_tokens", "shuffle_episode", "support_order_effect",
    "LSTMLearner", "SNAIL", "AttentionBlock", "CausalConv1d", "DenseBlock", "TCBlock",
    "MetaLearnerLSTM", "preprocess",
]  # fmt: skip
