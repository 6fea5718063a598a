"""Variational autoencoders: the ELBO, the reparameterisation trick, IWAE likelihoods, a conditional VAE.

The model (Kingma and Welling, 2014, "Auto-Encoding Variational Bayes"; Rezende et al., 2014)
---------------------------------------------------------------------------------------------
A latent ``z ~ p(z) = N(0, I)`` is decoded into a distribution over images ``p(x | z)``. The
likelihood ``log p(x) = log E_p(z) p(x | z)`` is an intractable integral, so an *encoder*
``q(z | x) = N(mu(x), diag sigma^2(x))`` proposes the latents that explain ``x``, and Jensen's
inequality gives the **evidence lower bound**::

    log p(x) >= E_q[log p(x | z)] - KL(q(z | x) || p(z)) = ELBO(x)
                 reconstruction      regulariser

with equality exactly when ``q(z | x)`` is the true posterior ``p(z | x)``: the gap is
``KL(q(z | x) || p(z | x))``. Both networks are trained by maximising the ELBO.

* The **KL term** between two Gaussians is analytic. Per latent dimension,
  ``KL(N(mu, s^2) || N(0, 1)) = (mu^2 + s^2 - log s^2 - 1) / 2``, *summed* over the latent
  dimensions (they are independent) and never averaged over them: :func:`gaussian_kl`.
* The **reconstruction term** is estimated with samples ``z = mu + sigma * eps``,
  ``eps ~ N(0, I)`` (the *reparameterisation trick*): randomness moved into ``eps`` makes
  ``z`` a differentiable function of the encoder's outputs, so the gradient flows through
  the sampling step with low variance.
* ``beta`` multiplies the KL term in the *training objective* (Higgins et al., 2017, beta-VAE;
  annealed from 0 to 1 early in training by Bowman et al., 2016, so that the decoder learns
  to use ``z`` before the KL pulls ``q`` onto the prior). The ELBO reported is always the
  true bound, with ``beta = 1``.

Importance-weighted likelihood (Burda, Grosse and Salakhutdinov, 2016, "IWAE")
------------------------------------------------------------------------------
With ``k`` samples ``z_i ~ q(z | x)`` and weights ``w_i = p(x | z_i) p(z_i) / q(z_i | x)``::

    L_k(x) = log (1/k) sum_i w_i  <=  log p(x),      L_1 = ELBO (in expectation),
    E L_k increases with k and tends to log p(x).

:func:`iwae_log_likelihood` computes it with ``logsumexp`` over the ``k`` log-weights (the
weights themselves under- or overflow: ``p(x | z)`` of a 784-pixel image is ``e^{-100}``),
batched over samples in chunks. It is how VAE likelihoods are reported in papers
(``k = 5000`` in Burda et al.); report ``k`` alongside the number.

Binarisation: say which one, numbers depend on it
--------------------------------------------------
A Bernoulli decoder is a distribution over *binary* images, and our pixels are gray values.
There are three choices, and published numbers are only comparable under the same one:

* ``"dynamic"`` (default for training): each time an image is used, every pixel is set to 1
  with probability equal to its gray value (Salakhutdinov and Murray, 2008; Burda et al.,
  2016). The model is then a proper density over binary images, the data never repeat
  exactly (less overfitting), and the test set is binarised once with a fixed seed
  (:func:`binarize_fixed`) so that every model is scored on the same binary images.
* ``"threshold"``: pixels above 0.5 become 1. Deterministic, gives *higher* likelihoods
  (less noise to explain) that must not be compared with dynamic-binarisation numbers.
* ``"gray"``: gray values used directly as Bernoulli targets. Trains fine, but
  ``sum x log p + (1 - x) log (1 - p)`` is then not a normalised log-likelihood (Loaiza-Ganem
  and Cunningham, 2019, "The continuous Bernoulli"), so its "nats" are not a likelihood.

The Gaussian decoder (``likelihood="gaussian"``) is a *density* over continuous pixels. Its
values are not comparable with the Bernoulli ones (densities can exceed 1, and on constant
black pixels they grow without bound as sigma shrinks, hence the floor ``min_sigma``).

The model protocol
------------------
:func:`elbo` and :func:`iwae_log_likelihood` work with any module that has
``encode(x, y=None) -> (mu, logvar)`` and ``log_px_given_z(x, z, y=None) -> [B]`` (the log
density of each image given its latent, summed over pixels). The tests plug in a
linear-Gaussian model whose ``log p(x)`` is known in closed form.

Conditional VAE (Sohn, Lee and Yan, 2015; Kingma et al., 2014)
-------------------------------------------------------------
Give both networks the label: ``q(z | x, y)`` and ``p(x | z, y)``, with the prior kept at
``N(0, I)``. The latent then only has to carry *style* (slant, stroke width, position), and
``decode(z, y)`` draws a chosen class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import get_device
from ..train import History, train_loop
from .common import as_unit_float, check_images, unpack_data, upsampling_plan

BINARIZATIONS = ("dynamic", "threshold", "gray")
LIKELIHOODS = ("bernoulli", "gaussian")
LOG_2PI = math.log(2 * math.pi)


# ---------------------------------------------------------------------------------------
# Small pieces of probability
# ---------------------------------------------------------------------------------------
def binarize(x: torch.Tensor, mode: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Turn gray values in ``[0, 1]`` into the targets of a Bernoulli decoder (see the module notes)."""
    if mode == "dynamic":
        if generator is not None and generator.device != x.device:
            return torch.bernoulli(x.cpu(), generator=generator).to(x.device)
        return torch.bernoulli(x, generator=generator)
    if mode == "threshold":
        return (x > 0.5).to(x.dtype)
    if mode == "gray":
        return x
    raise ValueError(f"binarization must be one of {BINARIZATIONS}, got {mode!r}")


