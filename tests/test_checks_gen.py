"""The chapter 07 and 08 checks accept the library's implementations and name the classic mistakes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mlcourse.checks import CheckFailed
from mlcourse.checks.ch07 import check_d_loss, check_g_loss, check_gradient_penalty
from mlcourse.checks.ch08 import check_elbo, check_gaussian_kl, check_reparameterize
from mlcourse.generative import gan as lib_gan
from mlcourse.generative import vae as lib_vae


def unimplemented(*args, **kwargs):
    raise NotImplementedError()


@pytest.mark.parametrize("check", [check_d_loss, check_g_loss, check_gradient_penalty,
                                   check_reparameterize, check_gaussian_kl, check_elbo])
def test_unimplemented_says_so(check):
    with pytest.raises(CheckFailed, match="is not implemented yet"):
        check(unimplemented)


# ---- chapter 07 -------------------------------------------------------------------------
def lib_gp(critic, real, fake, eps):
    return lib_gan.gradient_penalty(critic, real, fake, eps=eps)


def test_ch07_library_passes(capsys):
    check_d_loss(lib_gan.d_loss_nonsaturating)
    check_g_loss(lib_gan.g_loss_nonsaturating)
    check_gradient_penalty(lib_gp)
    assert capsys.readouterr().out.count("✓") == 3


def test_ch07_bce_formulations_pass():
    """Other correct ways of writing the losses are accepted too."""
    def d_bce(r, f):
        return (F.binary_cross_entropy_with_logits(r, torch.ones_like(r))
                + F.binary_cross_entropy_with_logits(f, torch.zeros_like(f)))

    check_d_loss(d_bce)
    check_d_loss(lambda r, f: -F.logsigmoid(r).mean() - F.logsigmoid(-f).mean())
    check_g_loss(lambda f: F.binary_cross_entropy_with_logits(f, torch.ones_like(f)))
    check_g_loss(lambda f: -F.logsigmoid(f).mean())


def _naive_sigmoid_d(r, f):
    return -(torch.log(torch.sigmoid(r)).mean() + torch.log(1 - torch.sigmoid(f)).mean())


@pytest.mark.parametrize(
    "fn,message",
    [
        (lambda r, f: -lib_gan.d_loss_nonsaturating(r, f), "sign is flipped"),
        (lambda r, f: F.softplus(r).mean() + F.softplus(-f).mean(), "swapped"),
        (lambda r, f: F.softplus(-r).sum() + F.softplus(f).sum(), r"\*sum\*"),
        (lambda r, f: F.binary_cross_entropy_with_logits(torch.cat([r, f]), torch.cat([torch.ones_like(r), torch.zeros_like(f)])),
         "averaged over the real and fake logits together"),
        (lambda r, f: F.softplus(-r).mean() + F.softplus(-f).mean(), "target 1"),
        (_naive_sigmoid_d, "underflows"),
        (lambda r, f: F.softplus(-r) + F.softplus(f).mean(), "one number"),
        (lambda r, f: lib_gan.d_loss_nonsaturating(r, f).detach(), "detached"),
    ],
)
def test_ch07_d_loss_mistakes(fn, message):
    with pytest.raises(CheckFailed, match=message):
        check_d_loss(fn)


def test_ch07_d_loss_maximised_names_the_case():
    with pytest.raises(CheckFailed) as err:
        check_d_loss(lambda r, f: F.logsigmoid(r).mean() + F.logsigmoid(-f).mean())
    assert "cannot tell" in str(err.value) and "D *maximises*" in str(err.value)


@pytest.mark.parametrize(
    "fn,message",
    [
        (lib_gan.g_loss_saturating, r"\*saturating\*"),
        (lambda f: torch.log(1 - torch.sigmoid(f)).mean(), r"\*saturating\*"),
        (lambda f: F.softplus(f).mean(), "helps the discriminator"),
        (lambda f: -F.softplus(-f).mean(), "G \\*maximises\\*"),
        (lambda f: F.softplus(-f).sum(), r"\*sum\*"),
        (lambda f: -torch.log(torch.sigmoid(f)).mean(), "underflows"),
        (lambda f: F.softplus(-f), "one number"),
    ],
)
def test_ch07_g_loss_mistakes(fn, message):
    with pytest.raises(CheckFailed, match=message):
        check_g_loss(fn)


def _gp(where="between", norm="per-example", square=True, reduce="sum", create_graph=True, swap=False):
    """A gradient penalty with one classic mistake switched on."""
    def gp(critic, real, fake, eps):
        e = eps.view(-1, *([1] * (real.dim() - 1)))
        if where == "real":
            x = real.clone()
        elif where == "fake":
            x = fake.clone()
        elif where == "batch-eps":
            x = eps.mean() * real + (1 - eps.mean()) * fake
        else:
            x = (1 - e) * real + e * fake if swap else e * real + (1 - e) * fake
        x.requires_grad_(True)
        scores = critic(x)
        out = scores.sum() if reduce == "sum" else scores.mean()
        (g,) = torch.autograd.grad(out, x, create_graph=create_graph)
        if norm == "per-example":
            n = g.flatten(1).norm(dim=1)
        elif norm == "batch":
            n = g.norm()
        else:  # dim 1 of an image batch: the channels
            n = g.norm(dim=1)
        d = n - 1
        return (d**2).mean() if square else d.mean()

    return gp


def test_ch07_reference_style_gradient_penalty_passes():
    check_gradient_penalty(_gp())


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(square=False), r"\*square\*"),
        (dict(norm="batch"), "one norm over the whole batch"),
        (dict(norm="channels"), "per pixel"),
        (dict(reduce="mean"), r"\*mean\* of the critic's scores"),
        (dict(where="real"), "taken at the real images"),
        (dict(where="fake"), "taken at the fake images"),
        (dict(swap=True), "wrong way round"),
        (dict(where="batch-eps"), "one eps for the whole batch"),
        (dict(create_graph=False), "create_graph=True"),
    ],
)
def test_ch07_gradient_penalty_mistakes(kwargs, message):
    with pytest.raises(CheckFailed, match=message):
        check_gradient_penalty(_gp(**kwargs))


def test_ch07_gradient_penalty_broadcast_bug_is_reported_with_the_case():
    def gp(critic, real, fake, eps):  # eps [B] against [B, C, H, W]: broadcasts along the last axis
        x = (eps * real + (1 - eps) * fake).requires_grad_(True)
        (g,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
        return ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()

    with pytest.raises(CheckFailed, match="(?s)linear critic.*raised RuntimeError"):
        check_gradient_penalty(gp)


# ---- chapter 08 -------------------------------------------------------------------------
def lib_reparameterize(mu, logvar, eps):
    return mu + (0.5 * logvar).exp() * eps


def lib_elbo(x, logits, mu, logvar):
    rec = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    return rec - lib_vae.gaussian_kl(mu, logvar)


def test_ch08_library_passes(capsys):
    check_reparameterize(lib_reparameterize)
    check_gaussian_kl(lib_vae.gaussian_kl)
    check_elbo(lib_elbo)
    assert capsys.readouterr().out.count("✓") == 3


def test_ch08_reparameterize_matches_the_library_with_the_same_noise():
    """The reference above is the library's formula: same eps, same z."""
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    mu, logvar = torch.randn(3, 4), torch.randn(3, 4)
    z = lib_vae.reparameterize(mu, logvar, generator=g1)
    assert torch.allclose(z, lib_reparameterize(mu, logvar, torch.randn(3, 4, generator=g2)))
    check_reparameterize(lambda m, lv, e: torch.distributions.Normal(m, (0.5 * lv).exp()).loc + (0.5 * lv).exp() * e)


