"""GAN losses against hand computations, the gradient penalty on critics with known gradients,
network shapes, conditioning, and the training helper (including its NaN guard)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mlcourse.generative.gan import (
    GAN,
    Discriminator,
    Generator,
    critic_loss_wgan,
    d_loss_nonsaturating,
    g_loss_nonsaturating,
    g_loss_saturating,
    g_loss_wgan,
    gradient_penalty,
    make_gan,
    train_gan,
)

LOG2 = math.log(2.0)


def softplus(a: float) -> float:
    return math.log1p(math.exp(a))


# -- losses -------------------------------------------------------------------------------
def test_losses_at_zero_logits_are_log2_values():
    zeros = torch.zeros(5)
    assert d_loss_nonsaturating(zeros, zeros).item() == pytest.approx(2 * LOG2)
    assert g_loss_nonsaturating(zeros).item() == pytest.approx(LOG2)
    assert g_loss_saturating(zeros).item() == pytest.approx(-LOG2)


def test_losses_on_known_logits():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    # -log sigmoid(a) = log(1 + e^-a);  -log(1 - sigmoid(a)) = log(1 + e^a)
    expected_d = (softplus(-2.0) + softplus(1.0)) / 2 + (softplus(0.5) + softplus(-3.0)) / 2
    assert d_loss_nonsaturating(real, fake).item() == pytest.approx(expected_d, rel=1e-6)
    assert g_loss_nonsaturating(fake).item() == pytest.approx((softplus(-0.5) + softplus(3.0)) / 2, rel=1e-6)
    # minimax: mean log(1 - sigmoid(a))
    s = torch.sigmoid(fake)
    assert g_loss_saturating(fake).item() == pytest.approx(torch.log1p(-s).mean().item(), rel=1e-6)
    assert critic_loss_wgan(real, fake).item() == pytest.approx(fake.mean().item() - real.mean().item())
    assert g_loss_wgan(fake).item() == pytest.approx(-fake.mean().item())
    # one-sided label smoothing: real target 0.9, i.e. 0.9 * (-log sigmoid(a)) + 0.1 * (-log(1 - sigmoid(a)))
    smoothed_real = (0.9 * softplus(-2.0) + 0.1 * softplus(2.0) + 0.9 * softplus(1.0) + 0.1 * softplus(-1.0)) / 2
    expected_s = smoothed_real + (softplus(0.5) + softplus(-3.0)) / 2
    assert d_loss_nonsaturating(real, fake, smoothing=0.1).item() == pytest.approx(expected_s, rel=1e-6)


def test_losses_are_finite_for_extreme_logits():
    big = torch.tensor([1e4, -1e4])
    for value in (d_loss_nonsaturating(big, big), g_loss_nonsaturating(big), g_loss_saturating(big)):
        assert torch.isfinite(value)


def test_saturating_loss_has_vanishing_gradient_when_discriminator_wins():
    """The reason for the non-saturating loss: at a confidently rejected fake (logit -10)
    the minimax loss gives almost no gradient, the non-saturating one almost the largest."""
    logit = torch.tensor([-10.0], requires_grad=True)
    (g_sat,) = torch.autograd.grad(g_loss_saturating(logit), logit)
    (g_ns,) = torch.autograd.grad(g_loss_nonsaturating(logit), logit)
    assert abs(g_sat.item()) < 1e-4  # -sigmoid(-10)
    assert g_ns.item() == pytest.approx(-1.0, abs=1e-4)  # -sigmoid(10)


# -- gradient penalty ---------------------------------------------------------------------
class LinearCritic(nn.Module):
    """f(x) = w . x + b: its gradient is w everywhere, so the penalty is (||w|| - 1)^2."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x):
        return x.flatten(1) @ self.w + 0.3


