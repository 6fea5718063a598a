"""Generative adversarial networks: DCGAN, the non-saturating loss, WGAN-GP, class conditioning.

The game (Goodfellow et al., 2014, "Generative Adversarial Nets")
-----------------------------------------------------------------
A generator ``G`` turns noise ``z ~ N(0, I)`` into an image; a discriminator ``D`` outputs a
logit ``D(x)``, with ``sigmoid(D(x))`` its belief that ``x`` is real. They play::

    min_G max_D  E_x[log sigmoid(D(x))] + E_z[log(1 - sigmoid(D(G(z))))]

For a fixed ``G`` the best ``D`` is ``p_data / (p_data + p_G)``, and plugging it in leaves
``2 JS(p_data || p_G) - log 4``: the generator minimises a Jensen-Shannon divergence.
With logits, ``log sigmoid(a) = -softplus(-a)`` and ``log(1 - sigmoid(a)) = -softplus(a)``,
which is how the losses below are written (``softplus`` never takes the log of 0).

* :func:`d_loss_nonsaturating` is the discriminator's side, a plain binary cross-entropy:
  ``softplus(-D(x)) + softplus(D(G(z)))``. At logits 0 (a discriminator that cannot tell)
  it is ``2 log 2``.
* :func:`g_loss_saturating` is the generator's side of the game as written:
  minimise ``log(1 - sigmoid(D(G(z)))) = -softplus(D(G(z)))``. Early in training D rejects
  the fakes confidently (very negative logits), where this function is flat: its gradient
  ``-sigmoid(D(G(z)))`` vanishes and G learns nothing. It is here to show that failure.
* :func:`g_loss_nonsaturating` is the fix from the same paper: maximise
  ``log sigmoid(D(G(z)))`` instead, i.e. minimise ``softplus(-D(G(z)))``. Same fixed point,
  but the gradient ``sigmoid(-D(G(z)))`` is largest exactly when the fakes are worst.

Wasserstein GAN with gradient penalty (Gulrajani et al., 2017, "Improved Training of WGANs")
------------------------------------------------------------------------------------------
Arjovsky et al. (2017) replace JS by the Wasserstein-1 distance, which by
Kantorovich-Rubinstein duality is ``max over 1-Lipschitz f of E_data f(x) - E_G f(x)``. The
*critic* ``f`` (no sigmoid) minimises ``E f(G(z)) - E f(x)`` (:func:`critic_loss_wgan`) and
the generator minimises ``-E f(G(z))`` (:func:`g_loss_wgan`). The 1-Lipschitz constraint is
enforced softly: the optimal critic has gradient norm 1 almost everywhere on lines between
real and fake points, so :func:`gradient_penalty` adds ``lambda * E (||grad f(x_hat)|| - 1)^2``
at random points ``x_hat = eps x + (1 - eps) G(z)``, ``eps ~ U[0, 1]``, ``lambda = 10``.
The penalty is per example, so the critic must not mix examples: no BatchNorm in it (we use
LayerNorm, i.e. ``GroupNorm(1, C)``, as the paper suggests).

Architecture (Radford et al., 2016, "DCGAN")
-------------------------------------------
Generator: linear map of ``z`` to a ``base x base`` feature map, then transposed convolutions
(kernel 4, stride 2) that double the size, BatchNorm + ReLU in between, ``tanh`` at the end.
Discriminator: the mirror image, strided convolutions with LeakyReLU(0.2), no pooling.
Images are in ``[-1, 1]`` inside the GAN (see :mod:`mlcourse.generative.common`);
:meth:`GAN.sample` returns ``[0, 1]``.

Class-conditional GANs
----------------------
The generator gets a learned *label embedding* concatenated to ``z`` (Mirza and Osindero,
2014). The discriminator uses the *projection* of Miyato and Koyama (2018, "cGANs with
Projection Discriminator"): with ``phi(x)`` its last features,
``D(x, y) = w . phi(x) + b + embed(y) . phi(x)``. The inner product is what the optimal
discriminator's log density ratio looks like for class-conditional log-linear models, and
it works much better than concatenating a one-hot label to the input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import get_device
from ..train import History, train_loop
from .common import as_unit_float, check_images, from_tanh_range, to_tanh_range, unpack_data, upsampling_plan

LOSSES = ("nonsaturating", "saturating", "wgan-gp")


# ---------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------
def d_loss_nonsaturating(real_logits: torch.Tensor, fake_logits: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Discriminator cross-entropy: ``mean softplus(-D(x)) + mean softplus(D(G(z)))``.

    This is ``-[log sigmoid(D(x)) + log(1 - sigmoid(D(G(z))))]``, averaged over each batch.
    ``smoothing = s`` is one-sided label smoothing (Salimans et al., 2016): real images get the
    target ``1 - s`` instead of 1, so D is not rewarded for ever more confident logits on them.
    """
    real_term = (1 - smoothing) * F.softplus(-real_logits) + smoothing * F.softplus(real_logits)
    return real_term.mean() + F.softplus(fake_logits).mean()


