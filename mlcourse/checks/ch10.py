"""Checks for the chapter 10 exercises: the statistic network's pooling, and the importance-sampling estimate.

The learner's signatures:

* ``pool(features [B, S, H]) -> [B, H]``: the mean over the ``S`` images of each set (axis 1),
  what the Neural Statistician's post-pooling network turns into ``q(c | D)``. The checks
  name a pooling that depends on the order of the images (the first or last image, a
  position-weighted or cumulative mean), one that depends on the set size (the sum, or a
  division by the wrong count), the wrong axis (over the sets or over the features), a
  detached result and an input changed in place.
* ``importance_log_likelihood(log_w [k, M]) -> [M]``: ``log (1/k) sum_i w_i`` per image,
  computed as ``logsumexp(log_w, dim=0) - log k``. The checks name the missing ``- log k``, the
  wrong axis (over the images), the naive ``log(mean(exp))`` that underflows for realistic
  log-weights (hundreds of nats below zero), the mean of the log-weights (the ELBO, not the
  importance-weighted bound), an input changed in place; and they hold the estimate to the
  truth on a model whose likelihood is known in closed form: with the exact posterior as the
  proposal every weight equals ``p(x)``, and the estimate must be exact for every ``k``.
"""

from __future__ import annotations

import math

import torch

from . import Check


def reference_pool(features: torch.Tensor) -> torch.Tensor:
    return features.mean(dim=1)


def reference_importance_log_likelihood(log_w: torch.Tensor) -> torch.Tensor:
    from ..metagen.statistician import importance_log_likelihood

    return importance_log_likelihood(log_w)


def _close(out, want, atol=1e-6) -> bool:
    return (torch.is_tensor(out) and tuple(out.shape) == tuple(want.shape)
            and bool(torch.allclose(out.double(), want.double(), atol=atol, rtol=1e-6)))  # fmt: skip


def _show(t: torch.Tensor, n: int = 6) -> str:
    values = [round(v, 4) for v in t.detach().double().flatten().tolist()]
    return str(values[:n]) + (" ..." if len(values) > n else "")


def _tensor(chk: Check, out, what: str) -> torch.Tensor:
    chk.expect(torch.is_tensor(out), f"expected {what} as a tensor, got {type(out).__name__}")
    return out


# ---------------------------------------------------------------------------------------
# 1. The statistic network's pooling
# ---------------------------------------------------------------------------------------
B, S, H = 3, 5, 4  # all different, so that each wrong axis gives its own shape


