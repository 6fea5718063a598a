"""Chapter 06b's report helpers: committed runs read and tabulated, the update rule summarised."""

from __future__ import annotations

import json

import matplotlib
import pytest
import torch

from mlcourse.blackbox import MetaLearnerLSTM
from mlcourse.blackbox import report

matplotlib.use("Agg")


def _run(acc, steps, seconds, eval_seconds, transductive=False):
    return {"accuracy": acc, "ci95": 0.01, "meta_train_steps": steps, "checkpoint_train_seconds": seconds,
            "eval_seconds": eval_seconds, "episodes": 600, "transductive": transductive, "episode_accuracies": [acc] * 600}  # fmt: skip


def test_load_final_runs_reads_the_one_final_file(tmp_path):
    folder = tmp_path / report.SELECTION / "snail-omniglot"
    folder.mkdir(parents=True)
    (folder / "final-test-lr0.003.json").write_text(json.dumps(_run(0.7, 10, 5.0, 60.0)))
    (folder / "rank-lr0.001.json").write_text(json.dumps(_run(0.1, 1, 1.0, 1.0)))  # a selection run: not the figure
    runs = report.load_final_runs(("snail", "maml"), root=tmp_path)
    assert list(runs) == ["snail"] and runs["snail"]["accuracy"] == 0.7
    (folder / "final-test-lr0.001.json").write_text(json.dumps(_run(0.1, 1, 1.0, 1.0)))
    with pytest.raises(ValueError, match="2 final test runs"):
        report.load_final_runs(("snail",), root=tmp_path)
    assert report.load_analysis(tmp_path) is None


def test_family_rows_and_table():
    rows = report.family_rows({"snail": _run(0.7335, 3801, 1214.2, 61.08), "protonet": _run(0.9522, 6834, 0.0, 34.1)})
    snail = rows[0]
    assert snail["accuracy"] == pytest.approx(73.35) and snail["ci95"] == pytest.approx(1.0)
    assert snail["ms_per_episode"] == pytest.approx(101.8) and snail["train_seconds"] == pytest.approx(1214.2)
    table = report.format_family_table(rows).splitlines()
    assert table[2].startswith("protonet") and table[3].startswith("snail")  # best first
    assert "73.35 ± 1.00%" in table[3]


def test_the_committed_runs_are_on_the_same_episodes():
    runs = report.load_final_runs()
    if len(runs) < 5:
        pytest.skip(f"committed final runs missing: have {sorted(runs)}")
    assert len({r["fingerprint"] for r in runs.values()}) == 1
    assert {r["episodes"] for r in runs.values()} == {600}


def test_update_rule_summary_of_an_untrained_meta_learner_is_sgd():
    """Untrained, the gates sit at i = lr_init and f = sigmoid(6): the update is SGD's plus a
    weight shrink of 0.25%, so the slope of update on gradient is -lr_init up to that shrink."""
    torch.manual_seed(0)
    model = MetaLearnerLSTM(n_way=3, image_size=16, hidden=4, lr_init=0.3)
    x, y = torch.randn(6, 1, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2])
    trace = []
    model.adapt(x, y, 3, keep_graph=False, trace=trace)
    summary = report.update_rule_summary(trace)
    assert [s["step"] for s in summary] == [0, 1, 2]
    for s in summary:
        assert s["i_mean"] == pytest.approx(0.3, abs=1e-6) and s["i_std"] < 1e-6
        assert s["f_mean"] == pytest.approx(torch.sigmoid(torch.tensor(6.0)).item(), abs=1e-6)
    # the update is f*θ - θ - i*g: the slope on g is -i plus the shrink term's projection
    theta = model.initial_weights().detach()
    g = trace[0]["grad"]
    shrink = ((summary[0]["f_mean"] - 1) * theta * g).sum() / (g * g).sum()
    assert summary[0]["slope"] == pytest.approx(-0.3 + shrink.item(), rel=1e-4)


def test_pictures_draw_and_refuse_a_bad_step():
    import matplotlib.pyplot as plt

    trace = [{"grad": torch.randn(100), "update": torch.randn(100), "i": torch.rand(100), "f": torch.rand(100), "loss": 1.0}]
    fig, (a, b) = plt.subplots(1, 2)
    report.plot_update_vs_gradient(trace, 0, 0.4, ax=a)
    report.draw_sequence_diagram(5, 1, ax=b)
    assert len(b.patches) > 6 * 6  # six tokens, each an image box, five label cells and an arrow
    with pytest.raises(ValueError, match="step must lie in 0..0"):
        report.plot_update_vs_gradient(trace, 1, 0.4, ax=a)
    plt.close(fig)


def test_format_analysis():
    analysis = {"data": "omniglot", "split": "test", "ways": 5, "shots": 1, "eval_seed": 12345,
                "order": {"snail": {"episodes": 200, "orders": 8, "accuracy_given_order": 0.7369, "accuracy_random_orders": 0.7387,
                                    "accuracy_spread": 0.0125, "prediction_flip_rate": 0.0654}},
                "learned_opt_steps": {"trained_steps": 5, "sgd_lr": 0.4, "episodes": 100,
                                      "learned": {"10": {"accuracy": 0.8179, "ci95": 0.02}, "2": {"accuracy": 0.59, "ci95": 0.02}},
                                      "sgd": {"10": {"accuracy": 0.7311, "ci95": 0.022}}}}  # fmt: skip
    lines = report.format_analysis(analysis).splitlines()
    assert "given 73.69%, random 73.87% (spread 1.25 points), predictions flipped 6.5%" in lines[1]
    assert lines[3].strip().startswith("2 test steps") and lines[3].endswith("SGD -")  # sorted by steps; SGD missing
    assert "learned  81.79 ± 2.00%   SGD  73.11 ± 2.20%" in lines[4]
