"""An LSTM that learns in its activations: the black-box baseline (the CS330 homework's
"memory-augmented" model; Santoro et al., 2016, use an LSTM controller with an external memory).

The episode is read as a sequence (:mod:`mlcourse.blackbox.common`): the support images with
their one-hot labels, then the query with a zero label, and the LSTM's output at the query's
step is the prediction. Nothing in the architecture says "compare the query with the
support set"; the LSTM has to learn to store (image, label) pairs in its state and retrieve
the right label, from episodes alone.

Every query gets its own sequence, and every sequence starts with the same support prefix.
Running the LSTM over the prefix once and branching its state for each query gives exactly
the same outputs as running ``Q`` full sequences, at ``1/Q`` of the cost.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import SequenceLearner


class LSTMLearner(SequenceLearner):
    """Conv-4 features plus one-hot labels, read by a ``layers``-layer LSTM.

    Args:
        n_way: labels per episode (the output units).
        in_channels: image channels.
        hidden: Conv-4 filters (the image features have ``hidden`` numbers for 28x28 images).
        lstm_hidden: size of the LSTM state.
        layers: stacked LSTM layers.
    """

    method_name = "lstm-learner"

    def __init__(self, n_way: int = 5, in_channels: int = 1, hidden: int = 64, lstm_hidden: int = 256, layers: int = 2):
        super().__init__(n_way, in_channels, hidden)
        self.lstm = nn.LSTM(hidden + n_way, lstm_hidden, num_layers=layers, batch_first=True)
        self.out = nn.Linear(lstm_hidden, n_way)

    def read(self, sequences: torch.Tensor) -> torch.Tensor:
        # The support prefix is the same in every row: run it once, branch the state per query.
        prefix, queries = sequences[:1, :-1], sequences[:, -1:]
        _, (h, c) = self.lstm(prefix)
        q = queries.shape[0]
        state = (h.expand(-1, q, -1).contiguous(), c.expand(-1, q, -1).contiguous())
        out, _ = self.lstm(queries, state)
        return self.out(out[:, -1])

    def read_naive(self, sequences: torch.Tensor) -> torch.Tensor:
        """The same answer as :meth:`read`, the obvious way: every full sequence separately
        (kept for the test that holds the two equal)."""
        out, _ = self.lstm(sequences)
        return self.out(out[:, -1])
