"""python -m mlcourse.grade SUBMISSION.ipynb...: grade exercise notebooks without a grading server.

    python -m mlcourse.grade submissions/                       # every .ipynb under the folder
    python -m mlcourse.grade alice.ipynb bob.ipynb --exercise 01_episodes_and_evaluation \\
        --timeout-cell 60 --timeout-total 300 --json roster.json --csv roster.csv

Each submission runs top to bottom in a fresh kernel of the current Python environment
(``nbclient``; ``MLCOURSE_FAST=1`` in the kernel's environment; a fresh temporary working
folder), up to its last check cell: the experiments after the last check are not graded, so
they are not run. Every check cell of the exercise scores its points (1, from the solution's
nbgrader metadata) when it runs without an error; the table on standard output, and the
JSON and CSV files for a roster (one row per submission per check), give each check's result
and message (the exception's last line, on one line), the points and the totals.

The checks come from the *solution* notebook, never from the student's copy. A check cell
the student edited is replaced by the solution's, one they deleted is put back where it
belongs (after the cell that precedes it in the solution), and either is reported
("check cell edited", "check cell deleted"): deleting or editing a check gains nothing.
Each check cell re-imports its checks from ``mlcourse.checks`` before it runs, so a student
function named like a check cannot stand in for it either. (This is a grader, not a sandbox:
code that patches ``mlcourse.checks`` itself is beyond what it guards against.)

Which exercise a submission is: ``--exercise`` when given; else the solution whose name the
file name contains (``alice_01_episodes_and_evaluation.ipynb``), or the nearest folder's
(``submitted/alice/01_episodes_and_evaluation/notebook.ipynb``); else the solution most of
whose instructions and check cells the notebook holds verbatim. A notebook that is plainly
another exercise than the one it should be (``--exercise`` or its file name) is reported as a
"different exercise" and not graded; one that matches none is an "unknown exercise".

A submission that raises in the student's code, loops past ``--timeout-cell`` (the cell is
interrupted, and grading goes on), runs past ``--timeout-total``, crashes its kernel, is not
a readable notebook, or is an unknown or different exercise is reported as such, under the
student's file name, and the grader moves on to the next one.

Exit status: 0 when every submission was graded or reported (failing students included);
2, with one line on standard error, for a bad argument (nothing is graded then).
"""

from __future__ import annotations

import ast
import csv
import json
import logging
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import authoring

ROOT = Path(__file__).resolve().parents[1]
PROG = "python -m mlcourse.grade"
CONTENT_MATCH = 0.5  # share of an exercise's fixed cells a notebook must hold to be that exercise
RESULTS = ("passed", "failed", "timed out", "not run")
STATUSES = ("graded", "kernel died", "out of time", "not a notebook", "unknown exercise",
            "different exercise", "grader error")


# ---------------------------------------------------------------------------------------
# The exercises, as the solution notebooks define them
# ---------------------------------------------------------------------------------------
@dataclass
class CheckCell:
    grade_id: str
    points: float
    source: str
    cell_id: str | None
    before: list[str]  # grade_ids/ids of the solution cells before it, nearest first


@dataclass
class Exercise:
    name: str
    checks: list[CheckCell]
    fixed: set[str]        # sources of the cells a learner should not change (instructions, checks)
    reimport: str          # the solution's imports from mlcourse.checks


