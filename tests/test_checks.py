"""The exercise checks accept correct code and catch the classic mistakes with specific messages."""

import pytest
import torch

from mlcourse.checks import CheckFailed
from mlcourse.checks.ch01 import check_confidence_interval, check_make_episode, check_nearest_neighbour
from mlcourse.data.episodes import sample_episode
from mlcourse.evaluate import mean_confidence_interval


class Tensors(torch.utils.data.Dataset):
    """Images and labels as a plain class-indexed dataset (the generic path of the sampler)."""

    def __init__(self, images, targets):
        self.images, self.targets = images, targets

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.targets[i]


def library_make_episode(images, targets, n_way, k_shot, q_query, generator):
    """The library's sampler behind the exercise's signature: the reference answer."""
    ep = sample_episode(Tensors(images, targets), n_way, k_shot, q_query, generator)
    return ep.support_x, ep.support_y, ep.query_x, ep.query_y


def test_reference_solutions_pass(capsys):
    check_make_episode(library_make_episode)
    check_confidence_interval(lambda a: mean_confidence_interval(a, z=1.96))
    check_nearest_neighbour(lambda sx, sy, qx: sy[torch.cdist(qx.flatten(1), sx.flatten(1)).argmin(1)])
    out = capsys.readouterr().out
    assert out.count("✓") == 3


def unimplemented(*args):
    raise NotImplementedError()


@pytest.mark.parametrize("check", [check_make_episode, check_confidence_interval, check_nearest_neighbour])
def test_unimplemented_says_so(check):
    with pytest.raises(CheckFailed, match="is not implemented yet"):
        check(unimplemented)


def _sampler(remap=True, leak=False, ignore_generator=False, first_classes=False, check_size=True, global_rng=False):
    def make_episode(images, targets, n_way, k_shot, q_query, generator):
        g = torch.Generator().manual_seed(0) if ignore_generator else generator
        g = None if global_rng else g  # draws from torch's global generator: not reproducible
        classes, counts = torch.unique(targets, return_counts=True)
        usable = classes[counts >= k_shot + q_query] if check_size else classes
        if len(usable) < n_way:
            raise ValueError("too few")
        chosen = usable[:n_way] if first_classes else usable[torch.randperm(len(usable), generator=g)[:n_way]]
        s, q, sy, qy = [], [], [], []
        for j, c in enumerate(chosen):
            m = torch.nonzero(targets == c).flatten()
            p = m[torch.randperm(len(m), generator=g)[: k_shot + q_query]]
            s.append(p[:k_shot])
            q.append(p[:q_query] if leak else p[k_shot:])
            label = j if remap else int(c)
            sy += [label] * k_shot
            qy += [label] * q_query
        return images[torch.cat(s)], torch.tensor(sy), images[torch.cat(q)], torch.tensor(qy)

    return make_episode


@pytest.mark.parametrize(
    "kwargs,case,message",
    [
        (dict(remap=False), "labels are remapped", "not the dataset's class id"),
        (dict(leak=True), "no image is both", "leak its answer"),
        (dict(ignore_generator=True), "classes and images vary", "draw the N classes at random"),
        (dict(first_classes=True), "classes and images vary", "only ever used classes"),
        (dict(check_size=False), "fewer than K+Q", "yet it was drawn"),
        # The determinism case must compare two runs, not a run with itself: a sampler that
        # ignores the generator it is given passes every other case.
        (dict(global_rng=True), "the same generator seed gives the same episode", "seeded alike differ"),
    ],
)
def test_sampler_mistakes_are_named(kwargs, case, message):
    with pytest.raises(CheckFailed) as err:
        check_make_episode(_sampler(**kwargs))
    assert case in str(err.value) and message in str(err.value)


def test_sampler_crash_is_reported_with_the_case():
    def broken(images, targets, n_way, k_shot, q_query, generator):
        return images[[10**6]]

    with pytest.raises(CheckFailed, match="(?s)returns four tensors.*raised IndexError"):
        check_make_episode(broken)


