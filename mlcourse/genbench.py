"""Benchmark few-shot image generation: meta-train (or load), adapt to held-out characters, score.

Usage::

    python -m mlcourse.genbench reptile-gan --data glyphs --shots 4 --json
    python -m mlcourse.genbench statistician --data omniglot --split val
    python -m mlcourse.genbench real --data omniglot            # the real-vs-real floor
    python -m mlcourse.genbench jitter --fast                   # copy the support set, jittered

What happens:

1. **Data.** :func:`mlcourse.data.sources.meta_splits`: the method meta-trains on the training
   alphabets only; ``--characters`` characters of ``--split`` (``val`` to choose settings,
   ``test`` to report, once) are drawn under ``--eval-seed``, and for each one ``--shots``
   drawings form its support set, the rest are what the generated images are scored against.
2. **Meta-training** with the method's defaults (:data:`METHODS`), capped by
   ``--time-budget``; ``--checkpoint PATH`` loads a model trained with exactly these settings
   or trains one and saves it there (a checkpoint trained otherwise is refused, naming what
   differs; ``--retrain`` overwrites it).
3. **Generation and scores** (:func:`mlcourse.evaluation.score_characters`): ``--samples``
   images per character, scored in the feature space of the course's Conv-4 trained on the
   training alphabets (:func:`mlcourse.metrics.feature_net`): FD (per character and pooled),
   precision/recall, recognisability (``--ways``-way, distractors from the other held-out
   characters), diversity and memorisation, each with a 95% CI over characters. Likelihood
   models also report the conditional NLL of the held-out drawings given 0, 1, 2, 4 and 9
   support images (``--nll-shots``) in nats.

The JSON keeps every character's scores and a fingerprint of the characters, supports and
distractors, so two methods scored with the same arguments are compared character by
character (:func:`mlcourse.evaluation.compare_scores`; ``benchmarks/genbench_table.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

PROG = "python -m mlcourse.genbench"
CHECKPOINT_FORMAT = 1
# Constructor arguments that are evaluation settings: not part of a checkpoint's key (one trained
# model serves every value; ``--adapt-steps`` or the method's default sets them after loading).
EVAL_CONFIG = ("adapt_steps",)


@dataclass(frozen=True)
class GenMethod:
    """One row of the benchmark.

    ``kind``: ``"reference"`` (no model: :func:`~mlcourse.evaluation.real_vs_real`,
    :func:`~mlcourse.evaluation.copy_with_jitter`), ``"meta"`` (a
    :class:`~mlcourse.metagen.FewShotGenerator` built by ``build(image_shape)`` and
    meta-trained on the training alphabets) or ``"baseline"`` (``build(image_shape)`` returns
    a generator whose ``meta_train`` is ordinary training, or nothing).
    """

    description: str
    kind: str = "meta"
    build: Callable | None = None
    steps: int = 2000
    fast_steps: int = 20
    time_budget: float | None = 600.0
    train_options: dict = field(default_factory=dict)
    likelihood: bool = False
    selected_on: str = "val"
    adapt_steps: int | None = None  # steps of adaptation at test time (None: the model's own default)


def _reference(name: str):
    def make(sets):
        from .evaluation import copy_with_jitter, real_vs_real

        return real_vs_real(sets) if name == "real" else (copy_with_jitter(), sets)

    return make


METHODS: dict[str, GenMethod] = {
    "real": GenMethod("real drawings the support set lacked, scored against other real ones: the floor", kind="reference",
                      build=_reference("real"), steps=0, fast_steps=0, time_budget=None, selected_on="-"),
    "jitter": GenMethod("a support drawing copied with a small random affine jitter: what memorising looks like",
                        kind="reference", build=_reference("jitter"), steps=0, fast_steps=0, time_budget=None,
                        selected_on="-"),
}  # fmt: skip


def _reptile_vae(shape):
    from .metagen.vae_adapt import ReptileVAE

    return ReptileVAE(size=shape[1], channels=shape[0], inner_steps=5, adapt_steps=20, meta_batch=5)


METHODS["reptile-vae"] = GenMethod(
    "chapter 08's VAE meta-trained with Reptile over characters, fitted to the support set by 5 Adam steps",
    build=_reptile_vae, steps=20000, fast_steps=30, time_budget=600.0, likelihood=True, adapt_steps=5,
    selected_on="val (adaptation steps; training settings not searched)",
)


def _gan(class_name: str, **kwargs):
    def build(shape):
        from . import metagen

        return getattr(metagen, class_name)(size=shape[1], channels=shape[0], **kwargs)

    return build


METHODS["reptile-gan"] = GenMethod(
    "FIGR: a WGAN-GP meta-trained with Reptile over characters, adapted by 300 steps on the support set",
    build=_gan("ReptileGAN"), steps=100000, fast_steps=10, time_budget=900.0, adapt_steps=300,
    selected_on="val (adaptation steps; training settings not searched)",
)
METHODS["reptile-gan-fomaml"] = GenMethod(
    "FIGR's critic by Reptile, its generator by a first-order MAML gradient",
    build=_gan("ReptileGAN", variant="fomaml"), steps=100000, fast_steps=10, time_budget=900.0, adapt_steps=300,
    selected_on="none (FIGR's adaptation steps)",
)
METHODS["finetune-gan"] = GenMethod(
    "chapter 07's WGAN-GP trained on all training characters, then FIGR's inner loop on the support set (300 steps)",
    build=_gan("PretrainedGAN"), steps=100000, fast_steps=20, time_budget=900.0, adapt_steps=300,
    selected_on="val (adaptation steps)",
)
METHODS["scratch-gan"] = GenMethod(
    "a fresh WGAN-GP trained on the K support images alone (300 steps)",
    kind="baseline", build=_gan("ScratchGAN"), steps=0, fast_steps=0, time_budget=None, adapt_steps=300,
    selected_on="none (the GAN rows' largest adaptation budget)",
)


METHODS["vae"] = GenMethod(
    "chapter 08's VAE trained on all training characters; it ignores the support set unless --adapt-steps fine-tunes it",
    build=_gan("PretrainedVAE"), steps=100000, fast_steps=30, time_budget=600.0, likelihood=True, adapt_steps=0,
    selected_on="none (chapter 08's defaults)",
)


def _statistician(shape):
    from .metagen import NeuralStatistician

    return NeuralStatistician(size=shape[1], channels=shape[0])


METHODS["statistician"] = GenMethod(
    "the Neural Statistician: a context vector inferred from the support set conditions a VAE",
    build=_statistician, steps=100000, fast_steps=60, time_budget=900.0, likelihood=True,
    selected_on="none (nothing to choose at test time; training settings not searched)",
)


#: the rows whose models adapt to a support set by gradient steps (``model.adapt_steps``)
ADAPTING = ("reptile-gan", "reptile-gan-fomaml", "finetune-gan", "scratch-gan", "reptile-vae", "vae")


def register(name: str, method: GenMethod) -> None:
    """Add a row (the method modules call this; tests may add their own)."""
    METHODS[name] = method


def build_parser():
    from .cli import ArgumentParser

    p = ArgumentParser(prog=PROG, description="Few-shot image generation: meta-train, adapt to held-out characters, score.")
    p.add_argument("method", metavar="METHOD", help="one of: " + ", ".join(METHODS))
    p.add_argument("--data", default="auto", choices=["auto", "glyphs", "omniglot", "digits"],
                   help="data source scored (default: auto); digits only as a target, with --train-data")
    p.add_argument("--train-data", default=None, choices=["glyphs", "omniglot"],
                   help="meta-train on this source and score on --data (cross-domain; default: --data itself)")
    p.add_argument("--target-steps", type=int, default=0,
                   help="after loading or meta-training, continue meta-training this many steps on the training "
                        "characters of --data (a short fine-tune to the target domain; not saved; default 0 = off)")
    p.add_argument("--shots", type=int, default=4, help="K: support drawings per character (default 4)")
    p.add_argument("--characters", type=int, default=None, help="held-out characters scored (default 50, fast mode 10)")
    p.add_argument("--samples", type=int, default=None, help="images generated per character (default 32, fast mode 8)")
    p.add_argument("--ways", type=int, default=5, help="way of the recognisability test (default 5)")
    p.add_argument("--split", choices=["val", "test"], default="test", help="score validation or test characters (default test)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation and meta-training")
    p.add_argument("--eval-seed", type=int, default=12345, help="seed of the characters, supports, distractors and samples")
    p.add_argument("--steps", type=int, default=None, help="meta-training steps (default: per method)")
    p.add_argument("--time-budget", type=float, default=None, help="cap on meta-training seconds (default: per method; 0 = none)")
    p.add_argument("--adapt-steps", type=int, default=None,
                   help="steps of adaptation to the support set, for the methods that adapt by training (default: per method); "
                        "an evaluation setting: one checkpoint serves every value")
    p.add_argument("--nll-shots", default="0,1,2,4,9", help="support sizes of the conditional NLL (likelihood models)")
    p.add_argument("--nll-k", type=int, default=None, help="importance samples per image for the NLL (default 100, fast 10)")
    p.add_argument("--checkpoint", default=None, help="load the model from PATH if trained with these settings, else train and save")
    p.add_argument("--retrain", action="store_true", help="with --checkpoint: train anew and overwrite a stale checkpoint")
    p.add_argument("--fast", action="store_true", help="fast mode: tiny data and training (sets MLCOURSE_FAST=1)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--size", type=int, default=28, help="image side in pixels (default 28)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def _check_arguments(p, args) -> list[int]:
    from .cli import bad_argument, check_at_least, fail

    if args.method not in METHODS:
        bad_argument(PROG, "METHOD", args.method, "one of " + ", ".join(METHODS))
    for name, value, low in (("--shots", args.shots, 1), ("--characters", args.characters, 2), ("--samples", args.samples, 2),
                             ("--ways", args.ways, 2), ("--steps", args.steps, 1), ("--nll-k", args.nll_k, 1),
                             ("--size", args.size, 16), ("--threads", args.threads, 1), ("--adapt-steps", args.adapt_steps, 0),
                             ("--target-steps", args.target_steps, 0)):  # fmt: skip
        check_at_least(PROG, name, value, low)
    if args.time_budget is not None and not args.time_budget >= 0:
        bad_argument(PROG, "--time-budget", args.time_budget, "a number of at least 0")
    try:
        nll_shots = sorted({int(v) for v in args.nll_shots.split(",")})
    except ValueError:
        bad_argument(PROG, "--nll-shots", args.nll_shots, "support sizes separated by commas, like 0,1,2,4,9")
    if nll_shots and nll_shots[0] < 0:
        bad_argument(PROG, "--nll-shots", args.nll_shots, "sizes of at least 0")
    if args.adapt_steps is not None and args.method not in ADAPTING:
        fail(PROG, f"--adapt-steps: {args.method} does not adapt by training; the option is for " + ", ".join(ADAPTING))
    if args.retrain and not args.checkpoint:
        fail(PROG, "--retrain: only makes sense with --checkpoint PATH")
    if args.data == "digits" and args.train_data is None:
        fail(PROG, "--data digits: the digits are a target only (10 classes, no held-out alphabets); "
                   "meta-train on another source with --train-data glyphs or --train-data omniglot")
    if args.target_steps and METHODS[args.method].kind == "reference":
        fail(PROG, f"--target-steps: {args.method} is a reference row with nothing to train")
    if args.data == "digits" and (args.characters or 10) > 10:
        bad_argument(PROG, "--characters", args.characters or 50, "at most 10 on --data digits (ten digits)")
    default_characters = 10 if args.data == "digits" else 50
    if args.ways > (args.characters or default_characters):
        bad_argument(PROG, "--ways", args.ways, f"at most --characters ({args.characters or default_characters}): "
                     "distractors are other scored characters")
    return nll_shots


def _choose_characters(eval_set, n: int, shots: int, largest_nll: int, seed: int) -> list[int]:
    """``n`` classes of ``eval_set`` with enough drawings, in a seeded random order."""
    from .cli import bad_argument

    sizes = eval_set.class_sizes()
    need = max(shots, largest_nll) + 2  # the support, and at least two drawings to score against
    eligible = torch.nonzero(sizes >= need).flatten()
    if len(eligible) == 0:
        bad_argument(PROG, "--shots", shots, f"at most {int(sizes.max()) - 2}: the characters have at most {int(sizes.max())} drawings")
    if n > len(eligible):
        bad_argument(PROG, "--characters", n, f"at most {len(eligible)} (the characters of this split with at least {need} drawings)")
    order = eligible[torch.randperm(len(eligible), generator=torch.Generator().manual_seed(seed))]
    return sorted(order[:n].tolist())


def _fingerprint(sets, seed: int, ways: int) -> str:
    h = hashlib.sha1(f"{seed}-{ways}".encode())
    for support, rest in sets:
        h.update(support.numpy().tobytes())
        h.update(str(tuple(rest.shape)).encode())
    return h.hexdigest()[:16]


def _key(args, method: GenMethod, splits, settings: dict, model) -> dict:
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in getattr(model, "_config", {}).items()
              if k not in EVAL_CONFIG}  # fmt: skip
    return {"format": CHECKPOINT_FORMAT, "method": args.method, "data": splits.source, "size": args.size,
            "mode": settings["mode"], "train_alphabets": sorted(set(splits.train.class_groups)),
            "train_classes": splits.train.num_classes, "model": {"class": type(model).__name__, "config": config},
            **{k: v for k, v in settings.items() if k != "mode"}}  # fmt: skip


def _trained_model(args, method: GenMethod, splits, settings: dict, device, progress, json_mode: bool):
    """Build, then load from ``--checkpoint`` or meta-train (and save); ``(model, seconds, steps, loaded)``."""
    from .bench import key_differences
    from .cli import fail
    from .metagen import FewShotGenerator
    from .train import load_checkpoint

    torch.manual_seed(settings["seed"])
    model = method.build(splits.train.image_shape)
    key = _key(args, method, splits, settings, model)
    if args.checkpoint and os.path.exists(args.checkpoint):
        try:
            state = load_checkpoint(args.checkpoint)
        except Exception as error:
            fail(PROG, f"--checkpoint {args.checkpoint}: must be a checkpoint written by mlcourse.genbench ({type(error).__name__}: {error})")
        stored = state.get("genbench") or {}
        if isinstance(stored.get("model"), dict):  # keys written before EVAL_CONFIG held the evaluation settings
            stored = {**stored, "model": {**stored["model"], "config": {k: v for k, v in stored["model"].get("config", {}).items()
                                                                         if k not in EVAL_CONFIG}}}  # fmt: skip
        diffs = key_differences(stored, key)
        if not diffs:
            loaded = FewShotGenerator.load(args.checkpoint).to(device)
            _log(f"loaded {args.checkpoint} (meta-trained for {state.get('meta_train_seconds', 0):.0f} s)", json_mode)
            return loaded, state.get("meta_train_seconds", 0.0), state.get("meta_train_steps", 0), True
        if not args.retrain:
            fail(PROG, f"--checkpoint {args.checkpoint}: trained with other settings ({'; '.join(diffs[:4])}); "
                       "pass --retrain to train anew and overwrite it, or choose another path")  # fmt: skip
    model = model.to(device)
    import inspect

    options = dict(method.train_options)
    if "shots" in inspect.signature(model.meta_train).parameters:  # tasks of K drawings (not the statistician's sets)
        options.setdefault("shots", settings["train_shots"])
    history = model.meta_train(splits.train, steps=settings["steps"], time_budget=settings["time_budget"],
                               seed=settings["seed"], device=device, progress=progress, **options)  # fmt: skip
    steps_done = len(history["loss"]) if "loss" in history else settings["steps"]
    if args.checkpoint:
        model.save(args.checkpoint, genbench=key, meta_train_seconds=history.seconds, meta_train_steps=steps_done)
    return model.eval(), history.seconds, steps_done, False


def _fine_tune_on_target(model, target_train, args, settings: dict, device, progress) -> tuple[float, int]:
    """Continue the method's own meta-training for ``--target-steps`` steps on the target's
    training characters (the loaded weights are the start; nothing is saved)."""
    import inspect

    options = dict(METHODS[args.method].train_options)
    parameters = inspect.signature(model.meta_train).parameters
    if "shots" in parameters:
        options.setdefault("shots", settings["train_shots"])
    if "alpha" in parameters:  # the statistician: the true ELBO, as meta-training ended (no second KL warm-up)
        options["alpha"] = 0.0
    model.train()
    history = model.meta_train(target_train, steps=args.target_steps, time_budget=None, seed=settings["seed"] + 1,
                               device=device, progress=progress, **options)  # fmt: skip
    model.eval()
    return history.seconds, len(history["loss"]) if "loss" in history else args.target_steps


def _log(message: str, json_mode: bool) -> None:
    print(message, file=sys.stderr if json_mode else sys.stdout, flush=True)


def _nll_by_shots(model, eval_set, classes: list[int], nll_shots: list[int], k: int, seed: int) -> dict:
    """Mean conditional NLL (nats) of each character's held-out drawings given D of each size.

    For every character the same drawings are scored at every size (those left after the
    largest support set), and the support sets are nested (the first ``s`` of the largest), so
    the curve over sizes is paired character by character.
    """
    from .metagen.plots import nll_by_shots  # one implementation: the chapter's and the benchmark's

    return nll_by_shots(model, eval_set, classes, nll_shots, k=k, seed=seed, progress=False)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark described by ``argv`` and return the result as a dict."""
    parser = build_parser()
    args = parser.parse_args(argv)
    nll_shots = _check_arguments(parser, args)
    if args.fast:
        os.environ["MLCOURSE_FAST"] = "1"
    import mlcourse

    from .bench import _load_data  # the same data loading, messages included
    from .config import fast_mode, get_device
    from .evaluation import score_characters
    from .metagen import character_sets
    from .metrics import feature_net

    fast = fast_mode()
    method = METHODS[args.method]
    device = get_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    progress = False if args.quiet else (True if sys.stderr.isatty() and not args.json else "log")
    n_chars = args.characters or (10 if fast or args.data == "digits" else 50)
    samples = args.samples or (8 if fast else 32)
    nll_k = args.nll_k or (10 if fast else 100)
    settings = {
        "steps": args.steps if args.steps is not None else (method.fast_steps if fast else method.steps),
        "time_budget": (args.time_budget if args.time_budget is not None else (None if fast else method.time_budget)) or None,
        "seed": args.seed, "mode": "fast" if fast else "full", "train_shots": args.shots,
    }  # fmt: skip

    # Cross-domain (--train-data): meta-train (and key the checkpoint) on one source, score on
    # --data's characters, the same ones an in-domain model of --data is scored on.
    from .bench import _load_target

    splits = _load_data(args.train_data or args.data, args.size, False, args.json)
    target = splits if args.train_data is None else _load_target(args.data, args.size, args.json)
    if target is not splits and target.source == splits.source:
        target = splits
    eval_set = target.evaluation_set(args.split)
    classes = _choose_characters(eval_set, n_chars, args.shots, max(nll_shots) if method.likelihood else 0, args.eval_seed)
    sets = character_sets(eval_set, args.shots, classes=classes, seed=args.eval_seed)
    names = [eval_set.class_names[c] for c in classes]
    _log(str(splits), args.json)
    if target is not splits:
        _log(f"scored on another domain: {target}", args.json)

    train_seconds, steps_done, loaded = 0.0, 0, False
    target_seconds, target_steps_done = 0.0, 0
    scored_sets = sets
    if method.kind == "reference":
        generate, scored_sets = method.build(sets)
        model = None
    else:
        model, train_seconds, steps_done, loaded = _trained_model(args, method, splits, settings, device, progress, args.json)
        if args.target_steps:
            target_seconds, target_steps_done = _fine_tune_on_target(model, target.train, args, settings, device, progress)
        adapt = args.adapt_steps if args.adapt_steps is not None else method.adapt_steps
        if adapt is not None:  # an evaluation setting: not part of the checkpoint's key
            model.adapt_steps = adapt

        def generate(support, n, seed):
            with torch.no_grad():
                return model.generate(support.to(device), n, seed=seed).cpu()

    # The scores live in the features of a Conv-4 trained on the *scored* domain's training
    # images, whichever domain the generator came from, so in- and cross-domain rows compare.
    if target.source == "digits":
        net = feature_net(dataset=target.train, size=args.size, progress=progress is True)
    else:
        net = feature_net(target.source, size=args.size, progress=progress is True)
    start = time.perf_counter()
    scores = score_characters(generate, scored_sets, net, samples=samples, ways=args.ways, names=names, seed=args.eval_seed,
                              progress=progress is True)  # fmt: skip
    score_seconds = time.perf_counter() - start
    out = {
        "method": args.method, "description": method.description, "data": target.source, "train_data": splits.source,
        "target_steps": args.target_steps, "target_steps_done": target_steps_done, "target_seconds": target_seconds,
        "split": args.split,
        "defaults_selected_on": method.selected_on, "train_alphabets": sorted(set(splits.train.class_groups)),
        "eval_alphabets": sorted(set(eval_set.class_groups)), "shots": args.shots, "characters": n_chars,
        "samples": samples, "ways": args.ways, "summary": scores.summary(), "scores": scores.as_dict(),
        # of the characters, supports and the images scored against: the real-vs-real floor,
        # scored against half of them, gets another one and is never paired with model rows
        "fingerprint": _fingerprint(scored_sets, args.eval_seed, args.ways), "feature_net": getattr(net, "description", ""),
        "meta_train_seconds": train_seconds, "meta_train_steps": steps_done, "from_checkpoint": loaded,
        "adapt_steps": getattr(model, "adapt_steps", None),
        "train": {k: v for k, v in settings.items()}, "score_seconds": score_seconds, "device": str(device),
        "threads": torch.get_num_threads(), "mode": settings["mode"], "torch": torch.__version__,
        "mlcourse": mlcourse.__version__, "seed": args.seed, "eval_seed": args.eval_seed,
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }  # fmt: skip
    out["scores"].pop("summary", None)
    if method.likelihood and model is not None:
        start = time.perf_counter()
        out["nll_by_shots"] = _nll_by_shots(model, eval_set, classes, nll_shots, nll_k, args.eval_seed)
        out["nll_k"], out["nll_seconds"] = nll_k, time.perf_counter() - start
    if args.json:
        print(json.dumps(out))
    else:
        print(format_table(out))
    return out


