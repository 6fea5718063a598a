"""Linear CKA and the per-layer measurement of what MAML's inner loop changes (chapter 06)."""

import pytest
import torch

from mlcourse.data.episodes import Episode
from mlcourse.optim import MAML
from mlcourse.optim.adaptation_change import linear_cka, measure_adaptation_change


def naive_cka(x, y):
    """CKA through HSIC with explicit linear kernels and the centring matrix H = I - 11^T / n."""
    x, y = x.flatten(1).double(), y.flatten(1).double()
    n = len(x)
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    k, l = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    return ((k * l).sum() / ((k * k).sum().sqrt() * (l * l).sum().sqrt())).item()


def test_linear_cka_matches_the_kernel_definition():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 7, generator=g), torch.randn(20, 3, 2, 2, generator=g)
    assert linear_cka(x, y) == pytest.approx(naive_cka(x, y), rel=1e-10)


def test_linear_cka_invariances():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(30, 10, generator=g)
    q = torch.linalg.qr(torch.randn(10, 10, generator=g))[0]
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 5 * x @ q + 2.0) == pytest.approx(1.0)  # rotation, uniform scale, shift
    assert linear_cka(x, y := torch.randn(30, 10, generator=g)) == pytest.approx(linear_cka(y, x))
    # a non-uniform scaling is not an invariance
    assert linear_cka(x, x * torch.tensor([100.0] + [1.0] * 9)) < 0.99


def test_linear_cka_bad_input():
    with pytest.raises(ValueError, match="same n"):
        linear_cka(torch.zeros(4, 2), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="at least 2"):
        linear_cka(torch.ones(1, 2), torch.ones(1, 2))
    with pytest.raises(ValueError, match="constant"):
        linear_cka(torch.ones(4, 2), torch.randn(4, 2))
    with pytest.raises(TypeError, match="tensors"):
        linear_cka([[1.0, 2.0]], torch.zeros(1, 2))


def episodes(n=3, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        y = torch.arange(5)
        out.append(Episode(torch.rand(5, 1, size, size, generator=g), y, torch.rand(10, 1, size, size, generator=g),
                           y.repeat(2), torch.arange(5)))
    return out


def small_maml(**kw):
    torch.manual_seed(0)
    return MAML(n_way=5, image_size=16, hidden=4, test_inner_steps=3, test_inner_lr=0.4, **kw)


def layers_of(model):
    return {"block 1": model.net.backbone.encoder[0], "head": model.net.head}


def test_measure_adaptation_change_shapes_determinism_and_naive_loop():
    model = small_maml()
    a = measure_adaptation_change(model, episodes(), layers_of(model))
    b = measure_adaptation_change(model, episodes(), layers_of(model))
    assert a == b and a.episodes == 3
    assert set(a.cka) == {"block 1", "head"}
    assert all(0 <= v <= 1 + 1e-9 for v in a.cka.values())
    assert "head.weight" in a.weight_change and a.weight_change["head.weight"] > 0
    # the hooks are gone afterwards
    assert not model.net.head._forward_hooks and not model.net.backbone.encoder[0]._forward_hooks
    # a naive loop for the head's CKA: logits with θ and with θ'
    from mlcourse.optim.inner_loop import functional_forward, named_params

    naive = []
    for ep in episodes():
        theta = {n: p.detach() for n, p in named_params(model.net).items()}
        adapted = model.adapt(ep.support_x, ep.support_y, training=False, keep_graph=False)
        with torch.no_grad():
            naive.append(naive_cka(functional_forward(model.net, theta, {}, ep.query_x),
                                   functional_forward(model.net, adapted, {}, ep.query_x)))
    assert a.cka["head"] == pytest.approx(sum(naive) / 3, rel=1e-9)


def test_anil_leaves_the_body_unchanged():
    model = small_maml(anil=True)
    m = measure_adaptation_change(model, episodes(2), layers_of(model))
    assert m.cka["block 1"] == pytest.approx(1.0)
    assert m.weight_change["backbone.encoder.0.0.weight"] == 0.0
    assert m.weight_change["head.weight"] > 0


def test_measure_adaptation_change_bad_input():
    model = small_maml()
    with pytest.raises(TypeError, match="adapt"):
        measure_adaptation_change(model.net, episodes(), layers_of(model))
    with pytest.raises(ValueError, match="empty"):
        measure_adaptation_change(model, episodes(), {})
    with pytest.raises(ValueError, match="not a submodule"):
        measure_adaptation_change(model, episodes(), {"stranger": torch.nn.Linear(2, 2)})
    with pytest.raises(ValueError, match="no episodes"):
        measure_adaptation_change(model, [], layers_of(model))
