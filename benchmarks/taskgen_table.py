"""Task generation on few training alphabets: ProtoNet with and without generated classes.

Usage (the committed runs, for K = 1, 2, 4; each stage is one process, one thread)::

    # 1. a Neural Statistician per training set, trained ONLY on those alphabets
    python benchmarks/taskgen_table.py statistician --alphabets K --steps 2000 --out runs/tasks/stat-K.pt
    # 2. ProtoNet without and with generated classes, scored on the bench's 600 test episodes
    python benchmarks/taskgen_table.py protonet --alphabets K --steps 600 --json docs/runs/taskgen/protonet-aK-real.json
    python benchmarks/taskgen_table.py protonet --alphabets K --steps 600 --statistician runs/tasks/stat-K.pt \\
        --json docs/runs/taskgen/protonet-aK-generated.json        # (K = 4: also --examples runs/tasks/examples-a4.pt)
    python benchmarks/taskgen_table.py figure --examples runs/tasks/examples-a4.pt --out docs/runs/taskgen/examples-a4.png
    # 3. the table: paired differences on the same episodes
    python benchmarks/taskgen_table.py table --runs docs/runs/taskgen --json docs/runs/taskgen/table.json

Fixed step counts, not time budgets: the machine is shared with other jobs, and equal steps
are equal compute for the two arms whatever the load (``--time-budget`` remains for a quiet
machine). A first statistician trained for 200 s of wall clock reached only 712 steps (25 CPU
seconds) and decoded blurs; its one ProtoNet run is kept apart in
``docs/runs/taskgen/undertrained-statistician/``.

The training alphabets: the Omniglot subsets' training split has 4 alphabets (small1 less
Balinese, the validation alphabet), so the sizes are 1, 2 and 4. The 1- and 2-alphabet sets
are the first alphabets in alphabetical order (Early_Aramaic; Early_Aramaic + Greek), a rule
fixed before any run. Generated classes: as many as the real characters of the training set
(``--ratio 1``), each interpolated between two characters of one training alphabet
(``t ~ U(0.3, 0.7)``), 20 drawings each; then, like the real ones, rotated by 90/180/270
degrees into new classes. These generation settings were fixed before any run and not
searched. ProtoNet uses the bench's settings (``METHODS["protonet"]``: 20-way 1-shot 2-query
episodes, Adam 4e-3 halved at each quarter of training, rotations, affine augmentation 1.0,
BatchNorm recalibrated on 200 clean training episodes) for 600 steps in every run (the bench
itself: 13,000 steps or 600 s).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlcourse.cli import ArgumentParser, bad_argument, check_at_least, fail  # noqa: E402

PROG = "benchmarks/taskgen_table.py"


def _hardware() -> dict:
    return {"machine": platform.machine(), "cores": os.cpu_count(), "load_average": os.getloadavg()[0],
            "python": platform.python_version()}  # fmt: skip


def _splits(alphabets: int):
    from mlcourse.data.sources import meta_splits
    from mlcourse.metagen.task_generation import first_alphabets

    splits = meta_splits("omniglot")
    names = first_alphabets(splits.train, alphabets)
    return splits, splits.train.subset_groups(names, name=f"train-{alphabets}"), names


def train_statistician(args) -> dict:
    import torch

    from mlcourse.config import fast_mode
    from mlcourse.data.base import with_rotations
    from mlcourse.metagen.statistician import NeuralStatistician
    from mlcourse.train import save_checkpoint

    _, train, names = _splits(args.alphabets)
    torch.manual_seed(args.seed)
    model = NeuralStatistician(size=28, channels=1)
    budget = None if fast_mode() or args.steps else args.time_budget
    steps = 20 if fast_mode() else (args.steps or 100000)
    cpu = time.process_time()
    history = model.meta_train(with_rotations(train), steps=steps, time_budget=budget, seed=args.seed, device="cpu", progress="log")
    out = {"alphabets": names, "steps": len(history["loss"]), "seconds": history.seconds,
           "cpu_seconds": time.process_time() - cpu, "final_elbo": float(sum(history["elbo"][-50:]) / len(history["elbo"][-50:])),
           "time_budget": budget, "seed": args.seed, **_hardware()}  # fmt: skip
    save_checkpoint(args.out, {"state_dict": model.state_dict(), "info": out})
    print(json.dumps(out))
    return out


def load_statistician(path: str, names: list[str]):
    from mlcourse.metagen.statistician import NeuralStatistician
    from mlcourse.train import load_checkpoint

    state = load_checkpoint(path)
    if state["info"]["alphabets"] != names:
        fail(PROG, f"--statistician {path}: trained on {state['info']['alphabets']}, this run trains on {names}")
    model = NeuralStatistician(size=28, channels=1)
    model.load_state_dict(state["state_dict"])
    return model.eval(), state["info"]


def train_protonet(args) -> dict:
    import torch

    from mlcourse.bench import METHODS, _meta_train
    from mlcourse.config import fast_mode
    from mlcourse.data.base import concat, with_rotations
    from mlcourse.data.sources import check_disjoint
    from mlcourse.evaluate import evaluate
    from mlcourse.metagen.task_generation import check_synthetic_disjoint, generate_classes

    torch.set_num_threads(args.threads)
    splits, train, names = _splits(args.alphabets)
    stat_info, synthetic = None, None
    if args.statistician:
        model, stat_info = load_statistician(args.statistician, names)
        n_new = max(1, round(args.ratio * train.num_classes))
        synthetic = generate_classes(model, train, n_new, per_class=20, mode="interpolate", seed=args.seed)
        check_synthetic_disjoint(synthetic, splits.val, splits.test)
        base = concat([train, synthetic], name=f"train-{args.alphabets}+synthetic")
        if args.examples:  # a few parents and their children, for the chapter's picture
            torch.save({"images": synthetic.images[: 8 * 20].clone(), "names": synthetic.class_names[:8],
                        "parents": {n: train.images[train.indices_by_class()[train.class_names.index(n)][:1]].clone()
                                    for name in synthetic.class_names[:8] for n in name[len("synthetic/"):].split("@")[0].split("+")}},
                       args.examples)  # fmt: skip
    else:
        base = train
    check_disjoint(base, splits.val, splits.test)
    method = METHODS["protonet"]
    fast = fast_mode()
    settings = {"steps": method.fast_steps if fast else method.steps, "lr": method.lr, "train_ways": method.train_ways,
                "train_shots": 1, "train_queries": method.train_queries, "rotations": True, "augment": method.augment,
                "bn_episodes": 20 if fast else 200, "time_budget": None if fast or args.steps else args.time_budget,
                "seed": args.seed}  # fmt: skip
    if args.steps and not fast:
        settings["steps"] = args.steps  # a fixed step count: the same compute for every run, whatever the load
    device = torch.device("cpu")
    cpu = time.process_time()
    predict, model, seconds, steps = _meta_train(method, with_rotations(base), settings, device, "log", True)
    cpu_train = time.process_time() - cpu
    episodes = 100 if fast else args.episodes
    result = evaluate(predict, splits.test, 5, 1, 15, episodes, seed=12345, device=device, progress=False)
    out = {
        "method": "protonet", "generated": synthetic is not None, "train_alphabets": names,
        "real_classes": train.num_classes, "synthetic_classes": 0 if synthetic is None else synthetic.num_classes,
        "train_classes_with_rotations": 4 * base.num_classes, "statistician": stat_info,
        "split": "test", "eval_alphabets": sorted(set(splits.test.class_groups)), "ways": 5, "shots": 1, "queries": 15,
        "episodes": episodes, "eval_seed": 12345, "accuracy": result.mean, "ci95": result.ci95,
        "meta_train_seconds": seconds, "meta_train_cpu_seconds": cpu_train, "meta_train_steps": steps,
        "eval_seconds": result.seconds, "train": settings, "mode": "fast" if fast else "full", "threads": args.threads,
        "device": "cpu", "torch": torch.__version__, **_hardware(),
        "fingerprint": result.fingerprint, "episode_accuracies": result.accuracies,
    }  # fmt: skip
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"{names} generated={synthetic is not None}: {100 * result.mean:.2f}% +- {100 * result.ci95:.2f} ({steps} steps)")
    return out


def table(args) -> dict:
    from mlcourse.evaluate import compare

    runs = {}
    for path in sorted(Path(args.runs).glob("protonet-a*-*.json")):
        r = json.loads(path.read_text())
        runs[(len(r["train_alphabets"]), r["generated"])] = r
    rows = []
    for k in sorted({a for a, _ in runs}):
        real, gen = runs.get((k, False)), runs.get((k, True))
        row = {"alphabets": k, "train_alphabets": (real or gen)["train_alphabets"]}
        for label, r in (("real", real), ("generated", gen)):
            if r:
                row[label] = {"accuracy": r["accuracy"], "ci95": r["ci95"], "steps": r["meta_train_steps"],
                              "seconds": r["meta_train_seconds"], "load_average": r["load_average"],
                              "real_classes": r["real_classes"], "synthetic_classes": r["synthetic_classes"]}  # fmt: skip
        if real and gen:
            c = compare(gen, real, names=("generated", "real"))
            row["difference"] = c.as_dict()
        rows.append(row)
    lines = ["| training alphabets | real only | + generated classes | difference (95% CI) | steps (real / +gen) |",
             "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for row in rows:
        cell = lambda r: f"{100 * r['accuracy']:.2f}% ± {100 * r['ci95']:.2f}" if r else "—"  # noqa: E731
        d = row.get("difference")
        diff = (f"{100 * d['difference']:+.2f} ± {100 * d['ci95']:.2f} (p {'< 0.0001' if d['p_value'] <= 1e-4 else '= %.3f' % d['p_value']})" if d else "—")
        steps = f"{row.get('real', {}).get('steps', '—')} / {row.get('generated', {}).get('steps', '—')}"
        lines.append(f"| {row['alphabets']} ({', '.join(row['train_alphabets'])}) | {cell(row.get('real'))} | "
                     f"{cell(row.get('generated'))} | {diff} | {steps} |")  # fmt: skip
    text = "\n".join(lines)
    print(text)
    out = {"rows": rows, "markdown": text}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


def figure(args) -> None:
    """The picture of ``--examples``: per row, two parent characters then six drawings of their child."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from mlcourse.metagen.task_generation import synthetic_parents
    from mlcourse.viz import show_images

    ex = torch.load(args.examples)
    rows = []
    for c, name in enumerate(ex["names"][:6]):
        parents = [ex["parents"][p][0].float() / 255 for p in synthetic_parents(name)]
        rows.append(torch.cat([torch.stack(parents), ex["images"][c * 20 : c * 20 + 6].float() / 255]))
    show_images(torch.cat(rows), nrow=8, figsize=(8, 6.4),
                title="4 training alphabets: two parents (left), six drawings of their generated child")  # fmt: skip
    plt.savefig(args.out, dpi=90, bbox_inches="tight")
    print(args.out)


