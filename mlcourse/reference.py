"""Reference models: what a full run gives, without the wait.

A chapter trains its models in a minute in fast mode, and for real (minutes to hours of CPU)
in default mode. A *reference model* is the model a full run trains, made once by a committed
command and shipped with the course, so a learner can look at a trained embedding, a trained
initialisation's adaptation, a trained GAN's samples or a trained VAE's latent space at once::

    from mlcourse import reference
    if reference.wanted():                       # MLCOURSE_REFERENCE=1, or reference.wanted(True)
        model = reference.load("protonet")       # refused, with the reason, if it does not match the code

What a reference file holds, besides the weights: the *recipe key* (every setting that made the
model: method, data, training alphabets and class count, steps, learning rate, model
constructor arguments, the format of this module), a digest of the training images, and its
provenance (command, steps reached, seconds, threads, load, machine, library and torch
versions, date, the git commit, and the test accuracy or score measured right after training).

``load`` rebuilds the key from today's code and data and refuses a file that differs: another
architecture, other default settings, other training data (the glyph renderer changed, or the
chapter runs on Omniglot while the file was trained on glyphs). The message names what differs
and the command that makes a new one. Nothing is loaded unless asked: chapters train by
default, and load only when the learner sets ``MLCOURSE_REFERENCE=1``.

Where they live: ``mlcourse/reference_models/NAME-DATA.pt``, in the repository (each file well
under 2 MiB), for the glyphs, which every clone can build offline; models trained on other data
(``--data omniglot``) go to the cache folder (``MLCOURSE_CACHE``), since that data is not
in a fresh clone.

Make or remake one (this trains for real; the time is the recipe's budget plus evaluation)::

    python -m mlcourse.reference build protonet --data glyphs --threads 1
    python -m mlcourse.reference list                 # what is there, with provenance
    python -m mlcourse.reference check                # does each file match today's code?
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .config import cache_dir

FORMAT = 1
ENV = "MLCOURSE_REFERENCE"
PACKAGE_DIR = Path(__file__).with_name("reference_models")
PROG = "python -m mlcourse.reference"
MAX_BYTES = 2 * 2**20  # every tracked file stays under 2 MiB
# Weights are stored in half precision; a tensor this large or larger (the VAE's two 3,136 x 256
# linear layers) as int8 with one scale per output row, which keeps a file under MAX_BYTES. The
# rounding error is at most half a step, |w|max / 254 of the row: far below what training moves.
QUANTIZE_FROM = 2**18


def pack(t: torch.Tensor):
    """How one tensor of a state dict is stored (see :data:`QUANTIZE_FROM`)."""
    t = t.detach().cpu()
    if not t.is_floating_point():
        return t
    if t.numel() < QUANTIZE_FROM or t.dim() < 2:
        return t.half()
    rows = t.reshape(t.shape[0], -1).float()
    scale = rows.abs().amax(dim=1).clamp_min(1e-12) / 127
    return {"int8": torch.round(rows / scale[:, None]).to(torch.int8), "scale": scale, "shape": list(t.shape)}


def unpack(v) -> torch.Tensor:
    """The float32 tensor a stored value stands for."""
    if isinstance(v, dict):
        return (v["int8"].float() * v["scale"][:, None]).reshape(v["shape"])
    return v.float() if v.is_floating_point() else v


class ReferenceMismatch(RuntimeError):
    """A reference file that does not match today's code or data (the message says what differs)."""


def wanted(flag: bool | None = None) -> bool:
    """Whether the learner asked for reference models: ``flag`` when given, else ``MLCOURSE_REFERENCE``."""
    if flag is not None:
        return bool(flag)
    value = os.environ.get(ENV, "").strip().lower()
    if value in ("", "0", "no", "false", "off"):
        return False
    if value in ("1", "yes", "true", "on"):
        return True
    raise ValueError(f"{ENV}={os.environ[ENV]!r}: use 1 to load the reference models, 0 (or unset) to train")


# ---------------------------------------------------------------------------------------
# Recipes: how each reference model is made, and the key that identifies it
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recipe:
    """One reference model: ``kind`` "bench" models are made by :mod:`mlcourse.bench` with the
    method's defaults (the settings chosen on validation); "gan" and "vae" by the chapter's
    full-mode training call, whose settings are ``settings``."""

    name: str
    chapter: str
    description: str
    kind: str
    settings: dict = field(default_factory=dict)


