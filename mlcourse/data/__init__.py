"""Datasets and few-shot episodes.

* :mod:`~mlcourse.data.base`: :class:`ImageClassDataset`, the one in-memory shape all sources
  become, and alphabet-level splits;
* :mod:`~mlcourse.data.glyphs`: the offline Omniglot-like glyphs the project renders itself;
* :mod:`~mlcourse.data.omniglot`: real Omniglot from a folder, a zip or torchvision;
* :mod:`~mlcourse.data.digits`: scikit-learn's handwritten digits (and MNIST when online);
* :mod:`~mlcourse.data.episodes`: N-way K-shot episodes and batches of them;
* :mod:`~mlcourse.data.sources`: ``meta_splits()``, the data a chapter trains and tests on.

Importing this package reads no file and downloads nothing.
"""

from .base import ImageClassDataset, concat, split_by_groups, split_groups_by_fraction, with_rotations  # noqa: F401
from .episodes import Episode, EpisodeDataset, iterate_episodes, relabel, sample_episode, task_loader  # noqa: F401
from .sources import MetaSplits, meta_splits  # noqa: F401
