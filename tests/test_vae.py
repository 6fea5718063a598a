"""The ELBO and the IWAE estimate on a model whose likelihood is known in closed form, the KL
term, binarisation, the convolutional (conditional) VAE and its training helper."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mlcourse.generative.vae import (
    ConvVAE,
    binarize,
    binarize_fixed,
    elbo,
    evaluate_vae,
    gaussian_kl,
    iwae_log_likelihood,
    kl_weight,
    log_normal,
    train_vae,
)


# -- a linear-Gaussian "VAE" with an exact likelihood --------------------------------------
class LinearGaussian(nn.Module):
    """p(z) = N(0, I_d), p(x | z) = N(W z + b, s^2 I_D), so p(x) = N(b, W W^T + s^2 I).

    W has orthogonal columns (W^T W = diag(c^2)), which makes the exact posterior diagonal:
    Cov = diag(1 / (1 + c^2 / s^2)), mean = Cov W^T (x - b) / s^2. The encoder is that
    posterior, optionally spoiled by ``shift`` (added to the mean) and ``var_scale``.
    """

    def __init__(self, D=6, d=3, s=0.7, shift=0.0, var_scale=1.0, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(D, d, generator=g, dtype=torch.float64))
        self.c = torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)[:d]
        self.W = q * self.c  # orthogonal columns of norms c
        self.b = torch.randn(D, generator=g, dtype=torch.float64)
        self.s, self.shift, self.var_scale = s, shift, var_scale

    def log_px(self, x):
        cov = self.W @ self.W.T + self.s**2 * torch.eye(self.W.shape[0], dtype=torch.float64)
        return torch.distributions.MultivariateNormal(self.b, cov).log_prob(x)

    def encode(self, x, y=None):
        var = 1.0 / (1.0 + self.c**2 / self.s**2)
        mu = ((x - self.b) @ self.W) / self.s**2 * var
        return mu + self.shift, torch.log(var * self.var_scale).expand_as(mu)

    def log_px_given_z(self, x, z, y=None):
        mean = z @ self.W.T + self.b
        return log_normal(x, mean, 2 * math.log(self.s))

    def sample_x(self, n, seed=1):
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.W.shape[1], generator=g, dtype=torch.float64)
        return z @ self.W.T + self.b + self.s * torch.randn(n, self.W.shape[0], generator=g, dtype=torch.float64)


def test_iwae_with_exact_posterior_equals_log_likelihood_for_every_k():
    """With q = p(z|x) every importance weight equals p(x): the estimate is exact, no noise."""
    model = LinearGaussian()
    x = model.sample_x(8)
    for k in (1, 7, 50):
        est = iwae_log_likelihood(model, x, k, generator=torch.Generator().manual_seed(k))
        assert torch.allclose(est, model.log_px(x), atol=1e-9)


def test_elbo_with_exact_posterior_equals_log_likelihood():
    """ELBO = log p(x) - KL(q || posterior) = log p(x); the reconstruction term is a Monte
    Carlo average, so compare with a tolerance set by many samples."""
    model = LinearGaussian()
    x = model.sample_x(8)
    terms = elbo(model, x, samples=4000, generator=torch.Generator().manual_seed(0))
    assert terms.elbo.shape == (8,)
    assert torch.allclose(terms.elbo, model.log_px(x), atol=0.05)
    assert torch.allclose(terms.elbo, terms.reconstruction - terms.kl)


def test_iwae_approaches_log_likelihood_from_below_with_a_poor_encoder():
    model = LinearGaussian(shift=0.6, var_scale=2.5)
    x = model.sample_x(50)
    log_px = model.log_px(x).mean().item()
    g = torch.Generator().manual_seed(0)
    e = elbo(model, x, samples=2000, generator=g).elbo.mean().item()
    l1 = iwae_log_likelihood(model, x, 1, generator=g).mean().item()
    l10 = iwae_log_likelihood(model, x, 10, generator=g).mean().item()
    l1000 = iwae_log_likelihood(model, x, 1000, generator=g).mean().item()
    gap = log_px - e
    assert gap > 0.5  # the spoiled encoder leaves a real gap (KL from q to the posterior)
    assert abs(l1 - e) < 0.25 * gap  # L_1 is a one-sample ELBO
    assert e < l10 < l1000 <= log_px + 1e-3
    assert log_px - l1000 < 0.05 * gap


def test_iwae_chunks_combine_to_exactly_k_samples_and_tiny_weights_are_stable():
    """With the exact posterior every log-weight is log p(x), so the result shows whether the
    chunks together held exactly k samples (k' samples would add log(k'/k))."""
    model = LinearGaussian()
    x = model.sample_x(4)
    for chunk in (1, 5, 64, 100):
        assert torch.allclose(iwae_log_likelihood(model, x, 64, chunk=chunk), model.log_px(x), atol=1e-9)
    spoiled = LinearGaussian(shift=0.3)
    far = x + 40.0  # log-weights around -1000: exp() underflows, logsumexp must not
    assert torch.isfinite(iwae_log_likelihood(spoiled, far, 16)).all()


def test_gaussian_kl_per_example_matches_the_analytic_formula():
    mu = torch.tensor([[0.0, 1.0, -2.0], [0.5, 0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0), math.log(0.5)], [0.0, 0.0, 0.0]])
    # per dimension: (mu^2 + var - log var - 1) / 2, summed over the latent axis
    row0 = 0.0 + (1 + 2 - math.log(2) - 1) / 2 + (4 + 0.5 - math.log(0.5) - 1) / 2
    row1 = 0.25 / 2
    kl = gaussian_kl(mu, logvar)
    assert kl.shape == (2,)
    assert kl.tolist() == pytest.approx([row0, row1], rel=1e-6)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu, (0.5 * logvar).exp()), torch.distributions.Normal(0.0, 1.0)
    ).sum(-1)
    assert torch.allclose(kl, ref, atol=1e-6)


# -- binarisation -------------------------------------------------------------------------
def test_binarization_modes():
    x = torch.tensor([0.0, 0.2, 0.5, 0.51, 1.0])
    assert binarize(x, "threshold").tolist() == [0, 0, 0, 1, 1]
    assert torch.equal(binarize(x, "gray"), x)
    b = binarize(x.repeat(4000), "dynamic", torch.Generator().manual_seed(0)).view(4000, 5)
    assert set(b.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(b.mean(0), x, atol=0.03)
    assert torch.equal(binarize_fixed(x, seed=1), binarize_fixed(x, seed=1))
    with pytest.raises(ValueError, match="binarization"):
        binarize(x, "otsu")


# -- the convolutional VAE ----------------------------------------------------------------
@pytest.mark.parametrize("size", [28, 32, 64])
def test_conv_vae_shapes(size):
    vae = ConvVAE(size=size, latent_dim=4, width=4, hidden=16)
    x = torch.rand(3, 1, size, size)
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (3, 4)
    assert vae.decode(mu).shape == (3, 1, size, size)
    terms = vae(x)
    for t in (terms.reconstruction, terms.kl, terms.elbo, terms.objective):
        assert t.shape == (3,)
    assert (terms.kl >= 0).all() and (terms.reconstruction <= 0).all()  # Bernoulli log-probabilities
    s = vae.sample(5, seed=0)
    assert s.shape == (5, 1, size, size) and 0 <= s.min() and s.max() <= 1


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_sample_draws_from_the_likelihood_reproducibly(likelihood):
    vae = ConvVAE(latent_dim=4, width=4, hidden=16, likelihood=likelihood, num_classes=3)
    a, b = vae.sample(6, seed=1, mean=False), vae.sample(6, seed=1, mean=False)
    assert torch.equal(a, b) and a.device.type == "cpu" and 0 <= a.min() and a.max() <= 1
    assert not torch.equal(a, vae.sample(6, seed=2, mean=False))
    means = vae.sample(6, seed=1)
    assert not torch.equal(a, means)  # a draw around the mean, not the mean
    if likelihood == "bernoulli":
        assert set(a.unique().tolist()) <= {0.0, 1.0}


def _sample_on(device, likelihood):
    torch.manual_seed(0)
    vae = ConvVAE(latent_dim=4, width=4, hidden=16, likelihood=likelihood, num_classes=3).to(device)
    return vae.sample(200, seed=3), vae.sample(200, seed=3, mean=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_sample_with_noise_on_cuda_matches_the_cpu(likelihood):
    """The seed's generator lives on the CPU; a model on the GPU must still draw with it."""
    cpu_mean, cpu_draw = _sample_on("cpu", likelihood)
    cuda_mean, cuda_draw = _sample_on("cuda", likelihood)
    assert cuda_draw.device.type == "cpu"
    torch.testing.assert_close(cuda_mean, cpu_mean, atol=1e-4, rtol=1e-4)
    if likelihood == "bernoulli":  # the same uniforms: only a probability within 1e-4 of one can flip
        assert (cuda_draw != cpu_draw).float().mean() < 1e-3
    else:
        torch.testing.assert_close(cuda_draw, cpu_draw, atol=1e-3, rtol=1e-3)