def g_loss_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator loss used in practice: ``mean softplus(-D(G(z))) = -mean log sigmoid(D(G(z)))``."""
    return F.softplus(-fake_logits).mean()


def g_loss_saturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """The minimax generator loss: ``mean log(1 - sigmoid(D(G(z)))) = -mean softplus(D(G(z)))``.

    Minimising it is the game as written; it saturates (zero gradient) when D wins. For teaching.
    """
    return -F.softplus(fake_logits).mean()


def critic_loss_wgan(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """WGAN critic loss without the penalty: ``mean f(G(z)) - mean f(x)``."""
    return fake_scores.mean() - real_scores.mean()


def g_loss_wgan(fake_scores: torch.Tensor) -> torch.Tensor:
    """WGAN generator loss: ``-mean f(G(z))``."""
    return -fake_scores.mean()


def gradient_penalty(
    critic,
    real: torch.Tensor,
    fake: torch.Tensor,
    labels: torch.Tensor | None = None,
    eps: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``mean_i (||grad_x f(x_hat_i)||_2 - 1)^2`` at ``x_hat_i = eps_i x_i + (1 - eps_i) fake_i``.

    ``eps`` (shape ``[B]``) is drawn from ``U[0, 1]`` unless given. ``labels`` are passed to the
    critic for conditional models. The graph is kept (``create_graph=True``) so that the
    penalty can be differentiated with respect to the critic's weights. The unweighted
    penalty is returned: multiply by ``lambda`` (10 in the paper) yourself.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} must have the same shape")
    b = real.shape[0]
    if eps is None:
        eps = torch.rand(b, generator=generator, device="cpu" if generator is not None else real.device)
    eps = eps.to(real.device, real.dtype).view(b, *([1] * (real.dim() - 1)))
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    scores = critic(x_hat) if labels is None else critic(x_hat, labels)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    # sum of scores: example i's score depends only on x_hat_i (no BatchNorm!), so the
    # gradient of the sum with respect to x_hat_i is the gradient of f at x_hat_i.
    norms = grad.flatten(1).norm(dim=1)
    return ((norms - 1.0) ** 2).mean()


# ---------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------
class Generator(nn.Module):
    """DCGAN generator: ``z [B, z_dim]`` (and labels ``[B]``) -> images ``[B, C, size, size]`` in ``[-1, 1]``.

    Args:
        z_dim: length of the noise vector.
        size: image side (28, 32, 64, ...); the number of doublings follows from it.
        channels: 1 for grayscale.
        width: channels of the last hidden map; each earlier stage has twice as many.
        num_classes: set for a class-conditional generator (label embedding concatenated to z).
        embed_dim: length of the label embedding.
    """

    def __init__(self, z_dim: int = 64, size: int = 28, channels: int = 1, width: int = 32,
                 num_classes: int | None = None, embed_dim: int = 32, stages: int | None = None):
        super().__init__()
        self.z_dim, self.size, self.channels, self.num_classes = z_dim, size, channels, num_classes
        self.base, self.stages = upsampling_plan(size, stages)
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        in_dim = z_dim + (embed_dim if num_classes else 0)
        c0 = width * 2 ** (self.stages - 1)
        self.project = nn.Sequential(
            nn.Linear(in_dim, c0 * self.base * self.base, bias=False),
            nn.Unflatten(1, (c0, self.base, self.base)),
            nn.BatchNorm2d(c0),
            nn.ReLU(),
        )
        layers, c = [], c0
        for _ in range(self.stages - 1):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU()]
            c //= 2
        layers += [nn.ConvTranspose2d(c, channels, 4, 2, 1), nn.Tanh()]
        self.upsample = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            if labels is None:
                raise ValueError("this generator is class-conditional: pass labels")
            z = torch.cat([z, self.embed(labels)], dim=1)
        elif labels is not None:
            raise ValueError("this generator is unconditional; it takes no labels")
        return self.upsample(self.project(z))


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)  # LayerNorm over (C, H, W): per example, fine for WGAN-GP
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'batch', 'layer' or 'none', got {kind!r}")


class Discriminator(nn.Module):
    """DCGAN discriminator / WGAN critic: images in ``[-1, 1]`` (and labels) -> one logit per image.

    ``norm="batch"`` for the standard GAN (DCGAN), ``"layer"`` or ``"none"`` for WGAN-GP, whose
    per-example gradient penalty is wrong if examples are normalised together.
    With ``num_classes`` the output is the projection ``w . phi(x) + b + embed(y) . phi(x)``.
    """

    def __init__(self, size: int = 28, channels: int = 1, width: int = 32, norm: str = "batch",
                 num_classes: int | None = None, stages: int | None = None):
        super().__init__()
        self.size, self.num_classes = size, num_classes
        base, n = upsampling_plan(size, stages)
        layers, c = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2)], width
        for _ in range(n - 1):  # no normalisation on the first layer, as in DCGAN
            layers += [nn.Conv2d(c, 2 * c, 4, 2, 1, bias=norm == "none"), _norm(norm, 2 * c), nn.LeakyReLU(0.2)]
            c *= 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        feature_dim = c * base * base
        self.head = nn.Linear(feature_dim, 1)
        self.embed = nn.Embedding(num_classes, feature_dim) if num_classes else None
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, std=feature_dim**-0.5)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-1] != self.size:
            raise ValueError(f"expected images [B, C, {self.size}, {self.size}], got {tuple(x.shape)}")
        phi = self.features(x)
        out = self.head(phi).squeeze(1)
        if self.embed is not None:
            if labels is None:
                raise ValueError("this discriminator is class-conditional: pass labels")
            out = out + (self.embed(labels) * phi).sum(1)  # the projection term
        elif labels is not None:
            raise ValueError("this discriminator is unconditional; it takes no labels")
        return out


class GAN(nn.Module):
    """A generator and a discriminator kept together, with :meth:`sample` returning ``[0, 1]`` images."""

    def __init__(self, generator: Generator, discriminator: nn.Module, loss: str = "nonsaturating"):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.generator, self.discriminator, self.loss = generator, discriminator, loss
        self.snapshots: list[tuple[int, torch.Tensor]] = []  # (step, [0,1] images), filled by train_gan

    @property
    def conditional(self) -> bool:
        return self.generator.num_classes is not None

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None, seed: int | None = None,
               z: torch.Tensor | None = None, batch_size: int = 500) -> torch.Tensor:
        """``n`` images in ``[0, 1]`` on the CPU, generated in eval mode (BatchNorm running statistics).

        A conditional GAN needs ``labels [n]`` (drawn uniformly at random when omitted).
        """
        g = self.generator
        device = next(g.parameters()).device
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        if z is None:
            z = torch.randn(n, g.z_dim, generator=gen)
        if self.conditional and labels is None:
            labels = torch.randint(g.num_classes, (n,), generator=gen)
        was_training = g.training
        g.eval()
        try:
            out = []
            for i in range(0, n, batch_size):
                y = None if labels is None else labels[i : i + batch_size].to(device)
                out.append(from_tanh_range(g(z[i : i + batch_size].to(device), y)).cpu())
        finally:
            g.train(was_training)
        return torch.cat(out)


def make_gan(size: int = 28, channels: int = 1, loss: str = "nonsaturating", z_dim: int = 64,
             width: int = 32, num_classes: int | None = None, norm: str | None = None) -> GAN:
    """A DCGAN for ``size x size`` images; the discriminator's normalisation follows the loss
    (BatchNorm for the cross-entropy losses, LayerNorm for WGAN-GP) unless ``norm`` is given."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    norm = norm or ("layer" if loss == "wgan-gp" else "batch")
    g = Generator(z_dim, size, channels, width, num_classes)
    d = Discriminator(size, channels, width, norm, num_classes)
    return GAN(g, d, loss)


