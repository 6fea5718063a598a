"""The two small things every metric-based method needs.

* :func:`embed_in_chunks` runs an embedding network over many images without holding every
  intermediate feature map at once. A Conv-4 keeps a ``64x28x28`` map per image after its
  first layer, so 2,000 queries in one batch cost about a gigabyte; in chunks of 256 they
  cost an eighth of that. Chunking is only done in eval mode, where BatchNorm uses its running
  statistics and every image is processed on its own, so the result is exactly the same.
* :func:`one_hot` turns the support labels ``0..N-1`` into a ``[S, N]`` matrix, the form in
  which class means (ProtoNet) and label distributions (Matching Networks) become matrix
  products.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CHUNK = 256  # images per forward pass in eval mode


def embed_in_chunks(net: nn.Module, x: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """``net(x)``, computed ``chunk`` images at a time when ``net`` is in eval mode.

    In training mode BatchNorm normalises with the statistics of the batch, so splitting the
    batch would change the result: there we run it whole.
    """
    if net.training or len(x) <= chunk:
        return net(x)
    return torch.cat([net(x[i : i + chunk]) for i in range(0, len(x), chunk)])


def one_hot(labels: torch.Tensor, n_way: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[S] -> [S, N]`` with a 1 in column ``labels[i]`` of row ``i``."""
    return F.one_hot(labels.long(), n_way).to(dtype)
