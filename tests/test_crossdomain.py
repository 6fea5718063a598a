"""Cross-domain few-shot learning (chapter 12): the digits as a target, --train-data in both benches."""

from __future__ import annotations

import pytest
import torch

from mlcourse import bench, crossdomain, genbench
from mlcourse.data.base import ImageClassDataset
from mlcourse.data.sources import MetaSplits
from mlcourse.metrics import random_feature_net
from test_bench import _one_thread  # noqa: F401  (an autouse fixture: one thread here too)
from conftest import toy_dataset


# ---------------------------------------------------------------------------------------
# The digits as a target: images split, classes kept
# ---------------------------------------------------------------------------------------
def test_split_images_partitions_every_class_and_is_seeded(toy):
    train, val, test = crossdomain.split_images(toy, (0.4, 0.3), seed=3)
    # pixel (0, 0) holds the class, pixel (0, 1) the image's number within it: every image once
    ids = lambda ds: {(int(x[0, 0, 0]), int(x[0, 0, 1])) for x in ds.images}  # noqa: E731
    assert ids(train) | ids(val) | ids(test) == ids(toy)
    assert len(train) + len(val) + len(test) == len(toy)
    assert not ids(train) & ids(val) and not ids(train) & ids(test) and not ids(val) & ids(test)
    for part, share in ((train, 8), (val, 6), (test, 6)):
        assert part.class_sizes().tolist() == [share] * toy.num_classes
        assert part.class_names == toy.class_names
        assert all(int(x[0, 0, 0]) == int(y) for x, y in zip(part.images, part.targets))  # labels follow images
    again = crossdomain.split_images(toy, (0.4, 0.3), seed=3)
    other = crossdomain.split_images(toy, (0.4, 0.3), seed=4)
    assert torch.equal(again[2].images, test.images) and not torch.equal(other[2].images, test.images)


@pytest.mark.parametrize("fractions", [(0.0, 0.3), (0.5, 0.5), (0.7, 0.4), (-0.1, 0.2)])
def test_split_images_refuses_impossible_fractions(toy, fractions):
    with pytest.raises(ValueError, match="fractions"):
        crossdomain.split_images(toy, fractions)


def test_split_images_needs_three_images_a_class():
    with pytest.raises(ValueError, match="class 'class1' has 2 images"):
        crossdomain.split_images(toy_dataset(num_classes=3, sizes=[5, 2, 5]))


def test_digit_splits_are_a_target_with_every_digit_in_every_part():
    splits = crossdomain.digit_splits()
    assert splits.source == "digits"
    assert len(splits.train) + len(splits.val) + len(splits.test) == 1797
    for part in (splits.train, splits.val, splits.test):
        assert part.num_classes == 10 and int(part.class_sizes().min()) >= 55
    assert splits.evaluation_set("val") is splits.val and splits.evaluation_set("test") is splits.test
    with pytest.raises(ValueError, match="split"):
        splits.evaluation_set("train")
    with pytest.raises(ValueError, match="unknown target source 'mnist'"):
        crossdomain.target_splits("mnist")


def test_unlabelled_keeps_the_images_and_deals_them_into_random_pseudo_classes(toy):
    out = crossdomain.unlabelled(toy, classes=7, seed=0)
    assert torch.equal(out.images, toy.images) and out.num_classes == 7
    assert out.class_sizes().tolist() == [29, 29, 29, 29, 28, 28, 28]
    # pixel (0, 0) is the true class: each pseudo-class mixes several true classes
    for c in range(7):
        assert len({int(x[0, 0, 0]) for x in out.images[out.targets == c]}) > 3
    assert not torch.equal(crossdomain.unlabelled(toy, classes=7, seed=1).targets, out.targets)
    with pytest.raises(ValueError, match="classes must be between 2"):
        crossdomain.unlabelled(toy, classes=1)


def test_domain_samples_one_image_of_distinct_classes_per_domain(toy):
    out = crossdomain.domain_samples({"a": toy, "b": toy_dataset(seed=1)}, classes=4, seed=0)
    assert set(out) == {"a", "b"} and out["a"].shape == (4, 1, 8, 8)
    assert len({int(round(float(x[0, 0, 0]) * 255)) for x in out["a"]}) == 4  # four different classes
    with pytest.raises(ValueError, match="fewer than the 11"):
        crossdomain.domain_samples({"a": toy}, classes=11)