def test_beta_weights_only_the_objective():
    vae = ConvVAE(latent_dim=4, width=4, hidden=16)
    x = torch.rand(3, 1, 28, 28)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    t1, t0 = elbo(vae, x, beta=1.0, generator=g()), elbo(vae, x, beta=0.0, generator=g())
    assert torch.allclose(t1.elbo, t0.elbo)
    assert torch.allclose(t0.objective, t0.reconstruction)
    assert kl_weight(0, 1.0, 100) == 0 and kl_weight(50, 1.0, 100) == 0.5 and kl_weight(500, 0.5, 100) == 0.5


def test_gaussian_decoder_log_likelihood():
    vae = ConvVAE(latent_dim=4, width=4, hidden=16, likelihood="gaussian", min_sigma=0.05)
    x, z = torch.rand(2, 1, 28, 28), torch.randn(2, 4)
    mean, sigma = vae.decode(z), vae.sigma()
    expected = torch.distributions.Normal(mean, sigma).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(vae.log_px_given_z(x, z), expected, atol=1e-3)


def test_conditional_vae_uses_the_label():
    vae = ConvVAE(latent_dim=4, width=4, hidden=16, num_classes=3)
    x, y = torch.rand(2, 1, 28, 28), torch.tensor([0, 2])
    assert vae(x, y).elbo.shape == (2,)
    z = torch.randn(1, 4)
    assert not torch.allclose(vae.decode(z, torch.tensor([0])), vae.decode(z, torch.tensor([1])))
    with pytest.raises(ValueError, match="pass labels"):
        vae.encode(x)
    assert vae.sample(4, seed=0).shape == (4, 1, 28, 28)  # random labels when none are given


