"""Checks for the chapter 11 exercise: the augmentation loop.

The learner's signatures:

* ``augment_support(support_x, support_y, augmenter, per_image, seed) -> (x, y)``: the real
  support images first, unchanged, then ``per_image`` generated drawings per support image,
  each labelled with the class it was drawn from; the augmenter
  (``augmenter.generate(images, n, seed=...)``) is called once per class with only that
  class's images. The checks name generated images under the wrong label (all labelled 0,
  labels cycled, the whole support set given to the augmenter at once), the wrong count, a
  support set changed or dropped, and ``per_image = 0`` not returning the support as it is.
* ``predict_with_augmentation(predict, augmenter, per_image, support_x, support_y, query_x,
  seed) -> scores``: augment the support set, then ``predict(x, y, query_x)``. The checks
  name query leakage: query images shown to the augmenter, query images added to the support
  set (with any label), and queries augmented or changed on their way to the classifier.
"""

from __future__ import annotations

import torch

from . import Check

N_WAY, K, Q, SIZE = 3, 2, 4, 8


def reference_augment_support(support_x, support_y, augmenter, per_image, seed=0):
    from ..metagen.augment import augment_support

    return augment_support(support_x, support_y, augmenter, per_image, seed)


def reference_predict_with_augmentation(predict, augmenter, per_image, support_x, support_y, query_x, seed=0):
    x, y = reference_augment_support(support_x, support_y, augmenter, per_image, seed)
    return predict(x, y, query_x)


class MarkingAugmenter:
    """Draws images that say where they come from: pixel (0, 0) of every generated image is the
    mean of pixel (0, 0) over the images it was given (the test episodes write ``class / 10``
    there), the rest is faint noise. Records every batch of images it was shown."""

    def __init__(self):
        self.seen: list[torch.Tensor] = []

    def generate(self, support, n, *, seed=0):
        self.seen.append(support.detach().clone())
        out = torch.rand(n, *support.shape[1:], generator=torch.Generator().manual_seed(int(seed) % 2**31)) * 0.01
        out[:, :, 0, 0] = support[:, :, 0, 0].mean()
        return out


def make_episode(seed: int = 0, n_way: int = N_WAY, k: int = K, q: int = Q):
    """Support images whose pixel (0, 0) is ``class / 10``; query images marked 0.95 there (no class)."""
    g = torch.Generator().manual_seed(seed)
    sx = torch.rand(n_way * k, 1, SIZE, SIZE, generator=g) * 0.9
    sy = torch.arange(n_way).repeat_interleave(k)
    perm = torch.randperm(len(sy), generator=g)  # classes interleaved, not in blocks
    sx, sy = sx[perm], sy[perm]
    sx[:, 0, 0, 0] = sy.float() / 10
    qx = torch.rand(n_way * q, 1, SIZE, SIZE, generator=g) * 0.9
    qx[:, 0, 0, 0] = 0.95
    return sx, sy, qx