def test_paired_row_pairs_the_same_episodes_only():
    a = {"fingerprint": "f", "accuracy": 0.75, "episode_accuracies": [1.0, 0.5, 1.0, 0.5]}
    b = {"fingerprint": "f", "accuracy": 0.5, "episode_accuracies": [0.5, 0.5, 0.5, 0.5]}
    row = crossdomain.paired_row(a, b, names=("a", "b"))
    assert row["difference"] == pytest.approx(0.25) and row["wins"] == 2 and row["ties"] == 2
    assert row["mean_a"] == 0.75 and row["mean_b"] == 0.5
    with pytest.raises(ValueError, match="not scored on the same"):
        crossdomain.paired_row(a, {**b, "fingerprint": "g"})
    gen = {"fingerprint": "c", "scores": {"fd": [1.0, 2.0, 3.0]}, "summary": {"fd": {"mean": 2.0}}}
    gen2 = {"fingerprint": "c", "scores": {"fd": [2.0, 2.0, 2.0]}, "summary": {"fd": {"mean": 2.0}}}
    assert crossdomain.paired_row(gen, gen2, score="fd")["difference"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="no per-character 'recall'"):
        crossdomain.paired_row(gen, gen2, score="recall")


# ---------------------------------------------------------------------------------------
# --train-data in mlcourse.bench
# ---------------------------------------------------------------------------------------
def two_sources(size: int = 28):
    """meta_splits() stand-in: two tiny random sources whose images differ (seeds 1 and 2)."""

    def make(source, seed):
        g = torch.Generator().manual_seed(seed)

        def part(n, name):
            return ImageClassDataset(
                torch.randint(0, 256, (20 * n, 1, size, size), generator=g, dtype=torch.uint8),
                torch.arange(n).repeat_interleave(20), [f"{source}-{name}{c}" for c in range(n)],
                [f"{source}-{name}-alphabet{c % 2}" for c in range(n)], name=f"{source}/{name}",
            )  # fmt: skip

        return MetaSplits(part(16, "train"), part(6, "val"), part(8, "test"), source, f"tiny {source}")

    def meta_splits(source=None, size=size, rotations=False, seed=0):
        return make(source or "omniglot", {"glyphs": 1, "omniglot": 2, "auto": 2}[source or "auto"])

    return meta_splits


@pytest.fixture
def sources(monkeypatch):
    monkeypatch.setenv("MLCOURSE_FAST", "1")
    monkeypatch.setattr("mlcourse.data.sources.meta_splits", two_sources())
    monkeypatch.setattr("mlcourse.metrics.feature_net", lambda *a, **k: random_feature_net(0))


def run_bench(args):
    return bench.main(args + ["--threads", "1", "--json", "--quiet", "--episodes", "4"])


@pytest.mark.slow  # meta-trains tiny models (about 10 s on an idle machine)
def test_bench_cross_domain_reuses_the_source_checkpoint_and_meets_the_targets_episodes(sources, tmp_path, capsys):
    path = str(tmp_path / "protonet-glyphs.pt")
    source = run_bench(["protonet", "--data", "glyphs", "--checkpoint", path])
    assert not source["from_checkpoint"] and source["train_data"] == source["data"] == "glyphs"
    cross = run_bench(["protonet", "--data", "omniglot", "--train-data", "glyphs", "--checkpoint", path])
    assert cross["from_checkpoint"] and cross["train_data"] == "glyphs" and cross["data"] == "omniglot"
    assert cross["train_alphabets"] == source["train_alphabets"]
    assert cross["eval_alphabets"] == ["omniglot-test-alphabet0", "omniglot-test-alphabet1"]
    in_domain = run_bench(["protonet", "--data", "omniglot"])
    assert in_domain["fingerprint"] == cross["fingerprint"] != source["fingerprint"]  # paired with the target's own model
    # --train-data naming --data itself is an in-domain run
    same = run_bench(["protonet", "--data", "glyphs", "--train-data", "glyphs", "--checkpoint", path])
    assert same["from_checkpoint"] and same["episode_accuracies"] == source["episode_accuracies"]


