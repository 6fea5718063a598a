"""MetaGAN on ProtoNet against the plain ProtoNet: same data, seed, settings and time budget.

Usage (the committed runs; one process, one thread each)::

    # choose the GAN weight on validation (Balinese), at a shorter budget
    python benchmarks/metagan_table.py run --arm metagan --gan-weight 0.1 --time-budget 120 --split val --ways 5 \\
        --json-prefix docs/runs/metagan/select-w0.1
    python benchmarks/metagan_table.py run --arm metagan --gan-weight 1.0 --time-budget 120 --split val --ways 5 \\
        --json-prefix docs/runs/metagan/select-w1.0
    # W: the weight with the higher 5-way validation accuracy (rule fixed before the runs): 0.1
    # the two arms side by side, scored once on the test alphabets at 5-way and 20-way 1-shot
    python benchmarks/metagan_table.py run --arm plain --time-budget 270 --split test --ways 5 20 --json-prefix docs/runs/metagan/plain
    python benchmarks/metagan_table.py run --arm metagan --gan-weight W --time-budget 270 --split test --ways 5 20 \\
        --json-prefix docs/runs/metagan/metagan
    # and MetaGAN given the plain arm's number of steps (its steps cost about 3x): equal steps, not equal time
    python benchmarks/metagan_table.py run --arm metagan --gan-weight W --steps 604 --split test --ways 5 20 \\
        --json-prefix docs/runs/metagan/metagan-equalsteps
    python benchmarks/metagan_table.py table --runs docs/runs/metagan --json docs/runs/metagan/table.json

Both arms use the bench's ProtoNet settings (``METHODS["protonet"]``: 20-way 1-shot 2-query
training episodes on the 4 training alphabets with rotations, Adam 4e-3 halved at each quarter
of the budget, affine augmentation 1.0, BatchNorm recalibrated on 200 clean training
episodes) and the same seed, so they start from the same backbone weights and draw the same
training episodes; MetaGAN's steps cost more (fakes to generate and embed), so within the
same budget it takes fewer. Test episodes: the bench's (600, eval seed 12345), so rows pair.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlcourse.cli import ArgumentParser, bad_argument, check_at_least  # noqa: E402

PROG = "benchmarks/metagan_table.py"


def run(args) -> list[dict]:
    import torch

    from mlcourse.bench import METHODS, _meta_train
    from mlcourse.config import fast_mode
    from mlcourse.data.sources import meta_splits
    from mlcourse.evaluate import evaluate
    from mlcourse.metagen.metagan import MetaGANProtoNet

    torch.set_num_threads(args.threads)
    splits = meta_splits("omniglot", rotations=True)
    method = METHODS["protonet"]
    if args.arm == "metagan":
        method = dataclasses.replace(method, build=lambda shape, ways: MetaGANProtoNet(in_channels=shape[0], gan_weight=args.gan_weight))
    fast = fast_mode()
    settings = {"steps": method.fast_steps if fast else method.steps, "lr": method.lr, "train_ways": method.train_ways,
                "train_shots": 1, "train_queries": method.train_queries, "rotations": True, "augment": method.augment,
                "bn_episodes": 20 if fast else 200, "time_budget": None if fast or args.steps else args.time_budget,
                "seed": args.seed}  # fmt: skip
    if args.steps and not fast:
        settings["steps"] = args.steps  # equal steps instead of equal time (MetaGAN's steps cost more)
    device = torch.device("cpu")
    cpu = time.process_time()
    predict, model, seconds, steps = _meta_train(method, splits.train, settings, device, "log", True)
    cpu_train = time.process_time() - cpu
    if args.save:
        model.save(args.save, steps=steps)
    eval_set = splits.evaluation_set(args.split)
    episodes = 100 if fast else args.episodes
    outs = []
    for ways in args.ways:
        result = evaluate(predict, eval_set, ways, 1, 15, episodes, seed=12345, device=device, progress=False)
        out = {
            "arm": args.arm, "gan_weight": args.gan_weight if args.arm == "metagan" else None,
            "split": args.split, "eval_alphabets": sorted(set(eval_set.class_groups)),
            "train_alphabets": sorted(set(splits.train.class_groups)), "ways": ways, "shots": 1, "queries": 15,
            "episodes": episodes, "eval_seed": 12345, "accuracy": result.mean, "ci95": result.ci95,
            "meta_train_seconds": seconds, "meta_train_cpu_seconds": cpu_train, "meta_train_steps": steps,
            "eval_seconds": result.seconds, "train": settings, "mode": "fast" if fast else "full", "threads": args.threads,
            "device": "cpu", "torch": torch.__version__, "machine": platform.machine(), "cores": os.cpu_count(),
            "load_average": os.getloadavg()[0], "fingerprint": result.fingerprint, "episode_accuracies": result.accuracies,
        }  # fmt: skip
        if args.json_prefix:
            path = Path(f"{args.json_prefix}-{ways}way.json")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(out, indent=1))
        print(f"{args.arm} w={args.gan_weight} {args.split} {ways}-way: {100 * result.mean:.2f}% +- {100 * result.ci95:.2f} ({steps} steps)")
        outs.append(out)
    return outs


def table(args) -> dict:
    from mlcourse.evaluate import compare

    runs = Path(args.runs)
    rows, lines = [], ["| task (test), budget | plain ProtoNet | MetaGAN-ProtoNet | difference (95% CI) | p | steps (plain / MetaGAN) |",
                       "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for arm, label in (("metagan", "same wall-clock budget, side by side"), ("metagan-equalsteps", "same number of steps")):
        for ways in (5, 20):
            pa, ma = runs / f"plain-{ways}way.json", runs / f"{arm}-{ways}way.json"
            if not (pa.exists() and ma.exists()):
                continue
            plain, meta = json.loads(pa.read_text()), json.loads(ma.read_text())
            c = compare(meta, plain, names=(arm, "plain"))
            row = {"arm": arm, "budget": label, "ways": ways, "plain": plain["accuracy"], "plain_ci95": plain["ci95"],
                   "metagan": meta["accuracy"], "metagan_ci95": meta["ci95"], "paired": c.as_dict(), "significant": c.significant,
                   "steps": [plain["meta_train_steps"], meta["meta_train_steps"]],
                   "cpu_seconds": [plain["meta_train_cpu_seconds"], meta["meta_train_cpu_seconds"]], "gan_weight": meta["gan_weight"]}  # fmt: skip
            rows.append(row)
            p_text = "< 0.0001" if c.p_value <= 1e-4 else f"{c.p_value:.3f}"
            lines.append(f"| {ways}-way 1-shot, {label} | {100 * plain['accuracy']:.2f}% ± {100 * plain['ci95']:.2f} | "
                         f"{100 * meta['accuracy']:.2f}% ± {100 * meta['ci95']:.2f} | {100 * c.difference:+.2f} ± {100 * c.ci95:.2f}"
                         f"{'' if c.significant else ' (not significant)'} | {p_text} | "
                         f"{plain['meta_train_steps']} / {meta['meta_train_steps']} "
                         f"({plain['meta_train_cpu_seconds']:.0f} / {meta['meta_train_cpu_seconds']:.0f} CPU s) |")  # fmt: skip
    selection = []
    for path in sorted(runs.glob("select-*.json")):
        r = json.loads(path.read_text())
        selection.append({"gan_weight": r["gan_weight"], "ways": r["ways"], "accuracy": r["accuracy"], "ci95": r["ci95"],
                          "steps": r["meta_train_steps"], "split": r["split"]})  # fmt: skip
    text = "\n".join(lines)
    if selection:
        text += "\n\nGAN weight chosen on validation (Balinese):\n\n| gan weight | val accuracy | steps |\n| --- | --- | --- |\n"
        text += "\n".join(f"| {s['gan_weight']} | {100 * s['accuracy']:.2f}% ± {100 * s['ci95']:.2f} ({s['ways']}-way) | {s['steps']} |"
                          for s in selection)  # fmt: skip
    print(text)
    out = {"rows": rows, "selection": selection, "markdown": text}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


def main(argv=None):
    p = ArgumentParser(prog=PROG, description="MetaGAN-ProtoNet against the plain ProtoNet at an equal budget.")
    sub = p.add_subparsers(dest="stage", required=True)
    r = sub.add_parser("run", help="meta-train one arm and score it")
    r.add_argument("--arm", choices=["plain", "metagan"], required=True)
    r.add_argument("--gan-weight", type=float, default=1.0, help="lambda of the discriminator's GAN terms (metagan only)")
    r.add_argument("--time-budget", type=float, default=270.0)
    r.add_argument("--steps", type=int, default=None, help="a fixed number of steps instead of the time budget")
    r.add_argument("--split", choices=["val", "test"], default="val")
    r.add_argument("--ways", type=int, nargs="+", default=[5])
    r.add_argument("--episodes", type=int, default=600)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--json-prefix", default=None)
    r.add_argument("--save", default=None, help="save the trained model here")
    t = sub.add_parser("table", help="the paired table of a folder of runs")
    t.add_argument("--runs", default="docs/runs/metagan")
    t.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.stage == "run":
        for name, value, low in (("--episodes", args.episodes, 2), ("--threads", args.threads, 1), ("--steps", args.steps, 1)):
            check_at_least(PROG, name, value, low)
        for w in args.ways:
            check_at_least(PROG, "--ways", w, 2)
        if not args.time_budget > 0:
            bad_argument(PROG, "--time-budget", args.time_budget, "a number above 0")
        if not args.gan_weight >= 0:
            bad_argument(PROG, "--gan-weight", args.gan_weight, "a number of at least 0")
        return run(args)
    return table(args)


if __name__ == "__main__":
    main()
