"""Generative models of handwritten characters: a GAN and a VAE, each in one file.

==========================  ===============================================================
:mod:`.gan`                 DCGAN generator/discriminator, non-saturating and minimax
                            losses, WGAN-GP with its gradient penalty, class-conditional
                            variants (label embedding in G, projection in D), ``train_gan``
:mod:`.vae`                 convolutional VAE (Bernoulli or Gaussian decoder), the ELBO,
                            importance-weighted log-likelihood, conditional VAE, ``train_vae``
:mod:`.common`              pixel ranges and the size plan shared by both
:mod:`.explore`             a VAE's latent space: interpolations, axis traversals, the
                            picture behind chapter 08's explorer widget
==========================  ===============================================================

How good the samples are is measured by :mod:`mlcourse.metrics` (Fréchet distance,
precision/recall and class consistency in the feature space of a network the course trains
itself, so nothing has to be downloaded).
"""

from . import explore
from .common import as_unit_float, from_tanh_range, to_tanh_range, upsampling_plan
from .gan import (
    GAN,
    LOSSES,
    Discriminator,
    Generator,
    critic_loss_wgan,
    d_loss_nonsaturating,
    g_loss_nonsaturating,
    g_loss_saturating,
    g_loss_wgan,
    gradient_penalty,
    make_gan,
    train_gan,
)
from .vae import (
    BINARIZATIONS,
    ConvVAE,
    ELBOTerms,
    binarize,
    binarize_fixed,
    elbo,
    evaluate_vae,
    gaussian_kl,
    iwae_log_likelihood,
    kl_weight,
    log_normal,
    reparameterize,
    train_vae,
)

__all__ = [
    "GAN", "LOSSES", "Generator", "Discriminator", "make_gan", "train_gan",
    "d_loss_nonsaturating", "g_loss_nonsaturating", "g_loss_saturating",
    "critic_loss_wgan", "g_loss_wgan", "gradient_penalty",
    "ConvVAE", "ELBOTerms", "BINARIZATIONS", "binarize", "binarize_fixed", "elbo", "iwae_log_likelihood",
    "evaluate_vae", "gaussian_kl", "log_normal", "reparameterize", "kl_weight", "train_vae",
    "upsampling_plan", "as_unit_float", "to_tanh_range", "from_tanh_range", "explore",
]
