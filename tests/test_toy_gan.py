"""The 2-D GAN toy of chapter 07 and exercise 07: data, coverage, the training loop."""

import math

import pytest
import torch

from mlcourse.generative import critic_loss_wgan, d_loss_nonsaturating, g_loss_nonsaturating, g_loss_wgan, gradient_penalty
from mlcourse.generative.toy import Ring, one_thread, plot_toy_snapshots, toy_mlp, train_toy_gan


def gan_critic_loss(critic, real, fake, gen):
    return d_loss_nonsaturating(critic(real), critic(fake))


def wgan_critic_loss(critic, real, fake, gen):
    return critic_loss_wgan(critic(real), critic(fake)) + 10 * gradient_penalty(critic, real, fake, generator=gen)


def test_ring_centres_on_the_circle_and_samples_near_them():
    ring = Ring(modes=6, radius=1.5, std=0.01)
    c = ring.centres()
    assert c.shape == (6, 2)
    assert torch.allclose(c.norm(dim=1), torch.full((6,), 1.5))
    assert torch.allclose(c[0], torch.tensor([1.5, 0.0]))
    x = ring.sample(500, torch.Generator().manual_seed(0))
    assert x.shape == (500, 2)
    assert torch.cdist(x, c).min(dim=1).values.max() < 6 * 0.01
    assert torch.equal(x, ring.sample(500, torch.Generator().manual_seed(0)))


def test_coverage_counts_modes_and_good_samples():
    ring = Ring()
    c = ring.centres()
    # 100 points on modes 0 and 1 (50 each), none elsewhere: 2 covered, all good
    pts = torch.cat([c[0].expand(50, 2), c[1].expand(50, 2)])
    covered, good, per_mode = ring.coverage(pts)
    assert covered == 2 and good == 1.0 and per_mode.tolist() == [50, 50, 0, 0, 0, 0, 0, 0]
    # a point at the origin is far from every mode: not good
    cov = ring.coverage(torch.cat([pts, torch.zeros(100, 2)]))
    assert cov.good_fraction == 0.5 and cov.per_mode.sum() == 100
    # a quarter of a fair share (200 / 8 / 4 = 6.25) is needed to cover: 6 samples on mode 2 are not enough
    cov = ring.coverage(torch.cat([pts, c[2].expand(6, 2), torch.zeros(94, 2)]))
    assert cov.covered == 2
    # the ring's own samples cover everything
    real = ring.coverage(ring.sample(2000, torch.Generator().manual_seed(0)))
    assert real.covered == 8 and abs(real.good_fraction - (1 - math.exp(-4.5))) < 0.01  # P(r < 3 std) in 2-D


def test_bad_input_gets_clear_errors():
    with pytest.raises(ValueError, match="modes"):
        Ring(modes=0)
    with pytest.raises(ValueError, match="positive"):
        Ring(std=0.0)
    with pytest.raises(ValueError, match=r"\[n, 2\]"):
        Ring().coverage(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="n must"):
        Ring().sample(0)
    with pytest.raises(ValueError, match="steps"):
        train_toy_gan(gan_critic_loss, g_loss_nonsaturating, 0)
    with pytest.raises(ValueError, match="critic_steps"):
        train_toy_gan(gan_critic_loss, g_loss_nonsaturating, 5, critic_steps=0)
    with pytest.raises(TypeError, match="functions"):
        train_toy_gan("nonsaturating", g_loss_nonsaturating, 5)
    with pytest.raises(ValueError, match="lr"):
        train_toy_gan(gan_critic_loss, g_loss_nonsaturating, 5, lr=0.0)
    with pytest.raises(ValueError, match="sizes"):
        toy_mlp(2, 0)
    with pytest.raises(ValueError, match="no snapshots"):
        plot_toy_snapshots([], "nothing")


def test_one_thread_restores_the_thread_count():
    before = torch.get_num_threads()
    with one_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_training_is_deterministic_and_snapshots_are_well_formed():
    a = train_toy_gan(gan_critic_loss, g_loss_nonsaturating, 23, n_snapshots=5, n_samples=200)
    b = train_toy_gan(gan_critic_loss, g_loss_nonsaturating, 23, n_snapshots=5, n_samples=200)
    assert a.d_losses == b.d_losses and a.g_losses == b.g_losses
    assert [s.step for s in a.snapshots] == [4, 8, 12, 16, 20, 23]  # every 23 // 5 steps, and the last
    for (sa, xa, _), (_, xb, _) in zip(a.snapshots, b.snapshots):
        assert xa.shape == (200, 2) and torch.equal(xa, xb)
    c = train_toy_gan(gan_critic_loss, g_loss_nonsaturating, 23, n_samples=200, seed=1)
    assert c.d_losses != a.d_losses
    assert len(a.d_losses) == len(a.g_losses) == 23


def test_critic_steps_per_generator_step():
    calls = []

    def counting_loss(critic, real, fake, gen):
        calls.append(real.shape)
        return gan_critic_loss(critic, real, fake, gen)

    run = train_toy_gan(counting_loss, g_loss_nonsaturating, 4, critic_steps=3, batch=16, n_samples=10)
    assert len(calls) == 12 and calls[0] == (16, 2)
    assert len(run.g_losses) == 4


def test_gan_training_moves_samples_onto_the_ring():
    """300 steps (chapter 07's fast mode): the samples start near the origin and end near radius 2."""
    run = train_toy_gan(gan_critic_loss, g_loss_nonsaturating, 300, n_samples=500)
    assert all(math.isfinite(v) for v in run.d_losses)
    first, last = run.snapshots[0].samples, run.snapshots[-1].samples
    error = lambda x: (x.norm(dim=1) - 2.0).abs().mean().item()  # noqa: E731  distance to the circle
    assert error(last) < 0.5 * error(toy_mlp(2, 2)(torch.randn(500, 2)).detach())
    assert error(last) < error(first)


def test_wgan_gp_critic_learns_to_separate_real_from_fake():
    """WGAN-GP's critic: its Wasserstein estimate E f(real) - E f(fake) becomes positive."""
    run = train_toy_gan(wgan_critic_loss, g_loss_wgan, 40, critic_steps=5, lr=1e-3, betas=(0.5, 0.9), n_samples=200)
    assert all(math.isfinite(v) for v in run.d_losses)
    real = Ring().sample(500, torch.Generator().manual_seed(3))
    with torch.no_grad():
        fake = run.generator(torch.randn(500, 2, generator=torch.Generator().manual_seed(4)))
        estimate = (run.critic(real).mean() - run.critic(fake).mean()).item()
    assert estimate > 0


def test_plots_draw_every_snapshot_and_run():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mlcourse.generative.toy import plot_coverage_over_training

    runs = {"a": train_toy_gan(gan_critic_loss, g_loss_nonsaturating, 6, n_snapshots=3, n_samples=80),
            "b": train_toy_gan(gan_critic_loss, g_loss_nonsaturating, 4, n_snapshots=2, n_samples=80, seed=1)}
    fig = plot_toy_snapshots(runs["a"].snapshots, "a")
    assert len(fig.axes) == 3 and fig.axes[0].get_title().startswith("step 2:")
    plt.close(fig)
    fig = plot_coverage_over_training(runs)
    assert len(fig.axes) == 3
    assert len(fig.axes[2].patches) == 2 * 8  # one bar per mode and run
    assert len(fig.axes[0].get_lines()[0].get_xdata()) == 3
    plt.close(fig)
    with pytest.raises(ValueError, match="snapshot"):
        plot_coverage_over_training({})
