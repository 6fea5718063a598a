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
    (["statistician", "--adapt-steps", "3"], "statistician does not adapt by training"),
    (["reptile-gan", "--adapt-steps", "-1"], "--adapt-steps -1"),
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


def test_adaptation_steps_are_an_evaluation_setting_one_checkpoint_serves_every_value(tiny, tmp_path):
    path = str(tmp_path / "figr.pt")
    args = ["reptile-gan", "--characters", "5", "--samples", "4", "--ways", "3", "--checkpoint", path]
    first = run(args)
    assert not first["from_checkpoint"] and first["adapt_steps"] == genbench.METHODS["reptile-gan"].adapt_steps == 300
    again = run(args + ["--adapt-steps", "2"])
    assert again["from_checkpoint"] and again["adapt_steps"] == 2 and again["fingerprint"] == first["fingerprint"]
    assert again["scores"]["fd"] != first["scores"]["fd"]  # the value is used


def test_genbench_select_chooses_the_lowest_validation_criterion_and_scores_test_once(tmp_path, capsys):
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("genbench_select", Path(__file__).resolve().parents[1] / "benchmarks" / "genbench_select.py")
    select = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(select)
    out = tmp_path / "sel"
    argv = ["scratch-gan", "--data", "glyphs", "--adapt-steps", "0,3", "--out", str(out), "--final", "--",
            "--fast", "--characters", "5", "--samples", "4", "--ways", "3", "--threads", "1"]
    result = select.main(argv)
    vals = {v: json.loads((out / f"scratch-gan-glyphs-val-adapt{v}.json").read_text())["summary"]["fd"]["mean"] for v in (0, 3)}
    assert result["chosen"] == min(vals, key=vals.get) and set(result["validation"]) == {"0", "3"}
    test = json.loads((out / "scratch-gan-glyphs-test.json").read_text())
    assert test["split"] == "test" and test["adapt_steps"] == result["chosen"]
    assert sorted(p.name for p in out.glob("*test*.json")) == ["scratch-gan-glyphs-test.json"]  # test scored once
    assert "(chosen)" in (out / "scratch-gan-glyphs-selection.md").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        select.main(["statistician", "--adapt-steps", "1,2", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "does not adapt by training" in err


def test_genbench_grids_draws_each_methods_samples_beside_the_support(tiny, tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    from mlcourse.metagen import NeuralStatistician

    spec = importlib.util.spec_from_file_location("genbench_grids", Path(__file__).resolve().parents[1] / "benchmarks" / "genbench_grids.py")
    grids = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(grids)
    folder = tmp_path / "runs"
    folder.mkdir()
    NeuralStatistician(size=28, context_dim=4, latent_dim=4, hidden=16, width=4).save(folder / "statistician-glyphs.pt")
    out = grids.main(["--data", "glyphs", "--folder", str(folder), "--out", str(tmp_path / "g.png"), "--characters", "1",
                      "--shots", "1,2", "--samples", "2"])  # fmt: skip
    assert out.exists() and out.stat().st_size > 1000
    err = capsys.readouterr().err
    assert "reptile-gan: no checkpoint" in err and "statistician" not in err  # what is missing is said, the rest drawn
    for argv, message in ((["--folder", str(tmp_path / "none")], "no such folder"), (["--folder", str(folder), "--shots", "a"], "--shots a"),
                          (["--folder", str(folder), "--shots", "0,4"], "--shots 0,4")):  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            grids.main(argv + ["--out", str(tmp_path / "x.png")])
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and message in err, err


def test_genbench_table_pairs_nll_by_support_size(tmp_path, capsys):
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("genbench_table", Path(__file__).resolve().parents[1] / "benchmarks" / "genbench_table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    summary = {k: {"mean": 0.0, "ci95": 0.0} for k in table.SCORES} | {"pooled_fd": 0.0}

    def run(method, nll, fingerprint="f"):
        return {"method": method, "split": "test", "shots": 4, "summary": summary, "scores": {k: [0.0] * 3 for k in table.SCORES},
                "fingerprint": fingerprint, "meta_train_steps": 1, "meta_train_seconds": 1.0, "threads": 1,
                "nll_by_shots": {s: {"mean": sum(v) / 3, "ci95": 0.0, "per_character": v} for s, v in nll.items()}}  # fmt: skip

    files = []
    for name, r in (("a", run("vae", {"0": [100.0, 110, 120], "4": [100.0, 110, 120]})),
                    ("b", run("statistician", {"0": [110.0, 120, 130], "4": [90.0, 101, 112]})),
                    ("c", run("other", {"0": [1.0, 2, 3], "4": [1.0, 2, 3]}, fingerprint="g"))):  # fmt: skip
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(json.dumps(r))
    text = table.main([str(files[0]), str(files[1]), "--nll-against", "vae"])
    assert "| statistician | +10.00 ± 0.00 | -9.00 ± " in text
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        table.main([str(f) for f in files] + ["--nll-against", "vae"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "different characters" in err


def test_checkpoint_keys_written_with_the_adaptation_steps_still_load(tiny, tmp_path):
    """Keys written before adaptation steps became an evaluation setting held them in the model's config."""
    from mlcourse.train import load_checkpoint, save_checkpoint

    path = str(tmp_path / "figr.pt")
    args = ["reptile-gan", "--characters", "5", "--samples", "4", "--ways", "3", "--checkpoint", path]
    run(args)
    state = load_checkpoint(path)
    assert "adapt_steps" not in state["genbench"]["model"]["config"]
    state["genbench"]["model"]["config"]["adapt_steps"] = 100  # what an older key looks like
    save_checkpoint(path, state)
    again = run(args)
    assert again["from_checkpoint"] and again["adapt_steps"] == 300
