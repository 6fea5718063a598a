"""Checks for the chapter 08 exercise: the reparameterisation trick, the Gaussian KL, the ELBO.

The learner's signatures:

* ``reparameterize(mu [B, D], logvar [B, D], eps [B, D]) -> z [B, D]``: ``mu + exp(logvar / 2) * eps``;
* ``gaussian_kl(mu, logvar) -> [B]``: ``KL(N(mu, diag exp(logvar)) || N(0, I))`` per example,
  summed over the latent dimensions;
* ``elbo(x [B, C, H, W], logits [B, C, H, W], mu, logvar) -> [B]``: the Bernoulli
  reconstruction log-likelihood summed over pixels, minus the KL, one number per example.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import Check


def _close(out, want, atol=1e-5) -> bool:
    return (torch.is_tensor(out) and out.shape == want.shape
            and bool(torch.allclose(out.double(), want.double(), atol=atol, rtol=1e-5)))


def _tensor(chk: Check, out) -> None:
    chk.expect(torch.is_tensor(out), f"expected a tensor, got {type(out).__name__}")


def _show(t: torch.Tensor) -> str:
    return str([round(v, 4) for v in t.detach().double().flatten().tolist()])


# ---------------------------------------------------------------------------------------
# Reparameterisation
# ---------------------------------------------------------------------------------------
def check_reparameterize(reparameterize) -> None:
    """``reparameterize(mu, logvar, eps) = mu + exp(0.5 * logvar) * eps``."""
    chk = Check("check_reparameterize", "reparameterize")
    with chk.case("mu = 0, logvar = log 4 (variance 4, standard deviation 2), eps = 1"):
        mu, logvar, eps = torch.zeros(1, 3), torch.full((1, 3), math.log(4.0)), torch.ones(1, 3)
        out = chk.call(reparameterize, mu, logvar, eps)
        _tensor(chk, out)
        chk.expect(out.shape == mu.shape, f"expected shape {tuple(mu.shape)} (same as mu), got {tuple(out.shape)}")
        want = torch.full((1, 3), 2.0)
        if _close(out, torch.full((1, 3), 4.0)):
            chk.fail("got 4 = the variance: exp(logvar) is the *variance* sigma^2. Scale eps by the standard "
                     "deviation sigma = exp(0.5 * logvar)")
        if _close(out, torch.full((1, 3), math.log(4.0))):
            chk.fail("got log 4: logvar is a *log*-variance; exponentiate it, sigma = exp(0.5 * logvar)")
        if _close(out, torch.full((1, 3), 0.5 * math.log(4.0))):
            chk.fail("got log 2 = 0.5 * logvar: that is log sigma; exponentiate it, sigma = exp(0.5 * logvar)")
        if _close(out, torch.full((1, 3), 0.5)):
            chk.fail("got 1/2 = 1/sigma: the sign of the exponent is flipped; sigma = exp(+0.5 * logvar)")
        if not _close(out, want):
            again = chk.call(reparameterize, mu, logvar, eps)
            if torch.is_tensor(again) and again.shape == out.shape and not torch.equal(again, out):
                chk.fail("two calls with the same eps gave different z: use the eps passed in, do not draw your own noise")
        chk.expect(_close(out, want), f"expected z = 0 + 2 * 1 = 2 in every entry, got {_show(out)}")

    g = torch.Generator().manual_seed(0)
    mu, logvar, eps = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    with chk.case("a batch of 4 with 3 latent dimensions, random mu, logvar and eps"):
        out = chk.call(reparameterize, mu, logvar, eps)
        _tensor(chk, out)
        want = mu + (0.5 * logvar).exp() * eps
        if _close(out, mu + logvar.exp() * eps):
            chk.fail("you scaled eps by exp(logvar), the variance; the standard deviation is exp(0.5 * logvar)")
        if _close(out, (0.5 * logvar).exp() * eps):
            chk.fail("z does not depend on mu: z = mu + sigma * eps")
        if _close(out, mu + (0.5 * logvar).exp()):
            chk.fail("z does not depend on eps: z = mu + sigma * eps")
        chk.expect(_close(out, want), f"expected {_show(want)}, got {_show(out)}")

    with chk.case("z is a differentiable function of mu and logvar (the point of the trick)"):
        m, lv = mu.clone().requires_grad_(True), logvar.clone().requires_grad_(True)
        out = chk.call(reparameterize, m, lv, eps)
        chk.expect(out.requires_grad, "z is detached from mu and logvar: no .detach(), .item(), numpy or "
                   "torch.normal(mu, std) (which samples without a gradient); write mu + std * eps")
        out.sum().backward()
        chk.expect(m.grad is not None and torch.allclose(m.grad, torch.ones_like(mu)),
                   f"dz/dmu should be 1 everywhere, got {None if m.grad is None else _show(m.grad)}")
        want = 0.5 * (0.5 * logvar).exp() * eps
        chk.expect(lv.grad is not None and torch.allclose(lv.grad, want, atol=1e-5),
                   f"dz/dlogvar should be 0.5 * sigma * eps = {_show(want)}, got {None if lv.grad is None else _show(lv.grad)}")
    chk.done()


# ---------------------------------------------------------------------------------------
# The KL term
# ---------------------------------------------------------------------------------------
def _ref_kl(mu, logvar):
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).sum(-1)


def check_gaussian_kl(gaussian_kl) -> None:
    """``gaussian_kl(mu [B, D], logvar [B, D]) -> [B]``, summed over the D latent dimensions."""
    chk = Check("check_gaussian_kl", "gaussian_kl")
    with chk.case("q equal to the prior (mu = 0, logvar = 0): KL = 0 for each of 3 examples"):
        out = chk.call(gaussian_kl, torch.zeros(3, 5), torch.zeros(3, 5))
        _tensor(chk, out)
        chk.expect(_close(out, torch.zeros(3)) or out.numel() != 3,
                   f"expected [0, 0, 0], got {_show(out)}: check the '- 1' term of the formula")
    g = torch.Generator().manual_seed(0)
    b, d = 3, 5
    mu, logvar = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)
    per_dim = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)
    want = per_dim.sum(1)
    with chk.case("a batch of 3 examples with 5 latent dimensions"):
        out = chk.call(gaussian_kl, mu, logvar)
        _tensor(chk, out)
        shape = tuple(out.shape)
        if shape == ():
            chk.fail(f"got one number ({float(out.detach()):.4f}) for the whole batch: return one KL per example, "
                     "shape [B] = (3,); sum over the latent dimensions only (dim=-1)")
        if shape == (d,):
            chk.fail("got shape (5,) = [D]: you summed over the batch (dim 0) instead of the latent dimensions. "
                     "Sum over dim=-1 to get one KL per example, shape [B] = (3,)")
        if shape == (b, d):
            chk.fail("got shape (3, 5) = [B, D], the KL of each latent dimension: sum them (dim=-1), the "
                     "dimensions are independent so their KLs add up")
        chk.expect(shape == (b,), f"expected shape (3,) = [B], got {shape}")
        if _close(out, per_dim.mean(1)):
            chk.fail("you *averaged* over the latent dimensions: the KL of a product of independent Gaussians is "
                     "the *sum* of the per-dimension KLs (averaging divides the regulariser by D)")
        if _close(out, -want):
            chk.fail(f"got {_show(out)}, minus the KL: a KL divergence is never negative. "
                     "KL = 0.5 * sum(mu^2 + exp(logvar) - logvar - 1)")
        if _close(out, 2 * want):
            chk.fail("got twice the KL: the formula has a factor 1/2, KL = 0.5 * sum(mu^2 + exp(logvar) - logvar - 1)")
        if _close(out, 0.5 * (mu.pow(2) + (2 * logvar).exp() - 2 * logvar - 1.0).sum(1)):
            chk.fail("you treated logvar as log sigma (the log standard deviation); it is the log *variance*: "
                     "sigma^2 = exp(logvar), log sigma^2 = logvar")
        if _close(out, 0.5 * (mu.pow(2) + logvar.exp() - logvar).sum(1)):
            chk.fail("the '- 1' is missing: KL = 0.5 * sum(mu^2 + exp(logvar) - logvar - 1), which is 0 when q = p")
        torch_kl = torch.distributions.kl_divergence(
            torch.distributions.Normal(mu, (0.5 * logvar).exp()), torch.distributions.Normal(0.0, 1.0)).sum(1)
        assert torch.allclose(torch_kl, want, atol=1e-5)
        chk.expect(_close(out, want), f"expected {_show(want)}, got {_show(out)}")
    with chk.case("more examples than latent dimensions (8 x 2)"):
        mu2, lv2 = torch.randn(8, 2, generator=g), torch.randn(8, 2, generator=g)
        out = chk.call(gaussian_kl, mu2, lv2)
        want2 = _ref_kl(mu2, lv2)
        chk.expect(_close(out, want2), f"expected {_show(want2)}, got {_show(out) if torch.is_tensor(out) else out!r}")
    with chk.case("gradients reach mu and logvar"):
        m, lv = mu.clone().requires_grad_(True), logvar.clone().requires_grad_(True)
        out = chk.call(gaussian_kl, m, lv)
        chk.expect(out.requires_grad, "the KL is detached from mu and logvar: no .detach(), .item() or numpy inside")
        out.sum().backward()
        chk.expect(torch.allclose(m.grad, mu, atol=1e-5), f"dKL/dmu should be mu, got {_show(m.grad)}")
    chk.done()


# ---------------------------------------------------------------------------------------
# The ELBO
# ---------------------------------------------------------------------------------------
def _rec(x, logits):
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def check_elbo(elbo) -> None:
    """``elbo(x, logits, mu, logvar) -> [B]``: ``sum over pixels of log Bernoulli(x; sigmoid(logits)) - KL``."""
    chk = Check("check_elbo", "elbo")
    g = torch.Generator().manual_seed(0)
    b, d = 3, 4
    x = (torch.rand(b, 1, 5, 5, generator=g) < 0.4).float()
    logits = 2 * torch.randn(b, 1, 5, 5, generator=g)
    mu, logvar = torch.randn(b, d, generator=g), 0.5 * torch.randn(b, d, generator=g)
    rec, kl = _rec(x, logits), _ref_kl(mu, logvar)
    want = rec - kl
    with chk.case("3 binary images of 1x5x5, their decoder logits, 4 latent dimensions"):
        out = chk.call(elbo, x, logits, mu, logvar)
        _tensor(chk, out)
        shape = tuple(out.shape)
        if shape == ():
            chk.fail(f"got one number ({float(out.detach()):.3f}) for the whole batch: return one ELBO per example, shape [B] = (3,)")
        chk.expect(shape == (b,), f"expected shape (3,) = [B], got {shape}")
        if _close(out, -want, atol=1e-4):
            chk.fail(f"got {_show(out)}, minus the ELBO: that is the *loss* an optimiser minimises. Return the "
                     f"bound itself, log p(x|z) - KL (it is negative for binary images: {_show(want)})")
        if _close(out, rec + kl, atol=1e-4):
            chk.fail("you *added* the KL: the ELBO is reconstruction - KL (the KL is the price of the code)")
        if _close(out, -rec - kl, atol=1e-4):
            chk.fail("the reconstruction term has the wrong sign: log p(x|z) = -BCE(logits, x) summed over pixels")
        mean_rec = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).mean(1)
        if _close(out, mean_rec - kl, atol=1e-4):
            chk.fail("the reconstruction term is *averaged* over pixels: log p(x|z) of independent pixels is the "
                     "*sum* of their log-likelihoods (averaging makes the KL 25 times too heavy here)")
        if _close(out, rec, atol=1e-4):
            chk.fail("the KL term is missing: ELBO = log p(x|z) - KL(q(z|x) || p(z))")
        if _close(out, rec - kl.sum(), atol=1e-4) or _close(out, rec - kl.mean(), atol=1e-4):
            chk.fail("the KL was reduced over the batch before being subtracted: each example has its own KL "
                     "(sum over the latent dimensions only)")
        if _close(out, rec - 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).mean(1), atol=1e-4):
            chk.fail("the KL is averaged over the latent dimensions; sum it over them")
        double = -F.binary_cross_entropy_with_logits(torch.sigmoid(logits), x, reduction="none").flatten(1).sum(1)
        if _close(out, double - kl, atol=1e-4):
            chk.fail("you applied a sigmoid to the logits before binary_cross_entropy_with_logits, which applies "
                     "its own: pass the logits as they are")
        chk.expect(_close(out, want, atol=1e-4), f"expected {_show(want)}, got {_show(out)}")

    with chk.case("confident wrong logits (+-60) give a large but finite negative ELBO"):
        xx = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 1, 1, 2)
        lg = torch.tensor([[-60.0, 60.0], [60.0, -60.0]]).view(2, 1, 1, 2)
        z0 = torch.zeros(2, d)
        out = chk.call(elbo, xx, lg, z0, z0)
        if not bool(torch.isfinite(out).all()):
            chk.fail(f"got {out.tolist()}: log(sigmoid(logit)) underflows to log(0). Compute the Bernoulli "
                     "log-likelihood from the logits: -F.binary_cross_entropy_with_logits(logits, x, reduction='none')")
        chk.expect(_close(out, torch.tensor([-120.0, -120.0]), atol=1e-2), f"expected [-120, -120], got {_show(out)}")

    with chk.case("gradients reach the logits, mu and logvar"):
        lg, m, lv = (t.clone().requires_grad_(True) for t in (logits, mu, logvar))
        out = chk.call(elbo, x, lg, m, lv)
        chk.expect(out.requires_grad, "the ELBO is detached: no .detach(), .item() or numpy inside")
        out.sum().backward()
        chk.expect(lg.grad is not None and m.grad is not None and lv.grad is not None,
                   "the ELBO does not depend on all of logits, mu and logvar")
        chk.expect(torch.allclose(lg.grad, x - torch.sigmoid(logits), atol=1e-5),
                   "d ELBO / d logits should be x - sigmoid(logits) per pixel")
    chk.done()
