"""Backbones and heads shared by every method in the course.

The **Conv-4** backbone (Vinyals et al., 2016; Snell et al., 2017; Finn et al., 2017) is four
identical blocks of ``3x3 conv (64) -> BatchNorm -> ReLU -> 2x2 max-pool``. On a 28x28
Omniglot image the spatial size goes 28 -> 14 -> 7 -> 3 -> 1, so the flattened embedding has
64 numbers.

Everything here is a plain ``nn.Module`` built from standard layers, with no state hidden
outside ``parameters()`` and ``buffers()``. That is what lets ``torch.func.functional_call``
run the same module with substituted weights, which the optimisation-based chapters rely on.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_block(in_channels: int, out_channels: int, track_running_stats: bool = True) -> nn.Sequential:
    """``3x3 conv -> BatchNorm -> ReLU -> 2x2 max-pool``: one block of Conv-4."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels, track_running_stats=track_running_stats),
        nn.ReLU(inplace=False),  # in-place ReLU would break some functional/higher-order uses
        nn.MaxPool2d(2),
    )


class Conv4(nn.Module):
    """The standard few-shot backbone: 4 conv blocks, then flatten.

    Args:
        in_channels: 1 for grayscale characters, 3 for colour images.
        hidden: channels of the first three blocks (64 in the papers).
        out_channels: channels of the last block (64 in the papers).
        track_running_stats: ``False`` makes BatchNorm always use the statistics of the
            batch at hand (transductive BN, as in MAML's reference code), so nothing leaks
            between tasks through running averages.
    """

    def __init__(self, in_channels: int = 1, hidden: int = 64, out_channels: int = 64, track_running_stats: bool = True):
        super().__init__()
        self.encoder = nn.Sequential(
            conv_block(in_channels, hidden, track_running_stats),
            conv_block(hidden, hidden, track_running_stats),
            conv_block(hidden, hidden, track_running_stats),
            conv_block(hidden, out_channels, track_running_stats),
        )
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"Conv4 expects images [B, {self.in_channels}, H, W], got {tuple(x.shape)}"
            )
        return self.encoder(x).flatten(1)

    def feature_dim(self, image_shape: tuple[int, int, int]) -> int:
        """Length of the embedding for images of ``image_shape`` = (C, H, W)."""
        c, h, w = image_shape
        for _ in range(4):
            h, w = h // 2, w // 2
        if h < 1 or w < 1:
            raise ValueError(f"images of {image_shape} are too small for 4 poolings (need 16x16 or more)")
        return self.encoder[-1][0].out_channels * h * w


class Classifier(nn.Module):
    """A backbone followed by a linear layer: ``logits = W f(x) + b``."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def conv4_classifier(num_classes: int, image_shape: tuple[int, int, int] = (1, 28, 28), **conv4_kwargs) -> Classifier:
    """Conv-4 with a linear head for ``num_classes`` classes."""
    backbone = Conv4(in_channels=image_shape[0], **conv4_kwargs)
    return Classifier(backbone, backbone.feature_dim(image_shape), num_classes)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable numbers in ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
