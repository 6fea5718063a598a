"""The Neural Statistician: a VAE of *sets*, whose context vector is what a class has in common.

The model (Edwards and Storkey, ICLR 2017, "Towards a Neural Statistician")
--------------------------------------------------------------------------
Chapter 08's VAE explains one image with one latent ``z``. A character of Omniglot is a
*set* of drawings ``D = {x_1, ..., x_S}`` that share something (the character) and differ in
the rest (the hand, the slant, the stroke width). The Neural Statistician gives each level
its own latent variable::

    c ~ p(c) = N(0, I)                    one context per set: "which character"
    z_i | c ~ p(z | c)                    one latent per image: "how this one was drawn"
    x_i | z_i, c ~ p(x | z_i, c)          Bernoulli pixels, from a decoder like chapter 08's

Three networks do the inference, all sharing one convolutional encoder ``h(x)``:

* the **statistic network** ``q(c | D) = N(mu_c(D), diag sigma_c^2(D))``: an MLP applied to
  every ``h(x_i)``, the **mean** over the set, then a second MLP to ``(mu_c, logvar_c)``;
* the **inference network** ``q(z | x, c)``, from ``[h(x), c]``;
* the **latent prior** ``p(z | c)``, a Gaussian whose mean and variance the context chooses
  (learned: the context decides which drawings are likely).

Why mean pooling
~~~~~~~~~~~~~~~~
A set has no order, so ``q(c | D)`` must not depend on one: pooling with a symmetric function
makes the statistic network *permutation invariant* by construction (Zaheer et al., 2017,
"Deep Sets", show that every invariant function of a set can be written as
``rho(sum_i phi(x_i))``). The mean, rather than the sum, also keeps the pooled vector on the
same scale for a set of 1 image and for a set of 20, so a network trained on sets of 5 can
be given any number of support drawings. (More drawings do not make the mean *sharper* on
their own: the post-pooling MLP only sees their average, so ``q(c | D)`` cannot grow more
confident with ``K`` the way an exact posterior would. That is the price of this simple
pooling.)

The set ELBO
~~~~~~~~~~~~
For one set, Jensen's inequality applied at both levels gives::

    log p(D) >= E_q(c|D) [ sum_i ( E_q(z_i|x_i,c) log p(x_i | z_i, c)            reconstruction R_D
                                   - KL(q(z_i | x_i, c) || p(z_i | c)) ) ]       latent KL     C_D
                - KL(q(c | D) || p(c))                                          context KL    L_D

    ELBO(D) = R_D - C_D - L_D

``R_D`` and ``C_D`` are *summed over the S images* and the context KL ``L_D`` is paid *once per
set*: a set of 5 drawings pays for its context once, not five times. That is what makes the
context worth using: information shared by the set is cheaper in ``c`` than repeated in
every ``z_i``. :meth:`NeuralStatistician.set_elbo` returns these terms per set; the loss is
minus the ELBO divided by ``S`` (nats per image, comparable with chapter 08's VAE), so
``L_D`` enters with weight ``1 / S`` per image, exactly as in the bound.

Both expectations are estimated with one reparameterised sample (one ``c`` per set, one
``z_i`` per image); both KLs are between Gaussians and analytic.

Training reweights the bound early on. The decoder first learns the average image, and a
latent it does not yet use costs KL without paying it back, so both ``c`` and ``z`` can stay
on their priors (the "posterior collapse" of chapter 08; tiny models trained at a high
learning rate do this here). Following the public PyTorch reimplementations of the
paper, the training objective is::

    objective = ((1 + alpha) R_D - (C_D + L_D) / (1 + alpha)) / S

with ``alpha`` decreasing linearly from ``alpha`` (default 1) to 0 over the first half of
training, after which the objective *is* the ELBO. The ELBO reported in the logs is always
the true bound (``alpha = 0``).

What the context is good for
----------------------------
* **Few-shot generation** (:meth:`NeuralStatistician.generate`): infer ``c`` from the
  support drawings, draw ``z ~ p(z | c)``, decode. No gradient step at test time: adapting to
  a new character is one forward pass of the statistic network.
* **Conditional likelihood** (:func:`conditional_log_likelihood`): how much more probable
  a held-out drawing becomes once the model has seen 1, 4 or 20 drawings of its character.
* **One-shot classification** (:meth:`NeuralStatistician.predict`): the class whose context
  posterior is closest to that of the query alone.

Importance sampling, the estimator checked exactly
--------------------------------------------------
:func:`importance_log_likelihood` is chapter 08's IWAE estimate ``log (1/k) sum_i w_i``
computed from log-weights with ``logsumexp``: the generic piece that the exercises check on
a model whose likelihood is known in closed form.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import get_device
from ..data.base import ImageClassDataset
from ..fewshot import validate_task
from ..generative.common import upsampling_plan
from ..generative.vae import binarize, gaussian_kl, log_normal, reparameterize
from ..train import History, train_loop
from .common import FewShotGenerator, check_support

GENERATE_MODES = ("mean", "sample")
CONTEXT_MODES = ("mean", "sample")


# ---------------------------------------------------------------------------------------
# Small pieces of probability
# ---------------------------------------------------------------------------------------
def gaussian_kl_between(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu_q, diag exp(logvar_q)) || N(mu_p, diag exp(logvar_p)))``, summed over the last axis.

    Per dimension ``(log s_p^2 - log s_q^2 + (s_q^2 + (mu_q - mu_p)^2) / s_p^2 - 1) / 2``; with
    ``mu_p = 0, logvar_p = 0`` it is :func:`mlcourse.generative.vae.gaussian_kl`. Broadcasts.
    """
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) / logvar_p.exp() - 1.0).sum(-1)


