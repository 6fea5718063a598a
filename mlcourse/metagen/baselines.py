"""The rows a meta-learned GAN has to beat: no meta-learning at all, and ordinary pretraining.

Both use FIGR's networks and its adaptation (:class:`~mlcourse.metagen.reptile_gan.ReptileGAN`:
the same generator, the same WGAN-GP critic, the same inner loop on the support set), so the
only difference from the meta-learned row is where the starting weights come from:

* :class:`ScratchGAN`: from nowhere. A freshly initialised GAN trained on the ``K`` support
  images alone, for ``adapt_steps`` iterations (300, three times FIGR's adaptation: a
  from-scratch GAN given only FIGR's steps would be a straw man).
* :class:`PretrainedGAN`: chapter 07's recipe. One WGAN-GP trained on *all* training
  characters at once (:func:`mlcourse.generative.train_gan`), then fine-tuned on the support
  set with FIGR's inner loop, the same ``adapt_steps`` (100) and inner learning rate. It knows what strokes look
  like, but nothing in its training asked it to adapt quickly.

If FIGR does not beat :class:`PretrainedGAN`, the meta-learning added nothing that ordinary
pretraining did not already give.

The VAE rows have the same pair of references in one class, :class:`PretrainedVAE`: chapter
08's VAE trained on all training characters (:func:`mlcourse.generative.train_vae`). With
``adapt_steps = 0`` (the default) it ignores the support set: the unconditional VAE whose
likelihood the Neural Statistician must beat. With ``adapt_steps > 0`` it is fine-tuned on
the support set with :class:`~mlcourse.metagen.ReptileVAE`'s inner loop, the pretrain-then-
fine-tune reference for Reptile's VAE.
"""

from __future__ import annotations

from ..data.base import ImageClassDataset
from ..train import History
from .reptile_gan import ReptileGAN
from .vae_adapt import ReptileVAE


class ScratchGAN(ReptileGAN):
    """No meta-training: adaptation is training from random weights on the support set."""

    method_name = "scratch-gan"

    def __init__(self, size: int = 28, channels: int = 1, z_dim: int = 64, width: int = 32, inner_lr: float = 3e-3,
                 n_critic: int = 1, gp_weight: float = 10.0, adapt_steps: int = 300):  # fmt: skip
        super().__init__(size=size, channels=channels, z_dim=z_dim, width=width, inner_lr=inner_lr, n_critic=n_critic,
                         gp_weight=gp_weight, adapt_steps=adapt_steps)  # fmt: skip

    def meta_train(self, dataset: ImageClassDataset, *, steps: int = 0, time_budget=None, seed: int = 0, device=None,
                   progress=True, shots: int = 4, **_) -> History:  # fmt: skip
        """Nothing to learn before the support set arrives: returns an empty history."""
        if device is not None:
            self.to(device)
        return History()


class PretrainedGAN(ReptileGAN):
    """A WGAN-GP trained on every training character (chapter 07), then fine-tuned like FIGR."""

    method_name = "finetune-gan"

    def __init__(self, size: int = 28, channels: int = 1, z_dim: int = 64, width: int = 32, inner_lr: float = 3e-3,
                 n_critic: int = 1, gp_weight: float = 10.0, adapt_steps: int = 100, batch_size: int = 32):  # fmt: skip
        super().__init__(size=size, channels=channels, z_dim=z_dim, width=width, inner_lr=inner_lr, n_critic=n_critic,
                         gp_weight=gp_weight, adapt_steps=adapt_steps)  # fmt: skip
        self.batch_size = batch_size

    def meta_train(self, dataset: ImageClassDataset, *, steps: int, time_budget=None, seed: int = 0, device=None,
                   progress=True, shots: int = 4, **_) -> History:  # fmt: skip
        """Ordinary WGAN-GP training on all images of ``dataset`` (:func:`~mlcourse.generative.train_gan`:
        Adam 1e-4, betas (0, 0.9), five critic steps per generator step); ``shots`` is unused."""
        from ..generative.gan import GAN, train_gan

        gan = GAN(self.generator, self.critic, loss="wgan-gp")
        _, history = train_gan(dataset, gan, loss="wgan-gp", steps=steps, time_budget=time_budget, batch_size=self.batch_size,
                               gp_weight=self.gp_weight, seed=seed, device=device, progress=progress)  # fmt: skip
        self.eval()
        return history


class PretrainedVAE(ReptileVAE):
    """Chapter 08's VAE trained on every training image; adapted (if at all) like :class:`ReptileVAE`."""

    method_name = "vae"

    def __init__(self, size: int = 28, channels: int = 1, latent_dim: int = 32, width: int = 32, hidden: int = 256,
                 inner_lr: float = 1e-3, adapt_steps: int = 0, batch_size: int = 64, lr: float = 1e-3):  # fmt: skip
        super().__init__(size=size, channels=channels, latent_dim=latent_dim, width=width, hidden=hidden,
                         inner_steps=0, inner_lr=inner_lr, adapt_steps=adapt_steps)  # fmt: skip
        self.batch_size, self.lr = batch_size, float(lr)

    def meta_train(self, dataset: ImageClassDataset, *, steps: int, time_budget=None, seed: int = 0, device=None,
                   progress=True, shots: int = 4, **_) -> History:  # fmt: skip
        """Ordinary ELBO training on all images of ``dataset`` (:func:`~mlcourse.generative.train_vae`,
        dynamic binarisation, Adam ``lr``); ``shots`` is unused."""
        from ..generative.vae import train_vae

        _, history = train_vae(dataset, self.vae, steps=steps, time_budget=time_budget, batch_size=self.batch_size,
                               lr=self.lr, seed=seed, device=device, progress=progress)  # fmt: skip
        self.eval()
        return history
