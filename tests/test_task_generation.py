"""Task generation from the Neural Statistician's context space: generated classes never
involve a held-out character, determinism under a seed, shapes and names, generated classes
differ from their parents, the alphabet rule, and every bad input gets a clear error."""

from __future__ import annotations

import pytest
import torch

from mlcourse.data.base import ImageClassDataset, concat, with_rotations
from mlcourse.data.sources import check_disjoint
from mlcourse.metagen.statistician import NeuralStatistician
from mlcourse.metagen.task_generation import (
    check_synthetic_disjoint,
    class_contexts,
    first_alphabets,
    generate_classes,
    interpolation_path,
    is_synthetic,
    synthetic_parents,
)

TINY = dict(size=16, context_dim=16, latent_dim=4, width=8, hidden=32)


class PixelContext(NeuralStatistician):
    """A statistician whose context is the class's mean drawing pooled to 4x4 (16 numbers):
    what a trained statistic network does in spirit (different characters, distant
    contexts), without the minutes of training a real one needs on a shared CPU."""

    def context(self, support):
        mu = 4 * torch.nn.functional.avg_pool2d(support.float().mean(0, keepdim=True), 4).flatten()
        return mu, torch.zeros_like(mu)


def blocks(groups: dict[str, int], per_class: int = 6, seed: int = 0) -> ImageClassDataset:
    """16x16 "characters": each class lights a random subset of a 4x4 grid of cells, shifted by a pixel per drawing."""
    g = torch.Generator().manual_seed(seed)
    images, targets, names, group_of = [], [], [], []
    for group, n in groups.items():
        for j in range(n):
            grid = (torch.rand(4, 4, generator=g) < 0.35).float().repeat_interleave(4, 0).repeat_interleave(4, 1)
            for _ in range(per_class):
                dy, dx = torch.randint(-1, 2, (2,), generator=g).tolist()
                images.append(torch.roll(grid, (dy, dx), (0, 1)))
                targets.append(len(names))
            names.append(f"{group}/character{j + 1:02d}")
            group_of.append(group)
    x = (torch.stack(images)[:, None] * 255).to(torch.uint8)
    return ImageClassDataset(x, torch.tensor(targets), names, group_of, name="blocks")


@pytest.fixture(scope="module")
def setting():
    torch.manual_seed(0)
    train = blocks({"Alpha": 6, "Beta": 5}, seed=0)
    test = blocks({"Gamma": 4}, seed=1)
    model = PixelContext(**TINY).eval()
    with torch.no_grad():  # an untrained decoder that reads the context strongly, as a trained one does
        model.decoder[0].weight[:, TINY["latent_dim"] :] *= 10
    return model, train, test


def test_shapes_names_groups_and_determinism(setting):
    model, train, _ = setting
    a = generate_classes(model, train, 7, per_class=5, seed=3)
    assert a.images.shape == (35, 1, 16, 16) and a.images.dtype == torch.uint8
    assert a.num_classes == 7 and a.class_sizes().tolist() == [5] * 7
    assert all(is_synthetic(n) for n in a.class_names)
    assert set(a.class_groups) == {"synthetic:Alpha", "synthetic:Beta"}  # alphabets take turns
    for name, group in zip(a.class_names, a.class_groups):
        parents = synthetic_parents(name)
        assert len(parents) == 2 and parents[0] != parents[1]
        assert {p.split("/")[0] for p in parents} == {group.split(":")[1]}  # both parents from the class's alphabet
    b = generate_classes(model, train, 7, per_class=5, seed=3)
    assert torch.equal(a.images, b.images) and a.class_names == b.class_names
    c = generate_classes(model, train, 7, per_class=5, seed=4)
    assert not torch.equal(a.images, c.images)
    p = generate_classes(model, train, 3, per_class=2, mode="perturb", scale=0.5, seed=0)
    assert p.num_classes == 3 and all(len(synthetic_parents(n)) == 1 for n in p.class_names)


def test_generated_classes_differ_from_their_parents(setting):
    model, train, _ = setting
    contexts = class_contexts(model, train)
    assert contexts.shape == (train.num_classes, TINY["context_dim"])
    new = generate_classes(model, train, 6, per_class=8, seed=0)
    decoded = generate_classes(model, train, 6, per_class=8, seed=0, t_range=(0.0, 0.0))  # t = 0: parent a itself
    for c in range(new.num_classes):
        mix, own = new.images[new.targets == c].float(), decoded.images[decoded.targets == c].float()
        # the same noise decoded at the interpolated context and at parent a's context
        assert (mix.mean(0) - own.mean(0)).abs().mean() > 1.0
        real_parent = train.images[train.targets == train.class_names.index(synthetic_parents(new.class_names[c])[0])].float()
        assert not any(torch.equal(m, r) for m in mix for r in real_parent)  # no drawing is a copy


def test_no_generated_class_involves_a_held_out_character(setting):
    model, train, test = setting
    synthetic = generate_classes(model, train, 10, per_class=3, seed=0)
    check_synthetic_disjoint(synthetic, test)  # passes
    joined = with_rotations(concat([train, synthetic]))
    check_synthetic_disjoint(joined, test)
    check_disjoint(joined, blocks({"Delta": 2}, seed=2), test)  # new group names: still disjoint
    # a generator fed the held-out characters is caught, from the names alone
    leaked = generate_classes(model, test, 3, per_class=2, seed=0)
    with pytest.raises(ValueError, match="held-out"):
        check_synthetic_disjoint(concat([train, leaked]), test)
    with pytest.raises(ValueError, match="held-out"):
        check_synthetic_disjoint(train, train)  # real classes are checked too
    renamed = ImageClassDataset(synthetic.images, synthetic.targets, synthetic.class_names, ["Gamma"] * 10)
    with pytest.raises(ValueError, match="held-out alphabet"):
        check_synthetic_disjoint(renamed, test)


