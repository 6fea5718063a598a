"""benchmarks/statistician_oneshot.py: the context posterior as a classifier, paired with a bench run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from mlcourse.metagen import NeuralStatistician, ReptileGAN
from test_bench import _one_thread, tiny_splits  # noqa: F401  (_one_thread: an autouse fixture, active here too)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def script(monkeypatch):
    monkeypatch.setattr("mlcourse.data.sources.meta_splits", lambda source=None, size=28, rotations=False, seed=0: tiny_splits(size))
    spec = importlib.util.spec_from_file_location("statistician_oneshot", ROOT / "benchmarks" / "statistician_oneshot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scores_the_bench_episodes_and_pairs_only_with_the_same_ones(script, tmp_path, capsys):
    from mlcourse.evaluate import evaluate

    torch.manual_seed(0)
    model = NeuralStatistician(size=28, context_dim=4, latent_dim=4, hidden=16, width=4)
    path = tmp_path / "ns.pt"
    model.save(path)
    out = script.main(["--checkpoint", str(path), "--episodes", "6", "--queries", "2", "--json", str(tmp_path / "r.json")])
    assert len(out["episode_accuracies"]) == 6 and json.loads((tmp_path / "r.json").read_text())["accuracy"] == out["accuracy"]
    # a "bench run" on the same episodes (same seed): the pairing is accepted and its difference is exact
    same = evaluate(lambda sx, sy, qx: torch.zeros(len(qx), 5), tiny_splits().test, 5, 1, 2, 6, seed=12345, progress=False)
    bench = {"method": "zeros", "accuracy": same.mean, "ci95": same.ci95, "fingerprint": same.fingerprint,
             "episode_accuracies": same.accuracies}  # fmt: skip
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    paired = script.main(["--checkpoint", str(path), "--episodes", "6", "--queries", "2", "--against", str(tmp_path / "bench.json")])
    assert paired["against"]["difference"] == pytest.approx(out["accuracy"] - same.mean)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:  # other episodes: refused
        script.main(["--checkpoint", str(path), "--episodes", "6", "--queries", "3", "--against", str(tmp_path / "bench.json")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "other episodes" in err


def test_bad_arguments_get_one_line_and_exit_2(script, tmp_path, capsys):
    gan = tmp_path / "gan.pt"
    ReptileGAN(size=28, z_dim=4, width=4).save(gan)
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    for argv, message in ((["--checkpoint", str(tmp_path / "missing.pt")], "no such file"),
                          (["--checkpoint", str(gan)], "not a NeuralStatistician"),
                          (["--checkpoint", str(tmp_path / "junk.pt")], "not a saved few-shot generator"),
                          (["--checkpoint", str(gan), "--episodes", "1"], "--episodes 1")):  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            script.main(argv)
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and message in err, err
