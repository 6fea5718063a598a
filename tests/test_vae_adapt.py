"""Reptile-VAE: the outer update, adaptation, likelihoods, determinism, bad input."""

from __future__ import annotations

import pytest
import torch

from mlcourse.data.base import ImageClassDataset
from mlcourse.metagen import FewShotGenerator
from mlcourse.metagen.vae_adapt import ReptileVAE


def bars(n_classes: int = 6, per_class: int = 10, seed: int = 0) -> ImageClassDataset:
    """Each class: one bar at its own place; drawings shift it by a pixel or two."""
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for c in range(n_classes):
        for _ in range(per_class):
            x = torch.zeros(1, 16, 16)
            r = 2 + 2 * c + int(torch.randint(0, 2, (1,), generator=g))
            x[0, r : r + 2, 3:13] = 1.0
            images.append(x)
            targets.append(c)
    images = (torch.stack(images) * 255).to(torch.uint8)
    return ImageClassDataset(images, torch.tensor(targets), [f"bar{c}" for c in range(n_classes)], ["bars"] * n_classes, name="bars")


def small(**kw):
    return ReptileVAE(size=16, latent_dim=4, width=8, hidden=32, **kw)


def test_outer_update_is_reptile_on_the_vae_weights(monkeypatch):
    torch.manual_seed(0)
    model = small(meta_batch=2, inner_steps=1)
    theta = {n: p.detach().clone() for n, p in model.vae.named_parameters()}
    shift = {"value": 0.0}

    def fake_fit(worker, x, steps, generator):  # each task moves every weight by a known amount
        shift["value"] += 0.01
        with torch.no_grad():
            for p in worker.parameters():
                p.add_(shift["value"])

    monkeypatch.setattr(model, "_fit", fake_fit)
    model.meta_train(bars(), steps=1, lr=0.5, progress=False, device="cpu", shots=3)
    for n, p in model.vae.named_parameters():  # tasks moved by +0.01 and +0.02: mean 0.015, times eps 0.5
        assert torch.allclose(p, theta[n] + 0.0075, atol=1e-6), n


def test_training_lowers_the_loss_and_adaptation_raises_the_likelihood():
    data = bars()
    model = small(inner_steps=3, adapt_steps=10, inner_lr=3e-3)
    history = model.meta_train(data, steps=120, lr=1.0, progress=False, device="cpu", shots=4, seed=0)
    first, last = sum(history["loss"][:10]) / 10, sum(history["loss"][-10:]) / 10
    assert last < first - 10  # nats per image
    x = data.as_float(data.indices_by_class()[2][4:])
    xb = (x > 0.5).float()
    support = data.as_float(data.indices_by_class()[2][:4])
    with_support = model.conditional_log_likelihood(xb, support, k=20).mean()
    without = model.conditional_log_likelihood(xb, support[:0], k=20).mean()
    assert with_support > without


def test_generate_is_deterministic_under_a_seed_and_leaves_theta_alone():
    torch.manual_seed(0)
    model = small(adapt_steps=2)
    before = {n: p.detach().clone() for n, p in model.vae.named_parameters()}
    support = torch.rand(3, 1, 16, 16)
    a, b, c = model.generate(support, 5, seed=1), model.generate(support, 5, seed=1), model.generate(support, 5, seed=2)
    assert a.shape == (5, 1, 16, 16) and torch.equal(a, b) and not torch.equal(a, c)
    assert 0 <= a.min() and a.max() <= 1
    assert all(torch.equal(p, before[n]) for n, p in model.vae.named_parameters())


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = small(adapt_steps=1)
    model.save(tmp_path / "m.pt")
    again = FewShotGenerator.load(tmp_path / "m.pt")
    support = torch.rand(2, 1, 16, 16)
    assert isinstance(again, ReptileVAE) and torch.equal(model.generate(support, 3, seed=0), again.generate(support, 3, seed=0))


@pytest.mark.parametrize("support, message", [
    (torch.rand(0, 1, 16, 16), "empty"),
    (torch.rand(2, 1, 28, 28), "built for"),
    (torch.rand(1, 16, 16), "one image"),
])  # fmt: skip
def test_bad_support_sets_are_refused(support, message):
    with pytest.raises(ValueError, match=message):
        small().generate(support, 2)
