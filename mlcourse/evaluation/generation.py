"""Scores for few-shot generation: one held-out character at a time, then over characters.

A few-shot generator receives ``K`` drawings of a character it has never seen (the *support
set*) and draws ``M`` new ones. Whether they are good is asked of the character's *other*
real drawings (the ones the generator did not see), in the feature space of the course's
Conv-4 (:func:`mlcourse.metrics.feature_net`, trained on the training alphabets only), with
five questions:

* **Fréchet distance** (FD) between generated and real features, per character and pooled over
  all characters. A character has only 15 to 20 real drawings, too few for a covariance of
  64 features, so the per-character FD is taken in the ``fd_dims`` (8) leading principal
  directions of the real held-out features (one projection, fitted on real drawings only,
  shared by every method); the pooled FD uses all 64. Both are biased upwards by the small
  samples: compare them only between methods scored with the same ``M`` on the same
  characters, next to the real-vs-real floor (:func:`real_vs_real`).
* **Precision / recall** (Kynkäänniemi et al., 2019) per character, with ``k = 3`` neighbours.
* **Recognisability**: a few-shot classifier is given the real support images of the character
  and of ``N - 1`` distractor characters (other held-out characters) and labels each
  generated image; the score is the fraction assigned to the intended character (chance is
  ``1 / N``). Default classifier: the nearest class mean in the feature space (ProtoNet's
  rule on the feature net).
* **Diversity**: the spread of the generated features (mean distance to their own mean)
  divided by the spread of the real drawings. 1 means "as varied as a person's drawings";
  a generator that repeats one image scores near 0.
* **Memorisation**, as a ratio: the mean distance from each generated image to its *nearest
  support image*, divided by the same mean for the character's other real drawings. A new
  real drawing sits at some typical distance from the support drawings; generated images that
  sit much closer (ratio well below 1) are near-copies of the support set, whatever their FD
  says. Copying the support set exactly gives 0.

Every per-character score comes back as a list in the order of the characters, so two methods
scored on the same characters are compared pair by pair with
:func:`mlcourse.evaluate.compare` (paired difference, 95% CI, sign-flip p-value).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from ..evaluate import compare, mean_confidence_interval
from ..metrics import NearestClassMean, extract_features, frechet_distance, precision_recall

# The scores reported per character, with the direction that is better.
SCORES = {
    "fd": "lower", "precision": "higher", "recall": "higher", "recognisability": "higher",
    "diversity": "closer to 1", "memorisation": "closer to 1 (below 1: near-copies)",
}  # fmt: skip


def spread(features: torch.Tensor) -> float:
    """Mean Euclidean distance of the features to their mean (a scale of their variety)."""
    if len(features) < 2:
        raise ValueError("spread needs at least two images")
    return float((features - features.mean(0)).norm(dim=1).mean())


def nearest_distance(features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """For each row of ``features``, the distance to its nearest row of ``reference``."""
    return torch.cdist(features, reference).min(dim=1).values


def memorisation_ratio(generated: torch.Tensor, support: torch.Tensor, real: torch.Tensor) -> float:
    """Mean nearest-support distance of generated features over that of the real ones (see above)."""
    real_gap = nearest_distance(real, support).mean()
    if real_gap <= 0:
        raise ValueError("the character's other drawings coincide with its support set: memorisation is undefined")
    return float(nearest_distance(generated, support).mean() / real_gap)


@dataclass
class CharacterScores:
    """Scores of one generator on one list of characters (same order in every list)."""

    characters: list[str]
    fd: list[float]
    precision: list[float]
    recall: list[float]
    recognisability: list[float]
    diversity: list[float]
    memorisation: list[float]
    pooled_fd: float
    pooled_precision: float
    pooled_recall: float
    shots: int
    samples: int
    ways: int
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """Mean and 95% CI over characters of every score, plus the pooled figures."""
        out = {}
        for name in SCORES:
            mean, half = mean_confidence_interval(getattr(self, name))
            out[name] = {"mean": mean, "ci95": 0.0 if math.isnan(half) else half}
        out.update(pooled_fd=self.pooled_fd, pooled_precision=self.pooled_precision, pooled_recall=self.pooled_recall,
                   characters=len(self.characters), shots=self.shots, samples=self.samples, ways=self.ways)  # fmt: skip
        return out

    def as_dict(self) -> dict:
        return {**{k: v for k, v in self.__dict__.items()}, "summary": self.summary()}

    def __str__(self) -> str:
        s = self.summary()
        return " | ".join(f"{name} {s[name]['mean']:.3f} ± {s[name]['ci95']:.3f}" for name in SCORES) + (
            f" | pooled FD {self.pooled_fd:.2f} ({len(self.characters)} characters, K={self.shots}, M={self.samples})"
        )


def _distractors(i: int, n: int, ways: int, generator: torch.Generator) -> list[int]:
    others = torch.tensor([j for j in range(n) if j != i])
    return others[torch.randperm(len(others), generator=generator)[: ways - 1]].tolist()


def score_characters(
    generate: Callable[[torch.Tensor, int, int], torch.Tensor],
    sets: Sequence[tuple[torch.Tensor, torch.Tensor]],
    net: torch.nn.Module,
    *,
    samples: int = 32,
    ways: int = 5,
    names: Sequence[str] | None = None,
    classifier: Callable | None = None,
    seed: int = 0,
    k_neighbours: int = 3,
    fd_dims: int = 8,
    progress: bool = False,
) -> CharacterScores:
    """Generate ``samples`` images from each character's support set and score them.

    ``generate(support, n, seed) -> float [n, C, H, W] in [0, 1]``; ``sets[i] = (support,
    rest)`` from :func:`mlcourse.metagen.character_sets` (``rest``: the character's other
    drawings). Character ``i`` is generated with seed ``seed + i``, and its ``ways - 1``
    distractors for recognisability are drawn from the other characters under ``seed``, so
    every method scored with the same arguments meets the same characters, supports and
    distractors.
    """
    n = len(sets)
    if n < ways:
        raise ValueError(f"recognisability is {ways}-way: it needs at least {ways} characters, got {n}")
    if samples < 2:
        raise ValueError(f"samples must be at least 2 (diversity and FD need two), got {samples}")
    names = list(names) if names is not None else [f"character {i}" for i in range(n)]
    classifier = classifier or NearestClassMean(net)
    g = torch.Generator().manual_seed(seed)
    feats = [(extract_features(s, net), extract_features(r, net)) for s, r in sets]
    fewest = min(len(r) for _, r in feats)
    dims = min(fd_dims, fewest - 1, samples - 1)
    if dims < 1:
        raise ValueError(f"every character needs at least 2 drawings besides its support set; one has {fewest}")
    # the per-character FD's projection: leading principal directions of the real drawings
    pooled = torch.cat([r for _, r in feats])
    centre = pooled.mean(0)
    basis = torch.linalg.svd(pooled - centre, full_matrices=False).Vh[:dims].T
    project = lambda f: (f - centre) @ basis  # noqa: E731
    scores: dict[str, list[float]] = {k: [] for k in SCORES}
    all_fake, all_real = [], []
    iterator = range(n)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="scoring characters", leave=False)
    for i in iterator:
        support, rest = sets[i]
        fake = generate(support, samples, seed + i)
        if fake.shape[1:] != support.shape[1:] or len(fake) != samples:
            raise ValueError(f"generate returned {tuple(fake.shape)}; expected [{samples}, {', '.join(map(str, support.shape[1:]))}]")
        f_fake = extract_features(fake, net)
        f_sup, f_rest = feats[i]
        scores["fd"].append(frechet_distance(project(f_rest), project(f_fake)))
        p, r = precision_recall(f_rest, f_fake, k=min(k_neighbours, len(f_rest) - 1))
        scores["precision"].append(p)
        scores["recall"].append(r)
        scores["diversity"].append(spread(f_fake) / spread(f_rest))
        scores["memorisation"].append(memorisation_ratio(f_fake, f_sup, f_rest))
        # recognisability: the intended character (label 0) against ways - 1 distractors
        chosen = [i, *_distractors(i, n, ways, g)]
        sx = torch.cat([sets[j][0] for j in chosen])
        sy = torch.cat([torch.full((len(sets[j][0]),), c, dtype=torch.long) for c, j in enumerate(chosen)])
        with torch.no_grad():
            logits = classifier(sx, sy, fake.cpu())
        scores["recognisability"].append(float((logits.argmax(1).cpu() == 0).double().mean()))
        all_fake.append(f_fake)
        all_real.append(f_rest)
    pooled_real, pooled_fake = torch.cat(all_real), torch.cat(all_fake)
    pp, pr = precision_recall(pooled_real, pooled_fake, k=k_neighbours)
    d = pooled_real.shape[1]
    pooled_fd = frechet_distance(pooled_real, pooled_fake) if min(len(pooled_real), len(pooled_fake)) > d else float("nan")
    return CharacterScores(
        characters=names, **scores, pooled_fd=pooled_fd, pooled_precision=pp,
        pooled_recall=pr, shots=len(sets[0][0]), samples=samples, ways=ways, extra={"fd_dims": dims},
    )  # fmt: skip


def compare_scores(a: CharacterScores, b: CharacterScores, names: tuple[str, str] = ("A", "B")) -> dict:
    """Paired differences ``a - b`` of every score on the same characters (:func:`mlcourse.evaluate.compare`)."""
    if a.characters != b.characters or a.shots != b.shots:
        raise ValueError("compare_scores: the two were scored on different characters or shots; pair the same ones")
    return {name: compare(getattr(a, name), getattr(b, name), names=names) for name in SCORES}


# ---------------------------------------------------------------------------------------
# Reference rows: what real drawings and trivial generators score
# ---------------------------------------------------------------------------------------
def real_vs_real(sets: Sequence[tuple[torch.Tensor, torch.Tensor]], seed: int = 0):
    """The floor: real drawings of the character that the support set did not contain.

    Each character's other drawings are split in two halves: the "generator" resamples the
    first half, and the scores are taken against the second half only. Returns ``(generate,
    scored_sets)``; pass both to :func:`score_characters`. Scoring against images the
    generator returns would make precision 1 by construction; with disjoint halves every
    score is what a perfect generator would get, at a reference set about half the size (so a
    slightly pessimistic floor for the FD, which falls as the sets grow). Not paired with the
    other rows (its reference images differ).
    """
    pools, scored = {}, []
    for support, rest in sets:
        if len(rest) < 4:
            raise ValueError(f"real_vs_real splits each character's other drawings in two; it needs 4, got {len(rest)}")
        half = len(rest) // 2
        pools[id(support)] = rest[:half]
        scored.append((support, rest[half:]))

    def generate(support: torch.Tensor, n: int, seed_: int) -> torch.Tensor:
        pool = pools[id(support)]
        g = torch.Generator().manual_seed(seed + seed_)
        return pool[torch.randint(len(pool), (n,), generator=g)]

    return generate, scored


def copy_with_jitter(strength: float = 0.2):
    """A "generator" that copies a support image and distorts it a little (random affine
    jitter, :mod:`mlcourse.metric.augment`): what memorising the support set looks like."""
    from ..metric.augment import random_affine

    def generate(support: torch.Tensor, n: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        picks = support[torch.randint(len(support), (n,), generator=g)]
        return random_affine(picks, strength, generator=g).clamp(0, 1)

    return generate