class ConditionalLinearCritic(nn.Module):
    """f(x, y) = w_y . x: gradient w_y for an example of class y."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w.clone())  # [classes, D]

    def forward(self, x, y):
        return (x.flatten(1) * self.w[y]).sum(1)


def test_gradient_penalty_on_linear_critic_matches_hand_computation():
    torch.manual_seed(0)
    w = torch.randn(1 * 4 * 4)
    critic = LinearCritic(w)
    real, fake = torch.randn(6, 1, 4, 4), torch.randn(6, 1, 4, 4)
    gp = gradient_penalty(critic, real, fake)
    assert gp.item() == pytest.approx((w.norm().item() - 1) ** 2, rel=1e-5)
    # the penalty is differentiable in the critic's weights: d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    (grad,) = torch.autograd.grad(gp, critic.w)
    expected = 2 * (w.norm() - 1) * w / w.norm()
    assert torch.allclose(grad, expected, atol=1e-5)


def test_gradient_penalty_is_zero_for_unit_gradient_and_any_eps():
    w = torch.randn(16)
    critic = LinearCritic(w / w.norm())
    real, fake = torch.randn(5, 1, 4, 4), torch.randn(5, 1, 4, 4)
    for eps in (torch.zeros(5), torch.ones(5), torch.rand(5)):
        assert gradient_penalty(critic, real, fake, eps=eps).item() == pytest.approx(0.0, abs=1e-10)


def test_gradient_penalty_interpolates_between_real_and_fake():
    """A quadratic critic f(x) = ||x||^2 / 2 has gradient x itself, so the penalty reveals where
    it was evaluated: at eps * real + (1 - eps) * fake."""

    class Quadratic(nn.Module):
        def forward(self, x):
            return 0.5 * x.flatten(1).pow(2).sum(1)

    real, fake = torch.full((3, 1, 2, 2), 1.0), torch.full((3, 1, 2, 2), 3.0)
    eps = torch.tensor([0.0, 0.5, 1.0])
    points = eps.view(3, 1, 1, 1) * real + (1 - eps.view(3, 1, 1, 1)) * fake
    expected = ((points.flatten(1).norm(dim=1) - 1) ** 2).mean()
    assert gradient_penalty(Quadratic(), real, fake, eps=eps).item() == pytest.approx(expected.item(), rel=1e-6)


def test_gradient_penalty_conditional_uses_each_examples_label():
    w = torch.stack([torch.ones(4) * 0.5, torch.ones(4) * 2.0])  # norms 1 and 4
    critic = ConditionalLinearCritic(w)
    y = torch.tensor([0, 1, 1, 0])
    gp = gradient_penalty(critic, torch.randn(4, 1, 2, 2), torch.randn(4, 1, 2, 2), labels=y)
    assert gp.item() == pytest.approx((0 + 9 + 9 + 0) / 4, rel=1e-6)


def test_gradient_penalty_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        gradient_penalty(LinearCritic(torch.randn(16)), torch.randn(2, 1, 4, 4), torch.randn(3, 1, 4, 4))


# -- networks -----------------------------------------------------------------------------
@pytest.mark.parametrize("size,stages", [(28, 2), (32, 3), (64, 4)])
def test_generator_and_discriminator_shapes(size, stages):
    g, d = Generator(z_dim=8, size=size, width=8), Discriminator(size=size, width=8)
    assert g.stages == stages
    x = g(torch.randn(3, 8))
    assert x.shape == (3, 1, size, size)
    assert x.min() >= -1 and x.max() <= 1  # tanh range
    assert d(x).shape == (3,)


def test_conditional_generator_and_projection_discriminator():
    g = Generator(z_dim=8, width=8, num_classes=5)
    d = Discriminator(width=8, num_classes=5, norm="layer")
    y = torch.tensor([0, 1, 4])
    z = torch.randn(3, 8)
    x = g(z, y)
    assert x.shape == (3, 1, 28, 28) and d(x, y).shape == (3,)
    # the label changes the image for the same z, and the score for the same image
    assert not torch.allclose(g(z, torch.tensor([1, 1, 1])), g(z, torch.tensor([2, 2, 2])))
    assert not torch.allclose(d(x, torch.tensor([0, 0, 0])), d(x, torch.tensor([3, 3, 3])))
    with pytest.raises(ValueError, match="pass labels"):
        g(z)
    with pytest.raises(ValueError, match="unconditional"):
        Generator(z_dim=8, width=8)(z, y)


def test_sample_is_in_unit_range_and_reproducible():
    gan = make_gan(z_dim=8, width=8)
    a, b = gan.sample(10, seed=3), gan.sample(10, seed=3)
    assert a.shape == (10, 1, 28, 28) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)


def test_make_gan_picks_norm_for_wgan_gp():
    gan = make_gan(loss="wgan-gp", width=8)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gan.discriminator.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in make_gan(width=8).discriminator.modules())
    with pytest.raises(ValueError):
        make_gan(loss="hinge")


# -- training -----------------------------------------------------------------------------
def tiny_data(n=32, classes=4, size=16):
    """Random 16x16 images: training code paths are the same at every size, and 16 is cheap."""
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8), torch.arange(n) % classes


@pytest.mark.parametrize("loss,conditional", [("nonsaturating", False), ("saturating", False), ("wgan-gp", True)])
def test_train_gan_runs_and_records(loss, conditional):
    images, labels = tiny_data()
    gan, hist = train_gan((images, labels) if conditional else images, loss=loss, conditional=conditional,
                          steps=3, batch_size=8, z_dim=8, width=8, device=torch.device("cpu"),
                          snapshot_every=2, snapshot_count=4, progress=False)
    assert len(hist["loss"]) == 3 and "g_loss" in hist
    assert ("gp" in hist) == (loss == "wgan-gp")
    assert [s for s, _ in gan.snapshots] == [0, 2]
    assert gan.snapshots[0][1].shape == (4, 1, 16, 16)
    assert gan.conditional == conditional


def test_train_gan_is_deterministic_under_a_seed():
    images, _ = tiny_data()
    kwargs = dict(steps=2, batch_size=8, z_dim=8, width=8, device=torch.device("cpu"), progress=False, seed=5)
    (g1, h1), (g2, h2) = train_gan(images, **kwargs), train_gan(images, **kwargs)
    assert h1["loss"] == h2["loss"]
    assert torch.equal(g1.sample(4, seed=0), g2.sample(4, seed=0))


# -- the discriminator's side of train_gan: real labelled 1, fake 0 (critic: real scored up) --
class Recorder(nn.Module):
    """Wraps a discriminator and records every call's input and output."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, x, labels=None):
        out = self.inner(x) if labels is None else self.inner(x, labels)
        self.calls.append((x.detach().clone(), out.detach().clone()))
        return out


