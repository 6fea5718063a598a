"""One-shot classification through the Neural Statistician's context posterior, beside ProtoNet.

Usage::

    python benchmarks/statistician_oneshot.py --checkpoint docs/runs/genbench/omniglot/statistician-omniglot.pt \\
        --data omniglot --against docs/runs/selection/protonet-omniglot/final-test-lr0.004-augment1-train_queries2.json \\
        [--json OUT] [--episodes 600] [--split test]

The model is the one ``python -m mlcourse.genbench statistician`` meta-trained on the training
alphabets (its ``--checkpoint``). It never saw a label: each query is assigned to the class
whose context posterior ``q(c | D_j)`` is closest to its own ``q(c | {x_q})`` in KL
(:meth:`mlcourse.metagen.NeuralStatistician.predict`, Edwards & Storkey's rule). It is scored
by :func:`mlcourse.evaluate.evaluate` with the bench's episode seed, so the episodes are the
ones ``python -m mlcourse.bench`` scored; with ``--against`` (a bench ``--json`` result) the
two are paired episode by episode, and refused when the episodes' fingerprints differ.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlcourse.cli import ArgumentParser, check_at_least, fail  # noqa: E402

PROG = "benchmarks/statistician_oneshot.py"


def main(argv=None) -> dict:
    p = ArgumentParser(prog=PROG, description="One-shot classification through the context posterior, paired with a bench run.")
    p.add_argument("--checkpoint", required=True, help="a Neural Statistician saved by python -m mlcourse.genbench")
    p.add_argument("--data", default="omniglot", choices=["glyphs", "omniglot"])
    p.add_argument("--split", default="test", choices=["val", "test"])
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=15)
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--eval-seed", type=int, default=12345, help="the bench's default: the same episodes")
    p.add_argument("--against", default=None, help="a python -m mlcourse.bench --json result on the same episodes")
    p.add_argument("--json", default=None, help="write the result (with every episode's accuracy) to this file")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    for name, value, low in (("--ways", args.ways, 2), ("--shots", args.shots, 1), ("--queries", args.queries, 1),
                             ("--episodes", args.episodes, 2), ("--threads", args.threads, 1)):  # fmt: skip
        check_at_least(PROG, name, value, low)
    if not os.path.exists(args.checkpoint):
        fail(PROG, f"--checkpoint {args.checkpoint}: no such file (train it with python -m mlcourse.genbench statistician --checkpoint PATH)")
    against = None
    if args.against:
        try:
            against = json.loads(Path(args.against).read_text())
            against["episode_accuracies"]
        except (OSError, ValueError, KeyError) as error:
            fail(PROG, f"--against {args.against}: must be a python -m mlcourse.bench --json result ({type(error).__name__}: {error})")

    import torch

    import mlcourse
    from mlcourse.bench import _load_data
    from mlcourse.evaluate import compare, evaluate
    from mlcourse.metagen import FewShotGenerator, NeuralStatistician

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model = FewShotGenerator.load(args.checkpoint)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same one line
        fail(PROG, f"--checkpoint {args.checkpoint}: not a saved few-shot generator ({type(error).__name__}: {error})")
    if not isinstance(model, NeuralStatistician):
        fail(PROG, f"--checkpoint {args.checkpoint}: holds a {type(model).__name__}, not a NeuralStatistician")
    model.eval()
    splits = _load_data(args.data, model.image_shape[1], False, True)
    eval_set = splits.evaluation_set(args.split)
    start = time.perf_counter()
    result = evaluate(model.predict, eval_set, args.ways, args.shots, args.queries, args.episodes, seed=args.eval_seed,
                      progress=False)  # fmt: skip
    out = {"method": "statistician-context", "data": splits.source, "split": args.split, "ways": args.ways,
           "shots": args.shots, "queries": args.queries, "episodes": args.episodes, "accuracy": result.mean,
           "ci95": result.ci95, "fingerprint": result.fingerprint, "episode_accuracies": result.accuracies,
           "eval_seconds": time.perf_counter() - start, "checkpoint": args.checkpoint, "threads": torch.get_num_threads(),
           "torch": torch.__version__, "mlcourse": mlcourse.__version__}  # fmt: skip
    lines = [f"Neural Statistician, context posterior: {100 * result.mean:.2f} ± {100 * result.ci95:.2f}% "
             f"({args.ways}-way {args.shots}-shot, {args.episodes} {args.split} episodes of {splits.source})"]  # fmt: skip
    if against is not None:
        if against.get("fingerprint") != result.fingerprint:
            fail(PROG, f"--against {args.against}: scored on other episodes (fingerprint {against.get('fingerprint')} "
                       f"vs {result.fingerprint}): use the same data, split, way, shot, queries and --eval-seed")  # fmt: skip
        c = compare(result.accuracies, against["episode_accuracies"])
        out["against"] = {"method": against.get("method"), "accuracy": against["accuracy"], "ci95": against["ci95"],
                          "difference": c.difference, "diff_ci95": c.ci95, "p_value": c.p_value, "file": args.against}  # fmt: skip
        lines.append(f"{against.get('method')}: {100 * against['accuracy']:.2f} ± {100 * against['ci95']:.2f}%; "
                     f"statistician − {against.get('method')} = {100 * c.difference:+.2f} ± {100 * c.ci95:.2f} points "
                     f"(p = {c.p_value:.3g}), paired over the same episodes")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(out) + "\n")
    print("\n".join(lines))
    return out


if __name__ == "__main__":
    main()
