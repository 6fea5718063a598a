"""The fixed-label "meta-network" of chapter 01: high accuracy on its own classes, chance on
new ones, while its features, read through the support set, are far above chance."""

import pytest
import torch

from mlcourse.baselines import PretrainedFeatures, backbone_of
from mlcourse.data.base import ImageClassDataset
from mlcourse.evaluate import evaluate
from mlcourse.fixed_labels import FixedLabelPredictor, held_out_accuracy, train_fixed_label_network


def template_dataset(num_classes=10, per_class=12, size=16, seed=0) -> ImageClassDataset:
    """Class c: a fixed random pattern of its own plus noise, so a classifier can learn each
    class and a feature extractor can tell new ones apart."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(num_classes, 1, size, size, generator=g)
    noise = 0.15 * torch.randn(num_classes, per_class, 1, size, size, generator=g)
    images = ((templates[:, None] + noise).clamp(0, 1) * 255).to(torch.uint8).reshape(-1, 1, size, size)
    targets = torch.arange(num_classes).repeat_interleave(per_class)
    return ImageClassDataset(images, targets, [f"c{c}" for c in range(num_classes)],
                             ["train" if c < num_classes // 2 else "test" for c in range(num_classes)], name="templates")


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    data = template_dataset()
    net, history = train_fixed_label_network(data, [0, 1, 2, 3, 4], holdout=4, steps=60, batch_size=16, seed=0,
                                             device=torch.device("cpu"), progress=False)
    return data, net, history


def test_it_learns_its_own_classes(trained):
    data, net, history = trained
    assert sum(history["loss"][-10:]) < sum(history["loss"][:10])
    accuracy, count = held_out_accuracy(net, data, [0, 1, 2, 3, 4], holdout=4)
    assert count == 20 and accuracy > 0.9


def test_on_new_classes_it_is_at_chance_and_its_features_are_not(trained):
    data, net, _ = trained
    new = data.subset_classes([5, 6, 7, 8, 9])
    fixed = evaluate(FixedLabelPredictor(net), new, 5, 1, 5, episodes=60, seed=0, device="cpu", progress=False)
    centroid = evaluate(PretrainedFeatures(backbone_of(net), mode="centroid"), new, 5, 1, 5, episodes=60, seed=0, device="cpu", progress=False)
    # per-episode labels are a random permutation the head cannot know: the expected accuracy is exactly 1/5
    assert abs(fixed.mean - 0.2) < 0.08, fixed
    assert centroid.mean > 0.6, centroid


def test_shuffled_labels_on_its_own_classes_are_chance_too(trained):
    data, net, _ = trained
    own = data.subset_classes([0, 1, 2, 3, 4])
    result = evaluate(FixedLabelPredictor(net), own, 5, 1, 5, episodes=60, seed=1, device="cpu", progress=False)
    assert abs(result.mean - 0.2) < 0.08, result


def test_bad_input(trained):
    data, net, _ = trained
    with pytest.raises(ValueError, match="at least 2 classes"):
        train_fixed_label_network(data, [3], progress=False)
    with pytest.raises(ValueError, match="classes repeat"):
        train_fixed_label_network(data, [1, 1], progress=False)
    with pytest.raises(ValueError, match="not in the dataset"):
        train_fixed_label_network(data, [0, 10], progress=False)
    with pytest.raises(ValueError, match="holdout must be"):
        held_out_accuracy(net, data, [0, 1], holdout=12)
    with pytest.raises(ValueError, match="steps and batch_size"):
        train_fixed_label_network(data, [0, 1], steps=0, progress=False)
    x = torch.rand(3, 1, 16, 16)
    with pytest.raises(ValueError, match="5 outputs but the episode has 3 ways"):
        FixedLabelPredictor(net)(x, torch.tensor([0, 1, 2]), x)


def test_command_line_rejects_bad_arguments(capsys):
    from mlcourse.fixed_labels import main

    for argv, message in [(["--classes", "1"], "--classes 1: must be an integer of at least 2"),
                          (["--steps", "0"], "--steps 0: must be an integer of at least 1"),
                          (["--episodes", "1"], "--episodes 1: must be an integer of at least 2")]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


@pytest.mark.slow
def test_command_line_runs_on_glyphs(capsys):
    from mlcourse.fixed_labels import main

    result = main(["--data", "glyphs", "--steps", "5", "--episodes", "4", "--threads", "1", "--json"])
    assert result["train_steps"] == 5 and result["episodes"] == 4 and len(result["episode_accuracies"]) == 4
    assert set(result["paired"]) == {"fixed-label features + centroid", "pixel 1-NN"}
    assert '"method": "fixed-label network"' in capsys.readouterr().out
