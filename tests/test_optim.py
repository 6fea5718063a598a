"""Tests of mlcourse.optim: MAML's meta-gradient against finite differences and a naive
implementation, first order vs second order in closed form, Reptile's closed form, Meta-SGD,
the classic mistakes, vmap vs loop, and the few-shot protocol."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mlcourse.data.base import ImageClassDataset
from mlcourse.evaluate import evaluate
from mlcourse.models import conv4_classifier
from mlcourse.optim import (
    FOMAML,
    MAML,
    MetaSGD,
    Reptile,
    adapt,
    functional_forward,
    has_tied_weights,
    inner_train,
    learning_rate_summary,
    meta_gradient,
    named_params,
    reptile_update,
    resolve_vectorize,
)


# ---------------------------------------------------------------------------------------
# Small fixtures
# ---------------------------------------------------------------------------------------
@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The networks here are tiny: a second thread only adds synchronisation, and on a
    machine whose cores are busy with other jobs it makes every operation wait."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_mlp(seed=0) -> nn.Module:
    """3 inputs -> 4 tanh -> 2 classes, float64: smooth, so finite differences are exact."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def mlp_tasks(T=2, s=4, q=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    sx = torch.randn(T, s, 3, generator=g, dtype=torch.float64)
    qx = torch.randn(T, q, 3, generator=g, dtype=torch.float64)
    sy = torch.randint(0, 2, (T, s), generator=g)
    qy = torch.randint(0, 2, (T, q), generator=g)
    return sx, sy, qx, qy


def image_tasks(T=2, n=5, k=1, q=2, size=16, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    sx = torch.rand(T, n * k, 1, size, size, generator=g, dtype=dtype)
    qx = torch.rand(T, n * q, 1, size, size, generator=g, dtype=dtype)
    sy = torch.arange(n).repeat_interleave(k).repeat(T, 1)
    qy = torch.arange(n).repeat_interleave(q).repeat(T, 1)
    return sx, sy, qx, qy


def reference_meta_loss(model, flat_params, tasks, steps, lr):
    """The MAML objective written independently of the library (no graph kept: for finite
    differences): unflatten θ, take ``steps`` plain gradient steps per task, average the
    query losses."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    chunks = torch.split(flat_params, [s.numel() for s in shapes])
    sx, sy, qx, qy = tasks
    total = 0.0
    for t in range(sx.shape[0]):
        params = [c.reshape(s).clone().requires_grad_() for c, s in zip(chunks, shapes)]
        for _ in range(steps):
            loss = F.cross_entropy(torch.func.functional_call(model, dict(zip(names, params)), (sx[t],)), sy[t])
            grads = torch.autograd.grad(loss, params)
            params = [(p - lr * g).detach().requires_grad_() for p, g in zip(params, grads)]
        with torch.no_grad():
            total += F.cross_entropy(torch.func.functional_call(model, dict(zip(names, params)), (qx[t],)), qy[t]).item()
    return total / sx.shape[0]


def finite_differences(model, tasks, steps, lr, directions, h=1e-6):
    """Central finite differences of the MAML objective along each of ``directions``:
    ``(L(θ + h v) − L(θ − h v)) / 2h ≈ ∇L(θ) · v``. A few random directions check the whole
    gradient at the cost of a few evaluations (a per-coordinate check needs two per weight)."""
    theta = torch.cat([p.detach().flatten() for p in model.parameters()])
    return torch.tensor([
        (reference_meta_loss(model, theta + h * v, tasks, steps, lr) - reference_meta_loss(model, theta - h * v, tasks, steps, lr)) / (2 * h)
        for v in directions
    ], dtype=torch.float64)  # fmt: skip


def random_directions(model, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    size = sum(p.numel() for p in model.parameters())
    return torch.randn(n, size, generator=g, dtype=torch.float64)


def flat(grads: dict) -> torch.Tensor:
    return torch.cat([g.flatten() for g in grads.values()])


def blob_dataset(num_classes=12, per_class=12, size=28, noise=0.15, seed=0) -> ImageClassDataset:
    """An easy dataset: each class is a fixed pattern of 3 bright Gaussian blobs, each image
    that pattern shifted by up to a pixel, plus noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images, targets = [], []
    for c in range(num_classes):
        centres = torch.randint(4, size - 4, (3, 2), generator=g)
        for _ in range(per_class):
            shift = torch.randint(-1, 2, (2,), generator=g)
            img = torch.zeros(size, size)
            for cy, cx in centres + shift:
                img += torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)
            img = (img.clamp(0, 1) + noise * torch.randn(size, size, generator=g)).clamp(0, 1)
            images.append((img * 255).to(torch.uint8)[None])
            targets.append(c)
    return ImageClassDataset(torch.stack(images), torch.tensor(targets), [f"c{i}" for i in range(num_classes)], ["g"] * num_classes, name="blobs")