def importance_log_likelihood(log_weights: torch.Tensor) -> torch.Tensor:
    """The importance-sampling estimate ``log (1/k) sum_i w_i`` from log-weights ``[k, M]``: ``[M]``.

    **Axis 0 holds the ``k`` samples, axis 1 the ``M`` images**: column ``m`` holds
    ``log w_i = log p(x_m, latents_i) - log q(latents_i | x_m)`` for the samples
    ``i = 1..k`` drawn from the proposal ``q``. Since ``E_q w = p(x_m)``, the mean of the
    weights is an unbiased estimate of the likelihood, and its log (by Jensen) a lower bound
    in expectation that tightens as ``k`` grows (Burda et al., 2016). It is computed as
    ``logsumexp(log_w, dim=0) - log k``: the weights themselves (``e^{-100}`` for a 784-pixel
    image) would underflow. When ``q`` is the exact posterior every weight equals ``p(x_m)``
    and the estimate is exact for every ``k``.
    """
    if not isinstance(log_weights, torch.Tensor) or log_weights.dim() != 2:
        shape = tuple(log_weights.shape) if isinstance(log_weights, torch.Tensor) else type(log_weights).__name__
        raise ValueError(f"log_weights must be [k samples, M images], got {shape} (one image: log_w[:, None])")
    k = log_weights.shape[0]
    if k < 1:
        raise ValueError("log_weights holds no samples (k = 0)")
    return torch.logsumexp(log_weights, dim=0) - math.log(k)


@dataclass
class SetELBOTerms:
    """Terms of the set ELBO in nats, one value per set (each ``[B]``).

    ``reconstruction`` (``R_D``) and ``kl_z`` (``C_D``) are summed over the ``set_size`` images,
    ``kl_c`` (``L_D``) is paid once per set; ``elbo = reconstruction - kl_z - kl_c`` bounds
    ``log p(D)``. ``objective`` is the (reweighted, see the module notes) training objective
    *per image*; ``loss`` is minus its mean over the sets.
    """

    reconstruction: torch.Tensor
    kl_z: torch.Tensor
    kl_c: torch.Tensor
    objective: torch.Tensor
    set_size: int

    @property
    def elbo(self) -> torch.Tensor:
        """The set ELBO ``R_D - C_D - L_D`` per set: ``[B]`` nats."""
        return self.reconstruction - self.kl_z - self.kl_c

    @property
    def elbo_per_image(self) -> torch.Tensor:
        """``ELBO(D) / S``: nats per image, comparable with a VAE's per-image ELBO."""
        return self.elbo / self.set_size

    @property
    def loss(self) -> torch.Tensor:
        """Minus the mean objective per image: what the optimiser minimises."""
        return -self.objective.mean()