RECIPES: dict[str, Recipe] = {
    "protonet": Recipe("protonet", "02", "ProtoNet with the bench's defaults (chosen on validation)", "bench",
                       {"method": "protonet"}),
    "maml": Recipe("maml", "04", "MAML with the bench's defaults (chosen on validation)", "bench", {"method": "maml"}),
    # Chapter 07's full-mode DCGAN (non-saturating loss) and chapter 08's full-mode VAE (32 latent
    # dimensions, KL warm-up over 1,000 steps), run to the chapters' full step counts with no time
    # budget: the chapters also stop at 360 s and 300 s, which a busy machine reaches after fewer
    # steps; a reference should not depend on how busy the machine that made it was.
    "gan": Recipe("gan", "07", "chapter 07's DCGAN (non-saturating loss), its full-mode 4,000 steps", "gan",
                  {"make": {"size": 28, "loss": "nonsaturating"}, "steps": 4000, "time_budget": None, "seed": 0}),
    "vae": Recipe("vae", "08", "chapter 08's convolutional VAE, its full-mode 8,000 steps", "vae",
                  {"latent_dim": 32, "steps": 8000, "time_budget": None, "kl_warmup": 1000, "seed": 0}),
}  # fmt: skip
DATA = ("glyphs", "omniglot")


def path_for(name: str, data: str) -> Path:
    """Where the reference ``name`` trained on ``data`` lives (glyphs: the package; else the cache)."""
    _check_name(name, data)
    folder = PACKAGE_DIR if data == "glyphs" else cache_dir() / "reference"
    return folder / f"{name}-{data}.pt"


def _check_name(name: str, data: str) -> None:
    if name not in RECIPES:
        raise ValueError(f"unknown reference model {name!r}: one of {', '.join(RECIPES)}")
    if data not in DATA:
        raise ValueError(f"data must be one of {DATA}, got {data!r}")


def _splits(data: str, rotations: bool = False):
    """The full training data of ``data``, whatever the mode: a reference is trained on the full
    set and checked against it (fast mode's glyph subset is another data set)."""
    from .data.base import with_rotations
    from .data.sources import glyph_splits, omniglot_meta_splits

    splits = glyph_splits(subset=False) if data == "glyphs" else omniglot_meta_splits()
    if rotations:
        splits.train = with_rotations(splits.train)
    return splits


