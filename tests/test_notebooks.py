"""Notebooks are stored clean, exercises match their solutions, and checks bite.

The notebooks themselves are executed by nbval (see README: the test command passes
``chapters`` and ``solutions`` to pytest with ``--nbval-lax``)."""

import json
import re
from pathlib import Path

import nbformat
import pytest

from mlcourse import authoring

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for d in ("chapters", "exercises", "solutions") for p in (ROOT / d).glob("*.ipynb"))


def test_there_are_notebooks():
    assert (ROOT / "chapters" / "00_welcome.ipynb").exists()
    assert any((ROOT / "solutions").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_stored_without_outputs(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs; run `python -m mlcourse.authoring clean {path.parent.name}`"
    nbformat.validate(nbformat.reads(path.read_text(encoding="utf-8"), as_version=4))


@pytest.mark.parametrize("path", sorted((ROOT / "chapters").glob("*.ipynb")), ids=lambda p: p.name)
def test_chapters_follow_the_template(path):
    """Each chapter says what it teaches, prints its device, and ends with a summary and references."""
    nb = nbformat.read(path, as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert "What this chapter teaches" in text
    assert "## Summary" in text and "## References" in text
    assert any("device_info" in c.source for c in nb.cells if c.cell_type == "code")


def test_exercises_are_generated_from_solutions():
    """Both derived things are up to date: each solution's nbgrader metadata and each exercise."""
    stale = authoring.generate_exercises(check=True)
    assert not stale, f"out of date: {stale}; run `python -m mlcourse.authoring exercises`"
    for sol, ex in authoring.exercise_pairs():
        assert ex.exists(), f"{ex} missing"
        ex_text = ex.read_text(encoding="utf-8")
        assert authoring.BEGIN not in ex_text and "NotImplementedError()" in ex_text


@pytest.mark.parametrize("cell, message", [
    (nbformat.v4.new_code_cell("x = 1\n### BEGIN SOLUTION\ny = 2"), "never closed"),
    (nbformat.v4.new_code_cell("x = 1"), "nothing for the learner"),
    # nbgrader replaces a whole marker line: text beside a marker would vanish, so it is refused
    (nbformat.v4.new_markdown_cell("Why? <!-- BEGIN SOLUTION -->\nBecause.\n<!-- END SOLUTION -->"), "stand alone"),
    (nbformat.v4.new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n### END SOLUTION"), "without BEGIN"),
])  # fmt: skip
def test_marker_errors_are_reported(cell, message):
    with pytest.raises(authoring.MarkerError, match=message):
        authoring.make_exercise(nbformat.v4.new_notebook(cells=[cell]), "demo")


def test_strip_keeps_indentation_and_markdown_answers():
    src = "def f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION\n"
    md = "Why?\n<!-- BEGIN SOLUTION -->\nBecause.\n<!-- END SOLUTION -->"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src), nbformat.v4.new_markdown_cell(md)])
    ex = authoring.make_exercise(nb)
    # line for line, as nbgrader: the trailing newline stays
    assert ex.cells[0].source == "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n"
    assert ex.cells[1].source == "Why?\nYOUR ANSWER HERE"  # nbgrader's stub: the marker line goes whole
    assert "BEGIN" in nb.cells[0].source  # the solution notebook is untouched


def _demo_solution():
    return nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Demo"),
        nbformat.v4.new_code_cell("from mlcourse.checks.ch01 import check_make_episode as check_a\nfrom mlcourse.checks import ch02"),
        nbformat.v4.new_code_cell("def f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION"),
        nbformat.v4.new_code_cell("check_a(f)"),
        nbformat.v4.new_code_cell("ch02.check_prototypes(f)"),
        nbformat.v4.new_code_cell("check_a(f)  # the same check again gets its own grade_id"),
        nbformat.v4.new_code_cell("result = check_a(f)  # not a bare call: an experiment, not a check cell"),
        nbformat.v4.new_markdown_cell("Why?\n<!-- BEGIN SOLUTION -->\nBecause.\n<!-- END SOLUTION -->"),
        nbformat.v4.new_code_cell("%matplotlib inline\nplot(f)"),
    ])


def test_nbgrader_metadata_is_derived_from_markers_and_checks():
    nb = _demo_solution()
    meta = authoring.nbgrader_cell_metadata(nb)
    summary = [m and (m["grade_id"], m["grade"], m["solution"], m["locked"], m.get("points")) for m in meta]
    assert summary == [
        (f"cell-{nb.cells[0].id}", False, False, True, None),   # instructions: read-only
        (f"cell-{nb.cells[1].id}", False, False, True, None),   # the checks' import: read-only
        ("f", False, True, False, None),                        # solution cell, named after its function
        ("check_make_episode", True, False, True, 1),           # autograded, one point
        ("check_prototypes", True, False, True, 1),
        ("check_make_episode_2", True, False, True, 1),
        None,                                                   # free code cell: no metadata
        ("answer_1", True, True, False, 1),                     # written answer, graded by hand
        None,
    ]
    assert all(m is None or m["schema_version"] == 3 for m in meta)
    assert authoring.check_cells(nb) == [3, 4, 5]


