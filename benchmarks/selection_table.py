"""The before/after table of the re-selection on validation (docs/results.md).

Usage::

    python benchmarks/selection_table.py [--runs docs/runs/selection] [--data omniglot]

Reads every ``<method>-<data>/summary.json`` written by ``benchmarks/select_on_val.py`` and
prints one Markdown row per method: the earlier figure (defaults chosen by looking at test
episodes, trained on all five small1 alphabets; quoted from the earlier docs/results.md, the
runs that produced them are described there), the validation accuracy of the chosen
setting, and its test accuracy, scored once, with the steps and seconds it trained for.
The two test figures are not a paired comparison (different training alphabets, threads,
steps), so no difference is printed between them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Earlier figures on the Omniglot subsets, 5-way 1-shot, 600 test episodes (docs/results.md
# before the validation split): (accuracy %, CI %, how it was trained).
BEFORE = {
    "protonet": (95.40, 0.43, "13,000 steps, 598 s, 2 threads, idle"),
    "maml": (93.09, 0.53, "2,643 steps, 1,200 s, 2 threads, idle"),
    "fomaml": (81.64, 0.83, "64 filters, 1,269 steps, 1,200 s, 1 thread"),
    "reptile": (82.52, 0.68, "64 filters, 1,385 steps, 1,200 s, 1 thread"),
    "metasgd": (91.27, 0.58, "2,315 steps, 1,200 s, 1 thread"),
    "anil": (92.07, 0.60, "3,967 steps, 1,200 s, 1 thread"),
}
ORDER = ["protonet", "protonet-cosine", "matching", "matching-fce", "relation", "siamese",
         "maml", "fomaml", "anil", "metasgd", "reptile"]  # fmt: skip


def candidate_text(candidate: dict) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in candidate.items()) or "today's defaults"


def rows(runs: Path, data: str) -> list[str]:
    out = ["| method | before: test-selected defaults | searched on validation | chosen | validation | **test, scored once** | final training |",
           "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for method in ORDER:
        path = runs / f"{method}-{data}" / "summary.json"
        if not path.exists():
            continue
        s = json.loads(path.read_text())
        before = BEFORE.get(method)
        before_text = f"{before[0]:.2f} ± {before[1]:.2f}% ({before[2]})" if before else "not measured here"
        ranked = sum(1 for r in s["runs"] if r["stage"] == "rank")
        search = (f"{ranked} candidates ranked at {s['fraction']:g} of the budget, best {s['top']} confirmed"
                  if ranked else "defaults only (one run)")
        confirm = max((r for r in s["runs"] if r["stage"] == "confirm" and r["candidate"] == s["chosen"]),
                      key=lambda r: r["accuracy"])  # fmt: skip
        test = s.get("test")
        test_text = f"**{100 * test['accuracy']:.2f} ± {100 * test['ci95']:.2f}%**" if test else "(not scored yet)"
        out.append(f"| {method} | {before_text} | {search} | {candidate_text(s['chosen'])} | "
                   f"{100 * s['chosen_val_accuracy']:.2f} ± {100 * s['chosen_val_ci95']:.2f}% | {test_text} | "
                   f"{confirm['steps']:,} steps, {confirm['seconds']:,.0f} s, {confirm['threads']} thread(s) |")  # fmt: skip
    return out


# Pairs compared on the test episodes (every final test run uses the same 600 episodes).
PAIRS = [("protonet", "matching-fce"), ("protonet", "protonet-cosine"), ("matching-fce", "matching"),
         ("protonet", "relation"), ("matching", "relation"), ("relation", "siamese"), ("protonet", "maml"),
         ("maml", "anil"), ("anil", "metasgd"), ("maml", "fomaml"), ("maml", "reptile"), ("fomaml", "reptile")]  # fmt: skip


def paired(runs: Path, data: str) -> list[str]:
    """Paired differences on the test episodes between the chosen models (each scored once)."""
    from mlcourse.evaluate import compare

    finals = {}
    for method in ORDER:
        found = sorted((runs / f"{method}-{data}").glob("final-test-*.json"))
        if found:
            finals[method] = json.loads(found[0].read_text())
    out = ["| A − B (test episodes) | difference, points | 95% CI | p (sign flip) | A better / worse / tied |",
           "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for a, b in PAIRS:
        if a in finals and b in finals:
            c = compare(finals[a], finals[b], names=(a, b))
            p_text = "≤ 0.0001" if c.p_value <= 1e-4 else f"{c.p_value:.2g}"
            out.append(f"| {a} − {b} | {100 * c.difference:+.2f} | ± {100 * c.ci95:.2f} | {p_text} | "
                       f"{c.wins} / {c.losses} / {c.ties} |")  # fmt: skip
    return out


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default="docs/runs/selection")
    p.add_argument("--data", default="omniglot")
    p.add_argument("--paired", action="store_true", help="also the paired differences on the test episodes")
    args = p.parse_args(argv)
    lines = rows(Path(args.runs), args.data)
    if args.paired:
        lines += [""] + paired(Path(args.runs), args.data)
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
