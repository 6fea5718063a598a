import math

import pytest
import torch

from mlcourse.train import History, load_checkpoint, save_checkpoint, train_loop


def test_train_loop_lowers_a_loss():
    torch.manual_seed(0)
    w = torch.zeros(3, requires_grad=True)
    target = torch.tensor([1.0, -2.0, 0.5])
    opt = torch.optim.SGD([w], lr=0.1)

    def step(i):
        loss = ((w - target) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.item()}

    h = train_loop(step, 50, progress=False)
    assert len(h["loss"]) == 50 and h.steps["loss"][:3] == [0, 1, 2]
    assert h["loss"][-1] < 1e-3 * h["loss"][0]
    train_loop(step, 5, history=h, progress=False)  # continues the step count
    assert h.steps["loss"][-1] == 54


def test_non_finite_loss_names_the_step():
    def step(i):
        return {"loss": 1.0 if i < 3 else math.nan}

    with pytest.raises(FloatingPointError, match="loss became nan at step 3"):
        train_loop(step, 10, progress=False)


def test_time_budget_stops_early():
    h = train_loop(lambda i: {"loss": 0.0}, 10**9, time_budget=0.05, progress=False)
    assert 0 < len(h["loss"]) < 10**9


def test_checkpoint_round_trip_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "ckpt.pt"
    h = History()
    h.log(0, loss=2.0)
    save_checkpoint(path, {"w": torch.arange(3), "history": h.state_dict()})
    got = load_checkpoint(path)
    assert torch.equal(got["w"], torch.arange(3))
    assert History.from_state_dict(got["history"])["loss"] == [2.0]

    # a crash while writing leaves the old file intact and no temporary file behind
    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, {"w": torch.zeros(1)})
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["w"], torch.arange(3))
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
