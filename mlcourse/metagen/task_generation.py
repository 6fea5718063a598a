"""Task generation: new synthetic classes from the Neural Statistician's context space.

Why
---
A meta-learner learns *how to tell characters apart* from the training alphabets. With one
or two training alphabets there are few characters (22 in Early Aramaic) and the embedding
overfits them. Chapter 10's Neural Statistician gives every character a **context** ``c``,
the latent variable that says "which character" while ``z`` says "how this drawing was
made". A point of the context space that no training character occupies is a character
nobody drew: decode ~20 drawings from it and it is a new class for meta-training.

How the new classes are made (:func:`generate_classes`)
-------------------------------------------------------
1. The context of each parent character is the posterior mean ``mu_c`` of ``q(c | D)`` with
   ``D`` all its drawings (binarised at 0.5, as the statistician's training sets were binary).
2. ``"interpolate"``: pick two different parent characters *of the same alphabet* and a
   mixing weight ``t ~ U(t_low, t_high)``; the new context is ``(1 - t) c_a + t c_b``.
   ``"perturb"``: one parent, ``c = c_a + scale * s * eps`` with ``s`` the per-dimension
   standard deviation of all parents' contexts (a step of ``scale`` "typical spreads").
3. Each drawing: ``z ~ p(z | c)``, the decoder's Bernoulli means as gray levels (``uint8``).

What guarantees that no test character is involved
--------------------------------------------------
The generator only ever sees the ``parents`` dataset, and the caller passes the training
alphabets there (the statistician itself is trained on the same alphabets). Every synthetic
class records its parents in its *name* (``"synthetic/Greek/character03+Greek/character11@t=0.42"``)
and its *group* is ``"synthetic:<parent alphabet>"``, so :func:`check_synthetic_disjoint`
proves, from the names alone, that no parent belongs to a validation or test alphabet, and
that no synthetic group is a validation or test alphabet. The synthetic groups are new group
names, so :func:`mlcourse.data.sources.check_disjoint` on the joined training set still holds.

Which training alphabets form the small training sets (:func:`first_alphabets`) is a rule
fixed before any run: the first ``k`` in alphabetical order.
"""

from __future__ import annotations

import re

import torch

from ..data.base import ImageClassDataset
from ..generative.vae import reparameterize
from .statistician import NeuralStatistician

SYNTHETIC_PREFIX = "synthetic/"
SYNTHETIC_GROUP_PREFIX = "synthetic:"
MODES = ("interpolate", "perturb")
_NAME = re.compile(r"^synthetic/(?P<parents>.+)@(?P<how>[a-z]+=[-0-9.e]+)#(?P<index>\d+)$")


def first_alphabets(dataset: ImageClassDataset, k: int) -> list[str]:
    """The first ``k`` alphabets of ``dataset`` in alphabetical order (the rule fixed before any run)."""
    groups = sorted(set(dataset.class_groups))
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= len(groups):
        raise ValueError(f"k must be an int in 1..{len(groups)} (the dataset's alphabets), got {k!r}")
    return groups[:k]


def base_character(name: str) -> str:
    """``"Greek/character01/rot90"`` -> ``"Greek/character01"``: the rotated copies are one character."""
    return name.split("/rot")[0]


def is_synthetic(name: str) -> bool:
    return name.startswith(SYNTHETIC_PREFIX)


def synthetic_parents(name: str) -> list[str]:
    """The parent characters recorded in a synthetic class's name (``ValueError`` if it is not one)."""
    match = _NAME.match(base_character_synthetic(name))
    if match is None:
        raise ValueError(f"{name!r} is not the name of a synthetic class (expected 'synthetic/A+B@t=0.5#3')")
    return match.group("parents").split("+")


def base_character_synthetic(name: str) -> str:
    # a rotated synthetic class ends in /rotNN after the index
    return re.sub(r"/rot\d+$", "", name)


