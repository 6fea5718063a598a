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
