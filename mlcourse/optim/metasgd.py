"""Meta-SGD (Li, Zhou, Chen and Li, 2017, "Meta-SGD: Learning to Learn Quickly for Few-Shot
Learning").

MAML meta-learns where the inner loop *starts*, θ, but fixes how it moves: one step size α
for every weight. Meta-SGD meta-learns the step too. Every parameter tensor gets a tensor of
learning rates of the same shape, and the inner step is an element-wise product::

    θ' = θ − α ∘ ∇L^support(θ)          (α has one entry per weight)

α is meta-learned with θ by the same outer loop: the query loss after adaptation depends
on α through θ', so ``∂L^query(θ')/∂α = −∇L^support(θ) ∘ ∇L^query(θ')``, and Adam updates both.
An entry of α can grow (this weight should move fast), shrink to zero (keep this weight
as meta-learned) or turn negative (move against the support gradient): α encodes both a
step size and a direction, per weight. The price is twice the meta-parameters.

The paper adapts with a single step, in training and at test time, since α is learned for
exactly that step. Initialised to a constant equal to MAML's α, Meta-SGD starts out *as*
MAML: any difference after training is what learning the step sizes bought.
:func:`learning_rate_summary` reduces the learned α to a mean and a spread per layer, for a
bar plot.
"""

from __future__ import annotations

import torch
from torch import nn

from .maml import MAML


def _key(name: str) -> str:
    """``nn.ParameterDict`` keys cannot contain dots: ``backbone.encoder.0.0.weight`` is
    stored as ``backbone/encoder/0/0/weight``."""
    return name.replace(".", "/")


class MetaSGD(MAML):
    """MAML with a learned learning rate for every weight (Meta-SGD).

    Args:
        lr_init: the initial learning rates: a number (every entry equal, 0.4 = MAML's α on
            5-way Omniglot) or ``(low, high)`` for uniform random entries (the paper's
            choice for regression was ``(0.005, 0.1)``).
        the rest: as :class:`~mlcourse.optim.maml.MAML` (one inner step, train and test).

    The learning rates live in ``self.lrs`` (an ``nn.ParameterDict``), so they are part of
    ``parameters()``, of the outer Adam step and of ``save``/``load``.
    """

    method_name = "metasgd"

    def __init__(
        self,
        n_way: int = 5,
        in_channels: int = 1,
        image_size: int | tuple[int, int] = 28,
        hidden: int = 64,
        inner_steps: int = 1,
        lr_init: float | tuple[float, float] = 0.4,
        test_inner_steps: int = 1,
        first_order: bool = False,
        meta_batch: int = 32,
        vectorize: bool | str = "auto",
    ):
        if isinstance(lr_init, (tuple, list)):
            if len(lr_init) != 2 or not lr_init[0] <= lr_init[1]:
                raise ValueError(f"lr_init must be a number or (low, high) with low <= high, got {lr_init!r}")
            mean_lr = (lr_init[0] + lr_init[1]) / 2
        elif isinstance(lr_init, (int, float)) and not isinstance(lr_init, bool):
            mean_lr = float(lr_init)
        else:
            raise ValueError(f"lr_init must be a number or (low, high), got {lr_init!r}")
        super().__init__(
            n_way, in_channels, image_size, hidden, inner_steps, mean_lr, test_inner_steps, None,
            first_order=first_order, meta_batch=meta_batch, vectorize=vectorize,
        )  # fmt: skip
        # The base class recorded the arguments of MAML.__init__; add ours for load().
        self._config["lr_init"] = lr_init
        self.lrs = nn.ParameterDict()
        for name, p in self.net.named_parameters():
            if isinstance(lr_init, (tuple, list)):
                init = torch.empty_like(p).uniform_(float(lr_init[0]), float(lr_init[1]))
            else:
                init = torch.full_like(p, float(lr_init))
            self.lrs[_key(name)] = nn.Parameter(init)

    def inner_lr_for(self, training: bool) -> dict[str, torch.Tensor]:
        """The learned per-weight learning rates, keyed like ``self.net``'s parameters."""
        return {name: self.lrs[_key(name)] for name, _ in self.net.named_parameters()}