@torch.no_grad()
def class_contexts(model: NeuralStatistician, dataset: ImageClassDataset, chunk: int = 64) -> torch.Tensor:
    """Posterior mean ``mu_c`` of ``q(c | all drawings of the class)`` for every class: ``[C, context_dim]``."""
    if not isinstance(model, NeuralStatistician):
        raise TypeError(f"model must be a NeuralStatistician, got {type(model).__name__}")
    if not isinstance(dataset, ImageClassDataset):
        raise TypeError(f"dataset must be an ImageClassDataset, got {type(dataset).__name__}")
    if tuple(dataset.image_shape) != model.image_shape:
        raise ValueError(f"dataset images are {tuple(dataset.image_shape)}, the statistician was built for {model.image_shape}")
    was_training = model.training
    model.eval()
    try:
        out = []
        for idx in dataset.indices_by_class():
            if len(idx) == 0:
                raise ValueError("a class of the parents dataset has no image")
            x = (ImageClassDataset.as_float(dataset, idx) > 0.5).float()  # plain images, never augmented
            out.append(model.context(x)[0].cpu())
    finally:
        model.train(was_training)
    return torch.stack(out)


def _parent_choices(dataset: ImageClassDataset, n_classes: int, mode: str, gen: torch.Generator) -> list[list[int]]:
    """For each new class, its parent class ids (two of one alphabet to interpolate, one to perturb)."""
    by_group: dict[str, list[int]] = {}
    for c, g in enumerate(dataset.class_groups):
        by_group.setdefault(g, []).append(c)
    groups = sorted(by_group)
    if mode == "interpolate":
        groups = [g for g in groups if len(by_group[g]) >= 2]
        if not groups:
            raise ValueError("interpolation needs an alphabet with at least two characters among the parents")
    choices = []
    for i in range(n_classes):
        members = by_group[groups[i % len(groups)]]  # alphabets in turn: each gets its share
        if mode == "interpolate":
            a, b = torch.randperm(len(members), generator=gen)[:2].tolist()
            choices.append([members[a], members[b]])
        else:
            choices.append([members[int(torch.randint(len(members), (1,), generator=gen))]])
    return choices