# ---------------------------------------------------------------------------------------
# The meta-gradient is right
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [1, 3])
def test_maml_meta_gradient_matches_finite_differences(steps):
    model, tasks = tiny_mlp(), mlp_tasks()
    result = meta_gradient(model, tasks, inner_steps=steps, inner_lr=0.5)
    directions = random_directions(model)
    fd = finite_differences(model, tasks, steps, 0.5, directions)
    torch.testing.assert_close(directions @ flat(result.grads), fd, rtol=1e-6, atol=1e-9)
    # and coordinate by coordinate for a few weights of each layer
    grads, names = flat(result.grads), [n for n, _ in model.named_parameters()]
    offsets = torch.cumsum(torch.tensor([0] + [p.numel() for p in model.parameters()]), 0)
    picks = torch.stack([offsets[i] for i in range(len(names))])  # the first entry of every tensor
    unit = torch.zeros(len(picks), grads.numel(), dtype=torch.float64)
    unit[torch.arange(len(picks)), picks] = 1.0
    torch.testing.assert_close(grads[picks], finite_differences(model, tasks, steps, 0.5, unit), rtol=1e-6, atol=1e-9)
    assert result.loss == pytest.approx(reference_meta_loss(model, torch.cat([p.detach().flatten() for p in model.parameters()]), tasks, steps, 0.5))


def conv4_by_hand(x, w):
    """Conv-4 + head as a function of a list of weights: the tutorial way, no functional_call."""
    for i in range(4):
        cw, cb, bw, bb = w[4 * i : 4 * i + 4]
        x = F.max_pool2d(F.relu(F.batch_norm(F.conv2d(x, cw, cb, padding=1), None, None, bw, bb, training=True)), 2)
    return F.linear(x.flatten(1), w[16], w[17])


@pytest.mark.parametrize("steps", [1, 2])
def test_maml_meta_gradient_on_conv4_matches_naive_autograd(steps):
    torch.manual_seed(0)
    # float32: float64 convolutions take a slow path on CPU (6x slower here); the two
    # implementations run the same operations, so they agree to float32 rounding
    model = conv4_classifier(5, (1, 16, 16), hidden=8, out_channels=8, track_running_stats=False)
    tasks = image_tasks(T=2)
    lr = 0.3
    result = meta_gradient(model, tasks, inner_steps=steps, inner_lr=lr)

    # the naive implementation: clone the weights, loop, create_graph=True, sum, backward
    theta = [p.detach().clone().requires_grad_() for p in model.parameters()]
    sx, sy, qx, qy = tasks
    meta_loss = 0.0
    for t in range(2):
        fast = theta
        for _ in range(steps):
            g = torch.autograd.grad(F.cross_entropy(conv4_by_hand(sx[t], fast), sy[t]), fast, create_graph=True)
            fast = [w - lr * gi for w, gi in zip(fast, g)]
        meta_loss = meta_loss + F.cross_entropy(conv4_by_hand(qx[t], fast), qy[t]) / 2
    expected = torch.autograd.grad(meta_loss, theta)
    for (name, got), want in zip(result.grads.items(), expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6, msg=name)


class Quadratic(nn.Module):
    """``L(θ) = ½ θᵀAθ − bᵀθ`` with ``[A | b]`` given as the input: the loss *is* the output."""

    def __init__(self, theta):
        super().__init__()
        self.theta = nn.Parameter(theta.clone())

    def forward(self, ab):
        A, b = ab[:, :-1], ab[:, -1]
        return 0.5 * self.theta @ A @ self.theta - b @ self.theta


def test_first_order_maml_drops_exactly_the_second_order_term():
    g = torch.Generator().manual_seed(0)
    d, alpha = 4, 0.1

    def spd():
        m = torch.randn(d, d, generator=g, dtype=torch.float64)
        return m @ m.T / d + torch.eye(d, dtype=torch.float64)

    A_s, A_q = spd(), spd()
    b_s, b_q = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    theta = torch.randn(d, generator=g, dtype=torch.float64)
    model = Quadratic(theta)
    tasks = (torch.cat([A_s, b_s[:, None]], 1)[None], torch.zeros(1, 1), torch.cat([A_q, b_q[:, None]], 1)[None], torch.zeros(1, 1))
    loss = lambda out, _: out  # noqa: E731 - the model's output is the loss

    theta_prime = theta - alpha * (A_s @ theta - b_s)
    query_grad = A_q @ theta_prime - b_q  # ∇L_q(θ')
    maml_analytic = (torch.eye(d, dtype=torch.float64) - alpha * A_s) @ query_grad
    maml = meta_gradient(model, tasks, inner_steps=1, inner_lr=alpha, loss_fn=loss).grads["theta"]
    fomaml = meta_gradient(model, tasks, inner_steps=1, inner_lr=alpha, loss_fn=loss, first_order=True).grads["theta"]
    torch.testing.assert_close(maml, maml_analytic)
    torch.testing.assert_close(fomaml, query_grad)
    torch.testing.assert_close(maml - fomaml, -alpha * A_s @ query_grad)  # the second-order term
    assert (maml - fomaml).abs().max() > 1e-2  # and it is not negligible here


