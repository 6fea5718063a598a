"""FIGR: a GAN meta-trained with Reptile (Clouâtre and Demers, 2019, "FIGR: Few-shot Image
Generation with Reptile", arXiv:1901.02199).

Why a GAN cannot learn from four images alone
---------------------------------------------
Train a WGAN-GP from scratch on the ``K = 4`` drawings of one character and two things go
wrong at once. The critic sees four real points in a 784-dimensional space: within a few
steps it can separate exactly those four from everything else, so its gradient tells the
generator "be one of these four pictures", not "draw this character". And the generator
starts from random weights that know nothing about pen strokes: thousands of steps of a
well-informed critic are needed before anything stroke-like appears (chapter 07 needs about
2,000 steps on 2,720 images). Four images are not enough data to learn what a character *is*,
and ten steps are not enough optimisation to learn to *draw*.

What Reptile gives it
---------------------
Knowledge about strokes can come from the *other* characters. Reptile (chapter 05,
:mod:`mlcourse.optim.reptile`) looks for an initialisation ``θ`` from which a few steps of
ordinary training on one task land on a good solution for that task. Here a task is "the K
drawings of one character" and "ordinary training" is a few WGAN-GP steps. Meta-trained over
thousands of characters, ``θ_G`` becomes a generator that already draws *generic* strokes and
``θ_D`` a critic that already knows what real strokes look like; a few adversarial steps on a
new character's support set then only have to bend them towards that character. Reptile's
second-order term (``½ ∇(g_A · g_B)`` in Nichol et al.) rewards an initialisation where
successive inner steps agree (what one batch of noise teaches also helps the next): a
starting point built for fast, consistent adaptation, not one that merely does well on
average over characters (that would be joint training, which Reptile reduces to with one
inner step).

The two loops
-------------
::

    repeat (outer loop, one step of train_loop):
        for each of meta_batch tasks:
            x = K images of one random training character               (in [-1, 1])
            φ_G, φ_D = copies of θ_G, θ_D
            inner_steps times (inner loop, fresh Adam per task, betas (0, 0.9)):
                n_critic critic steps on  f(G(z)) - f(x) + λ GP         (λ = gp_weight)
                one generator step on     -f(G(z))
        θ_D ← θ_D + ε (mean φ_D − θ_D)                                   (Reptile)
        θ_G ← θ_G + ε (mean φ_G − θ_G)        variant="reptile"
        θ_G ← Adam step on mean ∇_φ_G [-f_φ_D(G_φ_G(z'))]               variant="fomaml"

``ε`` (``meta_train(lr=...)``) decays linearly to ``final_step_size`` over the steps or the
time budget, whichever ends first, as in :class:`~mlcourse.optim.reptile.Reptile`. The outer
update is :func:`mlcourse.optim.reptile.reptile_update` itself.

At test time :meth:`ReptileGAN.adapt` runs the same inner loop on the support set
(``adapt_steps`` steps) from the meta-learned weights, and :meth:`ReptileGAN.generate`
samples from the adapted generator. Both networks are adapted: the adapted critic is what
tells the generator what *this* character looks like.

The ``"fomaml"`` variant (first-order MAML on the generator)
-----------------------------------------------------------
MAML's objective for the generator is its loss *after* adaptation. First-order MAML drops
the derivative of the adapted weights with respect to ``θ_G`` and uses the gradient of that
loss at the adapted weights as the meta-gradient. Exactly, per outer step:

* task ``i`` is adapted as above, giving ``φ_G^i``, the generator's BatchNorm buffers
  ``β^i`` and ``φ_D^i``; right after its inner loop, fresh noise ``z'_i`` (``K x z_dim``,
  drawn from the same random stream) is drawn;
* ``g_i = ∇_φ [ -mean_j f_{φ_D^i}(G_φ(z'_i)_j) ]`` at ``φ = φ_G^i``, with the generator in
  training mode (BatchNorm normalises with the statistics of the ``K`` fakes, as in the inner
  loop) and the critic held fixed;
* ``θ_G.grad = mean_i g_i`` and one step of an outer ``Adam(lr=fomaml_lr, betas=(0, 0.9))``
  (created by :meth:`ReptileGAN.meta_train`, its moments kept across outer steps) moves
  ``θ_G``. The gradient is left in ``.grad``, as after any optimiser step.

The critic still moves by Reptile (``θ_D ← θ_D + ε (mean φ_D − θ_D)``), and so do the
generator's BatchNorm buffers. The difference from Reptile: Reptile moves ``θ_G`` along the
whole adaptation path (``θ − φ`` sums all inner gradients), FOMAML only along the last
gradient, the one that says how the *adapted* generator should change against the
*adapted* critic.

BatchNorm buffers of the generator
----------------------------------
The chapter-07 generator has BatchNorm with running statistics, and samples in eval mode
with them (as :meth:`~mlcourse.generative.gan.GAN.sample` does). In the inner loop the copy
runs in training mode: it normalises with the statistics of the batch of fakes and updates
*its own copy* of the running statistics; the module's buffers are never written by a task,
so tasks of a meta-batch cannot leak statistics into each other. After the meta-batch, the
floating-point buffers (``running_mean``, ``running_var``) are Reptile-averaged like the
weights, ``β ← β + ε (mean β^i − β)``, in both variants (statistics are not trained by a
gradient, so FOMAML has nothing else to offer them); the integer ``num_batches_tracked``
counters are left alone (they matter only for ``momentum=None``). At test time adaptation
starts from these meta-statistics, moves its copy towards the statistics of the adapted
generator, and the adapted generator samples in eval mode with them: the same support set
and seed give the same images, whatever ``n``.

The critic is a chapter-07 :class:`~mlcourse.generative.gan.Discriminator` with
``norm="layer"``: the gradient penalty is per example, and BatchNorm would mix examples.

Choices and sizes
-----------------
The reference code (github.com/LuEE-C/FIGR) uses ``K = 4``, 10 inner iterations of one critic
and one generator step, SGD at 1e-3 inside, ``λ = 10``, one task per outer step, and
Adam(1e-4) on ``θ − φ`` outside, for hundreds of thousands of outer steps on a GPU, with
LayerNorm generators. Here: the same ``K``, ``λ``, 10 inner iterations, ``n_critic = 1`` and
one task per outer step, but Adam with betas (0, 0.9) inside (WGAN-GP's optimiser) at 3e-3,
not chapter 07's 1e-4, because a few dozen steps must move the weights far (at 1e-3, ten
steps changed nothing one could see), plain Reptile outside (the chapter-05 update, ``ε``
annealed linearly from 0.5 to 0), 100 adaptation steps at test time (far more than in
training, as Reptile does for classification; see below), and the chapter-07 networks at
``width=32``.

Costs, in CPU time on one thread of a 2-core machine with other jobs running (28 x 28,
``width=32``, ``K = 4``): one inner iteration (critic step with penalty, generator step) takes
about 20 ms, so one outer step of the defaults (one task, 10 iterations) about 0.2 s, and
adapting to a support set (100 iterations) about 2 s; ten minutes of meta-training are a few
thousand outer steps.

What a short run gives, on the small Omniglot background set (samples adapted to characters
of held-out alphabets): after 445 outer steps (87 CPU seconds, ``ε`` from 1) the meta-learned
generator already draws stroke-like, character-like shapes, but 20 adaptation steps hardly
change them (the samples depend on the noise, not on the support set); 50 steps start to
and 100 steps visibly bend them towards the support character (loops for a loop, a few
strokes for a simple katakana). They are far from clean characters, which FIGR draws after
100,000+ outer steps on a GPU. In the tests, 50 outer steps on six 16 x 16 synthetic shapes
(``width=8``, about 6 s) already give, after 20 adaptation steps, images nearer to their own
shape's unseen drawings than to any other shape's.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import get_device
from ..data.base import ImageClassDataset
from ..generative.common import from_tanh_range, to_tanh_range
from ..generative.gan import Discriminator, Generator, critic_loss_wgan, g_loss_wgan, gradient_penalty
from ..optim.inner_loop import Params, functional_forward, named_params
from ..optim.reptile import reptile_update
from ..train import History, train_loop
from .common import FewShotGenerator, check_support

VARIANTS = ("reptile", "fomaml")
INNER_BETAS = (0.0, 0.9)  # WGAN-GP's Adam (Gulrajani et al., 2017); beta1 = 0: no momentum over 10 steps
OUTER_BETAS = (0.0, 0.9)  # the fomaml variant's outer Adam on θ_G


@dataclass
class AdaptedGAN:
    """What one inner loop returns: the adapted weights (detached copies) and its losses.

    ``generator`` is ``φ_G``, ``generator_buffers`` the generator's BatchNorm buffers after the
    loop, ``critic`` is ``φ_D``; ``metrics`` holds the means over the inner steps of ``loss``
    (critic loss with penalty), ``g_loss``, ``gp`` (unweighted penalty) and ``wdist``
    (``mean f(x) − mean f(G(z))``, the critic's estimate of the Wasserstein distance).
    """

    generator: Params
    generator_buffers: Params
    critic: Params
    metrics: dict[str, float] = field(default_factory=dict)


def _float_buffers(module: nn.Module) -> Params:
    """The floating-point buffers (BatchNorm running statistics), not the integer counters."""
    return {n: b for n, b in module.named_buffers() if b.is_floating_point()}


def _check_int(name: str, value, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


class ReptileGAN(FewShotGenerator):
    """FIGR: a chapter-07 generator and WGAN-GP critic, meta-trained with Reptile.

    Args:
        size, channels: the images (28 x 28 grey Omniglot by default).
        z_dim, width: the networks (:class:`~mlcourse.generative.gan.Generator` and a
            ``norm="layer"`` :class:`~mlcourse.generative.gan.Discriminator`).
        inner_steps: inner iterations per training task (each ``n_critic`` critic steps and one
            generator step), 10 as in FIGR.
        inner_lr: Adam learning rate of the inner loop (betas ``INNER_BETAS``), training and test.
        n_critic: critic steps per generator step in the inner loop (1 as in FIGR).
        gp_weight: the gradient-penalty weight ``λ``.
        meta_batch: tasks per outer step (their adapted weights are averaged).
        adapt_steps: inner iterations on the support set at test time (:meth:`adapt`).
        final_step_size: ``ε`` decays linearly from ``meta_train(lr=...)`` to this value.
        variant: ``"reptile"`` (both networks by Reptile) or ``"fomaml"`` (generator by a
            first-order MAML gradient and an outer Adam, critic by Reptile; see the module).
        fomaml_lr: learning rate of that outer Adam (unused by ``"reptile"``).
    """

    method_name = "reptile-gan"

    def __init__(
        self,
        size: int = 28,
        channels: int = 1,
        z_dim: int = 64,
        width: int = 32,
        inner_steps: int = 10,
        inner_lr: float = 3e-3,
        n_critic: int = 1,
        gp_weight: float = 10.0,
        meta_batch: int = 1,
        adapt_steps: int = 100,
        final_step_size: float = 0.0,
        variant: str = "reptile",
        fomaml_lr: float = 1e-4,
    ):
        super().__init__()  # first: records the arguments above for save/load
        for name, value, low in (("size", size, 4), ("channels", channels, 1), ("z_dim", z_dim, 1), ("width", width, 1),
                                 ("inner_steps", inner_steps, 1), ("n_critic", n_critic, 1),
                                 ("meta_batch", meta_batch, 1), ("adapt_steps", adapt_steps, 0)):  # fmt: skip
            _check_int(name, value, low)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if not inner_lr > 0 or not fomaml_lr > 0:
            raise ValueError(f"learning rates must be > 0, got inner_lr={inner_lr!r}, fomaml_lr={fomaml_lr!r}")
        if not gp_weight >= 0 or not final_step_size >= 0:
            raise ValueError(f"gp_weight and final_step_size must be >= 0, got {gp_weight!r} and {final_step_size!r}")
        self.size, self.channels, self.z_dim = size, channels, z_dim
        self.inner_steps, self.inner_lr, self.n_critic, self.gp_weight = inner_steps, float(inner_lr), n_critic, float(gp_weight)
        self.meta_batch, self.adapt_steps, self.final_step_size = meta_batch, adapt_steps, float(final_step_size)
        self.variant, self.fomaml_lr = variant, float(fomaml_lr)
        self.generator = Generator(z_dim, size, channels, width)
        self.critic = Discriminator(size, channels, width, norm="layer")  # no BatchNorm: WGAN-GP

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)

    def _noise(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        return torch.randn(n, self.z_dim, generator=generator).to(self.device)

    # -- the inner loop -------------------------------------------------------------------
    def inner_loop(self, real: torch.Tensor, *, steps: int, generator: torch.Generator | None = None) -> AdaptedGAN:
        """Train copies of both networks on one task's images ``real`` (``[K, C, H, W]`` in
        ``[-1, 1]``) for ``steps`` WGAN-GP iterations; the module itself is never modified.

        Each iteration: ``n_critic`` critic steps on ``f(G(z)) − f(x) + λ GP`` (``K`` fakes
        against the ``K`` real images), then one generator step on ``−f(G(z))`` with fresh
        noise. Fresh Adams (``INNER_BETAS``) per call. All noise, and the penalty's
        interpolation weights, come from ``generator``.
        """
        G = copy.deepcopy(self.generator).train()
        D = copy.deepcopy(self.critic).train()
        opt_g = torch.optim.Adam(G.parameters(), lr=self.inner_lr, betas=INNER_BETAS)
        opt_d = torch.optim.Adam(D.parameters(), lr=self.inner_lr, betas=INNER_BETAS)
        k = real.shape[0]
        sums = {"loss": 0.0, "g_loss": 0.0, "gp": 0.0, "wdist": 0.0}
        with torch.enable_grad():
            for _ in range(steps):
                for _ in range(self.n_critic):
                    with torch.no_grad():
                        fake = G(self._noise(k, generator))
                    real_scores, fake_scores = D(real), D(fake)
                    gp = gradient_penalty(D, real, fake, generator=generator)
                    d_loss = critic_loss_wgan(real_scores, fake_scores) + self.gp_weight * gp
                    opt_d.zero_grad(set_to_none=True)
                    d_loss.backward()
                    opt_d.step()
                g_loss = g_loss_wgan(D(G(self._noise(k, generator))))
                opt_g.zero_grad(set_to_none=True)
                g_loss.backward()
                opt_g.step()
                sums["loss"] += d_loss.item()
                sums["g_loss"] += g_loss.item()
                sums["gp"] += gp.item()
                sums["wdist"] += (real_scores.mean() - fake_scores.mean()).item()
        metrics = {n: v / steps for n, v in sums.items()} if steps else {}
        return AdaptedGAN(
            generator={n: p.detach() for n, p in named_params(G).items()},
            generator_buffers={n: b.detach().clone() for n, b in _float_buffers(G).items()},
            critic={n: p.detach() for n, p in named_params(D).items()},
            metrics=metrics,
        )

    # -- the outer loop -------------------------------------------------------------------
    def first_order_gradient(self, adapted: AdaptedGAN, z: torch.Tensor) -> Params:
        """``∇_φ [ −mean f_{φ_D}(G_φ(z)) ]`` at ``φ = φ_G`` of ``adapted``: the fomaml
        meta-gradient of one task (generator in training mode, critic fixed)."""
        phi = {n: p.detach().clone().requires_grad_() for n, p in adapted.generator.items()}
        buffers = {n: b.clone() for n, b in adapted.generator_buffers.items()}  # BatchNorm writes these
        was_training = self.generator.training
        self.generator.train()
        try:
            with torch.enable_grad():
                fake = functional_forward(self.generator, phi, buffers, z)
                loss = g_loss_wgan(functional_forward(self.critic, adapted.critic, {}, fake))
                grads = torch.autograd.grad(loss, list(phi.values()))
        finally:
            self.generator.train(was_training)
        return dict(zip(phi, grads))

    @torch.no_grad()
    def outer_step(self, tasks: list[torch.Tensor], step_size: float, generator: torch.Generator | None = None,
                   g_optimizer: torch.optim.Optimizer | None = None) -> list[AdaptedGAN]:  # fmt: skip
        """One meta-update from ``tasks`` (each ``[K, C, H, W]`` in ``[-1, 1]``); returns the
        adapted weights of each task.

        ``θ_D`` and the generator's floating-point buffers move by Reptile with ``step_size``
        ``ε``; ``θ_G`` too for ``variant="reptile"``, or by ``g_optimizer`` (required) on the
        mean first-order gradient for ``"fomaml"`` (see the module docstring).
        """
        if not tasks:
            raise ValueError("outer_step needs at least one task")
        fomaml = self.variant == "fomaml"
        if fomaml and g_optimizer is None:
            raise ValueError("the fomaml variant needs g_optimizer, the outer optimiser of the generator")
        adapted, grads = [], []
        for x in tasks:
            a = self.inner_loop(x, steps=self.inner_steps, generator=generator)
            adapted.append(a)
            if fomaml:
                grads.append(self.first_order_gradient(a, self._noise(x.shape[0], generator)))
        updates = [
            (named_params(self.critic), [a.critic for a in adapted]),
            (_float_buffers(self.generator), [a.generator_buffers for a in adapted]),
        ]
        if not fomaml:
            updates.append((named_params(self.generator), [a.generator for a in adapted]))
        for theta, phis in updates:
            new = reptile_update(theta, phis, step_size)
            for name, p in theta.items():
                p.copy_(new[name])  # in place on purpose: nothing differentiates through the outer step
        if fomaml:
            for name, p in named_params(self.generator).items():
                p.grad = torch.stack([g[name] for g in grads]).mean(0)
            g_optimizer.step()
        return adapted

    def meta_train(
        self,
        dataset: ImageClassDataset,
        *,
        steps: int,
        time_budget: float | None = None,
        seed: int = 0,
        device=None,
        progress=True,
        shots: int = 4,
        lr: float = 0.5,
        history: History | None = None,
    ) -> History:
        """``steps`` outer updates (or until ``time_budget`` seconds), each on ``meta_batch``
        tasks of ``shots`` images of one random character of ``dataset``.

        ``lr`` is the outer step size ``ε``, decayed linearly to ``final_step_size``: at step
        ``i`` of this call ``ε_i = (1 − t) lr + t final_step_size`` with ``t = i / steps``, or
        the fraction of ``time_budget`` spent if that is larger.

        Logged per outer step, as means over the meta-batch of the means over each inner
        loop: ``loss`` (critic loss, penalty included), ``g_loss``, ``gp``, ``wdist``; and
        ``step_size`` (``ε``). Cost: ``meta_batch x inner_steps`` GAN iterations per outer
        step on ``K`` images, about 0.2 s with the defaults on one CPU thread (module docstring).
        """
        _check_int("steps", steps, 0)
        _check_int("shots", shots, 1)
        if not lr > 0:
            raise ValueError(f"the outer step size lr must be > 0, got {lr!r}")
        if not isinstance(dataset, ImageClassDataset):
            raise TypeError(f"meta_train needs an ImageClassDataset, got {type(dataset).__name__}")
        if tuple(dataset.image_shape) != self.image_shape:
            raise ValueError(f"dataset images are {tuple(dataset.image_shape)}, this model was built for {self.image_shape}")
        pools = [idx for idx in dataset.indices_by_class() if len(idx) >= shots]
        if not pools:
            raise ValueError(f"no class of {dataset.name!r} has {shots} images: use fewer shots")
        device = torch.device(device) if device is not None else get_device()
        self.to(device)
        torch.manual_seed(seed)
        rng = torch.Generator().manual_seed(seed)
        g_optimizer = (torch.optim.Adam(self.generator.parameters(), lr=self.fomaml_lr, betas=OUTER_BETAS)
                       if self.variant == "fomaml" else None)  # fmt: skip
        total, start, done = max(1, steps), time.perf_counter(), [0]

        def task():
            idx = pools[int(torch.randint(len(pools), (1,), generator=rng))]
            pick = idx[torch.randperm(len(idx), generator=rng)[:shots]]
            return to_tanh_range(dataset.as_float(pick, generator=rng)).to(device)

        def step(i):
            frac = done[0] / total
            if time_budget:  # decay over the steps or the seconds, whichever run out first
                frac = min(1.0, max(frac, (time.perf_counter() - start) / time_budget))
            step_size = (1 - frac) * lr + frac * self.final_step_size
            adapted = self.outer_step([task() for _ in range(self.meta_batch)], step_size, rng, g_optimizer)
            done[0] += 1
            out = {n: sum(a.metrics[n] for a in adapted) / len(adapted) for n in adapted[0].metrics}
            return {**out, "step_size": step_size}

        self.train()
        try:
            history = train_loop(step, steps, time_budget=time_budget, history=history, desc="meta-train FIGR", progress=progress)
        finally:
            if g_optimizer is not None:
                self.generator.zero_grad(set_to_none=True)
            self.eval()
        return history

    # -- test time ------------------------------------------------------------------------
    def _adapt(self, support: torch.Tensor, steps: int | None, rng: torch.Generator) -> Generator:
        support = check_support(support, self.image_shape)
        steps = self.adapt_steps if steps is None else steps
        _check_int("steps", steps, 0)
        real = to_tanh_range(support).to(self.device)
        if steps == 0:
            return copy.deepcopy(self.generator).eval()
        adapted = self.inner_loop(real, steps=steps, generator=rng)
        G = copy.deepcopy(self.generator)
        with torch.no_grad():
            for name, p in named_params(G).items():
                p.copy_(adapted.generator[name])
            for name, b in _float_buffers(G).items():
                b.copy_(adapted.generator_buffers[name])
        return G.eval()

    def adapt(self, support: torch.Tensor, *, steps: int | None = None, seed: int = 0) -> Generator:
        """A copy of the generator fine-tuned on ``support`` (``[K, C, H, W]`` in ``[0, 1]``):
        the inner loop (both networks, ``adapt_steps`` iterations unless ``steps`` is given),
        noise drawn under ``seed``. Returned in eval mode, producing ``[-1, 1]`` images;
        the meta-parameters are not modified. ``steps=0`` returns the meta-learned generator."""
        return self._adapt(support, steps, torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def generate(self, support: torch.Tensor, n: int, *, seed: int = 0, steps: int | None = None) -> torch.Tensor:
        """Adapt to ``support``, then draw ``n`` images: ``float [n, C, H, W]`` in ``[0, 1]``
        on the CPU, deterministic under ``seed`` (adaptation and sampling share its stream)."""
        _check_int("n", n, 1)
        rng = torch.Generator().manual_seed(seed)
        G = self._adapt(support, steps, rng)
        z = torch.randn(n, self.z_dim, generator=rng)
        return torch.cat([from_tanh_range(G(z[i : i + 500].to(self.device))).cpu() for i in range(0, n, 500)])
