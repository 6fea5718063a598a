"""The amortisation gap of a VAE's encoder, measured (Cremer, Li and Duvenaud, 2018).

A VAE's ELBO falls short of ``log p(x)`` by ``KL(q(z|x) || p(z|x))``, the *inference gap*.
Cremer et al. split it in two:

* the **approximation gap**: even the best Gaussian ``q`` for this one image differs from the
  true posterior;
* the **amortisation gap**: the encoder, one network for every image, proposes a worse
  Gaussian than the best one for this image.

The IWAE bound (chapter 08) sees their sum. The amortisation gap alone is measured by
finding, for each image, the Gaussian that maximises its ELBO with the decoder fixed,
starting from the encoder's proposal: :func:`amortisation_gap` does that with Adam on
``(mu, logvar)`` of every image at once (the images do not interact: the ELBO is a sum
over images). The reconstruction term uses the same ``samples`` draws of ε at every
step, so the objective is a deterministic function of ``(mu, logvar)`` and its rise is
the optimiser's work, not noise; the ELBOs it returns are both scored with fresh draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .vae import gaussian_kl


@dataclass
class AmortisationGap:
    """Per-image ELBOs ``[B]`` (nats) with the encoder's ``q`` and with the per-image optimum
    found; ``gap = optimised - encoder`` (a lower estimate of the amortisation gap)."""

    encoder: torch.Tensor
    optimised: torch.Tensor

    @property
    def gap(self) -> torch.Tensor:
        return self.optimised - self.encoder


def _elbo(model, x, mu, logvar, eps) -> torch.Tensor:
    """ELBO per image with the reparameterised draws ``eps [S, B, D]``: ``[B]``."""
    s, b = eps.shape[:2]
    z = mu + (0.5 * logvar).exp() * eps
    rec = model.log_px_given_z(x.unsqueeze(0).expand(s, *x.shape).reshape(s * b, *x.shape[1:]), z.reshape(s * b, -1))
    return rec.view(s, b).mean(0) - gaussian_kl(mu, logvar)


def amortisation_gap(model, x: torch.Tensor, steps: int = 200, lr: float = 1e-2, samples: int = 16, seed: int = 0) -> AmortisationGap:
    """The ELBO of each image of ``x`` with the encoder's ``q``, and after ``steps`` Adam
    steps on that image's own ``(mu, logvar)`` (decoder and encoder fixed).

    Both ELBOs are estimated with the same ``samples`` fresh draws per image, independent of
    the draws the optimisation used. An unconditional model (``encode(x)``,
    ``log_px_given_z(x, z)``) such as :class:`~mlcourse.generative.ConvVAE`.
    """
    if steps < 1 or samples < 1:
        raise ValueError(f"steps and samples must be at least 1, got steps={steps}, samples={samples}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    if x.dim() != 4 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch of images [B, C, H, W], got shape {tuple(x.shape)}")
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    try:
        with torch.no_grad():
            mu0, logvar0 = model.encode(x)
        draw = lambda: torch.randn((samples, *mu0.shape), generator=g, dtype=mu0.dtype).to(mu0.device)  # noqa: E731
        train_eps, score_eps = draw(), draw()
        mu, logvar = mu0.clone().requires_grad_(), logvar0.clone().requires_grad_()
        opt = torch.optim.Adam([mu, logvar], lr=lr)
        for _ in range(steps):
            loss = -_elbo(model, x, mu, logvar, train_eps).sum()  # a sum: each image's own gradient
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            return AmortisationGap(_elbo(model, x, mu0, logvar0, score_eps), _elbo(model, x, mu, logvar, score_eps))
    finally:
        model.train(was_training)
        for p in model.parameters():
            p.grad = None  # the optimisation's backward passes reached the decoder's weights
