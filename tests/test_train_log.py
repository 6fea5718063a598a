"""train_loop's plain progress lines (progress="log"): what a long run shows when its output is
not a terminal."""

from __future__ import annotations

import re
import sys

import pytest
import torch

from mlcourse import train
from mlcourse.train import train_loop


class FakeClock:
    """Stands in for the ``time`` module inside mlcourse.train: seconds pass only when told."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(train, "time", fake)
    return fake


def stepping(clock, seconds_per_step=1.0, **extra):
    """A step that takes ``seconds_per_step`` on the fake clock and whose loss is its index."""

    def step(i):
        clock.now += seconds_per_step
        return {"loss": float(i), **extra}

    return step


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_log_lines_after_the_first_step_every_interval_and_at_the_end(clock, capsys):
    history = train_loop(stepping(clock), 10, desc="meta-train ProtoNet", progress="log", log_every=3)
    out, err = capsys.readouterr()
    assert out == ""  # stdout stays free for a benchmark's JSON
    # steps end at t = 1, 2, ..., 10; a line after step 1, then whenever 3 s passed since the last;
    # each shows the mean loss since the previous line (losses 1-3, 4-6, 7-9)
    assert lines(err) == [
        "meta-train ProtoNet: step 1/10, 1.0 s, loss 0",
        "meta-train ProtoNet: step 4/10, 4.0 s, loss 2",
        "meta-train ProtoNet: step 7/10, 7.0 s, loss 5",
        "meta-train ProtoNet: step 10/10, 10 s, loss 8 (done)",  # one line for the last step, not two
    ]
    assert history["loss"] == [float(i) for i in range(10)]


def test_the_final_line_has_the_mean_of_the_last_steps_and_loss_comes_first(clock, capsys):
    train_loop(stepping(clock, acc=0.5), 5, desc="VAE", progress="log", log_every=100)
    err = lines(capsys.readouterr().err)
    assert err == ["VAE: step 1/5, 1.0 s, loss 0, acc 0.5", "VAE: step 5/5, 5.0 s, loss 2.5, acc 0.5 (done)"]


def test_one_step_gives_one_line(clock, capsys):
    train_loop(stepping(clock), 1, desc="one", progress="log")
    assert lines(capsys.readouterr().err) == ["one: step 1/1, 1.0 s, loss 0 (done)"]


def test_a_number_is_the_interval_and_a_time_budget_is_shown(clock, capsys):
    # progress=2 is "log every 2 s": what callers that only forward `progress` (train_vae, train_gan,
    # meta_train) can pass
    history = train_loop(stepping(clock), 100, desc="GAN", progress=2, time_budget=5)
    err = lines(capsys.readouterr().err)
    assert len(history["loss"]) == 5
    assert err[0] == "GAN: step 1/100, 1.0 of 5.0 s, loss 0"
    assert err[1] == "GAN: step 3/100, 3.0 of 5.0 s, loss 1.5"
    assert err[-1].endswith("(done: time budget reached)") and err[-1].startswith("GAN: step 5/100, 5.0 of 5.0 s")


def test_auto_logs_when_stderr_is_not_a_terminal(clock, capsys, monkeypatch):
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert not sys.stderr.isatty()  # pytest's capture
    train_loop(stepping(clock), 3, desc="auto", progress="auto")
    err = lines(capsys.readouterr().err)
    assert err[0] == "auto: step 1/3, 1.0 s, loss 0" and err[-1].endswith("(done)")


def test_no_progress_prints_nothing(clock, capsys):
    train_loop(stepping(clock), 3, progress=False)
    assert capsys.readouterr() == ("", "")


def test_the_default_interval_is_log_every(clock, capsys):
    train_loop(stepping(clock, seconds_per_step=10.0), 7, desc="d", progress="log")
    err = lines(capsys.readouterr().err)
    # 10 s a step, LOG_EVERY = 30 s: after step 1 (t=10), step 4 (t=40), and the end (step 7, t=70)
    assert train.LOG_EVERY == 30.0
    assert [re.match(r"d: step (\d+)/7", line).group(1) for line in err] == ["1", "4", "7"]
    assert err[-1].endswith("(done)")


def test_resumed_history_counts_the_steps_of_this_call(clock, capsys):
    history = train_loop(stepping(clock), 4, progress=False)
    train_loop(stepping(clock), 3, history=history, desc="more", progress="log", log_every=100)
    err = lines(capsys.readouterr().err)
    assert err[-1].startswith("more: step 3/3, ")
    assert history.steps["loss"] == list(range(7))


def test_a_nan_stops_without_a_done_line(clock, capsys):
    def step(i):
        clock.now += 1
        return {"loss": float("nan") if i == 2 else 1.0}

    with pytest.raises(FloatingPointError, match="at step 2"):
        train_loop(step, 10, desc="nan", progress="log", log_every=100)
    err = capsys.readouterr().err
    assert "nan: step 1/10" in err and "(done" not in err


@pytest.mark.parametrize("kwargs", [{"progress": 0}, {"progress": -1.5}, {"progress": float("inf")}, {"progress": "loud"},
                                    {"progress": "log", "log_every": 0}, {"progress": "log", "log_every": -3}])
def test_bad_progress_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match="progress|log_every"):
        train_loop(lambda i: {"loss": 0.0}, 1, **kwargs)


def test_train_vae_forwards_the_log_mode(capsys):
    """The generative benchmark relies on train_vae passing `progress` through to train_loop."""
    from mlcourse.generative import train_vae

    images = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8)
    train_vae(images, latent_dim=2, width=4, steps=2, batch_size=4, device=torch.device("cpu"), progress="log")
    out, err = capsys.readouterr()
    assert out == ""
    assert re.search(r"^VAE: step 2/2, [0-9.]+ s, loss [-0-9.e]+.*\(done\)$", err, re.M), err


def test_generative_benchmark_json_on_stdout_progress_lines_on_stderr(monkeypatch, capsys, tmp_path):
    """benchmarks/generative.py --json: stdout is exactly one JSON object, the training progress
    goes to stderr as plain lines (stderr is not a terminal here). The data and the feature net
    are small stand-ins (an untrained Conv-4): the subject is where the output goes."""
    import importlib.util
    import json
    from pathlib import Path

    from mlcourse.data.base import ImageClassDataset
    from mlcourse.data.sources import MetaSplits
    from mlcourse.metrics import FeatureNet
    from mlcourse.models import Conv4

    g = torch.Generator().manual_seed(0)

    def part(classes, name):
        return ImageClassDataset(torch.randint(0, 256, (20 * classes, 1, 28, 28), generator=g, dtype=torch.uint8),
                                 torch.arange(classes).repeat_interleave(20), [f"{name}{c}" for c in range(classes)],
                                 [f"{name}-alphabet{c % 2}" for c in range(classes)], name=name)

    splits = MetaSplits(part(8, "train"), part(2, "val"), part(7, "test"), "tiny", "tiny random data")
    monkeypatch.setattr("mlcourse.data.sources.meta_splits", lambda source=None, size=28, rotations=False, seed=0: splits)
    forwarded = []

    def untrained_feature_net(source=None, size=28, seed=0, steps=None, *, progress=True, **kwargs):
        forwarded.append(progress)
        torch.manual_seed(seed)
        return FeatureNet(Conv4(in_channels=1), "untrained Conv-4 (test stand-in)")

    monkeypatch.setattr("mlcourse.metrics.feature_net", untrained_feature_net)
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "generative.py"
    spec = importlib.util.spec_from_file_location("generative_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    try:
        result = module.main(["--json", "--fast", "--gan-steps", "2", "--vae-steps", "2", "--gan-width", "4",
                              "--gan-batch", "4", "--k", "1", "--n", "65", "--threads", "1", "--log-every", "0.001",
                              "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    out, err = capsys.readouterr()
    assert json.loads(out) == json.loads(json.dumps(result))  # stdout: the JSON and nothing else
    assert forwarded == [0.001]
    assert re.search(r"^GAN \(nonsaturating\): step 1/2, [0-9.]+ of [0-9.]+ s, loss ", err, re.M), err
    assert re.search(r"^GAN \(nonsaturating\): step 2/2, .*\(done\)$", err, re.M), err
    assert re.search(r"^VAE: step 2/2, .*\(done\)$", err, re.M), err
    assert result["gan"]["steps"] == 2 and result["vae"]["steps"] == 2
