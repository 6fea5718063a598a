"""Test accuracy of a saved few-shot classifier before and after BatchNorm recalibration.

Usage::

    python -m mlcourse.bench protonet --data omniglot --bn-episodes 0 --checkpoint runs/protonet_raw.pt
    python benchmarks/bn_recalibration.py runs/protonet_raw.pt --data omniglot

Evaluates the checkpoint as stored (running statistics from augmented training batches), then
after :meth:`~mlcourse.fewshot.FewShotClassifier.recalibrate_batchnorm` on clean training
episodes, on the same test episodes as ``mlcourse.bench`` (same ``--eval-seed``).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mlcourse.cli import ArgumentParser, bad_argument, check_at_least, check_episodes_fit, check_existing_file  # noqa: E402

PROG = "benchmarks/bn_recalibration.py"
QUERIES = 15  # query images per class of the test episodes, as in mlcourse.bench
WHAT = "a few-shot model checkpoint, as python -m mlcourse.bench METHOD --checkpoint PATH writes"


def load_model(parser, path: str):
    """The model of a few-shot checkpoint, or one line saying why ``path`` is not one (exit 2)."""
    from mlcourse.fewshot import FewShotClassifier
    from mlcourse.train import load_checkpoint

    check_existing_file(parser, "checkpoint", path, WHAT)
    try:
        state = load_checkpoint(path)
    except Exception as error:  # noqa: BLE001 - not a torch file at all: a pickle, zip or EOF error
        bad_argument(parser, "checkpoint", path, f"{WHAT}; torch.load failed: {type(error).__name__}")
    if not isinstance(state, dict) or not {"class", "config", "state_dict"} <= set(state):
        hint = "; it holds a pretrained classifier, not a few-shot model" if isinstance(state, dict) and "bench" in state else ""
        bad_argument(parser, "checkpoint", path, WHAT + hint)
    try:
        return FewShotClassifier.load(path).eval()
    except Exception as error:  # noqa: BLE001 - an unknown class, or weights that do not fit its config
        first = (str(error).strip().splitlines() or [""])[0][:200]
        bad_argument(parser, "checkpoint", path, f"{WHAT} ({type(error).__name__}: {first})")


def main(argv=None) -> dict:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--data", default="auto", choices=["auto", "glyphs", "omniglot"])
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--eval-seed", type=int, default=12345)
    p.add_argument("--bn-episodes", type=int, default=200, help="recalibration episodes (0: evaluate as stored only)")
    p.add_argument("--train-ways", type=int, default=20, help="way of the recalibration episodes")
    p.add_argument("--train-queries", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--split", choices=["val", "test"], default="val",
                   help="alphabets to score: val (default: recalibration is a choice, made on validation) or test")
    args = p.parse_args(argv)
    # the checks that need no data, then the checkpoint, then the data: all before any evaluation
    for name, value, minimum in (
        ("--ways", args.ways, 2), ("--shots", args.shots, 1), ("--episodes", args.episodes, 1),
        ("--bn-episodes", args.bn_episodes, 0), ("--train-ways", args.train_ways, 2),
        ("--train-queries", args.train_queries, 1), ("--threads", args.threads, 1),
    ):  # fmt: skip
        check_at_least(p, name, value, minimum)
    torch.set_num_threads(args.threads)
    model = load_model(p, args.checkpoint)

    from mlcourse.data.sources import meta_splits
    from mlcourse.evaluate import evaluate

    splits = meta_splits(args.data, size=28, rotations=True)
    scored = splits.evaluation_set(args.split)
    check_episodes_fit(p, scored, args.ways, args.shots, QUERIES, split=f"the {splits.source} {args.split} split")
    if args.bn_episodes:
        check_episodes_fit(p, splits.train, args.train_ways, 1, args.train_queries, ways_name="--train-ways",
                           queries_name="--train-queries", split=f"the {splits.source} training split")
    c, h, w = scored.image_shape
    stored = copy.deepcopy(model.state_dict())
    try:  # one tiny episode: does the model take these images? (its state is put back after)
        model.predict(torch.rand(2, c, h, w), torch.tensor([0, 1]), torch.rand(2, c, h, w))
    except (RuntimeError, ValueError) as error:  # a shape mismatch: torch's RuntimeError or the model's ValueError
        first = (str(error).strip().splitlines() or [""])[0][:200]
        bad_argument(p, "checkpoint", args.checkpoint, f"a model for the {c}x{h}x{w} images of --data {args.data} ({first})")
    model.load_state_dict(stored)
    model.eval()

    def score():
        return evaluate(model.predict, scored, args.ways, args.shots, QUERIES, args.episodes, seed=args.eval_seed,
                        device="cpu", progress=False)

    before = score()
    model.recalibrate_batchnorm(splits.train, n_way=args.train_ways, k_shot=1, q_query=args.train_queries,
                                episodes=args.bn_episodes, device="cpu")
    after = score()
    from mlcourse.evaluate import compare

    paired = compare(after, before, names=("recalibrated", "as stored"))  # the same episodes
    text = lambda r: f"{100 * r.mean:.2f} ± {100 * r.ci95:.2f}%"  # noqa: E731
    print(f"{args.ways}-way {args.shots}-shot, {args.episodes} {args.split} episodes: as stored {text(before)}; "
          f"recalibrated {text(after)}\n{paired.verdict()}")
    return {"before": text(before), "after": text(after), "split": args.split, "paired": paired.as_dict()}


if __name__ == "__main__":
    main()
