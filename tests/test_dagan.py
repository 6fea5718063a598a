"""DAGAN: shapes and range, determinism under a seed, the pair critic's gradient penalty,
training lowers the losses on small data, save/load, and every bad input's error."""

from __future__ import annotations

import pytest
import torch

from conftest import toy_dataset
from mlcourse.generative.common import to_tanh_range
from mlcourse.metagen.common import FewShotGenerator
from mlcourse.metagen.dagan import DAGAN, same_class_pairs

SIZE = 16


def tiny(**kw) -> DAGAN:
    torch.manual_seed(0)
    return DAGAN(**{"size": SIZE, "width": 8, "code_dim": 16, "z_dim": 4, "n_critic": 1, "batch": 8, **kw})


def data(per_class: int = 6):
    return toy_dataset(num_classes=5, per_class=per_class, size=SIZE)


@pytest.mark.parametrize("generator", ["warp", "unet"])
def test_generate_shape_range_and_determinism(generator):
    model = tiny(generator=generator)
    model.meta_train(data(), steps=3, device="cpu", progress=False)  # the warp generator starts as the identity
    support = torch.rand(3, 1, SIZE, SIZE)
    a = model.generate(support, 7, seed=1)
    assert a.shape == (7, 1, SIZE, SIZE) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, model.generate(support, 7, seed=1))
    assert not torch.equal(a, model.generate(support, 7, seed=2))


def test_generate_cycles_through_sources():
    """Image i comes from support[i % K]: with the same noise, the same source gives the same image."""
    model = tiny(z_dim=1)
    support = torch.rand(2, 1, SIZE, SIZE)
    out = model.generate(support, 4, seed=0)
    z = torch.randn(4, 1, generator=torch.Generator().manual_seed(0))
    model.eval()  # generate uses BatchNorm's running statistics
    expected = (model.generator(to_tanh_range(support[[0, 1, 0, 1]]), z) + 1) / 2
    assert torch.allclose(out, expected.clamp(0, 1), atol=1e-6)


def test_the_warp_generator_starts_as_the_identity_and_the_unet_does_not():
    support = torch.rand(3, 1, SIZE, SIZE)
    assert torch.allclose(tiny().generate(support, 3, seed=0), support, atol=1e-5)
    assert not torch.allclose(tiny(generator="unet").generate(support, 3, seed=0), support, atol=1e-2)


def test_pairs_are_two_different_drawings_of_one_class():
    ds = data()
    x, y = same_class_pairs(ds, 20, torch.Generator().manual_seed(0))
    # toy images carry class id in pixel (0, 0) and example number in pixel (0, 1)
    assert torch.equal(x[:, 0, 0, 0], y[:, 0, 0, 0])
    assert (x[:, 0, 0, 1] != y[:, 0, 0, 1]).all()


def test_training_lowers_the_critic_loss_and_the_generator_loss_against_a_fixed_critic():
    ds = data()
    model = tiny()
    history = model.meta_train(ds, steps=30, device="cpu", progress=False, seed=0)
    first, last = sum(history["loss"][:5]) / 5, sum(history["loss"][-5:]) / 5
    assert last < first, (first, last)
    # the generator alone, critic frozen: its loss -f(x, G(x, z)) must fall
    g = torch.Generator().manual_seed(3)
    x, _ = same_class_pairs(ds, 16, g)
    x = to_tanh_range(x)
    z = torch.randn(16, model.z_dim, generator=g)
    for p in model.critic.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(model.generator.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(20):
        loss = -model.critic(x, model.generator(x, z)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_save_and_load(tmp_path):
    model = tiny()
    model.meta_train(data(), steps=2, device="cpu", progress=False)
    path = model.save(tmp_path / "d.pt")
    again = DAGAN.load(path)
    assert isinstance(again, DAGAN) and isinstance(FewShotGenerator.load(path), DAGAN)
    support = torch.rand(2, 1, SIZE, SIZE)
    assert torch.equal(model.generate(support, 3, seed=0), again.generate(support, 3, seed=0))


@pytest.mark.parametrize("kwargs, message", [
    ({"size": 18}, "multiple of 4"), ({"n_critic": 0}, "n_critic"), ({"batch": 1}, "batch"),
    ({"lr": 0.0}, "lr"), ({"z_dim": 1.5}, "z_dim"), ({"generator": "resnet"}, "generator must be"),
])  # fmt: skip
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny(**kwargs)


def test_bad_inputs():
    model = tiny()
    with pytest.raises(ValueError, match="n must be"):
        model.generate(torch.rand(1, 1, SIZE, SIZE), 0)
    with pytest.raises(ValueError, match="built for"):
        model.generate(torch.rand(1, 1, 28, 28), 2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.generate(torch.rand(1, 1, SIZE, SIZE) * 3, 2)
    with pytest.raises(TypeError, match="ImageClassDataset"):
        model.meta_train(torch.rand(4, 1, SIZE, SIZE), steps=1)
    with pytest.raises(ValueError, match="built for"):
        model.meta_train(toy_dataset(size=8), steps=1, device="cpu")
    with pytest.raises(ValueError, match="two images"):
        same_class_pairs(toy_dataset(num_classes=3, per_class=1, size=SIZE), 4, torch.Generator())
    with pytest.raises(ValueError, match="same shape"):
        model.critic(torch.zeros(2, 1, SIZE, SIZE), torch.zeros(3, 1, SIZE, SIZE))


def test_command_line_refuses_bad_arguments(capsys):
    from mlcourse.metagen.dagan import main

    for argv in (["--out", "x.pt", "--n-critic", "0"], ["--out", "x.pt", "--time-budget", "0"], ["--out", "x.pt", "--lr", "-1"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error:" in err
