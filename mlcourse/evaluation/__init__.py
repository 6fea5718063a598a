"""Evaluation: how good a few-shot classifier or generator is, and how sure we can be.

==========================  ===============================================================
:mod:`.generation`          few-shot generation, one held-out character at a time: FD,
                            precision/recall, recognisability, diversity, memorisation,
                            paired comparisons over characters, reference rows
==========================  ===============================================================

Accuracy over episodes, its interval and paired comparisons are in :mod:`mlcourse.evaluate`;
set-level generation metrics (FD, precision/recall, the feature net) in
:mod:`mlcourse.metrics`. The scores here build on both.
"""

from .generation import (
    SCORES,
    CharacterScores,
    compare_scores,
    copy_with_jitter,
    memorisation_ratio,
    real_vs_real,
    score_characters,
    spread,
)

__all__ = ["SCORES", "CharacterScores", "score_characters", "compare_scores", "memorisation_ratio", "spread",
           "real_vs_real", "copy_with_jitter"]
