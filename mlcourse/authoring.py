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
``<!-- END SOLUTION -->`` lines); it becomes ``YOUR ANSWER HERE``. The rule is nbgrader's
``ClearSolutions``, line for line (any line holding ``BEGIN SOLUTION`` opens a region), so
``nbgrader generate_assignment`` hides exactly what ``exercises/`` hides; a test holds the two
byte for byte when nbgrader is installed. Outputs are never stored.

nbgrader metadata
-----------------
The same command writes nbgrader's cell metadata (schema 3) into the solution notebooks,
derived from the markers and the check cells, so that a teacher can hand the solutions to
``nbgrader generate_assignment`` and ``autograde`` as they are:

* a code cell with a solution region is a *solution* cell (``solution: true``), named after
  the function or class it defines;
* a code cell that calls a check imported from ``mlcourse.checks`` is an autograded *test*
  cell (``grade: true, locked: true``), named after the check, worth ``CHECK_POINTS`` = 1
  point: nbgrader grades a cell as a whole (full points when it runs without an error), so
  one point per check cell is what it can tell apart;
* a markdown cell with a solution region is a written answer (``grade: true, solution:
  true``), worth ``ANSWER_POINTS`` = 1 point that a teacher gives by hand;
* every other markdown cell (the instructions) and the cell that imports the checks are
  *read-only* (``locked: true``): nbgrader restores them when it grades, so a learner cannot
  replace a check by editing its import;
* other code cells (the experiments at the end) carry no nbgrader metadata: a learner may
  change them freely, and nothing in them is graded.

``python -m mlcourse.authoring exercises --check`` (and a test) fails when an exercise
notebook is not what its solution generates, or when a solution's nbgrader metadata is
missing or stale, so none of them can drift apart.