def test_ch08_elbo_with_library_bernoulli_decoder_passes():
    """The ELBO written with torch.distributions is accepted."""
    def elbo(x, logits, mu, logvar):
        rec = torch.distributions.Bernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
        return rec - lib_vae.gaussian_kl(mu, logvar)

    check_elbo(elbo)


@pytest.mark.parametrize(
    "fn,message",
    [
        (lambda m, lv, e: m + lv.exp() * e, "the variance"),
        (lambda m, lv, e: m + lv * e, "exponentiate it"),
        (lambda m, lv, e: m + 0.5 * lv * e, "that is log sigma"),
        (lambda m, lv, e: m + (-0.5 * lv).exp() * e, "sign of the exponent"),
        (lambda m, lv, e: m + (0.5 * lv).exp() * torch.randn_like(m), "draw your own noise"),
        (lambda m, lv, e: (0.5 * lv).exp() * e, "does not depend on mu"),
        (lambda m, lv, e: (m + (0.5 * lv).exp() * e).detach(), "detached"),
        (lambda m, lv, e: torch.normal(m.detach(), (0.5 * lv).exp().detach()) * 0 + m.detach() + (0.5 * lv.detach()).exp() * e,
         "detached"),
    ],
)
def test_ch08_reparameterize_mistakes(fn, message):
    with pytest.raises(CheckFailed, match=message):
        check_reparameterize(fn)