def _is_query(images: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
    from ..metagen.augment import leaked_queries

    return leaked_queries(images, query_x)


def _augmented(chk: Check, fn, sx, sy, augmenter, per_image, seed=0):
    sx0, sy0 = sx.clone(), sy.clone()
    out = chk.call(fn, sx, sy, augmenter, per_image, seed)
    if not torch.equal(sx, sx0) or not torch.equal(sy, sy0):
        chk.fail("your function changed support_x or support_y in place: the caller's episode must stay as it was.")
    chk.expect(isinstance(out, tuple) and len(out) == 2 and all(torch.is_tensor(t) for t in out),
               f"expected a pair of tensors (x, y), got {type(out).__name__}")  # fmt: skip
    return out


def check_augment_support(fn) -> None:
    """``augment_support(support_x, support_y, augmenter, per_image, seed) -> (x, y)``."""
    chk = Check("check_augment_support", "augment_support")

    with chk.case(f"{N_WAY}-way {K}-shot, per_image = 3: the counts, and the real support first"):
        sx, sy, _ = make_episode(0)
        x, y = _augmented(chk, fn, sx, sy, MarkingAugmenter(), 3)
        total = len(sx) * (1 + 3)
        chk.expect(x.shape == (total, 1, SIZE, SIZE) and y.shape == (total,),
                   f"expected {total} images [{total}, 1, {SIZE}, {SIZE}] and {total} labels (the {len(sx)} real ones "
                   f"and 3 generated per real one), got {tuple(x.shape)} and {tuple(y.shape)}")  # fmt: skip
        chk.expect(torch.equal(x[: len(sx)], sx) and torch.equal(y[: len(sy)], sy),
                   "the first images must be the real support images, unchanged and in their order, with their labels; "
                   "generated ones come after them")  # fmt: skip

    with chk.case("every generated drawing carries the label of the class it was drawn from"):
        sx, sy, _ = make_episode(1)
        aug = MarkingAugmenter()
        x, y = _augmented(chk, fn, sx, sy, aug, 2)
        mixed = [s for s in aug.seen if len(torch.unique(s[:, 0, 0, 0])) > 1]
        if mixed:
            chk.fail(f"the augmenter was given drawings of {len(torch.unique(mixed[0][:, 0, 0, 0]))} different classes at once: "
                     "it draws 'more of the same character', so its drawings would be a blend of characters with no "
                     "single right label. Call it once per class, with only that class's support images "
                     "(support_x[support_y == c]).")  # fmt: skip
        generated_class = torch.round(x[len(sx):, 0, 0, 0] * 10).long()
        wrong = (generated_class != y[len(sy):]).nonzero().flatten()
        if len(wrong):
            i = int(wrong[0])
            chk.fail(f"{len(wrong)} of {len(generated_class)} generated drawings are labelled with another class than the "
                     f"one they were drawn from (the first: drawn from class {int(generated_class[i])}, labelled "
                     f"{int(y[len(sy) + i])}). Label each generated drawing with the class of the images you gave the "
                     "augmenter for it.")  # fmt: skip
        counts = torch.bincount(y.long(), minlength=N_WAY).tolist()
        chk.expect(counts == [K * 3] * N_WAY, f"every class must end with {K * 3} images ({K} real, {K * 2} generated); got {counts}")

    with chk.case("per_image = 0 returns the support set as it is"):
        sx, sy, _ = make_episode(2)
        x, y = _augmented(chk, fn, sx, sy, MarkingAugmenter(), 0)
        chk.expect(torch.equal(x, sx) and torch.equal(y, sy), f"expected the {len(sx)} support images unchanged, got {tuple(x.shape)}")

    with chk.case("the same seed gives the same drawings; another seed, others"):
        sx, sy, _ = make_episode(3)
        a = _augmented(chk, fn, sx, sy, MarkingAugmenter(), 1, 5)[0]
        b = _augmented(chk, fn, sx, sy, MarkingAugmenter(), 1, 5)[0]
        c = _augmented(chk, fn, sx, sy, MarkingAugmenter(), 1, 6)[0]
        chk.expect(torch.equal(a, b), "the same episode and seed gave different images: pass the seed on to augmenter.generate")
        chk.expect(not torch.equal(a, c), "seeds 5 and 6 gave the same images: the seed must reach augmenter.generate")
    chk.done()


def check_predict_with_augmentation(fn, augment_support=None) -> None:
    """``predict_with_augmentation(predict, augmenter, per_image, support_x, support_y, query_x, seed) -> scores``."""
    chk = Check("check_predict_with_augmentation", "predict_with_augmentation")

    def recorder():
        calls = []

        def predict(x, y, q):
            calls.append((x.detach().clone(), y.detach().clone(), q.detach().clone()))
            return torch.zeros(len(q), int(y.max()) + 1)

        return predict, calls

    with chk.case(f"{N_WAY}-way {K}-shot with {Q} queries per class, per_image = 2"):
        sx, sy, qx = make_episode(4)
        aug = MarkingAugmenter()
        predict, calls = recorder()
        scores = chk.call(fn, predict, aug, 2, sx, sy, qx, 0)
        chk.expect(len(calls) == 1, f"predict must be called once, on the augmented support set and the queries; it was called {len(calls)} times")
        x, y, q = calls[0]
        for shown in aug.seen:
            hits = _is_query(shown, qx)
            if len(hits):
                chk.fail(f"the augmenter was shown {len(hits)} query images: the generator may only read the support set. "
                         "A method that learns from the queries before predicting them is scored on images it was shown: "
                         "that is leakage, and its accuracy means nothing.")  # fmt: skip
        hits = _is_query(x, qx)
        if len(hits) or (x[:, 0, 0, 0] > 0.9).any():
            chk.fail(f"{max(len(hits), int((x[:, 0, 0, 0] > 0.9).sum()))} query images (or drawings made from them) reached the "
                     "support set given to predict: the classifier would be shown the answers. Augment support_x only.")  # fmt: skip
        chk.expect(torch.equal(q, qx), "the queries must reach predict exactly as they came (not augmented, not reordered, not changed)")
        chk.expect(len(x) == len(sx) * 3 and torch.equal(x[: len(sx)], sx),
                   f"predict must get the real support images first and 2 generated per real one ({len(sx) * 3} images), got {len(x)}")  # fmt: skip
        chk.expect(torch.equal(torch.round(x[len(sx):, 0, 0, 0] * 10).long(), y[len(sx):]),
                   "generated drawings reached predict under the wrong labels")  # fmt: skip
        chk.expect(torch.is_tensor(scores) and scores.shape == (len(qx), N_WAY), "return what predict returned: scores [queries, N]")

    with chk.case("the queries are the same for every arm: per_image = 0 is the plain classifier"):
        sx, sy, qx = make_episode(5)
        predict, calls = recorder()
        chk.call(fn, predict, MarkingAugmenter(), 0, sx, sy, qx, 0)
        chk.expect(len(calls) == 1 and torch.equal(calls[0][0], sx) and torch.equal(calls[0][2], qx),
                   "with per_image = 0 predict must get the support set and the queries as they are")  # fmt: skip
    chk.done()