``python -m mlcourse.authoring execute chapters --out build`` runs notebooks headless,
writes the executed copies and prints how long each took.
"""

from __future__ import annotations

import ast
import re
import sys
import time
from pathlib import Path

import nbformat

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
MD_BEGIN, MD_END = "<!-- BEGIN SOLUTION -->", "<!-- END SOLUTION -->"
# What nbgrader's ClearSolutions looks for: a line *containing* these opens or closes a region.
BEGIN_MARK, END_MARK = "BEGIN SOLUTION", "END SOLUTION"
CODE_STUB = ["# YOUR CODE HERE", "raise NotImplementedError()"]
TEXT_STUB = ["YOUR ANSWER HERE"]
CHECK_POINTS = 1   # per check cell (nbgrader grades a cell as a whole)
ANSWER_POINTS = 1  # per written answer, given by hand
NBGRADER_SCHEMA = 3
ROOT = Path(__file__).resolve().parents[1]


class MarkerError(ValueError):
    pass


def _strip(source: str, stub: list[str], where: str) -> str:
    """``source`` with every solution region replaced by ``stub`` at the marker's indentation.

    Line for line what nbgrader's ClearSolutions does (so the two give the same exercise),
    but stricter: nbgrader replaces a whole line that merely *contains* ``BEGIN SOLUTION``,
    so a marker that shares its line with anything else, a nested, an unclosed or an unopened
    region is an authoring error here rather than silently lost text.
    """
    out, inside = [], False
    for n, line in enumerate(source.split("\n"), 1):
        if BEGIN_MARK in line or END_MARK in line:
            if line.strip() not in (BEGIN, END, MD_BEGIN, MD_END):
                raise MarkerError(f"{where}, line {n}: a solution marker must stand alone on its line "
                                  f"({BEGIN!r} or {MD_BEGIN!r}, then {END!r} or {MD_END!r}), got {line.strip()!r}")
        if BEGIN_MARK in line:
            if inside:
                raise MarkerError(f"{where}, line {n}: {BEGIN_MARK} inside another solution region")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out += [indent + stub_line for stub_line in stub]
        elif END_MARK in line:
            if not inside:
                raise MarkerError(f"{where}, line {n}: {END_MARK} without {BEGIN_MARK}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise MarkerError(f"{where}: {BEGIN_MARK} is never closed")
    return "\n".join(out)


def has_region(cell) -> bool:
    """Whether the cell holds a solution region (a line with ``BEGIN SOLUTION``)."""
    return cell.cell_type in ("code", "markdown") and any(BEGIN_MARK in line for line in cell.source.split("\n"))


def has_solution(nb) -> bool:
    return any(has_region(c) for c in nb.cells)


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
            cell.source = _strip(cell.source, CODE_STUB, where)
        elif cell.cell_type == "markdown":
            cell.source = _strip(cell.source, TEXT_STUB, where)
    return clean(nb)


# ---------------------------------------------------------------------------------------
# Check cells and nbgrader metadata
# ---------------------------------------------------------------------------------------
def _parse(source: str):
    try:
        return ast.parse(source)
    except SyntaxError:  # IPython magics, a learner's half-written line: not a check cell
        return None


def check_imports(nb) -> tuple[dict[str, str], set[str]]:
    """``(functions, modules)``: the checks a notebook imports from ``mlcourse.checks``, as
    ``{name in the notebook: the check's own name}`` (``from mlcourse.checks.ch01 import
    check_x as cx``), and the names it gives the check modules (``from mlcourse.checks import
    ch01``, ``import mlcourse.checks.ch01 as ch01``)."""
    functions: dict[str, str] = {}
    modules: set[str] = set()
    for cell in nb.cells:
        tree = _parse(cell.source) if cell.cell_type == "code" else None
        for node in ast.walk(tree) if tree else ():
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("mlcourse.checks"):
                for alias in node.names:
                    if alias.name == "CheckFailed":
                        continue
                    if node.module == "mlcourse.checks":
                        modules.add(alias.asname or alias.name)
                    else:
                        functions[alias.asname or alias.name] = alias.name
            elif isinstance(node, ast.Import):
                modules.update(a.asname for a in node.names if a.name.startswith("mlcourse.checks.") and a.asname)
    return functions, modules


def called_checks(source: str, imports: tuple[dict[str, str], set[str]]) -> list[str]:
    """The checks a cell calls as top-level statements, in order, by their own names (``[]``
    for any other cell: ``result = check_x(f)`` is an experiment, not a check cell)."""
    tree = _parse(source)
    functions, modules = imports
    names = []
    for statement in tree.body if tree else ():
        call = statement.value if isinstance(statement, ast.Expr) else None
        if not isinstance(call, ast.Call):
            continue
        func = call.func
        if isinstance(func, ast.Name) and func.id in functions:
            names.append(functions[func.id])
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in modules:
            names.append(func.attr)
    return names


def imports_checks(source: str) -> bool:
    """Whether a code cell imports from ``mlcourse.checks`` (the cell the checks depend on)."""
    tree = _parse(source)
    for node in ast.walk(tree) if tree else ():
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mlcourse.checks"):
            return True
        if isinstance(node, ast.Import) and any(a.name.startswith("mlcourse.checks") for a in node.names):
            return True
    return False


def cell_role(cell, imports) -> str | None:
    """``"solution"``, ``"answer"``, ``"check"``, ``"locked"`` or None (see the module docstring)."""
    if has_region(cell):
        return "solution" if cell.cell_type == "code" else "answer"
    if cell.cell_type == "markdown":
        return "locked"
    if cell.cell_type == "code":
        if called_checks(cell.source, imports):
            return "check"
        if imports_checks(cell.source):
            return "locked"
    return None


def check_cells(nb) -> list[int]:
    """Indices of the check cells of a notebook (code cells that call a check)."""
    imports = check_imports(nb)
    return [i for i, c in enumerate(nb.cells) if cell_role(c, imports) == "check"]


def _defined_name(source: str) -> str | None:
    tree = _parse(source)  # the markers are comments
    for statement in tree.body if tree else ():
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            return statement.name
    return None


def nbgrader_cell_metadata(nb) -> list[dict | None]:
    """The ``nbgrader`` metadata every cell of a solution notebook should carry (None: none).

    grade_ids say what a cell is in nbgrader's gradebook and feedback: a check cell is named
    after its check (``check_make_episode``), a solution cell after what it defines
    (``make_episode``), a written answer ``answer_1``, ``answer_2``, ..., a read-only cell
    ``cell-<its Jupyter cell id>``; a repeated name gets ``_2``, ``_3``, ...
    """
    imports = check_imports(nb)
    used: set[str] = set()
    answers = 0

    def unique(grade_id: str) -> str:
        grade_id = re.sub(r"[^A-Za-z0-9_-]", "_", grade_id)
        candidate, n = grade_id, 1
        while candidate in used:
            n += 1
            candidate = f"{grade_id}_{n}"
        used.add(candidate)
        return candidate

    out: list[dict | None] = []
    for index, cell in enumerate(nb.cells):
        role = cell_role(cell, imports)
        cell_name = f"cell-{cell.get('id') or index}"
        base = {"schema_version": NBGRADER_SCHEMA, "grade": False, "solution": False, "locked": False}
        if role == "solution":
            meta = {**base, "solution": True, "grade_id": unique(_defined_name(cell.source) or f"solution-{cell_name}")}
        elif role == "answer":
            answers += 1
            meta = {**base, "solution": True, "grade": True, "points": ANSWER_POINTS, "grade_id": unique(f"answer_{answers}")}
        elif role == "check":
            meta = {**base, "grade": True, "locked": True, "points": CHECK_POINTS,
                    "grade_id": unique(called_checks(cell.source, imports)[0])}
        elif role == "locked":
            meta = {**base, "locked": True, "grade_id": unique(cell_name)}
        else:
            meta = None
        out.append(meta)
    return out


def with_nbgrader_metadata(solution_nb):
    """A copy of a solution notebook whose cells carry the nbgrader metadata they should
    (other metadata and every cell's source untouched)."""
    nb = nbformat.reads(nbformat.writes(solution_nb), as_version=4)
    for cell, meta in zip(nb.cells, nbgrader_cell_metadata(nb)):
        if meta is None:
            cell.metadata.pop("nbgrader", None)
        else:
            cell.metadata["nbgrader"] = meta
    return nb


def exercise_pairs(root: Path = ROOT):
    """``(solution_path, exercise_path)`` for every solution notebook."""
    return [(p, root / "exercises" / p.name) for p in sorted((root / "solutions").glob("*.ipynb"))]


def render(nb) -> str:
    return nbformat.writes(nb) + "\n"


def generate_exercises(root: Path = ROOT, check: bool = False) -> list[str]:
    """Write (or, with ``check``, compare) every solution's nbgrader metadata and every
    exercise; return the files that differ (``solutions/NAME`` for metadata, ``exercises/NAME``)."""
    stale = []
    for sol, ex in exercise_pairs(root):
        solution = with_nbgrader_metadata(nbformat.read(sol, as_version=4))
        for path, text in ((sol, render(solution)), (ex, render(make_exercise(solution, sol.name)))):
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(f"{path.parent.name}/{path.name}")
                if not check:
                    path.parent.mkdir(exist_ok=True)
                    path.write_text(text, encoding="utf-8")
    return stale


# How long one wait for a cell's reply lasts before it is asked again (see patient_client_class).
REPLY_POLL_SECONDS = 1.0


def patient_client_class(base=None):
    """nbclient's ``NotebookClient`` (or ``base``, a subclass of it) that waits for each cell's
    reply in one-second slices up to the cell's time limit.

    nbclient waits for a cell's ``execute_reply`` with one asyncio poll of the shell socket for
    the whole time limit. When the cell also sends widget messages (``interact``, a panel), that
    poll can miss the socket's wake-up, and the run then sits idle until the time limit, although
    the reply has arrived (jupyter/nbclient#312; seen here on chapter 04's slider: the kernel idle,
    the reply waiting, until another request woke the socket). A fresh poll checks the socket's
    state first, so asking again every second costs nothing and loses at most a second.
    """
    from nbclient import NotebookClient

    base = base or NotebookClient

    class PatientNotebookClient(base):
        async def async_start_new_kernel_client(self):
            kc = await super().async_start_new_kernel_client()
            kc.shell_channel.get_msg = in_slices(kc.shell_channel.get_msg)
            return kc

    return PatientNotebookClient


def in_slices(get_msg):
    """``get_msg(timeout=T)`` (an async channel's) asked again every :data:`REPLY_POLL_SECONDS`
    until a message comes or ``T`` seconds have passed (then ``queue.Empty``, as before)."""
    from queue import Empty
    from time import monotonic

    async def patient_get_msg(timeout=None):
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - monotonic())
            try:
                return await get_msg(timeout=REPLY_POLL_SECONDS if left is None else min(REPLY_POLL_SECONDS, left))
            except Empty:
                if deadline is not None and monotonic() >= deadline:
                    raise

    return patient_get_msg


def notebook_client(nb, **kwargs):
    """A :func:`patient_client_class` client for ``nb`` (keyword arguments as nbclient's)."""
    return patient_client_class()(nb, **kwargs)


def execute(paths: list[Path], out: Path | None, timeout: int = 1800, allow_errors: bool = False) -> list[tuple[str, float]]:
    """Run notebooks top to bottom with the current Python's kernel; return (name, seconds)."""
    NotebookClient = patient_client_class()

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
    ex = sub.add_parser("exercises", help="write nbgrader metadata into solutions/ and generate exercises/ from them")
    ex.add_argument("--check", action="store_true", help="only report the files that are out of date")
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
