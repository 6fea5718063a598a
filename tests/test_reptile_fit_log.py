"""Chapter 05's serial-versus-batched loop: meta_train_logging_fit."""

import pytest
import torch

from mlcourse.data.episodes import Episode
from mlcourse.optim.maml import MAML
from mlcourse.optim.reptile import FitLog, Reptile, meta_train_logging_fit


def blob_episodes(n, size=16, seed=0):
    """5-way 1-shot episodes of easy images: class c lights up row band c, labels shuffled per episode."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        perm = torch.randperm(5, generator=g)

        def images(k):
            x = 0.1 * torch.rand(5 * k, 1, size, size, generator=g)
            for i in range(5 * k):
                band = int(perm[i % 5])
                x[i, 0, 3 * band : 3 * band + 3] += 1.0
            return x

        y = torch.arange(5)
        out.append(Episode(images(1), y, images(2), y.repeat(2), perm))
    return out


def model(meta_batch=1, **kw):
    torch.manual_seed(0)
    return Reptile(n_way=5, image_size=16, hidden=4, inner_steps=3, inner_lr=1e-2, inner_batch=None, meta_batch=meta_batch, **kw)


def test_fit_log_is_deterministic_and_sized():
    eps = blob_episodes(8)
    a, b = model(2), model(2)
    la, lb = meta_train_logging_fit(a, eps, 4, 1.0), meta_train_logging_fit(b, eps, 4, 1.0)
    assert isinstance(la, FitLog) and len(la.task_losses) == 8 and la.seconds > 0
    assert la.task_losses == lb.task_losses
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not a.training  # left in eval mode


def test_serial_and_batched_first_update_agree():
    """Before any update, both start from the same θ and fit the first task the same way."""
    eps = blob_episodes(4)
    serial = meta_train_logging_fit(model(1), eps, 4, 0.25)
    batched = meta_train_logging_fit(model(4), eps, 1, 1.0)
    assert serial.task_losses[0] == pytest.approx(batched.task_losses[0], rel=1e-5)


def test_one_update_matches_outer_step_by_hand():
    eps = blob_episodes(2)
    m, ref = model(2), model(2)
    meta_train_logging_fit(m, eps, 1, 0.5, seed=3)
    tasks = [(torch.cat([e.support_x, e.query_x]), torch.cat([e.support_y, e.query_y])) for e in eps]
    ref.outer_step(tasks, 0.5, torch.Generator().manual_seed(3))  # ε at update 0 is step_size
    assert all(torch.allclose(p, q) for p, q in zip(m.parameters(), ref.parameters()))


def test_meta_training_lowers_the_fit_loss():
    eps = blob_episodes(60, seed=1)
    log = meta_train_logging_fit(model(1), eps, 60, 1.0)
    first, last = sum(log.task_losses[:10]) / 10, sum(log.task_losses[-10:]) / 10
    assert last < 0.7 * first


def test_bad_input():
    eps = blob_episodes(3)
    with pytest.raises(TypeError, match="Reptile"):
        meta_train_logging_fit(MAML(n_way=5, image_size=16, hidden=4), eps, 1, 1.0)
    with pytest.raises(ValueError, match="updates"):
        meta_train_logging_fit(model(), eps, 0, 1.0)
    with pytest.raises(ValueError, match="step_size"):
        meta_train_logging_fit(model(), eps, 1, 0.0)
    with pytest.raises(ValueError, match="need 4 episodes, got 3"):
        meta_train_logging_fit(model(2), eps, 2, 1.0)
