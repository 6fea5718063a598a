"""Accuracy against the number of shots and ways, and MAML before and after adaptation.

    python benchmarks/shots_curve.py protonet --data omniglot --checkpoint runs/ckpt/protonet-omniglot-1shot.pt \
        --out docs/runs/shots/protonet-omniglot.json
    python benchmarks/shots_curve.py maml --data omniglot --checkpoint runs/ckpt/maml-omniglot-1shot.pt \
        --out docs/runs/shots/maml-omniglot.json

One model, trained once for 1-shot episodes with the bench's defaults (the checkpoint of
``python -m mlcourse.bench METHOD --data D --checkpoint PATH``), is scored on the test alphabets
with more shots than it was trained with (K = 1, 2, 5, 10, 15: Omniglot characters have 20
drawings, so 5 queries per class leave at most 15 shots), and, for the methods that are not
tied to one way, with 5 and 20 ways. For the MAML family it also scores the same model after
0, 1, 2, 5 and 10 steps of adaptation on the support set (0: the meta-learned initialisation
as it is, whose head knows nothing of this task's labels). Every point is the bench's
evaluation (``--eval-seed``, the same episodes for every model at that N and K), so points of
two models pair. Nothing here chooses a setting: it describes trained models.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlcourse.cli import ArgumentParser, bad_argument, check_at_least  # noqa: E402

PROG = "benchmarks/shots_curve.py"


def parse_list(name: str, text: str, low: int) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        bad_argument(PROG, name, text, f"a comma-separated list of integers of at least {low}")
    if not values or min(values) < low:
        bad_argument(PROG, name, text, f"a comma-separated list of integers of at least {low}")
    return values


def main(argv: list[str] | None = None) -> dict:
    from mlcourse import bench

    p = ArgumentParser(prog=PROG, description="Accuracy of one trained model against shots, ways and adaptation steps.")
    p.add_argument("method", help="a method of python -m mlcourse.bench")
    p.add_argument("--data", default="omniglot", choices=["glyphs", "omniglot"])
    p.add_argument("--checkpoint", required=True, help="the bench checkpoint of a 1-shot model trained with the defaults")
    p.add_argument("--shots", default="1,2,5,10,15", help="K values (default 1,2,5,10,15)")
    p.add_argument("--ways", default="5,20", help="N values for methods not tied to one way (default 5,20)")
    p.add_argument("--steps", default="0,1,2,5,10", help="test-time inner steps for the MAML family (default 0,1,2,5,10)")
    p.add_argument("--queries", type=int, default=5, help="queries per class (default 5)")
    p.add_argument("--episodes", type=int, default=600, help="episodes per point (default 600)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True, help="where to write the JSON")
    args = p.parse_args(argv)
    if args.method not in bench.METHODS:
        bad_argument(PROG, "METHOD", args.method, "one of " + ", ".join(bench.METHODS))
    if not os.path.exists(args.checkpoint):
        bad_argument(PROG, "--checkpoint", args.checkpoint, "an existing checkpoint written by python -m mlcourse.bench")
    for name, value, low in (("--queries", args.queries, 1), ("--episodes", args.episodes, 2), ("--threads", args.threads, 1)):
        check_at_least(PROG, name, value, low)
    shots, ways = parse_list("--shots", args.shots, 1), parse_list("--ways", args.ways, 2)
    steps = parse_list("--steps", args.steps, 0)
    method = bench.METHODS[args.method]
    if method.fixed_way:
        ways = [5]

    def score(n: int, k: int, extra: list[str] = ()) -> dict:
        argv = [args.method, "--data", args.data, "--checkpoint", args.checkpoint, "--train-shots", "1", "--ways", str(n),
                "--shots", str(k), "--queries", str(args.queries), "--episodes", str(args.episodes), "--threads",
                str(args.threads), "--json", "--quiet", *extra]  # fmt: skip
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):  # the bench prints its JSON
            r = bench.main(argv)
        keep = ("ways", "shots", "queries", "episodes", "accuracy", "ci95", "fingerprint", "episode_accuracies", "eval_seconds",
                "test_inner_steps", "checkpoint_train_seconds", "load_average", "threads", "device", "mode")  # fmt: skip
        row = {k: r[k] for k in keep if k in r}
        print(f"{args.method} N={n} K={k}{' ' + ' '.join(extra) if extra else ''}: {100 * r['accuracy']:.2f}% ± {100 * r['ci95']:.2f}",
              file=sys.stderr, flush=True)  # fmt: skip
        return row

    start = time.perf_counter()
    out = {"method": args.method, "data": args.data, "split": "test", "checkpoint": args.checkpoint, "trained_shots": 1,
           "command": " ".join(["python", PROG, *(argv if argv is not None else sys.argv[1:])]),
           "by_shots": [score(n, k) for n in ways for k in shots]}  # fmt: skip
    if method.fixed_way:
        out["by_inner_steps"] = [{**score(5, 1, ["--test-inner-steps", str(s)]), "inner_steps": s} for s in steps]
    out["seconds"] = time.perf_counter() - start
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out) + "\n")
    return out


if __name__ == "__main__":
    main()
