import math

import pytest
import torch

from conftest import toy_dataset
from mlcourse.evaluate import AccuracyResult, episode_accuracy, evaluate, mean_confidence_interval


def test_confidence_interval_by_hand():
    values = [0.6, 0.8, 1.0, 0.8]
    mean, half = mean_confidence_interval(values)
    sd = math.sqrt(sum((v - 0.8) ** 2 for v in values) / 3)  # sample sd, n - 1
    assert mean == pytest.approx(0.8)
    assert half == pytest.approx(1.959964 * sd / 2, rel=1e-6)
    assert math.isnan(mean_confidence_interval([1.0])[1])
    with pytest.raises(ValueError):
        mean_confidence_interval([])


def test_interval_covers_the_truth_about_95_percent_of_the_time():
    g = torch.Generator().manual_seed(0)
    hits = 0
    for _ in range(400):
        m, h = mean_confidence_interval(torch.rand(200, generator=g))
        hits += abs(m - 0.5) <= h
    assert 0.92 <= hits / 400 <= 0.98


def test_episode_accuracy():
    y = torch.tensor([0, 1, 2, 2])
    assert episode_accuracy(torch.eye(3)[[0, 1, 2, 0]], y) == 0.75
    assert episode_accuracy(torch.tensor([0, 1, 2, 2]), y) == 1.0
    with pytest.raises(ValueError):
        episode_accuracy(torch.zeros(3, 3), y)


def test_evaluate_oracle_and_chance():
    data = toy_dataset(num_classes=12, per_class=10)

    def oracle(sx, sy, qx):  # reads the class id hidden in pixel (0, 0)
        s_cls, q_cls = (sx[:, 0, 0, 0] * 255).round(), (qx[:, 0, 0, 0] * 255).round()
        return (q_cls[:, None] == s_cls[None, :]).float() @ torch.nn.functional.one_hot(sy).float()

    res = evaluate(oracle, data, 5, 1, 3, episodes=30, progress=False)
    assert isinstance(res, AccuracyResult) and res.mean == 1.0 and res.ci95 == 0.0
    assert "100.00% ± 0.00% (5-way 1-shot, 30 episodes)" == str(res)

    g = torch.Generator().manual_seed(0)
    chance = evaluate(lambda sx, sy, qx: torch.rand(len(qx), 5, generator=g), data, 5, 1, 3, episodes=300, progress=False)
    assert abs(chance.mean - 0.2) < 3 * chance.ci95 + 0.01


# -- paired comparisons -------------------------------------------------------------------
from mlcourse.evaluate import compare, episodes_fingerprint, sign_flip_p_value  # noqa: E402


def test_compare_by_hand():
    a = [0.8, 0.6, 1.0, 0.8, 0.4]
    b = [0.6, 0.6, 0.8, 0.4, 0.4]
    d = [0.2, 0.0, 0.2, 0.4, 0.0]  # a - b, episode by episode
    mean = sum(d) / 5
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / 4)
    c = compare(a, b, names=("a", "b"))
    assert c.difference == pytest.approx(0.16)
    assert c.ci95 == pytest.approx(1.959964 * sd / math.sqrt(5), rel=1e-6)
    assert (c.wins, c.losses, c.ties, c.episodes) == (3, 0, 2, 5)
    # Exact sign-flip p-value: the 2^3 sign patterns of the three non-zero differences give
    # means 0.8, 0.4, 0.4, 0.0 (and their negatives) / 5; |mean| >= 0.16 (sum 0.8) in 2 of 8.
    assert c.p_value == pytest.approx(2 / 8, abs=0.02)
    assert "a − b = +16.00 ±" in str(c)
    # Swapping the methods flips the sign and keeps the rest.
    r = compare(b, a)
    assert r.difference == pytest.approx(-0.16) and r.ci95 == pytest.approx(c.ci95) and r.wins == 0


def test_paired_interval_is_narrower_than_overlapping_unpaired_ones():
    # Two methods whose episode accuracies move together (easy and hard episodes), B always
    # 2 points lower: the two 95% intervals overlap, yet the paired difference is clear.
    g = torch.Generator().manual_seed(0)
    difficulty = torch.rand(200, generator=g) * 0.6 + 0.3
    a = difficulty + 0.02 * torch.rand(200, generator=g)
    b = difficulty - 0.02 + 0.02 * torch.rand(200, generator=g)
    ma, ha = mean_confidence_interval(a)
    mb, hb = mean_confidence_interval(b)
    assert ma - ha < mb + hb  # the unpaired intervals overlap
    c = compare(a, b)
    assert c.significant and c.low > 0.015 and c.p_value < 0.001
    assert "beats" in c.verdict()


def test_compare_refuses_different_episodes_and_lengths():
    data = toy_dataset(num_classes=12, per_class=10)
    rng = lambda sx, sy, qx: torch.rand(len(qx), 5)  # noqa: E731
    r1 = evaluate(rng, data, 5, 1, 3, episodes=20, seed=1, progress=False)
    r2 = evaluate(rng, data, 5, 1, 3, episodes=20, seed=2, progress=False)
    r3 = evaluate(rng, data, 5, 1, 3, episodes=20, seed=1, progress=False)
    assert r1.fingerprint == r3.fingerprint != r2.fingerprint
    assert r1.fingerprint == episodes_fingerprint(data, 5, 1, 3, 20, 1)
    compare(r1, r3)  # same episodes: fine
    with pytest.raises(ValueError, match="different episodes"):
        compare(r1, r2)
    with pytest.raises(ValueError, match="same episodes"):
        compare([0.5, 0.6, 0.7], [0.5, 0.6])
    # dicts from bench --json work too
    assert compare(r1.as_dict(), r3.as_dict()).episodes == 20


def test_sign_flip_p_value_is_calibrated_under_the_null():
    g = torch.Generator().manual_seed(1)
    ps = torch.tensor([sign_flip_p_value(torch.randn(30, generator=g), permutations=500, seed=i) for i in range(200)])
    assert 0.02 <= float((ps < 0.05).float().mean()) <= 0.09
    assert sign_flip_p_value(torch.full((30,), 0.1)) < 1e-3
    assert sign_flip_p_value(torch.zeros(10)) == 1.0


def test_compare_command_line(tmp_path, capsys):
    import json

    from mlcourse.evaluate import main

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"method": "x", "episode_accuracies": [0.8, 0.9, 1.0, 0.9]}))
    b.write_text(json.dumps({"method": "y", "episode_accuracies": [0.6, 0.8, 0.8, 0.7]}))
    out = main([str(a), str(b)])
    assert out["difference"] == pytest.approx(0.175)
    assert "x beats y" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main([str(a), str(tmp_path / "missing.json")])
    assert e.value.code == 2
    assert "must be a readable JSON file" in capsys.readouterr().err


def test_plot_paired_differences_draws_one_row_per_comparison():
    import matplotlib

    matplotlib.use("Agg")
    from mlcourse.viz import plot_paired_differences

    a, b, c = [0.8, 0.9, 1.0, 0.9], [0.6, 0.8, 0.8, 0.7], [0.8, 0.9, 1.0, 0.8]
    cs = [compare(a, b, names=("x", "y")), compare(a, c, names=("x", "z"))]
    ax = plot_paired_differences(cs, title="t")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["x − y", "x − z"]
    assert len(ax.lines) >= 3  # two points and the zero line
    with pytest.raises(ValueError):
        plot_paired_differences(cs, labels=["only one"])