@pytest.mark.parametrize(
    "fn,message",
    [
        (lambda a: (torch.as_tensor(a).mean(), 1.96 * torch.as_tensor(a).std(unbiased=False) / len(a) ** 0.5), "population standard deviation"),
        (lambda a: (torch.as_tensor(a).mean(), 1.96 * torch.as_tensor(a).std()), "divide by sqrt"),
        (lambda a: (torch.as_tensor(a).mean(), torch.as_tensor(a).std() / len(a) ** 0.5), "1.96 standard errors"),
        (lambda a: (100 * torch.as_tensor(a).mean(), 0.1), "mean: expected"),
    ],
)
def test_interval_mistakes_are_named(fn, message):
    with pytest.raises(CheckFailed, match=message):
        check_confidence_interval(fn)


def test_nearest_neighbour_mistakes_are_named():
    index_not_label = lambda sx, sy, qx: torch.cdist(qx.flatten(1), sx.flatten(1)).argmin(1)  # noqa: E731
    with pytest.raises(CheckFailed, match="index of the nearest support image"):
        check_nearest_neighbour(index_not_label)
    farthest = lambda sx, sy, qx: sy[torch.cdist(qx.flatten(1), sx.flatten(1)).argmax(1)]  # noqa: E731
    with pytest.raises(CheckFailed, match="expected labels"):
        check_nearest_neighbour(farthest)


# ---- chapter 02: ProtoNet pieces -------------------------------------------------------
from mlcourse.checks.ch02 import check_episode_loss, check_proto_logits, check_prototypes  # noqa: E402
from mlcourse.metric.protonet import prototypes as lib_prototypes, squared_euclidean  # noqa: E402


def test_ch02_library_passes(capsys):
    check_prototypes(lib_prototypes)
    check_proto_logits(lambda zq, c: -squared_euclidean(zq, c))

    def loss(embed, sx, sy, qx, qy):
        c = lib_prototypes(embed(sx), sy, int(sy.max()) + 1)
        return torch.nn.functional.cross_entropy(-squared_euclidean(embed(qx), c), qy)

    check_episode_loss(loss)
    assert capsys.readouterr().out.count("✓") == 3


@pytest.mark.parametrize(
    "fn,message",
    [
        (lambda z, y, n: z.mean(1), "averaged each embedding over its features"),
        (lambda z, y, n: z.mean(0), "averaged all embeddings together"),
        (lambda z, y, n: z.reshape(n, -1, z.shape[1]).mean(1), "assume the support is ordered"),
        (lambda z, y, n: torch.stack([z[y == j].mean(0) for j in range(n)]).detach(), "detached"),
    ],
)
def test_ch02_prototype_mistakes(fn, message):
    with pytest.raises(CheckFailed, match=message):
        check_prototypes(fn)


@pytest.mark.parametrize(
    "fn,message",
    [
        (lambda zq, c: -torch.cdist(zq, c), "not its square"),
        (lambda zq, c: squared_euclidean(zq, c), "largest"),
        (lambda zq, c: -squared_euclidean(zq, c).T, r"\[N, Q\]"),
    ],
)
def test_ch02_logit_mistakes(fn, message):
    with pytest.raises(CheckFailed, match=message):
        check_proto_logits(fn)


def _loss(include_query=False, reduction="mean"):
    def loss(embed, sx, sy, qx, qy):
        zs, zq, ys = embed(sx), embed(qx), sy
        if include_query:
            zs, ys = torch.cat([zs, zq]), torch.cat([sy, qy])
        c = lib_prototypes(zs, ys, int(sy.max()) + 1)
        return torch.nn.functional.cross_entropy(-squared_euclidean(zq, c), qy, reduction=reduction)

    return loss


def test_ch02_loss_mistakes():
    with pytest.raises(CheckFailed, match="leaks the answers"):
        check_episode_loss(_loss(include_query=True))
    with pytest.raises(CheckFailed, match=r"\*sum\*"):
        check_episode_loss(_loss(reduction="sum"))


# ---- chapter 03: relation module --------------------------------------------------------
from mlcourse.checks.ch03 import check_make_pairs, check_relation_loss, check_relation_module  # noqa: E402
from mlcourse.metric.relation import RelationModule as LibRelationModule  # noqa: E402


def _pairs(cm, qm):
    q, n = len(qm), len(cm)
    return torch.cat([cm.unsqueeze(0).expand(q, -1, -1, -1, -1), qm.unsqueeze(1).expand(-1, n, -1, -1, -1)], dim=2)