def is_real_batch(x, images):
    """Whether every image of ``x`` (in [-1, 1]) is one of the training ``images`` (uint8)."""
    data = (images.float() / 255 * 2 - 1).flatten(1)
    # the direct distance, not cdist's matrix-product shortcut (|a|² + |b|² - 2ab), whose
    # cancellation leaves about 3e-3 between identical vectors on some BLAS kernels
    distances = torch.cdist(x.flatten(1), data, compute_mode="donot_use_mm_for_euclid_dist")
    return bool((distances.min(dim=1).values < 1e-4).all())


@pytest.mark.parametrize("loss", ["nonsaturating", "saturating", "wgan-gp"])
def test_train_gan_first_discriminator_loss_matches_a_hand_computation(loss):
    """The logged loss of step 0 from the logits D actually produced: with real labelled 1 and
    fake 0, ``mean softplus(-D(x)) + mean softplus(D(G(z)))``; for the critic
    ``mean f(G(z)) - mean f(x) + 10 gp``. Swapping real and fake changes it by ``±(d_fake - d_real)``."""
    images, _ = tiny_data()
    torch.manual_seed(0)
    d = Discriminator(size=16, width=8, norm="layer" if loss == "wgan-gp" else "batch")
    gan = GAN(Generator(z_dim=8, size=16, width=8), Recorder(d), loss=loss)
    _, hist = train_gan(images, gan, steps=1, n_critic=1, batch_size=8, device=torch.device("cpu"), progress=False)
    (xa, a), (xb, b) = gan.discriminator.calls[:2]  # the real and the fake batch of the critic step
    assert is_real_batch(xa, images) != is_real_batch(xb, images)  # one of each
    (real_x, real_out), (fake_x, fake_out) = ((xa, a), (xb, b)) if is_real_batch(xa, images) else ((xb, b), (xa, a))
    if loss == "wgan-gp":
        expected = fake_out.mean() - real_out.mean() + 10.0 * hist["gp"][0]
    else:
        expected = F.softplus(-real_out).mean() + F.softplus(fake_out).mean()
    assert hist["loss"][0] == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    assert hist["d_real"][0] == pytest.approx(real_out.mean().item(), rel=1e-5, abs=1e-6)
    assert hist["d_fake"][0] == pytest.approx(fake_out.mean().item(), rel=1e-5, abs=1e-6)
    assert abs(real_out.mean() - fake_out.mean()) > 1e-3  # so a swap would change the loss: the check has teeth