def main(argv=None):
    p = ArgumentParser(prog=PROG, description="ProtoNet on 1, 2 or 4 training alphabets, with and without generated classes.")
    sub = p.add_subparsers(dest="stage", required=True)
    s = sub.add_parser("statistician", help="train a Neural Statistician on the first K training alphabets")
    s.add_argument("--alphabets", type=int, required=True)
    s.add_argument("--time-budget", type=float, default=180.0)
    s.add_argument("--steps", type=int, default=None, help="a fixed number of steps instead of the time budget")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True)
    s.add_argument("--threads", type=int, default=1)
    r = sub.add_parser("protonet", help="meta-train ProtoNet on the first K training alphabets and score it on test")
    r.add_argument("--alphabets", type=int, required=True)
    r.add_argument("--statistician", default=None, help="add generated classes from this statistician (trained on the same alphabets)")
    r.add_argument("--ratio", type=float, default=1.0, help="generated classes per real training character (default 1)")
    r.add_argument("--time-budget", type=float, default=270.0)
    r.add_argument("--steps", type=int, default=None, help="a fixed number of steps instead of the time budget")
    r.add_argument("--episodes", type=int, default=600)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--json", default=None)
    r.add_argument("--examples", default=None, help="save 8 generated classes and their parents here (torch file)")
    f = sub.add_parser("figure", help="draw the examples saved by protonet --examples")
    f.add_argument("--examples", required=True)
    f.add_argument("--out", required=True)
    t = sub.add_parser("table", help="paired table of the runs in a folder")
    t.add_argument("--runs", default="docs/runs/taskgen")
    t.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.stage in ("statistician", "protonet"):
        check_at_least(PROG, "--alphabets", args.alphabets, 1)
        if args.alphabets > 4:
            bad_argument(PROG, "--alphabets", args.alphabets, "at most 4 (the training alphabets of the Omniglot subsets)")
        check_at_least(PROG, "--threads", args.threads, 1)
        if not args.time_budget > 0:
            bad_argument(PROG, "--time-budget", args.time_budget, "a number above 0")
        import torch

        torch.set_num_threads(args.threads)
    if args.stage in ("statistician", "protonet"):
        check_at_least(PROG, "--steps", args.steps, 1)
    if args.stage == "protonet":
        check_at_least(PROG, "--episodes", args.episodes, 2)
        if not args.ratio > 0:
            bad_argument(PROG, "--ratio", args.ratio, "a number above 0")
        if args.statistician and not os.path.exists(args.statistician):
            fail(PROG, f"--statistician {args.statistician}: no such file (train it with the statistician stage)")
    return {"statistician": train_statistician, "protonet": train_protonet, "table": table, "figure": figure}[args.stage](args)


if __name__ == "__main__":
    main()
