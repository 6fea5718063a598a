"""MetaGAN on ProtoNet: the (N+1)-way loss against a naive cross-entropy, gradients reach the
generator (and only its own loss moves it), determinism under a seed, training on small data,
the prediction is ProtoNet's, and every bad input gets a clear error."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mlcourse.data.episodes import EpisodeDataset
from mlcourse.metagen.metagan import (
    MetaGANProtoNet,
    TaskGenerator,
    discriminator_loss,
    feature_matching_loss,
    n_plus_one_logits,
)
from mlcourse.metric.protonet import ProtoNet


def test_discriminator_loss_is_the_n_plus_one_way_cross_entropy():
    g = torch.Generator().manual_seed(0)
    real = -30 * torch.rand(12, 5, generator=g, dtype=torch.float64)
    fake = -30 * torch.rand(7, 5, generator=g, dtype=torch.float64)
    y = torch.randint(5, (12,), generator=g)
    bias = torch.tensor(3.7, dtype=torch.float64)
    out = discriminator_loss(real, y, fake, bias, gan_weight=1.0)
    # naive: an (N+1)-way softmax per image, real queries labelled y, fakes labelled N
    naive_real = sum(-torch.log(torch.softmax(n_plus_one_logits(real[i : i + 1], bias)[0], 0)[y[i]]) for i in range(12)) / 12
    naive_fake = sum(-torch.log(torch.softmax(n_plus_one_logits(fake[i : i + 1], bias)[0], 0)[5]) for i in range(7)) / 7
    assert torch.allclose(out["loss"], naive_real + naive_fake)
    # the parts: the N-way cross-entropy plus the real/fake terms
    assert torch.allclose(out["classification"], F.cross_entropy(real, y))
    assert torch.allclose(out["classification"] + out["real"], naive_real)
    assert torch.allclose(out["fake"], naive_fake)


def test_gan_weight_scales_only_the_gan_terms_and_large_distances_stay_finite():
    real, fake = -1e4 * torch.rand(6, 3), -1e4 * torch.rand(4, 3)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    a, b = discriminator_loss(real, y, fake, 0.0, 0.0), discriminator_loss(real, y, fake, 0.0, 2.0)
    assert torch.isfinite(b["loss"]) and torch.allclose(a["loss"], a["classification"])
    assert torch.allclose(b["loss"], b["classification"] + 2 * (b["real"] + b["fake"]))


def test_feature_matching_loss_and_its_gradient_side():
    real = torch.randn(10, 4, requires_grad=True)
    fake = torch.randn(6, 4, requires_grad=True)
    loss = feature_matching_loss(real, fake)
    assert torch.allclose(loss, (real.mean(0) - fake.mean(0)).pow(2).sum())
    loss.backward()
    assert real.grad is None and fake.grad is not None and fake.grad.abs().sum() > 0


def _episode(ways=3, seed=0, toy_size=28):
    from conftest import toy_dataset

    data = toy_dataset(num_classes=6, per_class=6, size=toy_size)
    return data, EpisodeDataset(data, ways, 1, 2, 1, seed)[0]


def test_generator_gets_gradient_from_its_loss_only_and_discriminator_from_its():
    torch.manual_seed(0)
    model = MetaGANProtoNet(hidden=8, noise_dim=4)
    model.train()
    _, ep = _episode()
    out = model.gan_losses(ep.support_x, ep.support_y, ep.query_x, ep.query_y, generator=torch.Generator().manual_seed(0))
    assert out["fake_images"].shape == (len(ep.query_x), 1, 28, 28)
    g_params = list(model.generator.parameters())
    grads = torch.autograd.grad(out["g_loss"], g_params, retain_graph=True)
    assert all(gr is not None for gr in grads) and sum(gr.abs().sum() for gr in grads) > 0
    (bias_grad,) = torch.autograd.grad(out["d_loss"], [model.fake_bias], retain_graph=True)
    assert bias_grad.abs() > 0  # the real/fake threshold learns
    assert any(p is model.fake_bias for p in model.discriminator_parameters())
    # the discriminator's loss reaches the generator only through the fakes, and it is not used there
    d_to_g = torch.autograd.grad(out["d_loss"], g_params, allow_unused=True)
    assert any(gr is not None and gr.abs().sum() > 0 for gr in d_to_g)
    assert len(model.discriminator_parameters()) + len(g_params) == len(list(model.parameters()))


@pytest.mark.slow
def test_meta_train_is_deterministic_lowers_the_loss_and_predicts_like_protonet():
    from conftest import toy_dataset

    data = toy_dataset(num_classes=8, per_class=6, size=16)

    def run():
        torch.manual_seed(0)
        m = MetaGANProtoNet(hidden=8, noise_dim=4, gan_weight=0.5, image_size=16)
        h = m.meta_train(data, n_way=4, k_shot=1, q_query=2, steps=20, lr=3e-3, seed=3, device="cpu", progress=False)
        return m, h

    (a, ha), (b, hb) = run(), run()
    assert ha["loss"] == hb["loss"] and ha["g_loss"] == hb["g_loss"]
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert sum(ha["classification"][-5:]) < sum(ha["classification"][:5])
    # prediction is ProtoNet's: same weights in a plain ProtoNet give the same logits
    plain = ProtoNet(hidden=8)
    plain.load_state_dict({k: v for k, v in a.state_dict().items() if not k.startswith(("generator.", "fake_bias"))})
    ep = EpisodeDataset(data, 4, 1, 3, 1, 9)[0]
    assert torch.allclose(a.predict(ep.support_x, ep.support_y, ep.query_x), plain.predict(ep.support_x, ep.support_y, ep.query_x))
    fakes = a.sample_fakes(ep.support_x, 5, seed=1)
    assert fakes.shape == (5, 1, 16, 16) and fakes.min() >= 0 and fakes.max() <= 1
    assert torch.equal(fakes, a.sample_fakes(ep.support_x, 5, seed=1))


def test_bad_inputs():
    with pytest.raises(ValueError, match="gan_weight"):
        MetaGANProtoNet(gan_weight=-1)
    with pytest.raises(ValueError, match="fakes_per_query"):
        MetaGANProtoNet(fakes_per_query=0)
    with pytest.raises(ValueError, match="multiple of 4"):
        TaskGenerator(size=30)
    gen = TaskGenerator(embed_dim=8, noise_dim=4)
    with pytest.raises(ValueError, match="noise"):
        gen(torch.zeros(8), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="task_embedding"):
        gen(torch.zeros(2, 8), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="class_logits"):
        n_plus_one_logits(torch.zeros(3))
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="real_logits"):
        discriminator_loss(torch.zeros(4, 3), y, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="real_y"):
        discriminator_loss(torch.zeros(4, 3), torch.zeros(3, dtype=torch.long), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="no fake"):
        discriminator_loss(torch.zeros(4, 3), y, torch.zeros(0, 3))
    with pytest.raises(ValueError, match="gan_weight"):
        discriminator_loss(torch.zeros(4, 3), y, torch.zeros(2, 3), gan_weight=-0.1)
    with pytest.raises(ValueError, match="features"):
        feature_matching_loss(torch.zeros(3, 4), torch.zeros(3, 5))
    model = MetaGANProtoNet(hidden=8, noise_dim=4)
    _, ep = _episode()
    with pytest.raises(ValueError, match="query_y"):
        model.gan_losses(ep.support_x, ep.support_y, ep.query_x, ep.query_y[:-1])


def _script(name: str):
    from conftest import load_benchmark

    return load_benchmark(name)


@pytest.mark.parametrize("argv, message", [
    (["run", "--arm", "metagan", "--gan-weight", "-1"], "--gan-weight"),
    (["run", "--arm", "plain", "--ways", "5", "1"], "--ways"),
    (["run", "--arm", "plain", "--time-budget", "0"], "--time-budget"),
    (["run", "--arm", "gan"], "--arm"),
])  # fmt: skip
def test_metagan_command_line_refuses_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        _script("metagan_table").main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err
