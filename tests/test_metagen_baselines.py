"""The GAN baselines of the few-shot generation benchmark: from scratch, and pretrain-then-fine-tune."""

from __future__ import annotations

import torch

from mlcourse.data.base import ImageClassDataset
from mlcourse.metagen import FewShotGenerator
from mlcourse.metagen.baselines import PretrainedGAN, ScratchGAN


def tiny_data(n_classes: int = 4, per_class: int = 6) -> ImageClassDataset:
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(n_classes * per_class, 1, 16, 16, generator=g) > 0.7).to(torch.uint8) * 255
    return ImageClassDataset(images, torch.arange(n_classes).repeat_interleave(per_class),
                             [f"c{i}" for i in range(n_classes)], ["a"] * n_classes, name="tiny")  # fmt: skip


def test_scratch_gan_learns_nothing_before_the_support_set(tmp_path):
    torch.manual_seed(0)
    model = ScratchGAN(size=16, z_dim=8, width=8, adapt_steps=2)
    before = {n: p.clone() for n, p in model.state_dict().items()}
    history = model.meta_train(tiny_data(), steps=5, device="cpu")
    assert "loss" not in history and all(torch.equal(p, before[n]) for n, p in model.state_dict().items())
    support = torch.rand(4, 1, 16, 16)
    out = model.generate(support, 6, seed=0)
    assert out.shape == (6, 1, 16, 16) and torch.equal(out, model.generate(support, 6, seed=0))
    model.save(tmp_path / "s.pt")
    again = FewShotGenerator.load(tmp_path / "s.pt")
    assert isinstance(again, ScratchGAN) and again.adapt_steps == 2 and torch.equal(again.generate(support, 6, seed=0), out)


def test_pretrained_gan_trains_on_all_characters_then_adapts_like_figr(tmp_path):
    torch.manual_seed(0)
    model = PretrainedGAN(size=16, z_dim=8, width=8, adapt_steps=3, batch_size=8)
    before = {n: p.clone() for n, p in model.generator.named_parameters()}
    history = model.meta_train(tiny_data(), steps=4, device="cpu", progress=False)
    assert len(history["loss"]) == 4
    assert any(not torch.equal(p, before[n]) for n, p in model.generator.named_parameters())
    support = torch.rand(4, 1, 16, 16)
    theta = {n: p.clone() for n, p in model.state_dict().items()}
    out = model.generate(support, 5, seed=1)
    assert out.shape == (5, 1, 16, 16) and 0 <= out.min() and out.max() <= 1
    assert all(torch.equal(p, theta[n]) for n, p in model.state_dict().items())  # adaptation works on a copy
    model.save(tmp_path / "p.pt")
    assert torch.equal(FewShotGenerator.load(tmp_path / "p.pt").generate(support, 5, seed=1), out)


def test_pretrained_vae_lowers_its_loss_ignores_the_support_at_zero_steps_and_adapts_when_asked(tmp_path):
    from mlcourse.generative.vae import binarize_fixed
    from mlcourse.metagen import PretrainedVAE

    torch.manual_seed(0)
    model = PretrainedVAE(size=16, latent_dim=4, width=8, hidden=32, batch_size=8, lr=3e-3)
    history = model.meta_train(tiny_data(), steps=60, device="cpu", progress=False)
    assert sum(history["loss"][-10:]) < sum(history["loss"][:10])  # the ELBO rises on the training images
    x = binarize_fixed(torch.rand(3, 1, 16, 16), seed=0)
    support = torch.rand(4, 1, 16, 16)
    ll_none = model.conditional_log_likelihood(x, support[:0], k=8, seed=0)
    ll_four = model.conditional_log_likelihood(x, support, k=8, seed=0)
    assert model.adapt_steps == 0 and torch.allclose(ll_none, ll_four)  # chapter 08's VAE: the support is ignored
    model.adapt_steps = 3
    assert not torch.allclose(model.conditional_log_likelihood(x, support, k=8, seed=0), ll_none)
    model.save(tmp_path / "v.pt")
    again = FewShotGenerator.load(tmp_path / "v.pt")
    again.adapt_steps = 3  # an evaluation setting: the checkpoint keeps the constructor's value
    assert isinstance(again, PretrainedVAE) and torch.equal(again.generate(support, 4, seed=2), model.generate(support, 4, seed=2))
