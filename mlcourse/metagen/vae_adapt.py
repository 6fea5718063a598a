"""Optimisation-based few-shot generation with a VAE: chapter 08's VAE, meta-trained with Reptile.

The Neural Statistician (:mod:`.statistician`) adapts to a character by *inference*: one pass
of a statistic network turns the support set into a context vector. The optimisation-based
alternative adapts by *training*: start from meta-learned weights θ of an ordinary VAE
(:class:`~mlcourse.generative.ConvVAE`, chapter 08) and take a few gradient steps on the
ELBO of the support images. Reptile (chapter 05) chooses θ so that those few steps go far::

    for each outer step:
        for each of n characters:  φ_i = θ;  k Adam steps on −ELBO(K drawings of character i)
        θ ← θ + ε (mean_i φ_i − θ)                           (mlcourse.optim.reptile.reptile_update)

At test time the same inner loop (``adapt_steps`` steps) fits a copy to the support set; new
drawings are samples of the adapted VAE, and the conditional likelihood of a held-out drawing
x given the support set D is the adapted VAE's importance-weighted estimate of log p(x),
:func:`~mlcourse.generative.iwae_log_likelihood` (with no support images: θ itself). Both
VAEs are scored in nats on the same drawings, so the two ways of adapting meet on one scale.

The VAE has no BatchNorm, so a task's weights are all there is to copy: one worker copy of
the network is reloaded with θ for every task.
"""

from __future__ import annotations

import torch

from ..config import get_device
from ..data.base import ImageClassDataset
from ..generative.vae import ConvVAE, binarize, elbo, iwae_log_likelihood
from ..optim.reptile import reptile_update
from ..train import History, train_loop
from .common import FewShotGenerator, check_support