def reference_runs(data: str = "glyphs", split: str = "test", folder=None) -> dict[str, dict]:
    """The committed full-mode runs on ``data`` (``docs/runs/genbench/<data>/*-<data>-<split>.json``), by method.

    These are what the chapters show beside a learner's own fast run: each was made by
    ``benchmarks/genbench_select.py`` (validation runs choose the adaptation steps; the test
    run is the chosen value, scored once), on the hardware the JSON records. Raises
    ``FileNotFoundError`` naming the folder when none is there.
    """
    from pathlib import Path

    root = Path(folder) if folder is not None else Path(__file__).resolve().parents[1] / "docs" / "runs" / "genbench" / data
    runs = {}
    for path in sorted(root.glob(f"*-{data}-{split}.json")):
        run = json.loads(path.read_text())
        run["_path"] = str(path)
        runs[run["method"]] = run
    if not runs:
        raise FileNotFoundError(f"no genbench runs for {data}/{split} in {root}: see benchmarks/genbench_select.py")
    return runs


def format_table(r: dict) -> str:
    s = r["summary"]
    rows = [
        ("method", f"{r['method']}: {r['description']}"),
        ("data", f"{r['data']} ({r['mode']} mode), {r['characters']} {r['split']} characters of {', '.join(r['eval_alphabets'])}"
         + (f"; meta-trained on {r['train_data']}" if r.get("train_data", r["data"]) != r["data"] else "")
         + (f"; then {r['target_steps_done']} steps on its training characters" if r.get("target_steps") else "")),
        ("task", f"K = {r['shots']} support drawings, {r['samples']} generated per character"),
    ]
    for name in ("fd", "precision", "recall", "recognisability", "diversity", "memorisation"):
        rows.append((name, f"{s[name]['mean']:.3f} ± {s[name]['ci95']:.3f} (95% CI over characters)"))
    rows.append(("pooled FD", f"{s['pooled_fd']:.2f}"))
    for shots, v in r.get("nll_by_shots", {}).items():
        rows.append((f"NLL | {shots} images", f"{v['mean']:.2f} ± {v['ci95']:.2f} nats"))
    if r.get("adapt_steps") is not None:
        rows.append(("adaptation", f"{r['adapt_steps']} steps on the support set"))
    rows.append(("meta-training", f"{r['meta_train_seconds']:.1f} s, {r['meta_train_steps']} steps"
                 + (" (loaded checkpoint)" if r["from_checkpoint"] else "")))
    rows.append(("device", f"{r['device']} (torch threads: {r['threads']}), torch {r['torch']}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


if __name__ == "__main__":
    main(sys.argv[1:])
