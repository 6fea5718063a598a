"""The DAGAN paper's low-data protocol on the course's Omniglot test alphabets.

A Conv-4 classifier is trained from scratch on k = 1..5 drawings of each of the C held-out
characters (a C-way classifier) and tested on 15 other drawings of each, the same 15 for every
k and arm of a seed. Arms: ``none`` and ``dagan`` (m DAGAN drawings per real one, labelled
with its character), optionally ``classical`` (m affine-jittered copies). Within a seed every
arm trains on the same real drawings from the same initial weights, so the per-character
accuracy differences are paired; their 95% CI is over characters. Every seed is reported.

    # m (drawings per real one) chosen on the validation alphabet (Balinese), seed 0, k = 1 and 5
    python benchmarks/lowdata_table.py --split val --seeds 0 --ks 1 5 --per-image 2 5 \
        --out docs/runs/augment/lowdata-val.json
    # test alphabets, the chosen m, three seeds
    python benchmarks/lowdata_table.py --split test --seeds 0 1 2 --ks 1 2 3 4 5 \
        --per-image-from docs/runs/augment/lowdata-val.json --out docs/runs/augment/lowdata-test.json
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlcourse.cli import ArgumentParser, bad_argument, check_at_least, fail  # noqa: E402
from mlcourse.evaluate import mean_confidence_interval  # noqa: E402
from mlcourse.metagen.augment import AffineJitter  # noqa: E402
from mlcourse.metagen.dagan import DAGAN  # noqa: E402
from mlcourse.metagen.lowdata import lowdata_run, lowdata_split  # noqa: E402

PROG = "benchmarks/lowdata_table.py"
TEST_PER_CLASS = 15
K_MAX = 5


def main(argv=None) -> dict:
    p = ArgumentParser(prog=PROG, description="Classifier from scratch on k drawings per held-out character, with and without DAGAN drawings.")
    p.add_argument("--split", choices=("val", "test"), default="test")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--ks", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    p.add_argument("--per-image", nargs="+", type=int, default=[2], help="generated drawings per real one (several: a search)")
    p.add_argument("--per-image-from", default=None,
                   help="take --per-image from a validation run of this script: the m with the best mean accuracy over its seeds and k")
    p.add_argument("--arms", nargs="+", default=["none", "dagan"], help="none, dagan, classical (default none dagan)")
    p.add_argument("--strength", type=float, default=1.0, help="jitter strength of the classical arm (default 1)")
    p.add_argument("--steps", type=int, default=300, help="Adam steps of the classifier (default 300)")
    p.add_argument("--dagan", default="runs/aug/dagan.pt")
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    check_at_least(p, "--steps", args.steps, 1)
    check_at_least(p, "--threads", args.threads, 1)
    for k in args.ks:
        if not 1 <= k <= K_MAX:
            bad_argument(p, "--ks", k, f"an integer in 1..{K_MAX}")
    for m in args.per_image:
        if m < 1:
            bad_argument(p, "--per-image", m, "an integer of at least 1")
    for a in args.arms:
        if a not in ("none", "dagan", "classical"):
            bad_argument(p, "--arms", a, "one of none, dagan, classical")
    if "none" not in args.arms:
        fail(PROG, "--arms: must include none (every other arm is paired against it)")
    if not os.path.exists(args.dagan) and "dagan" in args.arms:
        fail(PROG, f"--dagan {args.dagan}: no such checkpoint (python -m mlcourse.metagen.dagan --out {args.dagan})")
    chosen_from = None
    if args.per_image_from:
        try:
            val = json.loads(Path(args.per_image_from).read_text())
        except (OSError, ValueError) as error:
            fail(PROG, f"--per-image-from {args.per_image_from}: must be a JSON written by this script ({error})")
        if val.get("split") != "val":
            fail(PROG, f"--per-image-from {args.per_image_from}: must be a validation run (--split val), not {val.get('split')!r}")
        scores = {}
        for r in val["runs"]:
            if r["arm"] == "dagan":
                scores.setdefault(r["per_image"], []).append(r["accuracy"])
        best = max(scores, key=lambda m: sum(scores[m]) / len(scores[m]))
        args.per_image = [best]
        chosen_from = {"file": args.per_image_from, "mean_val_accuracy": {m: sum(v) / len(v) for m, v in scores.items()}, "chosen": best}
    torch.set_num_threads(args.threads)
    from mlcourse.data.sources import meta_splits

    splits = meta_splits("omniglot")
    dataset = splits.val if args.split == "val" else splits.test
    dagan = DAGAN.load(args.dagan) if "dagan" in args.arms else None
    state = torch.load(args.dagan, map_location="cpu", weights_only=False) if dagan is not None else {}
    out = {
        "command": f"python {PROG} " + " ".join(sys.argv[1:] if argv is None else argv),
        "split": args.split, "alphabets": sorted(set(dataset.class_groups)), "classes": dataset.num_classes,
        "test_per_class": TEST_PER_CLASS, "classifier": {"model": "Conv-4, 32 channels", "steps": args.steps, "batch": 32, "lr": 1e-3, "optimizer": "Adam"},
        "dagan": {"checkpoint": args.dagan, "train_steps": state.get("train_steps"), "train_seconds": state.get("train_seconds")} if dagan else None,
        "per_image": args.per_image, "per_image_chosen_on_val": chosen_from,
        "strength": args.strength, "threads": torch.get_num_threads(), "device": "cpu",
        "hardware": "2 x86-64 cores shared with other jobs, no GPU", "load_average_start": os.getloadavg()[0],
        "runs": [], "differences": [],
    }  # fmt: skip
    start = time.perf_counter()
    for seed in args.seeds:
        split = lowdata_split(dataset, K_MAX, TEST_PER_CLASS, seed=seed)
        for k in args.ks:
            base = None
            for arm in args.arms:
                for m in ([0] if arm == "none" else args.per_image):
                    augmenter = {"none": None, "dagan": dagan, "classical": AffineJitter(args.strength)}[arm]
                    t = time.perf_counter()
                    acc = lowdata_run(dataset, split, k, augmenter, m, seed=seed, steps=args.steps)
                    run = {"seed": seed, "k": k, "arm": arm, "per_image": m, "accuracy": acc.mean().item(),
                           "per_class": acc.tolist(), "seconds": time.perf_counter() - t}  # fmt: skip
                    out["runs"].append(run)
                    if arm == "none":
                        base = acc
                    else:
                        mean, ci = mean_confidence_interval(acc - base)
                        out["differences"].append({"seed": seed, "k": k, "arm": arm, "per_image": m, "difference": mean, "ci95": ci})
                    print(f"seed {seed} k={k} {arm} x{m}: {100 * acc.mean():.2f}% ({run['seconds']:.0f} s)", file=sys.stderr, flush=True)
                    out["seconds"] = time.perf_counter() - start
                    out["load_average_end"] = os.getloadavg()[0]
                    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                    Path(args.out).write_text(json.dumps(out))
    # over seeds: per character, the difference averaged over seeds; CI over characters
    pooled = []
    for arm in [a for a in args.arms if a != "none"]:
        for m in args.per_image:
            for k in args.ks:
                runs = {(r["seed"], r["arm"]): torch.tensor(r["per_class"]) for r in out["runs"] if r["k"] == k and r["per_image"] in (0, m)}
                d = torch.stack([runs[(s, arm)] - runs[(s, "none")] for s in args.seeds]).mean(0)
                mean, ci = mean_confidence_interval(d)
                pooled.append({"k": k, "arm": arm, "per_image": m, "difference": mean, "ci95": ci, "seeds": list(args.seeds)})
                print(f"k={k} {arm} x{m} - none, mean over seeds {args.seeds}: {100 * mean:+.2f} ± {100 * ci:.2f} points", flush=True)
    out["pooled"] = pooled
    Path(args.out).write_text(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
