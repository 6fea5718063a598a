import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

from conftest import toy_dataset
from mlcourse.data.episodes import EpisodeDataset, iterate_episodes, relabel, sample_episode, task_loader


def decode(images):
    """Recover (class id, example number) from the toy images (see conftest.toy_dataset)."""
    raw = (images * 255).round().long()
    return raw[:, 0, 0, 0], raw[:, 0, 0, 1]


def test_shapes_and_label_layout(toy):
    ep = sample_episode(toy, n_way=5, k_shot=3, q_query=4, generator=torch.Generator().manual_seed(0))
    assert ep.support_x.shape == (15, 1, 8, 8) and ep.query_x.shape == (20, 1, 8, 8)
    assert ep.support_y.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3 + [4] * 3
    assert ep.query_y.tolist() == sum(([j] * 4 for j in range(5)), [])
    assert ep.support_x.dtype == torch.float32 and 0 <= ep.support_x.min() and ep.support_x.max() <= 1


@settings(max_examples=60, deadline=None)
@given(
    n_way=st.integers(2, 8),
    k_shot=st.integers(1, 5),
    q_query=st.integers(1, 5),
    seed=st.integers(0, 2**31),
)
def test_labels_remapped_and_no_leak(n_way, k_shot, q_query, seed):
    data = toy_dataset(num_classes=9, per_class=11)
    if k_shot + q_query > 11:
        return
    ep = sample_episode(data, n_way, k_shot, q_query, torch.Generator().manual_seed(seed))
    s_cls, s_idx = decode(ep.support_x)
    q_cls, q_idx = decode(ep.query_x)
    # label j always means the same original class, given by ep.classes[j]
    assert torch.equal(ep.classes[ep.support_y], s_cls)
    assert torch.equal(ep.classes[ep.query_y], q_cls)
    assert len(set(ep.classes.tolist())) == n_way
    # no image is both support and query, and none repeats
    pairs = list(zip(s_cls.tolist(), s_idx.tolist())) + list(zip(q_cls.tolist(), q_idx.tolist()))
    assert len(pairs) == len(set(pairs)) == n_way * (k_shot + q_query)


def test_deterministic_under_seed(toy):
    a = EpisodeDataset(toy, 5, 1, 5, num_episodes=10, seed=3)
    b = EpisodeDataset(toy, 5, 1, 5, num_episodes=10, seed=3)
    c = EpisodeDataset(toy, 5, 1, 5, num_episodes=10, seed=4)
    for i in (0, 7, 3):  # any access order
        assert all(torch.equal(x, y) for x, y in zip(a[i], b[i]))
    assert any(not torch.equal(a[i].classes, c[i].classes) or not torch.equal(a[i].support_x, c[i].support_x) for i in range(10))
    assert not all(torch.equal(a[0].support_x, a[i].support_x) for i in range(1, 10))


def test_task_batches_and_workers(toy):
    batches = list(task_loader(toy, 5, 2, 3, meta_batch=4, num_batches=2, seed=1))
    assert len(batches) == 2
    b = batches[0]
    assert b.support_x.shape == (4, 10, 1, 8, 8) and b.support_y.shape == (4, 10)
    assert b.query_x.shape == (4, 15, 1, 8, 8) and b.classes.shape == (4, 5)
    with_workers = list(task_loader(toy, 5, 2, 3, meta_batch=4, num_batches=2, seed=1, num_workers=2))
    for x, y in zip(batches, with_workers):
        assert all(torch.equal(s, t) for s, t in zip(x, y))


def test_iterate_matches_dataset(toy):
    eps = list(iterate_episodes(toy, 3, 1, 1, num_episodes=3, seed=9))
    ds = EpisodeDataset(toy, 3, 1, 1, num_episodes=3, seed=9)
    assert all(torch.equal(eps[i].query_x, ds[i].query_x) for i in range(3))


