"""The chapter 06b checks accept the library's sequence and relabelling and name each classic mistake."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mlcourse.checks import CheckFailed
from mlcourse.checks.ch06b import (
    check_episode_sequence,
    check_relabel_episode,
    reference_episode_sequence,
    reference_relabel_episode,
)


def _tokens(features, labels, n_way):
    return torch.cat([features, F.one_hot(labels, n_way).float()], 1)


def _per_query(support_tokens, query_tokens):
    q = len(query_tokens)
    return torch.cat([support_tokens.unsqueeze(0).expand(q, -1, -1), query_tokens.unsqueeze(1)], 1)


# -- episode_sequence mistakes ------------------------------------------------------------
def takes_query_labels(support_features, support_y, query_features, n_way, query_y=None):
    return reference_episode_sequence(support_features, support_y, query_features, n_way)


query_y = None  # a notebook global a learner's function might read


def reads_global_query_labels(support_features, support_y, query_features, n_way):
    assert query_y is None
    return reference_episode_sequence(support_features, support_y, query_features, n_way)


def uniform_query_label(sf, sy, qf, n_way):
    out = reference_episode_sequence(sf, sy, qf, n_way).clone()
    out[:, -1, sf.shape[1] :] = 1.0 / n_way
    return out


def integer_label(sf, sy, qf, n_way):
    s = torch.cat([sf, sy[:, None].float()], 1)
    q = torch.cat([qf, torch.zeros(len(qf), 1)], 1)
    return _per_query(s, q)


def off_by_one(sf, sy, qf, n_way):
    s = torch.cat([sf, F.one_hot(sy, n_way + 1)[:, 1:].float()], 1)  # label 0 -> empty row, k -> k-1
    return _per_query(s, torch.cat([qf, torch.zeros(len(qf), n_way)], 1))


def label_first(sf, sy, qf, n_way):
    s = torch.cat([F.one_hot(sy, n_way).float(), sf], 1)
    return _per_query(s, torch.cat([torch.zeros(len(qf), n_way), qf], 1))


def sorted_support(sf, sy, qf, n_way):
    order = torch.argsort(sy, stable=True)
    return reference_episode_sequence(sf[order], sy[order], qf, n_way)


def one_shared_sequence(sf, sy, qf, n_way):
    return torch.cat([_tokens(sf, sy, n_way), torch.cat([qf, torch.zeros(len(qf), n_way)], 1)])[None]


def all_queries_in_each(sf, sy, qf, n_way):
    tokens = one_shared_sequence(sf, sy, qf, n_way)[0]
    return tokens.unsqueeze(0).expand(len(qf), -1, -1)


def width_from_labels(sf, sy, qf, n_way):
    return reference_episode_sequence(sf, sy, qf, int(sy.max()) + 1)


def queries_rotated(sf, sy, qf, n_way):
    return reference_episode_sequence(sf, sy, qf.roll(1, 0), n_way)


def in_place(sf, sy, qf, n_way):
    out = reference_episode_sequence(sf.clone(), sy, qf, n_way)
    sf.zero_()
    return out


# -- relabel_episode mistakes -------------------------------------------------------------
def no_remap(support_y, query_y, n_way, generator=None):
    return support_y.clone(), query_y.clone()


def fixed_map(support_y, query_y, n_way, generator=None):
    relabel = torch.randperm(n_way, generator=torch.Generator().manual_seed(7))
    return relabel[support_y], relabel[query_y]


def separate_maps(support_y, query_y, n_way, generator=None):
    return torch.randperm(n_way, generator=generator)[support_y], torch.randperm(n_way, generator=generator)[query_y]


def merges_classes(support_y, query_y, n_way, generator=None):
    relabel = torch.randint(0, n_way, (n_way,), generator=generator)
    relabel[1] = relabel[0]
    return relabel[support_y], relabel[query_y]


def shuffles_support(support_y, query_y, n_way, generator=None):
    s, q = reference_relabel_episode(support_y, query_y, n_way, generator)
    return s[torch.randperm(len(s), generator=generator)], q


def relabel_in_place(support_y, query_y, n_way, generator=None):
    relabel = torch.randperm(n_way, generator=generator)
    support_y.copy_(relabel[support_y])
    query_y.copy_(relabel[query_y])
    return support_y, query_y


def unimplemented(*args):
    raise NotImplementedError()


def test_the_library_sequence_passes(capsys):
    check_episode_sequence(reference_episode_sequence)
    assert "✓ check_episode_sequence" in capsys.readouterr().out


def test_the_reference_relabelling_passes(capsys):
    check_relabel_episode(reference_relabel_episode)
    assert "✓ check_relabel_episode" in capsys.readouterr().out


@pytest.mark.parametrize("fn, message", [
    (takes_query_labels, r"takes \['query_y'\]"),
    (reads_global_query_labels, r"reads the global \['query_y'\]"),
    (uniform_query_label, "query's label slot is not all zeros"),
    (integer_label, "the label slot has one number"),
    (off_by_one, "off by -1"),
    (label_first, "label comes before the features"),
    (sorted_support, "not in the order given"),
    (one_shared_sequence, "share one sequence"),
    (all_queries_in_each, "every sequence holds all"),
    (width_from_labels, "one-hot width came from the labels seen"),
    (queries_rotated, "ends with another query's features"),
    (in_place, "changed in place"),
    (unimplemented, "is not implemented yet"),
])  # fmt: skip
def test_each_sequence_mistake_is_named(fn, message):
    with pytest.raises(CheckFailed, match=message):
        check_episode_sequence(fn)


@pytest.mark.parametrize("fn, message", [
    (no_remap, "got the labels unchanged"),
    (fixed_map, "got the same map"),
    (separate_maps, "support and query must go through the same map"),
    (merges_classes, "sends two classes to one label"),
    (shuffles_support, "the support order must not change"),
    (relabel_in_place, "changed in place"),
    (unimplemented, "is not implemented yet"),
])  # fmt: skip
def test_each_relabelling_mistake_is_named(fn, message):
    with pytest.raises(CheckFailed, match=message):
        check_relabel_episode(fn)
