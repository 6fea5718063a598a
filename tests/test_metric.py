"""Tests of the metric-based methods (mlcourse.metric) on small synthetic 28x28 data."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mlcourse.data.base import ImageClassDataset
from mlcourse.evaluate import evaluate
from mlcourse.fewshot import FewShotClassifier
from mlcourse.metric import (
    MatchingNet,
    ProtoNet,
    RelationEmbedding,
    RelationModule,
    RelationNet,
    SiameseNet,
    prototypes,
    squared_euclidean,
)

SIZE = 28
HIDDEN = 16  # narrower than the papers' 64 channels: same code paths, 10x less compute

METHODS = {
    "protonet": lambda: ProtoNet(hidden=HIDDEN),
    "protonet-cosine": lambda: ProtoNet(hidden=HIDDEN, distance="cosine"),
    "matching": lambda: MatchingNet(hidden=HIDDEN, temperature=10.0),
    "matching-fce": lambda: MatchingNet(hidden=HIDDEN, fce=True, temperature=10.0),
    "relation": lambda: RelationNet(hidden=HIDDEN),
    "siamese": lambda: SiameseNet(hidden=HIDDEN),
}
# Methods whose prediction does not depend on the order of the support set.
ORDER_FREE = [m for m in METHODS if m != "matching-fce"]


@pytest.fixture(autouse=True)
def _one_thread():
    """These batches are tiny: a second thread gains nothing, and on a shared CPU the threads'
    spin-waiting at every operation made the tests up to ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(name: str, seed: int = 0) -> FewShotClassifier:
    torch.manual_seed(seed)
    return METHODS[name]()


