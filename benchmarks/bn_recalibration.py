"""Test accuracy of a saved few-shot classifier before and after BatchNorm recalibration.

Usage::

    python -m mlcourse.bench protonet --data omniglot --bn-episodes 0 --checkpoint runs/protonet_raw.pt
    python benchmarks/bn_recalibration.py runs/protonet_raw.pt --data omniglot

Evaluates the checkpoint as stored (running statistics from augmented training batches), then
after :meth:`~mlcourse.fewshot.FewShotClassifier.recalibrate_batchnorm` on clean training
episodes, on the same test episodes as ``mlcourse.bench`` (same ``--eval-seed``).
"""

from __future__ import annotations

import argparse

import torch

from mlcourse.data.sources import meta_splits
from mlcourse.evaluate import evaluate
from mlcourse.fewshot import FewShotClassifier


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--data", default="auto", choices=["auto", "glyphs", "omniglot"])
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--eval-seed", type=int, default=12345)
    p.add_argument("--bn-episodes", type=int, default=200)
    p.add_argument("--train-ways", type=int, default=20, help="way of the recalibration episodes")
    p.add_argument("--train-queries", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = FewShotClassifier.load(args.checkpoint).eval()
    splits = meta_splits(args.data, size=28, rotations=True)

    def score() -> str:
        r = evaluate(model.predict, splits.test, args.ways, args.shots, 15, args.episodes, seed=args.eval_seed, device="cpu", progress=False)
        return f"{100 * r.mean:.2f} ± {100 * r.ci95:.2f}%"

    before = score()
    model.recalibrate_batchnorm(splits.train, n_way=args.train_ways, k_shot=1, q_query=args.train_queries, episodes=args.bn_episodes, device="cpu")
    after = score()
    print(f"{args.ways}-way {args.shots}-shot, {args.episodes} episodes: as stored {before}; recalibrated {after}")
    return {"before": before, "after": after}


if __name__ == "__main__":
    main()
