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


# --------------------------------------------------------------------------- command line

PROG = "python -m mlcourse.fixed_labels"


def main(argv: list[str] | None = None) -> dict:
    """``python -m mlcourse.fixed_labels --data omniglot --json``: chapter 01's counterfeit in full.

    Trains the fixed-label network on the first ``--classes`` training characters, scores the
    held-out drawings of those characters (labelled as in training), then the test alphabets'
    N-way K-shot episodes with the head, with the network's features and the centroid rule,
    and with pixel nearest neighbour, all on the same episodes (``--eval-seed`` 12345, 15
    queries and 600 episodes are ``mlcourse.bench``'s, so the JSON pairs with a bench run's
    through ``python -m mlcourse.evaluate A.json B.json``). The head's result is the top
    level of the JSON; the other two and the paired differences sit under ``others`` and
    ``paired``.
    """
    import json
    import os
    import time

    from .baselines import PixelNearestNeighbour, PretrainedFeatures, backbone_of
    from .cli import ArgumentParser, bad_argument, check_at_least, fail
    from .config import fast_mode
    from .data.sources import meta_splits
    from .evaluate import compare, evaluate

    p = ArgumentParser(prog=PROG, description="A classifier trained on fixed labels, scored on few-shot tasks of new classes.")
    p.add_argument("--data", default="auto", choices=["auto", "glyphs", "omniglot"], help="data source (default: auto)")
    p.add_argument("--classes", type=int, default=5, help="training characters the network learns (default 5: the head is 5-way)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default 1000, fast mode 100)")
    p.add_argument("--holdout", type=int, default=5, help="drawings per training character kept out of training (default 5)")
    p.add_argument("--shots", type=int, default=1, help="K of the test episodes (default 1)")
    p.add_argument("--episodes", type=int, default=None, help="test episodes (default 600, fast mode 40)")
    p.add_argument("--eval-seed", type=int, default=12345, help="seed of the test episodes (default: mlcourse.bench's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights and batches")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    check_at_least(p, "--classes", args.classes, 2)
    check_at_least(p, "--steps", args.steps, 1)
    check_at_least(p, "--holdout", args.holdout, 1)
    check_at_least(p, "--shots", args.shots, 1)
    check_at_least(p, "--episodes", args.episodes, 2)
    check_at_least(p, "--threads", args.threads, 1)
    if args.threads:
        torch.set_num_threads(args.threads)
    fast = fast_mode()
    steps = args.steps or (100 if fast else 1000)
    episodes = args.episodes or (40 if fast else 600)
    try:
        splits = meta_splits(args.data)
    except FileNotFoundError as error:
        fail(PROG, f"--data {args.data}: no such data here ({str(error).splitlines()[0]}). Use --data glyphs or --data auto.")
    classes = list(range(args.classes))
    if args.classes > splits.train.num_classes:
        bad_argument(p, "--classes", args.classes, f"at most {splits.train.num_classes} (the training classes)")
    device = get_device()
    load = os.getloadavg()[0]
    start = time.perf_counter()
    net, history = train_fixed_label_network(splits.train, classes, holdout=args.holdout, steps=steps, seed=args.seed,
                                             device=device, progress=not args.json)
    own, images = held_out_accuracy(net, splits.train, classes, args.holdout)
    ways = args.classes
    common = dict(n_way=ways, k_shot=args.shots, q_query=15, episodes=episodes, seed=args.eval_seed, device=device, progress=False)
    head = evaluate(FixedLabelPredictor(net), splits.test, **common)
    centroid = evaluate(PretrainedFeatures(backbone_of(net), mode="centroid"), splits.test, **common)
    pixel = evaluate(PixelNearestNeighbour(), splits.test, **common)
    result = {
        "method": "fixed-label network", "data": args.data if args.data != "auto" else splits.source, "split": "test",
        "ways": ways, "shots": args.shots, "queries": 15, "episodes": episodes, "eval_seed": args.eval_seed, "seed": args.seed,
        "train_classes": [splits.train.class_names[c] for c in classes], "train_steps": len(history["loss"]),
        "train_seconds": history.seconds, "own_classes_held_out_accuracy": own, "own_classes_held_out_images": images,
        **head.as_dict(),
        "others": {"fixed-label features + centroid": centroid.as_dict(), "pixel 1-NN": pixel.as_dict()},
        "paired": {name: compare(head, r, names=("fixed-label network", name)).as_dict()
                   for name, r in (("fixed-label features + centroid", centroid), ("pixel 1-NN", pixel))},
        "mode": "fast" if fast else "full", "device": str(device), "threads": torch.get_num_threads(),
        "load_average": load, "wall_seconds": time.perf_counter() - start, "torch": torch.__version__,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"trained {result['train_steps']} steps in {history.seconds:.0f} s; own classes, held-out drawings: {100 * own:.1f}% of {images}")
        for name, r in (("fixed-label network", head), ("fixed-label features + centroid", centroid), ("pixel 1-NN", pixel)):
            print(f"  {name:32s} {r}")
    return result


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