def data_digest(dataset) -> str:
    """A digest of a data set's class names and pixels: equal digests, the same training data."""
    h = hashlib.sha256()
    h.update("\n".join(dataset.class_names).encode())
    h.update(dataset.targets.contiguous().cpu().numpy().tobytes())
    h.update(dataset.images.contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _bench_key(method: str, data: str, splits=None) -> dict:
    """The key :mod:`mlcourse.bench` gives a default-settings model of ``method`` on ``data``."""
    from . import bench

    args = bench.build_parser().parse_args([method, "--data", data])
    m = bench.METHODS[method]
    settings = bench._train_settings(m, args, fast=False)
    splits = splits or _splits(data, rotations=settings["rotations"])
    return {
        "format": bench.CHECKPOINT_FORMAT, "method": method, "data": splits.source, "size": args.size, "mode": "full",
        "train_alphabets": sorted(set(splits.train.class_groups)), "train_classes": splits.train.num_classes,
        **settings, "model": bench._model_signature(m, splits, settings),
    }  # fmt: skip


def _generative_model(recipe: Recipe, image_shape) -> torch.nn.Module:
    if recipe.kind == "gan":
        from .generative import make_gan

        return make_gan(channels=image_shape[0], **recipe.settings["make"])
    from .generative import ConvVAE

    return ConvVAE(size=image_shape[1], channels=image_shape[0], latent_dim=recipe.settings["latent_dim"])


def recipe_key(name: str, data: str = "glyphs", splits=None) -> dict:
    """Everything that identifies the reference ``name`` on ``data`` with today's code."""
    _check_name(name, data)
    recipe = RECIPES[name]
    if recipe.kind == "bench":
        body = _bench_key(recipe.settings["method"], data, splits)
    else:
        splits = splits or _splits(data)
        model = _generative_model(recipe, splits.train.image_shape)
        body = {
            "data": splits.source, "train_alphabets": sorted(set(splits.train.class_groups)),
            "train_classes": splits.train.num_classes, **recipe.settings,
            "parameters": {k: list(v.shape) for k, v in model.state_dict().items()},
        }  # fmt: skip
    return {"reference_format": FORMAT, "name": name, "chapter": recipe.chapter, **body}


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------
def _differences(stored: dict, wanted_key: dict) -> list[str]:
    from .bench import key_differences

    return key_differences(stored, wanted_key)


def read(name: str, data: str = "glyphs", path: str | os.PathLike | None = None) -> dict:
    """The stored reference file as a dict (weights, key, provenance), not yet checked."""
    _check_name(name, data)
    path = Path(path) if path is not None else path_for(name, data)
    if not path.exists():
        glyphs = "" if data == "glyphs" else (
            "; or run the chapters on the glyphs (MLCOURSE_DATA=glyphs), whose reference models come with the course")
        raise FileNotFoundError(
            f"no reference model {name!r} for {data} at {path}; make it with `{PROG} build {name} --data {data}` "
            f"(it trains for real), or train it in the chapter (unset {ENV}){glyphs}"
        )
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or "reference" not in state:
        raise ReferenceMismatch(f"{path} is not a reference model written by {PROG} build")
    return state


def check(name: str, data: str = "glyphs", path=None, splits=None) -> dict:
    """The stored file when it matches today's code and data; else :class:`ReferenceMismatch` naming what differs."""
    state = read(name, data, path)
    where = path or path_for(name, data)
    key = recipe_key(name, data, splits)
    diffs = _differences(state["reference"]["key"], key)
    if diffs:
        raise ReferenceMismatch(
            f"reference model {name!r} ({where}) was made with other code or settings: {'; '.join(diffs[:4])}"
            f"{f'; and {len(diffs) - 4} more' if len(diffs) > 4 else ''}. "
            f"Remake it with `{PROG} build {name} --data {data}`, or train in the chapter (unset {ENV})"
        )
    splits = splits or _splits(data, rotations=bool(key.get("rotations", False)))
    digest = data_digest(splits.train)
    if state["reference"]["data_digest"] != digest:
        raise ReferenceMismatch(
            f"reference model {name!r} ({where}) was trained on other {data} images (digest "
            f"{state['reference']['data_digest']}, today's training set {digest}): the data set changed since. "
            f"Remake it with `{PROG} build {name} --data {data}`"
        )
    return state


def load(name: str, data: str | None = None, *, path=None, device=None, splits=None):
    """The reference model ``name``, checked against today's code and data, on ``device``.

    ``data`` defaults to the data the chapters use now (``MLCOURSE_DATA``/auto): a reference
    trained on glyphs is refused for a chapter that runs on Omniglot, with a message saying so.
    Returns a :class:`~mlcourse.fewshot.FewShotClassifier` (protonet, maml), a
    :class:`~mlcourse.generative.GAN` or a :class:`~mlcourse.generative.ConvVAE`, in eval mode,
    with its provenance in ``model.reference``.
    """
    from .config import get_device

    if data is None:
        data = _current_data()
    state = check(name, data, path, splits)
    recipe = RECIPES[name]
    if recipe.kind == "bench":
        import importlib

        from .fewshot import FewShotClassifier

        for module in ("mlcourse.metric", "mlcourse.optim"):  # the classifiers register themselves on import
            importlib.import_module(module)
        model = FewShotClassifier.registry[state["class"]](**state["config"])
    else:
        model = _generative_model(recipe, tuple(state["image_shape"]))
    model.load_state_dict({k: unpack(v) for k, v in state["state_dict"].items()})
    model.reference = state["reference"]["provenance"]
    return model.to(device or get_device()).eval()


def _current_data() -> str:
    from .data.sources import meta_splits

    source = meta_splits().source
    return "glyphs" if source == "glyphs" else "omniglot"


def describe(name: str, data: str | None = None, path=None) -> str:
    """One paragraph of provenance: how the reference was made, for a chapter to print
    (``data``: default, the data the chapters use now)."""
    data = data or _current_data()
    p = read(name, data, path)["reference"]["provenance"]
    score = p.get("score")
    return (
        f"reference {name} ({data}): `{p['command']}`; {p['steps']} steps in {p['seconds']:.0f} s on "
        f"{p['machine']} ({p['threads']} thread{'s' if p['threads'] != 1 else ''}, load {p['load_average']:.1f}), "
        f"{p['date']}, mlcourse {p['mlcourse']}, torch {p['torch']}, commit {p['commit']}"
        + (f"; {score}" if score else "")
    )


# ---------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------
def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{platform.system()} {cpu}, {os.cpu_count()} cores, {'CUDA' if torch.cuda.is_available() else 'no GPU'}"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _train_bench(recipe: Recipe, data: str, threads: int, tmp: Path):
    from . import bench
    from .fewshot import FewShotClassifier

    import contextlib

    with contextlib.redirect_stdout(sys.stderr):  # the bench prints its JSON; ours is the file
        result = bench.main([recipe.settings["method"], "--data", data, "--checkpoint", str(tmp), "--json", "--quiet",
                             "--threads", str(threads)])  # fmt: skip
    model = FewShotClassifier.load(tmp)
    stored = torch.load(tmp, map_location="cpu", weights_only=False)
    score = (f"{100 * result['accuracy']:.2f}% ± {100 * result['ci95']:.2f}% on {result['episodes']} "
             f"{result['ways']}-way {result['shots']}-shot test episodes (eval seed {result['eval_seed']})")  # fmt: skip
    extra = {"class": stored["class"], "config": stored["config"]}
    return model, stored.get("meta_train_steps", result["meta_train_steps"]), stored.get("meta_train_seconds", 0.0), score, extra


def _train_generative(recipe: Recipe, splits, device):
    s = recipe.settings
    if recipe.kind == "gan":
        from .generative import train_gan

        model = _generative_model(recipe, splits.train.image_shape)
        model, history = train_gan(splits.train, model, steps=s["steps"], time_budget=s["time_budget"], device=device,
                                   seed=s["seed"], progress=False)  # fmt: skip
        steps = len(history["loss"])
        score = None
    else:
        from .generative import train_vae

        model, history = train_vae(splits.train, latent_dim=s["latent_dim"], steps=s["steps"], time_budget=s["time_budget"],
                                   kl_warmup=s["kl_warmup"], device=device, seed=s["seed"], progress=False)  # fmt: skip
        steps = len(history["loss"])
        score = f"training ELBO over the last 200 steps: {history.last('elbo', 200):.1f} nats per image"
    return model.cpu(), steps, history.seconds, score, {"image_shape": list(splits.train.image_shape)}


def build(name: str, data: str = "glyphs", *, threads: int = 1, out: str | os.PathLike | None = None,
          checkpoint: str | os.PathLike | None = None) -> Path:  # fmt: skip
    """Train the reference ``name`` on ``data`` with its recipe and write it with its provenance.

    ``checkpoint`` (bench recipes only): a ``python -m mlcourse.bench METHOD --data DATA --checkpoint
    PATH`` file to reuse. The bench loads it only when it was trained with exactly the recipe's
    settings (else it stops, naming what differs), then scores it on the test episodes."""
    from .config import fast_mode, get_device

    _check_name(name, data)
    if fast_mode():
        raise RuntimeError("a reference model is a full-mode run: unset MLCOURSE_FAST (fast mode trains a smoke test)")
    recipe = RECIPES[name]
    torch.set_num_threads(threads)
    device = get_device()
    out = Path(out) if out is not None else path_for(name, data)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if checkpoint is not None and recipe.kind != "bench":
        raise ValueError(f"checkpoint: only the bench's models ({', '.join(n for n, r in RECIPES.items() if r.kind == 'bench')}) reuse one")
    if recipe.kind == "bench":
        tmp = Path(checkpoint) if checkpoint is not None else out.with_suffix(".bench.tmp")
        try:
            model, steps, seconds, score, extra = _train_bench(recipe, data, threads, tmp)
        finally:
            if checkpoint is None:
                tmp.unlink(missing_ok=True)
    else:
        splits = _splits(data)
        model, steps, seconds, score, extra = _train_generative(recipe, splits, device)
    command = f"{PROG} build {name} --data {data} --threads {threads}"
    if checkpoint is not None:
        command = (f"python -m mlcourse.bench {recipe.settings['method']} --data {data} --checkpoint {checkpoint}, "
                   f"then {command} --checkpoint {checkpoint}")  # fmt: skip
    provenance = {
        "command": command,
        "steps": int(steps), "seconds": float(seconds), "wall_seconds": time.perf_counter() - start,
        "threads": threads, "device": str(device), "score": score,
    }  # fmt: skip
    return write(name, data, model, provenance, extra, out)


def write(name: str, data: str, model: torch.nn.Module, provenance: dict, extra: dict | None = None,
          out: str | os.PathLike | None = None, splits=None) -> Path:  # fmt: skip
    """Write ``model`` as the reference ``name`` on ``data``: weights packed by :func:`pack` (half
    precision, the largest tensors int8), today's recipe key, the training data's digest, and ``provenance`` completed with
    the machine, date, versions and commit. ``extra``: what :func:`load` needs to rebuild the
    model (a classifier's class and constructor arguments, a generator's image shape)."""
    _check_name(name, data)
    out = Path(out) if out is not None else path_for(name, data)
    key = recipe_key(name, data, splits)
    splits = splits or _splits(data, rotations=bool(key.get("rotations", False)))
    provenance = {
        "machine": _machine(), "date": datetime.date.today().isoformat(), "mlcourse": __import__("mlcourse").__version__,
        "torch": torch.__version__, "commit": _commit(), "description": RECIPES[name].description,
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0, "threads": torch.get_num_threads(),
        **provenance,
    }  # fmt: skip
    weights = {k: pack(v) for k, v in model.state_dict().items()}
    state = {"reference": {"key": key, "data_digest": data_digest(splits.train), "provenance": provenance},
             "state_dict": weights, **(extra or {})}  # fmt: skip
    from .train import save_checkpoint

    save_checkpoint(out, state)
    size = out.stat().st_size
    if size > MAX_BYTES:
        out.unlink()
        raise RuntimeError(f"{out} would be {size / 2**20:.1f} MiB, over the 2 MiB a tracked file may take")
    return out


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------
def build_parser():
    from .cli import ArgumentParser

    p = ArgumentParser(prog=PROG, description="Reference models: trained once by a committed command, loaded on request.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    b = sub.add_parser("build", help="train a reference model with its recipe and write it")
    b.add_argument("name", metavar="NAME", help="one of: " + ", ".join(RECIPES))
    b.add_argument("--data", default="glyphs", help="glyphs (default; kept in the package) or omniglot (kept in the cache)")
    b.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1)")
    b.add_argument("--out", default=None, help="write here instead of the default place")
    b.add_argument("--checkpoint", default=None,
                   help="protonet, maml: reuse this bench checkpoint (trained with exactly the recipe's settings) instead of training")
    for command, text in (("list", "what reference models there are, with their provenance"),
                          ("check", "whether each reference model matches today's code and data")):  # fmt: skip
        s = sub.add_parser(command, help=text)
        s.add_argument("--data", default="glyphs", help="glyphs (default) or omniglot")
    return p


def main(argv: list[str] | None = None) -> int:
    from .cli import bad_argument, check_at_least

    args = build_parser().parse_args(argv)
    if args.command is None:
        bad_argument(PROG, "COMMAND", "(none)", "build, list or check")
    if args.data not in DATA:
        bad_argument(PROG, "--data", args.data, " or ".join(DATA))
    if args.command == "build":
        if args.name not in RECIPES:
            bad_argument(PROG, "NAME", args.name, ", ".join(RECIPES))
        check_at_least(PROG, "--threads", args.threads, 1)
        if args.checkpoint is not None and RECIPES[args.name].kind != "bench":
            bad_argument(PROG, "--checkpoint", args.checkpoint, "left out for " + args.name + " (only protonet and maml reuse a bench checkpoint)")
        if args.checkpoint is not None and not Path(args.checkpoint).exists():
            bad_argument(PROG, "--checkpoint", args.checkpoint, "an existing file written by python -m mlcourse.bench")
        path = build(args.name, args.data, threads=args.threads, out=args.out, checkpoint=args.checkpoint)
        print(f"wrote {path} ({path.stat().st_size / 2**10:.0f} KiB)")
        print(describe(args.name, args.data, path))
        return 0
    status = 0
    for name in RECIPES:
        path = path_for(name, args.data)
        if not path.exists():
            print(f"{name:<9} missing ({path}); make it with `{PROG} build {name} --data {args.data}`")
            continue
        if args.command == "list":
            print(describe(name, args.data))
            continue
        try:
            check(name, args.data)
            print(f"{name:<9} matches today's code and data")
        except ReferenceMismatch as error:
            print(f"{name:<9} MISMATCH: {error}")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
