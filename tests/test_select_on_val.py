"""The validation-selection script: ranks on val, confirms on val, scores test once, resumes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from mlcourse import bench
from test_bench import tiny_splits

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "select_on_val.py"


@pytest.fixture
def select(monkeypatch):
    monkeypatch.setenv("MLCOURSE_FAST", "1")
    monkeypatch.setattr("mlcourse.data.sources.meta_splits", lambda source=None, size=28, rotations=False, seed=0: tiny_splits(size))
    spec = importlib.util.spec_from_file_location("select_on_val", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    yield module
    torch.set_num_threads(threads)


def test_search_ranks_confirms_and_scores_test_once(select, tmp_path, capsys):
    calls = []

    def runner(argv, log_path):
        calls.append(argv)
        return bench.main(argv)

    out = tmp_path / "sel"
    args = ["protonet", "--grid", "lr=1e-3,3e-3,1e-2", "--grid", "train_ways=3", "--top", "2", "--fraction", "0.5",
            "--episodes", "4", "--jobs", "1", "--out", str(out), "--final", "--fast"]
    summary = select.main(args, runner=runner)
    splits = [a[a.index("--split") + 1] for a in calls]
    assert splits == ["val"] * 3 + ["val"] * 2 + ["test"]  # rank 3, confirm 2, test once
    assert len(summary["runs"]) == 5 and summary["test"]["from_checkpoint"]  # the confirmed model, not retrained
    ranked = sorted((r for r in summary["runs"] if r["stage"] == "rank"), key=lambda r: -r["accuracy"])
    confirmed = [r["candidate"] for r in summary["runs"] if r["stage"] == "confirm"]
    assert confirmed == [r["candidate"] for r in ranked[:2]]
    best = max((r for r in summary["runs"] if r["stage"] == "confirm"), key=lambda r: r["accuracy"])
    assert summary["chosen"] == best["candidate"] and len(summary["paired_on_val"]) == 1
    rank_steps = [a[a.index("--steps") + 1] for a in calls[:3]]
    assert rank_steps == [str(max(1, -(-bench.METHODS["protonet"].fast_steps // 2)))] * 3  # half the steps
    assert (out / "summary.md").read_text().count("| rank |") == 3
    # Resumes: every finished run is read back, nothing is run again.
    calls.clear()
    assert select.main(args, runner=runner)["chosen"] == summary["chosen"] and calls == []


def test_candidates_differing_only_in_test_steps_share_one_trained_model(select, tmp_path):
    calls = []

    def runner(argv, log_path):
        calls.append(argv)
        return bench.main(argv)

    out = tmp_path / "sel"
    args = ["reptile", "--grid", "inner_steps=1,2", "--grid", "test_inner_steps=1,4", "--grid", "hidden=8", "--top", "2",
            "--fraction", "0.5", "--episodes", "4", "--jobs", "1", "--out", str(out), "--final", "--fast"]  # fmt: skip
    summary = select.main(args, runner=runner)
    assert len(calls) == 4 + 2 + 1 and all("--checkpoint" in a for a in calls)  # rank 4, confirm 2, test once
    rank_files = [json.loads(f.read_text()) for f in out.glob("rank-*.json")]
    assert sorted(r["from_checkpoint"] for r in rank_files) == [False, False, True, True]  # 2 trainings, 2 loads
    rank = [r for r in summary["runs"] if r["stage"] == "rank"]
    by_train = {}
    for r in rank:  # the two test-step values of one training share its steps and seconds
        by_train.setdefault(r["candidate"]["inner_steps"], set()).add((r["steps"], round(r["seconds"], 6)))
    assert all(len(v) == 1 for v in by_train.values()) and len(by_train) == 2
    final = json.loads(next(out.glob("final-test-*.json")).read_text())
    assert final["from_checkpoint"] and final["test_inner_steps"] == summary["chosen"]["test_inner_steps"]


@pytest.mark.parametrize("argv, names", [
    (["protonet", "--grid", "nope=1", "--out", "x"], "--grid nope=1"),
    (["protonet", "--grid", "lr=fast", "--out", "x"], "--grid lr=fast"),
    (["protonet", "--fraction", "0", "--out", "x"], "--fraction 0"),
    (["protonet", "--top", "0", "--out", "x"], "--top 0"),
    (["pixel-nn", "--out", "x"], "pixel-nn"),
])
def test_bad_arguments(select, argv, names, capsys):
    with pytest.raises(SystemExit) as e:
        select.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and names in err
