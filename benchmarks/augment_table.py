"""Generated drawings in the support set: ProtoNet and MAML, 1 and 5 shots, three arms.

Two stages, each one command (run from the repository root, one thread):

    # 1. choose, on 100 validation episodes (Balinese, seed 54321), how many drawings each
    #    support image gets (1 or 4) and the jitter strength of the classical arm (0.5 or 1),
    #    per shot, with ProtoNet (MAML's evaluation is too slow here to search for it as well)
    python benchmarks/augment_table.py select --methods protonet --episodes 100 \
        --out docs/runs/augment/select-protonet.json
    # 2. score the test alphabets once with those choices: the bench's episodes (seed 12345),
    #    600 for ProtoNet; for MAML the first 100 of them (its 10 fine-tuning steps on the
    #    enlarged support sets take seconds per episode on the shared CPU)
    python benchmarks/augment_table.py test --methods protonet --episodes 600 \
        --select docs/runs/augment/select-protonet.json --out docs/runs/augment/test-protonet.json
    python benchmarks/augment_table.py test --methods maml --episodes 100 --choices-of protonet \
        --select docs/runs/augment/select-protonet.json --out docs/runs/augment/test-maml.json

Arms: ``none`` (the support set as it is), ``classical`` (affine jitter of each support image,
:class:`~mlcourse.metagen.augment.AffineJitter`), ``dagan`` (drawings of
:class:`~mlcourse.metagen.dagan.DAGAN`) and ``statistician`` (sampling around the support set's
context in the Neural Statistician's latent space, :class:`~mlcourse.metagen.augment.ContextSampler`;
the statistician of ``--statistician``, trained on the training alphabets only:
``python -m mlcourse.genbench statistician --data omniglot --steps 6000 --time-budget 0 --checkpoint PATH``).
The statistician arm was added after the others and searched and scored on its own (``--arms none statistician``):

    python benchmarks/augment_table.py select --methods protonet --arms none statistician --episodes 100 \
        --out docs/runs/augment/select-protonet-statistician.json
    python benchmarks/augment_table.py test --methods protonet --arms none statistician --episodes 600 \
        --select docs/runs/augment/select-protonet-statistician.json --out docs/runs/augment/test-protonet-statistician.json
    python benchmarks/augment_table.py test --methods maml --arms none statistician --episodes 100 --choices-of protonet \
        --select docs/runs/augment/select-protonet-statistician.json --out docs/runs/augment/test-maml-statistician.json Every arm of a method and shot is scored on the same
episodes (same seed, same fingerprint); each arm's difference to ``none`` is paired over those
episodes (:func:`mlcourse.evaluate.compare`). The classifiers are the shared bench checkpoints
(``runs/ckpt/<method>-omniglot-1shot.pt``), loaded through the bench's own checks so a stale
one is refused; they were meta-trained on 1-shot episodes, also when scored at 5 shots.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlcourse import bench  # noqa: E402
from mlcourse.cli import ArgumentParser, bad_argument, check_at_least, fail  # noqa: E402
from mlcourse.evaluate import compare, evaluate  # noqa: E402
from mlcourse.metagen.augment import AffineJitter, AugmentedPredictor, ContextSampler  # noqa: E402
from mlcourse.metagen.dagan import DAGAN  # noqa: E402

PROG = "benchmarks/augment_table.py"
PER_IMAGE_GRID = (1, 4)  # generated drawings per support image, searched on validation
STRENGTH_GRID = (0.5, 1.0)  # affine jitter strength (1 = 15 degrees, 15% scale and shear, 3 px)
ARMS = ("none", "classical", "dagan", "statistician")


def load_classifier(method: str, checkpoint: str):
    """The bench's model stored at ``checkpoint``, refused (exit 2) if trained with other settings
    than the bench's defaults; with the bench's test-time settings (MAML's inner steps)."""
    args = bench.build_parser().parse_args([method, "--data", "omniglot", "--threads", "1", "--checkpoint", checkpoint])
    spec = bench.METHODS[method]
    settings = bench._train_settings(spec, args, fast=False)
    splits = bench._load_data("omniglot", args.size, settings["rotations"], json_mode=True)
    key = {
        "format": bench.CHECKPOINT_FORMAT, "method": method, "data": splits.source, "size": args.size, "mode": "full",
        "train_alphabets": sorted(set(splits.train.class_groups)), "train_classes": splits.train.num_classes, **settings,
        "model": bench._model_signature(spec, splits, settings),
    }  # fmt: skip
    if not os.path.exists(checkpoint):
        fail(PROG, f"--checkpoints: {checkpoint} does not exist (train it with python -m mlcourse.bench {method} "
                   f"--data omniglot --threads 1 --checkpoint {checkpoint})")  # fmt: skip
    predict, model, state = bench._try_checkpoint(checkpoint, key, spec, torch.device("cpu"), False, True)
    for name, value in bench._default_eval_settings(spec, splits, settings).items():
        setattr(model, name, value)
    info = {"checkpoint": checkpoint, "meta_train_steps": state.get("meta_train_steps"),
            "meta_train_seconds": state.get("meta_train_seconds"), "train_shots": settings.get("train_shots"),
            "test_inner_steps": getattr(model, "test_inner_steps", None)}  # fmt: skip
    return predict, info


def augmenter_for(arm: str, strength: float, dagan):
    """``dagan``: the generator of the arm (the DAGAN, or the Neural Statistician's ContextSampler)."""
    if arm == "classical":
        return AffineJitter(strength)
    if arm in ("dagan", "statistician"):
        return dagan
    raise ValueError(arm)


def score(predict, arm: str, per_image: int, strength: float, dagan, dataset, shots: int, episodes: int, seed: int, desc: str):
    if arm != "none":
        predict = AugmentedPredictor(predict, augmenter_for(arm, strength, dagan), per_image, seed=0)
    start = time.perf_counter()
    result = evaluate(predict, dataset, 5, shots, 15, episodes, seed=seed, device="cpu", progress=False, desc=desc)
    print(f"{desc}: {result} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return result


def siblings_figure(dagan_path: str, out: str, characters: int = 8, siblings: int = 9) -> dict:
    """One drawing each of ``characters`` test characters, its DAGAN siblings and affine copies, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mlcourse.data.sources import meta_splits
    from mlcourse.metagen.augment_report import sibling_grid
    from mlcourse.viz import show_images

    if not os.path.exists(dagan_path):
        fail(PROG, f"--dagan {dagan_path}: no such checkpoint")
    dagan = DAGAN.load(dagan_path)
    test = meta_splits("omniglot").test
    g = torch.Generator().manual_seed(12345)
    classes = torch.randperm(test.num_classes, generator=g)[:characters].tolist()
    sources = test.as_float(torch.stack([test.indices_by_class()[c][0] for c in classes]))
    made = torch.stack([dagan.generate(sources[i : i + 1], siblings, seed=i) for i in range(characters)])
    jitter = torch.stack([AffineJitter(1.0).generate(sources[i : i + 1], siblings, seed=i) for i in range(characters)])
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.75 * characters + 0.6))
    show_images(sibling_grid(sources, made), nrow=siblings + 1, ax=axes[0])
    axes[0].set_title("test drawing | DAGAN siblings", fontsize=9, loc="left")
    show_images(sibling_grid(sources, jitter), nrow=siblings + 1, ax=axes[1])
    axes[1].set_title("test drawing | affine copies (strength 1)", fontsize=9, loc="left")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    # How much the noise matters, against how far a drawing is from another drawing of its character:
    # on the first 20 test characters, 8 siblings of their first drawing.
    x = test.as_float(torch.stack([test.indices_by_class()[c][0] for c in range(20)]))
    y = test.as_float(torch.stack([test.indices_by_class()[c][1] for c in range(20)]))
    sib = torch.stack([dagan.generate(x[i : i + 1], 8, seed=i) for i in range(20)])
    stats = {
        "figure": out, "dagan": dagan_path, "config": dagan._config, "classes": [test.class_names[c] for c in classes],
        "pixel_std_across_noise": sib.std(1).mean().item(),
        "mean_abs_generated_minus_source": (sib - x[:, None]).abs().mean().item(),
        "mean_abs_other_real_minus_source": (y - x).abs().mean().item(),
        "what": "first 20 test characters: 8 DAGAN siblings of their first drawing; pixel std across the noise (one source), "
                "mean absolute pixel difference to the source, and the same for the character's second real drawing",
    }  # fmt: skip
    Path(out).with_suffix(".json").write_text(json.dumps(stats, indent=1))
    print(json.dumps(stats))
    return stats


def main(argv=None) -> dict:
    p = ArgumentParser(prog=PROG, description="Generated drawings in the support set: the validation search and the test table.")
    p.add_argument("stage", choices=("select", "test", "figure"),
                   help="select: search on validation episodes; test: score the test alphabets once; figure: DAGAN siblings of test drawings (PNG)")
    p.add_argument("--methods", nargs="+", default=["protonet", "maml"], help="bench methods (default protonet maml)")
    p.add_argument("--shots", nargs="+", type=int, default=[1, 5], help="K of the episodes (default 1 5)")
    p.add_argument("--arms", nargs="+", default=list(ARMS), help="arms (default none classical dagan)")
    p.add_argument("--episodes", type=int, default=None, help="episodes per arm (default: select 100, test 600)")
    p.add_argument("--eval-seed", type=int, default=None, help="episode seed (default: select 54321, test 12345 as the bench)")
    p.add_argument("--dagan", default="runs/aug/dagan.pt", help="the DAGAN checkpoint (python -m mlcourse.metagen.dagan)")
    p.add_argument("--statistician", default="runs/xdomain/statistician-omniglot-6000.pt",
                   help="the Neural Statistician checkpoint of the statistician arm (python -m mlcourse.genbench statistician --checkpoint)")
    p.add_argument("--checkpoints", default="runs/ckpt/{method}-omniglot-1shot.pt", help="the classifiers' bench checkpoints")
    p.add_argument("--select", default=None, help="test stage: the JSON of the select stage")
    p.add_argument("--choices-of", default=None,
                   help="test stage: use this method's validation choices for every method (when the search was run for it only)")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    check_at_least(p, "--episodes", args.episodes, 2)
    check_at_least(p, "--threads", args.threads, 1)
    for m in args.methods:
        if m not in bench.METHODS:
            bad_argument(p, "--methods", m, f"one of the bench's methods ({', '.join(bench.METHODS)})")
    for a in args.arms:
        if a not in ARMS:
            bad_argument(p, "--arms", a, f"one of {', '.join(ARMS)}")
    for k in args.shots:
        if k < 1:
            bad_argument(p, "--shots", k, "an integer of at least 1")
    if args.stage == "figure" and not args.out.endswith(".png"):
        bad_argument(p, "--out", args.out, "a .png file for the figure stage")
    if args.stage == "test" and not args.select:
        fail(PROG, "the test stage needs --select FILE (the choices made on validation)")
    torch.set_num_threads(args.threads)
    if args.stage == "figure":
        return siblings_figure(args.dagan, args.out)
    episodes = args.episodes or (100 if args.stage == "select" else 600)
    seed = args.eval_seed if args.eval_seed is not None else (54321 if args.stage == "select" else 12345)
    chosen = {}
    if args.select:
        try:
            chosen = json.loads(Path(args.select).read_text())["chosen"]
        except (OSError, ValueError, KeyError) as error:
            fail(PROG, f"--select {args.select}: must be the JSON the select stage wrote ({error})")
    dagan = None
    if "dagan" in args.arms:
        if not os.path.exists(args.dagan):
            fail(PROG, f"--dagan {args.dagan}: no such checkpoint (train one: python -m mlcourse.metagen.dagan --out {args.dagan})")
        dagan = DAGAN.load(args.dagan)
        dagan_state = torch.load(args.dagan, map_location="cpu", weights_only=False)
    if "statistician" in args.arms:
        if "dagan" in args.arms:
            fail(PROG, "--arms: dagan and statistician are scored in separate runs (each arm's generator is the one of its run)")
        if not os.path.exists(args.statistician):
            fail(PROG, f"--statistician {args.statistician}: no such checkpoint (train one: python -m mlcourse.genbench statistician "
                       f"--data omniglot --steps 6000 --time-budget 0 --checkpoint {args.statistician})")  # fmt: skip
        from mlcourse.metagen.common import FewShotGenerator

        model = FewShotGenerator.load(args.statistician)
        stat_state = torch.load(args.statistician, map_location="cpu", weights_only=False)
        trained_on = stat_state.get("genbench", {}).get("train_alphabets")
        dagan = ContextSampler(model, context="sample")
    from mlcourse.data.sources import meta_splits

    splits = meta_splits("omniglot")
    dataset = splits.val if args.stage == "select" else splits.test
    split = "val" if args.stage == "select" else "test"
    out = {
        "command": f"python {PROG} " + " ".join(sys.argv[1:] if argv is None else argv),
        "stage": args.stage, "split": split, "eval_alphabets": sorted(set(dataset.class_groups)), "ways": 5, "queries": 15,
        "episodes": episodes, "eval_seed": seed, "choices_of": args.choices_of, "threads": torch.get_num_threads(), "device": "cpu",
        "hardware": "2 x86-64 cores shared with other jobs, no GPU", "load_average_start": os.getloadavg()[0],
        "dagan": None if "dagan" not in args.arms else {"checkpoint": args.dagan, "config": dagan._config,
                                             "train_steps": dagan_state.get("train_steps"), "train_seconds": dagan_state.get("train_seconds")},
        "statistician": None if "statistician" not in args.arms else {
            "checkpoint": args.statistician, "config": stat_state.get("config"), "train_alphabets": trained_on,
            "train_steps": stat_state.get("meta_train_steps"), "train_seconds": stat_state.get("meta_train_seconds"),
            "sampling": "one context c ~ q(c | support) per image, z ~ p(z | c), the decoder's mean image"},
        "grids": {"per_image": list(PER_IMAGE_GRID), "strength": list(STRENGTH_GRID)},
        "classifiers": {}, "runs": [], "comparisons": [], "chosen": dict(chosen),
    }  # fmt: skip
    start = time.perf_counter()
    for method in args.methods:
        predict, info = load_classifier(method, args.checkpoints.format(method=method))
        out["classifiers"][method] = info
        for shots in args.shots:
            base = score(predict, "none", 0, 0.0, dagan, dataset, shots, episodes, seed, f"{method} {shots}-shot none")
            out["runs"].append({"method": method, "shots": shots, "arm": "none", "per_image": 0, "strength": None, **base.as_dict()})
            for arm in [a for a in args.arms if a != "none"]:
                if args.stage == "select":
                    settings = [(m, s) for m in PER_IMAGE_GRID for s in (STRENGTH_GRID if arm == "classical" else (None,))]
                else:
                    c = chosen.get(f"{args.choices_of or method}/{shots}/{arm}")
                    if c is None:
                        fail(PROG, f"--select {args.select}: has no choice for {method} {shots}-shot {arm}")
                    settings = [(c["per_image"], c["strength"])]
                best = None
                for per_image, strength in settings:
                    r = score(predict, arm, per_image, strength or 0.0, dagan, dataset, shots, episodes, seed,
                              f"{method} {shots}-shot {arm} x{per_image}" + (f" s{strength}" if strength else ""))  # fmt: skip
                    out["runs"].append({"method": method, "shots": shots, "arm": arm, "per_image": per_image, "strength": strength, **r.as_dict()})
                    d = compare(r, base, names=(f"{arm} x{per_image}", "none"))
                    out["comparisons"].append({"method": method, "shots": shots, "arm": arm, "per_image": per_image,
                                               "strength": strength, **d.as_dict()})  # fmt: skip
                    if best is None or r.mean > best[0]:
                        best = (r.mean, per_image, strength)
                if args.stage == "select":
                    out["chosen"][f"{method}/{shots}/{arm}"] = {"per_image": best[1], "strength": best[2], "val_accuracy": best[0]}
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            out["seconds"] = time.perf_counter() - start
            out["load_average_end"] = os.getloadavg()[0]
            Path(args.out).write_text(json.dumps(out))  # after every method and shot: a partial run is kept
    for c in out["comparisons"]:
        print(f"{c['method']} {c['shots']}-shot {c['arm']} x{c['per_image']}"
              f"{' s' + str(c['strength']) if c['strength'] else ''}: {100 * c['difference']:+.2f} ± {100 * c['ci95']:.2f} points")  # fmt: skip
    return out


if __name__ == "__main__":
    main()
