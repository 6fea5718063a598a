"""python -m mlcourse.grade on a made-up class of real notebooks, built from solutions/ and exercises/.

Most cases are copies of exercise 01 (the cheapest to grade: about 4 s a submission on an idle
CPU, mostly the kernel's torch import), edited as students edit them. They are graded in one
run of ``main`` shared by the module (one fresh kernel per notebook that is one); the
total-time limit needs its own, second run. The endless loop costs one ``--timeout-cell``.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

pytest.importorskip("nbclient", reason="nbclient is not installed (pip install -e '.[teach]')")

from mlcourse import authoring, grade  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NAME = "01_episodes_and_evaluation"
CHECKS = ["check_make_episode", "check_confidence_interval", "check_nearest_neighbour"]
TIMEOUT_CELL = 30  # the loop's cost; every honest cell of exercise 01 takes a few seconds
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


def solution():
    return nbformat.read(ROOT / "solutions" / f"{NAME}.ipynb", as_version=4)


def exercise():
    return nbformat.read(ROOT / "exercises" / f"{NAME}.ipynb", as_version=4)


def cell_of(nb, grade_id: str) -> int:
    return next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def with_region(nb, grade_id: str, lines: list[str]):
    """The solution region of cell ``grade_id`` replaced by ``lines``."""
    cell = nb.cells[cell_of(nb, grade_id)]
    head, rest = cell.source.split(authoring.BEGIN, 1)
    _, tail = rest.split(authoring.END, 1)
    indent = head.split("\n")[-1]
    cell.source = head.rstrip(" ") + "\n".join(indent + line for line in lines) + tail
    return nb


def insert_before(nb, grade_id: str, source: str):
    nb.cells.insert(cell_of(nb, grade_id), nbformat.v4.new_code_cell(source))
    return nb


def tampered():
    """Unsolved, and every way of cheating a check: the first check cell edited, the second
    deleted, a stand-in for the third defined in the student's own cell, and a cell that raises."""
    nb = exercise()
    nb.cells[cell_of(nb, "check_make_episode")].source = "print('check passed')"
    nb.cells.pop(cell_of(nb, "check_confidence_interval"))
    nb.cells[cell_of(nb, "nearest_neighbour")].source += "\n\n\ndef check_nearest_neighbour(fn):\n    print('all good')"
    return insert_before(nb, "make_episode", "raise ValueError('my own bug')")


def other_exercise():
    return nbformat.read(ROOT / "solutions" / "02_prototypical_networks.ipynb", as_version=4)