def _per_dim(mu, logvar):
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)


@pytest.mark.parametrize(
    "fn,message",
    [
        (lambda mu, lv: _per_dim(mu, lv).sum(0), "summed over the batch"),
        (lambda mu, lv: _per_dim(mu, lv).sum(), "one number"),
        (lambda mu, lv: _per_dim(mu, lv), r"sum them \(dim=-1\)"),
        (lambda mu, lv: _per_dim(mu, lv).mean(1), r"\*averaged\* over the latent"),
        (lambda mu, lv: -_per_dim(mu, lv).sum(1), "never negative"),
        (lambda mu, lv: 2 * _per_dim(mu, lv).sum(1), "factor 1/2"),
        (lambda mu, lv: 0.5 * (mu.pow(2) + (2 * lv).exp() - 2 * lv - 1.0).sum(1), "log sigma"),
        (lambda mu, lv: 0.5 * (mu.pow(2) + lv.exp() - lv).sum(1), "expected \\[0, 0, 0\\]"),
        (lambda mu, lv: _per_dim(mu, lv).sum(1).detach(), "detached"),
    ],
)
def test_ch08_kl_mistakes(fn, message):
    with pytest.raises(CheckFailed, match=message):
        check_gaussian_kl(fn)


def _rec(x, logits):
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


@pytest.mark.parametrize(
    "fn,message",
    [
        (lambda x, lg, mu, lv: -lib_elbo(x, lg, mu, lv), r"\*loss\*"),
        (lambda x, lg, mu, lv: lib_elbo(x, lg, mu, lv).mean(), "one ELBO per example"),
        (lambda x, lg, mu, lv: _rec(x, lg) + lib_vae.gaussian_kl(mu, lv), r"\*added\* the KL"),
        (lambda x, lg, mu, lv: -_rec(x, lg) - lib_vae.gaussian_kl(mu, lv), "reconstruction term has the wrong sign"),
        (lambda x, lg, mu, lv: -F.binary_cross_entropy_with_logits(lg, x, reduction="none").flatten(1).mean(1)
         - lib_vae.gaussian_kl(mu, lv), r"\*averaged\* over pixels"),
        (lambda x, lg, mu, lv: _rec(x, lg), "KL term is missing"),
        (lambda x, lg, mu, lv: _rec(x, lg) - lib_vae.gaussian_kl(mu, lv).mean(), "reduced over the batch"),
        (lambda x, lg, mu, lv: _rec(x, lg) - _per_dim(mu, lv).mean(1), "averaged over the latent"),
        (lambda x, lg, mu, lv: _rec(x, torch.sigmoid(lg)) - lib_vae.gaussian_kl(mu, lv), "applied a sigmoid"),
        (lambda x, lg, mu, lv: (x * torch.log(torch.sigmoid(lg)) + (1 - x) * torch.log(1 - torch.sigmoid(lg))).flatten(1).sum(1)
         - lib_vae.gaussian_kl(mu, lv), "underflows"),
        (lambda x, lg, mu, lv: lib_elbo(x, lg, mu, lv).detach(), "detached"),
    ],
)
def test_ch08_elbo_mistakes(fn, message):
    with pytest.raises(CheckFailed, match=message):
        check_elbo(fn)
