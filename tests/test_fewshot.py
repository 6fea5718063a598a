import pytest
import torch
import torch.nn.functional as F

from conftest import toy_dataset
from mlcourse.fewshot import FewShotClassifier, validate_task


class NearestMean(FewShotClassifier):
    """A minimal protocol implementation: a linear embedding and nearest class mean."""

    def __init__(self, in_features: int = 64, dim: int = 8):
        super().__init__()
        self.embed = torch.nn.Linear(in_features, dim)

    def forward(self, support_x, support_y, query_x):
        n = validate_task(support_x, support_y, query_x)
        zs, zq = self.embed(support_x.flatten(1)), self.embed(query_x.flatten(1))
        protos = torch.stack([zs[support_y == j].mean(0) for j in range(n)])
        return -torch.cdist(zq, protos) ** 2


def test_validate_task_errors():
    x = torch.zeros(4, 1, 8, 8)
    assert validate_task(x, torch.tensor([0, 1, 1, 0]), x) == 2
    with pytest.raises(ValueError, match=r"classes \[1\] have no support image"):
        validate_task(x, torch.tensor([0, 2, 2, 0]), x)
    with pytest.raises(ValueError, match="found -1"):
        validate_task(x, torch.tensor([0, -1, 1, 0]), x)
    with pytest.raises(ValueError, match="differ in shape"):
        validate_task(x, torch.tensor([0, 1, 1, 0]), torch.zeros(2, 1, 9, 8))
    with pytest.raises(ValueError, match=r"4 support images but labels of shape \(3,\)"):
        validate_task(x, torch.tensor([0, 1, 1]), x)
    with pytest.raises(ValueError, match="must be integers"):
        validate_task(x, torch.tensor([0.0, 1.0, 1.0, 0.0]), x)


def test_meta_train_predict_save_load(tmp_path):
    data = toy_dataset(num_classes=10, per_class=20)
    torch.manual_seed(0)
    model = NearestMean(in_features=64)
    hist = model.meta_train(data, n_way=3, k_shot=2, q_query=3, steps=20, progress=False, device="cpu")
    assert len(hist["loss"]) == 20
    path = model.save(tmp_path / "m.pt")
    again = FewShotClassifier.load(path)
    assert isinstance(again, NearestMean) and again.embed.out_features == 8
    sx, sy, qx = torch.rand(6, 1, 8, 8), torch.tensor([0, 0, 1, 1, 2, 2]), torch.rand(2500, 1, 8, 8)
    out = model.predict(sx, sy, qx, chunk=1000)
    assert out.shape == (2500, 3)
    assert torch.allclose(again.predict(sx, sy, qx), out)


class Wider(NearestMean):
    """A subclass of a subclass with an argument of its own: save/load must keep it."""

    def __init__(self, in_features: int = 64, dim: int = 8, scale: float = 1.0):
        super().__init__(in_features, dim)
        self.scale = scale


def test_sub_subclass_config_round_trip(tmp_path):
    m = Wider(in_features=64, dim=4, scale=3.5)
    again = FewShotClassifier.load(m.save(tmp_path / "w.pt"))
    assert isinstance(again, Wider) and again.scale == 3.5 and again.embed.out_features == 4


def test_load_in_a_fresh_process_finds_the_class(tmp_path):
    """A checkpoint loads through the base class in a process that never imported its module."""
    import subprocess
    import sys

    from mlcourse.metric import ProtoNet

    path = ProtoNet(hidden=4).save(tmp_path / "proto.pt")
    code = f"from mlcourse.fewshot import FewShotClassifier; print(type(FewShotClassifier.load({str(path)!r})).__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ProtoNet"


def test_recalibrate_batchnorm_replaces_running_stats_with_exact_averages():
    from mlcourse.metric import ProtoNet

    torch.manual_seed(0)
    model = ProtoNet(hidden=4).eval()
    data = toy_dataset(num_classes=6, per_class=6, size=28)
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_mean.fill_(123.0)  # stale statistics, as if from distorted training images
    momentum = bn.momentum
    batch_means = []
    hook = bn.register_forward_hook(lambda m, inp, out: batch_means.append(inp[0].mean((0, 2, 3)).detach()))
    assert model.recalibrate_batchnorm(data, n_way=3, k_shot=1, q_query=2, episodes=5, device="cpu") == 4
    hook.remove()
    assert len(batch_means) == 5
    torch.testing.assert_close(bn.running_mean, torch.stack(batch_means).mean(0))  # equal weights
    assert bn.momentum == momentum and not model.training  # settings and mode restored
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    after = {k: v for k, v in model.state_dict().items() if k in before}
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights untouched


def test_recalibrate_batchnorm_is_a_no_op_without_running_stats():
    from mlcourse.optim import MAML

    model = MAML(n_way=3, hidden=4)
    assert model.recalibrate_batchnorm(toy_dataset(num_classes=6, per_class=6, size=28), n_way=3, episodes=2) == 0


def test_transductive_models_are_never_chunked():
    """MAML-family models normalise with the query batch: chunking would change their outputs."""
    from mlcourse.metric import ProtoNet
    from mlcourse.optim import MAML, Reptile

    torch.manual_seed(0)
    sx, sy = torch.rand(6, 1, 28, 28), torch.arange(3).repeat_interleave(2)
    qx = torch.rand(9, 1, 28, 28)
    maml = MAML(n_way=3, hidden=8, test_inner_steps=1)
    assert MAML.transductive and Reptile.transductive and not ProtoNet.transductive
    whole = maml.predict(sx, sy, qx)
    assert torch.allclose(maml.predict(sx, sy, qx, chunk=2), whole, atol=1e-6)
    # ... and the reason: outside predict, the same queries in chunks of 2 score differently.
    with torch.no_grad():
        chunked = torch.cat([maml(sx, sy, qx[i : i + 2]) for i in range(0, 9, 2)])
    assert not torch.allclose(chunked, whole, atol=1e-4)
    proto = ProtoNet(hidden=8)
    assert torch.allclose(proto.predict(sx, sy, qx, chunk=2), proto.predict(sx, sy, qx), atol=1e-5)