SUBMISSIONS = {
    "solved.ipynb": solution,
    "unsolved.ipynb": exercise,
    "tampered.ipynb": tampered,
    "loop.ipynb": lambda: with_region(solution(), "make_episode", ["while True:", "    pass"]),
    "exits.ipynb": lambda: insert_before(solution(), "check_confidence_interval", "import os\nos._exit(1)"),
    "killed.ipynb": lambda: insert_before(solution(), "check_nearest_neighbour",
                                          "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"),
    f"carol_{NAME}.ipynb": other_exercise,   # named for exercise 01, holds exercise 02
    "dave.ipynb": lambda: nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('hello')")]),
}
NOT_NOTEBOOKS = {"photo.ipynb": PNG, "empty.ipynb": b"", "broken.ipynb": b'{"cells": [', "data.ipynb": b'{"a": 1}'}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade the whole class once: ``(exit status, stdout, {file: result}, JSON, CSV rows)``."""
    root = tmp_path_factory.mktemp("grade")
    klass = root / "class"
    klass.mkdir()
    for file, make in SUBMISSIONS.items():
        nbformat.write(make(), klass / file)
    for file, raw in NOT_NOTEBOOKS.items():
        (klass / file).write_bytes(raw)
    out = root / "out.json"
    table = root / "out.csv"
    done = subprocess.run([sys.executable, "-m", "mlcourse.grade", str(klass), "--timeout-cell", str(TIMEOUT_CELL),
                           "--timeout-total", "300", "--json", str(out), "--csv", str(table)],
                          capture_output=True, text=True, timeout=900, cwd=root)
    report = json.loads(out.read_text())
    with open(table, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    results = {r["file"]: r for r in report["submissions"]}
    return done, results, report, rows


def checks_of(result):
    return {c["check"]: c for c in result["checks"]}


def test_every_file_is_reported_and_the_run_succeeds(graded):
    done, results, _, _ = graded
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout and "Traceback" not in done.stderr
    assert set(results) == set(SUBMISSIONS) | set(NOT_NOTEBOOKS)
    for file in results:  # the table names every student's file
        assert file in done.stdout


def test_solved_scores_full_marks_unsolved_zero(graded):
    _, results, _, _ = graded
    solved, unsolved = results["solved.ipynb"], results["unsolved.ipynb"]
    assert solved["exercise"] == unsolved["exercise"] == NAME  # found by content: the names say nothing
    assert solved["status"] == "graded" and (solved["points"], solved["max_points"]) == (3, 3)
    assert [c["check"] for c in solved["checks"]] == CHECKS
    assert all(c["result"] == "passed" and c["cell"] == "intact" for c in solved["checks"])
    assert unsolved["status"] == "graded" and (unsolved["points"], unsolved["max_points"]) == (0, 3)
    for check in unsolved["checks"]:
        assert check["result"] == "failed" and check["message"].startswith("CheckFailed: ")
        assert "is not implemented yet" in check["message"] and "\n" not in check["message"]


def test_editing_deleting_or_faking_a_check_gains_nothing(graded):
    _, results, _, _ = graded
    result = results["tampered.ipynb"]
    assert result["status"] == "graded" and result["points"] == 0
    checks = checks_of(result)
    assert [checks[c]["cell"] for c in CHECKS] == ["edited", "deleted", "intact"]
    for name in CHECKS:  # each ran as the solution has it, and failed on the unsolved code
        assert checks[name]["result"] == "failed" and "is not implemented yet" in checks[name]["message"], checks[name]
    notes = " | ".join(result["notes"])
    assert "check cell edited: check_make_episode" in notes
    assert "check cell deleted: check_confidence_interval" in notes
    assert "raised ValueError: my own bug" in notes


def test_an_endless_loop_times_out_and_grading_goes_on(graded):
    _, results, _, _ = graded
    result = results["loop.ipynb"]
    checks = checks_of(result)
    assert checks["check_make_episode"]["result"] == "timed out"
    assert f"ran past {TIMEOUT_CELL} s" in checks["check_make_episode"]["message"]
    assert checks["check_confidence_interval"]["result"] == checks["check_nearest_neighbour"]["result"] == "passed"
    assert result["status"] == "graded" and result["points"] == 2


@pytest.mark.parametrize("file, passed", [("exits.ipynb", 1), ("killed.ipynb", 2)])
def test_a_crashed_kernel_is_reported(graded, file, passed):
    _, results, _, _ = graded
    result = results[file]
    assert result["status"] == "kernel died" and "the kernel died in cell" in result["message"]
    assert [c["result"] for c in result["checks"]] == ["passed"] * passed + ["not run"] * (3 - passed)
    assert result["points"] == passed


@pytest.mark.parametrize("file, words", [
    ("photo.ipynb", "not a text file"), ("empty.ipynb", "empty"), ("broken.ipynb", "not a readable Jupyter notebook"),
    ("data.ipynb", "not a readable Jupyter notebook"),
])
def test_not_a_notebook(graded, file, words):
    _, results, _, _ = graded
    result = results[file]
    assert result["status"] == "not a notebook" and words in result["message"]
    assert result["exercise"] is None and result["checks"] == [] and result["points"] == 0


def test_different_and_unknown_exercises(graded):
    _, results, _, _ = graded
    different = results[f"carol_{NAME}.ipynb"]
    assert different["status"] == "different exercise" and different["exercise"] == NAME
    assert "02_prototypical_networks" in different["message"] and different["points"] == 0
    assert [c["result"] for c in different["checks"]] == ["not run"] * 3
    unknown = results["dave.ipynb"]
    assert unknown["status"] == "unknown exercise" and unknown["exercise"] is None and unknown["checks"] == []


def test_json_and_csv_hold_the_roster(graded):
    _, results, report, rows = graded
    assert report["timeout_cell"] == TIMEOUT_CELL and report["mlcourse_fast"] == "1"
    assert len(rows) == sum(max(1, len(r["checks"])) for r in results.values())
    assert set(rows[0]) == set(grade.CSV_COLUMNS)
    by_key = {(r["file"], r["check"]): r for r in rows}
    row = by_key[("tampered.ipynb", "check_make_episode")]
    assert (row["status"], row["result"], row["cell"], float(row["points"])) == ("graded", "failed", "edited", 0.0)
    row = by_key[("solved.ipynb", "check_nearest_neighbour")]
    assert (row["result"], float(row["points"]), float(row["total_points"]), float(row["total_max_points"])) == ("passed", 1, 3, 3)
    assert by_key[("photo.ipynb", "")]["status"] == "not a notebook"
    for result in results.values():
        assert result["points"] == sum(c["points"] for c in result["checks"])


def test_the_total_time_limit(tmp_path, capsys):
    nb = insert_before(solution(), "check_confidence_interval", "import time\ntime.sleep(600)")
    nbformat.write(nb, tmp_path / f"slow_{NAME}.ipynb")
    assert grade.main([str(tmp_path / f"slow_{NAME}.ipynb"), "--timeout-total", "12", "--json", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())["submissions"][0]
    assert result["status"] == "out of time" and "12 s in all" in result["message"], result
    assert result["seconds"] < 60
    assert [c["result"] for c in result["checks"]][1:] == ["not run", "not run"]
    assert f"slow_{NAME}.ipynb" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------
# Bad arguments: one line, exit status 2, nothing graded
# ---------------------------------------------------------------------------------------
def refused(argv, capsys, *words):
    with pytest.raises(SystemExit) as stop:
        grade.main(argv)
    assert stop.value.code == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("python -m mlcourse.grade: error: "), captured.err
    assert "grading" not in captured.err and not captured.out
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_bad_arguments(tmp_path, capsys):
    good = tmp_path / "good.ipynb"
    nbformat.write(solution(), good)
    (tmp_path / "empty").mkdir()
    (tmp_path / "nothing_here").mkdir()
    refused([], capsys, "SUBMISSION")
    refused([str(tmp_path / "absent.ipynb")], capsys, "SUBMISSION", "absent.ipynb", "no such file")
    refused([str(tmp_path / "empty")], capsys, "SUBMISSION", "empty", "no .ipynb")
    refused([str(good), "--timeout-cell", "0"], capsys, "--timeout-cell", "0", "above 0")
    refused([str(good), "--timeout-total", "-5"], capsys, "--timeout-total", "-5")
    refused([str(good), "--timeout-cell", "soon"], capsys, "--timeout-cell", "soon")
    refused([str(good), "--json", str(tmp_path / "no" / "r.json")], capsys, "--json", "does not exist")
    refused([str(good), "--csv", str(tmp_path)], capsys, "--csv", "folder")
    refused([str(good), "--exercise", "01_episodes"], capsys, "--exercise", "01_episodes", NAME)
    refused([str(good), "--solutions", str(tmp_path / "absent")], capsys, "--solutions", "no such folder")
    refused([str(good), "--solutions", str(tmp_path / "nothing_here")], capsys, "--solutions", "check cells")
    refused([str(good), "--timout-cell", "5"], capsys, "--timout-cell")


def test_bad_argument_from_the_command_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mlcourse.grade", str(tmp_path / "x.ipynb")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("python -m mlcourse.grade: error: SUBMISSION")


def test_the_exercise_can_be_given(tmp_path, capsys, monkeypatch):
    """--exercise overrides the name: exercise 02 under 01's name is then "different"."""
    nbformat.write(other_exercise(), tmp_path / "erin.ipynb")
    monkeypatch.setattr(grade, "run", lambda *a, **k: pytest.fail("ran a kernel for a different exercise"))
    assert grade.main([str(tmp_path / "erin.ipynb"), "--exercise", NAME, "--json", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())["submissions"][0]
    assert result["status"] == "different exercise" and "--exercise" in result["message"]