def binarize_fixed(x: torch.Tensor, mode: str = "dynamic", seed: int = 0) -> torch.Tensor:
    """One binarisation of an evaluation set, the same for every model (``seed`` fixes it)."""
    return binarize(x, mode, torch.Generator().manual_seed(seed))


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, diag exp(logvar)) || N(0, I))`` per example, summed over the last axis: ``[B]``."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).sum(-1)


def log_normal(z: torch.Tensor, mu: torch.Tensor | float = 0.0, logvar: torch.Tensor | float = 0.0) -> torch.Tensor:
    """``log N(z; mu, diag exp(logvar))`` summed over the last axis."""
    logvar = torch.as_tensor(logvar, dtype=z.dtype, device=z.device)
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) / logvar.exp()).sum(-1)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, n: int | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """``z = mu + exp(logvar / 2) * eps``, ``eps ~ N(0, I)``: ``[B, D]``, or ``[n, B, D]`` with ``n``."""
    shape = mu.shape if n is None else (n, *mu.shape)
    eps = torch.randn(shape, generator=generator, dtype=mu.dtype,
                      device="cpu" if generator is not None else mu.device).to(mu.device)
    return mu + (0.5 * logvar).exp() * eps


# ---------------------------------------------------------------------------------------
# The bound and the importance-weighted estimate, for any model with the protocol above
# ---------------------------------------------------------------------------------------
@dataclass
class ELBOTerms:
    """Per-example terms in nats, each ``[B]``: ``elbo = reconstruction - kl`` (a lower bound
    on ``log p(x)``) and the training ``objective = reconstruction - beta * kl``."""

    reconstruction: torch.Tensor
    kl: torch.Tensor
    elbo: torch.Tensor
    objective: torch.Tensor

    @property
    def loss(self) -> torch.Tensor:
        """Minus the mean objective: what an optimiser minimises."""
        return -self.objective.mean()


