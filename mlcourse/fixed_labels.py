"""A "meta-network" that is only a classifier: trained on fixed labels, it cannot meet new classes.

Some tutorials present as meta-learning a network that is trained on "tasks" whose labels
never change: label 0 is always the same character, label 1 always another, and so on. Its
output layer then names *those* classes, and nothing in it refers to the support set. Shown
a task of new characters, it answers with the training classes it knows, whatever the
support images say: on new classes its accuracy is chance, 1/N, however well it trained.

Two things make such a network look like it works:

* it is scored on its own training classes, in the fixed order (a test of memory, not of
  learning from a support set);
* nothing checks it against a baseline that *reads* the support set, such as pixel nearest
  neighbour.

:func:`train_fixed_label_network` trains it (Conv-4 and an N-way head on N training classes,
each class with the same label every step). :class:`FixedLabelPredictor` answers an episode
the way such a network does: with its head, ignoring the support labels.
:func:`held_out_accuracy` is the flattering test: new drawings of the training classes,
labelled as in training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .baselines import seeded
from .config import get_device
from .data.base import ImageClassDataset
from .fewshot import validate_task
from .models import conv4_classifier
from .train import History, train_loop


def train_fixed_label_network(
    dataset: ImageClassDataset,
    classes: list[int],
    holdout: int = 5,
    steps: int = 200,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    device: torch.device | None = None,
    progress: bool = True,
) -> tuple[nn.Module, History]:
    """Conv-4 with a ``len(classes)``-way head, trained on ``classes`` of ``dataset``;
    ``classes[i]`` always gets label ``i``. The last ``holdout`` images of each class are
    kept out of training (:func:`held_out_accuracy` scores them).

    Returns the network (eval mode, on ``device``) and its training history.
    """
    if len(classes) < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {len(classes)}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes repeat: {classes}")
    bad = [c for c in classes if not 0 <= c < dataset.num_classes]
    if bad:
        raise ValueError(f"classes {bad} are not in the dataset (0..{dataset.num_classes - 1})")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be at least 1, got {steps} and {batch_size}")
    device = device or get_device()
    images, labels = _split(dataset, classes, holdout, held_out=False)
    g = torch.Generator().manual_seed(seed)
    with seeded(seed):
        model = conv4_classifier(len(classes), dataset.image_shape).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def step(i):
        pick = torch.randint(len(labels), (batch_size,), generator=g)
        x = images[pick].to(device)
        y = labels[pick].to(device)
        model.train()
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.item(), "acc": (logits.argmax(1) == y).float().mean().item()}

    history = train_loop(step, steps, desc="fixed-label network", progress=progress)
    model.eval()
    return model, history


class FixedLabelPredictor:
    """Answers a few-shot episode with the fixed-label network's own head.

    The support set is checked (an episode must be well formed) but its images and labels
    play no part in the answer: that is the flaw this class stands for. The episode must
    have as many ways as the head has outputs.
    """

    def __init__(self, network: nn.Module):
        self.network = network.eval()

    def __call__(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
        n_way = validate_task(support_x, support_y, query_x)
        with torch.no_grad():
            logits = self.network(query_x)
        if logits.shape[1] != n_way:
            raise ValueError(f"the network has {logits.shape[1]} outputs but the episode has {n_way} ways")
        return logits


def held_out_accuracy(network: nn.Module, dataset: ImageClassDataset, classes: list[int], holdout: int) -> tuple[float, int]:
    """Accuracy on the last ``holdout`` images of each training class, labelled as in
    training (``classes[i]`` is ``i``): the flattering test, new drawings of *known* classes.

    Returns ``(accuracy, number of images)``.
    """
    x, y = _split(dataset, classes, holdout, held_out=True)
    device = next(network.parameters()).device
    with torch.no_grad():
        guess = network.eval()(x.to(device)).argmax(1).cpu()
    return (guess == y).float().mean().item(), len(y)


def _split(dataset: ImageClassDataset, classes: list[int], holdout: int, held_out: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and fixed labels of ``classes``: the last ``holdout`` of each class, or the others."""
    by_class = dataset.indices_by_class()
    for c in classes:
        if not 0 <= holdout < len(by_class[c]):
            raise ValueError(f"holdout must be from 0 to {len(by_class[c]) - 1} (class {c} has {len(by_class[c])} images), got {holdout}")
    chosen = [by_class[c][len(by_class[c]) - holdout :] if held_out else by_class[c][: len(by_class[c]) - holdout] for c in classes]
    labels = torch.cat([torch.full((len(idx),), i) for i, idx in enumerate(chosen)])
    return dataset.as_float(torch.cat(chosen)), labels
