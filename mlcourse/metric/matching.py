"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu and Wierstra, 2016, "Matching
Networks for One Shot Learning", NeurIPS).

A Matching Network is a *differentiable nearest neighbour*. A query ``x`` gets a label
distribution that is a weighted vote of the support labels::

    P(y | x, S) = sum_i a(x, x_i) * onehot(y_i),
    a(x, x_i)   = softmax_i( cos(f(x), g(x_i)) )

i.e. attention over the support set, with cosine similarity between the embedded query
``f(x)`` and embedded support images ``g(x_i)``. With a hard argmax instead of the softmax this
would be 1-nearest-neighbour; the softmax makes it trainable end to end, episode by episode
(the paper introduced this episodic training). Unlike ProtoNet, every support image votes
separately: nothing is averaged before comparing.

**Full-context embeddings** (``fce=True``, the paper's appendix A.2) let each embedding depend
on the whole support set ``S``:

* ``g(x_i, S) = h_fwd_i + h_bwd_i + g'(x_i)``: a bidirectional LSTM reads the sequence of
  support embeddings ``g'(x_1..x_S)`` and its two hidden states are added to the input (a
  skip connection). The LSTM reads the support set *in order*, so these embeddings depend on
  the order of the support set: the method is no longer exactly permutation invariant.
* ``f(x, S) = attLSTM(f'(x), g(S), K)``: ``K`` "processing steps" of an LSTM whose input is
  always the query embedding ``f'(x)`` and that attends over ``g(S)`` at every step::

      h^_k, c_k = LSTM(f'(x), [h_{k-1}, r_{k-1}], c_{k-1})
      h_k       = h^_k + f'(x)
      r_k       = sum_i softmax_i(h_k . g(x_i)) g(x_i)

  and ``f(x, S) = h_K``. (An LSTM's gates are a linear function of the concatenation of its
  input and its previous hidden state, so feeding ``r_{k-1}`` beside ``f'(x)`` as the input
  computes exactly the paper's ``LSTM(f'(x), [h_{k-1}, r_{k-1}], ...)`` while keeping ``h`` the
  size of ``f'(x)`` for the skip connection.) Each query is processed on its own: queries
  never influence each other.

``f'`` and ``g'`` are the same Conv-4 (shared weights, as in the paper's Omniglot model).

The forward pass returns ``log P(y | x, S)`` (clamped away from ``log 0``), so that
``F.cross_entropy`` on these "logits" is exactly the paper's negative log-likelihood: the
log-softmax of a log-distribution is the log-distribution itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..fewshot import FewShotClassifier, validate_task
from ..models import Conv4
from .common import embed_in_chunks, one_hot

LOG_EPS = 1e-8  # the smallest probability whose log we take


def cosine_attention(queries: torch.Tensor, keys: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``softmax_i(temperature * cos(q, k_i))`` for ``queries [Q, D]``, ``keys [S, D]``: ``[Q, S]``."""
    sims = F.normalize(queries, dim=1) @ F.normalize(keys, dim=1).T
    return F.softmax(temperature * sims, dim=1)


class SupportContext(nn.Module):
    """``g(x_i, S) = h_fwd_i + h_bwd_i + g'(x_i)``: a bidirectional LSTM over the support embeddings."""

    def __init__(self, dim: int):
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, batch_first=True, bidirectional=True)

    def forward(self, g: torch.Tensor) -> torch.Tensor:  # [S, D] -> [S, D]
        out, _ = self.lstm(g.unsqueeze(0))  # [1, S, 2D]: forward states, then backward states
        fwd, bwd = out[0].chunk(2, dim=1)
        return fwd + bwd + g


class AttentionLSTM(nn.Module):
    """``f(x, S)``: ``steps`` processing steps of an LSTM that attends over the support set."""

    def __init__(self, dim: int, steps: int):
        super().__init__()
        if steps < 1:
            raise ValueError(f"processing steps must be at least 1, got {steps}")
        self.cell = nn.LSTMCell(2 * dim, dim)  # input: [f'(x), r_{k-1}]; hidden: h_{k-1}
        self.steps = steps

    def forward(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:  # f [Q, D], g [S, D] -> [Q, D]
        h = torch.zeros_like(f)
        c = torch.zeros_like(f)
        for _ in range(self.steps):
            # h_0 = 0 gives uniform attention, so r_0 is the mean support embedding.
            r = F.softmax(h @ g.T, dim=1) @ g  # [Q, D]: the read-out of the support set
            h_hat, c = self.cell(torch.cat([f, r], dim=1), (h, c))
            h = h_hat + f
        return h


class MatchingNet(FewShotClassifier):
    """Matching network on a Conv-4 backbone, with optional full-context embeddings.

    Args:
        in_channels: image channels.
        hidden: channels of every Conv-4 block (the embedding has this many numbers for 28x28).
        fce: use full-context embeddings (bidirectional LSTM for the support set, attention
            LSTM for the queries).
        processing_steps: ``K``, the number of steps of the attention LSTM (with ``fce``).
        temperature: multiplies the cosine similarities before the softmax. The paper uses 1.
            After the final ReLU of Conv-4 all embeddings are non-negative, so the cosines of
            the plain model lie in ``[0, 1]`` and the attention can never be sharp; a larger
            value lets the network become confident, which trains faster.
    """

    method_name = "matching"

    def __init__(self, in_channels: int = 1, hidden: int = 64, fce: bool = False, processing_steps: int = 3, temperature: float = 1.0):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.backbone = Conv4(in_channels, hidden, hidden)
        self.fce = fce
        self.temperature = float(temperature)
        if fce:
            self.support_context = SupportContext(hidden)
            self.query_context = AttentionLSTM(hidden, processing_steps)

    def label_distribution(self, support_x, support_y, query_x) -> torch.Tensor:
        """``P(y | x, S)``: ``[Q, N]`` rows that sum to one."""
        n_way = validate_task(support_x, support_y, query_x)
        if self.training:
            z = self.backbone(torch.cat([support_x, query_x]))
            g, f = z[: len(support_x)], z[len(support_x) :]
        else:
            g, f = embed_in_chunks(self.backbone, support_x), embed_in_chunks(self.backbone, query_x)
        if self.fce:
            g = self.support_context(g)
            f = self.query_context(f, g)
        attention = cosine_attention(f, g, self.temperature)  # [Q, S]
        return attention @ one_hot(support_y, n_way, attention.dtype)  # [Q, N]

    def forward(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
        return self.label_distribution(support_x, support_y, query_x).clamp_min(LOG_EPS).log()
