"""Checks for the chapter 01 exercises: episodes, confidence intervals, nearest neighbour."""

from __future__ import annotations

import math

import torch

from . import Check


def _coded_dataset(sizes, seed=0):
    """Images that carry their class id in pixel (0,0) and a unique serial in pixel (0,1..2),
    stored in a shuffled order so that classes are not contiguous."""
    g = torch.Generator().manual_seed(seed)
    targets = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    perm = torch.randperm(len(targets), generator=g)
    targets = targets[perm]
    images = torch.rand(len(targets), 1, 6, 6, generator=g)
    images[:, 0, 0, 0] = targets.float()
    serial = torch.arange(len(targets)).float()
    images[:, 0, 0, 1] = serial // 100
    images[:, 0, 0, 2] = serial % 100
    return images, targets


def _decode(images):
    cls = images[:, 0, 0, 0].round().long()
    serial = (images[:, 0, 0, 1].round() * 100 + images[:, 0, 0, 2].round()).long()
    return cls, serial


def check_make_episode(make_episode) -> None:
    """``make_episode(images, targets, n_way, k_shot, q_query, generator)``
    must return ``(support_x, support_y, query_x, query_y)``."""
    chk = Check("check_make_episode", "make_episode")
    images, targets = _coded_dataset([12] * 8 + [4, 30])
    n, k, q = 4, 3, 2

    with chk.case("returns four tensors of the right shapes (4-way 3-shot, 2 queries)"):
        out = chk.call(make_episode, images, targets, n, k, q, torch.Generator().manual_seed(0))
        chk.expect(isinstance(out, (tuple, list)) and len(out) == 4,
                   f"expected a tuple (support_x, support_y, query_x, query_y), got {type(out).__name__}")
        sx, sy, qx, qy = out
        for name, t, shape in (("support_x", sx, (n * k, 1, 6, 6)), ("support_y", sy, (n * k,)),
                               ("query_x", qx, (n * q, 1, 6, 6)), ("query_y", qy, (n * q,))):
            chk.expect(torch.is_tensor(t), f"{name} should be a tensor, got {type(t).__name__}")
            chk.expect(tuple(t.shape) == shape, f"{name}: expected shape {shape}, got {tuple(t.shape)}")

    with chk.case("labels are remapped to 0..N-1, K support and Q query images each"):
        got = sorted(set(sy.tolist()))
        chk.expect(got == list(range(n)),
                   f"support labels should be exactly 0..{n - 1}, got {got}. Use the position of a class "
                   "in this episode as its label, not the dataset's class id.")
        counts = torch.bincount(sy.long(), minlength=n).tolist()
        chk.expect(counts == [k] * n, f"each label should have k_shot={k} support images, got counts {counts}")
        qcounts = torch.bincount(qy.long(), minlength=n).tolist()
        chk.expect(qcounts == [q] * n, f"each label should have q_query={q} query images, got counts {qcounts}")

    with chk.case("a label means one class, the same in support and query"):
        s_cls, s_ser = _decode(sx)
        q_cls, q_ser = _decode(qx)
        true_t = targets[s_ser]
        chk.expect(torch.equal(true_t, s_cls), "support images were altered: return the dataset's images unchanged")
        for j in range(n):
            classes = set(s_cls[sy == j].tolist())
            chk.expect(len(classes) == 1, f"support label {j} mixes images of dataset classes {sorted(classes)}")
            qclasses = set(q_cls[qy == j].tolist())
            chk.expect(qclasses == classes,
                       f"label {j} is dataset class {classes.pop()} in the support set but {sorted(qclasses)} in the query set")
        chk.expect(len(set(s_cls.tolist())) == n, f"the {n} labels should be {n} different classes, got {sorted(set(s_cls.tolist()))}")

    with chk.case("no image is both a support and a query image, and none repeats"):
        both = set(s_ser.tolist()) & set(q_ser.tolist())
        chk.expect(not both, f"{len(both)} image(s) appear in both support and query: the query would leak its answer")
        chk.expect(len(set(s_ser.tolist())) == n * k and len(set(q_ser.tolist())) == n * q,
                   "an image appears twice: draw the K+Q images of a class without replacement")

    with chk.case("the same generator seed gives the same episode"):
        a = chk.call(make_episode, images, targets, n, k, q, torch.Generator().manual_seed(7))
        b = chk.call(make_episode, images, targets, n, k, q, torch.Generator().manual_seed(7))
        chk.expect(all(torch.equal(x, y) for x, y in zip(a, b)),
                   "two calls with generators seeded alike differ: pass `generator=` to every random call")

    with chk.case("classes and images vary from episode to episode"):
        seen_classes, seen_images = set(), set()
        for seed in range(20):
            sx, _, _, _ = chk.call(make_episode, images, targets, n, k, q, torch.Generator().manual_seed(seed))
            c, s = _decode(sx)
            seen_classes |= set(c.tolist())
            seen_images |= set(s.tolist())
        chk.expect(len(seen_classes) >= 8, f"20 episodes only ever used classes {sorted(seen_classes)}: draw the N classes at random")
        chk.expect(len(seen_images) > 3 * n * k, "the support images barely change between episodes: draw them at random within each class")

    with chk.case("classes with fewer than K+Q images are never drawn"):
        small = 8  # dataset class 8 has only 4 images, fewer than k_shot + q_query = 5
        for seed in range(30):
            sx, _, _, _ = chk.call(make_episode, images, targets, n, k, q, torch.Generator().manual_seed(seed))
            chk.expect(small not in set(_decode(sx)[0].tolist()),
                       f"class {small} has 4 images, fewer than k_shot + q_query = {k + q}, yet it was drawn (seed {seed})")

    with chk.case("asking for more ways than there are usable classes raises ValueError"):
        try:
            make_episode(images, targets, 10, k, q, torch.Generator().manual_seed(0))
        except ValueError:
            pass
        except NotImplementedError:
            chk.call(make_episode, images, targets, 10, k, q, None)
        except Exception as err:
            chk.fail(f"expected ValueError for a 10-way request (only 9 classes have {k + q} images), got {type(err).__name__}: {err}")
        else:
            chk.fail(f"expected ValueError for a 10-way request (only 9 classes have {k + q} images), but nothing was raised")
    chk.done()