# ---------------------------------------------------------------------------------------
# Reptile and Meta-SGD
# ---------------------------------------------------------------------------------------
def test_reptile_one_sgd_step_matches_closed_form():
    model = tiny_mlp()
    sx, sy, _, _ = mlp_tasks(T=3)
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    alpha, eps = 0.3, 0.5
    adapted = [inner_train(model, theta, {}, sx[t], sy[t], steps=1, lr=alpha, optimizer="sgd") for t in range(3)]
    grads = []
    for t in range(3):
        loss = F.cross_entropy(model(sx[t]), sy[t])
        grads.append(dict(zip(theta, torch.autograd.grad(loss, list(model.parameters())))))
    serial = reptile_update(theta, adapted[:1], eps)  # one task: θ − ε α ∇L(θ)
    batched = reptile_update(theta, adapted, eps)  # average of the task updates
    for n in theta:
        torch.testing.assert_close(serial[n], theta[n] - eps * alpha * grads[0][n])
        torch.testing.assert_close(batched[n], theta[n] - eps * alpha * sum(g[n] for g in grads) / 3)
    for n, p in model.named_parameters():  # the module itself was never touched
        torch.testing.assert_close(p.detach(), theta[n])


def test_reptile_outer_step_updates_the_module_by_the_closed_form():
    torch.manual_seed(0)
    model = Reptile(n_way=5, image_size=16, hidden=4, inner_steps=1, inner_lr=0.1, inner_batch=None, inner_optimizer="sgd")
    sx, sy, _, _ = image_tasks(T=1)
    theta = {n: p.detach().clone() for n, p in model.net.named_parameters()}
    grads = torch.autograd.grad(F.cross_entropy(model.net(sx[0]), sy[0]), list(model.net.parameters()))
    model.outer_step([(sx[0], sy[0])], step_size=0.5)
    for (n, p), g in zip(model.net.named_parameters(), grads):
        torch.testing.assert_close(p.detach(), theta[n] - 0.5 * 0.1 * g)


