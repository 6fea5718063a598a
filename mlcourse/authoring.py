"""Course authoring: exercise notebooks made from solution notebooks, and headless runs.

One source of truth
-------------------
The notebooks in ``solutions/`` are the source. Inside their code cells, the parts a
learner must write sit between two marker lines (the convention of nbgrader)::

    def f(x):
        ### BEGIN SOLUTION
        return 2 * x
        ### END SOLUTION

``python -m mlcourse.authoring exercises`` writes ``exercises/<same name>.ipynb`` with each
such region replaced by ``# YOUR CODE HERE`` and ``raise NotImplementedError()`` at the
same indentation. Markdown cells may hold a region too (between ``<!-- BEGIN SOLUTION -->`` and
``<!-- END SOLUTION -->``); it becomes *YOUR ANSWER HERE*. Outputs are never stored.
``python -m mlcourse.authoring exercises --check`` (and a test) fails when an exercise
notebook is not what its solution generates, so the two can never drift apart.

``python -m mlcourse.authoring execute chapters --out build`` runs notebooks headless,
writes the executed copies and prints how long each took.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import nbformat

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
MD_BEGIN, MD_END = "<!-- BEGIN SOLUTION -->", "<!-- END SOLUTION -->"
ROOT = Path(__file__).resolve().parents[1]


class MarkerError(ValueError):
    pass


def _strip_code(source: str, where: str) -> str:
    out, inside, indent = [], False, ""
    for n, line in enumerate(source.splitlines(), 1):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise MarkerError(f"{where}, line {n}: {BEGIN} inside another solution region")
            inside, indent = True, line[: len(line) - len(line.lstrip())]
            out += [f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError()"]
        elif stripped == END:
            if not inside:
                raise MarkerError(f"{where}, line {n}: {END} without {BEGIN}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise MarkerError(f"{where}: {BEGIN} is never closed")
    return "\n".join(out)


def _strip_markdown(source: str, where: str) -> str:
    pattern = re.compile(re.escape(MD_BEGIN) + r".*?" + re.escape(MD_END), re.S)
    out = pattern.sub("*YOUR ANSWER HERE*", source)
    if MD_BEGIN in out or MD_END in out:
        raise MarkerError(f"{where}: unbalanced {MD_BEGIN} / {MD_END}")
    return out


def has_solution(nb) -> bool:
    return any(BEGIN in c.source or MD_BEGIN in c.source for c in nb.cells)


def clean(nb):
    """Drop outputs, execution counts and per-run metadata (what we store in git)."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        for key in ("execution", "collapsed", "scrolled"):
            cell.metadata.pop(key, None)
    nb.metadata.pop("widgets", None)
    return nb


def make_exercise(solution_nb, name: str = "notebook"):
    """The exercise version of a solution notebook (a new object; the input is untouched)."""
    nb = nbformat.reads(nbformat.writes(solution_nb), as_version=4)
    if not has_solution(nb):
        raise MarkerError(f"{name}: no {BEGIN} region: nothing for the learner to do")
    for i, cell in enumerate(nb.cells):
        where = f"{name}, cell {i}"
        if cell.cell_type == "code":
            cell.source = _strip_code(cell.source, where)
        elif cell.cell_type == "markdown":
            cell.source = _strip_markdown(cell.source, where)
    return clean(nb)


def exercise_pairs(root: Path = ROOT):
    """``(solution_path, exercise_path)`` for every solution notebook."""
    return [(p, root / "exercises" / p.name) for p in sorted((root / "solutions").glob("*.ipynb"))]


def render(nb) -> str:
    return nbformat.writes(nb) + "\n"


def generate_exercises(root: Path = ROOT, check: bool = False) -> list[str]:
    """Write (or, with ``check``, compare) every exercise; return the names that differ."""
    stale = []
    for sol, ex in exercise_pairs(root):
        text = render(make_exercise(nbformat.read(sol, as_version=4), sol.name))
        if not ex.exists() or ex.read_text(encoding="utf-8") != text:
            stale.append(ex.name)
            if not check:
                ex.parent.mkdir(exist_ok=True)
                ex.write_text(text, encoding="utf-8")
    return stale