def check_confidence_interval(confidence_interval) -> None:
    """``confidence_interval(accuracies) -> (mean, half_width)`` of a 95% interval."""
    chk = Check("check_confidence_interval", "confidence_interval")
    values = [0.6, 0.8, 1.0, 0.8]
    n = len(values)
    mean = sum(values) / n
    sample_sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    pop_sd = math.sqrt(sum((v - mean) ** 2 for v in values) / n)
    want = 1.96 * sample_sd / math.sqrt(n)

    with chk.case(f"accuracies {values}"):
        out = chk.call(confidence_interval, torch.tensor(values))
        chk.expect(isinstance(out, (tuple, list)) and len(out) == 2, f"expected (mean, half_width), got {out!r}")
        m, h = (float(x) for x in out)
        chk.expect(abs(m - mean) < 1e-6, f"mean: expected {mean:.4f}, got {m:.4f}")
        if abs(h - 1.96 * pop_sd / math.sqrt(n)) < 1e-4:
            chk.fail(f"half-width {h:.4f} uses the population standard deviation (dividing by n); "
                     f"use the sample one (n - 1): expected {want:.4f}")
        if abs(h - 1.96 * sample_sd) < 1e-4:
            chk.fail(f"half-width {h:.4f} is 1.96 x std: the interval is for the *mean*, divide by sqrt(n) (expected {want:.4f})")
        if abs(h - sample_sd / math.sqrt(n)) < 1e-4:
            chk.fail(f"half-width {h:.4f} is one standard error: a 95% interval is 1.96 standard errors (expected {want:.4f})")
        chk.expect(abs(h - want) < 1e-3, f"half-width: expected {want:.4f}, got {h:.4f}")

    with chk.case("a list of floats works as well as a tensor, and 600 equal values give width 0"):
        m, h = (float(x) for x in chk.call(confidence_interval, [0.5] * 600))
        chk.expect(abs(m - 0.5) < 1e-9 and abs(h) < 1e-9, f"expected (0.5, 0.0), got ({m}, {h})")
    chk.done()


def check_nearest_neighbour(nearest_neighbour) -> None:
    """``nearest_neighbour(support_x, support_y, query_x) -> predicted labels [num_queries]``."""
    chk = Check("check_nearest_neighbour", "nearest_neighbour")
    g = torch.Generator().manual_seed(0)
    support_x = torch.rand(6, 1, 5, 5, generator=g)
    support_y = torch.tensor([2, 0, 1, 2, 1, 0])  # deliberately not in index order
    with chk.case("a query equal to a support image gets that image's label"):
        pred = chk.call(nearest_neighbour, support_x, support_y, support_x[[3, 1, 4]])
        chk.expect(torch.is_tensor(pred) and tuple(pred.shape) == (3,), f"expected a tensor of 3 labels, got {pred!r}")
        got = pred.tolist()
        if got == [3, 1, 4]:
            chk.fail("you returned the index of the nearest support image: return its label, support_y[index]")
        chk.expect(got == [2, 0, 1], f"expected labels [2, 0, 1], got {got}")
    with chk.case("a slightly noisy query still finds its neighbour (Euclidean distance)"):
        noisy = support_x[[0, 5]] + 0.01 * torch.randn(2, 1, 5, 5, generator=g)
        got = chk.call(nearest_neighbour, support_x, support_y, noisy).tolist()
        chk.expect(got == [2, 0], f"expected labels [2, 0], got {got}")
    with chk.case("distance, not similarity: the *closest* image wins"):
        sx = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)])
        got = chk.call(nearest_neighbour, sx, torch.tensor([0, 1]), torch.full((1, 1, 2, 2), 0.1)).tolist()
        chk.expect(got == [0], f"a query of 0.1s is closer to the all-zero image (label 0), got {got}: take the argmin of distances")
    chk.done()
