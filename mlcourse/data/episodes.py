"""N-way K-shot episodes: the unit of data in few-shot learning.

An *episode* (or *task*) draws ``N`` classes at random, ``K`` labelled *support* images and
``Q`` *query* images of each. Labels are remapped to ``0..N-1`` inside each episode, so a
model can never memorise which global class is which: it must use the support set.

Three ways in, from one image to a meta-batch:

* :func:`sample_episode` draws one :class:`Episode` with a ``torch.Generator`` (or from
  torch's global generator, which it advances but never reseeds);
* :class:`EpisodeDataset` is a map-style dataset whose ``i``-th item is always the same
  episode for a given seed, so it is deterministic even with ``DataLoader`` workers;
* :func:`task_loader` wraps it in a ``DataLoader`` that stacks ``T`` episodes into tensors of
  shape ``[T, N*K, C, H, W]`` (support) and ``[T, N*Q, C, H, W]`` (query).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from .base import ImageClassDataset


class Episode(NamedTuple):
    """One N-way K-shot task. Images are float in [0, 1]; labels are ``0..N-1``.

    Support and query are ordered class by class (label 0 first); ``classes[j]`` is the
    dataset's class id that label ``j`` stands for in this episode.
    """

    support_x: torch.Tensor  # [N*K, C, H, W]
    support_y: torch.Tensor  # [N*K]
    query_x: torch.Tensor  # [N*Q, C, H, W]
    query_y: torch.Tensor  # [N*Q]
    classes: torch.Tensor  # [N]

    def to(self, device) -> "Episode":
        return Episode(*(t.to(device, non_blocking=True) for t in self))


class ClassIndex:
    """Which indices of a dataset belong to which class, for any class-indexed dataset.

    Uses ``dataset.indices_by_class()`` (our datasets), ``dataset.targets`` (torchvision
    style) or, failing both, reads every item once.
    """

    def __init__(self, dataset) -> None:
        self.dataset = dataset
        if isinstance(dataset, ImageClassDataset):
            self.by_class = dataset.indices_by_class()
        else:
            targets = getattr(dataset, "targets", None)
            if targets is None:
                targets = [int(dataset[i][1]) for i in range(len(dataset))]
            targets = torch.as_tensor(list(targets) if not torch.is_tensor(targets) else targets, dtype=torch.long)
            if len(targets) == 0:
                raise ValueError("the dataset is empty")
            if targets.min() < 0:
                raise ValueError(f"class labels must be non-negative, found {int(targets.min())}")
            order = torch.argsort(targets, stable=True)
            counts = torch.bincount(targets).tolist()
            self.by_class = [idx for idx in torch.split(order, counts)]
        self.sizes = torch.tensor([len(i) for i in self.by_class], dtype=torch.long)

    def eligible(self, per_class: int) -> torch.Tensor:
        """Class ids with at least ``per_class`` examples."""
        return torch.nonzero(self.sizes >= per_class).flatten()

    def load(self, indices: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images at ``indices`` as one float tensor.

        ``generator`` is handed to ``dataset.as_float`` for datasets that draw random numbers
        when they load (:class:`mlcourse.metric.augment.AffineAugmented`); the plain dataset
        ignores it. Other datasets are read item by item and get no generator.
        """
        if isinstance(self.dataset, ImageClassDataset):
            return self.dataset.as_float(indices, generator=generator)
        images = [torch.as_tensor(self.dataset[int(i)][0]) for i in indices]
        shapes = {tuple(im.shape) for im in images}
        if len(shapes) > 1:
            raise ValueError(
                f"images in an episode must share one shape, got {sorted(shapes)}: "
                "resize the dataset first (e.g. a transform with Resize)"
            )
        return torch.stack(images).float()


def check_episode_request(n_way: int, k_shot: int, q_query: int) -> None:
    """Raise ``ValueError`` for sizes that make no episode."""
    for name, value in (("n_way", n_way), ("k_shot", k_shot), ("q_query", q_query)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name} must be an int, got {value!r}")
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if n_way < 2:
        raise ValueError(f"n_way must be at least 2 for a classification task, got {n_way}")


def _eligible_classes(index: ClassIndex, n_way: int, k_shot: int, q_query: int) -> torch.Tensor:
    check_episode_request(n_way, k_shot, q_query)
    per_class = k_shot + q_query
    eligible = index.eligible(per_class)
    if len(eligible) < n_way:
        total = len(index.sizes)
        largest = int(index.sizes.max()) if total else 0
        raise ValueError(
            f"cannot draw a {n_way}-way episode with k_shot={k_shot} + q_query={q_query} = "
            f"{per_class} images per class: only {len(eligible)} of {total} classes have "
            f"{per_class} or more images (the largest class has {largest})"
        )
    return eligible