def execute(paths: list[Path], out: Path | None, timeout: int = 1800, allow_errors: bool = False) -> list[tuple[str, float]]:
    """Run notebooks top to bottom with the current Python's kernel; return (name, seconds)."""
    from nbclient import NotebookClient

    times = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=allow_errors,
                                resources={"metadata": {"path": str(path.parent)}})
        client.execute()
        seconds = time.perf_counter() - start
        times.append((str(path), seconds))
        print(f"{seconds:7.1f} s  {path}", flush=True)
        if out is not None:
            target = out / path.relative_to(ROOT) if path.is_relative_to(ROOT) else out / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, target)
    return times


def notebook_paths(parser, name: str, paths: list[Path]) -> list[Path]:
    """The notebooks that ``paths`` (notebooks or folders of notebooks) name, every one read once
    to be sure it is a notebook; a bad path is refused with one line (exit status 2) before any
    notebook is touched."""
    from .cli import bad_argument

    found: list[Path] = []
    for p in paths:
        if not p.exists():
            bad_argument(parser, name, p, "a notebook (.ipynb) or a folder of notebooks (no such file or folder)")
        if p.is_dir():
            inside = sorted(p.glob("*.ipynb"))
            if not inside:
                bad_argument(parser, name, p, "a notebook (.ipynb) or a folder of notebooks (this folder holds no .ipynb file)")
        elif p.suffix != ".ipynb":
            bad_argument(parser, name, p, "a notebook (.ipynb) or a folder of notebooks")
        else:
            inside = [p]
        for nbp in inside:
            try:
                nbformat.read(nbp, as_version=4)
            except Exception as error:  # noqa: BLE001 - unreadable JSON, a wrong schema, an I/O error: all "not a notebook"
                first = (str(error).strip().splitlines() or [""])[0][:200]
                bad_argument(parser, name, nbp, f"a readable Jupyter notebook ({type(error).__name__}: {first})")
        found += inside
    return found


def main(argv: list[str] | None = None) -> int:
    from .cli import ArgumentParser, bad_argument

    parser = ArgumentParser(prog="python -m mlcourse.authoring", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="command",
                                help="exercises, clean or execute (each has its own --help)")
    ex = sub.add_parser("exercises", help="generate exercises/ from solutions/")
    ex.add_argument("--check", action="store_true", help="only report exercises that are out of date")
    cl = sub.add_parser("clean", help="strip outputs from notebooks in place")
    cl.add_argument("paths", nargs="+", type=Path, help="notebooks or folders of notebooks")
    run = sub.add_parser("execute", help="run notebooks headless and time them")
    run.add_argument("paths", nargs="+", type=Path, help="notebooks or folders of notebooks")
    run.add_argument("--out", type=Path, default=None, help="folder for the executed copies")
    args = parser.parse_args(argv)

    if args.command == "exercises":
        stale = generate_exercises(check=args.check)
        if args.check and stale:
            print("out of date (run `python -m mlcourse.authoring exercises`): " + ", ".join(stale))
            return 1
        print("exercises up to date" if not stale else "wrote " + ", ".join(stale))
        return 0
    if args.command == "clean":
        for nbp in notebook_paths(cl, "paths", args.paths):
            nbformat.write(clean(nbformat.read(nbp, as_version=4)), nbp)
        return 0
    paths = notebook_paths(run, "paths", [p.resolve() for p in args.paths])
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        bad_argument(run, "--out", args.out, "a folder (this is a file)")
    out = args.out.resolve() if args.out else None
    times = execute(paths, out)
    print(f"{sum(t for _, t in times):7.1f} s  total, {len(times)} notebooks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
