"""Checks for the chapter 06b exercise: the episode as a sequence, and labels remapped per episode.

Part 1. The learner writes ``episode_sequence(support_features, support_y, query_features, n_way)``
-> ``[Q, NK + 1, D + n_way]``: one sequence per query, the support tokens ``(features,
onehot(label))`` in their given order, then the query's token ``(features, zeros)``. The classic
mistakes, each named: the query's own label visible to the model (a query_y argument, a
global, any non-zero number in the query's label slot), labels not one-hot or off by one,
label and features in the other order, the support order changed (sorted by label), every
query in one shared sequence, n_way read off the labels instead of the argument, inputs
changed in place.

Part 2. The learner writes ``relabel_episode(support_y, query_y, n_way, generator)`` ->
``(support_y, query_y)`` mapped through a random permutation of ``0..n_way-1`` drawn from
``generator``. The mistakes: the same labels every episode (no remapping, or one fixed map),
support and query remapped differently, a map that is not a permutation (two classes merged),
the support order changed, inputs changed in place.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

from . import Check

QUERY_LABEL_NAMES = {"query_y", "query_labels", "qy", "y_query", "query_label"}


def reference_episode_sequence(support_features, support_y, query_features, n_way):
    from ..blackbox.common import episode_sequence

    return episode_sequence(support_features, support_y, query_features, n_way)


def reference_relabel_episode(support_y, query_y, n_way, generator=None):
    relabel = torch.randperm(n_way, generator=generator).to(support_y.device)
    return relabel[support_y], relabel[query_y]


def _task(n_way: int, k_shot: int, queries: int, dim: int, seed: int, shuffled: bool = False):
    """Features with distinct values everywhere (so a moved row is recognisable) and labels."""
    g = torch.Generator().manual_seed(seed)
    support_y = torch.arange(n_way).repeat_interleave(k_shot)
    if shuffled:
        support_y = support_y[torch.randperm(len(support_y), generator=g)]
    support = torch.randn(len(support_y), dim, generator=g) + 3.0  # far from 0 and 1: never mistaken for a label
    query = torch.randn(queries, dim, generator=g) - 3.0
    query_y = torch.randint(0, n_way, (queries,), generator=g)
    return support, support_y, query, query_y


def _signature(chk: Check, fn) -> None:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return
    leaked = QUERY_LABEL_NAMES & set(params)
    if leaked:
        chk.fail(f"`{chk.fn_name}` takes {sorted(leaked)}: the query's label is what the model must predict, so the "
                 "sequence cannot be built from it. The arguments are (support_features, support_y, query_features, n_way).")  # fmt: skip
    code = getattr(fn, "__code__", None)
    used = QUERY_LABEL_NAMES & set(code.co_names if code else ())
    if used:
        chk.fail(f"`{chk.fn_name}` reads the global {sorted(used)}: the query's label leaks into its sequence. "
                 "Build the query's token from query_features and zeros only.")  # fmt: skip


def _sequence_case(chk: Check, fn, support, support_y, query, n_way: int) -> None:
    snapshot = (support.clone(), support_y.clone(), query.clone())
    out = chk.call(fn, support, support_y, query, n_way)
    nk, q, d = len(support_y), len(query), support.shape[1]
    want = (q, nk + 1, d + n_way)
    if not isinstance(out, torch.Tensor):
        chk.fail(f"return a tensor of shape {want}; got {type(out).__name__}")
    for before, after, name in zip(snapshot, (support, support_y, query), ("support_features", "support_y", "query_features")):
        if not torch.equal(before, after):
            chk.fail(f"{name} was changed in place: build new tensors, the caller still needs the originals")
    shape = tuple(out.shape)
    if shape != want and shape in ((1, nk + q, d + n_way), (nk + q, d + n_way)):
        chk.fail(f"shape {shape}: all {q} queries share one sequence, so each query's answer can use the other queries "
                 f"(and their order). Give every query its own sequence: shape {want}.")  # fmt: skip
    if shape != want and shape == (q, nk + q, d + n_way):
        chk.fail(f"shape {shape}: every sequence holds all {q} queries. Each sequence is the support set and one query: {want}.")
    if shape != want and shape == (q, nk + 1, d + 1):
        chk.fail(f"shape {shape}: the label slot has one number, not {n_way}: write the label one-hot (F.one_hot(y, n_way)).")
    if shape == (q, nk + 1, d + int(support_y.max()) + 1) and shape != want:
        chk.fail(f"shape {shape}: the one-hot width came from the labels seen (max label + 1), not from n_way={n_way}")
    if shape != want:
        chk.fail(f"expected shape [Q, NK + 1, D + n_way] = {want}; got {shape}")
    out = out.detach().to(support.dtype)
    feats, labels = out[..., :d], out[..., d:]
    if torch.allclose(out[:, :nk, n_way:], support.expand(q, -1, -1)) and not torch.allclose(feats[:, :nk], support.expand(q, -1, -1)):
        chk.fail("the one-hot label comes before the features: each token is (features, onehot(label)), features first")
    query_slot = labels[:, -1]
    if query_slot.abs().max() > 0:
        chk.fail(f"the query's label slot is not all zeros (first query's: {query_slot[0].tolist()}): whatever is there is "
                 "the answer the model must produce, or a hint about it. The query's token is (features, zeros).")  # fmt: skip
    for i in range(q):
        if not torch.allclose(feats[i, -1], query[i]):
            if any(torch.allclose(feats[i, -1], query[j]) for j in range(q)):
                chk.fail(f"sequence {i} ends with another query's features: sequence i must end with query i")
            chk.fail(f"sequence {i} does not end with query {i}'s features")
    support_feats = feats[0, :nk]
    if not torch.allclose(support_feats, support):
        rows = [next((j for j in range(nk) if torch.allclose(support_feats[i], support[j])), None) for i in range(nk)]
        if None not in rows and sorted(rows) == list(range(nk)):
            chk.fail(f"the support set is not in the order given (token i holds support example {rows}): the order is part "
                     "of the input, and the chapter measures what it does; keep it as it comes.")  # fmt: skip
        chk.fail("the support tokens do not start with the support features as given")
    if not all(torch.allclose(feats[i, :nk], support) and torch.allclose(labels[i, :nk], labels[0, :nk]) for i in range(q)):
        chk.fail("the support prefix differs between the queries' sequences: every query reads the same support set")
    support_labels = labels[0, :nk]
    onehot = F.one_hot(support_y, n_way).to(out.dtype)
    if torch.allclose(support_labels, onehot):
        return
    hot_rows = (support_labels.sum(1) == 1) & ((support_labels == 0) | (support_labels == 1)).all(1)
    if hot_rows.any():
        shift = (support_labels.argmax(1) - support_y)[hot_rows] % n_way
        if (shift == shift[0]).all() and int(shift[0]) in (1, n_way - 1):
            by = 1 if int(shift[0]) == 1 else -1
            chk.fail(f"the one-hot labels are off by {by:+d}: label y is written in position y{by:+d} "
                     "(or a row is empty); label k is a 1 in position k of n_way")  # fmt: skip
    chk.fail(f"the support label slots are not one-hot of support_y: for labels {support_y[:4].tolist()} expected rows "
             f"{onehot[:2].tolist()}..., got {support_labels[:2].tolist()}...")  # fmt: skip


def check_episode_sequence(episode_sequence) -> None:
    """``episode_sequence(support_features, support_y, query_features, n_way) -> [Q, NK + 1, D + n_way]``."""
    chk = Check("check_episode_sequence", "episode_sequence")
    with chk.case("the arguments: no query labels"):
        _signature(chk, episode_sequence)
    with chk.case("5-way 1-shot, 3 queries, 4 features"):
        s, sy, q, _ = _task(5, 1, 3, 4, seed=0)
        _sequence_case(chk, episode_sequence, s, sy, q, 5)
    with chk.case("3-way 2-shot, support in a shuffled order"):
        s, sy, q, _ = _task(3, 2, 4, 6, seed=1, shuffled=True)
        _sequence_case(chk, episode_sequence, s, sy, q, 3)
    with chk.case("one query"):
        s, sy, q, _ = _task(4, 1, 1, 5, seed=2, shuffled=True)
        _sequence_case(chk, episode_sequence, s, sy, q, 4)
    with chk.case("n_way = 5 but the support holds labels 0..2 only (the model has 5 outputs)"):
        s, sy, q, _ = _task(3, 1, 2, 4, seed=3, shuffled=True)
        _sequence_case(chk, episode_sequence, s, sy, q, 5)
    chk.done()


def _relabel_call(chk: Check, fn, support_y, query_y, n_way, seed):
    snapshot = (support_y.clone(), query_y.clone())
    out = chk.call(fn, support_y, query_y, n_way, torch.Generator().manual_seed(seed))
    if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)):
        chk.fail(f"return a pair of tensors (support_y, query_y); got {type(out).__name__}")
    if not (torch.equal(snapshot[0], support_y) and torch.equal(snapshot[1], query_y)):
        chk.fail("the labels you were given were changed in place: return new tensors")
    new_s, new_q = out
    if new_s.shape != support_y.shape or new_q.shape != query_y.shape:
        chk.fail(f"shapes {tuple(new_s.shape)}, {tuple(new_q.shape)}: expected {tuple(support_y.shape)}, {tuple(query_y.shape)} "
                 "(relabelling changes values, not how many there are)")  # fmt: skip
    if ((new_s < 0) | (new_s >= n_way)).any() or ((new_q < 0) | (new_q >= n_way)).any():
        chk.fail(f"new labels outside 0..{n_way - 1}: {new_s.tolist()}")
    mapping = {}
    for old, new in zip(support_y.tolist(), new_s.tolist()):
        if mapping.setdefault(old, new) != new:
            chk.fail(f"two support examples of class {old} got different labels ({mapping[old]} and {new}): the map is per class, "
                     "and the support order must not change")  # fmt: skip
    if len(set(mapping.values())) < len(mapping):
        chk.fail(f"the map {mapping} sends two classes to one label: it must be a permutation of 0..{n_way - 1}")
    for old, new in zip(query_y.tolist(), new_q.tolist()):
        if mapping.get(old) != new:
            chk.fail(f"a query of class {old} became {new}, but that class's support examples became {mapping.get(old)}: "
                     "support and query must go through the same map, or the query's label means another class")  # fmt: skip
    return tuple(mapping[c] for c in sorted(mapping))


def check_relabel_episode(relabel_episode) -> None:
    """``relabel_episode(support_y, query_y, n_way, generator) -> (support_y, query_y)``, one random map per episode."""
    chk = Check("check_relabel_episode", "relabel_episode")
    n_way = 5
    support_y = torch.tensor([3, 0, 4, 1, 2, 0, 3, 1, 4, 2])  # 5-way 2-shot, not in class order
    query_y = torch.tensor([2, 2, 0, 4, 1, 3, 3, 0])
    maps = []
    with chk.case("one episode: a per-class permutation, the same for support and query"):
        maps.append(_relabel_call(chk, relabel_episode, support_y, query_y, n_way, seed=0))
    with chk.case("twenty episodes (generators seeded 1..20): the map changes from episode to episode"):
        maps += [_relabel_call(chk, relabel_episode, support_y, query_y, n_way, seed=s) for s in range(1, 21)]
        identity = tuple(range(n_way))
        if len(set(maps)) == 1:
            what = "the labels unchanged" if maps[0] == identity else f"the same map {maps[0]}"
            chk.fail(f"all 21 episodes got {what}: a fixed labelling lets the network memorise which character is which "
                     "label instead of reading the support set. Draw a new permutation from `generator` every call.")  # fmt: skip
        if len(set(maps)) < 10:
            chk.fail(f"only {len(set(maps))} different maps in 21 episodes (of {120} possible): draw a uniform random "
                     "permutation (torch.randperm(n_way, generator=generator))")  # fmt: skip
    with chk.case("3-way 1-shot, two queries"):
        _relabel_call(chk, relabel_episode, torch.tensor([1, 2, 0]), torch.tensor([0, 2]), 3, seed=5)
    chk.done()
