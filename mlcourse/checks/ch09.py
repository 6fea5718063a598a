"""Checks for the chapter 09 exercise: FIGR's outer update for a generator–critic pair.

The learner writes ``figr_outer_update(theta_g, theta_d, adapted, epsilon) -> (new_g, new_d)``:
``theta_g`` / ``theta_d`` are dicts ``name -> tensor`` of the generator and the critic,
``adapted`` a list of ``(phi_g, phi_d)`` pairs (one per task, what the inner loop returned),
and both networks move by Reptile with the same ``ε``::

    θ_G ← θ_G + ε · mean_i(φ_G,i − θ_G)        θ_D ← θ_D + ε · mean_i(φ_D,i − θ_D)

The classic mistakes, each named: only one network moved (the critic left at its old weights
meets every new task knowing nothing), the pair's roles swapped, the sum over tasks instead of
the mean, ε ignored, the wrong direction, one task used, inputs changed in place.
"""

from __future__ import annotations

import torch

from . import Check

ATOL = 1e-9


def reference_figr_outer_update(theta_g, theta_d, adapted, epsilon):
    from ..optim.reptile import reptile_update

    return (reptile_update(theta_g, [a[0] for a in adapted], epsilon), reptile_update(theta_d, [a[1] for a in adapted], epsilon))