def sample_episode(
    dataset,
    n_way: int,
    k_shot: int,
    q_query: int,
    generator: torch.Generator | None = None,
    index: ClassIndex | None = None,
) -> Episode:
    """Draw one N-way K-shot episode with Q queries per class.

    Classes are drawn without replacement among those with at least ``K+Q`` images, then
    ``K+Q`` distinct images per class; the first ``K`` form the support set. Support and
    query therefore never share an image.

    Every random number comes from ``generator``, or, when it is ``None``, from torch's
    global generator, which is advanced but never reseeded: ``torch.manual_seed(s)`` then
    ``sample_episode(...)`` gives the same episode every time. After the classes and images
    are chosen, the same generator is handed to the dataset as the images are loaded, so a
    dataset that transforms its images at random (``AffineAugmented``) draws those
    transformations from the episode's stream too: the whole episode, pixels included, is a
    function of the generator's state.
    """
    index = index or ClassIndex(dataset)
    eligible = _eligible_classes(index, n_way, k_shot, q_query)
    g = generator if generator is not None else torch.default_generator  # the global one, not reseeded
    classes = eligible[torch.randperm(len(eligible), generator=g)[:n_way]]
    per_class = k_shot + q_query
    picks = []
    for c in classes.tolist():
        members = index.by_class[c]
        picks.append(members[torch.randperm(len(members), generator=g)[:per_class]])
    picks = torch.stack(picks)  # [N, K+Q]
    support_idx = picks[:, :k_shot].reshape(-1)
    query_idx = picks[:, k_shot:].reshape(-1)
    labels = torch.arange(n_way)
    # loaded only now, after every choice: a dataset that draws from g cannot change them
    support_x = index.load(support_idx, generator=g)
    query_x = index.load(query_idx, generator=g)
    return Episode(
        support_x=support_x,
        support_y=labels.repeat_interleave(k_shot),
        query_x=query_x,
        query_y=labels.repeat_interleave(q_query),
        classes=classes.clone(),
    )


def episode_seed(seed: int, i: int) -> int:
    """A well-mixed 63-bit seed for episode ``i`` of a stream seeded with ``seed``."""
    x = (seed * 0x9E3779B97F4A7C15 + (i + 1) * 0xBF58476D1CE4E5B9) % 2**64
    x ^= x >> 31
    x = (x * 0x94D049BB133111EB) % 2**64
    return x % 2**63


class EpisodeDataset(Dataset):
    """``num_episodes`` episodes; item ``i`` depends only on ``(seed, i)``.

    Because each item seeds its own generator (and hands it to the dataset for any random
    transformation of the images), the stream is identical with or without ``DataLoader``
    workers, in any order of access.
    """

    def __init__(self, dataset, n_way: int, k_shot: int, q_query: int, num_episodes: int, seed: int = 0):
        if not isinstance(num_episodes, int) or num_episodes < 1:
            raise ValueError(f"num_episodes must be a positive int, got {num_episodes!r}")
        self.index = ClassIndex(dataset)
        _eligible_classes(self.index, n_way, k_shot, q_query)  # fail now, not in a worker
        self.dataset, self.n_way, self.k_shot, self.q_query = dataset, n_way, k_shot, q_query
        self.num_episodes, self.seed = num_episodes, seed

    def __len__(self) -> int:
        return self.num_episodes

    def __getitem__(self, i: int) -> Episode:
        if not 0 <= i < self.num_episodes:
            raise IndexError(f"episode {i} out of range 0..{self.num_episodes - 1}")
        g = torch.Generator().manual_seed(episode_seed(self.seed, i))
        return sample_episode(self.dataset, self.n_way, self.k_shot, self.q_query, g, self.index)


def task_loader(
    dataset,
    n_way: int,
    k_shot: int,
    q_query: int,
    meta_batch: int,
    num_batches: int,
    seed: int = 0,
    num_workers: int = 0,
) -> DataLoader:
    """Batches of ``meta_batch`` episodes: each item is an :class:`Episode` of stacked tensors,
    ``support_x`` of shape ``[T, N*K, C, H, W]``, ``support_y`` ``[T, N*K]`` and so on."""
    if not isinstance(meta_batch, int) or meta_batch < 1:
        raise ValueError(f"meta_batch must be a positive int, got {meta_batch!r}")
    episodes = EpisodeDataset(dataset, n_way, k_shot, q_query, meta_batch * num_batches, seed)
    return DataLoader(
        episodes,
        batch_size=meta_batch,
        shuffle=False,
        num_workers=num_workers,
        persistent_workers=False,
    )


def iterate_episodes(dataset, n_way: int, k_shot: int, q_query: int, num_episodes: int, seed: int = 0):
    """Yield ``num_episodes`` deterministic episodes one at a time (no DataLoader overhead)."""
    episodes = EpisodeDataset(dataset, n_way, k_shot, q_query, num_episodes, seed)
    for i in range(num_episodes):
        yield episodes[i]


def relabel(labels: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Map arbitrary class ids to ``0..N-1`` by order of first appearance."""
    order: dict[int, int] = {}
    values = torch.as_tensor(labels).tolist()
    return torch.tensor([order.setdefault(v, len(order)) for v in values], dtype=torch.long)