@pytest.mark.slow  # meta-trains tiny models (about 10 s on an idle machine)
def test_target_bn_recomputes_batchnorm_on_the_target_and_leaves_the_weights(sources, tmp_path, monkeypatch, capsys):
    from mlcourse.fewshot import FewShotClassifier

    path = str(tmp_path / "protonet.pt")
    run_bench(["protonet", "--data", "glyphs", "--checkpoint", path])
    seen = {}
    original = FewShotClassifier.recalibrate_batchnorm

    def spy(self, dataset, **kwargs):
        before = {k: v.clone() for k, v in self.state_dict().items()}
        layers = original(self, dataset, **kwargs)
        after = self.state_dict()
        weights = [k for k in before if "running" not in k and "num_batches" not in k]
        seen.update(dataset=dataset.name, episodes=kwargs["episodes"], layers=layers,
                    unchanged=all(torch.equal(before[k], after[k]) for k in weights),
                    moved=all(not torch.equal(before[k], after[k]) for k in before if "running_mean" in k))  # fmt: skip
        return layers

    monkeypatch.setattr(FewShotClassifier, "recalibrate_batchnorm", spy)
    plain = run_bench(["protonet", "--data", "omniglot", "--train-data", "glyphs", "--checkpoint", path])
    assert plain["target_bn"] == 0 and not seen
    adapted = run_bench(["protonet", "--data", "omniglot", "--train-data", "glyphs", "--checkpoint", path, "--target-bn", "3"])
    assert seen == {"dataset": "omniglot/train (unlabelled)", "episodes": 3, "layers": 4, "unchanged": True, "moved": True}
    assert adapted["target_bn"] == 3 and adapted["fingerprint"] == plain["fingerprint"]


def test_bench_scores_digits_from_another_source(sources, capsys):
    out = run_bench(["pixel-nn", "--data", "digits", "--train-data", "omniglot"])
    assert out["data"] == "digits" and out["train_data"] == "omniglot" and out["eval_alphabets"] == ["digits"]
    val = run_bench(["pixel-nn", "--data", "digits", "--train-data", "omniglot", "--split", "val"])
    assert val["fingerprint"] != out["fingerprint"]