def _repeat(t: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """``[B, ...] -> [n * B, ...]`` as ``n`` stacked copies (sample-major, matching ``z.reshape``)."""
    if t is None:
        return None
    return t.unsqueeze(0).expand(n, *t.shape).reshape(n * t.shape[0], *t.shape[1:])


def elbo(model, x: torch.Tensor, y: torch.Tensor | None = None, beta: float = 1.0, samples: int = 1,
         generator: torch.Generator | None = None) -> ELBOTerms:
    """The ELBO of each image of ``x``, with the reconstruction term averaged over ``samples``
    reparameterised draws and the KL term analytic."""
    mu, logvar = model.encode(x, y)
    kl = gaussian_kl(mu, logvar)
    if samples == 1:
        rec = model.log_px_given_z(x, reparameterize(mu, logvar, generator=generator), y)
    else:
        z = reparameterize(mu, logvar, samples, generator)  # [S, B, D]
        b = x.shape[0]
        rec = model.log_px_given_z(_repeat(x, samples), z.reshape(samples * b, -1), _repeat(y, samples))
        rec = rec.view(samples, b).mean(0)
    return ELBOTerms(rec, kl, rec - kl, rec - beta * kl)


@torch.no_grad()
def iwae_log_likelihood(model, x: torch.Tensor, k: int, y: torch.Tensor | None = None,
                        chunk: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """The importance-weighted estimate ``L_k`` of ``log p(x)`` for each image: ``[B]``, in nats.

    ``k`` samples per image, drawn and decoded ``chunk`` at a time (default: all at once when
    ``k * B <= 4096`` images, else as many as fit in 4096), so memory does not grow with ``k``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    b = x.shape[0]
    chunk = chunk or max(1, min(k, 4096 // max(1, b)))
    mu, logvar = model.encode(x, y)
    log_w = []
    for start in range(0, k, chunk):
        n = min(chunk, k - start)
        z = reparameterize(mu, logvar, n, generator)  # [n, B, D]
        log_px = model.log_px_given_z(_repeat(x, n), z.reshape(n * b, -1), _repeat(y, n)).view(n, b)
        log_w.append(log_px + log_normal(z) - log_normal(z, mu, logvar))
    log_w = torch.cat(log_w)  # [k, B]
    return torch.logsumexp(log_w, dim=0) - math.log(k)


# ---------------------------------------------------------------------------------------
# A convolutional VAE
# ---------------------------------------------------------------------------------------
class ConvVAE(nn.Module):
    """Convolutional encoder and decoder for ``size x size`` images, Bernoulli or Gaussian decoder.

    Encoder: stride-2 convolutions (32, 64, ... channels) down to ``base x base``, a hidden
    layer, then ``mu`` and ``logvar``. Decoder: the mirror image with transposed convolutions,
    ending in one *logit* per pixel (Bernoulli) or one mean per pixel (Gaussian, through a
    sigmoid, with a learned global ``sigma >= min_sigma``).

    With ``num_classes`` it is a conditional VAE: a label embedding is concatenated to the
    encoder's features and to ``z``.
    """

    def __init__(self, size: int = 28, channels: int = 1, latent_dim: int = 32, width: int = 32,
                 hidden: int = 256, likelihood: str = "bernoulli", num_classes: int | None = None,
                 embed_dim: int = 16, min_sigma: float = 0.01, stages: int | None = None):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        self.size, self.channels, self.latent_dim = size, channels, latent_dim
        self.likelihood, self.num_classes, self.min_sigma = likelihood, num_classes, min_sigma
        base, n = upsampling_plan(size, stages)
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        extra = embed_dim if num_classes else 0

        down, c = [], channels
        for i in range(n):
            down += [nn.Conv2d(c, width * 2**i, 4, 2, 1), nn.ReLU()]
            c = width * 2**i
        self.encoder_conv = nn.Sequential(*down, nn.Flatten())
        flat = c * base * base
        self.encoder_head = nn.Sequential(nn.Linear(flat + extra, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent_dim))

        up = []
        for i in reversed(range(1, n)):
            up += [nn.ConvTranspose2d(width * 2**i, width * 2 ** (i - 1), 4, 2, 1), nn.ReLU()]
        up += [nn.ConvTranspose2d(width, channels, 4, 2, 1)]
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim + extra, hidden), nn.ReLU(), nn.Linear(hidden, flat), nn.ReLU(),
            nn.Unflatten(1, (c, base, base)), *up,
        )
        # log sigma of the Gaussian decoder, one for all pixels (unused by the Bernoulli decoder)
        self.log_sigma = nn.Parameter(torch.tensor(math.log(0.1))) if likelihood == "gaussian" else None
        self.snapshots: list[tuple[int, torch.Tensor]] = []  # (step, [0,1] images), filled by train_vae

    @property
    def conditional(self) -> bool:
        return self.embed is not None

    def _label(self, y):
        if self.embed is None:
            if y is not None:
                raise ValueError("this VAE is unconditional; it takes no labels")
            return None
        if y is None:
            raise ValueError("this VAE is conditional: pass labels")
        return self.embed(y)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of ``q(z | x[, y])``, each ``[B, latent_dim]``."""
        h = self.encoder_conv(x)
        e = self._label(y)
        if e is not None:
            h = torch.cat([h, e], 1)
        mu, logvar = self.encoder_head(h).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder output ``[B, C, H, W]``: Bernoulli logits, or Gaussian means in ``[0, 1]``."""
        e = self._label(y)
        out = self.decoder(z if e is None else torch.cat([z, e], 1))
        return out if self.likelihood == "bernoulli" else torch.sigmoid(out)

    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp().clamp(min=self.min_sigma)

    def log_px_given_z(self, x: torch.Tensor, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``log p(x | z[, y])`` per image, summed over pixels: ``[B]`` nats."""
        out = self.decode(z, y)
        if self.likelihood == "bernoulli":
            # log Bernoulli(x; sigmoid(logit)) = -BCE, written with logits for stability
            return -F.binary_cross_entropy_with_logits(out, x, reduction="none").flatten(1).sum(1)
        sigma = self.sigma()
        return (-0.5 * ((x - out) / sigma).pow(2) - sigma.log() - 0.5 * LOG_2PI).flatten(1).sum(1)

    def forward(self, x, y=None, beta: float = 1.0) -> ELBOTerms:
        return elbo(self, x, y, beta)

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None, seed: int | None = None,
               z: torch.Tensor | None = None, mean: bool = True) -> torch.Tensor:
        """``n`` images in ``[0, 1]`` on the CPU from ``z ~ N(0, I)``.

        ``mean=True`` shows the decoder's mean (pixel probabilities) rather than a binary or
        noisy draw from ``p(x | z)``: the usual way VAE samples are shown, and the form the
        metrics compare with gray-valued data. A conditional VAE draws random labels when
        ``labels`` is omitted. ``seed`` fixes ``z``, the labels and the draw from ``p(x | z)``
        (all drawn on the CPU, whatever the model's device).
        """
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        device = next(self.parameters()).device
        if z is None:
            z = torch.randn(n, self.latent_dim, generator=gen)
        if self.conditional and labels is None:
            labels = torch.randint(self.num_classes, (n,), generator=gen)
        was_training = self.training
        self.eval()
        try:
            out = self.decode(z.to(device), None if labels is None else labels.to(device))
        finally:
            self.train(was_training)
        probs = (torch.sigmoid(out) if self.likelihood == "bernoulli" else out).cpu()
        if not mean:  # drawn on the CPU, where ``gen`` lives: the same draw for a seed on any device
            probs = torch.bernoulli(probs, generator=gen) if self.likelihood == "bernoulli" \
                else (probs + self.sigma().cpu() * torch.randn(probs.shape, generator=gen)).clamp(0, 1)
        return probs

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder mean at the encoder mean, in ``[0, 1]``: what the latent code keeps of ``x``."""
        mu, _ = self.encode(x, y)
        out = self.decode(mu, y)
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out


# ---------------------------------------------------------------------------------------
# Training and evaluation
# ---------------------------------------------------------------------------------------
def kl_weight(step: int, beta: float = 1.0, warmup: int = 0) -> float:
    """KL annealing: ``beta * min(1, step / warmup)`` (linear warm-up, Bowman et al., 2016)."""
    if warmup <= 0:
        return beta
    return beta * min(1.0, step / warmup)


def train_vae(
    data,
    vae: ConvVAE | None = None,
    *,
    likelihood: str = "bernoulli",
    binarization: str = "dynamic",
    conditional: bool = False,
    latent_dim: int = 32,
    width: int = 32,
    steps: int = 3000,
    time_budget: float | None = None,
    batch_size: int = 64,
    lr: float = 1e-3,
    beta: float = 1.0,
    kl_warmup: int = 0,
    seed: int = 0,
    device: torch.device | None = None,
    snapshot_every: int | None = None,
    snapshot_count: int = 64,
    progress: bool = True,
) -> tuple[ConvVAE, History]:
    """Train a VAE by maximising the ELBO on ``data`` (ImageClassDataset, images or (images, labels)).

    ``binarization`` applies to the Bernoulli decoder's targets (see the module notes); the
    Gaussian decoder always sees gray values. ``beta`` and ``kl_warmup`` set the KL weight of
    the objective (:func:`kl_weight`). Logged per step: ``loss`` (minus the objective),
    ``elbo``, ``reconstruction`` and ``kl`` (batch means, nats per image), and ``beta``.
    ``snapshot_every`` stores decoder means for a fixed batch of ``z`` in ``vae.snapshots``.
    """
    if binarization not in BINARIZATIONS:
        raise ValueError(f"binarization must be one of {BINARIZATIONS}, got {binarization!r}")
    images, labels, num_classes = unpack_data(data)
    check_images(images)
    if conditional and labels is None:
        raise ValueError("conditional=True needs labels: pass an ImageClassDataset or (images, labels)")
    device = device or get_device()
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    if vae is None:
        vae = ConvVAE(images.shape[-1], images.shape[1], latent_dim, width, likelihood=likelihood,
                      num_classes=num_classes if conditional else None)
    if conditional != vae.conditional:
        raise ValueError(f"conditional={conditional} but the VAE given is {'' if vae.conditional else 'un'}conditional")
    vae = vae.to(device).train()
    if not hasattr(vae, "snapshots"):
        vae.snapshots = []
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    fixed_z = torch.randn(snapshot_count, vae.latent_dim, generator=rng)
    fixed_y = torch.arange(snapshot_count) % num_classes if vae.conditional else None

    def step(i):
        idx = torch.randint(len(images), (batch_size,), generator=rng)
        x = as_unit_float(images[idx])
        if vae.likelihood == "bernoulli":
            x = binarize(x, binarization, rng)
        y = labels[idx].to(device) if vae.conditional else None
        b = kl_weight(i, beta, kl_warmup)
        terms = elbo(vae, x.to(device), y, beta=b)
        opt.zero_grad(set_to_none=True)
        terms.loss.backward()
        opt.step()
        if snapshot_every and i % snapshot_every == 0:
            vae.snapshots.append((i, vae.sample(snapshot_count, labels=fixed_y, z=fixed_z)))
        return {"loss": terms.loss.item(), "elbo": terms.elbo.mean().item(),
                "reconstruction": terms.reconstruction.mean().item(), "kl": terms.kl.mean().item(), "beta": b}

    history = train_loop(step, steps, time_budget=time_budget, desc="VAE", progress=progress)
    last = max(history.steps.get("loss", [-1]), default=-1)
    if snapshot_every and last >= 0 and (not vae.snapshots or vae.snapshots[-1][0] != last):
        vae.snapshots.append((last, vae.sample(snapshot_count, labels=fixed_y, z=fixed_z)))
    vae.eval()
    return vae, history


@torch.no_grad()
def evaluate_vae(vae, data, k: int = 100, binarization: str = "dynamic", seed: int = 0,
                 batch_size: int = 100, max_images: int | None = None) -> dict:
    """Mean test ELBO and IWAE ``L_k`` in nats per image, on one fixed binarisation of ``data``.

    Returns ``{"elbo", "iwae", "k", "binarization", "images"}``. ``log p(x) >= iwae >= elbo``
    in expectation. For the Gaussian decoder the data stay gray and ``binarization`` is ignored.
    """
    images, labels, _ = unpack_data(data)
    if max_images is not None:
        images = images[:max_images]
        labels = None if labels is None else labels[:max_images]
    device = next(vae.parameters()).device
    x_all = as_unit_float(images)
    if vae.likelihood == "bernoulli":
        x_all = binarize_fixed(x_all, binarization, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    was_training = vae.training
    vae.eval()
    total_elbo = total_iwae = 0.0
    try:
        for i in range(0, len(x_all), batch_size):
            x = x_all[i : i + batch_size].to(device)
            y = labels[i : i + batch_size].to(device) if vae.conditional else None
            total_elbo += elbo(vae, x, y, generator=gen).elbo.sum().item()
            total_iwae += iwae_log_likelihood(vae, x, k, y, generator=gen).sum().item()
    finally:
        vae.train(was_training)
    n = len(x_all)
    return {"elbo": total_elbo / n, "iwae": total_iwae / n, "k": k,
            "binarization": binarization if vae.likelihood == "bernoulli" else "none (gaussian)", "images": n}