def test_ch03_library_passes(capsys):
    check_make_pairs(_pairs)
    check_relation_module(lambda in_channels, hidden, map_size: LibRelationModule(in_channels, hidden, 8, map_size))
    check_relation_loss(lambda s, y: torch.nn.functional.mse_loss(s, torch.nn.functional.one_hot(y, s.shape[1]).float()))
    assert capsys.readouterr().out.count("✓") == 3


def test_ch03_mistakes():
    with pytest.raises(CheckFailed, match="class map first"):
        check_make_pairs(lambda cm, qm: _pairs(cm, qm)[:, :, torch.cat([torch.arange(2, 4), torch.arange(0, 2)])])
    with pytest.raises(CheckFailed, match="every query must be paired"):
        check_make_pairs(lambda cm, qm: torch.cat([cm[torch.arange(len(qm)) % len(cm)], qm], dim=1))
    with pytest.raises(CheckFailed, match="channel dimension"):
        check_make_pairs(lambda cm, qm: torch.cat([cm, qm], dim=0))

    class NoSigmoid(LibRelationModule):
        def __init__(self, in_channels, hidden, map_size):
            super().__init__(in_channels, hidden, 8, map_size)

        def forward(self, pairs):
            return self.fc2(torch.relu(self.fc1(self.convs(pairs).flatten(1)))).squeeze(1) * 10

    with pytest.raises(CheckFailed, match="end with a sigmoid"):
        check_relation_module(NoSigmoid)

    class Unsqueezed(NoSigmoid):
        def forward(self, pairs):
            return LibRelationModule.forward(self, pairs).unsqueeze(1)

    with pytest.raises(CheckFailed, match=r"shape \[B\]"):
        check_relation_module(Unsqueezed)
    with pytest.raises(CheckFailed, match="cross-entropy"):
        check_relation_loss(lambda s, y: torch.nn.functional.cross_entropy(s, y))


# ---- chapter 04: inner loop and meta-gradient --------------------------------------------
from torch.func import functional_call  # noqa: E402

from mlcourse.checks.ch04 import check_inner_loop, check_maml_meta_gradient  # noqa: E402
from mlcourse.optim import adapt, meta_gradient  # noqa: E402


def _inner(mistake=None):
    def inner_loop(model, params, x, y, steps, lr, first_order=False):
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(functional_call(model, params, (x,)), y)
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=(not first_order) and mistake != "no_graph")
            if mistake == "in_place":
                with torch.no_grad():
                    for p, g in zip(params.values(), grads):
                        p.sub_(lr * g)
            elif mistake == "detach":
                params = {n: (p - lr * g).detach() for (n, p), g in zip(params.items(), grads)}
            else:
                params = {n: p - lr * g for (n, p), g in zip(params.items(), grads)}
        return params

    return inner_loop


def test_ch04_library_passes(capsys):
    check_inner_loop(lambda m, p, x, y, s, lr, first_order=False: adapt(m, p, {}, x, y, steps=s, lr=lr, first_order=first_order))
    check_maml_meta_gradient(lambda m, p, t, s, lr: meta_gradient(m, t, inner_steps=s, inner_lr=lr, params=p).grads)
    assert capsys.readouterr().out.count("✓") == 2


@pytest.mark.parametrize("mistake,message", [("in_place", "in-place update"), ("detach", "detached from θ"), ("no_graph", "create_graph=True")])
def test_ch04_inner_loop_mistakes(mistake, message):
    with pytest.raises(CheckFailed, match=message):
        check_inner_loop(_inner(mistake))


def test_ch04_meta_gradient_mistakes():
    summed = lambda m, p, t, s, lr: {n: 3 * g for n, g in meta_gradient(m, t, inner_steps=s, inner_lr=lr, params=p).grads.items()}  # noqa: E731
    with pytest.raises(CheckFailed, match="average the query losses"):
        check_maml_meta_gradient(summed)
    first = lambda m, p, t, s, lr: meta_gradient(m, t, inner_steps=s, inner_lr=lr, params=p, first_order=True).grads  # noqa: E731
    with pytest.raises(CheckFailed, match="first-order gradient"):
        check_maml_meta_gradient(first)