def test_metasgd_learning_rates_get_gradients_and_change():
    torch.manual_seed(0)
    model = MetaSGD(n_way=5, image_size=16, hidden=4, lr_init=(0.05, 0.1))
    tasks = image_tasks(T=2)
    result = model.meta_gradient(tasks)
    assert result.lr_grads is not None and set(result.lr_grads) == set(result.grads)
    # every learning rate gets a gradient, except those of the conv biases: BatchNorm
    # subtracts the mean right after the convolution, so a conv bias changes nothing
    for name, g in result.lr_grads.items():
        is_conv_bias = name.startswith("backbone") and name.endswith("0.bias")
        assert (g.abs().max() < 1e-8) == is_conv_bias, name
    before = {k: v.detach().clone() for k, v in model.lrs.items()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model._apply_meta_gradient(result)
    opt.step()
    changed = {k for k, v in model.lrs.items() if not torch.equal(before[k], v)}
    assert changed >= {k.replace(".", "/") for k, g in result.lr_grads.items() if g.abs().max() > 1e-8}
    rows = learning_rate_summary(model)
    assert [r["name"] for r in rows] == [n for n, _ in model.net.named_parameters()]
    assert all(0.04 < r["mean"] < 0.11 and r["std"] >= 0 for r in rows)


def test_metasgd_learned_rates_match_finite_differences():
    """d meta-loss / d α by the library equals a finite difference on one entry of α."""
    torch.manual_seed(0)
    model, tasks = tiny_mlp(), mlp_tasks()
    lrs = {n: torch.full_like(p, 0.5, requires_grad=True) for n, p in model.named_parameters()}
    result = meta_gradient(model, tasks, inner_steps=1, inner_lr=lrs)
    name, h = "0.weight", 1e-6

    def loss_at(delta):
        shifted = {n: a.detach().clone() for n, a in lrs.items()}
        shifted[name][1, 2] += delta
        return meta_gradient(model, tasks, inner_steps=1, inner_lr=shifted).loss

    fd = (loss_at(h) - loss_at(-h)) / (2 * h)
    assert result.lr_grads[name][1, 2].item() == pytest.approx(fd, rel=1e-5, abs=1e-9)


# ---------------------------------------------------------------------------------------
# The classic mistakes give wrong gradients; the library does not make them
# ---------------------------------------------------------------------------------------
def test_mistake_in_place_update_through_data_loses_the_second_order_path():
    model, tasks = tiny_mlp(), mlp_tasks(T=1)
    sx, sy, qx, qy = (t[0] for t in tasks)
    directions = random_directions(model)
    fd = finite_differences(model, tasks, 1, 0.5, directions)

    buggy = copy.deepcopy(model)
    loss = F.cross_entropy(buggy(sx), sy)
    grads = torch.autograd.grad(loss, list(buggy.parameters()), create_graph=True)
    for p, g in zip(buggy.parameters(), grads):
        p.data -= 0.5 * g  # the mistake: an in-place write that autograd never sees
    wrong = torch.cat([g.flatten() for g in torch.autograd.grad(F.cross_entropy(buggy(qx), qy), list(buggy.parameters()))])

    right = flat(meta_gradient(model, tasks, inner_steps=1, inner_lr=0.5).grads)
    fomaml = flat(meta_gradient(model, tasks, inner_steps=1, inner_lr=0.5, first_order=True).grads)
    torch.testing.assert_close(directions @ right, fd, rtol=1e-6, atol=1e-9)
    assert (directions @ wrong - fd).abs().max() > 1e-3  # wrong...
    torch.testing.assert_close(wrong, fomaml)  # ...it silently computed first-order MAML
    for p, q in zip(model.parameters(), buggy.parameters()):  # and it overwrote θ
        assert not torch.equal(p, q)


def test_mistake_spent_parameters_generator_gives_no_update():
    model, tasks = tiny_mlp(), mlp_tasks(T=1)
    sx, sy, qx, qy = (t[0] for t in tasks)
    params = model.parameters()  # a generator
    grads = torch.autograd.grad(F.cross_entropy(model(sx), sy), params, create_graph=True)  # consumes it
    updated = [p - 0.5 * g for p, g in zip(params, grads)]  # the mistake: second pass is empty
    assert updated == []
    names = [n for n, _ in model.named_parameters()]
    adapted_wrong = dict(zip(names, updated))  # {}: functional_call falls back to θ itself
    wrong = torch.autograd.grad(F.cross_entropy(functional_forward(model, adapted_wrong, {}, qx), qy), list(model.parameters()))
    plain = torch.autograd.grad(F.cross_entropy(model(qx), qy), list(model.parameters()))
    for w, p in zip(wrong, plain):  # no adaptation happened: the "meta-gradient" is ∇L_q(θ)
        torch.testing.assert_close(w, p)

    # the library keeps a dict, usable any number of times, and really adapts
    adapted = adapt(model, named_params(model), {}, sx, sy, steps=1, lr=0.5)
    assert set(adapted) == set(names)
    assert all(not torch.equal(adapted[n], p) for n, p in model.named_parameters())
    right = flat(meta_gradient(model, tasks, inner_steps=1, inner_lr=0.5).grads)
    assert (right - torch.cat([p.flatten() for p in plain])).abs().max() > 1e-3


def test_mistake_forgetting_create_graph_gives_fomaml_not_maml():
    model, tasks = tiny_mlp(), mlp_tasks(T=1)
    sx, sy, qx, qy = (t[0] for t in tasks)
    params = named_params(model)
    grads = torch.autograd.grad(F.cross_entropy(model(sx), sy), list(params.values()))  # no create_graph
    fast = {n: p - 0.5 * g for (n, p), g in zip(params.items(), grads)}
    forgot = torch.autograd.grad(F.cross_entropy(functional_forward(model, fast, {}, qx), qy), list(params.values()))
    forgot = torch.cat([g.flatten() for g in forgot])

    maml = flat(meta_gradient(model, tasks, inner_steps=1, inner_lr=0.5).grads)
    fomaml = flat(meta_gradient(model, tasks, inner_steps=1, inner_lr=0.5, first_order=True).grads)
    torch.testing.assert_close(forgot, fomaml)
    directions = random_directions(model)
    torch.testing.assert_close(directions @ maml, finite_differences(model, tasks, 1, 0.5, directions), rtol=1e-6, atol=1e-9)
    assert (forgot - maml).abs().max() > 1e-3


def test_mistake_batchnorm_running_statistics_leak_between_tasks():
    torch.manual_seed(0)
    model = conv4_classifier(5, (1, 16, 16), hidden=4, out_channels=4, track_running_stats=True)
    sx, sy, qx, qy = image_tasks(T=2, seed=3)
    sx[1] = sx[1] * 3 + 1  # a task with very different statistics
    initial = {n: b.clone() for n, b in model.named_buffers()}

    # the mistake: running the module itself in train mode writes its buffers ...
    def naive_then_predict(order):
        m = copy.deepcopy(model).train()
        for t in order:
            m(sx[t])
        return m.eval()(qx[0])

    leaky = copy.deepcopy(model).train()
    leaky(sx[1])
    assert not torch.equal(leaky.backbone.encoder[0][1].running_mean, initial["backbone.encoder.0.1.running_mean"])
    assert not torch.equal(naive_then_predict([0]), naive_then_predict([1, 0]))  # ... so task 1 changes task 0's predictions

    # the library works on copies of the buffers: the module's stay as they were ...
    model.train()
    buffers = dict(model.named_buffers())
    adapt(model, named_params(model), buffers, sx[1], sy[1], steps=2, lr=0.1)
    for n, b in model.named_buffers():
        assert torch.equal(b, initial[n]), n
    # ... and the meta-gradient does not depend on the order of the tasks (eval mode uses them)
    model.eval()
    forward = meta_gradient(model, (sx, sy, qx, qy), inner_steps=1, inner_lr=0.1)
    backward = meta_gradient(model, tuple(t.flip(0) for t in (sx, sy, qx, qy)), inner_steps=1, inner_lr=0.1)
    torch.testing.assert_close(flat(forward.grads), flat(backward.grads))
    for n, b in model.named_buffers():
        assert torch.equal(b, initial[n]), n


def test_tied_weights_are_substituted_under_every_name():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = nn.Linear(3, 3)
            self.second = self.first  # the same layer twice: one tensor, two names

        def forward(self, x):
            return self.second(torch.tanh(self.first(x)))

    model, plain = Tied().double(), tiny_mlp()
    assert has_tied_weights(model) and not has_tied_weights(plain)
    x = torch.randn(4, 3, dtype=torch.float64)
    w, b = torch.randn(3, 3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    out = functional_forward(model, {"first.weight": w, "first.bias": b}, {}, x)
    torch.testing.assert_close(out, F.linear(torch.tanh(F.linear(x, w, b)), w, b))


# ---------------------------------------------------------------------------------------
# vmap over tasks equals the loop
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("first_order", [False, True])
def test_vmap_equals_loop(first_order):
    torch.manual_seed(0)
    model = conv4_classifier(5, (1, 16, 16), hidden=4, out_channels=4, track_running_stats=False)
    tasks = image_tasks(T=3)
    loop = meta_gradient(model, tasks, inner_steps=2, inner_lr=0.3, first_order=first_order, vectorize=False)
    vmap = meta_gradient(model, tasks, inner_steps=2, inner_lr=0.3, first_order=first_order, vectorize=True)
    torch.testing.assert_close(flat(vmap.grads), flat(loop.grads), rtol=1e-4, atol=1e-5)
    assert vmap.loss == pytest.approx(loop.loss, rel=1e-5)
    assert vmap.accuracy == pytest.approx(loop.accuracy)


def test_vmap_equals_loop_for_metasgd_anil_and_running_statistics():
    torch.manual_seed(0)
    tasks = image_tasks(T=2)
    for model in (MetaSGD(n_way=5, image_size=16, hidden=4), MAML(n_way=5, image_size=16, hidden=4, anil=True, inner_steps=2)):
        loop, vmap = model.meta_gradient(tasks, vectorize=False), model.meta_gradient(tasks, vectorize=True)
        torch.testing.assert_close(flat(vmap.grads), flat(loop.grads), rtol=1e-4, atol=1e-5)
        if loop.lr_grads is not None:
            torch.testing.assert_close(flat(vmap.lr_grads), flat(loop.lr_grads), rtol=1e-4, atol=1e-6)
    tracked = conv4_classifier(5, (1, 16, 16), hidden=4, out_channels=4, track_running_stats=True)
    before = {n: b.clone() for n, b in tracked.named_buffers()}
    loop = meta_gradient(tracked, tasks, inner_steps=2, inner_lr=0.3, vectorize=False)
    vmap = meta_gradient(tracked, tasks, inner_steps=2, inner_lr=0.3, vectorize=True)
    torch.testing.assert_close(flat(vmap.grads), flat(loop.grads), rtol=1e-4, atol=1e-5)
    assert all(torch.equal(b, before[n]) for n, b in tracked.named_buffers())


def test_anil_adapts_only_the_head():
    torch.manual_seed(0)
    model = MAML(n_way=5, image_size=16, hidden=4, anil=True)
    sx, sy, _, _ = image_tasks(T=1)
    adapted = model.adapt(sx[0], sy[0], training=True)
    for n, p in model.net.named_parameters():
        assert torch.equal(adapted[n], p) != n.startswith("head."), n


def test_vectorize_auto_loops_on_cpu():
    assert resolve_vectorize("auto", torch.device("cpu")) is False
    assert resolve_vectorize("auto", torch.device("cuda")) is True
    assert resolve_vectorize("auto", torch.device("cuda"), {"bn.running_mean": torch.zeros(1)}) is False
    assert resolve_vectorize(True, torch.device("cpu")) is True
    with pytest.raises(ValueError):
        resolve_vectorize("yes", torch.device("cpu"))


# ---------------------------------------------------------------------------------------
# The few-shot protocol
# ---------------------------------------------------------------------------------------
def small(cls, **kw):
    torch.manual_seed(0)
    defaults = {"n_way": 5, "image_size": 16, "hidden": 4, "meta_batch": 2}
    if cls is not Reptile:
        defaults["test_inner_steps"] = 2
    return cls(**{**defaults, **kw})


ALL = [MAML, FOMAML, MetaSGD, Reptile]


@pytest.mark.parametrize("cls", ALL)
def test_forward_shapes_and_predict(cls):
    model = small(cls).eval()
    sx, sy, qx, _ = (t[0] for t in image_tasks(T=1, q=3))
    assert model(sx, sy, qx).shape == (15, 5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    logits = model.predict(sx, sy, qx, chunk=4)
    assert logits.shape == (15, 5) and not logits.requires_grad
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # predicting adapts a copy


def test_maml_forward_keeps_the_graph_for_a_meta_gradient():
    model = small(MAML).train()
    sx, sy, qx, qy = image_tasks(T=1)
    F.cross_entropy(model(sx[0], sy[0], qx[0]), qy[0]).backward()
    expected = model.meta_gradient((sx, sy, qx, qy)).grads
    for n, p in model.net.named_parameters():
        torch.testing.assert_close(p.grad, expected[n], msg=n)


@pytest.mark.parametrize("cls", ALL)
def test_save_load_round_trip(cls, tmp_path):
    kwargs = {"lr_init": (0.01, 0.2)} if cls is MetaSGD else {}
    model = small(cls, **kwargs).eval()
    sx, sy, qx, _ = (t[0] for t in image_tasks(T=1))
    path = model.save(tmp_path / "model.pt")
    loaded = type(model).load(path)
    assert type(loaded) is cls and loaded._config == model._config
    torch.testing.assert_close(loaded.predict(sx, sy, qx), model.predict(sx, sy, qx))


@pytest.fixture(scope="module")
def blobs():
    return blob_dataset()


@pytest.mark.parametrize("cls", [MAML, Reptile])
def test_meta_train_is_deterministic_under_a_seed(cls, blobs):
    runs = []
    for _ in range(2):
        model = small(cls, image_size=28)
        history = model.meta_train(blobs, n_way=5, k_shot=1, q_query=2, steps=2, seed=3, device="cpu", progress=False)
        runs.append((history["loss"], [p.detach().clone() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


LEARNERS = {
    "maml": (MAML, {"inner_lr": 0.4, "test_inner_steps": 3, "meta_batch": 4}, {"steps": 40, "lr": 1e-2}),
    "fomaml": (FOMAML, {"inner_lr": 0.1, "test_inner_steps": 3, "meta_batch": 4}, {"steps": 40, "lr": 1e-2}),
    "reptile": (Reptile, {"inner_steps": 3, "inner_lr": 1e-2, "inner_batch": None, "meta_batch": 2, "test_inner_steps": 5}, {"steps": 15, "lr": 1.0}),
}


@pytest.mark.parametrize("name", LEARNERS)
def test_meta_training_learns_an_easy_dataset(name, blobs):
    """On 3-blob patterns, a few dozen outer steps lower the loss and lift the accuracy
    after adaptation well above where it started and far above the 20% of chance."""
    cls, kwargs, train = LEARNERS[name]
    torch.manual_seed(0)
    model = cls(n_way=5, image_size=28, hidden=8, **kwargs)
    score = lambda: evaluate(model.predict, blobs, 5, 1, 3, 20, seed=1, device="cpu", progress=False).mean  # noqa: E731
    before = score()
    history = model.meta_train(blobs, n_way=5, k_shot=1, q_query=3, seed=0, device="cpu", progress=False, **train)
    losses, n = history["loss"], len(history["loss"]) // 4
    assert sum(losses[-n:]) < sum(losses[:n])
    after = score()
    assert after > 0.75 and after > before + 0.15, (before, after)


# ---------------------------------------------------------------------------------------
# Reptile's outer step size ε: decays from ``lr`` to ``final_step_size``
# ---------------------------------------------------------------------------------------
class FakeClock:
    """A ``time`` stand-in whose clock moves only when :meth:`advance` is called."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


def spy_on_step_sizes(model, clock=None):
    """Record the ε each outer step actually receives (advancing ``clock`` by 1 s per step)."""
    used, original = [], model.outer_step

    def spy(tasks, step_size, generator=None):
        used.append(step_size)
        out = original(tasks, step_size, generator)
        if clock is not None:
            clock.advance(1.0)
        return out

    model.outer_step = spy  # an instance attribute shadows the method meta_train calls
    return used


def tiny_reptile(**kw):
    torch.manual_seed(0)
    return Reptile(**{"n_way": 5, "image_size": 28, "hidden": 4, "inner_steps": 1, "inner_batch": None, "meta_batch": 1,
                      "test_inner_steps": 1, "test_inner_batch": None, **kw})  # fmt: skip


@pytest.mark.parametrize("lr,final", [(1.0, 0.0), (0.5, 0.2)])
def test_reptile_step_size_decays_linearly_over_the_steps(blobs, lr, final):
    model = tiny_reptile(final_step_size=final)
    used = spy_on_step_sizes(model)
    history = model.meta_train(blobs, k_shot=1, q_query=1, steps=10, lr=lr, seed=0, device="cpu", progress=False)
    expected = [lr + (final - lr) * i / 10 for i in range(10)]  # ε_i = lr at step 0, then one tenth closer each step
    assert used == pytest.approx(expected)
    assert all(b < a for a, b in zip(used, used[1:])), used  # decreasing ...
    assert used[0] == pytest.approx(lr) and abs(used[-1] - final) <= 0.1 * (lr - final) + 1e-12  # ... to near the end value
    assert history["step_size"] == pytest.approx(used)  # and the log says what was used


def test_reptile_step_size_decays_over_the_time_budget(blobs, monkeypatch):
    """With a budget of 8 s, 1 s per outer step and far more steps allowed, the seconds set
    the schedule: ε_i = 1 - i / 8, and training stops after 8 steps."""
    import mlcourse.optim.reptile as reptile_module
    import mlcourse.train as train_module

    clock = FakeClock()
    monkeypatch.setattr(reptile_module, "time", clock)
    monkeypatch.setattr(train_module, "time", clock)
    model = tiny_reptile()
    used = spy_on_step_sizes(model, clock)
    history = model.meta_train(blobs, k_shot=1, q_query=1, steps=1000, lr=1.0, time_budget=8.0, seed=0, device="cpu", progress=False)
    assert len(history["loss"]) == 8
    assert used == pytest.approx([1 - i / 8 for i in range(8)])
    assert all(b < a for a, b in zip(used, used[1:])) and used[-1] <= 0.125 + 1e-12

    # whichever ends first: 4 steps within a budget of 100 s decay over the 4 steps
    clock.now = 0.0
    model = tiny_reptile()
    used = spy_on_step_sizes(model, clock)
    model.meta_train(blobs, k_shot=1, q_query=1, steps=4, lr=1.0, time_budget=100.0, seed=0, device="cpu", progress=False)
    assert used == pytest.approx([1.0, 0.75, 0.5, 0.25])


# ---------------------------------------------------------------------------------------
# Prediction uses the *test* inner loop: test_inner_steps steps of test_inner_lr
# ---------------------------------------------------------------------------------------
def hand_adapted_logits(net, sx, sy, qx, steps, lr):
    """An independent inner loop: ``steps`` steps of ``θ ← θ − lr ∇CE(θ)`` on the support set
    (``lr`` a number or a dict of per-weight tensors), then the query logits."""
    from torch.func import functional_call

    theta = {n: p.detach().clone() for n, p in net.named_parameters()}
    for _ in range(steps):
        theta = {n: t.requires_grad_() for n, t in theta.items()}
        loss = F.cross_entropy(functional_call(net, theta, (sx,)), sy)
        grads = torch.autograd.grad(loss, list(theta.values()))
        theta = {n: (t - (lr[n] if isinstance(lr, dict) else lr) * g).detach() for (n, t), g in zip(theta.items(), grads)}
    with torch.no_grad():
        return functional_call(net, theta, (qx,))


def count_net_calls(model):
    """A forward hook on the network: one call per inner step on the support set, one for the queries."""
    calls = []
    net = model.net
    net.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    return calls


@pytest.mark.parametrize("test_steps", [1, 4])
def test_maml_predicts_with_test_inner_steps_and_lr(test_steps):
    torch.manual_seed(0)
    model = MAML(n_way=5, image_size=16, hidden=4, inner_steps=2, inner_lr=0.4, test_inner_steps=test_steps, test_inner_lr=0.3)
    sx, sy, qx, _ = (t[0] for t in image_tasks(T=1, q=3))
    calls = count_net_calls(model)
    logits = model.predict(sx, sy, qx)
    assert calls == [len(sx)] * test_steps + [len(qx)]  # exactly test_inner_steps inner steps
    expected = hand_adapted_logits(model.net, sx, sy, qx, test_steps, 0.3)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    # the training settings (2 steps of 0.4) would give other predictions
    assert (hand_adapted_logits(model.net, sx, sy, qx, 2, 0.4) - logits).abs().max() > 1e-3


def test_maml_test_inner_steps_change_predictions():
    sx, sy, qx, _ = (t[0] for t in image_tasks(T=1, q=3))
    few, many = (small(MAML, test_inner_steps=k, inner_lr=0.3).predict(sx, sy, qx) for k in (1, 10))
    assert (few - many).abs().max() > 1e-2


@pytest.mark.parametrize("test_steps", [1, 3])
def test_metasgd_predicts_with_test_inner_steps_and_its_learned_rates(test_steps):
    torch.manual_seed(0)
    model = MetaSGD(n_way=5, image_size=16, hidden=4, inner_steps=2, lr_init=(0.05, 0.3), test_inner_steps=test_steps)
    sx, sy, qx, _ = (t[0] for t in image_tasks(T=1, q=3))
    calls = count_net_calls(model)
    logits = model.predict(sx, sy, qx)
    assert calls == [len(sx)] * test_steps + [len(qx)]
    rates = {n: a.detach() for n, a in model.inner_lr_for(False).items()}
    torch.testing.assert_close(logits, hand_adapted_logits(model.net, sx, sy, qx, test_steps, rates), rtol=1e-4, atol=1e-5)
    assert (hand_adapted_logits(model.net, sx, sy, qx, 2, rates) - logits).abs().max() > 1e-3


@pytest.mark.parametrize("test_steps", [0, 3])
def test_reptile_predicts_with_test_inner_steps(test_steps):
    torch.manual_seed(0)
    model = Reptile(n_way=5, image_size=16, hidden=4, inner_steps=2, test_inner_steps=test_steps, test_inner_batch=None)
    sx, sy, qx, _ = (t[0] for t in image_tasks(T=1, q=3))
    calls = count_net_calls(model)
    model.predict(sx, sy, qx)
    assert calls == [len(sx)] * test_steps + [len(qx)]


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------
def test_errors_raise_value_error(blobs):
    model = small(MAML)
    sx, sy, qx, qy = image_tasks(T=1, n=3)
    with pytest.raises(ValueError, match="5-way head"):
        model(sx[0], sy[0], qx[0])  # 3-way task on a 5-way model
    with pytest.raises(ValueError, match="no gaps"):
        model(sx[0], sy[0] + 1, qx[0])  # labels 1..3: class 0 has no image
    with pytest.raises(ValueError, match="5-way head"):
        model.meta_train(blobs, n_way=3, steps=1, progress=False, device="cpu")
    with pytest.raises(ValueError):
        small(Reptile)(sx[0], sy[0], qx[0])
    for bad in ({"n_way": 1}, {"inner_steps": -1}, {"vectorize": "sometimes"}, {"inner_lr": -0.1}, {"meta_batch": 0}):
        with pytest.raises(ValueError):
            small(MAML, **bad)
    with pytest.raises(ValueError):
        small(MetaSGD, lr_init=(0.2, 0.1))
    with pytest.raises(ValueError):
        small(Reptile, inner_optimizer="rmsprop")
    net, (sx, sy, qx, qy) = tiny_mlp(), mlp_tasks()
    params = named_params(net)
    with pytest.raises(ValueError, match="learning rates"):
        adapt(net, params, {}, sx[0], sy[0], steps=3, lr=[0.1, 0.1])
    with pytest.raises(ValueError, match="not parameters"):
        adapt(net, params, {}, sx[0], sy[0], steps=1, lr=0.1, trainable=["head.weight"])
    with pytest.raises(ValueError, match="steps"):
        adapt(net, params, {}, sx[0], sy[0], steps=-1, lr=0.1)
    with pytest.raises(ValueError, match="number of tasks"):
        meta_gradient(net, (sx, sy, qx[:1], qy), inner_steps=1, inner_lr=0.1)


def test_meta_sgd_meta_gradient_is_the_transposed_jacobian_product():
    """Chapter 06's formula: ∇_θ L^q(θ') = (I − H diag(α)) ∇L^q(θ'), with θ' = θ − diag(α) ∇L^s(θ)."""
    torch.manual_seed(0)
    a = torch.randn(4, 4, dtype=torch.float64)
    h = a @ a.T + torch.eye(4, dtype=torch.float64)  # the support loss's Hessian (a quadratic loss)
    b, c = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    alpha = torch.tensor([0.1, 0.5, 0.02, 0.3], dtype=torch.float64)
    theta = torch.randn(4, dtype=torch.float64, requires_grad=True)
    support_loss = lambda t: 0.5 * t @ h @ t + b @ t  # noqa: E731
    query_loss = lambda t: ((t - c) ** 2).sum()  # noqa: E731
    (g_s,) = torch.autograd.grad(support_loss(theta), theta, create_graph=True)
    adapted = theta - alpha * g_s
    (autograd,) = torch.autograd.grad(query_loss(adapted), theta)
    g_q = 2 * (adapted.detach() - c)
    right = (torch.eye(4, dtype=torch.float64) - h @ torch.diag(alpha)) @ g_q
    wrong = (torch.eye(4, dtype=torch.float64) - torch.diag(alpha) @ h) @ g_q
    assert torch.allclose(autograd, right) and not torch.allclose(autograd, wrong, atol=1e-3)
