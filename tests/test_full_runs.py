"""Kept full-run outputs (mlcourse.full_runs) and the full-mode times the chapters state."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from mlcourse import full_runs

ROOT = Path(__file__).resolve().parents[1]


def _png() -> str:
    import io

    from PIL import Image

    image = Image.new("RGB", (40, 30), (255, 255, 255))
    for x in range(40):
        image.putpixel((x, x * 30 // 40), (200, 30, 30))
    data = io.BytesIO()
    image.save(data, format="PNG")
    return base64.b64encode(data.getvalue()).decode()


PNG = _png()


def _record(complete=True, **extra):
    record = {"notebook": "chapters/99_toy.ipynb", "mode": "full", "threads": 1, "hardware": "Linux x86_64, 2 cores",
              "gpu": False, "commit": "abc1234", "started": "2026-12-05T12:00:00+00:00", "finished": "2026-12-05T12:30:00+00:00",
              "command": "python benchmarks/chapter_times.py chapters/99_toy.ipynb --mode full --threads 1",
              "complete": complete, "wall_seconds": 1815.4, "cpu_seconds": 1790.2,
              "load_average": {"min": 1.9, "max": 2.3, "mean": 2.05},
              "cells": [{"index": 1, "first_line": "print('acc')", "seconds": 12.5, "cpu_seconds": 12.0}]}
    record.update(extra)
    return record


def _executed(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# toy"), nbformat.v4.new_code_cell("print('acc')\nplot()")]
    nb.cells[1].outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="training 10%\rtraining 100%\naccuracy 91.5%\n"),
        nbformat.v4.new_output("stream", name="stderr", text="a warning\n"),
        nbformat.v4.new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure size 600x300 with 1 Axes>"}),
    ]
    path = tmp_path / "99_toy.ipynb"
    nbformat.write(nb, path)
    return path, nb.cells[1].id


@pytest.fixture
def dirs(tmp_path):
    out, times = tmp_path / "full-runs", tmp_path / "times"
    times.mkdir()
    (times / "99_toy-full.json").write_text(json.dumps(_record()))
    return out, times


def test_harvest_keeps_text_pictures_and_provenance(tmp_path, dirs, monkeypatch, capsys):
    out, times = dirs
    executed, cell_id = _executed(tmp_path)
    path = full_runs.harvest(executed, {"accuracy": cell_id}, out=out, times=times)
    kept = json.loads(path.read_text())
    cell = kept["cells"]["accuracy"]
    # the progress bar's last state, stdout only, no figure repr
    assert cell["text"] == "training 100%\naccuracy 91.5%\n"
    assert cell["seconds"] == 12.5 and cell["index"] == 1 and cell["first_line"] == "print('acc')"
    import io

    from PIL import Image

    kept_image = Image.open(out / "99_toy" / cell["images"][0]).convert("RGB")
    original = Image.open(io.BytesIO(base64.b64decode(PNG))).convert("RGB")
    assert kept_image.tobytes() == original.tobytes()  # fewer colours, the same picture
    assert kept["run"]["wall_seconds"] == 1815.4 and "cells" not in kept["run"]
    monkeypatch.setattr(full_runs, "FULL_RUNS", out)
    shown = full_runs.show("99_toy", "accuracy", display=False)
    printed = capsys.readouterr().out
    assert shown is not None and "accuracy 91.5%" in printed
    assert "30 min 15 s wall" in printed and "load average 2.05" in printed and "commit abc1234" in printed
    assert "python benchmarks/chapter_times.py chapters/99_toy.ipynb" in printed
    with pytest.raises(KeyError, match="kept: accuracy"):
        full_runs.show("99_toy", "nonsense", display=False)
    with pytest.raises(FileNotFoundError, match="harvest"):
        full_runs.show("98_missing", "x", display=False)


def test_harvest_refuses_incomplete_runs_and_unknown_cells(tmp_path, dirs):
    out, times = dirs
    executed, cell_id = _executed(tmp_path)
    with pytest.raises(KeyError, match="no code cell with id 'nope'"):
        full_runs.harvest(executed, {"x": "nope"}, out=out, times=times)
    (times / "99_toy-full.json").write_text(json.dumps(_record(complete=False)))
    with pytest.raises(ValueError, match="incomplete run"):
        full_runs.harvest(executed, {"x": cell_id}, out=out, times=times)


def test_a_new_run_replaces_the_old_outputs(tmp_path, dirs):
    out, times = dirs
    executed, cell_id = _executed(tmp_path)
    full_runs.harvest(executed, {"a": cell_id, "b": cell_id}, out=out, times=times)
    (times / "99_toy-full.json").write_text(json.dumps(_record(started="2026-12-06T08:00:00+00:00")))
    kept = json.loads(full_runs.harvest(executed, {"a": cell_id}, out=out, times=times).read_text())
    assert list(kept["cells"]) == ["a"] and sorted(p.name for p in (out / "99_toy").iterdir()) == ["a-0.png"]


def test_long_text_keeps_start_and_end(tmp_path, dirs):
    out, times = dirs
    executed, cell_id = _executed(tmp_path)
    nb = nbformat.read(executed, as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="first\n" + "x" * 10_000 + "\nlast\n")]
    nbformat.write(nb, executed)
    text = json.loads(full_runs.harvest(executed, {"a": cell_id}, out=out, times=times).read_text())["cells"]["a"]["text"]
    assert text.startswith("first") and text.rstrip().endswith("last") and "[...]" in text
    assert len(text) <= full_runs.TEXT_LIMIT + 10


def test_command_line_refuses_bad_arguments_in_one_line(tmp_path):
    for args, needle in ((["harvest", str(tmp_path / "none.ipynb"), "a=b"], "executed"),
                         (["harvest", __file__, "no-equals-sign"], "LABEL=CELL_ID"),
                         (["frobnicate"], "invalid choice")):
        done = subprocess.run([sys.executable, "-m", "mlcourse.full_runs", *args], capture_output=True, text=True, cwd=ROOT)
        assert done.returncode == 2, done
        assert needle in done.stderr and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- what the chapters state

SHOW = re.compile(r"full_runs\.show\(\s*\"([^\"]+)\"\s*,\s*\"([^\"]+)\"")
CHAPTERS = sorted((ROOT / "chapters").glob("0[0-8]_*.ipynb"))


def _source(path):
    return [(c.cell_type, c.source) for c in nbformat.read(path, as_version=4).cells]


@pytest.mark.parametrize("path", sorted((ROOT / "chapters").glob("*.ipynb")), ids=lambda p: p.stem)
def test_every_shown_full_run_output_is_kept(path):
    for kind, source in _source(path):
        if kind != "code":
            continue
        for chapter, label in SHOW.findall(source):
            assert chapter == path.stem, f"{path.name} shows another chapter's full run ({chapter})"
            kept = full_runs.load(chapter)
            assert label in kept["cells"], f"{path.name}: no kept output {label!r}"
            assert kept["run"]["complete"] and kept["run"]["mode"] == "full"
            for name in kept["cells"][label]["images"]:
                assert (full_runs.FULL_RUNS / chapter / name).is_file()
            # the kept run is the one whose time the chapter states
            assert kept["run"]["started"] == full_runs.timing(chapter)["started"]


TIME = re.compile(r"Full mode: \*\*(\d+ min \d\d s|\d+ s)\*\* wall")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_each_chapter_states_its_measured_full_mode_time(path):
    text = "\n".join(source for kind, source in _source(path) if kind == "markdown")
    stated = TIME.findall(text)
    assert stated, f"{path.name} does not state its full-mode wall time ('Full mode: **N min SS s** wall')"
    record = full_runs.timing(path.stem)
    assert record["complete"], f"docs/runs/chapter-times/{path.stem}-full.json records an incomplete run"
    assert stated == [full_runs.chapter_time_sentence(path.stem)], (stated, record["wall_seconds"])
    assert "benchmarks/chapter_times.py" in text


# ---------------------------------------------------------------- benchmarks/chapter_times.py

def _times(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "chapter_times.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def test_chapter_times_records_every_cell_and_a_failure(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import os, time\nprint(os.environ['MLCOURSE_FAST'], os.environ['OMP_NUM_THREADS'])"),
                nbformat.v4.new_markdown_cell("text"),
                nbformat.v4.new_code_cell("time.sleep(0.3)")]
    good = tmp_path / "good.ipynb"
    nbformat.write(nb, good)
    nb.cells.append(nbformat.v4.new_code_cell("raise RuntimeError('broken cell')"))
    bad = tmp_path / "bad.ipynb"
    nbformat.write(nb, bad)
    out = tmp_path / "times"
    done = _times(good, "--mode", "fast", "--threads", "2", "--out-dir", out, "--keep", tmp_path / "kept")
    assert done.returncode == 0, done.stderr
    record = json.loads((out / "good-fast.json").read_text())
    assert record["complete"] and record["mode"] == "fast" and record["threads"] == 2
    assert [c["index"] for c in record["cells"]] == [0, 2] and record["cells"][1]["seconds"] >= 0.3
    assert record["wall_seconds"] >= 0.3 and record["load_average"]["mean"] is not None
    kept = nbformat.read(tmp_path / "kept" / "good.ipynb", as_version=4)
    assert kept.cells[0].outputs[0]["text"] == "1 2\n"  # the kernel saw the mode and the threads
    done = _times(bad, "--mode", "fast", "--out-dir", out)
    assert done.returncode == 1
    record = json.loads((out / "bad-fast.json").read_text())
    assert not record["complete"] and "broken cell" in record["error"] and len(record["cells"]) == 3
    assert "| `good` |" in _times("--table", "--mode", "fast", "--out-dir", out).stdout


@pytest.mark.parametrize("args, needle", [(["--threads", "0", __file__], "--threads 0"),
                                          (["--mode", "slow", __file__], "--mode slow"),
                                          ([__file__], "an existing .ipynb file"),
                                          ([], "or --table")])
def test_chapter_times_refuses_bad_arguments_in_one_line(args, needle):
    done = _times(*args)
    assert done.returncode == 2 and needle in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_every_tracked_file_is_under_2_mib():
    """Issue 13: a fresh clone carries the kept full runs and the reference models; no file over 2 MiB."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    sizes = {name: (ROOT / name).stat().st_size for name in listed.decode().split("\0") if name and (ROOT / name).is_file()}
    assert sizes, "git lists no files"
    big = {name: size for name, size in sizes.items() if size >= 2 * 2**20}
    assert not big, f"tracked files of 2 MiB or more: {big}"
    kept = sum(size for name, size in sizes.items() if name.startswith("docs/full-runs/"))
    assert kept < 12 * 2**20, f"docs/full-runs holds {kept / 2**20:.1f} MiB: keep fewer or smaller pictures"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_annotate_rebuilds_the_time_paragraph_and_the_show_cells(path, tmp_path):
    """The committed chapters are what `python -m mlcourse.full_runs annotate` writes from the kept runs."""
    original = nbformat.read(path, as_version=4)
    copy = tmp_path / path.name
    nbformat.write(original, copy)
    assert not full_runs.annotate(copy), f"{path.name} differs from what its kept full run says: run annotate"
    stripped = nbformat.read(path, as_version=4)
    stripped.cells = [c for c in stripped.cells
                      if not c.source.startswith(full_runs.TIME_HEADING) and "full_runs.show(" not in c.source]
    nbformat.write(stripped, copy)
    assert full_runs.annotate(copy)
    rebuilt = nbformat.read(copy, as_version=4)
    assert [(c.cell_type, c.source) for c in rebuilt.cells] == [(c.cell_type, c.source) for c in original.cells]


def test_annotate_refuses_a_chapter_without_a_timed_run_in_one_line(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 98 · untimed"), nbformat.v4.new_code_cell("x = 1")]
    path = tmp_path / "98_untimed.ipynb"
    nbformat.write(nb, path)
    for target in (path, tmp_path / "missing.ipynb"):
        done = subprocess.run([sys.executable, "-m", "mlcourse.full_runs", "annotate", str(target)],
                              capture_output=True, text=True, cwd=ROOT)
        assert done.returncode == 2 and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
