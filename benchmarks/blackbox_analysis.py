"""Two measurements of the trained black-box models (chapter 06b, docs/results.md).

    python benchmarks/blackbox_analysis.py --runs docs/runs/selection --out docs/runs/blackbox/analysis.json

1. **Support order.** SNAIL and the LSTM learner read the support set as a sequence, so the
   order matters to them. On ``--episodes`` test episodes (the bench's episodes: eval seed
   12345), :func:`mlcourse.blackbox.support_order_effect` scores each query with the support
   set in the sampler's class-by-class order and in ``--orders`` random orders.
2. **More updates than trained with.** The learned optimiser was meta-trained unrolling 5
   updates; at test time it is run for 1..20, beside plain SGD (step 0.4, the gate's starting
   value) from the same learned initialisation, on the same episodes.

Models are the checkpoints the validation search kept (``confirm-*.pt`` in each method's
folder under ``--runs``); nothing here chooses a setting.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from mlcourse.cli import ArgumentParser, check_at_least, fail  # noqa: E402

PROG = "benchmarks/blackbox_analysis.py"


def checkpoint(runs: Path, method: str) -> Path:
    found = sorted((runs / f"{method}-omniglot").glob("confirm-*.pt"))
    if not found:
        fail(PROG, f"--runs {runs}: no confirm-*.pt in {method}-omniglot (run benchmarks/select_on_val.py {method} first)")
    return found[0]


@torch.no_grad()
def steps_curve(model, episodes, steps_list, sgd_lr: float) -> dict:
    """Query accuracy after k learned updates and after k SGD steps from the same θ_0."""
    import torch.nn.functional as F

    from mlcourse.optim.inner_loop import adapt, functional_forward, named_params

    learned, sgd = {k: [] for k in steps_list}, {k: [] for k in steps_list}
    for ep in episodes:
        for k in steps_list:
            fast = model.adapt(ep.support_x, ep.support_y, k, keep_graph=False) if k else dict(named_params(model.net))
            learned[k].append((functional_forward(model.net, fast, {}, ep.query_x).argmax(-1) == ep.query_y).float().mean().item())
            params = {n: p.detach() for n, p in named_params(model.net).items()}
            plain = adapt(model.net, params, {}, ep.support_x, ep.support_y, steps=k, lr=sgd_lr, first_order=True, loss_fn=F.cross_entropy)
            sgd[k].append((functional_forward(model.net, plain, {}, ep.query_x).argmax(-1) == ep.query_y).float().mean().item())

    def summary(d):
        from mlcourse.evaluate import mean_confidence_interval as mean_ci

        out = {}
        for k, accs in d.items():
            m, ci = mean_ci(accs)
            out[str(k)] = {"accuracy": m, "ci95": ci}
        return out

    return {"learned": summary(learned), "sgd": summary(sgd), "sgd_lr": sgd_lr}


def main(argv=None) -> dict:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default="docs/runs/selection", help="folder with <method>-omniglot/confirm-*.pt")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--episodes", type=int, default=200, help="test episodes (default 200)")
    p.add_argument("--orders", type=int, default=8, help="random support orders per episode (default 8)")
    p.add_argument("--steps", default="0,1,2,5,10,20", help="test-time updates of the learned optimiser (default 0,1,2,5,10,20)")
    args = p.parse_args(argv)
    check_at_least(p, "--episodes", args.episodes, 1)
    check_at_least(p, "--orders", args.orders, 2)
    try:
        steps_list = [int(s) for s in args.steps.split(",")]
        assert all(s >= 0 for s in steps_list)
    except (ValueError, AssertionError):
        from mlcourse.cli import bad_argument

        bad_argument(p, "--steps", args.steps, "whole numbers >= 0 separated by commas")
    from mlcourse.blackbox import support_order_effect
    from mlcourse.data.episodes import EpisodeDataset
    from mlcourse.data.sources import meta_splits
    from mlcourse.fewshot import FewShotClassifier

    torch.set_num_threads(1)
    runs = Path(args.runs)
    splits = meta_splits("omniglot", size=28, rotations=False)
    episodes = list(EpisodeDataset(splits.test, 5, 1, 15, args.episodes, seed=12345))  # the bench's episodes
    out = {"data": splits.source, "split": "test", "ways": 5, "shots": 1, "queries": 15, "episodes": args.episodes,
           "eval_seed": 12345, "order": {}, "threads": 1}  # fmt: skip
    for method in ("snail", "lstm-learner"):
        start = time.perf_counter()
        model = FewShotClassifier.load(checkpoint(runs, method))
        out["order"][method] = {**support_order_effect(model, episodes, orders=args.orders), "seconds": time.perf_counter() - start}
        print(method, out["order"][method], file=sys.stderr, flush=True)
    start = time.perf_counter()
    model = FewShotClassifier.load(checkpoint(runs, "learned-opt"))
    out["learned_opt_steps"] = {**steps_curve(model, episodes[: max(1, args.episodes // 2)], steps_list, model.i0),
                                "trained_steps": model.inner_steps, "episodes": max(1, args.episodes // 2),
                                "seconds": time.perf_counter() - start}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
