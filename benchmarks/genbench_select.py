"""Choose a generation method's adaptation steps on validation characters, then score test once.

Usage::

    python benchmarks/genbench_select.py reptile-gan --data glyphs --adapt-steps 10,30,100,300 \\
        --out docs/runs/genbench/glyphs [--final] [-- --threads 1 ...]

One model is meta-trained (``python -m mlcourse.genbench METHOD --split val --checkpoint``,
saved in ``--out`` under a gitignored ``*.pt`` name) and scored on the *validation*
characters once per ``--adapt-steps`` value: adaptation steps are an evaluation setting, so
every value shares the trained model. The choice is the value with the best validation
criterion (``--criterion``):

* ``fd``: the mean per-character Fréchet distance (lower is better): GAN rows;
* ``nll``: the conditional NLL of held-out drawings given ``--nll-at`` support images (lower
  is better): likelihood rows.

With ``--final`` the chosen value (and only that one) is scored on the *test* characters,
from the same checkpoint. A method without adaptation steps (the Neural Statistician, the
reference rows) passes no ``--adapt-steps``: it gets one validation and one test run.

Every run's JSON is written to ``--out`` as ``METHOD-DATA-val[-adaptN].json`` and
``METHOD-DATA-test.json``; a stopped selection resumes (finished runs are read back, never
rerun). ``METHOD-DATA-selection.md`` lists the candidates, the criterion, and the paired
difference of the chosen value from the runner-up on the same validation characters.
Arguments after ``--`` go to every genbench command.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlcourse.cli import ArgumentParser, bad_argument, fail  # noqa: E402

PROG = "benchmarks/genbench_select.py"


def parse(argv):
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    p = ArgumentParser(prog=PROG, description="Choose adaptation steps on validation characters; score test once.")
    p.add_argument("method")
    p.add_argument("--data", default="glyphs", choices=["glyphs", "omniglot"])
    p.add_argument("--adapt-steps", default=None, help="candidate values separated by commas, like 10,30,100")
    p.add_argument("--criterion", default=None, choices=["fd", "nll"], help="fd (default) or nll (likelihood rows)")
    p.add_argument("--nll-at", default="4", help="support size of the nll criterion (default 4)")
    p.add_argument("--out", required=True, help="folder for the JSONs, the checkpoint and the selection summary")
    p.add_argument("--val-characters", type=int, default=None,
                   help="characters scored on validation when the split has fewer than genbench's default 50 "
                        "(the Omniglot subsets' one validation alphabet has 24)")
    p.add_argument("--final", action="store_true", help="score the chosen value on the test characters (once)")
    args = p.parse_args(argv)
    from mlcourse.genbench import ADAPTING, METHODS

    if args.method not in METHODS:
        bad_argument(PROG, "METHOD", args.method, "one of " + ", ".join(METHODS))
    values = []
    if args.adapt_steps:
        try:
            values = sorted({int(v) for v in args.adapt_steps.split(",")})
        except ValueError:
            bad_argument(PROG, "--adapt-steps", args.adapt_steps, "integers separated by commas, like 10,30,100")
        if values[0] < 0:
            bad_argument(PROG, "--adapt-steps", args.adapt_steps, "values of at least 0")
        if args.method not in ADAPTING:
            fail(PROG, f"--adapt-steps: {args.method} does not adapt by training; the option is for " + ", ".join(ADAPTING))
    return args, values, extra


def run(cmd: list[str], path: Path) -> dict:
    if path.exists():
        return json.loads(path.read_text())
    print("+", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        fail(PROG, f"{' '.join(cmd)} exited with {done.returncode}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    path.write_text(json.dumps(result) + "\n")
    return result


def criterion_value(result: dict, criterion: str, nll_at: str) -> float:
    if criterion == "nll":
        return result["nll_by_shots"][nll_at]["mean"]
    return result["summary"]["fd"]["mean"]


def per_character(result: dict, criterion: str, nll_at: str) -> list[float]:
    if criterion == "nll":
        return result["nll_by_shots"][nll_at]["per_character"]
    return result["scores"]["fd"]


def main(argv=None) -> dict:
    args, values, extra = parse(sys.argv[1:] if argv is None else argv)
    from mlcourse.evaluate import compare

    criterion = args.criterion or "fd"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{args.method}-{args.data}"
    base = [sys.executable, "-m", "mlcourse.genbench", args.method, "--data", args.data, "--json", "--quiet",
            "--checkpoint", str(out / f"{stem}.pt"), *extra]  # fmt: skip
    candidates = {}
    for v in values or [None]:
        name = f"{stem}-val" + ("" if v is None else f"-adapt{v}")
        cmd = base + ["--split", "val"] + ([] if v is None else ["--adapt-steps", str(v)])
        if args.val_characters:
            cmd += ["--characters", str(args.val_characters)]
        candidates[v] = run(cmd, out / f"{name}.json")
    ranked = sorted(candidates, key=lambda v: criterion_value(candidates[v], criterion, args.nll_at))
    chosen = ranked[0]
    lines = [f"# {args.method} on {args.data}: adaptation steps chosen on validation", "",
             f"Criterion: {'mean per-character FD' if criterion == 'fd' else f'NLL given {args.nll_at} images'} "
             "on the validation characters (lower is better). Command: "
             f"`python {PROG} {' '.join(sys.argv[1:] if argv is None else argv)}`", "",
             "| adapt steps | criterion | FD | recognisability | memorisation | meta-training |", "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for v in ranked:
        r, s = candidates[v], candidates[v]["summary"]
        lines.append(f"| {'-' if v is None else v}{' (chosen)' if v == chosen else ''} | "
                     f"{criterion_value(r, criterion, args.nll_at):.2f} | {s['fd']['mean']:.2f} ± {s['fd']['ci95']:.2f} | "
                     f"{100 * s['recognisability']['mean']:.1f} ± {100 * s['recognisability']['ci95']:.1f}% | "
                     f"{s['memorisation']['mean']:.3f} ± {s['memorisation']['ci95']:.3f} | "
                     f"{r['meta_train_steps']} steps, {r['meta_train_seconds']:.0f} s |")  # fmt: skip
    if len(ranked) > 1:
        a, b = ranked[0], ranked[1]
        c = compare(per_character(candidates[a], criterion, args.nll_at), per_character(candidates[b], criterion, args.nll_at))
        lines += ["", f"Chosen minus runner-up ({b}), paired over the same characters: "
                  f"{c.difference:+.3f} ± {c.ci95:.3f} (p = {c.p_value:.3g})."]  # fmt: skip
    result = {"method": args.method, "data": args.data, "criterion": criterion, "chosen": chosen,
              "validation": {str(v): criterion_value(candidates[v], criterion, args.nll_at) for v in candidates}}  # fmt: skip
    if args.final:
        cmd = base + ["--split", "test"] + ([] if chosen is None else ["--adapt-steps", str(chosen)])
        test = run(cmd, out / f"{stem}-test.json")
        result["test"] = criterion_value(test, criterion, args.nll_at)
        lines += ["", f"Test, scored once with the chosen value: {result['test']:.2f} ({stem}-test.json)."]
    (out / f"{stem}-selection.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
