"""What MAML's inner loop changes, layer by layer: representations (linear CKA) and weights.

Raghu et al. (2020, "Rapid Learning or Feature Reuse?") ask whether MAML's adaptation learns
new features or reuses the meta-learned ones. Two measurements answer it (chapter 06):

* :func:`linear_cka` compares a layer's outputs on the query set before and after adaptation.
  Linear centred kernel alignment (Kornblith et al., 2019, "Similarity of Neural Network
  Representations Revisited") is 1 for representations that differ only by a rotation and a
  uniform scale, and near 0 for unrelated ones: ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)``
  on column-centred ``X`` and ``Y`` (one row per example).
* :func:`measure_adaptation_change` averages, over episodes, that CKA per layer and the relative
  change ``||θ'_l - θ_l|| / ||θ_l||`` of every parameter tensor.

Feature reuse shows as CKA near 1 in the early blocks, with the change concentrated in the head.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .inner_loop import functional_forward, named_params


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA between two representations of the same ``n`` examples (``x`` ``[n, ...]``, ``y`` ``[n, ...]``).

    Each example's features are flattened; the two may have different widths. Computed in
    float64, since the Frobenius norms of ``X^T X`` square the features' scale twice.
    """
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"x and y must be tensors, got {type(x).__name__} and {type(y).__name__}")
    if x.dim() < 2 or y.dim() < 2 or len(x) != len(y):
        raise ValueError(f"x and y must be [n, ...] with the same n, got {tuple(x.shape)} and {tuple(y.shape)}")
    if len(x) < 2:
        raise ValueError(f"CKA needs at least 2 examples, got {len(x)}")
    x, y = x.flatten(1).double(), y.flatten(1).double()
    x, y = x - x.mean(0), y - y.mean(0)
    denominator = (x.T @ x).norm() * (y.T @ y).norm()
    if denominator == 0:
        raise ValueError("a representation is constant over the examples: CKA is undefined")
    return ((y.T @ x).norm() ** 2 / denominator).item()


@dataclass
class AdaptationChange:
    """Averages over episodes of :func:`measure_adaptation_change`."""

    cka: dict[str, float]  # layer label -> mean CKA(query outputs before, after adaptation)
    weight_change: dict[str, float]  # parameter name -> mean ||θ' - θ|| / ||θ||
    episodes: int


def measure_adaptation_change(model: nn.Module, episodes: Iterable, layers: Mapping[str, nn.Module]) -> AdaptationChange:
    """Run ``model``'s test-time inner loop on each episode and measure what it changed.

    ``model`` is a MAML-style learner: ``model.net`` is the network and
    ``model.adapt(support_x, support_y, training=False, keep_graph=False)`` returns adapted
    parameters by name. ``layers`` maps a label to a submodule of ``model.net`` whose output is
    compared (on the episode's query images) before and after adaptation. ``episodes`` yields
    :class:`~mlcourse.data.episodes.Episode`-like tuples already on the model's device.
    """
    net = getattr(model, "net", None)
    if not isinstance(net, nn.Module) or not callable(getattr(model, "adapt", None)):
        raise TypeError(f"model must have a .net module and an .adapt method (MAML, Meta-SGD...), got {type(model).__name__}")
    if not layers:
        raise ValueError("layers is empty: name at least one submodule of model.net to compare")
    submodules = set(map(id, net.modules()))
    for label, module in layers.items():
        if id(module) not in submodules:
            raise ValueError(f"layer {label!r} is not a submodule of model.net")
    captured: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, key=key: captured.__setitem__(key, out.detach()))
             for key, m in layers.items()]
    similarity: dict[str, list[float]] = {key: [] for key in layers}
    change: dict[str, list[float]] = {}
    try:
        for ep in episodes:
            theta = {n: p.detach() for n, p in named_params(net).items()}
            adapted = model.adapt(ep.support_x, ep.support_y, training=False, keep_graph=False)
            with torch.no_grad():
                functional_forward(net, theta, {}, ep.query_x)  # the hooks record every layer's output
                before = dict(captured)
                functional_forward(net, adapted, {}, ep.query_x)
                after = dict(captured)
            for key in layers:
                similarity[key].append(linear_cka(before[key], after[key]))
            for n in theta:  # parameters the inner loop leaves alone (ANIL's body) change by 0
                moved = adapted.get(n, theta[n]).detach() - theta[n]
                change.setdefault(n, []).append((moved.norm() / theta[n].norm().clamp_min(1e-12)).item())
    finally:
        for h in hooks:
            h.remove()
    count = len(next(iter(similarity.values())))
    if count == 0:
        raise ValueError("no episodes")
    return AdaptationChange(cka={k: sum(v) / count for k, v in similarity.items()},
                            weight_change={n: sum(v) / count for n, v in change.items()}, episodes=count)
