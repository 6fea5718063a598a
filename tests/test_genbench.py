"""The few-shot generation benchmark command (mlcourse.genbench): rows, JSON, bad arguments."""

from __future__ import annotations

import pytest
import torch

from mlcourse import genbench
from mlcourse.metrics import random_feature_net
from test_bench import _one_thread, tiny_splits  # noqa: F401  (_one_thread: an autouse fixture, active here too)


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setenv("MLCOURSE_FAST", "1")
    monkeypatch.setattr("mlcourse.data.sources.meta_splits", lambda source=None, size=28, rotations=False, seed=0: tiny_splits(size))
    # an untrained feature net: the tests check the plumbing, not the feature space
    monkeypatch.setattr("mlcourse.metrics.feature_net", lambda *a, **k: random_feature_net(0))


def run(args):
    return genbench.main(args + ["--threads", "1", "--json"])


def test_reference_rows_score_the_same_characters_and_say_what_they_are(tiny, capsys):
    real = run(["real", "--characters", "6", "--samples", "6", "--ways", "3"])
    jitter = run(["jitter", "--characters", "6", "--samples", "6", "--ways", "3"])
    assert real["scores"]["characters"] == jitter["scores"]["characters"]
    assert real["fingerprint"] != jitter["fingerprint"]  # the floor is scored against half the drawings: not paired
    assert real["split"] == "test" and real["eval_alphabets"] == ["test-alphabet0", "test-alphabet1"]
    assert len(real["scores"]["memorisation"]) == 6 and real["summary"]["characters"] == 6
    assert real["defaults_selected_on"] == "-" and real["meta_train_steps"] == 0 and not real["from_checkpoint"]
    val = run(["real", "--characters", "5", "--samples", "6", "--ways", "3", "--split", "val"])
    assert val["eval_alphabets"] == ["val-alphabet0", "val-alphabet1"] and val["fingerprint"] != real["fingerprint"]


@pytest.mark.parametrize("argv, message", [
    (["nope"], "METHOD nope"),
    (["real", "--shots", "0"], "--shots 0"),
    (["real", "--shots", "19"], "--shots 19"),
    (["real", "--characters", "9"], "--characters 9: must be at most 8"),
    (["real", "--ways", "7", "--characters", "5"], "--ways 7"),
    (["real", "--nll-shots", "a,b"], "--nll-shots a,b"),
    (["real", "--samples", "1"], "--samples 1"),
    (["real", "--retrain"], "--retrain"),
])  # fmt: skip
def test_bad_arguments_get_one_line_and_exit_2(tiny, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        run(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and message in err, err


def test_genbench_table_pairs_runs_on_the_same_characters_only(tiny, tmp_path, capsys):
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("genbench_table", Path(__file__).resolve().parents[1] / "benchmarks" / "genbench_table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    files = {}
    for name in ("real", "jitter"):
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(run([name, "--characters", "6", "--samples", "6", "--ways", "3"])))
    text = table.main([str(files["jitter"]), str(files["jitter"]), "--against", "jitter"])
    assert "| jitter | test | 4 |" in text and "+0.000 ± 0.000 (n.s.)" in text
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        table.main([str(files["real"]), str(files["jitter"]), "--against", "jitter"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "different characters" in err