def _key(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def load_exercise(path: Path) -> Exercise:
    """An exercise from its solution notebook (nbgrader metadata derived as ``authoring`` does)."""
    nb = authoring.with_nbgrader_metadata(nbformat.read(path, as_version=4))
    metas = [c.metadata.get("nbgrader") for c in nb.cells]
    checks = []
    for i in authoring.check_cells(nb):
        cell = nb.cells[i]
        before = [k for c in reversed(nb.cells[:i]) for k in (_key(c), c.get("id")) if k]
        checks.append(CheckCell(_key(cell), float(metas[i]["points"]), cell.source, cell.get("id"), before))
    fixed = {c.source.strip() for c, m in zip(nb.cells, metas) if m and m["locked"] and c.source.strip()}
    imports = []
    for cell in nb.cells:
        if cell.cell_type == "code" and authoring.imports_checks(cell.source):
            tree = ast.parse(cell.source)
            imports += [ast.get_source_segment(cell.source, node) for node in tree.body
                        if isinstance(node, (ast.Import, ast.ImportFrom)) and authoring.imports_checks(ast.unparse(node))]
    return Exercise(path.stem, checks, fixed, "\n".join(imports))


def load_exercises(folder: Path) -> dict[str, Exercise]:
    """Every solution notebook in ``folder`` that has check cells."""
    exercises = {}
    for path in sorted(folder.glob("*.ipynb")):
        try:
            exercise = load_exercise(path)
        except Exception:  # noqa: BLE001 - not a solution notebook: not an exercise to grade against
            continue
        if exercise.checks:
            exercises[exercise.name] = exercise
    return exercises


# ---------------------------------------------------------------------------------------
# One submission
# ---------------------------------------------------------------------------------------
@dataclass
class Result:
    file: str
    exercise: str | None = None
    status: str = "graded"
    message: str = ""
    points: float = 0.0
    max_points: float = 0.0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def read_notebook(path: Path):
    """The notebook, or the reason it is not one (one line)."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        return None, f"cannot be read ({error.strerror})"
    if not raw.strip():
        return None, "the file is empty"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not a text file (an image? a zip?): a Jupyter notebook is JSON"
    try:
        nb = nbformat.reads(text, as_version=4)
        nbformat.validate(nb)
    except Exception as error:  # noqa: BLE001 - invalid JSON, a JSON that is no notebook, a wrong schema
        return None, f"not a readable Jupyter notebook ({type(error).__name__}: {one_line(error, 160)})"
    return nb, ""


def content_match(exercise: Exercise, nb) -> float:
    """The share of the exercise's fixed cells (instructions, check cells) found verbatim."""
    sources = {c.source.strip() for c in nb.cells}
    return len(exercise.fixed & sources) / max(1, len(exercise.fixed))


def identify(path: Path, nb, exercises: dict[str, Exercise], expected: str | None):
    """``(exercise name or None, status, message)``: which exercise the submission is."""
    scores = {name: content_match(ex, nb) for name, ex in exercises.items()}
    best = max(scores, key=scores.get)
    best = best if scores[best] >= CONTENT_MATCH else None
    named = None  # the file's name, else the nearest folder's (nbgrader: submitted/STUDENT/EXERCISE/...)
    for part in [path.name, *(q.name for q in path.parents)]:
        named = max((n for n in exercises if n in part), key=len, default=None)
        if named:
            break
    target, why = (expected, "--exercise") if expected else (named, "its file name")
    if target:
        if best and best != target and scores[best] > scores[target]:
            return target, "different exercise", (f"this notebook is exercise {best} ({scores[best]:.0%} of its fixed cells), "
                                                   f"not {target} as {why} says ({scores[target]:.0%})")
        return target, "graded", ""
    if best:
        return best, "graded", ""
    return None, "unknown exercise", (f"neither its name nor its cells match an exercise "
                                      f"(best: {max(scores.values()):.0%} of the cells of {max(scores, key=scores.get)})")


def plan(exercise: Exercise, nb):
    """The cells to run: the student's code cells with every check cell taken from the solution
    (an edited one replaced, a deleted one put back), up to the last check.

    Returns ``(cells, states)``: ``cells`` is a list of ``(kind, label, source)`` with kind
    ``"student"`` or ``"setup"`` (an exercise cell the student left as it was, such as the
    imports; label: the cell's number in the submission, from 1) or ``"check"`` (label: its
    grade_id); ``states`` maps each check to ``"intact"``, ``"edited"`` or ``"deleted"``.
    """
    by_key: dict[str, int] = {}
    for j, cell in enumerate(nb.cells):
        for key in (_key(cell), cell.get("id")):
            if key:
                by_key.setdefault(key, j)
    used: set[int] = set()
    found: dict[int, CheckCell] = {}
    states: dict[str, str] = {}
    missing: dict[int, list[CheckCell]] = {}   # submission index to insert after (-1: at the end)
    for check in exercise.checks:
        j = next((by_key[k] for k in (check.grade_id, check.cell_id) if k in by_key and by_key[k] not in used), None)
        if j is None:
            j = next((j for j, c in enumerate(nb.cells) if j not in used and c.cell_type == "code"
                      and c.source.strip() == check.source.strip()), None)
        if j is not None and nb.cells[j].cell_type == "code":
            used.add(j)
            found[j] = check
            states[check.grade_id] = "intact" if nb.cells[j].source.strip() == check.source.strip() else "edited"
        else:
            anchor = next((by_key[k] for k in check.before if k in by_key), -1)
            missing.setdefault(anchor, []).append(check)
            states[check.grade_id] = "deleted"
    cells = []
    for j, cell in enumerate(nb.cells):
        if j in found:
            cells.append(("check", found[j].grade_id, found[j].source))
        elif cell.cell_type == "code" and cell.source.strip():
            # the exercise's own set-up cells, unchanged: if one fails, the fault is not the student's
            kind = "setup" if cell.source.strip() in exercise.fixed else "student"
            cells.append((kind, j + 1, cell.source))
        cells += [("check", c.grade_id, c.source) for c in missing.get(j, [])]
    cells += [("check", c.grade_id, c.source) for c in missing.get(-1, [])]
    last = max(i for i, (kind, _, _) in enumerate(cells) if kind == "check")
    return cells[: last + 1], states


def _current_env_kernel_manager():
    """A kernel manager whose kernel is this very Python (as ``nbval --nbval-current-env``),
    whatever kernelspec named "python3" the user has installed elsewhere."""
    from ipykernel.kernelspec import RESOURCES, get_kernel_dict
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    class CurrentEnvironment(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return self.kernel_spec_class(resource_dir=RESOURCES, **get_kernel_dict())

    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=CurrentEnvironment())


def _client_class():
    """nbclient's NotebookClient, made safe to go on after a cell timed out.

    On a timeout nbclient leaves that cell's output reader running (``CellTimeoutError`` is a
    "control signal" it does not clean up after). The reader and the next cell's reader then
    take turns on the same channel and each throws away what the other needed, so every later
    cell waits out ``iopub_timeout``. This client keeps its readers, so that the grader can
    stop the orphan once it has interrupted the kernel.
    """
    import asyncio

    from .authoring import patient_client_class

    class Client(patient_client_class()):  # also waits for a reply in slices (nbclient#312)
        def readers(self) -> set:
            return self.__dict__.setdefault("_output_readers", set())

        async def _async_poll_output_msg(self, parent_msg_id, cell, cell_index):
            task = asyncio.current_task()
            self.readers().add(task)
            try:
                return await super()._async_poll_output_msg(parent_msg_id, cell, cell_index)
            finally:
                self.readers().discard(task)

        def stop_output_readers(self) -> None:
            for task in list(self.readers()):
                task.cancel()

    return Client


def _error_line(error: dict) -> str:
    """The exception's last line, as Python prints it, on one line: ``Name: message``."""
    name, value = error.get("ename", "Error"), error.get("evalue", "")
    return one_line(f"{name}: {value}" if value else name)


def run(exercise: Exercise, nb, result: Result, timeout_cell: float, timeout_total: float) -> None:
    """Execute the planned cells in a fresh kernel and score the checks into ``result``."""
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from nbclient.util import run_sync

    cells, states = plan(exercise, nb)
    for check in exercise.checks:
        state = states[check.grade_id]
        if state != "intact":
            result.notes.append(f"check cell {state}: {check.grade_id} (graded with the solution's check)")
    run_nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    for kind, label, source in cells:
        source = f"{exercise.reimport}\n{source}" if kind == "check" else source  # the checks, not look-alikes
        run_nb.cells.append(nbformat.v4.new_code_cell(source))
    outcome = {c.grade_id: ("not run", "") for c in exercise.checks}
    stopped = ""  # why the run ended early, if it did
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mlcourse-grade-") as workdir:
        client = _client_class()(run_nb, kernel_name="python3", allow_errors=True, timeout=int(math.ceil(timeout_cell)),
                                resources={"metadata": {"path": workdir}}, startup_timeout=120, iopub_timeout=30)
        client.km = _current_env_kernel_manager()
        replies: dict[int, dict] = {}  # the kernel's own verdict on each cell (outputs may lag on a busy machine)
        client.on_cell_executed = lambda cell, cell_index, execute_reply: replies.__setitem__(cell_index, execute_reply["content"])
        env = {**os.environ, "MLCOURSE_FAST": "1", "MPLBACKEND": "Agg"}
        try:
            with client.setup_kernel(env=env, stderr=subprocess.DEVNULL):
                for index, ((kind, label, _), cell) in enumerate(zip(cells, run_nb.cells)):
                    where = f"the check {label}" if kind == "check" else f"cell {label}"
                    remaining = timeout_total - (time.monotonic() - start)
                    if remaining <= 0:
                        stopped = f"out of time: {timeout_total:g} s in all ran out before {where}"
                        break
                    limited_by_total = remaining < timeout_cell
                    client.timeout = max(1, int(math.ceil(min(timeout_cell, remaining))))
                    try:
                        client.execute_cell(cell, index)
                    except CellTimeoutError:
                        if kind == "setup" and not limited_by_total:
                            stopped = (f"the exercise's own {where} ran past {timeout_cell:g} s (a slow machine? "
                                       f"raise --timeout-cell); nothing after it can be trusted")
                            result.status = "grader error"
                            break
                        if limited_by_total:
                            stopped = f"out of time: {timeout_total:g} s in all ran out in {where}"
                            if kind == "check":
                                outcome[label] = ("timed out", stopped)
                            break
                        message = f"{where} ran past {timeout_cell:g} s and was interrupted"
                        if kind == "check":
                            outcome[label] = ("timed out", message)
                        else:
                            result.notes.append(message)
                        client.stop_output_readers()
                        run_sync(client.km.interrupt_kernel)()
                        continue
                    except DeadKernelError:
                        stopped = f"the kernel died in {where}"
                        break
                    reply = replies.get(index, {})
                    if reply.get("status") == "ok":
                        outcome_here = ("passed", "")
                    elif reply.get("status") == "error":
                        outcome_here = ("failed", _error_line(reply))
                    else:  # "aborted", or no reply at all
                        outcome_here = ("failed", f"the kernel did not run it ({reply.get('status', 'no reply')})")
                    if kind == "check":
                        outcome[label] = outcome_here
                    elif kind == "setup" and outcome_here[0] == "failed":
                        stopped = f"the exercise's own {where} failed: {outcome_here[1]} (the environment, not the student)"
                        result.status = "grader error"
                        break
                    elif outcome_here[0] == "failed":
                        result.notes.append(f"cell {label} raised {outcome_here[1]}")
        except DeadKernelError:  # died while starting or shutting down
            stopped = stopped or "the kernel died"
        except Exception as error:  # noqa: BLE001 - a kernel that would not start, a broken pipe: report, go on
            stopped = f"grading stopped: {type(error).__name__}: {one_line(error, 200)}"
            result.status = "grader error"
    result.seconds = round(time.monotonic() - start, 2)
    if stopped:
        result.message = stopped
        if result.status == "graded":
            result.status = "out of time" if stopped.startswith("out of time") else "kernel died"
        for grade_id, (status, message) in outcome.items():
            if status == "not run":
                outcome[grade_id] = (status, stopped)
    for check in exercise.checks:
        status, message = outcome[check.grade_id]
        points = check.points if status == "passed" else 0.0
        result.checks.append({"check": check.grade_id, "result": status, "points": points, "max_points": check.points,
                              "cell": states[check.grade_id], "message": message})
        result.points += points


def grade(path: Path, exercises: dict[str, Exercise], expected: str | None = None,
          timeout_cell: float = 120, timeout_total: float = 600, shown: str | None = None) -> Result:
    """Grade one submission; every failure becomes a status and a message, never an exception."""
    result = Result(shown or str(path))
    nb, why = read_notebook(path)
    if nb is None:
        result.status, result.message = "not a notebook", why
        return result
    result.exercise, result.status, result.message = identify(path, nb, exercises, expected)
    if result.exercise:
        exercise = exercises[result.exercise]
        result.max_points = sum(c.points for c in exercise.checks)
        if result.status == "graded":
            run(exercise, nb, result, timeout_cell, timeout_total)
        else:
            result.checks = [{"check": c.grade_id, "result": "not run", "points": 0.0, "max_points": c.points,
                              "cell": "", "message": result.message} for c in exercise.checks]
    return result


# ---------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------
def _points(x: float) -> str:
    return f"{x:g}"


def table(results: list[Result], width: int = 120) -> str:
    """A line per submission (file, exercise, status, total, time or reason), a line per check
    under it (result, points, message: cut to ``width``; the JSON and CSV files keep it whole)
    and its notes."""
    def cut(line: str) -> str:
        return line if len(line) <= width else line[: width - 1] + "…"

    checks = [c for r in results for c in r.checks]
    name_w = max([len(c["check"]) for c in checks] + [5])
    lines = []
    for r in results:
        total = f"{_points(r.points)}/{_points(r.max_points)}" if r.exercise else "-"
        tail = r.message or (f"{r.seconds:.1f} s" if r.status == "graded" else "")
        lines.append(cut(f"{r.file}  [{r.exercise or '?'}]  {r.status}  {total}" + (f"  {tail}" if tail else "")))
        for c in r.checks:
            state = "" if c["cell"] in ("intact", "") else f"(check cell {c['cell']}) "
            message = c["message"] if c["message"] != r.message else ""
            points = f"{_points(c['points'])}/{_points(c['max_points'])}"
            lines.append(cut(f"    {c['check']:<{name_w}}  {c['result']:<9}  {points:>5}  {state}{message}".rstrip()))
        lines += [cut(f"    note: {note}") for note in r.notes]
    return "\n".join(lines)


CSV_COLUMNS = ["file", "exercise", "status", "check", "result", "points", "max_points", "cell", "message",
               "total_points", "total_max_points", "seconds", "notes"]


def write_csv(results: list[Result], path: Path) -> None:
    """One row per submission per check (one row with an empty check when nothing was graded)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for r in results:
            common = {"file": r.file, "exercise": r.exercise or "", "status": r.status, "total_points": r.points,
                      "total_max_points": r.max_points, "seconds": r.seconds, "notes": " | ".join(r.notes)}
            for c in r.checks or [{"check": "", "result": "", "points": "", "max_points": "", "cell": "", "message": r.message}]:
                writer.writerow({**common, **c})


def report(results: list[Result], args, argv: list[str], seconds: float) -> dict:
    return {
        "command": " ".join([PROG, *argv]),
        "solutions": str(args.solutions),
        "timeout_cell": args.timeout_cell,
        "timeout_total": args.timeout_total,
        "kernel": sys.executable,
        "mlcourse_fast": "1",
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "wall_seconds": round(seconds, 1),
        "submissions": [r.as_dict() for r in results],
    }


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------
def submission_paths(parser, paths: list[Path]) -> list[tuple[Path, str]]:
    """``(path, name to show)``: files as given (whatever they hold: reporting a PNG is the
    grader's job), folders as every ``.ipynb`` under them, checkpoints left out, each shown by
    its path inside the folder (``alice/01_episodes_and_evaluation.ipynb``)."""
    from .cli import bad_argument

    found = []
    for p in paths:
        if not p.exists():
            bad_argument(parser, "SUBMISSION", p, "a submitted file or a folder of submissions (no such file or folder)")
        if p.is_dir():
            inside = sorted(q for q in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts and q.is_file())
            if not inside:
                bad_argument(parser, "SUBMISSION", p, "a submitted file or a folder of submissions (this folder holds no .ipynb file)")
            found += [(q, str(q.relative_to(p))) for q in inside]
        else:
            found.append((p, str(p)))
    return found


def check_output_path(parser, name: str, path: Path | None) -> None:
    from .cli import bad_argument

    if path is None:
        return
    if path.is_dir():
        bad_argument(parser, name, path, "a file to write (this is a folder)")
    if not path.parent.is_dir():
        bad_argument(parser, name, path, f"a file in an existing folder ({path.parent} does not exist)")


def main(argv: list[str] | None = None) -> int:
    from .cli import ArgumentParser, bad_argument, check_choice, check_positive

    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("submissions", nargs="+", type=Path, metavar="SUBMISSION",
                        help="submitted notebooks, or folders of them (every .ipynb under a folder)")
    parser.add_argument("--exercise", default=None, help="the exercise every submission should be (default: from the "
                        "file name, else from the notebook's cells)")
    parser.add_argument("--solutions", type=Path, default=ROOT / "solutions",
                        help="the folder of solution notebooks the checks come from (default: the course's solutions/)")
    parser.add_argument("--timeout-cell", type=float, default=120.0, metavar="S", help="seconds one cell may run (default 120)")
    parser.add_argument("--timeout-total", type=float, default=600.0, metavar="S",
                        help="seconds one submission may run in all, kernel start included (default 600)")
    parser.add_argument("--json", type=Path, default=None, metavar="F", help="write every result to this JSON file")
    parser.add_argument("--csv", type=Path, default=None, metavar="F", help="write one row per submission per check to this CSV file")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)

    check_positive(parser, "--timeout-cell", args.timeout_cell)
    check_positive(parser, "--timeout-total", args.timeout_total)
    check_output_path(parser, "--json", args.json)
    check_output_path(parser, "--csv", args.csv)
    if not args.solutions.is_dir():
        bad_argument(parser, "--solutions", args.solutions, "a folder of solution notebooks (no such folder)")
    exercises = load_exercises(args.solutions)
    if not exercises:
        bad_argument(parser, "--solutions", args.solutions, "a folder of solution notebooks with check cells (none found)")
    check_choice(parser, "--exercise", args.exercise, exercises)
    paths = submission_paths(parser, args.submissions)

    # nbclient leaves output-polling tasks behind when a kernel dies or times out; asyncio would
    # log each as "Task exception was never retrieved", which says nothing about the student
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    start = time.monotonic()
    results = []
    for path, shown in paths:
        print(f"grading {shown} ...", file=sys.stderr, flush=True)
        results.append(grade(path, exercises, args.exercise, args.timeout_cell, args.timeout_total, shown=shown))
    seconds = time.monotonic() - start
    print(table(results))
    graded = sum(r.status == "graded" for r in results)
    print(f"\n{len(results)} submissions, {graded} graded to the end, in {seconds:.1f} s")
    for path, name in ((args.json, "JSON"), (args.csv, "CSV")):
        if path:
            print(f"{name}: {path}")
    if args.json:
        args.json.write_text(json.dumps(report(results, args, argv, seconds), indent=1) + "\n", encoding="utf-8")
    if args.csv:
        write_csv(results, args.csv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
