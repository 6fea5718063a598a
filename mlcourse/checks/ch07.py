"""Checks for the chapter 07 exercise: the GAN losses (with logits) and the WGAN-GP gradient penalty.

The learner's signatures:

* ``d_loss(real_logits [B], fake_logits [B']) -> scalar``: the discriminator's cross-entropy,
  ``mean softplus(-real) + mean softplus(fake)``, which D *minimises*;
* ``g_loss(fake_logits [B]) -> scalar``: the non-saturating generator loss
  ``mean softplus(-fake) = -mean log sigmoid(fake)``;
* ``gradient_penalty(critic, real, fake, eps [B]) -> scalar``:
  ``mean_i (||grad f(x_hat_i)||_2 - 1)^2`` at ``x_hat_i = eps_i real_i + (1 - eps_i) fake_i``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import Check


def _close(out, want, atol=1e-5) -> bool:
    return torch.is_tensor(out) and out.shape == want.shape and bool(torch.allclose(out.double(), want.double(), atol=atol, rtol=1e-5))


def _scalar(chk: Check, out, what: str) -> None:
    chk.expect(torch.is_tensor(out), f"expected a tensor, got {type(out).__name__}")
    if out.dim() == 1:
        chk.fail(f"got a tensor of shape {tuple(out.shape)}: {what} must be one number (a 0-dim tensor); "
                 "average over the batch with .mean()")
    chk.expect(out.dim() == 0, f"expected a scalar (0-dim tensor), got shape {tuple(out.shape)}")


def _finite(chk: Check, out) -> None:
    if not bool(torch.isfinite(out).all()):
        chk.fail(f"got {out.tolist()} for large logits: log(sigmoid(a)) underflows to log(0) = -inf. "
                 "Work with logits: -log sigmoid(a) = softplus(-a), -log(1 - sigmoid(a)) = softplus(a) "
                 "(or F.binary_cross_entropy_with_logits)")


# ---------------------------------------------------------------------------------------
# The discriminator's loss
# ---------------------------------------------------------------------------------------
def _ref_d(real, fake):
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def check_d_loss(d_loss) -> None:
    """``d_loss(real_logits, fake_logits)``: ``mean softplus(-real) + mean softplus(fake)``."""
    chk = Check("check_d_loss", "d_loss")
    with chk.case("a discriminator that cannot tell (all logits 0) scores 2 log 2"):
        out = chk.call(d_loss, torch.zeros(4), torch.zeros(4))
        _scalar(chk, out, "the loss")
        want = torch.tensor(2 * math.log(2.0))
        if _close(out, -want):
            chk.fail(f"got {float(out.detach()):.4f} = -2 log 2: the sign is flipped. You wrote the value function "
                     "log D(x) + log(1 - D(G(z))), which D *maximises*; an optimiser minimises, so return "
                     "its negative, the cross-entropy (expected +1.3863)")
        if _close(out, want / 2):
            chk.fail(f"got {float(out.detach()):.4f} = log 2: you averaged over the real and fake logits together "
                     "(one BCE over the concatenated batch). Expected the *sum* of the two averages, "
                     f"mean over reals + mean over fakes = {float(want.detach()):.4f}")
        if _close(out, 4 * want):
            chk.fail(f"got {float(out.detach()):.4f} = 4 x 2 log 2, the *sum* over the 4 logits of each batch; use the mean of "
                     "each term so the loss does not grow with the batch size")
        chk.expect(_close(out, want), f"expected 2 log 2 = {float(want.detach()):.4f}, got {float(out.detach()):.4f}")

    real, fake = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.5, -3.0, 0.0, -0.5, 2.5])
    with chk.case("3 real logits [2, -1, 0.5] and 5 fake logits [1.5, -3, 0, -0.5, 2.5]"):
        out = chk.call(d_loss, real, fake)
        _scalar(chk, out, "the loss")
        want = _ref_d(real, fake)
        if _close(out, -want):
            chk.fail(f"got {float(out.detach()):.4f}, minus the expected {float(want.detach()):.4f}: you return the value function that D "
                     "maximises. Minimising it would make the discriminator *worse*. Return the cross-entropy "
                     "-[log D(x) + log(1 - D(G(z)))] = softplus(-real) + softplus(fake)")
        if _close(out, _ref_d(fake, real)):
            chk.fail("real and fake are swapped: D must output *high* logits for real images (target 1) and low "
                     "ones for fakes (target 0), i.e. softplus(-real) + softplus(fake)")
        if _close(out, F.softplus(-real).sum() + F.softplus(fake).sum()):
            chk.fail(f"got {float(out.detach()):.4f}, the *sum* over the batches; use the mean of each term "
                     f"({float(want.detach()):.4f}) so the loss does not grow with the batch size")
        both = F.binary_cross_entropy_with_logits(torch.cat([real, fake]), torch.cat([torch.ones(3), torch.zeros(5)]))
        if _close(out, both):
            chk.fail("you averaged one cross-entropy over the real and fake logits together; with batches of different "
                     f"sizes that weights them unequally. Expected mean over reals + mean over fakes = {float(want.detach()):.4f}")
        if _close(out, F.softplus(-real).mean() + F.softplus(-fake).mean()):
            chk.fail("the fake term uses target 1: fakes must be pushed *down*, -log(1 - sigmoid(fake)) = softplus(fake)")
        chk.expect(_close(out, want), f"expected {float(want.detach()):.4f}, got {float(out.detach()):.4f}")

    with chk.case("confident logits (+-100) give a finite loss"):
        out = chk.call(d_loss, torch.tensor([100.0, -100.0]), torch.tensor([-100.0, 100.0]))
        _finite(chk, out)
        want = _ref_d(torch.tensor([100.0, -100.0]), torch.tensor([-100.0, 100.0]))
        chk.expect(_close(out, want, atol=1e-3), f"expected {float(want.detach()):.4f}, got {float(out.detach()):.4f}")

    with chk.case("gradients reach the logits, and lower the loss in the right direction"):
        r, f = torch.zeros(4, requires_grad=True), torch.zeros(4, requires_grad=True)
        out = chk.call(d_loss, r, f)
        chk.expect(out.requires_grad, "the loss is detached from the logits: no .item(), .detach() or numpy inside")
        out.backward()
        chk.expect(r.grad is not None and bool((r.grad < 0).all()) and bool((f.grad > 0).all()),
                   f"d loss / d real_logits should be negative (raising a real logit lowers the loss) and "
                   f"d loss / d fake_logits positive; got {r.grad} and {f.grad}")
    chk.done()


# ---------------------------------------------------------------------------------------
# The generator's loss
# ---------------------------------------------------------------------------------------
def check_g_loss(g_loss) -> None:
    """``g_loss(fake_logits)``: the non-saturating loss ``mean softplus(-fake)``."""
    chk = Check("check_g_loss", "g_loss")
    fake = torch.tensor([1.5, -3.0, 0.0, -0.5, 2.5])
    want = F.softplus(-fake).mean()
    with chk.case("5 fake logits [1.5, -3, 0, -0.5, 2.5]"):
        out = chk.call(g_loss, fake)
        _scalar(chk, out, "the loss")
        if _close(out, -F.softplus(fake).mean()):
            chk.fail("this is the *saturating* minimax loss, mean log(1 - D(G(z))). When D confidently rejects the "
                     "fakes (D(G(z)) near 0, early in training) its gradient vanishes and G stops learning. "
                     "Use the non-saturating loss: minimise -log D(G(z)) = softplus(-fake)")
        if _close(out, F.softplus(fake).mean()):
            chk.fail("you minimise -log(1 - D(G(z))) = softplus(fake): that pushes D(G(z)) *down*, i.e. the generator "
                     "helps the discriminator. Minimise -log D(G(z)) = softplus(-fake)")
        if _close(out, -want):
            chk.fail(f"got {float(out.detach()):.4f}, minus the expected {float(want.detach()):.4f}: you return log D(G(z)), which G "
                     "*maximises*; an optimiser minimises, so return -log D(G(z)) = softplus(-fake)")
        if _close(out, F.softplus(-fake).sum()):
            chk.fail(f"got the *sum* over the batch; use the mean ({float(want.detach()):.4f})")
        chk.expect(_close(out, want), f"expected {float(want.detach()):.4f}, got {float(out.detach()):.4f}")

    with chk.case("D rejects every fake confidently (logits -10): the gradient must not vanish"):
        f = torch.full((4,), -10.0, requires_grad=True)
        out = chk.call(g_loss, f)
        _finite(chk, out)
        chk.expect(out.requires_grad, "the loss is detached from the logits: no .item(), .detach() or numpy inside")
        out.backward()
        # d/da softplus(-a) = -sigmoid(-a), about -1 at a = -10, divided by B for the mean
        want_grad = -torch.sigmoid(torch.tensor(10.0)) / 4
        if f.grad.abs().max() < 1e-3:
            chk.fail(f"the gradient is {f.grad.tolist()}: it has vanished exactly where the generator is worst. "
                     "That is the saturating loss; use softplus(-fake)")
        chk.expect(torch.allclose(f.grad, want_grad.expand(4), atol=1e-4),
                   f"expected d loss / d logit = {float(want_grad):.4f} for each fake, got {f.grad.tolist()}")

    with chk.case("confident logits (+-100) give a finite loss"):
        out = chk.call(g_loss, torch.tensor([100.0, -100.0]))
        _finite(chk, out)
        chk.expect(_close(out, torch.tensor(50.0), atol=1e-3), f"expected 50.0, got {float(out.detach()):.4f}")
    chk.done()


# ---------------------------------------------------------------------------------------
# The gradient penalty
# ---------------------------------------------------------------------------------------
class _Linear(nn.Module):
    """``f(x) = <w, x>``: the gradient is ``w`` everywhere, whatever ``x``."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x):
        return (x.flatten(1) * self.w.flatten()).sum(1)