# ---------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------
class NeuralStatistician(FewShotGenerator):
    """A Neural Statistician for ``size x size`` images with a Bernoulli decoder (see the module notes).

    ``context_dim`` is the size of ``c`` (what a set shares), ``latent_dim`` that of each ``z``
    (what each image adds), ``width`` the channels of the first convolution (doubled at each
    stride-2 stage, as in chapter 08's :class:`~mlcourse.generative.vae.ConvVAE`), ``hidden``
    the width of every MLP and of the image features ``h(x)``. The defaults are sized for a
    laptop CPU: about 0.5 M parameters at 28x28, and one step on 16 sets of 5 costs about
    0.03 s of CPU time on one core (measured: 394 steps, 12 CPU seconds, on the glyph training
    split reach 50% 5-way 1-shot accuracy with :meth:`predict` on its test split).

    Protocol used by :func:`conditional_log_likelihood` (a test double can implement it):
    ``context_dim``, :meth:`context`, :meth:`features`, :meth:`posterior_z`,
    :meth:`prior_z`, :meth:`log_px` and, optionally, :meth:`check_inputs`.
    """

    method_name = "statistician"

    def __init__(self, size: int = 28, channels: int = 1, context_dim: int = 32, latent_dim: int = 16,
                 width: int = 16, hidden: int = 128, stages: int | None = None):  # fmt: skip
        super().__init__()
        self.size, self.channels = size, channels
        self.context_dim, self.latent_dim, self.hidden = context_dim, latent_dim, hidden
        base, n = upsampling_plan(size, stages)

        # h(x): the shared convolutional encoder, stride-2 stages down to base x base
        down, c = [], channels
        for i in range(n):
            down += [nn.Conv2d(c, width * 2**i, 4, 2, 1), nn.ReLU()]
            c = width * 2**i
        flat = c * base * base
        self.encoder = nn.Sequential(*down, nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU())

        # statistic network q(c | D): per-image MLP, mean over the set, post-pooling MLP
        self.instance = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.post_pool = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2 * context_dim))
        # inference network q(z | x, c) and latent prior p(z | c)
        self.inference = nn.Sequential(nn.Linear(hidden + context_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent_dim))
        self.latent_prior = nn.Sequential(nn.Linear(context_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent_dim))

        # decoder p(x | z, c): chapter 08's transposed convolutions, one Bernoulli logit per pixel
        up = []
        for i in reversed(range(1, n)):
            up += [nn.ConvTranspose2d(width * 2**i, width * 2 ** (i - 1), 4, 2, 1), nn.ReLU()]
        up += [nn.ConvTranspose2d(width, channels, 4, 2, 1)]
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim + context_dim, hidden), nn.ReLU(), nn.Linear(hidden, flat), nn.ReLU(),
            nn.Unflatten(1, (c, base, base)), *up,
        )  # fmt: skip

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)

    # -- input checks -----------------------------------------------------------------------
    def _check_sets(self, sets: torch.Tensor) -> torch.Tensor:
        """``sets`` as float ``[B, S, C, H, W]`` in ``[0, 1]`` on the model's device, or a ``ValueError``."""
        if not isinstance(sets, torch.Tensor):
            raise TypeError(f"sets must be a tensor [B, S, C, H, W], got {type(sets).__name__}")
        if sets.dim() != 5:
            raise ValueError(f"sets must be [B sets, S images, C, H, W], got shape {tuple(sets.shape)} "
                             "(one set of images [S, C, H, W]: use sets[None])")  # fmt: skip
        if sets.shape[0] == 0 or sets.shape[1] == 0:
            raise ValueError(f"sets of shape {tuple(sets.shape)} hold no set or an empty set")
        b, s = sets.shape[:2]
        flat = check_support(sets.reshape(b * s, *sets.shape[2:]), self.image_shape, name="sets")
        return flat.view(b, s, *flat.shape[1:]).to(self.device)

    def check_inputs(self, x: torch.Tensor, support: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """For :func:`conditional_log_likelihood`: ``x`` binary images of this model's size,
        ``support`` images of this size, or ``None`` for an empty support set."""
        x = check_support(x, self.image_shape, name="x")
        if not ((x == 0) | (x == 1)).all():
            raise ValueError("x must be binary (0/1) images: the Bernoulli likelihood of gray values is not a "
                             "likelihood; binarise once with mlcourse.generative.vae.binarize_fixed")  # fmt: skip
        if support is not None and support.dim() == 4 and support.shape[0] == 0:
            support = None
        if support is not None:
            support = check_support(support, self.image_shape)
        return x, support

    # -- the networks -----------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``h(x)``, the shared encoder's features of images ``[N, C, H, W]``: ``[N, hidden]``."""
        return self.encoder(x)

    def _statistic(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu_c, logvar_c)`` of ``q(c | D)`` from features ``[B, S, hidden]``: each ``[B, context_dim]``.

        The mean over axis 1 (the images of a set) is the only place the images of a set meet:
        the result cannot depend on their order.
        """
        pooled = self.instance(h).mean(dim=1)
        mu, logvar = self.post_pool(pooled).chunk(2, dim=-1)
        return mu, logvar

    def context(self, support: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu_c, logvar_c)`` of the context posterior ``q(c | D)``.

        ``support`` is one set ``[K, C, H, W]`` (any ``K >= 1``; gives two ``[context_dim]``
        vectors) or a batch of sets ``[B, S, C, H, W]`` (gives ``[B, context_dim]``). Images are
        floats in ``[0, 1]`` (or ``uint8``); the network was trained on binarised drawings, and
        gray values are taken as they are.
        """
        if isinstance(support, torch.Tensor) and support.dim() == 5:
            sets = self._check_sets(support)
            b, s = sets.shape[:2]
            return self._statistic(self.features(sets.flatten(0, 1)).view(b, s, -1))
        support = check_support(support, self.image_shape).to(self.device)
        mu, logvar = self._statistic(self.features(support)[None])
        return mu[0], logvar[0]

    def posterior_z(self, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of ``q(z | x, c)`` from the features ``h = h(x)`` ``[N, hidden]`` and ``c`` ``[N, context_dim]``."""
        return self.inference(torch.cat([h, c], dim=-1)).chunk(2, dim=-1)

    def prior_z(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of the latent prior ``p(z | c)``, each ``[N, latent_dim]``."""
        return self.latent_prior(c).chunk(2, dim=-1)

    def decode(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits ``[N, C, H, W]`` of ``p(x | z, c)``."""
        return self.decoder(torch.cat([z, c], dim=-1))

    def log_px(self, x: torch.Tensor, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``log p(x | z, c)`` per image, summed over pixels: ``[N]`` nats."""
        return -F.binary_cross_entropy_with_logits(self.decode(z, c), x, reduction="none").flatten(1).sum(1)

    # -- the set ELBO -----------------------------------------------------------------------
    def set_elbo(self, sets: torch.Tensor, *, alpha: float = 0.0, generator: torch.Generator | None = None) -> SetELBOTerms:
        """The terms of the set ELBO of every set of ``sets`` ``[B, S, C, H, W]`` (see the module notes).

        ``sets`` should be binary (dynamically binarised drawings, as in training): the
        reconstruction term is a Bernoulli log-likelihood. One ``c ~ q(c | D)`` per set and one
        ``z_i ~ q(z | x_i, c)`` per image, drawn from ``generator`` (on the CPU) when given.
        ``alpha`` reweights the training objective only: ``((1 + alpha) R - (C + L) / (1 + alpha)) / S``.
        """
        sets = self._check_sets(sets)
        b, s = sets.shape[:2]
        x = sets.flatten(0, 1)  # [B*S, C, H, W], set-major
        h = self.features(x)
        mu_c, logvar_c = self._statistic(h.view(b, s, -1))
        kl_c = gaussian_kl(mu_c, logvar_c)  # KL(q(c|D) || N(0, I)), once per set
        c = reparameterize(mu_c, logvar_c, generator=generator)  # [B, Dc]
        c_img = c.repeat_interleave(s, dim=0)  # [B*S, Dc]: each image sees its own set's c
        mu_z, logvar_z = self.posterior_z(h, c_img)
        mu_p, logvar_p = self.prior_z(c_img)
        z = reparameterize(mu_z, logvar_z, generator=generator)
        rec = self.log_px(x, z, c_img).view(b, s).sum(1)
        kl_z = gaussian_kl_between(mu_z, logvar_z, mu_p, logvar_p).view(b, s).sum(1)
        w = 1.0 + alpha
        objective = (w * rec - (kl_z + kl_c) / w) / s
        return SetELBOTerms(rec, kl_z, kl_c, objective, s)

    def forward(self, sets: torch.Tensor, alpha: float = 0.0) -> SetELBOTerms:
        return self.set_elbo(sets, alpha=alpha)

    # -- meta-training ----------------------------------------------------------------------
    def meta_train(self, dataset: ImageClassDataset, *, steps: int, time_budget: float | None = None, seed: int = 0,
                   device=None, progress=True, set_size: int = 5, sets_per_batch: int = 16, lr: float = 1e-3,
                   alpha: float = 1.0, history: History | None = None) -> History:  # fmt: skip
        """Maximise the set ELBO on sets drawn from the classes of ``dataset``.

        Each step draws ``sets_per_batch`` classes (distinct while the dataset has enough) and
        ``set_size`` distinct images of each, binarises them dynamically (a fresh Bernoulli draw
        per pixel every time, as chapter 08's VAE), and takes one Adam step on the objective
        (``alpha`` decays linearly to 0 over the first half of ``steps`` or of the
        ``time_budget``, whichever comes first, so a budgeted run ends on the true ELBO). Only classes with at
        least ``set_size`` images are used. ``seed`` fixes the sets, the binarisation and the
        reparameterisation noise (the initial weights are the constructor's). With ``history``
        training continues it: steps are counted from its last one, ``alpha`` included.

        Logged per step: ``loss``; ``elbo``, ``reconstruction`` and ``kl_z`` in nats per image;
        ``kl_c`` in nats per *set* (how much the context says about the set); ``alpha``.
        """
        if not isinstance(set_size, int) or set_size < 1:
            raise ValueError(f"set_size must be an int >= 1, got {set_size!r}")
        if not isinstance(sets_per_batch, int) or sets_per_batch < 1:
            raise ValueError(f"sets_per_batch must be an int >= 1, got {sets_per_batch!r}")
        if tuple(dataset.image_shape) != self.image_shape:
            raise ValueError(f"dataset images are {tuple(dataset.image_shape)}, this model was built for {self.image_shape}")
        by_class = dataset.indices_by_class()
        eligible = [c for c, idx in enumerate(by_class) if len(idx) >= set_size]
        if not eligible:
            raise ValueError(f"no class of {dataset.name!r} has set_size = {set_size} images (largest: "
                             f"{max((len(i) for i in by_class), default=0)})")  # fmt: skip
        device = torch.device(device) if device is not None else get_device()
        self.to(device)
        rng = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        anneal = max(1, steps // 2)
        eligible_t = torch.tensor(eligible)
        start = time.perf_counter()

        def step(i):
            self.train()
            if len(eligible) >= sets_per_batch:
                classes = eligible_t[torch.randperm(len(eligible), generator=rng)[:sets_per_batch]]
            else:
                classes = eligible_t[torch.randint(len(eligible), (sets_per_batch,), generator=rng)]
            idx = torch.stack([by_class[c][torch.randperm(len(by_class[c]), generator=rng)[:set_size]] for c in classes.tolist()])
            x = binarize(dataset.as_float(idx.flatten(), generator=rng), "dynamic", rng)  # augmenting datasets draw from rng
            sets = x.view(sets_per_batch, set_size, *x.shape[1:])
            done = i / anneal
            if time_budget:  # the budget, not the step count, may end the run: anneal over its first half too
                done = max(done, (time.perf_counter() - start) / (time_budget / 2))
            a = alpha * max(0.0, 1.0 - done)
            terms = self.set_elbo(sets.to(device), alpha=a, generator=rng)
            opt.zero_grad(set_to_none=True)
            terms.loss.backward()
            opt.step()
            return {"loss": terms.loss.item(), "elbo": terms.elbo_per_image.mean().item(),
                    "reconstruction": terms.reconstruction.mean().item() / set_size,
                    "kl_z": terms.kl_z.mean().item() / set_size, "kl_c": terms.kl_c.mean().item(), "alpha": a}  # fmt: skip

        history = train_loop(step, steps, time_budget=time_budget, history=history, desc="meta-train NeuralStatistician",
                             progress=progress)  # fmt: skip
        self.eval()
        return history

    # -- few-shot generation ----------------------------------------------------------------
    @torch.no_grad()
    def generate(self, support: torch.Tensor, n: int, *, seed: int = 0, mode: str = "mean", context: str = "mean") -> torch.Tensor:
        """``n`` new drawings of the support set's character: float ``[n, C, H, W]`` in ``[0, 1]`` on the CPU.

        The context is inferred from ``support`` (``[K, C, H, W]``, any ``K >= 1``): with
        ``context="mean"`` (default) every image uses the posterior mean of ``q(c | D)``, the
        model's best guess of the character; ``context="sample"`` draws one ``c ~ q(c | D)`` per
        image (more variety, more off-character drawings when ``K`` is small). Then
        ``z ~ p(z | c)`` per image, and the decoder's Bernoulli means (``mode="mean"``, pixel
        probabilities, the usual way VAE samples are shown) or binary pixels drawn from them
        (``mode="sample"``). Every random number comes from ``seed``, drawn on the CPU.
        """
        if mode not in GENERATE_MODES:
            raise ValueError(f"mode must be one of {GENERATE_MODES}, got {mode!r}")
        if context not in CONTEXT_MODES:
            raise ValueError(f"context must be one of {CONTEXT_MODES}, got {context!r}")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        support = check_support(support, self.image_shape)
        gen = torch.Generator().manual_seed(seed)
        was_training = self.training
        self.eval()
        try:
            mu_c, logvar_c = self.context(support)
            if context == "mean":
                c = mu_c.expand(n, -1)
            else:
                c = reparameterize(mu_c.expand(n, -1), logvar_c.expand(n, -1), generator=gen)
            mu_p, logvar_p = self.prior_z(c)
            z = reparameterize(mu_p, logvar_p, generator=gen)
            probs = torch.sigmoid(self.decode(z, c)).cpu()
        finally:
            self.train(was_training)
        return torch.bernoulli(probs, generator=gen) if mode == "sample" else probs

    # -- one-shot classification ------------------------------------------------------------
    @torch.no_grad()
    def conditional_log_likelihood(self, x: torch.Tensor, support: torch.Tensor | None = None, k: int = 100, *,
                                   seed: int = 0, empty: str = "posterior") -> torch.Tensor:  # fmt: skip
        """:func:`conditional_log_likelihood` of this model (the method form the benchmark calls)."""
        return conditional_log_likelihood(self, x, support, k, seed=seed, empty=empty)

    def predict(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
        """Logits ``[Q, N]``: ``logit[q, j] = -KL(q(c | {x_q}) || q(c | D_j))``, the paper's rule.

        ``D_j`` is the set of support images labelled ``j`` (labels ``0..N-1``, as in the
        course's episodes). The query alone is a set of one: its context posterior is the
        model's belief about which character ``x_q`` belongs to. The class whose posterior
        covers that belief best (smallest KL) wins. The KL is asymmetric on purpose: a class
        posterior that is sharp where the query's belief is broad costs much; nothing is
        trained for classification, so this works with a model that only ever saw the ELBO.
        """
        support_x = check_support(support_x, self.image_shape, name="support_x")
        query_x = check_support(query_x, self.image_shape, name="query_x")
        n_way = validate_task(support_x, support_y, query_x)
        was_training = self.training
        self.eval()
        try:
            device = self.device
            e_s = self.instance(self.features(support_x.to(device)))  # [K, hidden]
            onehot = F.one_hot(support_y.to(device).long(), n_way).T.float()  # [N, K]
            pooled = (onehot / onehot.sum(1, keepdim=True)) @ e_s  # the mean over each class's images
            mu_s, logvar_s = self.post_pool(pooled).chunk(2, dim=-1)  # [N, Dc]
            mu_q, logvar_q = self._statistic(self.features(query_x.to(device))[:, None])  # [Q, Dc], sets of one
            kl = gaussian_kl_between(mu_q[:, None], logvar_q[:, None], mu_s[None], logvar_s[None])  # [Q, N]
        finally:
            self.train(was_training)
        return -kl


# ---------------------------------------------------------------------------------------
# Conditional likelihood: how much the support set helps
# ---------------------------------------------------------------------------------------
@torch.no_grad()
def conditional_log_likelihood(model, x: torch.Tensor, support: torch.Tensor | None = None, k: int = 100, *,
                               seed: int = 0, chunk: int | None = None, empty: str = "posterior") -> torch.Tensor:  # fmt: skip
    """An importance-sampling estimate of ``log E_q(c|D) p(x | c)`` for each image of ``x``: ``[M]`` nats.

    ``x`` ``[M, C, H, W]`` are binary images (:func:`~mlcourse.generative.vae.binarize_fixed`)
    and ``support`` ``[K, C, H, W]`` the drawings ``D`` the model conditions on. For each image,
    ``k`` samples::

        c_i ~ q(c | D)
        z_i ~ q(z | x, c_i)
        log w_i = log p(x | z_i, c_i) + log p(z_i | c_i) - log q(z_i | x, c_i)

    and the estimate is :func:`importance_log_likelihood` of the ``log w_i``. Because
    ``E_q(z|x,c) w = p(x | c)``, the mean of the weights estimates ``E_q(c|D) p(x | c)``: the
    likelihood of ``x`` under the model's *approximate* posterior predictive given ``D`` (the
    exact one would average ``p(x | c)`` over the true ``p(c | D)``). As with IWAE, the log of
    the estimate is low in expectation (Jensen) and rises towards its target as ``k`` grows;
    report ``k``.

    With ``D`` empty (or None) the target is the model's marginal ``log p(x)``, and ``c`` must
    come from somewhere. ``empty="posterior"`` (the default) proposes it from the context
    posterior of the image itself, ``c_i ~ q(c | {x})``, and adds ``log p(c_i) - log q(c_i |
    {x})`` to each weight: the IWAE bound of a set of one, which is exact when both proposals
    are the true posteriors. ``empty="prior"`` proposes ``c_i ~ p(c)`` blindly (no correction
    term): unbiased in the weights too, but so spread out that its log converges very slowly
    in ``k``, and a curve of NLL against support size that starts from it exaggerates how much
    the first drawing helps.

    Every random number comes from ``seed`` (drawn on the CPU). Samples are drawn ``chunk`` at
    a time (default: as many as keep ``chunk * M <= 4096`` decoded images), so memory does not
    grow with ``k``; a different ``chunk`` draws different (equally valid) samples.

    ``model`` needs ``context_dim``, ``context(support) -> (mu, logvar)``, ``features(x)``,
    ``posterior_z(h, c)``, ``prior_z(c)``, ``log_px(x, z, c)`` and may have
    ``check_inputs(x, support)`` (:class:`NeuralStatistician` has all of them).
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if empty not in ("posterior", "prior"):
        raise ValueError(f"empty must be 'posterior' or 'prior', got {empty!r}")
    check = getattr(model, "check_inputs", None)
    if check is not None:
        x, support = check(x, support)
    elif support is not None and support.shape[0] == 0:
        support = None
    param = next(model.parameters(), None) if isinstance(model, nn.Module) else None
    device = param.device if param is not None else x.device
    was_training = model.training if isinstance(model, nn.Module) else None
    if was_training is not None:
        model.eval()
    try:
        x = x.to(device)
        m = x.shape[0]
        own = support is None and empty == "posterior"  # c proposed from q(c | {x}), one per image
        if own:
            pairs = [model.context(x[j : j + 1]) for j in range(m)]
            mu_c, logvar_c = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])  # [M, Dc]
        elif support is None:
            mu_c = torch.zeros(model.context_dim, dtype=x.dtype, device=device)
            logvar_c = torch.zeros_like(mu_c)
        else:
            mu_c, logvar_c = model.context(support.to(device))
        h = model.features(x)
        chunk = chunk or max(1, min(k, 4096 // max(1, m)))
        gen = torch.Generator().manual_seed(seed)
        log_w = []
        for start in range(0, k, chunk):
            n = min(chunk, k - start)
            if own:
                mu_n, logvar_n = mu_c.repeat(n, 1), logvar_c.repeat(n, 1)  # sample-major, like hs below
            else:
                mu_n, logvar_n = mu_c.expand(n * m, -1), logvar_c.expand(n * m, -1)
            c = reparameterize(mu_n, logvar_n, generator=gen)  # [n*M, Dc]
            hs = h.repeat(n, *([1] * (h.dim() - 1)))  # sample-major: row s*M + j is image j
            xs = x.repeat(n, *([1] * (x.dim() - 1)))
            mu_z, logvar_z = model.posterior_z(hs, c)
            z = reparameterize(mu_z, logvar_z, generator=gen)
            mu_p, logvar_p = model.prior_z(c)
            lw = model.log_px(xs, z, c) + log_normal(z, mu_p, logvar_p) - log_normal(z, mu_z, logvar_z)
            if own:  # the context's own importance weight p(c) / q(c | {x})
                lw = lw + log_normal(c) - log_normal(c, mu_n, logvar_n)
            log_w.append(lw.view(n, m))
        return importance_log_likelihood(torch.cat(log_w))
    finally:
        if was_training is not None:
            model.train(was_training)