@torch.no_grad()
def generate_classes(model: NeuralStatistician, parents: ImageClassDataset, n_classes: int, per_class: int = 20, *,
                     mode: str = "interpolate", seed: int = 0, t_range: tuple[float, float] = (0.3, 0.7),
                     scale: float = 1.0, name: str = "synthetic") -> ImageClassDataset:  # fmt: skip
    """``n_classes`` new classes of ``per_class`` drawings each, decoded from new contexts (see the module notes).

    ``parents`` holds the characters whose contexts are mixed (pass the *training* alphabets,
    unrotated). Returns an :class:`ImageClassDataset` whose class names record the parents
    and whose groups are ``"synthetic:<alphabet>"``. Deterministic for a given ``seed``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    for label, value in (("n_classes", n_classes), ("per_class", per_class)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{label} must be an int >= 1, got {value!r}")
    low, high = t_range
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"t_range must satisfy 0 <= low <= high <= 1, got {t_range!r}")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale!r}")
    bad = [n for n in parents.class_names if is_synthetic(n)] if isinstance(parents, ImageClassDataset) else []
    if bad:
        raise ValueError(f"parents must be real characters, got synthetic classes such as {bad[0]!r}")
    contexts = class_contexts(model, parents)  # [P, Dc]
    gen = torch.Generator().manual_seed(seed)
    choices = _parent_choices(parents, n_classes, mode, gen)
    spread = contexts.std(0) if len(contexts) > 1 else torch.ones(contexts.shape[1])
    was_training = model.training
    model.eval()
    images, names, groups = [], [], []
    try:
        for i, pc in enumerate(choices):
            if mode == "interpolate":
                t = low + (high - low) * float(torch.rand((), generator=gen))
                c = (1 - t) * contexts[pc[0]] + t * contexts[pc[1]]
                how = f"t={t:.3f}"
            else:
                c = contexts[pc[0]] + scale * spread * torch.randn(contexts.shape[1], generator=gen)
                how = f"scale={scale:g}"
            c = c.expand(per_class, -1)
            mu_p, logvar_p = model.prior_z(c.to(model.device))
            z = reparameterize(mu_p.cpu(), logvar_p.cpu(), generator=gen)
            probs = torch.sigmoid(model.decode(z.to(model.device), c.to(model.device))).cpu()
            images.append((probs * 255).round().to(torch.uint8))
            names.append(f"{SYNTHETIC_PREFIX}{'+'.join(parents.class_names[p] for p in pc)}@{how}#{i}")
            groups.append(SYNTHETIC_GROUP_PREFIX + parents.class_groups[pc[0]])
    finally:
        model.train(was_training)
    targets = torch.arange(n_classes).repeat_interleave(per_class)
    return ImageClassDataset(torch.cat(images), targets, names, groups, name=name)


def check_synthetic_disjoint(synthetic: ImageClassDataset, *held_out: ImageClassDataset) -> None:
    """Raise ``ValueError`` if a synthetic class descends from, or is grouped with, a held-out character.

    Checks every class of ``synthetic``: its name must be a synthetic name, no parent may be
    a character (or an alphabet) of any ``held_out`` set, and its group must not be one of
    their alphabets. Real classes in ``synthetic`` (a joined training set) are checked by name
    and alphabet too.
    """
    if not held_out:
        raise ValueError("check_synthetic_disjoint needs at least one held-out dataset to check against")
    chars = {base_character(n) for d in held_out for n in d.class_names}
    alphabets = set(g for d in held_out for g in d.class_groups)
    for name, group in zip(synthetic.class_names, synthetic.class_groups):
        if group in alphabets:
            raise ValueError(f"class {name!r} is in the held-out alphabet {group!r}")
        if not is_synthetic(name):
            if base_character(name) in chars:
                raise ValueError(f"character {base_character(name)!r} is both here and held out")
            continue
        for parent in synthetic_parents(name):
            if parent in chars or parent.split("/")[0] in alphabets:
                raise ValueError(f"synthetic class {name!r} descends from the held-out character {parent!r}")
        if group.removeprefix(SYNTHETIC_GROUP_PREFIX) in alphabets:
            raise ValueError(f"synthetic class {name!r} is grouped with the held-out alphabet {group!r}")


@torch.no_grad()
def interpolation_path(model: NeuralStatistician, parents: ImageClassDataset, a: int, b: int, steps: int = 7) -> torch.Tensor:
    """The drawings along the straight line from class ``a``'s context to class ``b``'s: ``[steps, C, H, W]`` in ``[0, 1]``.

    Each context ``c = (1 - t) c_a + t c_b`` for ``t`` evenly spaced in ``[0, 1]`` is decoded
    with ``z`` at the mean of ``p(z | c)`` (the model's most typical drawing of that context),
    so the picture shows what the context alone changes. For pictures, on the CPU.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 2:
        raise ValueError(f"steps must be an int >= 2, got {steps!r}")
    for label, c in (("a", a), ("b", b)):
        if not isinstance(c, int) or not 0 <= c < parents.num_classes:
            raise ValueError(f"{label} must be a class index in 0..{parents.num_classes - 1}, got {c!r}")
    if a == b:
        raise ValueError(f"a and b must be two different classes, got {a} twice")
    contexts = class_contexts(model, parents.subset_classes([a, b]))
    t = torch.linspace(0, 1, steps)[:, None]
    c = ((1 - t) * contexts[0] + t * contexts[1]).to(model.device)
    was_training = model.training
    model.eval()
    try:
        mu_z, _ = model.prior_z(c)
        return torch.sigmoid(model.decode(mu_z, c)).cpu()
    finally:
        model.train(was_training)