class _Quadratic(nn.Module):
    """``f(x) = a ||x||^2 / 2``: the gradient is ``a x``, so its norm depends on where it is taken."""

    def __init__(self, a: float = 1.0):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))

    def forward(self, x):
        return 0.5 * self.a * x.flatten(1).pow(2).sum(1)


def _ref_gp(critic, real, fake, eps):
    e = eps.view(-1, *([1] * (real.dim() - 1)))
    x = (e * real + (1 - e) * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()


def _norms_at(critic, points):
    x = points.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(critic(x).sum(), x)
    return g.flatten(1).norm(dim=1)


def check_gradient_penalty(gradient_penalty) -> None:
    """``gradient_penalty(critic, real, fake, eps)``: ``mean_i (||grad f(x_hat_i)|| - 1)^2``."""
    chk = Check("check_gradient_penalty", "gradient_penalty")
    g = torch.Generator().manual_seed(0)
    b = 4
    real = torch.randn(b, 1, 3, 3, generator=g, dtype=torch.float64)
    fake = torch.randn(b, 1, 3, 3, generator=g, dtype=torch.float64)
    eps = torch.tensor([0.1, 0.4, 0.7, 0.9], dtype=torch.float64)

    w = torch.randn(1, 3, 3, generator=g, dtype=torch.float64)
    w = 3.0 * w / w.norm()  # gradient norm 3 everywhere: penalty (3 - 1)^2 = 4
    lin = _Linear(w).double()
    with chk.case("a linear critic f(x) = <w, x> with ||w|| = 3 on 4 images of 1x3x3: penalty (3 - 1)^2 = 4"):
        out = chk.call(gradient_penalty, lin, real, fake, eps)
        _scalar(chk, out, "the penalty")
        want = torch.tensor(4.0, dtype=torch.float64)
        if _close(out, torch.tensor(2.0, dtype=torch.float64)):
            chk.fail("got 2 = ||g|| - 1: the penalty is the *square* (||grad f(x_hat)|| - 1)^2, "
                     "so that gradients too small are penalised as well as gradients too large")
        whole = math.sqrt(b) * 3.0
        if _close(out, torch.tensor((whole - 1) ** 2, dtype=torch.float64)):
            chk.fail(f"got {float(out.detach()):.3f} = (||G|| - 1)^2 with one norm over the whole batch ({whole:.0f} = sqrt(4) x 3). "
                     "The constraint is per example: take one norm per image, grad.flatten(1).norm(dim=1), "
                     "then average (norm - 1)^2 over the batch")
        if _close(out, torch.tensor((3.0 / b - 1) ** 2, dtype=torch.float64)):
            chk.fail("got (3/4 - 1)^2: you differentiated the *mean* of the critic's scores, which divides each "
                     "example's gradient by the batch size. Differentiate the *sum*: example i's score depends "
                     "only on x_hat_i, so the gradient of the sum is each example's own gradient")
        per_pixel = ((w.abs().expand(b, 1, 3, 3) - 1) ** 2).mean()
        if _close(out, per_pixel):
            chk.fail("the norm was taken over dimension 1 (the channels) of [B, C, H, W] images, i.e. per pixel. "
                     "Flatten each example first: grad.flatten(1).norm(dim=1)")
        chk.expect(_close(out, want, atol=1e-6), f"expected 4.0, got {float(out.detach()):.6f}")

    quad = _Quadratic(1.0).double()
    with chk.case("a quadratic critic f(x) = ||x||^2 / 2, whose gradient x_hat depends on where it is taken"):
        out = chk.call(gradient_penalty, quad, real, fake, eps)
        _scalar(chk, out, "the penalty")
        want = _ref_gp(quad, real, fake, eps)

        def at(points):
            return ((_norms_at(quad, points) - 1) ** 2).mean()

        e = eps.view(-1, 1, 1, 1)
        if _close(out, at(real)):
            chk.fail("the gradient was taken at the real images. WGAN-GP takes it at random points *between* real "
                     "and fake: x_hat = eps * real + (1 - eps) * fake, one eps per example")
        if _close(out, at(fake)):
            chk.fail("the gradient was taken at the fake images. WGAN-GP takes it at random points *between* real "
                     "and fake: x_hat = eps * real + (1 - eps) * fake, one eps per example")
        if _close(out, at((1 - e) * real + e * fake)):
            chk.fail("the interpolation is the wrong way round: the exercise's convention is "
                     "x_hat = eps * real + (1 - eps) * fake (eps weights the real image)")
        if _close(out, at(eps.mean() * real + (1 - eps.mean()) * fake)):
            chk.fail("one eps for the whole batch: each example gets its own eps_i (reshape eps [B] to [B, 1, 1, 1])")
        chk.expect(_close(out, want, atol=1e-6), f"expected {float(want.detach()):.6f}, got {float(out.detach()):.6f}")

    with chk.case("the penalty can be differentiated with respect to the critic's weights"):
        lin.zero_grad()
        out = chk.call(gradient_penalty, lin, real, fake, eps)
        if not out.requires_grad:
            chk.fail("the penalty does not depend on the critic's weights: pass create_graph=True to "
                     "torch.autograd.grad so that the gradient itself can be differentiated (and no .detach())")
        out.backward()
        # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
        want_grad = 2 * (3.0 - 1.0) * w / 3.0
        got = lin.w.grad
        chk.expect(got is not None and torch.allclose(got, want_grad, atol=1e-6),
                   f"d penalty / d w should be 2 (||w|| - 1) w / ||w||; got {None if got is None else got.flatten().tolist()}")
    chk.done()
