"""Tests of the benchmark command (mlcourse.bench)."""

from __future__ import annotations

import json

import pytest
import torch

from mlcourse import bench
from mlcourse.data.base import ImageClassDataset
from mlcourse.data.sources import MetaSplits
from mlcourse.fewshot import FewShotClassifier


@pytest.fixture(autouse=True)
def _one_thread():
    """Small batches: on a shared CPU a second thread mostly spin-waits (see test_metric.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(args: list[str]) -> dict:
    """bench.main on one thread (the tests' batches are tiny)."""
    return bench.main(args + ["--threads", "1"])


def tiny_splits(size: int = 28) -> MetaSplits:
    """A stand-in for meta_splits(): 16 training, 6 validation and 8 test classes of 20 random images."""
    g = torch.Generator().manual_seed(0)

    def part(n, name):
        return ImageClassDataset(
            torch.randint(0, 256, (20 * n, 1, size, size), generator=g, dtype=torch.uint8),
            torch.arange(n).repeat_interleave(20),
            [f"{name}{c}" for c in range(n)],
            [f"{name}-alphabet{c % 2}" for c in range(n)],
            name=name,
        )

    return MetaSplits(part(16, "train"), part(6, "val"), part(8, "test"), "tiny", "tiny random data for tests")


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setenv("MLCOURSE_FAST", "1")
    monkeypatch.setattr("mlcourse.data.sources.meta_splits", lambda source=None, size=28, rotations=False, seed=0: tiny_splits(size))


def test_every_method_is_documented_and_builds():
    for name, method in bench.METHODS.items():
        assert method.description, name
        assert method.kind in {"episodic", "pixel", "pretrained"}
        if method.kind == "episodic":
            model = method.build((1, 28, 28), 2)
            assert model(torch.rand(2, 1, 28, 28), torch.tensor([0, 1]), torch.rand(3, 1, 28, 28)).shape == (3, 2)


@pytest.mark.parametrize("method", sorted(bench.METHODS))
def test_main_runs_every_method(method, tiny, capsys):
    train_ways = [] if bench.METHODS[method].fixed_way else ["--train-ways", "3"]
    out = run([method, "--fast", "--json", "--steps", "2", "--episodes", "3", *train_ways])
    assert set(bench.RESULT_KEYS) <= set(out)
    assert out["method"] == method and out["data"] == "tiny" and out["mode"] == "fast"
    assert (out["ways"], out["shots"], out["queries"], out["episodes"]) == (5, 1, 15, 3)
    assert 0 <= out["accuracy"] <= 1 and out["peak_memory_mb"] > 0
    printed = capsys.readouterr().out
    assert json.loads(printed) == out  # stdout holds exactly one JSON object


def test_table_output(tiny, capsys):
    out = run(["pixel-nn", "--fast", "--episodes", "4", "--ways", "3", "--shots", "2"])
    text = capsys.readouterr().out
    assert "3-way 2-shot" in text and f"{100 * out['accuracy']:.2f}%" in text


def test_checkpoint_is_reused_only_when_it_matches(tiny, tmp_path, capsys):
    path = tmp_path / "proto.pt"
    args = ["protonet", "--fast", "--json", "--steps", "2", "--episodes", "5", "--train-ways", "3", "--checkpoint", str(path)]
    first = run(args)
    assert path.exists() and not first["from_checkpoint"]
    second = run(args)
    assert second["from_checkpoint"] and second["meta_train_seconds"] == 0
    assert second["accuracy"] == first["accuracy"]
    capsys.readouterr()
    # Other steps: the stale checkpoint is refused, naming what differs, and left alone.
    with pytest.raises(SystemExit) as exit_info:
        run(args[:4] + ["3"] + args[5:])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "steps: 2 in the checkpoint, 3 now" in err and "--retrain" in err
    assert FewShotClassifier.load(path) is not None
    third = run(args[:4] + ["3"] + args[5:] + ["--retrain"])  # asked for: retrain and overwrite
    assert not third["from_checkpoint"] and run(args[:4] + ["3"] + args[5:])["from_checkpoint"]


def test_checkpoint_key_holds_model_arguments_and_format(tiny, tmp_path, capsys, monkeypatch):
    path = tmp_path / "maml.pt"
    args = ["maml", "--fast", "--json", "--steps", "1", "--episodes", "2", "--checkpoint", str(path)]
    run(args)
    state = torch.load(path, weights_only=False)
    key = state["bench"]
    assert key["format"] == bench.CHECKPOINT_FORMAT and key["model"]["class"] == "MAML"
    assert key["model"]["config"]["hidden"] == 32 and key["train_alphabets"] == ["train-alphabet0", "train-alphabet1"]
    # A new default width (not given on the command line) makes the old file stale.
    method = bench.METHODS["maml"]
    wider = bench._maml_family(method.description, "MAML", inner_lr=0.4, test_inner_steps=10)
    wider = bench.Method(**{**wider.__dict__, "build": bench._optim("MAML", hidden=48, meta_batch=16, inner_lr=0.4, test_inner_steps=10)})
    monkeypatch.setitem(bench.METHODS, "maml", wider)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run(args)
    assert "model.config.hidden: 32 in the checkpoint, 48 now" in capsys.readouterr().err
    # An older format is refused too.
    monkeypatch.setitem(bench.METHODS, "maml", method)
    monkeypatch.setattr(bench, "CHECKPOINT_FORMAT", bench.CHECKPOINT_FORMAT + 1)
    with pytest.raises(SystemExit):
        run(args)
    assert "format:" in capsys.readouterr().err


def test_inner_loop_flags_reach_the_model_and_test_steps_do_not_touch_the_key(tiny, tmp_path, capsys):
    path = tmp_path / "reptile.pt"
    args = ["reptile", "--fast", "--json", "--steps", "1", "--episodes", "2", "--checkpoint", str(path),
            "--hidden", "8", "--inner-steps", "2", "--inner-lr", "0.002", "--inner-batch", "7"]  # fmt: skip
    first = run(args)
    config = torch.load(path, weights_only=False)["bench"]["model"]["config"]
    assert (config["inner_steps"], config["inner_lr"], config["inner_batch"], config["hidden"]) == (2, 0.002, 7, 8)
    default_steps = bench.METHODS["reptile"].build((1, 28, 28), 5).test_inner_steps
    assert first["test_inner_steps"] == default_steps and not first["from_checkpoint"]
    # The same checkpoint, scored with more fine-tuning steps: loaded, not retrained.
    again = run(args + ["--test-inner-steps", "3"])
    assert again["from_checkpoint"] and again["test_inner_steps"] == 3
    assert again["checkpoint_train_seconds"] == pytest.approx(first["meta_train_seconds"])
    assert again["fingerprint"] == first["fingerprint"]
    # A checkpoint whose key still holds the test steps (written before they left the key)
    # loads, and is scored with today's default, not with the stored value.
    state = torch.load(path, weights_only=False)
    state["bench"]["model"]["config"]["test_inner_steps"] = 99
    torch.save(state, path)
    old = run(args)
    assert old["from_checkpoint"] and old["test_inner_steps"] == default_steps


@pytest.mark.parametrize("argv, message", [
    (["protonet", "--inner-steps", "2"], "--inner-steps: applies to the MAML family and Reptile only"),
    (["protonet", "--test-inner-steps", "2"], "--test-inner-steps: applies to the MAML family and Reptile only"),
    (["maml", "--inner-batch", "5"], "--inner-batch: applies to reptile only"),
    (["metasgd", "--inner-lr", "0.1"], "--inner-lr: metasgd learns its inner learning rates"),
    (["maml", "--inner-lr", "0"], "--inner-lr"),
    (["maml", "--test-inner-steps", "-1"], "--test-inner-steps"),
])  # fmt: skip
def test_inner_loop_flags_refuse_what_does_not_apply(tiny, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        run(argv + ["--fast", "--steps", "1", "--episodes", "2"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and message in err


def test_split_val_scores_validation_alphabets_and_says_so(tiny, capsys):
    val = run(["protonet", "--fast", "--json", "--steps", "2", "--episodes", "3", "--train-ways", "3", "--split", "val"])
    test = run(["protonet", "--fast", "--json", "--steps", "2", "--episodes", "3", "--train-ways", "3"])
    assert val["split"] == "val" and val["eval_alphabets"] == ["val-alphabet0", "val-alphabet1"]
    assert test["split"] == "test" and test["eval_alphabets"] == ["test-alphabet0", "test-alphabet1"]
    assert val["train_alphabets"] == test["train_alphabets"] == ["train-alphabet0", "train-alphabet1"]
    assert val["defaults_selected_on"] in bench.SELECTED_ON and len(val["episode_accuracies"]) == 3
    assert val["fingerprint"] != test["fingerprint"]


def test_meta_training_never_reads_validation_or_test_images(monkeypatch, capsys):
    """A leak cannot be added silently: during meta-training, touching a held-out image fails."""
    monkeypatch.setenv("MLCOURSE_FAST", "1")
    splits = tiny_splits()
    sealed = {"on": True}
    for held_out in (splits.val, splits.test):
        for attribute in ("as_float", "__getitem__", "indices_by_class", "class_sizes"):
            original = getattr(held_out, attribute)

            def guard(*a, _original=original, _name=attribute, **k):
                if sealed["on"]:
                    raise AssertionError(f"a held-out set was read during meta-training ({_name})")
                return _original(*a, **k)

            object.__setattr__(held_out, attribute, guard)
    monkeypatch.setattr("mlcourse.data.sources.meta_splits", lambda source=None, size=28, rotations=False, seed=0: splits)
    real_meta_train = bench._meta_train

    def meta_train(*a, **k):
        sealed["on"] = True
        try:
            return real_meta_train(*a, **k)
        finally:
            sealed["on"] = False

    monkeypatch.setattr(bench, "_meta_train", meta_train)
    sealed["on"] = False  # the argument checks may read class sizes before training
    for method in ("protonet", "maml", "pretrained-centroid"):
        extra = ["--train-ways", "3"] if method == "protonet" else []
        out = run([method, "--fast", "--json", "--steps", "2", "--episodes", "2", *extra])
        assert out["meta_train_steps"] >= 1
    # and the guard really fires when training is handed a held-out set
    sealed["on"] = True
    with pytest.raises(AssertionError, match="held-out set was read"):
        splits.test.as_float(torch.tensor([0]))


@pytest.mark.parametrize("argv, names", [
    (["protonet", "--ways", "0"], "--ways 0"),
    (["protonet", "--ways", "1"], "--ways 1"),
    (["protonet", "--episodes", "-3"], "--episodes -3"),
    (["protonet", "--shots", "100"], "--shots 100"),
    (["protonet", "--ways", "9"], "--ways 9"),  # only 8 test classes
    (["protonet", "--ways", "7", "--split", "val"], "--ways 7"),  # only 6 validation classes
    (["protonet", "--queries", "30"], "--queries 30"),
    (["protonet", "--lr", "-1"], "--lr -1"),
    (["protonet", "--augment", "-0.5"], "--augment -0.5"),
    (["protonet", "--steps", "0"], "--steps 0"),
    (["protonet", "--size", "4"], "--size 4"),
    (["protonet", "--device", "tpu"], "--device tpu"),
    (["protonet", "--train-shots", "30"], "--train-shots 30"),
    (["protonet", "--split", "train"], "--split"),
    (["protonet", "--retrain"], "--retrain"),
    (["nomethod"], "nomethod"),
    (["maml", "--hidden", "0"], "--hidden 0"),
])
def test_bad_arguments_get_one_line_and_exit_2(tiny, capsys, argv, names):
    with pytest.raises(SystemExit) as exit_info:
        run(argv + ["--fast", "--json"])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert captured.out == "" and len(lines) == 1, captured.err
    assert names in lines[0] and lines[0].startswith("python -m mlcourse.bench: error:")


def test_pretrained_baseline_checkpoint(tiny, tmp_path):
    args = ["pretrained-centroid", "--fast", "--json", "--steps", "3", "--episodes", "4", "--checkpoint", str(tmp_path / "pre.pt")]
    first, second = run(args), run(args)
    assert not first["from_checkpoint"] and second["from_checkpoint"]
    assert second["accuracy"] == first["accuracy"]


def test_glyphs_protonet_fast(monkeypatch, capsys):
    glyphs = pytest.importorskip("mlcourse.data.glyphs")
    if not hasattr(glyphs, "load_glyphs"):
        pytest.skip("mlcourse.data.glyphs has no load_glyphs yet")
    monkeypatch.setenv("MLCOURSE_FAST", "1")
    out = run(["protonet", "--fast", "--json", "--data", "glyphs", "--episodes", "20", "--steps", "10"])
    assert set(bench.RESULT_KEYS) <= set(out)
    assert out["data"] == "glyphs" and out["episodes"] == 20 and out["mode"] == "fast"
    assert json.loads(capsys.readouterr().out) == out


def test_missing_omniglot_exits_with_a_clear_message(monkeypatch, tmp_path, capsys):
    empty = tmp_path / "no-omniglot-here"
    empty.mkdir()
    monkeypatch.setenv("MLCOURSE_OMNIGLOT", str(empty))
    monkeypatch.setenv("MLCOURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("mlcourse.config.shared_dir", lambda: None)
    with pytest.raises(SystemExit) as exit_info:
        run(["protonet", "--fast", "--json", "--data", "omniglot"])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no half-written JSON
    assert "Omniglot" in captured.err and "--data glyphs" in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_budget_aware_schedule_follows_steps_or_time(monkeypatch):
    model = torch.nn.Linear(2, 2)
    clock = [0.0]
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])

    def base(lr, steps):
        return torch.optim.SGD(model.parameters(), lr=lr), None

    assert bench._budget_aware(base, None) is base  # no budget: the library's schedule
    opt, sched = bench._budget_aware(base, 100.0)(1.0, 400)
    lrs = []
    for _ in range(4):
        clock[0] += 30.0  # 30 s a step: the budget, not the 400 steps, ends training
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == [0.5, 0.25, 0.125, 0.125]  # halved at 25, 50, 75 s; never below 1/8
    opt, sched = bench._budget_aware(base, 1e9)(1.0, 8)  # steps end first: StepLR's schedule
    lrs = []
    for _ in range(8):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == [1.0, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125, 0.125]


def test_default_threads_leave_busy_cores_alone(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(bench.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(bench.os, "getloadavg", lambda: (0.1, 0.0, 0.0))
    assert bench._default_threads(cpu) == 2
    monkeypatch.setattr(bench.os, "getloadavg", lambda: (3.5, 0.0, 0.0))
    assert bench._default_threads(cpu) == 1


def test_fixed_way_methods_train_on_the_test_way(tiny, capsys):
    out = run(["maml", "--fast", "--json", "--steps", "1", "--episodes", "2", "--ways", "3"])
    assert out["ways"] == 3 and out["train"]["train_ways"] == 3  # the head has 3 outputs
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run(["maml", "--fast", "--json", "--ways", "5", "--train-ways", "20"])
    assert exit_info.value.code == 2
    assert "--train-ways 20" in capsys.readouterr().err


def test_optim_methods_follow_the_protocol_schedule(tiny):
    """MAML's outer learning rate comes from make_optimizer, so the bench's time-aware schedule applies."""
    model = bench.METHODS["maml"].build((1, 28, 28), 3)
    seen = []
    original = model.make_optimizer

    def spy(lr, steps):
        seen.append((lr, steps))
        return original(lr, steps)

    model.make_optimizer = spy
    model.meta_train(tiny_splits().train, n_way=3, steps=4, lr=1e-3, progress=False, device="cpu", meta_batch=2)
    assert seen == [(1e-3, 4)]


def test_model_options_reach_the_maml_family_only(tiny, tmp_path, capsys):
    path = tmp_path / "maml.pt"
    out = run(["maml", "--fast", "--json", "--steps", "1", "--episodes", "2", "--hidden", "4", "--meta-batch", "2", "--checkpoint", str(path)])
    assert out["train"]["model"] == {"hidden": 4, "meta_batch": 2}
    from mlcourse.fewshot import FewShotClassifier

    model = FewShotClassifier.load(path)
    assert model.meta_batch == 2 and model.net.backbone.encoder[0][0].out_channels == 4
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run(["protonet", "--fast", "--json", "--hidden", "4"])
    assert exit_info.value.code == 2 and "--hidden" in capsys.readouterr().err


def test_bn_recalibration_script(tiny, tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    path = tmp_path / "proto.pt"
    run(["protonet", "--fast", "--json", "--steps", "2", "--episodes", "2", "--train-ways", "3", "--bn-episodes", "0", "--checkpoint", str(path)])
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bn_recalibration.py"
    spec = importlib.util.spec_from_file_location("bn_recalibration", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # imports meta_splits after the fixture replaced it
    out = module.main([str(path), "--episodes", "4", "--bn-episodes", "3", "--train-ways", "3"])
    assert set(out) == {"before", "after", "split", "paired"} and out["split"] == "val"
    printed = capsys.readouterr().out
    assert "recalibrated" in printed and "val episodes" in printed and out["paired"]["episodes"] == 4


def test_progress_lines_when_not_a_terminal_and_stdout_stays_json(tiny, capsys):
    out = run(["protonet", "--fast", "--json", "--steps", "3", "--episodes", "2", "--train-ways", "3"])
    captured = capsys.readouterr()
    assert json.loads(captured.out) == out
    lines = [line for line in captured.err.splitlines() if "step" in line]
    assert lines and "3/3" in lines[-1] and "loss" in lines[-1]  # the last line reports the end
    run(["protonet", "--fast", "--json", "--steps", "3", "--episodes", "2", "--train-ways", "3", "--quiet"])
    assert "step" not in capsys.readouterr().err
