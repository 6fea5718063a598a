"""Meta-generation: few-shot image generation with meta-learned models (chapters 09-10).

==========================  ===============================================================
:mod:`.common`              the :class:`FewShotGenerator` protocol (``meta_train``,
                            ``generate(support, n, seed)``), character sets, save/load
:mod:`.reptile_gan`         FIGR: a WGAN-GP meta-trained with Reptile (and a first-order
                            MAML variant for the generator)
:mod:`.baselines`           a GAN from scratch on the support set; a GAN (and chapter 08's
                            VAE) pretrained on all training characters, then fine-tuned
:mod:`.statistician`        the Neural Statistician: a set-conditioned VAE, the set ELBO,
                            conditional log-likelihood by importance sampling, one-shot
                            classification through the context posterior
:mod:`.vae_adapt`           chapter 08's VAE meta-trained with Reptile (optimisation-based)
:mod:`.report`              chapter 09's pictures and tables: the two loops drawn, K-grids,
                            the committed benchmark runs with paired differences
:mod:`.plots`               chapter 10's: conditional NLL against the number of drawings
==========================  ===============================================================

Scores for generated characters (Fréchet distance, recognisability, diversity,
memorisation) are in :mod:`mlcourse.evaluation.generation`; the benchmark is
``python -m mlcourse.genbench``.
"""

from .baselines import PretrainedGAN, PretrainedVAE, ScratchGAN
from .common import FewShotGenerator, character_sets, check_support
from .reptile_gan import AdaptedGAN, ReptileGAN
from .statistician import NeuralStatistician, conditional_log_likelihood, importance_log_likelihood
from .vae_adapt import ReptileVAE

__all__ = ["FewShotGenerator", "character_sets", "check_support", "ReptileGAN", "AdaptedGAN", "ReptileVAE", "ScratchGAN",
           "PretrainedGAN", "PretrainedVAE", "NeuralStatistician", "conditional_log_likelihood", "importance_log_likelihood"]
