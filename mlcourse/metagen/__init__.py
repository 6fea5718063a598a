"""Meta-generation: few-shot image generation with meta-learned models (chapters 09-10).

==========================  ===============================================================
:mod:`.common`              the :class:`FewShotGenerator` protocol (``meta_train``,
                            ``generate(support, n, seed)``), character sets, save/load
==========================  ===============================================================

Scores for generated characters (Fréchet distance, recognisability, diversity,
memorisation) are in :mod:`mlcourse.evaluation.generation`; the benchmark is
``python -m mlcourse.genbench``.
"""

from .common import FewShotGenerator, character_sets, check_support

__all__ = ["FewShotGenerator", "character_sets", "check_support"]
