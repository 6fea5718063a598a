"""Choose a method's defaults on validation alphabets, then score the test alphabets once.

Usage::

    python benchmarks/select_on_val.py protonet --data omniglot \\
        --grid lr=1e-3,2e-3,4e-3 --grid train_queries=2,5 --fraction 0.25 --top 2 \\
        --out docs/runs/selection/protonet-omniglot [--final]

A sequential search in three stages, every run a ``python -m mlcourse.bench`` command whose
JSON is written to ``--out`` as soon as it finishes (a stopped search resumes where it was:
finished runs are read back, never rerun):

1. **Rank.** Every candidate of the grid (the cartesian product of the ``--grid`` values; put
   today's default among them so the search can keep it) meta-trains with ``--fraction`` of
   the method's steps and time budget and is scored on the *validation* alphabets
   (``--split val``), all on the same episodes.
   Candidates that differ only in an evaluation setting (``test_inner_steps``, the
   fine-tuning steps at test time) share one trained model, scored once per value.
2. **Confirm.** The ``--top`` best of stage 1 train at the full budget and are scored on
   validation again; the best of these is the choice. Its lead over the runner-up is a paired
   difference on the same validation episodes (:func:`mlcourse.evaluate.compare`).
3. **Final** (with ``--final``): the chosen model (its stage-2 checkpoint, so no retraining) is
   scored on the *test* alphabets, once. The test figure is never used to choose anything.

``summary.json`` and ``summary.md`` in ``--out`` list every run: candidate, stage, steps
reached, seconds, validation accuracy, and the paired differences.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mlcourse.cli import ArgumentParser, bad_argument, check_at_least, fail  # noqa: E402

PROG = "benchmarks/select_on_val.py"
# The bench options a grid may vary (key=values on the command line -> --key-with-dashes).
GRID_KEYS = {
    "lr": float, "steps": int, "train_ways": int, "train_shots": int, "train_queries": int, "augment": float,
    "hidden": int, "meta_batch": int, "bn_episodes": int, "rotations": str, "time_budget": float,
    "inner_steps": int, "inner_lr": float, "inner_batch": int, "test_inner_steps": int,
}  # fmt: skip
# Evaluation settings: candidates that differ only in these share one trained model (its
# checkpoint is trained once and scored with each value), so trying 5, 20 and 50 fine-tuning
# steps at test time costs three evaluations, not three trainings.
EVAL_KEYS = ("test_inner_steps",)


def training_part(candidate: dict) -> dict:
    return {k: v for k, v in candidate.items() if k not in EVAL_KEYS}


def train_seconds(result: dict) -> float:
    """Meta-training seconds of the model a result scored (also when it was loaded)."""
    return result.get("checkpoint_train_seconds") or result["meta_train_seconds"]


def parse_grid(parser, items: list[str]) -> dict[str, list]:
    """``["lr=1e-3,2e-3", "augment=0,1"]`` -> ``{"lr": [0.001, 0.002], "augment": [0.0, 1.0]}``."""
    grid: dict[str, list] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in GRID_KEYS or not values:
            bad_argument(parser, "--grid", item, f"KEY=V1,V2,... with KEY one of {', '.join(GRID_KEYS)}")
        if key in grid:
            bad_argument(parser, "--grid", item, f"given once per key ({key} appears twice)")
        try:
            grid[key] = [GRID_KEYS[key](v) for v in values.split(",")]
        except ValueError:
            bad_argument(parser, "--grid", item, f"values of type {GRID_KEYS[key].__name__}, separated by commas")
    return grid


def candidates(grid: dict[str, list]) -> list[dict]:
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))] or [{}]


def slug(candidate: dict) -> str:
    return "-".join(f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}" for k, v in candidate.items()) or "defaults"


def bench_argv(method: str, data: str, candidate: dict, split: str, extra: list[str]) -> list[str]:
    argv = [method, "--data", data, "--split", split, "--json", *extra]
    for key, value in candidate.items():
        argv += [f"--{key.replace('_', '-')}", f"{value:g}" if isinstance(value, float) else str(value)]
    return argv


def subprocess_bench(argv: list[str], log_path: Path) -> dict:
    """One ``python -m mlcourse.bench`` run in a fresh process; its progress lines go to ``log_path``."""
    with open(log_path, "w") as log:
        done = subprocess.run([sys.executable, "-m", "mlcourse.bench", *argv], stdout=subprocess.PIPE, stderr=log, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"mlcourse.bench {' '.join(argv)} failed (exit {done.returncode}); see {log_path}")
    return json.loads(done.stdout)


def run_all(jobs: list[tuple[Path, list[str]]], runner: Callable, parallel: int) -> list[dict]:
    """Run the jobs whose JSON file does not exist yet, ``parallel`` at a time; return every result."""
    from concurrent.futures import ThreadPoolExecutor

    def one(job):
        path, argv = job
        if path.exists():
            return json.loads(path.read_text())
        result = runner(argv, path.with_suffix(".log"))
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result))
        os.replace(tmp, path)  # a half-written file never counts as finished
        print(f"{path.name}: {100 * result['accuracy']:.2f}% on {result['split']} after "
              f"{result['meta_train_steps']} steps, {train_seconds(result):.0f} s", file=sys.stderr, flush=True)
        return result

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return list(pool.map(one, jobs))


def run_stage(method: str, data: str, cands: list[dict], settings: list[dict], out: Path, stage: str,
              common: list[str], runner: Callable, parallel: int) -> list[dict]:
    """Score every candidate (``settings[i]`` are the bench options of ``cands[i]``) on
    validation. Candidates with the same training part share one model: the first of each
    group trains it (and saves a checkpoint when others need it), the others load it."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(cands):
        groups.setdefault(slug(training_part(c)), []).append(i)
    jobs: dict[int, tuple[Path, list[str]]] = {}
    for key, members in groups.items():
        shared = stage == "confirm" or len(members) > 1  # confirmed models are kept for the final test
        ckpt = ["--checkpoint", str(out / f"{stage}-{key}.pt")] if shared else []
        for i in members:
            jobs[i] = (out / f"{stage}-{slug(cands[i])}.json", bench_argv(method, data, settings[i], "val", common + ckpt))
    first = [groups[k][0] for k in groups]
    rest = [i for k in groups for i in groups[k][1:]]
    results: dict[int, dict] = {}
    for batch in (first, rest):  # the trainings, then the evaluations that load their models
        for i, r in zip(batch, run_all([jobs[i] for i in batch], runner, parallel)):
            results[i] = r
    return [results[i] for i in range(len(cands))]