def tiny_data(n=32, classes=4, size=16):
    """Random 16x16 images: training code paths are the same at every size, and 16 is cheap."""
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8), torch.arange(n) % classes


@pytest.mark.parametrize("conditional", [False, True])
def test_train_vae_runs_records_and_evaluates(conditional):
    images, labels = tiny_data()
    data = (images, labels) if conditional else images
    vae, hist = train_vae(data, conditional=conditional, latent_dim=4, width=4, steps=3, batch_size=8,
                          kl_warmup=2, device=torch.device("cpu"), snapshot_every=2, snapshot_count=4, progress=False)
    assert len(hist["loss"]) == 3 and hist["beta"] == [0.0, 0.5, 1.0]
    assert [s for s, _ in vae.snapshots] == [0, 2]
    res = evaluate_vae(vae, data, k=4, max_images=8, batch_size=4)
    assert res["k"] == 4 and res["images"] == 8 and res["binarization"] == "dynamic"
    assert math.isfinite(res["iwae"]) and res["iwae"] < 0


def test_train_vae_is_deterministic_under_a_seed():
    images, _ = tiny_data()
    kw = dict(latent_dim=4, width=4, steps=2, batch_size=8, device=torch.device("cpu"), progress=False, seed=3)
    (_, h1), (_, h2) = train_vae(images, **kw), train_vae(images, **kw)
    assert h1["loss"] == h2["loss"]


def test_train_vae_stops_with_an_error_naming_the_step():
    images, _ = tiny_data()
    vae = ConvVAE(size=16, latent_dim=4, width=4, hidden=16)
    calls = {"n": 0}
    encode = vae.encode

    def bad_encode(x, y=None):  # healthy for two steps, then the encoder's output is NaN
        calls["n"] += 1
        mu, logvar = encode(x, y)
        return (mu * float("nan"), logvar) if calls["n"] > 2 else (mu, logvar)

    vae.encode = bad_encode
    with pytest.raises(FloatingPointError, match="step 2"):
        train_vae(images, vae, steps=10, batch_size=8, device=torch.device("cpu"), progress=False)
