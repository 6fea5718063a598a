"""The low-data protocol of the DAGAN paper: a classifier trained from scratch on ``k``
drawings of each held-out character, with and without generated drawings.

No meta-learning here. Take the ``C`` characters of the test alphabets; for each, ``k`` of its
drawings are the training set and a fixed set of its other drawings the test set. Train an
ordinary ``C``-way Conv-4 classifier from random weights on the ``C k`` drawings (arm
``none``), or on those plus ``m`` generated drawings per real one, labelled with their
source's class (arm ``dagan``; ``classical`` uses ``m`` affine-jittered copies instead). The
generator only ever sees the ``k`` training drawings of a character. Antoniou et al. (2017)
report 69 -> 82% on Omniglot this way (their split, their classifier).

Pairing: within one seed every arm trains on the same real drawings, starts from the same
initial weights, and is tested on the same held-out drawings, so the per-character accuracy
differences between arms are paired; :func:`per_class_accuracy` returns them per character.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.base import ImageClassDataset
from ..models import conv4_classifier
from .augment import augment_support


def lowdata_split(dataset: ImageClassDataset, k_max: int, test_per_class: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class, ``k_max`` training indices and ``test_per_class`` test indices (disjoint),
    drawn at random under ``seed``. Training with ``k <= k_max`` drawings uses the first ``k``
    of each row, so every ``k`` is tested on the same drawings. Returns two ``[C, *]`` tensors."""
    for name, value in (("k_max", k_max), ("test_per_class", test_per_class)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c, idx in enumerate(dataset.indices_by_class()):
        if len(idx) < k_max + test_per_class:
            raise ValueError(f"class {dataset.class_names[c]!r} has {len(idx)} images, fewer than k_max + test_per_class = {k_max + test_per_class}")
        order = idx[torch.randperm(len(idx), generator=g)]
        train.append(order[:k_max])
        test.append(order[len(idx) - test_per_class:])
    return torch.stack(train), torch.stack(test)


def train_from_scratch(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, steps: int = 300, batch: int = 32,
                       lr: float = 1e-3, hidden: int = 32, seed: int = 0) -> torch.nn.Module:  # fmt: skip
    """A Conv-4 classifier (``hidden`` channels) trained with Adam on ``(x, y)`` for ``steps``
    minibatches of ``batch`` images drawn at random under ``seed`` (initial weights too)."""
    if not isinstance(steps, int) or steps < 1 or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"steps and batch must be ints >= 1, got {steps!r} and {batch!r}")
    if x.dim() != 4 or y.shape != (x.shape[0],):
        raise ValueError(f"x must be [B, C, H, W] with labels [B], got {tuple(x.shape)} and {tuple(y.shape)}")
    torch.manual_seed(seed)
    model = conv4_classifier(num_classes, tuple(x.shape[1:]), hidden=hidden, out_channels=hidden)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        i = torch.randint(len(x), (min(batch, len(x)),), generator=g)
        loss = F.cross_entropy(model(x[i]), y[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def per_class_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Accuracy on the test images of each class: ``[num_classes]``."""
    model.eval()
    pred = torch.cat([model(x[i : i + 512]).argmax(1) for i in range(0, len(x), 512)])
    correct = (pred == y).double()
    counts = torch.bincount(y, minlength=num_classes).double()
    return torch.bincount(y, weights=correct, minlength=num_classes) / counts.clamp(min=1)


def lowdata_run(dataset: ImageClassDataset, split: tuple[torch.Tensor, torch.Tensor], k: int, augmenter=None, per_image: int = 0,
                *, seed: int = 0, **train_kwargs) -> torch.Tensor:  # fmt: skip
    """Per-class test accuracy of a classifier trained on the first ``k`` training drawings of
    every class (``split`` from :func:`lowdata_split`), plus ``per_image`` drawings of
    ``augmenter`` per real one (none when ``augmenter`` is ``None`` or ``per_image`` is 0)."""
    train_idx, test_idx = split
    if not 1 <= k <= train_idx.shape[1]:
        raise ValueError(f"k must lie in 1..{train_idx.shape[1]} (the split's k_max), got {k}")
    c = train_idx.shape[0]
    idx = train_idx[:, :k].reshape(-1)
    x, y = dataset.as_float(idx), torch.arange(c).repeat_interleave(k)
    if augmenter is not None and per_image > 0:
        x, y = augment_support(x, y, augmenter, per_image, seed=seed)
    model = train_from_scratch(x, y, c, seed=seed, **train_kwargs)
    test_x = dataset.as_float(test_idx.reshape(-1))
    test_y = torch.arange(c).repeat_interleave(test_idx.shape[1])
    return per_class_accuracy(model, test_x, test_y, c)
