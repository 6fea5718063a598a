"""ProtoMAML: the prototype head equals ProtoNet; the meta-gradient (through the prototypes and the
inner steps) matches a naive implementation; it works for any N; it trains; it saves and loads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mlcourse.data.base import ImageClassDataset
from mlcourse.fewshot import FewShotClassifier
from mlcourse.optim import ProtoMAML, prototype_head


def tasks(T=2, n=5, k=2, q=2, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    sx = torch.rand(T, n * k, 1, size, size, generator=g)
    qx = torch.rand(T, n * q, 1, size, size, generator=g)
    sy = torch.arange(n).repeat_interleave(k).repeat(T, 1)
    qy = torch.arange(n).repeat_interleave(q).repeat(T, 1)
    return sx, sy, qx, qy


def small(**kwargs):
    torch.manual_seed(0)
    return ProtoMAML(n_way=5, image_size=16, hidden=8, **kwargs)


def test_the_prototype_head_is_protonet():
    torch.manual_seed(0)
    f, y, fq = torch.randn(10, 6), torch.arange(5).repeat_interleave(2), torch.randn(7, 6)
    w, b = prototype_head(f, y, 5)
    c = torch.stack([f[y == k].mean(0) for k in range(5)])
    protonet = -torch.cdist(fq, c) ** 2
    torch.testing.assert_close(F.softmax(fq @ w.t() + b, 1), F.softmax(protonet, 1))


def test_with_no_inner_step_it_predicts_as_protonet_on_its_embedding():
    model = small(test_inner_steps=0).eval()
    sx, sy, qx, _ = tasks(T=1)
    with torch.no_grad():
        logits = model(sx[0], sy[0], qx[0])
        # BatchNorm on each batch's own statistics, as in MAML: support and query embedded apart
        fs, fq = model.net.backbone(sx[0]), model.net.backbone(qx[0])
        c = torch.stack([fs[sy[0] == k].mean(0) for k in range(5)])
    torch.testing.assert_close(F.softmax(logits, 1), F.softmax(-torch.cdist(fq, c) ** 2, 1), rtol=1e-4, atol=1e-5)


def reference_meta_loss(model, body_flat, tasks, steps, lr):
    """The ProtoMAML objective written apart from the library, for finite differences: the body
    from a flat vector, the head from the prototypes, plain inner steps on (body, head) with the
    head as a variable of its own (partial derivatives), the query loss after adaptation."""
    names = [n for n, _ in model.net.named_parameters() if n.startswith("backbone.")]
    shapes = [p.shape for n, p in model.net.named_parameters() if n.startswith("backbone.")]
    body = dict(zip(names, torch.split(body_flat, [s.numel() for s in shapes])))
    body = {n: v.reshape(s) for (n, v), s in zip(body.items(), shapes)}
    call = lambda params, x: torch.func.functional_call(model.net, params, (x,))  # noqa: E731
    embed = lambda params, x: torch.func.functional_call(model.net.backbone, {n[9:]: v for n, v in params.items()}, (x,))  # noqa: E731
    sx, sy, qx, qy = tasks
    total = 0.0
    for t in range(sx.shape[0]):
        f = embed(body, sx[t])
        c = torch.stack([f[sy[t] == k].mean(0) for k in range(int(sy[t].max()) + 1)])
        params = {**body, "head.weight": 2 * c, "head.bias": -(c**2).sum(1)}
        for _ in range(steps):
            leaves = {n: v.detach().requires_grad_() for n, v in params.items()}
            with torch.enable_grad():
                grads = torch.autograd.grad(F.cross_entropy(call(leaves, sx[t]), sy[t]), list(leaves.values()))
            params = {n: v.detach() - lr * g for (n, v), g in zip(leaves.items(), grads)}
        total += F.cross_entropy(call(params, qx[t]), qy[t]).item() / sx.shape[0]
    return total


@pytest.mark.parametrize("steps, first_order", [(0, False), (1, False), (2, False), (0, True)])
def test_meta_gradient_matches_finite_differences(steps, first_order):
    model = small(inner_steps=steps, inner_lr=0.3, first_order=first_order).double()
    model.net.backbone = model.net.backbone.double()
    sx, sy, qx, qy = (t.double() if t.is_floating_point() else t for t in tasks())
    grads = model.meta_gradient((sx, sy, qx, qy)).grads
    body = [p.detach() for n, p in model.net.named_parameters() if n.startswith("backbone.")]
    theta = torch.cat([p.flatten() for p in body])
    g = torch.cat([grads[n].flatten() for n, _ in model.net.named_parameters() if n.startswith("backbone.")])
    torch.manual_seed(1)
    eps = 1e-6
    with torch.no_grad():
        for _ in range(3):
            d = torch.randn_like(theta)
            d /= d.norm()
            fd = (reference_meta_loss(model, theta + eps * d, (sx, sy, qx, qy), steps, 0.3)
                  - reference_meta_loss(model, theta - eps * d, (sx, sy, qx, qy), steps, 0.3)) / (2 * eps)
            assert (d @ g).item() == pytest.approx(fd, rel=1e-4, abs=1e-7)
    # the stored head is replaced in every task: it gets no gradient
    assert grads["head.weight"].abs().max() == 0 and grads["head.bias"].abs().max() == 0


def test_first_order_drops_the_inner_second_order_terms():
    """fo-ProtoMAML differs from ProtoMAML with inner steps, and is far from finite differences then."""
    sx, sy, qx, qy = tasks()
    second = small(inner_steps=1).meta_gradient((sx, sy, qx, qy)).grads
    first = small(inner_steps=1, first_order=True).meta_gradient((sx, sy, qx, qy)).grads
    assert any(not torch.allclose(first[n], second[n], rtol=1e-3, atol=1e-6) for n in first)


def test_any_way_at_test_time():
    model = small().eval()
    sx, sy, qx, _ = tasks(T=1, n=3)
    assert model.predict(sx[0], sy[0], qx[0]).shape == (6, 3)


def test_labels_are_a_permutation_of_the_classes():
    """Relabelling the support and query classes permutes the logits: no class slot is special."""
    model = small().eval()
    sx, sy, qx, _ = tasks(T=1)
    perm = torch.tensor([3, 0, 4, 1, 2])
    a = model.predict(sx[0], sy[0], qx[0])
    b = model.predict(sx[0], perm[sy[0]], qx[0])
    torch.testing.assert_close(b[:, perm], a, rtol=1e-3, atol=1e-3)  # float32 rounding over 10 inner steps


def test_a_class_without_support_image_is_refused():
    with pytest.raises(ValueError, match="no support image"):
        small().predict(torch.rand(2, 1, 16, 16), torch.tensor([0, 2]), torch.rand(3, 1, 16, 16))
    with pytest.raises(ValueError, match="classes \\[1\\] have none"):
        prototype_head(torch.randn(2, 4), torch.tensor([0, 2]), 3)


def blobs(num_classes=10, per_class=10, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images, targets = [], []
    for c in range(num_classes):
        centres = torch.randint(3, size - 3, (2, 2), generator=g)
        for _ in range(per_class):
            img = sum(torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 4.0) for cy, cx in centres + torch.randint(-1, 2, (2,), generator=g))
            img = (img.clamp(0, 1) + 0.1 * torch.randn(size, size, generator=g)).clamp(0, 1)
            images.append((img * 255).to(torch.uint8)[None])
            targets.append(c)
    return ImageClassDataset(torch.stack(images), torch.tensor(targets), [f"c{i}" for i in range(num_classes)], ["g"] * num_classes)


def test_meta_training_lowers_the_query_loss(tmp_path):
    model = small(meta_batch=2)
    history = model.meta_train(blobs(), k_shot=1, q_query=3, steps=40, lr=3e-3, seed=0, device="cpu", progress=False)
    loss = history["loss"]
    assert sum(loss[-8:]) / 8 < sum(loss[:8]) / 8
    path = model.save(tmp_path / "p.pt")
    loaded = FewShotClassifier.load(path)
    assert isinstance(loaded, ProtoMAML)
    sx, sy, qx, _ = tasks(T=1)
    torch.testing.assert_close(loaded.predict(sx[0], sy[0], qx[0]), model.eval().predict(sx[0], sy[0], qx[0]))
