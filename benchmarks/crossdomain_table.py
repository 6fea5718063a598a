"""Chapter 12's runs: meta-train on one domain, score (and adapt) on another; paired tables.

Usage::

    python benchmarks/crossdomain_table.py list                 # every run, its command line, done or not
    python benchmarks/crossdomain_table.py run NAME [NAME ...]  # run these (one thread each), write their JSONs
    python benchmarks/crossdomain_table.py table                # the Markdown tables from the committed JSONs

Every run is one ``python -m mlcourse.bench`` or ``python -m mlcourse.genbench`` command line
(:data:`RUNS`); its ``--json`` output goes to ``docs/runs/crossdomain/NAME.json``. The tables
pair runs that met the same episodes (classification: 600 test episodes, eval seed 12345)
or the same characters (generation: eval seed 12345, K = 4), and refuse any pair whose
fingerprints differ (:func:`mlcourse.crossdomain.paired_row`).

What was decided before any test number was seen, and why:

* **ProtoNet's adaptation**: AdaBN (Li et al., 2017), the BatchNorm running statistics
  recomputed on 200 episodes of the *target's* training images (``--target-bn 200``: the
  number of episodes the bench already uses to recompute them on the source). No weight
  changes and no labels: the target's images are dealt into random pseudo-classes first
  (:func:`mlcourse.crossdomain.unlabelled`). Checked on the target's validation split before test.
* **MAML's adaptation**: more fine-tuning steps on the support set at test time
  (``--test-inner-steps``), 10 (the default) or 30, whichever is better on the target's
  validation split (Omniglot: Balinese; digits: the validation third of each digit's images).
* **The Neural Statistician's adaptation**: a short fine-tune on the target's training
  characters (``--target-steps``), 0 or 1,000 steps, chosen on the target's validation
  characters by pooled FD. Both statisticians (glyphs, Omniglot) train for the same 6,000
  steps without a time budget, so their difference is the domain, not the training length.
  The fine-tune groups the target's training images by character (it trains on sets of one
  character), so on the digits, whose ten classes are also the scored ones, it would train on
  the test classes themselves: it is used for glyphs -> Omniglot only (disjoint alphabets).
* **FIGR** is scored Omniglot -> digits only, from a 900 s Omniglot checkpoint (its scoring
  adapts a GAN for 300 steps per character: 50 Omniglot test characters cost about 1,000 s
  of a loaded CPU per row, which did not fit this session beside the rest); its adaptation is
  its own 300 steps on the support set, measured against none.
* The glyph and Omniglot classifiers were trained with the bench's defaults and wall-clock
  budgets (ProtoNet 600 s, MAML 1,200 s) on a machine shared with other jobs, so they reached
  different step counts (ProtoNet: 933 glyph steps, 2,793 Omniglot steps; MAML: 338 and 834):
  each drop mixes the domain with a shorter training. A step-matched glyph ProtoNet (2,793
  steps, no budget) was started and stopped unfinished: at a load average of 13-15 on 2 cores
  it would not have finished with time left to score it.
* Episodes: 600 for every test row that pairs with an Omniglot in-domain row (the bench's
  default, eval seed 12345); 200 for validation rows (they only rank two settings); 300 for
  the digits' test rows (all paired among themselves).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlcourse.cli import ArgumentParser, fail  # noqa: E402

PROG = "benchmarks/crossdomain_table.py"
OUT = ROOT / "docs" / "runs" / "crossdomain"

PROTO_OMNI = ["protonet", "--checkpoint", "runs/ckpt/protonet-omniglot-1shot.pt"]
# the bench's defaults (600 s budget) for both ProtoNets, 1200 s for both MAMLs
PROTO_GLYPHS = ["protonet", "--train-data", "glyphs", "--checkpoint", "runs/ckpt/protonet-glyphs-1shot.pt"]
MAML_OMNI = ["maml", "--checkpoint", "runs/ckpt/maml-omniglot-1shot.pt"]
MAML_GLYPHS = ["maml", "--train-data", "glyphs", "--checkpoint", "runs/ckpt/maml-glyphs-1shot.pt"]
# the two statisticians: the same 6,000 steps without a time budget (step-matched; the committed
# in-domain row, docs/runs/genbench/omniglot, had 35,502 steps in 900 s on a quieter machine)
STAT_GLYPHS = ["statistician", "--train-data", "glyphs", "--steps", "6000", "--time-budget", "0",
               "--checkpoint", "runs/xdomain/statistician-glyphs-6000.pt"]
STAT_OMNI = ["statistician", "--train-data", "omniglot", "--steps", "6000", "--time-budget", "0",
             "--checkpoint", "runs/xdomain/statistician-omniglot-6000.pt"]
FIGR_OMNI = ["reptile-gan", "--train-data", "omniglot", "--checkpoint", "runs/xdomain/reptile-gan-omniglot.pt"]

#: name -> (tool, arguments); the JSON is docs/runs/crossdomain/NAME.json
RUNS: dict[str, tuple[str, list[str]]] = {
    # the glyph ProtoNet on its own glyph test episodes (the run that trained it): is it a trained model?
    "protonet-glyphs-test": ("bench", ["protonet", "--data", "glyphs", "--checkpoint", "runs/ckpt/protonet-glyphs-1shot.pt"]),
    # glyphs -> Omniglot, classification (600 test episodes of Japanese (katakana), Sanskrit, Tagalog)
    "protonet-omniglot-test": ("bench", [*PROTO_OMNI, "--data", "omniglot"]),
    "protonet-glyphs-omniglot-val": ("bench", [*PROTO_GLYPHS, "--data", "omniglot", "--split", "val", "--episodes", "200"]),
    "protonet-glyphs-omniglot-val-targetbn": ("bench", [*PROTO_GLYPHS, "--data", "omniglot", "--split", "val", "--target-bn", "200", "--episodes", "200"]),
    "protonet-glyphs-omniglot-test": ("bench", [*PROTO_GLYPHS, "--data", "omniglot"]),
    "protonet-glyphs-omniglot-test-targetbn": ("bench", [*PROTO_GLYPHS, "--data", "omniglot", "--target-bn", "200"]),
    "maml-omniglot-test": ("bench", [*MAML_OMNI, "--data", "omniglot"]),
    "maml-glyphs-omniglot-val-steps10": ("bench", [*MAML_GLYPHS, "--data", "omniglot", "--split", "val", "--test-inner-steps", "10", "--episodes", "200"]),
    "maml-glyphs-omniglot-val-steps30": ("bench", [*MAML_GLYPHS, "--data", "omniglot", "--split", "val", "--test-inner-steps", "30", "--episodes", "200"]),
    "maml-glyphs-omniglot-test": ("bench", [*MAML_GLYPHS, "--data", "omniglot", "--test-inner-steps", "10"]),
    "maml-glyphs-omniglot-test-steps30": ("bench", [*MAML_GLYPHS, "--data", "omniglot", "--test-inner-steps", "30"]),
    # Omniglot -> digits, classification (600 episodes of the test third of every digit's images)
    "pixel-nn-digits-test": ("bench", ["pixel-nn", "--data", "digits", "--train-data", "omniglot", "--episodes", "300"]),
    "protonet-omniglot-digits-val": ("bench", [*PROTO_OMNI, "--train-data", "omniglot", "--data", "digits", "--split", "val", "--episodes", "200"]),
    "protonet-omniglot-digits-val-targetbn": ("bench", [*PROTO_OMNI, "--train-data", "omniglot", "--data", "digits", "--split", "val",
                                                        "--target-bn", "200", "--episodes", "200"]),
    "protonet-omniglot-digits-test": ("bench", [*PROTO_OMNI, "--train-data", "omniglot", "--data", "digits", "--episodes", "300"]),
    "protonet-omniglot-digits-test-targetbn": ("bench", [*PROTO_OMNI, "--train-data", "omniglot", "--data", "digits", "--target-bn", "200", "--episodes", "300"]),
    "maml-omniglot-digits-val-steps10": ("bench", [*MAML_OMNI, "--train-data", "omniglot", "--data", "digits", "--split", "val",
                                                   "--test-inner-steps", "10", "--episodes", "200"]),
    "maml-omniglot-digits-val-steps30": ("bench", [*MAML_OMNI, "--train-data", "omniglot", "--data", "digits", "--split", "val",
                                                   "--test-inner-steps", "30", "--episodes", "200"]),
    "maml-omniglot-digits-test": ("bench", [*MAML_OMNI, "--train-data", "omniglot", "--data", "digits", "--test-inner-steps", "10", "--episodes", "300"]),
    "maml-omniglot-digits-test-steps30": ("bench", [*MAML_OMNI, "--train-data", "omniglot", "--data", "digits", "--test-inner-steps", "30", "--episodes", "300"]),
    # glyphs -> Omniglot, generation (50 test characters, K = 4; the in-domain row is
    # docs/runs/genbench/omniglot/statistician-omniglot-test.json, same characters)
    "statistician-glyphs-omniglot-val": ("genbench", [*STAT_GLYPHS, "--data", "omniglot", "--split", "val", "--characters", "24"]),
    "statistician-glyphs-omniglot-val-target1000": ("genbench", [*STAT_GLYPHS, "--data", "omniglot", "--split", "val", "--characters", "24",
                                                                 "--target-steps", "1000"]),
    "statistician-glyphs-omniglot-test": ("genbench", [*STAT_GLYPHS, "--data", "omniglot"]),
    "statistician-glyphs-omniglot-test-target1000": ("genbench", [*STAT_GLYPHS, "--data", "omniglot", "--target-steps", "1000"]),
    "statistician-omniglot-test": ("genbench", [*STAT_OMNI, "--data", "omniglot"]),
    # Omniglot -> digits, generation (the 10 digits, K = 4, scored in a Conv-4 trained on the
    # digits' adaptation third): no digits-trained generator exists, so the references are
    # the real-vs-real floor and the jittered copy of the support set
    "real-digits-test": ("genbench", ["real", "--train-data", "omniglot", "--data", "digits"]),
    "jitter-digits-test": ("genbench", ["jitter", "--train-data", "omniglot", "--data", "digits"]),
    "statistician-omniglot-digits-test": ("genbench", [*STAT_OMNI, "--data", "digits"]),
    "reptile-gan-omniglot-digits-test": ("genbench", [*FIGR_OMNI, "--data", "digits"]),
    "reptile-gan-omniglot-digits-test-adapt0": ("genbench", [*FIGR_OMNI, "--data", "digits", "--adapt-steps", "0"]),
}

#: the paired rows of the tables: (label, A, B, score); "A - B" on the same episodes/characters
PAIRS = [
    ("glyphs→Omniglot, ProtoNet: the drop (glyph-trained − Omniglot-trained)", "protonet-glyphs-omniglot-test", "protonet-omniglot-test", "accuracy"),
    ("glyphs→Omniglot, ProtoNet: what AdaBN recovers (with − without)", "protonet-glyphs-omniglot-test-targetbn", "protonet-glyphs-omniglot-test", "accuracy"),
    ("glyphs→Omniglot, ProtoNet: the gap left after AdaBN", "protonet-glyphs-omniglot-test-targetbn", "protonet-omniglot-test", "accuracy"),
    ("glyphs→Omniglot, ProtoNet: AdaBN on validation (Balinese)", "protonet-glyphs-omniglot-val-targetbn", "protonet-glyphs-omniglot-val", "accuracy"),
    ("glyphs→Omniglot, MAML: the drop (10 test steps each)", "maml-glyphs-omniglot-test", "maml-omniglot-test", "accuracy"),
    ("glyphs→Omniglot, MAML: 30 test steps − 10 on validation (Balinese)", "maml-glyphs-omniglot-val-steps30", "maml-glyphs-omniglot-val-steps10", "accuracy"),
    ("glyphs→Omniglot, MAML: 30 test steps − 10 on test", "maml-glyphs-omniglot-test-steps30", "maml-glyphs-omniglot-test", "accuracy"),
    ("glyphs→Omniglot, MAML: the gap left with 30 steps", "maml-glyphs-omniglot-test-steps30", "maml-omniglot-test", "accuracy"),
    ("Omniglot→digits, ProtoNet − pixel 1-NN", "protonet-omniglot-digits-test", "pixel-nn-digits-test", "accuracy"),
    ("Omniglot→digits, ProtoNet: AdaBN on validation", "protonet-omniglot-digits-val-targetbn", "protonet-omniglot-digits-val", "accuracy"),
    ("Omniglot→digits, ProtoNet: what AdaBN recovers", "protonet-omniglot-digits-test-targetbn", "protonet-omniglot-digits-test", "accuracy"),
    ("Omniglot→digits, ProtoNet + AdaBN − pixel 1-NN", "protonet-omniglot-digits-test-targetbn", "pixel-nn-digits-test", "accuracy"),
    ("Omniglot→digits, MAML (10 steps) − pixel 1-NN", "maml-omniglot-digits-test", "pixel-nn-digits-test", "accuracy"),
    ("Omniglot→digits, MAML: 30 test steps − 10 on validation", "maml-omniglot-digits-val-steps30", "maml-omniglot-digits-val-steps10", "accuracy"),
    ("Omniglot→digits, MAML: 30 test steps − 10 on test", "maml-omniglot-digits-test-steps30", "maml-omniglot-digits-test", "accuracy"),
    ("Omniglot→digits, MAML (30 steps) − pixel 1-NN", "maml-omniglot-digits-test-steps30", "pixel-nn-digits-test", "accuracy"),
]
GEN_PAIRS = [
    ("glyphs→Omniglot, Statistician: the drop (glyph-trained − Omniglot-trained)", "statistician-glyphs-omniglot-test",
     "statistician-omniglot-test"),
    ("glyphs→Omniglot, Statistician: glyph-trained − the committed 35,502-step Omniglot one", "statistician-glyphs-omniglot-test",
     "../genbench/omniglot/statistician-omniglot-test"),
    ("glyphs→Omniglot, Statistician: 1,000 target steps − none, on validation", "statistician-glyphs-omniglot-val-target1000",
     "statistician-glyphs-omniglot-val"),
    ("glyphs→Omniglot, Statistician: what 1,000 target steps recover", "statistician-glyphs-omniglot-test-target1000",
     "statistician-glyphs-omniglot-test"),
    ("glyphs→Omniglot, Statistician: the gap left after 1,000 target steps", "statistician-glyphs-omniglot-test-target1000",
     "statistician-omniglot-test"),
    ("glyphs→Omniglot, Statistician + 1,000 target steps − the committed 35,502-step Omniglot one",
     "statistician-glyphs-omniglot-test-target1000", "../genbench/omniglot/statistician-omniglot-test"),
    ("Omniglot→digits, Statistician − jittered copy", "statistician-omniglot-digits-test", "jitter-digits-test"),

    ("Omniglot→digits, FIGR (300 adaptation steps) − jittered copy", "reptile-gan-omniglot-digits-test", "jitter-digits-test"),
    ("Omniglot→digits, FIGR: 300 adaptation steps − none", "reptile-gan-omniglot-digits-test", "reptile-gan-omniglot-digits-test-adapt0"),
]  # fmt: skip
GEN_SCORES = ("fd", "recognisability", "precision", "recall", "diversity", "memorisation")


def command(name: str) -> list[str]:
    tool, args = RUNS[name]
    return [sys.executable, "-m", f"mlcourse.{tool}", *args, "--json", "--quiet", "--threads", "1"]


def load(name: str, folder: Path = OUT) -> dict | None:
    path = (folder / f"{name}.json").resolve()
    return json.loads(path.read_text()) if path.exists() else None


def run(names: list[str], force: bool = False, folder: Path = OUT) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = folder / f"{name}.json"
        if path.exists() and not force:
            print(f"{name}: already done ({path.relative_to(ROOT) if path.is_relative_to(ROOT) else path})", file=sys.stderr)
            continue
        start = time.perf_counter()
        print(f"{name}: {' '.join(command(name)[1:])}", file=sys.stderr, flush=True)
        done = subprocess.run(command(name), cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if done.returncode != 0:
            fail(PROG, f"{name}: the command failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
        result = json.loads(done.stdout)
        result["command"] = "python " + " ".join(command(name)[1:])
        result["wall_seconds"] = time.perf_counter() - start
        path.write_text(json.dumps(result) + "\n")
        print(f"{name}: done in {result['wall_seconds']:.0f} s", file=sys.stderr, flush=True)


def _load(run: dict) -> str:
    value = run.get("load_average")
    return "–" if value is None else f"{value:.1f}"


def _fmt_points(x: float) -> str:
    return f"{100 * x:+.2f}"


def classification_rows(folder: Path = OUT) -> list[str]:
    from mlcourse.crossdomain import paired_row

    lines = ["| run | trained on | scored on | split | accuracy (95% CI) | test steps / AdaBN | meta-training | load |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for name, (tool, _) in RUNS.items():
        r = load(name, folder)
        if tool != "bench" or r is None:
            continue
        steps = r.get("checkpoint_train_seconds") or r.get("meta_train_seconds")
        adapt = f"{r['test_inner_steps']} steps" if r.get("test_inner_steps") is not None else ""
        adapt += (" / " if adapt else "") + (f"AdaBN {r['target_bn']} episodes" if r.get("target_bn") else "–")
        train = f"{r['meta_train_steps']:,} steps, {steps:.0f} s" if steps else (f"{r['meta_train_steps']:,} steps" if r["meta_train_steps"] else "none")
        lines.append(f"| {name} | {r.get('train_data', r['data'])} | {r['data']} | {r['split']} | {100 * r['accuracy']:.2f} ± {100 * r['ci95']:.2f} | "
                     f"{adapt} | {train} | {_load(r)} |")  # fmt: skip
    lines += ["", "| paired difference (A − B, same episodes) | A | B | A − B (points, 95% CI) | A higher / lower / tied | p |",
              "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for label, a, b, score in PAIRS:
        ra, rb = load(a, folder), load(b, folder)
        if ra is None or rb is None:
            continue
        row = paired_row(ra, rb, score, names=(a, b))
        lines.append(f"| {label} | {100 * row['mean_a']:.2f} | {100 * row['mean_b']:.2f} | "
                     f"{_fmt_points(row['difference'])} ± {100 * row['ci95']:.2f} | {row['wins']} / {row['losses']} / {row['ties']} | "
                     f"{row['p_value']:.3g} |")  # fmt: skip
    return lines


def generation_rows(folder: Path = OUT) -> list[str]:
    from mlcourse.crossdomain import paired_row

    lines = ["| run | trained on | scored on | split | chars | " + " | ".join(GEN_SCORES) + " | pooled FD | meta-training | target steps | load |",
             "|" + " --- |" * (len(GEN_SCORES) + 9)]  # fmt: skip
    for name, (tool, _) in RUNS.items():
        r = load(name, folder)
        if tool != "genbench" or r is None:
            continue
        s = r["summary"]
        cells = " | ".join(f"{s[k]['mean']:.3f} ± {s[k]['ci95']:.3f}" for k in GEN_SCORES)
        lines.append(f"| {name} | {r['train_data']} | {r['data']} | {r['split']} | {r['characters']} | {cells} | {s['pooled_fd']:.2f} | "
                     f"{r['meta_train_steps']:,} steps, {r['meta_train_seconds']:.0f} s | {r.get('target_steps_done', 0)} | "
                     f"{_load(r)} |")  # fmt: skip
    lines += ["", "| paired difference (A − B, same characters) | " + " | ".join(GEN_SCORES) + " |",
              "|" + " --- |" * (len(GEN_SCORES) + 1)]
    for label, a, b in GEN_PAIRS:
        ra, rb = load(a, folder), load(b, folder)
        if ra is None or rb is None:
            continue
        cells = []
        for score in GEN_SCORES:
            row = paired_row(ra, rb, score, names=(a, b))
            cells.append(f"{row['difference']:+.3f} ± {row['ci95']:.3f}" + ("" if abs(row["difference"]) > row["ci95"] else " (n.s.)"))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> str:
    p = ArgumentParser(prog=PROG, description="Chapter 12's cross-domain runs and their paired tables.")
    p.add_argument("action", choices=["list", "run", "table"])
    p.add_argument("names", nargs="*", help="runs to execute (with 'run')")
    p.add_argument("--force", action="store_true", help="run again even when the JSON exists")
    p.add_argument("--folder", default=str(OUT), help="where the JSONs are (default docs/runs/crossdomain)")
    args = p.parse_args(argv)
    folder = Path(args.folder)
    unknown = [n for n in args.names if n not in RUNS]
    if unknown:
        fail(PROG, f"{unknown[0]}: no such run (see: {PROG} list)")
    if args.action == "run":
        if not args.names:
            fail(PROG, "run: name the runs to execute (see: list)")
        run(args.names, args.force, folder)
        return ""
    if args.action == "list":
        text = "\n".join(f"{'done' if load(n, folder) else 'todo'}  {n}: python {' '.join(command(n)[1:])}" for n in RUNS)
    else:
        text = "\n".join(["### Classification (5-way 1-shot)", "", *classification_rows(folder), "",
                          "### Generation (K = 4)", "", *generation_rows(folder)])  # fmt: skip
    print(text)
    return text


if __name__ == "__main__":
    main()
