"""Honest baselines for few-shot classification (chapter 01).

Before any meta-learning, three ways to use a support set that any engineer would try:

* :class:`PixelNearestNeighbour`: label a query with the class of its nearest support image
  in raw pixel space. No learning at all.
* :class:`FinetuneFromScratch`: a fresh Conv-4 classifier trained on the N*K support
  images alone, for each episode. Shows how little K examples give a deep network.
* :class:`PretrainedFeatures`: train a Conv-4 classifier on all training classes the
  ordinary way (no episodes), then, for each test episode, keep the features and fit only
  what the new classes need: a nearest-centroid rule or a new linear head
  (Chen et al., 2019, "A Closer Look at Few-shot Classification"; Tian et al., 2020,
  "Rethinking Few-Shot Image Classification"). A strong, often under-reported baseline.

None of them touches the caller's random stream: where a seed fixes an initial network, the
network is built under :func:`seeded`, which restores torch's global generator afterwards.

Every predictor has the same signature, ``predict(support_x, support_y, query_x) -> scores``
with ``scores`` of shape ``[num_queries, N]``, so :func:`mlcourse.evaluate.evaluate` can score
any of them on the same episodes.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .config import get_device
from .data.base import ImageClassDataset
from .fewshot import validate_task
from .models import conv4_classifier
from .train import History, train_loop


@contextmanager
def seeded(seed: int):
    """Run the block with torch's global CPU generator seeded with ``seed``, then put the
    caller's generator state back (``torch.random.fork_rng`` over the CPU only).

    Building a module inside gives the same initial weights for a given seed, wherever the
    caller's random stream stands, and leaves that stream exactly where it was. Only the CPU
    generator is seeded (``torch.manual_seed`` would reseed every GPU's too): build modules
    on the CPU inside, and move them afterwards.
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def class_means(features: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """Mean feature of each class: ``[N, D]`` from ``[B, D]`` features with labels ``0..N-1``."""
    sums = torch.zeros(n_way, features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, labels, features)
    counts = torch.bincount(labels, minlength=n_way).to(features.dtype).unsqueeze(1)
    return sums / counts


class PixelNearestNeighbour:
    """1-nearest-neighbour in pixel space (Euclidean). Score of class j = minus the distance
    from the query to the closest support image of class j."""

    def __call__(self, support_x, support_y, query_x):
        n_way = validate_task(support_x, support_y, query_x)
        d = torch.cdist(query_x.flatten(1), support_x.flatten(1))  # [Q, S]
        scores = torch.full((query_x.shape[0], n_way), float("-inf"), device=d.device)
        for j in range(n_way):
            scores[:, j] = -d[:, support_y == j].min(dim=1).values
        return scores


class FinetuneFromScratch:
    """Train a freshly initialised Conv-4 classifier on the support set of each episode."""

    needs_grad = True

    def __init__(self, steps: int = 50, lr: float = 1e-2, seed: int = 0, hidden: int = 64):
        self.steps, self.lr, self.seed, self.hidden = steps, lr, seed, hidden

    def __call__(self, support_x, support_y, query_x):
        n_way = validate_task(support_x, support_y, query_x)
        with seeded(self.seed):  # the same initial network for every episode
            model = conv4_classifier(n_way, tuple(support_x.shape[1:]), hidden=self.hidden)
        model = model.to(support_x.device)
        opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        model.train()
        for _ in range(self.steps):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(support_x), support_y).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            return model(query_x)


def pretrain_classifier(
    dataset: ImageClassDataset,
    steps: int = 2000,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    device: torch.device | None = None,
    time_budget: float | None = None,
    augment_rotations: bool = False,
    progress: bool = True,
) -> tuple[nn.Module, History]:
    """Ordinary supervised training of Conv-4 + linear head on every class of ``dataset``.

    Returns the trained classifier (in eval mode, on ``device``) and its training history.
    ``seed`` fixes the initial weights and the batches; torch's global generator is left as
    it was (the training draws from a generator of its own).
    """
    device = device or get_device()
    g = torch.Generator().manual_seed(seed)
    with seeded(seed):
        model = conv4_classifier(dataset.num_classes, dataset.image_shape)
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    images, targets = dataset.images, dataset.targets

    def step(i):
        idx = torch.randint(len(images), (batch_size,), generator=g)
        x = images[idx].to(device).float().div_(255.0)
        y = targets[idx].to(device)
        if augment_rotations:  # random 90-degree turns keep the class: cheap augmentation
            x = torch.rot90(x, int(torch.randint(4, (1,), generator=g)), dims=(2, 3))
        model.train()
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return {"loss": loss.item(), "acc": (logits.argmax(1) == y).float().mean().item()}

    history = train_loop(step, steps, time_budget=time_budget, desc="pretraining", progress=progress)
    model.eval()
    return model, history


class PretrainedFeatures:
    """Few-shot prediction on top of a pretrained backbone.

    ``mode="centroid"``: cosine similarity to the mean feature of each support class (no
    training at test time). ``mode="linear"``: fit a new linear head on the frozen support
    features for ``steps`` steps (the "Baseline" of Chen et al., 2019).
    """

    def __init__(self, backbone: nn.Module, mode: str = "centroid", steps: int = 100, lr: float = 0.1, temperature: float = 10.0):
        if mode not in {"centroid", "linear"}:
            raise ValueError(f"mode must be 'centroid' or 'linear', got {mode!r}")
        self.backbone = backbone.eval()
        self.mode, self.steps, self.lr, self.temperature = mode, steps, lr, temperature
        self.needs_grad = mode == "linear"

    def features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return F.normalize(self.backbone(x), dim=1)

    def __call__(self, support_x, support_y, query_x):
        n_way = validate_task(support_x, support_y, query_x)
        fs, fq = self.features(support_x), self.features(query_x)
        if self.mode == "centroid":
            prototypes = F.normalize(class_means(fs, support_y, n_way), dim=1)
            return self.temperature * fq @ prototypes.T
        head = nn.Linear(fs.shape[1], n_way).to(fs.device)
        opt = torch.optim.SGD(head.parameters(), lr=self.lr, momentum=0.9, weight_decay=1e-3)
        for _ in range(self.steps):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(head(self.temperature * fs), support_y).backward()
            opt.step()
        with torch.no_grad():
            return head(self.temperature * fq)


def backbone_of(classifier: nn.Module) -> nn.Module:
    """A frozen copy of the feature extractor of a :class:`mlcourse.models.Classifier`."""
    backbone = copy.deepcopy(classifier.backbone if hasattr(classifier, "backbone") else classifier)
    for p in backbone.parameters():
        p.requires_grad_(False)
    return backbone.eval()