@torch.no_grad()
def learning_rate_summary(model: MetaSGD) -> list[dict]:
    """One row per parameter tensor: ``name``, ``shape``, ``mean``, ``std``, ``min``, ``max``
    and ``negative`` (fraction of entries below zero) of its learned learning rates.

    For a plot::

        rows = learning_rate_summary(model)
        plt.barh([r["name"] for r in rows], [r["mean"] for r in rows], xerr=[r["std"] for r in rows])
    """
    if not isinstance(model, MetaSGD):
        raise ValueError(f"learning_rate_summary needs a MetaSGD model, got {type(model).__name__}")
    rows = []
    for name, lr in model.inner_lr_for(True).items():
        lr = lr.detach().float()
        rows.append({
            "name": name,
            "shape": tuple(lr.shape),
            "mean": lr.mean().item(),
            "std": lr.std().item() if lr.numel() > 1 else 0.0,
            "min": lr.min().item(),
            "max": lr.max().item(),
            "negative": (lr < 0).float().mean().item(),
        })  # fmt: skip
    return rows


def conv4_parameter_label(name: str) -> str:
    """A short label for a Conv-4 parameter name: ``backbone.encoder.2.1.weight`` -> ``block 3 bn weight``.

    Names outside the backbone's blocks (``head.weight``) are returned as they are.
    """
    parts = name.split(".")
    if len(parts) == 5 and parts[:2] == ["backbone", "encoder"] and parts[2].isdigit() and parts[3] in ("0", "1"):
        return f"block {int(parts[2]) + 1} {'conv' if parts[3] == '0' else 'bn'} {parts[4]}"
    return name


def plot_learning_rates(model: MetaSGD, initial: float | None = None, axes=None):
    """Two panels of a Meta-SGD model's learned rates: per tensor mean ± std over min..max bars,
    and the distribution of the conv and head weights' rates. ``initial`` draws a dotted line
    at the rates' starting value. Returns the figure."""
    import matplotlib.pyplot as plt

    rows = learning_rate_summary(model)  # raises for a model that is not Meta-SGD
    rates = {n: a.detach().float().cpu() for n, a in model.inner_lr_for(True).items()}
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [1.1, 1]})
    else:
        if len(axes) != 2:
            raise ValueError(f"axes must hold 2 panels, got {len(axes)}")
        fig = axes[0].figure
    ax = axes[0]
    y = list(range(len(rows)))
    ax.barh(y, [r["max"] - r["min"] for r in rows], left=[r["min"] for r in rows], color="lightgrey", height=0.8)
    ax.errorbar([r["mean"] for r in rows], y, xerr=[r["std"] for r in rows], fmt="o", color="tab:blue", ms=4, capsize=3)
    ax.set_yticks(y, [conv4_parameter_label(r["name"]) for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("learned learning rate α")
    ax.set_title("per parameter tensor: mean ± std (grey: min to max)")
    ax = axes[1]
    blocks = sorted({int(n.split(".")[2]) for n in rates if n.startswith("backbone.encoder.") and n.endswith(".0.weight")})
    groups = {f"block {i + 1} conv weights": f"backbone.encoder.{i}.0.weight" for i in blocks}
    groups |= {"head weights": "head.weight"} if "head.weight" in rates else {}
    for label, name in groups.items():
        ax.hist(rates[name].flatten().numpy(), bins=25, histtype="step", lw=1.5, density=True, label=label)
    ax.set_xlabel("learned learning rate α")
    ax.set_ylabel("density")
    ax.set_title("distribution of the rates")
    ax.legend(fontsize=8)
    if initial is not None:
        for ax in axes:
            ax.axvline(initial, color="k", ls=":", lw=1)
    return fig