@pytest.mark.parametrize(
    "n_way,k_shot,q_query,match",
    [
        (11, 1, 1, r"11-way.*only 10 of 10 classes"),
        (5, 15, 10, r"k_shot=15 \+ q_query=10 = 25.*largest class has 20"),
        (0, 1, 1, "n_way must be at least 1, got 0"),
        (5, 0, 1, "k_shot must be at least 1, got 0"),
        (5, 1, -2, "q_query must be at least 1, got -2"),
        (1, 1, 1, "n_way must be at least 2"),
    ],
)
def test_impossible_requests_name_the_numbers(toy, n_way, k_shot, q_query, match):
    with pytest.raises(ValueError, match=match):
        sample_episode(toy, n_way, k_shot, q_query)
    with pytest.raises(ValueError, match=match):
        EpisodeDataset(toy, n_way, k_shot, q_query, num_episodes=5)


def test_small_classes_are_skipped_not_sampled():
    data = toy_dataset(num_classes=6, sizes=[20, 20, 20, 3, 20, 2])
    for seed in range(20):
        ep = sample_episode(data, 4, 2, 2, torch.Generator().manual_seed(seed))
        assert not {3, 5} & set(ep.classes.tolist())


def test_generic_dataset_and_mismatched_shapes():
    x = torch.rand(40, 1, 6, 6)
    y = torch.arange(4).repeat_interleave(10)
    generic = TensorDataset(x, y)
    ep = sample_episode(generic, 4, 2, 3, torch.Generator().manual_seed(0))
    assert ep.support_x.shape == (8, 1, 6, 6)

    class Ragged(torch.utils.data.Dataset):
        targets = [0] * 5 + [1] * 5

        def __len__(self):
            return 10

        def __getitem__(self, i):
            return torch.zeros(1, 6 + i % 2, 6), self.targets[i]

    with pytest.raises(ValueError, match=r"share one shape.*\(1, 6, 6\).*\(1, 7, 6\)"):
        sample_episode(Ragged(), 2, 2, 2, torch.Generator().manual_seed(0))


def test_relabel():
    assert relabel([7, 3, 7, 9, 3]).tolist() == [0, 1, 0, 2, 1]


# ---- the caller's random stream: advanced like the caller's own draws, never reseeded ----
def test_sampler_without_generator_draws_from_the_global_stream_without_reseeding(toy):
    torch.manual_seed(5)
    start = torch.get_rng_state()
    first = sample_episode(toy, 5, 2, 3)
    after = torch.get_rng_state()
    # the same draws from an explicit generator in the same state: same episode, same end state
    g = torch.Generator()
    g.set_state(start)
    explicit = sample_episode(toy, 5, 2, 3, generator=g)
    assert all(torch.equal(a, b) for a, b in zip(first, explicit))
    assert torch.equal(after, g.get_state())
    assert not torch.equal(after, start)  # it did draw
    torch.manual_seed(5)  # reproducible under the caller's seed
    assert all(torch.equal(a, b) for a, b in zip(first, sample_episode(toy, 5, 2, 3)))


def _global_state_untouched(fn):
    torch.manual_seed(11)
    before = torch.get_rng_state()
    out = fn()
    assert torch.equal(torch.get_rng_state(), before), "the call changed torch's global generator"
    return out


def test_baselines_leave_the_global_stream_alone_and_stay_deterministic():
    from mlcourse.baselines import FinetuneFromScratch, pretrain_classifier

    data = toy_dataset(num_classes=4, per_class=6, size=16)
    ep = sample_episode(data, 3, 2, 2, torch.Generator().manual_seed(0))
    tune = FinetuneFromScratch(steps=3, seed=7, hidden=4)
    scores = _global_state_untouched(lambda: tune(ep.support_x, ep.support_y, ep.query_x))
    torch.manual_seed(999)  # another caller state: the same network, the same scores
    assert torch.equal(tune(ep.support_x, ep.support_y, ep.query_x), scores)
    other = FinetuneFromScratch(steps=3, seed=8, hidden=4)(ep.support_x, ep.support_y, ep.query_x)
    assert not torch.equal(other, scores)  # the seed does fix the initial network

    def pretrain():
        model, _ = pretrain_classifier(data, steps=3, batch_size=8, seed=3, device=torch.device("cpu"), progress=False)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    weights = _global_state_untouched(pretrain)
    torch.manual_seed(12345)
    assert torch.equal(pretrain(), weights)