def main(argv: list[str] | None = None, runner: Callable | None = None) -> dict:
    from mlcourse.bench import METHODS

    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("method", choices=sorted(METHODS), metavar="METHOD")
    p.add_argument("--data", default="auto", choices=["auto", "glyphs", "omniglot"])
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help="values to try (repeat for more keys)")
    p.add_argument("--fraction", type=float, default=0.25, help="share of the steps and time budget in the ranking stage (default 0.25)")
    p.add_argument("--top", type=int, default=2, help="candidates confirmed at the full budget (default 2)")
    p.add_argument("--episodes", type=int, default=600, help="validation (and test) episodes (default 600)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    p.add_argument("--out", required=True, help="folder for every run's JSON and the summary")
    p.add_argument("--final", action="store_true", help="score the chosen model on the test alphabets, once")
    p.add_argument("--fast", action="store_true", help="smoke-test sizes (mlcourse.bench --fast)")
    args = p.parse_args(argv)
    if not 0 < args.fraction <= 1:
        bad_argument(p, "--fraction", args.fraction, "a number in (0, 1]")
    for name, value, low in (("--top", args.top, 1), ("--episodes", args.episodes, 2), ("--jobs", args.jobs, 1), ("--threads", args.threads, 1)):
        check_at_least(p, name, value, low)
    grid = parse_grid(p, args.grid)
    method = METHODS[args.method]
    if method.kind != "episodic":
        fail(PROG, f"METHOD {args.method}: has nothing to select (choose a meta-trained method)")
    runner = runner or subprocess_bench
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = ["--episodes", str(args.episodes), "--threads", str(args.threads), *(["--fast"] if args.fast else [])]
    pool = candidates(grid)

    # 1. Rank at a fraction of the budget (unless the fraction is 1: then this is stage 2).
    ranked = pool
    rank_results: list[dict] = []
    if args.fraction < 1 and len(pool) > args.top:
        scaled_pool = []
        for c in pool:
            scaled = dict(c)
            if "steps" not in c:
                scaled["steps"] = max(1, math.ceil(args.fraction * (method.fast_steps if args.fast else method.steps)))
            else:
                scaled["steps"] = max(1, math.ceil(args.fraction * c["steps"]))
            budget = c.get("time_budget", method.time_budget)
            if budget and not args.fast:
                scaled["time_budget"] = args.fraction * budget
            scaled_pool.append(scaled)
        rank_results = run_stage(args.method, args.data, pool, scaled_pool, out, "rank", common, runner, args.jobs)
        order = sorted(range(len(pool)), key=lambda i: -rank_results[i]["accuracy"])
        ranked = [pool[i] for i in order[: args.top]]

    # 2. Confirm the best at the full budget, on validation; keep their checkpoints.
    confirm_results = run_stage(args.method, args.data, ranked, ranked, out, "confirm", common, runner, args.jobs)
    best = max(range(len(ranked)), key=lambda i: confirm_results[i]["accuracy"])
    chosen, chosen_result = ranked[best], confirm_results[best]

    from mlcourse.evaluate import compare

    paired = [
        compare(chosen_result, r, names=(slug(chosen), slug(c))).as_dict()
        for c, r in zip(ranked, confirm_results) if r is not chosen_result
    ]  # fmt: skip
    summary = {
        "method": args.method, "data": args.data, "grid": grid, "fraction": args.fraction, "top": args.top,
        "chosen": chosen, "chosen_val_accuracy": chosen_result["accuracy"], "chosen_val_ci95": chosen_result["ci95"],
        "paired_on_val": paired,
        "runs": [
            {"stage": stage, "candidate": c, "split": r["split"], "accuracy": r["accuracy"], "ci95": r["ci95"],
             "steps": r["meta_train_steps"], "seconds": train_seconds(r), "threads": r["threads"],
             "load_average": r.get("load_average")}
            for stage, cs, rs in (("rank", pool, rank_results), ("confirm", ranked, confirm_results))
            for c, r in zip(cs, rs)
        ],
    }  # fmt: skip

    # 3. The test alphabets, once, with the chosen model (loaded from its checkpoint).
    if args.final:
        final_job = (
            out / f"final-test-{slug(chosen)}.json",
            bench_argv(args.method, args.data, chosen, "test",
                       common + ["--checkpoint", str(out / f"confirm-{slug(training_part(chosen))}.pt")]),
        )
        final = run_all([final_job], runner, 1)[0]
        summary["test"] = {"accuracy": final["accuracy"], "ci95": final["ci95"], "episodes": final["episodes"],
                           "from_checkpoint": final["from_checkpoint"]}  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "summary.md").write_text(format_summary(summary))
    print(format_summary(summary))
    return summary


def format_summary(s: dict) -> str:
    lines = [f"# {s['method']} on {s['data']}: selection on validation", "",
             "| stage | candidate | split | accuracy | steps | seconds |", "| --- | --- | --- | --- | --- | --- |"]
    for r in s["runs"]:
        lines.append(f"| {r['stage']} | {slug(r['candidate'])} | {r['split']} | {100 * r['accuracy']:.2f} ± "
                     f"{100 * r['ci95']:.2f}% | {r['steps']} | {r['seconds']:.0f} |")
    lines += ["", f"chosen: {slug(s['chosen'])} ({100 * s['chosen_val_accuracy']:.2f} ± {100 * s['chosen_val_ci95']:.2f}% on validation)"]
    for c in s["paired_on_val"]:
        lines.append(f"- paired on validation: {c['a']} − {c['b']} = {100 * c['difference']:+.2f} ± {100 * c['ci95']:.2f} points (p = {c['p_value']:.3g})")
    if "test" in s:
        t = s["test"]
        lines.append(f"\ntest (scored once): {100 * t['accuracy']:.2f} ± {100 * t['ci95']:.2f}% over {t['episodes']} episodes")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(sys.argv[1:])