def test_stale_or_missing_nbgrader_metadata_is_caught(tmp_path):
    (tmp_path / "solutions").mkdir()
    solution = tmp_path / "solutions" / "demo.ipynb"
    solution.write_text(authoring.render(_demo_solution()), encoding="utf-8")
    assert authoring.generate_exercises(tmp_path, check=True) == ["solutions/demo.ipynb", "exercises/demo.ipynb"]
    assert sorted(authoring.generate_exercises(tmp_path)) == ["exercises/demo.ipynb", "solutions/demo.ipynb"]
    assert authoring.generate_exercises(tmp_path, check=True) == []
    nb = nbformat.read(solution, as_version=4)
    assert nb.cells[3].metadata.nbgrader.points == 1 and nb.cells[3].source == "check_a(f)"  # sources untouched
    nb.cells[3].metadata.nbgrader.points = 5       # a hand edit
    del nb.cells[2].metadata["nbgrader"]           # and a lost one
    solution.write_text(authoring.render(nb), encoding="utf-8")
    assert authoring.generate_exercises(tmp_path, check=True) == ["solutions/demo.ipynb"]
    nb.cells[3].source = "check_a(f)\ncheck_a(f)"  # an edited check cell: the exercise is stale too
    solution.write_text(authoring.render(nb), encoding="utf-8")
    assert authoring.generate_exercises(tmp_path, check=True) == ["solutions/demo.ipynb", "exercises/demo.ipynb"]


def _run(path):
    nb = nbformat.read(path, as_version=4)
    authoring.notebook_client(nb, timeout=300, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


@pytest.mark.parametrize("sol,ex", authoring.exercise_pairs(), ids=lambda p: p.name)
def test_unsolved_exercise_checks_fail_with_messages(sol, ex):
    """Run the exercise as a learner receives it: every check cell must fail, with the
    check's own message, not a bare traceback."""
    nb = _run(ex)
    check_cells = [nb.cells[i] for i in authoring.check_cells(nb)]
    assert check_cells, "an exercise without check cells"
    for cell in check_cells:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert errors, f"check cell `{cell.source.strip()}` passed on an unsolved exercise"
        assert errors[0].ename == "CheckFailed", f"`{cell.source.strip()}` raised {errors[0].ename}: {errors[0].evalue}"
        assert "is not implemented yet" in errors[0].evalue


@pytest.mark.parametrize("path", sorted((ROOT / "chapters").glob("*.ipynb")), ids=lambda p: p.name)
def test_chapter_title_is_one_clean_heading(path):
    """The first line is "# NN · Title" (or "# NNb · Title" for a chapter between two others): one level-1 heading, nothing stray (a "# # 07" renders a "#")."""
    first = json.loads(path.read_text())["cells"][0]
    line = "".join(first["source"]).splitlines()[0]
    assert first["cell_type"] == "markdown" and re.fullmatch(r"# \d\d[a-z]? · [^#].*", line), line


def test_a_reply_is_awaited_in_slices_up_to_the_cell_limit(monkeypatch):
    """The workaround for jupyter/nbclient#312: a missed wake-up costs one slice, not the cell's limit."""
    import asyncio
    import time
    from queue import Empty

    monkeypatch.setattr(authoring, "REPLY_POLL_SECONDS", 0.05)
    calls = []

    async def late(timeout=None):  # the reply is there from the third look on
        calls.append(timeout)
        if len(calls) < 3:
            await asyncio.sleep(timeout)
            raise Empty
        return {"msg": "reply"}

    assert asyncio.run(authoring.in_slices(late)(timeout=10)) == {"msg": "reply"}
    assert len(calls) == 3 and all(t <= 0.05 for t in calls)

    async def never(timeout=None):
        await asyncio.sleep(timeout)
        raise Empty

    start = time.monotonic()
    with pytest.raises(Empty):
        asyncio.run(authoring.in_slices(never)(timeout=0.2))
    assert 0.2 <= time.monotonic() - start < 1.0


def test_a_widget_cell_runs_to_the_end_with_the_patient_client():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import ipywidgets as w\nw.interact(lambda x=1: print(x), x=w.IntSlider(1, 0, 3));"),
        nbformat.v4.new_code_cell("print('after')"),
    ])  # fmt: skip
    authoring.notebook_client(nb, timeout=120, kernel_name="python3").execute()
    assert "after" in nb.cells[1].outputs[0]["text"]