@pytest.mark.parametrize("argv, message", [
    (["protonet", "--data", "digits"], "--data digits: the digits are a target only"),
    (["protonet", "--data", "omniglot", "--train-data", "digits"], "--train-data"),
    (["protonet", "--target-bn", "-1"], "--target-bn -1"),
    (["maml", "--data", "omniglot", "--train-data", "glyphs", "--target-bn", "5"], "maml keeps no running BatchNorm"),
    (["pixel-nn", "--target-bn", "5"], "pixel-nn keeps no running BatchNorm"),
])  # fmt: skip
def test_bench_cross_domain_bad_arguments_get_one_line_and_exit_2(sources, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        run_bench(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and message in err, err


# ---------------------------------------------------------------------------------------
# --train-data and --target-steps in mlcourse.genbench
# ---------------------------------------------------------------------------------------
def run_gen(args):
    return genbench.main(args + ["--threads", "1", "--json", "--quiet", "--characters", "5", "--samples", "4", "--ways", "3"])


@pytest.mark.slow  # meta-trains tiny models (about 10 s on an idle machine)
def test_genbench_cross_domain_scores_the_targets_characters(sources, tmp_path, capsys):
    path = str(tmp_path / "statistician-glyphs.pt")
    source = run_gen(["statistician", "--data", "glyphs", "--checkpoint", path, "--nll-shots", "0,1"])
    cross = run_gen(["statistician", "--data", "omniglot", "--train-data", "glyphs", "--checkpoint", path, "--nll-shots", "0,1"])
    assert cross["from_checkpoint"] and cross["train_data"] == "glyphs" and cross["data"] == "omniglot"
    in_domain = run_gen(["real", "--data", "omniglot"])
    jitter = run_gen(["jitter", "--data", "omniglot"])
    assert cross["fingerprint"] == jitter["fingerprint"] != source["fingerprint"]
    assert cross["scores"]["characters"] == in_domain["scores"]["characters"]
    tuned = run_gen(["statistician", "--data", "omniglot", "--train-data", "glyphs", "--checkpoint", path,
                     "--nll-shots", "0,1", "--target-steps", "3"])  # fmt: skip
    assert tuned["target_steps_done"] == 3 and tuned["fingerprint"] == cross["fingerprint"]
    assert tuned["scores"]["fd"] != cross["scores"]["fd"]  # the fine-tune changed the model
    again = run_gen(["statistician", "--data", "omniglot", "--train-data", "glyphs", "--checkpoint", path, "--nll-shots", "0,1"])
    assert again["scores"]["fd"] == cross["scores"]["fd"]  # ... and was not saved


def test_genbench_scores_digits_with_at_most_ten_characters(sources, capsys):
    out = genbench.main(["jitter", "--data", "digits", "--train-data", "omniglot", "--threads", "1", "--json", "--quiet",
                         "--samples", "4"])  # fmt: skip
    assert out["data"] == "digits" and out["characters"] == 10 and out["eval_alphabets"] == ["digits"]


@pytest.mark.parametrize("argv, message", [
    (["statistician", "--data", "digits"], "--data digits: the digits are a target only"),
    (["jitter", "--data", "digits", "--train-data", "glyphs", "--characters", "11"], "--characters 11: must be at most 10"),
    (["real", "--target-steps", "5"], "--target-steps: real is a reference row"),
    (["statistician", "--target-steps", "-2"], "--target-steps -2"),
])  # fmt: skip
def test_genbench_cross_domain_bad_arguments_get_one_line_and_exit_2(sources, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        genbench.main(argv + ["--threads", "1", "--json"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and message in err, err


# ---------------------------------------------------------------------------------------
# benchmarks/crossdomain_table.py: the committed runs and their paired rows
# ---------------------------------------------------------------------------------------
def _table_module():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("crossdomain_table",
                                                  Path(__file__).resolve().parents[1] / "benchmarks" / "crossdomain_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_crossdomain_table_pairs_committed_runs_and_refuses_other_episodes(tmp_path, capsys):
    import json

    table = _table_module()
    assert all(tool in ("bench", "genbench") for tool, _ in table.RUNS.values())
    assert {n for _, a, b, _ in table.PAIRS for n in (a, b)} <= set(table.RUNS)  # every paired run is a listed command
    common = {"split": "test", "ci95": 0.01, "test_inner_steps": None, "target_bn": 0, "meta_train_steps": 10,
              "checkpoint_train_seconds": 5.0, "load_average": 1.0, "fingerprint": "f"}  # fmt: skip
    runs = {
        "protonet-omniglot-test": {**common, "train_data": "omniglot", "data": "omniglot", "accuracy": 0.9,
                                   "episode_accuracies": [1.0, 0.8, 0.9, 0.9]},
        "protonet-glyphs-omniglot-test": {**common, "train_data": "glyphs", "data": "omniglot", "accuracy": 0.8,
                                          "episode_accuracies": [0.8, 0.8, 0.8, 0.8]},
    }  # fmt: skip
    for name, run in runs.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(run))
    text = table.main(["table", "--folder", str(tmp_path)])
    assert "| glyphs→Omniglot, ProtoNet: the drop (glyph-trained − Omniglot-trained) | 80.00 | 90.00 | -10.00 ± " in text
    assert "| 0 / 3 / 1 |" in text and "AdaBN recovers" not in text  # a pair with a missing run is left out
    listing = table.main(["list", "--folder", str(tmp_path)])
    assert "done  protonet-omniglot-test: python -m mlcourse.bench protonet" in listing and "todo  maml-omniglot-test" in listing
    (tmp_path / "protonet-omniglot-test.json").write_text(json.dumps({**runs["protonet-omniglot-test"], "fingerprint": "g"}))
    with pytest.raises(ValueError, match="not scored on the same"):
        table.main(["table", "--folder", str(tmp_path)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        table.main(["run", "no-such-run"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "no-such-run: no such run" in err