# ---------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------
def train_gan(
    data,
    gan: GAN | None = None,
    *,
    loss: str = "nonsaturating",
    conditional: bool = False,
    steps: int = 2000,
    time_budget: float | None = None,
    batch_size: int = 32,
    lr: float | None = None,
    betas: tuple[float, float] | None = None,
    n_critic: int | None = None,
    gp_weight: float = 10.0,
    label_smoothing: float = 0.0,
    z_dim: int = 64,
    width: int = 32,
    seed: int = 0,
    device: torch.device | None = None,
    snapshot_every: int | None = None,
    snapshot_count: int = 64,
    progress: bool = True,
) -> tuple[GAN, History]:
    """Train a GAN on ``data`` (an ImageClassDataset, images, or ``(images, labels)``).

    One step of :func:`mlcourse.train.train_loop` is one generator update, preceded by
    ``n_critic`` discriminator updates (1 for the cross-entropy losses, 5 for WGAN-GP, as in
    the papers). Defaults follow the papers too: Adam(2e-4, betas=(0.5, 0.999)) for DCGAN,
    Adam(1e-4, betas=(0.0, 0.9)) for WGAN-GP. ``label_smoothing`` applies to the cross-entropy
    losses (see :func:`d_loss_nonsaturating`).

    Sizes: DCGAN used 128 images per batch and wider networks. On a laptop CPU, ``width=32``
    and ``batch_size=32`` give recognisable characters soonest: twice the updates per second
    of batch 64 at the same cost per image (on 2,720 Omniglot images, strokes join up after
    about 2,000 steps; a width-64 network or WGAN-GP's five critic steps per generator step
    were visibly behind after the same five minutes).

    Logged per step: ``loss`` (the discriminator's/critic's loss, penalty included), ``g_loss``,
    ``d_real`` and ``d_fake`` (the discriminator's mean logit/score on the last real and fake
    batch it saw), and ``gp`` (the unweighted penalty) for WGAN-GP. A non-finite value stops training
    with a ``FloatingPointError`` naming the step.

    With ``snapshot_every``, ``snapshot_count`` images from a *fixed* noise batch are stored in
    ``gan.snapshots`` as ``(step, images in [0, 1])``, for a picture of training progress.
    """
    images, labels, num_classes = unpack_data(data)
    check_images(images)
    if conditional and labels is None:
        raise ValueError("conditional=True needs labels: pass an ImageClassDataset or (images, labels)")
    device = device or get_device()
    torch.manual_seed(seed)
    g_rng = torch.Generator().manual_seed(seed)
    if gan is None:
        gan = make_gan(images.shape[-1], images.shape[1], loss, z_dim, width, num_classes if conditional else None)
    loss = gan.loss
    if conditional != gan.conditional:
        raise ValueError(f"conditional={conditional} but the GAN given is {'' if gan.conditional else 'un'}conditional")
    wgan = loss == "wgan-gp"
    lr = lr if lr is not None else (1e-4 if wgan else 2e-4)
    betas = betas or ((0.0, 0.9) if wgan else (0.5, 0.999))
    n_critic = n_critic if n_critic is not None else (5 if wgan else 1)
    G, D = gan.generator.to(device), gan.discriminator.to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=betas)
    G.train(), D.train()

    fixed_z = torch.randn(snapshot_count, G.z_dim, generator=g_rng)
    fixed_y = torch.arange(snapshot_count) % num_classes if gan.conditional else None

    def batch():
        idx = torch.randint(len(images), (batch_size,), generator=g_rng)
        x = to_tanh_range(as_unit_float(images[idx])).to(device)
        y = labels[idx].to(device) if gan.conditional else None
        return x, y

    def noise():
        z = torch.randn(batch_size, G.z_dim, generator=g_rng).to(device)
        y = torch.randint(num_classes, (batch_size,), generator=g_rng).to(device) if gan.conditional else None
        return z, y

    def step(i):
        for _ in range(n_critic):
            x, y = batch()
            z, _ = noise()
            with torch.no_grad():
                # a conditional critic sees fakes drawn for the labels of the real batch, so the
                # gradient penalty interpolates between a real and a fake of the same class
                fake = G(z, y)
            real_out, fake_out = D(x, y), D(fake, y)
            if wgan:
                gp = gradient_penalty(D, x, fake, y, generator=g_rng)
                d_loss = critic_loss_wgan(real_out, fake_out) + gp_weight * gp
            else:
                d_loss = d_loss_nonsaturating(real_out, fake_out, label_smoothing)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        d_real, d_fake = real_out.mean().item(), fake_out.mean().item()
        z, yz = noise()
        fake_out = D(G(z, yz), yz)
        g_loss = {"nonsaturating": g_loss_nonsaturating, "saturating": g_loss_saturating,
                  "wgan-gp": g_loss_wgan}[loss](fake_out)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        if snapshot_every and (i % snapshot_every == 0 or i == steps - 1):
            gan.snapshots.append((i, gan.sample(snapshot_count, labels=fixed_y, z=fixed_z)))
        out = {"loss": d_loss.item(), "g_loss": g_loss.item(), "d_real": d_real, "d_fake": d_fake}
        if wgan:
            out["gp"] = gp.item()
        return out

    history = train_loop(step, steps, time_budget=time_budget, desc=f"GAN ({loss})", progress=progress)
    last = max(history.steps.get("loss", [-1]), default=-1)
    if snapshot_every and last >= 0 and (not gan.snapshots or gan.snapshots[-1][0] != last):
        gan.snapshots.append((last, gan.sample(snapshot_count, labels=fixed_y, z=fixed_z)))  # a time budget ended it
    gan.eval()
    return gan, history