def _features(seed: int, b: int = B, s: int = S, h: int = H) -> torch.Tensor:
    return torch.randn(b, s, h, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _name_pooling_mistake(chk: Check, out: torch.Tensor, f: torch.Tensor) -> None:
    """Fail with a plain-words name when ``out`` is one of the classic wrong poolings of ``f``."""
    b, s, h = f.shape
    if tuple(out.shape) == (b, 1, h):
        chk.fail(f"the result has shape {tuple(out.shape)}: you kept the set axis (keepdim=True). Return one "
                 f"vector per set, shape [B, H] = {(b, h)}.")  # fmt: skip
    if tuple(out.shape) == (s, h) and (s != b or _close(out, f.mean(0)) or _close(out, f.sum(0))):
        chk.fail(f"you pooled over axis 0, the *sets* of the batch (shape {tuple(out.shape)}): that mixes the images "
                 "of different characters into one vector. The images of one set lie along axis 1: pool over dim=1.")
    if tuple(out.shape) == (b, s):
        chk.fail(f"you pooled over the last axis, the *features* of each image (shape {tuple(out.shape)}): that "
                 "throws away what the instance network computed and keeps one number per image. Pool over the "
                 "images of a set, dim=1, keeping the H features.")
    if tuple(out.shape) != (b, h):
        chk.fail(f"features are [B, S, H] = {tuple(f.shape)}; the pooled vectors must be [B, H] = {(b, h)}, "
                 f"got shape {tuple(out.shape)}")  # fmt: skip
    if _close(out, f.sum(1)):
        chk.fail(f"you summed over the set: the pooled vector then grows with the set size (a set of {2 * s} images "
                 f"gives twice the vector of a set of {s} holding the same drawings), so a network trained on sets of "
                 "5 sees inputs it never met when given 1 or 20 drawings. Divide by the set size: the mean.")
    for wrong, name in ((b, "the number of sets B"), (h, "the number of features H")):
        if wrong != s and _close(out, f.sum(1) / wrong):
            chk.fail(f"you divided the sum by {name} = {wrong}, not by the number of images in a set S = {s} "
                     "(f.shape[1]).")  # fmt: skip
    if _close(out, f[:, 0]):
        chk.fail("you took the first image of each set: the context would then depend on which drawing happens to "
                 "come first, and ignore the others. Use a symmetric function of all S images: the mean.")
    if _close(out, f[:, -1]):
        chk.fail("you took the last image of each set: the context would then depend on the order of the drawings, "
                 "and ignore the others. Use a symmetric function of all S images: the mean.")
    if _close(out, f.max(1).values) or _close(out, f.min(1).values):
        chk.fail("you took the maximum (or minimum) over the set: that is order-free too (a Deep Sets pooling), but "
                 "the Neural Statistician *averages*, and its post-pooling network was trained on means. Use the mean.")


def _order_and_size(chk: Check, pool, f: torch.Tensor, out: torch.Tensor) -> None:
    """Fail when shuffling the sets, or repeating each of their images, changes the pooled vectors."""
    perm = torch.randperm(f.shape[1], generator=torch.Generator().manual_seed(2))
    shuffled = _pooled(chk, pool, f[:, perm].contiguous())
    if torch.is_tensor(shuffled) and shuffled.shape == out.shape and not _close(out, shuffled):
        change = (out.double() - shuffled.double()).abs().max().item()
        chk.fail(f"shuffling the images of a set changed the pooled vector (by up to {change:.3g}): your pooling "
                 "depends on the order of the drawings (a weight per position, a cumulative sum, one chosen image). "
                 "A set has no order: use a symmetric function of its images, the mean.")
    doubled = _pooled(chk, pool, torch.cat([f, f], dim=1))
    if torch.is_tensor(doubled) and doubled.shape == out.shape and not _close(out, doubled):
        factor = " (it doubled: a sum?)" if _close(doubled, 2 * out) else ""
        chk.fail(f"repeating every image of a set changed the pooled vector{factor}: your pooling depends on the set "
                 "size, so a network trained on sets of 5 would see other inputs when given 1 or 9 drawings. "
                 "Divide by the number of images in the set, features.shape[1] (not a constant): the mean.")


def _pooled(chk: Check, pool, f: torch.Tensor) -> torch.Tensor:
    before = f.clone()
    out = _tensor(chk, chk.call(pool, f), "the pooled vectors")
    if not torch.equal(f, before):
        chk.fail("your function changed `features` in place (an `+=`, `.div_()`, `.sort_()` or an assignment into "
                 "it): the same features feed the other sets' statistics and autograd needs them as they were. "
                 "Return a new tensor and leave the input alone.")
    return out


def check_statistic_pooling(pool) -> None:
    """``pool(features [B, S, H]) -> [B, H]``: the mean over the images of each set."""
    chk = Check("check_statistic_pooling", "pool")

    with chk.case(f"a batch of B = {B} sets of S = {S} images, H = {H} features each"):
        f = _features(0)
        out = _pooled(chk, pool, f)
        _name_pooling_mistake(chk, out, f)
        _order_and_size(chk, pool, f, out)
        chk.expect(_close(out, f.mean(1)), f"expected the mean over each set, {_show(f.mean(1))}, got {_show(out)}")

    with chk.case("shuffling the images of every set changes nothing (a set has no order)"):
        f = _features(1)
        out = _pooled(chk, pool, f)
        _order_and_size(chk, pool, f, out)
        chk.expect(_close(out, f.mean(1)), f"expected the mean over each set, got {_show(out)}")

    with chk.case("a set, and the same set with every image twice, pool to the same vector (no dependence on size)"):
        f = _features(3)
        out = _pooled(chk, pool, f)
        _order_and_size(chk, pool, f, out)
        chk.expect(_close(out, f.mean(1)), f"expected the mean over each set, got {_show(out)}")

    with chk.case("sets of 1, 2 and 9 images (the support sizes the chapter conditions on)"):
        for s in (2, 9):
            f = _features(10 + s, b=3, s=s, h=4)
            out = _pooled(chk, pool, f)
            _name_pooling_mistake(chk, out, f)
            chk.expect(_close(out, f.mean(1)), f"sets of {s}: expected {_show(f.mean(1))}, got {_show(out)}")
        f = _features(20, b=2, s=1, h=3)
        out = _pooled(chk, pool, f)
        chk.expect(tuple(out.shape) == (2, 3), f"sets [2, 1, 3] must give shape (2, 3), got {tuple(out.shape)}")
        chk.expect(_close(out, f[:, 0]), f"a set of one image pools to that image's features, got {_show(out)}")

    with chk.case("the gradient flows through the pooling (the statistic network must train)"):
        f = _features(4).requires_grad_(True)
        out = chk.call(pool, f)
        chk.expect(torch.is_tensor(out) and out.requires_grad,
                   "the pooled vector is detached from `features` (.detach(), .item(), numpy or torch.no_grad()): "
                   "no gradient would reach the instance network or the encoder")  # fmt: skip
        (grad,) = torch.autograd.grad(out.sum(), f)
        chk.expect(torch.allclose(grad, torch.full_like(grad, 1.0 / S)),
                   f"d(sum of pooled)/d(features) should be 1/S = {1 / S} for every image, got {_show(grad)}")
    chk.done()


# ---------------------------------------------------------------------------------------
# 2. The importance-sampling estimate log (1/k) sum_i w_i
# ---------------------------------------------------------------------------------------
SD = 0.5  # z ~ N(0, 1), x | z ~ N(z, SD^2): p(x) = N(0, 1 + SD^2), p(z | x) = N(x / (1 + SD^2), SD^2 / (1 + SD^2))


def _log_normal(x, mu, var):
    return -0.5 * (math.log(2 * math.pi) + torch.log(torch.as_tensor(var, dtype=torch.float64)) + (x - mu) ** 2 / var)


def linear_gaussian_log_weights(x: torch.Tensor, k: int, shift: float = 0.0, scale: float = 1.0, seed: int = 0):
    """``(log_w [k, M], log p(x) [M])`` on the model ``z ~ N(0, 1)``, ``x | z ~ N(z, SD^2)``.

    The proposal is the exact posterior ``p(z | x)`` with its mean moved by ``shift`` posterior
    standard deviations and its standard deviation multiplied by ``scale``; with
    ``shift = 0, scale = 1`` every log-weight ``log p(x, z_i) - log q(z_i | x)`` equals ``log p(x)``.
    """
    x = x.double()
    var = SD**2 / (1 + SD**2)
    mu, sd = x / (1 + SD**2) + shift * math.sqrt(var), scale * math.sqrt(var)
    z = mu + sd * torch.randn(k, x.shape[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    log_w = _log_normal(z, 0.0, 1.0) + _log_normal(x, z, SD**2) - _log_normal(z, mu, sd**2)
    return log_w, _log_normal(x, 0.0, 1 + SD**2)


def _estimate(chk: Check, fn, log_w: torch.Tensor) -> torch.Tensor:
    before = log_w.clone()
    out = _tensor(chk, chk.call(fn, log_w), "one estimate per image")
    if not torch.equal(log_w, before):
        chk.fail("your function changed `log_w` in place (a `-=` of the maximum, `.exp_()`, ...): the caller's "
                 "log-weights are not yours to change. Work on new tensors.")
    return out


def _name_estimator_mistake(chk: Check, out: torch.Tensor, log_w: torch.Tensor, values: bool = True) -> None:
    """Name a wrong shape, an underflow and (``values``: when the log-weights differ, so that the
    wrong estimators give other numbers than the right one) the classic wrong formulas."""
    k, m = log_w.shape
    if tuple(out.shape) == (k,) and k != m:
        chk.fail(f"one value per *sample* came back (shape {(k,)}): you reduced over axis 1, the images. Axis 0 holds "
                 f"the k = {k} samples of each image; reduce over dim=0 to get one estimate per image, shape {(m,)}.")
    if tuple(out.shape) != (m,):
        chk.fail(f"log_w is [k, M] = {(k, m)}: return one estimate per image, shape {(m,)}, got {tuple(out.shape)} "
                 "(keepdim=True, or a reduction over every axis?)")  # fmt: skip
    if not torch.isfinite(out).all():
        naive = torch.log(torch.exp(log_w).mean(0))
        if not torch.isfinite(naive).all():
            chk.fail("the estimate is -inf (or nan): log(mean(exp(log_w))) underflows. A weight of e^-150 is 0 in "
                     "float32 (e^-750 in float64), and the log of 0 is -inf; a 784-pixel image has log-weights in "
                     "the hundreds of nats below zero. Use torch.logsumexp(log_w, dim=0), which subtracts the "
                     "largest log-weight before exponentiating, then subtract log k.")
        chk.fail(f"the estimate holds non-finite values: {_show(out)}")
    if not values:
        return
    lse = torch.logsumexp(log_w.double(), dim=0)
    if k > 1 and _close(out, lse, atol=1e-4):
        chk.fail(f"missing - log k: logsumexp(log_w, dim=0) is log sum_i w_i, the log of a *sum* of the k = {k} "
                 f"weights, which grows by log k as you draw more samples (here by {math.log(k):.3f} nats). The "
                 "estimate is of their mean: subtract log k.")
    if m != k and m > 1 and _close(out, lse - math.log(m), atol=1e-4):
        chk.fail(f"you subtracted log M = log {m} (the number of images); the mean is over the k = {k} samples: "
                 "subtract log k, with k = log_w.shape[0].")
    if k > 1 and _close(out, log_w.double().mean(0), atol=1e-4):
        chk.fail("that is the mean of the log-weights: the ELBO (by Jensen, log of the mean >= mean of the logs), "
                 "which does not tighten as k grows. Average the *weights* inside the log: logsumexp - log k.")
    if k == m and _close(out, torch.logsumexp(log_w.double(), dim=1) - math.log(m), atol=1e-4):
        chk.fail("you averaged over axis 1, the images, instead of axis 0, the samples (the shapes agree here because "
                 "k = M): every estimate mixes the weights of different images. Reduce over dim=0.")


def check_importance_log_likelihood(importance_log_likelihood) -> None:
    """``importance_log_likelihood(log_w [k, M]) -> [M]``: ``logsumexp(log_w, 0) - log k``."""
    chk = Check("check_importance_log_likelihood", "importance_log_likelihood")
    g = torch.Generator().manual_seed(0)

    with chk.case("k = 4 samples of M = 3 images, small log-weights (float64)"):
        log_w = torch.randn(4, 3, generator=g, dtype=torch.float64)
        out = _estimate(chk, importance_log_likelihood, log_w)
        _name_estimator_mistake(chk, out, log_w)
        want = torch.log(log_w.exp().mean(0))
        chk.expect(_close(out, want), f"expected log of the mean weight per image, {_show(want)}, got {_show(out)}")

    with chk.case("k = 6 samples of M = 6 images (the shapes cannot tell the axes apart)"):
        log_w = 3 * torch.randn(6, 6, generator=g, dtype=torch.float64)
        out = _estimate(chk, importance_log_likelihood, log_w)
        _name_estimator_mistake(chk, out, log_w)
        want = torch.log(log_w.exp().mean(0))
        chk.expect(_close(out, want), f"expected {_show(want)}, got {_show(out)}")

    with chk.case("realistic log-weights of 784-pixel images, -150 to -110 nats, in float32"):
        log_w = (-130.0 + 20 * (2 * torch.rand(50, 5, generator=g) - 1)).float()
        out = _estimate(chk, importance_log_likelihood, log_w)
        _name_estimator_mistake(chk, out, log_w)
        want = torch.logsumexp(log_w.double(), 0) - math.log(50)
        chk.expect(_close(out, want, atol=1e-3), f"expected {_show(want)}, got {_show(out)}")
        chk.expect(out.dtype == log_w.dtype, f"keep the dtype of log_w ({log_w.dtype}), got {out.dtype}")
        same = torch.full((7, 2), -1000.0, dtype=torch.float64)
        out = _estimate(chk, importance_log_likelihood, same)
        _name_estimator_mistake(chk, out, same, values=False)  # equal weights: every formula but the naive one agrees
        chk.expect(_close(out, torch.full((2,), -1000.0)), "seven equal log-weights of -1000 nats estimate exactly "
                   f"-1000 (the mean of seven equal weights is that weight), got {_show(out)}")

    x = torch.linspace(-2.0, 2.5, 7, dtype=torch.float64)
    with chk.case("the exact posterior as proposal: every weight is p(x), so the estimate is log p(x) for every k"):
        for k in (1, 2, 7, 50):
            log_w, truth = linear_gaussian_log_weights(x, k, seed=k)
            out = _estimate(chk, importance_log_likelihood, log_w)
            _name_estimator_mistake(chk, out, log_w, values=False)
            chk.expect(_close(out, truth, atol=1e-9), f"k = {k}: expected log p(x) = {_show(truth)} exactly, got "
                       f"{_show(out)} (largest error {(out.double() - truth).abs().max().item():.3g} nats)")  # fmt: skip

    with chk.case("a poorer proposal (shifted, too wide): the estimate rises toward log p(x) as k grows"):
        errors = []
        for k in (1, 30, 1000):
            est = torch.stack([_estimate(chk, importance_log_likelihood, linear_gaussian_log_weights(x, k, 1.0, 1.5, 97 * r + k)[0])
                               for r in range(10)])  # fmt: skip
            errors.append((est.double() - linear_gaussian_log_weights(x, 1)[1]).mean().item())
        chk.expect(errors[0] < errors[1] < errors[2] and abs(errors[2]) < 0.05,
                   "below log p(x) by, on average, " + ", ".join(f"{-e:.3f} nats at k = {k}" for e, k in zip(errors, (1, 30, 1000)))
                   + ": the estimate should rise with k and reach log p(x) within 0.05 at k = 1000")  # fmt: skip
    chk.done()
