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


class FakeClock:
    """A ``time`` stand-in whose clock moves only when a step says so."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def test_time_budget_stops_after_the_step_that_uses_it_up(monkeypatch):
    import mlcourse.train as train_module

    clock = FakeClock()
    monkeypatch.setattr(train_module, "time", clock)

    def step(i):  # each step takes exactly 1 s of the fake clock
        clock.now += 1.0
        return {"loss": float(i)}

    h = train_loop(step, 1000, time_budget=5.5, progress=False)
    assert h["loss"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]  # the check runs after each step: 6 s >= 5.5 s
    assert h.seconds == pytest.approx(6.0)
    clock.now = 0.0
    assert len(train_loop(step, 1000, time_budget=3.0, progress=False)["loss"]) == 3  # 3 s >= 3 s stops
    clock.now = 0.0
    assert len(train_loop(step, 4, time_budget=100.0, progress=False)["loss"]) == 4  # the steps end first


def test_time_budget_stops_early_in_real_time():
    import time

    start = time.perf_counter()
    h = train_loop(lambda i: time.sleep(0.01) or {"loss": 0.0}, 1000, time_budget=0.1, progress=False)
    elapsed = time.perf_counter() - start
    assert 0.1 <= h.seconds <= elapsed
    assert 1 <= len(h["loss"]) <= 10  # at least 10 ms a step: at most 10 steps fit in 0.1 s


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
