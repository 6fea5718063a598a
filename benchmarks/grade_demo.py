"""The grader on a made-up class: one solved, one unsolved and one broken submission of every exercise.

    nice -n 10 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/grade_demo.py            # writes docs/runs/grade/
    .venv/bin/python benchmarks/grade_demo.py --only 01_episodes_and_evaluation --out /tmp/demo

For each solution in ``solutions/`` it writes ``EXERCISE/solved.ipynb`` (the solution),
``EXERCISE/unsolved.ipynb`` (the exercise as generated) and ``EXERCISE/broken.ipynb`` into a
temporary class folder, then runs ``python -m mlcourse.grade`` on the folder (in-process, the
same ``main``), which prints its table; the JSON and the table go to ``--out``. Each broken
submission is broken in its own way, the ways students break notebooks: a syntax error, a
function that returns nothing, a deleted check cell, an edited check cell, an endless loop,
a kernel that exits, a kernel killed by a signal, a fake check defined under the check's
name, an exception at the top of a cell, a plausible wrong answer.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlcourse import authoring, grade  # noqa: E402
from mlcourse.cli import ArgumentParser, bad_argument, check_choice  # noqa: E402


def solution_cells(nb) -> list[int]:
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and authoring.has_region(c)]


def fill_region(nb, cell_index: int, lines: list[str]):
    """The first solution region of a cell replaced by ``lines`` (at the marker's indentation)."""
    cell = nb.cells[cell_index]
    out, inside = [], False
    for line in cell.source.split("\n"):
        if authoring.BEGIN_MARK in line and not inside:
            inside, indent = True, line[: len(line) - len(line.lstrip())]
            out += [indent + new for new in lines]
        elif authoring.END_MARK in line and inside:
            inside = False
        elif not inside:
            out.append(line)
    cell.source = "\n".join(out)
    return nb


def copy(nb):
    return nbformat.reads(nbformat.writes(nb), as_version=4)


def broken(name: str, solution, exercise):
    """How the broken submission of exercise ``name`` is broken: (what, notebook)."""
    sol, ex = copy(solution), copy(exercise)
    first = solution_cells(sol)[0]
    checks = authoring.check_cells(sol)
    ways = {
        "01_episodes_and_evaluation": ("a syntax error in the first solution cell",
                                       lambda: fill_region(sol, first, ["return [x for x in range(3]"])),
        "02_prototypical_networks": ("the first function returns nothing",
                                     lambda: fill_region(sol, first, ["return None"])),
        "03_relation_module": ("the first check cell deleted, its function unsolved",
                               lambda: (ex.cells.pop(authoring.check_cells(ex)[0]), ex)[1]),
        "04_maml_inner_loop": ("the first check cell edited to print 'passed', its function unsolved",
                               lambda: (setattr(ex.cells[authoring.check_cells(ex)[0]], "source", "print('passed')"), ex)[1]),
        "05_reptile_update": ("an endless loop in the first function",
                              lambda: fill_region(sol, first, ["while True:", "    pass"])),
        "07_gan_losses": ("a cell that ends the kernel (os._exit(1)) before the second check",
                          lambda: (sol.cells.insert(checks[1], nbformat.v4.new_code_cell("import os\nos._exit(1)")), sol)[1]),
        "08_elbo": ("a cell that kills the kernel (SIGKILL) before the last check",
                    lambda: (sol.cells.insert(checks[-1], nbformat.v4.new_code_cell(
                        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")), sol)[1]),
        "09_figr_update": ("a fake check under the check's name, the function unsolved",
                           lambda: (setattr(ex.cells[first], "source", ex.cells[first].source
                                            + "\n\n\ndef check_figr_outer_update(fn):\n    print('all good')"), ex)[1]),
        "10_conditional_nll": ("an exception at the top of the solution cell",
                               lambda: (setattr(sol.cells[first], "source", "import torch\ntorch.no_such_function()\n\n"
                                                + sol.cells[first].source), sol)[1]),
        "10_statistic_pooling": ("a sum where the mean belongs (depends on the set size)",
                                 lambda: fill_region(sol, first, ["return features.sum(dim=1)"])),
    }
    what, make = ways.get(name, ("the first function returns nothing", lambda: fill_region(sol, first, ["return None"])))
    return what, make()


def main(argv: list[str] | None = None) -> int:
    pairs = authoring.exercise_pairs()
    parser = ArgumentParser(prog="benchmarks/grade_demo.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", default=None, metavar="EXERCISE", help="these exercises only")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "runs" / "grade", help="folder for demo.json and demo.txt")
    parser.add_argument("--timeout-cell", default="60", help="passed to the grader (default 60)")
    args = parser.parse_args(argv)
    for name in args.only or []:
        check_choice(parser, "--only", name, [s.stem for s, _ in pairs])
    if args.out.exists() and not args.out.is_dir():
        bad_argument(parser, "--out", args.out, "a folder (this is a file)")
    args.out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="grade-demo-") as tmp:
        klass = Path(tmp) / "class"
        what_broke = {}
        for solution_path, exercise_path in pairs:
            name = solution_path.stem
            if args.only and name not in args.only:
                continue
            solution = nbformat.read(solution_path, as_version=4)
            exercise = nbformat.read(exercise_path, as_version=4)
            folder = klass / name
            folder.mkdir(parents=True)
            what_broke[name], bad = broken(name, solution, exercise)
            for who, nb in (("solved", solution), ("unsolved", exercise), ("broken", bad)):
                nbformat.write(nb, folder / f"{who}.ipynb")
        start = time.monotonic()
        table_file = Path(tmp) / "table.txt"
        with open(table_file, "w", encoding="utf-8") as out:
            stdout, sys.stdout = sys.stdout, Tee(sys.stdout, out)
            try:
                grade.main([str(klass), "--timeout-cell", args.timeout_cell, "--json", str(args.out / "demo.json")])
            finally:
                sys.stdout = stdout
        seconds = time.monotonic() - start
        header = ["# python benchmarks/grade_demo.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                  f"# {seconds:.0f} s in all; the broken submissions:"]
        header += [f"#   {name}/broken.ipynb: {what}" for name, what in what_broke.items()]
        (args.out / "demo.txt").write_text("\n".join(header) + "\n" + table_file.read_text(encoding="utf-8"), encoding="utf-8")
    return 0


class Tee:
    """Write to two streams (the terminal and the table file)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self):
        for s in self.streams:
            s.flush()


if __name__ == "__main__":
    sys.exit(main())
