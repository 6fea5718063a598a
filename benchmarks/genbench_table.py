"""Few-shot generation results side by side, and paired differences over the same characters.

Usage::

    python benchmarks/genbench_table.py docs/runs/genbench/*-glyphs-val.json [--against finetune-gan]

Each file is the ``--json`` output of ``python -m mlcourse.genbench``. Prints one Markdown row
per run (every score's mean ± 95% CI over characters, the pooled FD, the NLL by support size
for likelihood models, steps and seconds) and, with ``--against METHOD``, the paired
difference of every other run from that one on each score, character by character
(:func:`mlcourse.evaluate.compare`). Runs scored on other characters (another fingerprint:
other split, seed, shots or number of characters) are refused for pairing, with their names.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlcourse.cli import ArgumentParser, fail  # noqa: E402

PROG = "benchmarks/genbench_table.py"
SCORES = ("fd", "precision", "recall", "recognisability", "diversity", "memorisation")


def load(paths: list[str]) -> list[dict]:
    runs = []
    for path in paths:
        try:
            run = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            fail(PROG, f"{path}: must be a readable JSON file from python -m mlcourse.genbench --json ({error})")
        if "summary" not in run or "scores" not in run:
            fail(PROG, f"{path}: not a genbench result (no 'summary' / 'scores')")
        run["_path"] = path
        runs.append(run)
    return runs


def table(runs: list[dict]) -> list[str]:
    head = "| method | split | K | " + " | ".join(SCORES) + " | pooled FD | NLL by support size (nats) | meta-training |"
    lines = [head, "|" + " --- |" * (len(SCORES) + 6)]
    for r in runs:
        s = r["summary"]
        nll = ", ".join(f"{k}: {v['mean']:.1f}" for k, v in r.get("nll_by_shots", {}).items()) or "–"
        cells = " | ".join(f"{s[k]['mean']:.3f} ± {s[k]['ci95']:.3f}" for k in SCORES)
        lines.append(f"| {r['method']} | {r['split']} | {r['shots']} | {cells} | {s['pooled_fd']:.2f} | {nll} | "
                     f"{r['meta_train_steps']:,} steps, {r['meta_train_seconds']:.0f} s, {r['threads']} thread(s) |")  # fmt: skip
    return lines


def paired(runs: list[dict], against: str) -> list[str]:
    from mlcourse.evaluate import compare

    base = [r for r in runs if r["method"] == against]
    if not base:
        fail(PROG, f"--against {against}: no run of that method among the files (have: {', '.join(r['method'] for r in runs)})")
    b = base[0]
    lines = [f"| A − {against} | " + " | ".join(SCORES) + " |", "|" + " --- |" * (len(SCORES) + 1)]
    for r in runs:
        if r is b:
            continue
        if r["fingerprint"] != b["fingerprint"]:
            fail(PROG, f"{r['_path']} and {b['_path']} were scored on different characters (fingerprints "
                       f"{r['fingerprint']} and {b['fingerprint']}): pair runs with the same split, seed, K and characters")  # fmt: skip
        cells = []
        for k in SCORES:
            c = compare(r["scores"][k], b["scores"][k])
            cells.append(f"{c.difference:+.3f} ± {c.ci95:.3f}" + ("" if c.significant else " (n.s.)"))
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    return lines


def paired_nll(runs: list[dict], against: str) -> list[str]:
    """Paired NLL differences (nats, A − against) at each support size, over the same characters and drawings."""
    from mlcourse.evaluate import compare

    base = [r for r in runs if r["method"] == against and "nll_by_shots" in r]
    if not base:
        fail(PROG, f"--nll-against {against}: no likelihood run of that method among the files")
    b = base[0]
    sizes = list(b["nll_by_shots"])
    lines = [f"| NLL, A − {against} (nats) | " + " | ".join(f"{k} images" for k in sizes) + " |", "|" + " --- |" * (len(sizes) + 1)]
    for r in runs:
        if r is b or "nll_by_shots" not in r:
            continue
        if r["fingerprint"] != b["fingerprint"]:
            fail(PROG, f"{r['_path']} and {b['_path']} were scored on different characters: pair runs with the same split, seed and characters")
        cells = []
        for k in sizes:
            c = compare(r["nll_by_shots"][k]["per_character"], b["nll_by_shots"][k]["per_character"])
            cells.append(f"{c.difference:+.2f} ± {c.ci95:.2f}" + ("" if c.significant else " (n.s.)"))
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> str:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", help="JSON files from python -m mlcourse.genbench --json")
    p.add_argument("--against", default=None, help="METHOD: paired differences of the other runs from this one")
    p.add_argument("--nll-against", default=None, help="METHOD: paired NLL differences of the likelihood runs from this one")
    args = p.parse_args(argv)
    runs = load(args.files)
    lines = table(runs)
    if args.against:
        lines += [""] + paired(runs, args.against)
    if args.nll_against:
        lines += [""] + paired_nll(runs, args.nll_against)
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