@pytest.mark.parametrize("loss", ["nonsaturating", "wgan-gp"])
def test_train_gan_discriminator_learns_to_score_real_above_fake(loss):
    """With the generator frozen, a few discriminator steps must push its score up on real
    images (random pixels here) and down on the generator's (smooth tanh maps)."""
    images, _ = tiny_data()
    torch.manual_seed(0)
    gen = Generator(z_dim=8, size=16, width=8)
    gen.requires_grad_(False)  # only D learns
    gan = GAN(gen, Discriminator(size=16, width=8, norm="layer"), loss=loss)
    _, hist = train_gan(images, gan, steps=15, n_critic=1, batch_size=16, lr=1e-3, device=torch.device("cpu"), progress=False)
    gaps = [r - f for r, f in zip(hist["d_real"], hist["d_fake"])]  # E D(x) - E D(G(z)) per step
    # measured (seeds 0-2 of init and data): 0.2-0.5 at step 0, 1.6-4.6 over the last 5 steps
    assert min(gaps[-5:]) > max(1.0, gaps[0] + 1.0), gaps
    with torch.no_grad():  # and afterwards, on fresh batches
        real = images[torch.arange(16)].float() / 255 * 2 - 1
        fake = gen.eval()(torch.randn(16, 8, generator=torch.Generator().manual_seed(1)))
        assert gan.discriminator(real).mean() > gan.discriminator(fake).mean() + 1.0  # measured 2.1-4.4


class NaNAfter(nn.Module):
    """A discriminator that starts returning NaN after ``n`` calls of the critic step."""

    def __init__(self, n):
        super().__init__()
        self.inner = Discriminator(size=16, width=8)
        self.calls, self.n = 0, n

    def forward(self, x, labels=None):
        self.calls += 1
        out = self.inner(x)
        return out * float("nan") if self.calls > self.n else out


def test_train_gan_stops_with_an_error_naming_the_step():
    images, _ = tiny_data()
    # three discriminator calls per step (real, fake, generator's fake): NaN from the 7th call = step 2
    gan = GAN(Generator(z_dim=8, size=16, width=8), NaNAfter(6))
    with pytest.raises(FloatingPointError, match="step 2"):
        train_gan(images, gan, steps=10, batch_size=8, device=torch.device("cpu"), progress=False)


def test_train_gan_rejects_conditional_without_labels():
    with pytest.raises(ValueError, match="labels"):
        train_gan(tiny_data()[0], conditional=True, steps=1, progress=False)