def _net(seed: int, kind: str) -> dict[str, torch.Tensor]:
    """Weights shaped like a small generator or critic (different names and shapes on purpose)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "g":
        return {"project.weight": torch.randn(6, 3, generator=g, dtype=torch.float64),
                "upsample.bias": torch.randn(2, generator=g, dtype=torch.float64)}  # fmt: skip
    return {"conv.weight": torch.randn(4, 5, generator=g, dtype=torch.float64), "head.bias": torch.randn(1, generator=g, dtype=torch.float64)}


def _close(a, b) -> bool:
    return isinstance(a, dict) and a.keys() == b.keys() and all(
        isinstance(a[n], torch.Tensor) and a[n].shape == b[n].shape and torch.allclose(a[n].double(), b[n].double(), atol=ATOL)
        for n in b
    )  # fmt: skip


def _snap(d):
    return {n: t.clone() for n, t in d.items()}


def _reptile(theta, phis, eps):
    return {n: theta[n] + eps * (torch.stack([p[n] for p in phis]).mean(0) - theta[n]) for n in theta}


def _max_error(out, want) -> str:
    worst = max((out[n].double() - want[n].double()).abs().max().item() for n in want)
    return f"largest difference from the expected weights: {worst:.3g}"


def _result(chk: Check, fn, theta_g, theta_d, adapted, eps):
    out = chk.call(fn, theta_g, theta_d, adapted, eps)
    if not (isinstance(out, tuple) and len(out) == 2):
        chk.fail(f"return a pair (new_generator_weights, new_critic_weights); got {type(out).__name__}")
    new_g, new_d = out
    for name, got, like in (("generator", new_g, theta_g), ("critic", new_d, theta_d)):
        if isinstance(got, dict) and got.keys() == theta_d.keys() and name == "generator" and theta_g.keys() != theta_d.keys():
            chk.fail("the pair is swapped: return (new generator weights, new critic weights), in that order.")
        if not isinstance(got, dict) or got.keys() != like.keys():
            chk.fail(f"the new {name} weights must be a dict with the same names as the {name}'s: {sorted(like)}; "
                     f"got {sorted(got) if isinstance(got, dict) else type(got).__name__}")  # fmt: skip
    return new_g, new_d


def check_figr_outer_update(figr_outer_update) -> None:
    """``figr_outer_update(theta_g, theta_d, adapted, epsilon) -> (new_g, new_d)``: Reptile on both networks."""
    chk = Check("check_figr_outer_update", "figr_outer_update")
    tg, td = _net(0, "g"), _net(0, "d")
    tasks = [(_net(s, "g"), _net(s, "d")) for s in (1, 2, 3)]

    with chk.case("one task, ε = 1: both networks move all the way to the adapted weights"):
        new_g, new_d = _result(chk, figr_outer_update, _snap(tg), _snap(td), [tuple(_snap(x) for x in tasks[0])], 1.0)
        if _close(new_g, tg) and not _close(new_d, td):
            chk.fail("the generator did not move: FIGR moves *both* networks towards their adapted weights.")
        if _close(new_d, td) and not _close(new_g, tg):
            chk.fail("the critic did not move: FIGR moves *both* networks. A critic left at its old weights meets every "
                     "new task knowing nothing about strokes, and the generator's few adaptation steps learn little from it.")
        if _close(new_g, _reptile(tg, [tasks[0][0]], -1.0)) or _close(new_d, _reptile(td, [tasks[0][1]], -1.0)):
            chk.fail("wrong direction: θ − ε(φ − θ) moves *away* from the adapted weights; Reptile moves towards them.")
        chk.expect(_close(new_g, tasks[0][0]), "with ε = 1 and one task the generator becomes φ_G: " + _max_error(new_g, tasks[0][0]))
        chk.expect(_close(new_d, tasks[0][1]), "with ε = 1 and one task the critic becomes φ_D: " + _max_error(new_d, tasks[0][1]))

    with chk.case("one task, ε = 0.25: a quarter of the way, for both"):
        new_g, new_d = _result(chk, figr_outer_update, _snap(tg), _snap(td), [tuple(_snap(x) for x in tasks[0])], 0.25)
        want_g, want_d = _reptile(tg, [tasks[0][0]], 0.25), _reptile(td, [tasks[0][1]], 0.25)
        if _close(new_g, _reptile(tg, [tasks[0][0]], -0.25)) or _close(new_d, _reptile(td, [tasks[0][1]], -0.25)):
            chk.fail("wrong direction: θ − ε(φ − θ) moves *away* from the adapted weights; Reptile moves towards them.")
        if _close(new_g, tasks[0][0]) or _close(new_d, tasks[0][1]):
            chk.fail("ε is ignored: each network should move a fraction ε of the way from θ to φ.")
        chk.expect(_close(new_g, want_g), "generator: " + _max_error(new_g, want_g))
        chk.expect(_close(new_d, want_d), "critic: " + _max_error(new_d, want_d))

    with chk.case("three tasks, ε = 0.5: towards the mean of each network's adapted weights"):
        before_g, before_d = _snap(tg), _snap(td)
        adapted = [tuple(_snap(x) for x in t) for t in tasks]
        new_g, new_d = _result(chk, figr_outer_update, before_g, before_d, adapted, 0.5)
        want_g = _reptile(tg, [t[0] for t in tasks], 0.5)
        want_d = _reptile(td, [t[1] for t in tasks], 0.5)
        summed_g = {n: tg[n] + 0.5 * sum(t[0][n] - tg[n] for t in tasks) for n in tg}
        if _close(new_g, summed_g):
            chk.fail("sum instead of mean over tasks: the step grows with the number of tasks (3 times too large here). "
                     "Average: θ + ε · mean_i(φ_i − θ).")
        for i, t in enumerate(tasks):
            if _close(new_g, _reptile(tg, [t[0]], 0.5)):
                chk.fail(f"only task {i} of the 3 moved the generator: average over every pair in `adapted`.")
        chk.expect(_close(new_g, want_g), "generator: " + _max_error(new_g, want_g))
        chk.expect(_close(new_d, want_d), "critic: " + _max_error(new_d, want_d))
        for name, now, was in (("theta_g", before_g, tg), ("theta_d", before_d, td)):
            if not _close(now, was):
                chk.fail(f"in-place update: your function changed `{name}`. Return new dicts of new tensors.")
        for i, (a, t) in enumerate(zip(adapted, tasks)):
            if not (_close(a[0], t[0]) and _close(a[1], t[1])):
                chk.fail(f"your function changed the adapted weights of task {i}; leave `adapted` as it was.")
    chk.done()