class ReptileVAE(FewShotGenerator):
    """A :class:`~mlcourse.generative.ConvVAE` whose initialisation is meta-learned with Reptile.

    Args:
        size, channels, latent_dim, width, hidden: the VAE (chapter 08's defaults, smaller hidden layer).
        inner_steps, inner_lr: Adam steps (β1 = 0, as in Reptile) on the K drawings of a task.
        adapt_steps: the same, at test time (default ``inner_steps``).
        meta_batch: characters per outer step.
        final_step_size: ε decays linearly from ``meta_train(lr=...)`` to this value.
    """

    method_name = "reptile-vae"

    def __init__(self, size: int = 28, channels: int = 1, latent_dim: int = 32, width: int = 32, hidden: int = 256,
                 inner_steps: int = 5, inner_lr: float = 1e-3, adapt_steps: int | None = None, meta_batch: int = 5,
                 final_step_size: float = 0.0):  # fmt: skip
        super().__init__()
        for name, value, low in (("inner_steps", inner_steps, 0), ("meta_batch", meta_batch, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if adapt_steps is not None and (not isinstance(adapt_steps, int) or adapt_steps < 0):
            raise ValueError(f"adapt_steps must be an int >= 0 or None, got {adapt_steps!r}")
        if not inner_lr > 0:
            raise ValueError(f"inner_lr must be > 0, got {inner_lr!r}")
        self.vae = ConvVAE(size, channels, latent_dim, width, hidden)
        self.image_shape = (channels, size, size)
        self.inner_steps, self.inner_lr, self.meta_batch = inner_steps, float(inner_lr), meta_batch
        self.adapt_steps = inner_steps if adapt_steps is None else adapt_steps
        self.final_step_size = float(final_step_size)

    # -- the inner loop -------------------------------------------------------------------
    def _fit(self, worker: ConvVAE, x: torch.Tensor, steps: int, generator: torch.Generator) -> None:
        """``steps`` Adam steps of ``worker`` on −ELBO of ``x`` (binarised afresh each step)."""
        opt = torch.optim.Adam(worker.parameters(), lr=self.inner_lr, betas=(0.0, 0.999))
        with torch.enable_grad():
            for _ in range(steps):
                xb = binarize(x, "dynamic", generator=generator)
                loss = -elbo(worker, xb, generator=generator).elbo.mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

    def adapt(self, support: torch.Tensor | None, *, steps: int | None = None, seed: int = 0) -> ConvVAE:
        """A copy of the VAE fitted to ``support`` (float [K, C, H, W] in [0, 1]); θ is not changed.

        An empty support set (``support[:0]``) returns an unadapted copy of θ.
        """
        if isinstance(support, torch.Tensor) and support.dim() == 4 and support.shape[0] == 0:
            support = None  # no drawings: the meta-learned θ itself
        worker = ConvVAE(**{k: v for k, v in self._vae_config().items()}).to(self.device)
        worker.load_state_dict(self.vae.state_dict())
        if support is not None:
            x = check_support(support, self.image_shape).to(self.device)
            self._fit(worker, x, self.adapt_steps if steps is None else steps, torch.Generator(self.device).manual_seed(seed))
        return worker.eval()

    def _vae_config(self) -> dict:
        c = self._config
        return {"size": c.get("size", 28), "channels": c.get("channels", 1), "latent_dim": c.get("latent_dim", 32),
                "width": c.get("width", 32), "hidden": c.get("hidden", 256)}  # fmt: skip

    # -- the protocol ---------------------------------------------------------------------
    def meta_train(self, dataset: ImageClassDataset, *, steps: int, time_budget: float | None = None, seed: int = 0,
                   device=None, progress=True, shots: int = 4, lr: float = 1.0) -> History:  # fmt: skip
        """``steps`` Reptile updates of ``meta_batch`` characters with ``shots`` drawings each;
        ``lr`` is the outer step size ε, decayed linearly to ``final_step_size`` over the steps
        or the ``time_budget``, whichever ends first. Logs ``loss``: the mean −ELBO (nats) of
        the task's drawings after the inner loop."""
        import time

        sizes = dataset.class_sizes()
        eligible = torch.nonzero(sizes >= shots).flatten()
        if len(eligible) == 0:
            raise ValueError(f"no training class has {shots} images")
        device = torch.device(device) if device is not None else get_device()
        self.to(device)
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        g_dev = torch.Generator(device).manual_seed(seed)
        by_class = dataset.indices_by_class()
        worker = ConvVAE(**self._vae_config()).to(device)
        total, start = max(1, steps), time.perf_counter()

        def step(i):
            frac = min(1.0, i / total)
            if time_budget:
                frac = min(1.0, max(frac, (time.perf_counter() - start) / time_budget))
            eps = (1 - frac) * lr + frac * self.final_step_size
            theta = dict(self.vae.named_parameters())
            adapted, losses = [], []
            for c in eligible[torch.randint(len(eligible), (self.meta_batch,), generator=g)].tolist():
                idx = by_class[c][torch.randperm(len(by_class[c]), generator=g)[:shots]]
                x = dataset.as_float(idx, generator=g).to(device)
                worker.load_state_dict(self.vae.state_dict())
                self._fit(worker, x, self.inner_steps, g_dev)
                with torch.no_grad():
                    losses.append(-elbo(worker, binarize(x, "dynamic", generator=g_dev), generator=g_dev).elbo.mean().item())
                adapted.append({n: p.detach().clone() for n, p in worker.named_parameters()})
            new = reptile_update({n: p.detach() for n, p in theta.items()}, adapted, eps)
            with torch.no_grad():
                for n, p in theta.items():
                    p.copy_(new[n])
            return {"loss": sum(losses) / len(losses), "step_size": eps}

        history = train_loop(step, steps, time_budget=time_budget, desc="meta-train Reptile-VAE", progress=progress)
        self.eval()
        return history

    @torch.no_grad()
    def generate(self, support: torch.Tensor, n: int, *, seed: int = 0) -> torch.Tensor:
        """``n`` drawings of the support set's character: decoder means of the adapted VAE at
        ``z ~ N(0, I)`` (pixel probabilities in [0, 1]), deterministic under ``seed``."""
        support = check_support(support, self.image_shape)
        return self.adapt(support, seed=seed).sample(n, seed=seed)

    @torch.no_grad()
    def conditional_log_likelihood(self, x: torch.Tensor, support: torch.Tensor | None, k: int = 100, seed: int = 0) -> torch.Tensor:
        """``log p(x | D)`` per image of binary ``x`` (nats): the IWAE estimate with ``k`` samples
        under the VAE adapted to ``support`` (θ itself when the support set is empty)."""
        adapted = self.adapt(support, seed=seed)
        g = torch.Generator(self.device).manual_seed(seed)
        return iwae_log_likelihood(adapted, x.to(self.device).float(), k, generator=g).cpu()


__all__ = ["ReptileVAE"]