def blob_dataset(num_classes=30, per_class=20, size=SIZE, blobs=3, shift=2, noise=0.15, seed=0) -> ImageClassDataset:
    """Each class is a fixed picture of ``blobs`` Gaussian blobs; its examples are that picture
    shifted by up to ``shift`` pixels, plus pixel noise. Easy, but only up to translation."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    images, targets = [], []
    for c in range(num_classes):
        centres = 6 + torch.rand(blobs, 2, generator=g) * (size - 12)
        sigmas = 1.5 + 2 * torch.rand(blobs, generator=g)
        template = sum(
            torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s**2)) for (cy, cx), s in zip(centres.tolist(), sigmas.tolist())
        )
        template = template / template.max()
        for _ in range(per_class):
            dy, dx = torch.randint(-shift, shift + 1, (2,), generator=g).tolist()
            x = torch.roll(template, (dy, dx), dims=(0, 1)) + noise * torch.randn(size, size, generator=g)
            images.append((x.clamp(0, 1) * 255).round().to(torch.uint8))
            targets.append(c)
    return ImageClassDataset(
        torch.stack(images).unsqueeze(1),
        torch.tensor(targets),
        [f"blob{c}" for c in range(num_classes)],
        [f"group{c % 3}" for c in range(num_classes)],
        name="blobs",
    )


def task(n_way: int, k_shot: int, n_query: int, seed: int = 0):
    """Random images with labels ``0..N-1`` (K each, shuffled) and ``n_query`` query images."""
    g = torch.Generator().manual_seed(seed)
    support_y = torch.arange(n_way).repeat_interleave(k_shot)
    support_y = support_y[torch.randperm(len(support_y), generator=g)]
    support_x = torch.rand(len(support_y), 1, SIZE, SIZE, generator=g)
    query_x = torch.rand(n_query, 1, SIZE, SIZE, generator=g)
    return support_x, support_y, query_x


# ---------------------------------------------------------------------------------------
# The protocol, for every method
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("n_way,k_shot,n_query", [(2, 1, 1), (5, 1, 7), (3, 5, 4), (20, 2, 3)])
def test_forward_shapes(name, n_way, k_shot, n_query):
    model = make(name)
    sx, sy, qx = task(n_way, k_shot, n_query)
    for mode in (True, False):  # training and eval mode
        model.train(mode)
        with torch.set_grad_enabled(mode):
            logits = model(sx, sy, qx)
        assert logits.shape == (n_query, n_way)
        assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", METHODS)
def test_many_queries_and_uneven_shots(name):
    model = make(name).eval()
    sx, _, qx = task(5, 1, 2000)
    sx = torch.cat([sx, sx[:3]])
    sy = torch.tensor([0, 1, 2, 3, 4, 0, 0, 3])  # class 0 has 3 shots, class 3 two, the rest one
    with torch.no_grad():
        logits = model(sx, sy, qx)
    assert logits.shape == (2000, 5) and torch.isfinite(logits).all()
    # Eval mode computes in chunks; a query's logits must not depend on the other queries.
    with torch.no_grad():
        alone = model(sx, sy, qx[1234:1237])
    torch.testing.assert_close(alone, logits[1234:1237], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", METHODS)
def test_train_way_higher_than_test_way(name):
    model = make(name)
    data = blob_dataset(num_classes=12, per_class=6)
    model.meta_train(data, n_way=10, k_shot=1, q_query=2, steps=2, progress=False, device="cpu")
    sx, sy, qx = task(3, 2, 5)
    assert model.predict(sx, sy, qx).shape == (5, 3)


@pytest.mark.parametrize("name", ORDER_FREE)
def test_support_permutation_invariance(name):
    model = make(name).eval()
    sx, sy, qx = task(5, 3, 6)
    perm = torch.randperm(len(sy), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(sx[perm], sy[perm], qx), model(sx, sy, qx), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", METHODS)
def test_renaming_classes_permutes_logits(name):
    """Relabel class j as pi(j), keeping the support images in place: column pi(j) of the new
    logits is column j of the old ones. Holds for every method, FCE included."""
    model = make(name).eval()
    sx, sy, qx = task(4, 2, 5)
    pi = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        before, after = model(sx, sy, qx), model(sx, pi[sy], qx)
    torch.testing.assert_close(after[:, pi], before, atol=1e-5, rtol=1e-5)


def test_fce_depends_on_support_order():
    """Full-context embeddings read the support set with a bidirectional LSTM, so shuffling
    the support set changes the logits (a little). What still holds: renaming classes permutes
    the logits (test above), each query is treated on its own (test_many_queries...), and the
    output is a log-distribution over the classes."""
    model = make("matching-fce").eval()
    sx, sy, qx = task(5, 3, 6)
    perm = torch.randperm(len(sy), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = model(sx, sy, qx), model(sx[perm], sy[perm], qx)
    assert not torch.allclose(a, b, atol=1e-6)
    torch.testing.assert_close(a.exp().sum(1), torch.ones(6))
    torch.testing.assert_close(b.exp().sum(1), torch.ones(6))


@pytest.mark.parametrize("name", METHODS)
def test_meta_train_is_deterministic(name):
    data = blob_dataset(num_classes=8, per_class=6)
    weights = []
    for _ in range(2):
        model = make(name, seed=3)
        model.meta_train(data, n_way=3, k_shot=1, q_query=2, steps=3, seed=7, progress=False, device="cpu")
        weights.append(model.state_dict())
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


# For each method: the largest allowed ratio of the mean loss of the last 10 training episodes
# to that of the first 10, and the accuracy it must reach on held-out blob classes (5-way
# 1-shot, chance is 0.2) after 100 episodes. Measured with three data seeds, every method
# clears these with a margin: about 0.85-0.9 for ProtoNet and Matching Networks, 0.75-0.85
# for the relation network, 0.5-0.7 for the Siamese verifier (it is not trained to classify,
# and its loss is a balanced pair loss that falls more slowly).
LEARNING = {
    "protonet": (0.5, 0.75),
    "protonet-cosine": (0.5, 0.75),
    "matching": (0.5, 0.75),
    "matching-fce": (0.5, 0.75),
    "relation": (0.7, 0.6),
    "siamese": (0.85, 0.4),
}


@pytest.mark.parametrize("name", METHODS)
def test_learns_held_out_classes(name):
    max_ratio, threshold = LEARNING[name]
    data = blob_dataset(num_classes=60, per_class=8)
    train, test = data.subset_classes(range(40)), data.subset_classes(range(40, 60))
    model = make(name)
    history = model.meta_train(train, n_way=5, k_shot=1, q_query=3, steps=100, lr=3e-3, seed=0, progress=False, device="cpu")
    losses = history["loss"]
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < max_ratio * first, (first, last)
    result = evaluate(model.predict, test, n_way=5, k_shot=1, q_query=5, episodes=30, progress=False)
    assert result.mean >= threshold, result


@pytest.mark.parametrize("name", METHODS)
def test_rejects_bad_tasks(name):
    model = make(name).eval()
    sx, sy, qx = task(3, 2, 4)
    with pytest.raises(ValueError, match="differ in shape"):
        model(sx, sy, torch.rand(4, 1, SIZE, SIZE - 1))
    with pytest.raises(ValueError, match="labels of shape"):
        model(sx, sy[:-1], qx)
    with pytest.raises(ValueError, match="no support image"):
        model(sx, torch.where(sy == 1, 2, sy), qx)  # class 1 empty
    with pytest.raises(ValueError, match="found -1"):
        model(sx, sy - 1, qx)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        model(sx[:, 0], sy, qx)
    with pytest.raises(ValueError, match="must be integers"):
        model(sx, sy.float(), qx)
    with pytest.raises(ValueError):  # wrong number of channels for the backbone
        model(sx.repeat(1, 3, 1, 1), sy, qx.repeat(1, 3, 1, 1))


@pytest.mark.parametrize("name", METHODS)
def test_save_load_round_trip(name, tmp_path):
    model = make(name)
    model.meta_train(blob_dataset(num_classes=8, per_class=6), n_way=3, k_shot=1, q_query=2, steps=2, progress=False, device="cpu")
    again = FewShotClassifier.load(model.save(tmp_path / f"{name}.pt"))
    assert type(again) is type(model)
    sx, sy, qx = task(4, 2, 9)
    torch.testing.assert_close(again.predict(sx, sy, qx), model.predict(sx, sy, qx), atol=0, rtol=0)


# ---------------------------------------------------------------------------------------
# ProtoNet
# ---------------------------------------------------------------------------------------
def test_helpers():
    emb = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0]])
    torch.testing.assert_close(prototypes(emb, torch.tensor([0, 0, 1]), 2), torch.tensor([[2.0, 1.0], [0.0, 5.0]]))
    with pytest.raises(ValueError, match="no embedding"):
        prototypes(emb, torch.tensor([0, 0, 2]), 3)
    a, b = torch.randn(7, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    naive = torch.tensor([[((a[i] - b[j]) ** 2).sum().item() for j in range(3)] for i in range(7)], dtype=torch.float64)
    torch.testing.assert_close(squared_euclidean(a, b), naive)
    assert squared_euclidean(a, a).diagonal().abs().max() == 0  # exact zero for identical points
    with pytest.raises(ValueError):
        squared_euclidean(a, b[:, :3])


def test_protonet_logits_are_minus_squared_distances():
    model = make("protonet").eval()
    sx, sy, qx = task(4, 3, 5)
    with torch.no_grad():
        logits = model(sx, sy, qx)
        zs, zq = model.backbone(sx), model.backbone(qx)
    expected = torch.empty(5, 4)
    for q in range(5):
        for n in range(4):
            members = [zs[i] for i in range(len(sy)) if sy[i] == n]
            proto = sum(members) / len(members)
            expected[q, n] = -sum((zq[q, d] - proto[d]) ** 2 for d in range(zq.shape[1]))
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("learn", [True, False])
def test_cosine_protonet_bounded_by_temperature(learn):
    model = ProtoNet(hidden=HIDDEN, distance="cosine", temperature=5.0, learn_temperature=learn).eval()
    assert ("log_temperature" in dict(model.named_parameters())) == learn
    sx, sy, qx = task(5, 2, 30)
    with torch.no_grad():
        logits = model(sx, sy, qx)
    assert logits.abs().max() <= 5.0 + 1e-4
    # A query equal to a lone support image has cosine 1 with its prototype: the maximum.
    with torch.no_grad():
        own = model(sx[:1], torch.tensor([0]), sx[:1].expand(1, -1, -1, -1))
    torch.testing.assert_close(own, torch.tensor([[5.0]]))
    with pytest.raises(ValueError, match="distance"):
        ProtoNet(distance="manhattan")


# ---------------------------------------------------------------------------------------
# Matching networks
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fce", [False, True])
def test_matching_outputs_log_label_distribution(fce):
    model = MatchingNet(hidden=HIDDEN, fce=fce).eval()
    sx, sy, qx = task(5, 2, 8)
    with torch.no_grad():
        logits = model(sx, sy, qx)
        dist = model.label_distribution(sx, sy, qx)
    torch.testing.assert_close(dist.sum(1), torch.ones(8))
    torch.testing.assert_close(logits, dist.log())
    # so cross-entropy on the "logits" is exactly the negative log-likelihood
    y = torch.randint(0, 5, (8,))
    torch.testing.assert_close(F.cross_entropy(logits, y), F.nll_loss(dist.log(), y))


def test_matching_without_fce_is_attention_over_support():
    model = MatchingNet(hidden=HIDDEN, temperature=2.0).eval()
    sx, sy, qx = task(3, 2, 4)
    with torch.no_grad():
        g, f = model.backbone(sx), model.backbone(qx)
        dist = model.label_distribution(sx, sy, qx)
    cos = F.cosine_similarity(f.unsqueeze(1), g.unsqueeze(0), dim=2)  # [Q, S]
    attention = torch.softmax(2.0 * cos, dim=1)
    expected = torch.stack([attention[:, sy == n].sum(1) for n in range(3)], dim=1)
    torch.testing.assert_close(dist, expected)


# ---------------------------------------------------------------------------------------
# Relation networks
# ---------------------------------------------------------------------------------------
def test_relation_shapes_and_scores():
    assert RelationEmbedding()(torch.rand(2, 1, 28, 28)).shape == (2, 64, 5, 5)  # as in the paper
    assert RelationEmbedding.map_size(28) == 5 and RelationEmbedding.map_size(84) == 19
    module = RelationModule(in_channels=128, map_size=5)
    scores = module(torch.rand(6, 128, 5, 5))
    assert scores.shape == (6,) and ((scores >= 0) & (scores <= 1)).all()
    with pytest.raises(ValueError, match="4x4"):
        RelationModule(map_size=3)
    model = make("relation").eval()
    sx, sy, qx = task(5, 3, 7)
    with torch.no_grad():
        s = model(sx, sy, qx)
    assert ((s >= 0) & (s <= 1)).all()
    with pytest.raises(ValueError, match="built for 28x28"):
        model(torch.rand(2, 1, 32, 32), torch.tensor([0, 1]), torch.rand(1, 1, 32, 32))


def test_relation_is_trained_with_mse_on_one_hot():
    model = make("relation")
    data = blob_dataset(num_classes=6, per_class=4)
    from mlcourse.data.episodes import sample_episode

    ep = sample_episode(data, 3, 1, 2, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    loss, scores = model.episode_loss(ep)
    target = F.one_hot(ep.query_y, 3).float()
    torch.testing.assert_close(loss, ((scores - target) ** 2).mean())


# ---------------------------------------------------------------------------------------
# Siamese networks
# ---------------------------------------------------------------------------------------
def test_siamese_scores_are_best_match_per_class_and_loss_is_balanced_bce():
    model = make("siamese").eval()
    sx, sy, qx = task(3, 2, 4)
    with torch.no_grad():
        pairs = model.pair_logits(sx, qx)  # [Q, S]
        scores = model(sx, sy, qx)
    assert pairs.shape == (4, 6)
    torch.testing.assert_close(scores, torch.stack([pairs[:, sy == n].max(1).values for n in range(3)], dim=1))
    from mlcourse.data.episodes import Episode

    qy = torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        loss, _ = model.episode_loss(Episode(sx, sy, qx, qy, torch.arange(3)))
    same = (qy[:, None] == sy[None]).float()
    weights = 1 + same * (2 - 1)  # pos_weight = N - 1 = 2: a positive pair counts twice
    expected = (weights * F.binary_cross_entropy_with_logits(pairs, same, reduction="none")).mean()
    torch.testing.assert_close(loss, expected)


# ---------------------------------------------------------------------------------------
# Affine augmentation: the distortions are part of each episode's seeded stream
# ---------------------------------------------------------------------------------------
def _episode_images(ep):
    return torch.cat([ep.support_x, ep.query_x])


def test_augmented_episodes_are_seeded_per_episode():
    from mlcourse.data.episodes import EpisodeDataset
    from mlcourse.metric.augment import AffineAugmented

    plain = blob_dataset(num_classes=6, per_class=8)
    aug = AffineAugmented(plain, strength=1.0, seed=0)
    clean = EpisodeDataset(plain, 3, 1, 3, num_episodes=12, seed=5)
    eps = EpisodeDataset(aug, 3, 1, 3, num_episodes=12, seed=5)
    # any order of access, any number of reads: episode i is always the same, pixels included
    first = [eps[i] for i in (7, 0, 3)]
    assert all(torch.equal(a, b) for ep, i in zip(first, (7, 0, 3)) for a, b in zip(ep, eps[i]))
    seen = {}  # clean image bytes -> (episode, augmented image)
    repeats = 0
    for i in range(12):
        c, a = clean[i], eps[i]
        # the class and image choices are those of the plain dataset; only the pixels move
        assert torch.equal(c.classes, a.classes) and torch.equal(c.query_y, a.query_y)
        x_clean, x_aug = _episode_images(c), _episode_images(a)
        assert all(not torch.equal(u, v) for u, v in zip(x_clean, x_aug))
        for u, v in zip(x_clean, x_aug):
            key = bytes(u.numpy())
            if key in seen and seen[key][0] != i:  # the same image in another episode
                assert not torch.allclose(seen[key][1], v, atol=1e-3), "an image got the same distortion in two episodes"
                repeats += 1
            seen[key] = (i, v)
    assert repeats >= 5  # the check above did run


def test_augmented_stream_is_the_same_with_dataloader_workers():
    from mlcourse.data.episodes import task_loader
    from mlcourse.metric.augment import AffineAugmented

    aug = AffineAugmented(blob_dataset(num_classes=6, per_class=8, size=16), strength=1.0, seed=0)
    serial = list(task_loader(aug, 3, 1, 2, meta_batch=2, num_batches=4, seed=1))
    parallel = list(task_loader(aug, 3, 1, 2, meta_batch=2, num_batches=4, seed=1, num_workers=2))
    for x, y in zip(serial, parallel, strict=True):
        assert all(torch.equal(s, t) for s, t in zip(x, y))
    # two workers each start from a copy of the dataset: with the distortions drawn from the
    # dataset's own generator, batches 0 and 1 would be distorted alike. They must not be.
    assert not torch.allclose(serial[0].support_x, serial[1].support_x, atol=1e-3)


def test_augmented_as_float_with_and_without_a_generator():
    from mlcourse.metric.augment import AffineAugmented

    plain = blob_dataset(num_classes=3, per_class=4)
    idx = torch.arange(6)
    a, b = AffineAugmented(plain, seed=3), AffineAugmented(plain, seed=3)
    # without a generator: the dataset's own, seeded stream, fresh at every read
    first = a.as_float(idx)
    assert torch.equal(first, b.as_float(idx))
    assert not torch.allclose(first, a.as_float(idx), atol=1e-3)
    assert not torch.allclose(first, plain.as_float(idx), atol=1e-3)
    # with one: a function of that generator alone, the dataset's own stream untouched
    state = a.generator.get_state()
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(a.as_float(idx, generator=g1), b.as_float(idx, generator=g2))
    assert torch.equal(a.generator.get_state(), state)
    assert not torch.allclose(a.as_float(idx, generator=torch.Generator().manual_seed(10)), a.as_float(idx, generator=torch.Generator().manual_seed(9)), atol=1e-3)
    # strength 0 is the plain dataset, generator or not
    assert torch.equal(AffineAugmented(plain, strength=0.0).as_float(idx, generator=g1), plain.as_float(idx))


def test_augmented_sampler_without_a_generator_follows_the_global_seed():
    from mlcourse.data.episodes import sample_episode
    from mlcourse.metric.augment import AffineAugmented

    aug = AffineAugmented(blob_dataset(num_classes=4, per_class=5, size=16), seed=0)
    torch.manual_seed(4)
    one = sample_episode(aug, 3, 1, 2)
    torch.manual_seed(4)
    two = sample_episode(aug, 3, 1, 2)  # the dataset's own generator has moved on: no matter
    assert all(torch.equal(x, y) for x, y in zip(one, two))