def test_interpolation_path_runs_from_one_parent_to_the_other(setting):
    model, train, _ = setting
    path = interpolation_path(model, train, 0, 3, steps=5)
    assert path.shape == (5, 1, 16, 16) and path.min() >= 0 and path.max() <= 1
    ends = interpolation_path(model, train, 3, 0, steps=2)  # reversed: the same two ends, swapped
    assert torch.allclose(path[0], ends[1], atol=1e-6) and torch.allclose(path[-1], ends[0], atol=1e-6)
    assert (path[2] - path[0]).abs().mean() > 0.01 and (path[2] - path[-1]).abs().mean() > 0.01
    with pytest.raises(ValueError, match="steps"):
        interpolation_path(model, train, 0, 1, steps=1)
    with pytest.raises(ValueError, match="different"):
        interpolation_path(model, train, 2, 2)
    with pytest.raises(ValueError, match="class index"):
        interpolation_path(model, train, 0, train.num_classes)


def test_first_alphabets_is_alphabetical():
    data = blocks({"Latin": 2, "Early_Aramaic": 2, "Greek": 2, "Korean": 2}, per_class=2)
    assert first_alphabets(data, 1) == ["Early_Aramaic"]
    assert first_alphabets(data, 2) == ["Early_Aramaic", "Greek"]
    assert first_alphabets(data, 4) == ["Early_Aramaic", "Greek", "Korean", "Latin"]


def test_bad_inputs(setting):
    model, train, test = setting
    with pytest.raises(ValueError, match="k must be"):
        first_alphabets(train, 3)
    with pytest.raises(ValueError, match="k must be"):
        first_alphabets(train, 0)
    with pytest.raises(ValueError, match="mode"):
        generate_classes(model, train, 2, mode="blend")
    with pytest.raises(ValueError, match="n_classes"):
        generate_classes(model, train, 0)
    with pytest.raises(ValueError, match="per_class"):
        generate_classes(model, train, 2, per_class=1.5)
    with pytest.raises(ValueError, match="t_range"):
        generate_classes(model, train, 2, t_range=(0.8, 0.2))
    with pytest.raises(ValueError, match="scale"):
        generate_classes(model, train, 2, mode="perturb", scale=0)
    with pytest.raises(ValueError, match="at least two characters"):
        generate_classes(model, train.subset_classes([0]), 2)
    synthetic = generate_classes(model, train, 2, per_class=2)
    with pytest.raises(ValueError, match="real characters"):
        generate_classes(model, synthetic, 2)
    with pytest.raises(ValueError, match="built for"):
        class_contexts(model, blocks({"A": 2}).map_images(lambda x: torch.nn.functional.pad(x, (0, 4, 0, 4))))
    with pytest.raises(TypeError, match="NeuralStatistician"):
        class_contexts(object(), train)
    with pytest.raises(ValueError, match="not the name of a synthetic class"):
        synthetic_parents("Greek/character01")
    with pytest.raises(ValueError, match="at least one held-out"):
        check_synthetic_disjoint(synthetic)


@pytest.mark.slow
@pytest.mark.shared_data
def test_real_omniglot_training_alphabets_generate_leak_free_classes():
    from mlcourse.data.sources import meta_splits

    splits = meta_splits("omniglot")
    assert first_alphabets(splits.train, 1) == ["Early_Aramaic"]
    assert first_alphabets(splits.train, 2) == ["Early_Aramaic", "Greek"]
    train = splits.train.subset_groups(first_alphabets(splits.train, 1))
    torch.manual_seed(0)
    synthetic = generate_classes(NeuralStatistician(size=28), train, 4, per_class=2, seed=0)
    check_synthetic_disjoint(concat([train, synthetic]), splits.val, splits.test)
    check_disjoint(with_rotations(concat([train, synthetic])), splits.val, splits.test)
    assert all(p.startswith("Early_Aramaic/") for n in synthetic.class_names for p in synthetic_parents(n))


def _script(name: str):
    from conftest import load_benchmark

    return load_benchmark(name)


@pytest.mark.parametrize("argv, message", [
    (["statistician", "--alphabets", "0", "--out", "x.pt"], "--alphabets"),
    (["statistician", "--alphabets", "5", "--out", "x.pt"], "at most 4"),
    (["statistician", "--alphabets", "1", "--steps", "0", "--out", "x.pt"], "--steps"),
    (["protonet", "--alphabets", "1", "--ratio", "0"], "--ratio"),
    (["protonet", "--alphabets", "1", "--episodes", "1"], "--episodes"),
    (["protonet", "--alphabets", "1", "--time-budget", "-1"], "--time-budget"),
    (["protonet", "--alphabets", "1", "--statistician", "no/such.pt"], "no such file"),
])  # fmt: skip
def test_taskgen_command_line_refuses_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        _script("taskgen_table").main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err
