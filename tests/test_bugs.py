"""The bug gallery of chapter 04: every broken inner loop is caught by finite differences,
and the correct one is not."""

import copy

import pytest
import torch

from mlcourse.optim import bugs
from mlcourse.optim.inner_loop import fresh_buffers, functional_forward


def _flat(grads, model):
    return torch.cat([grads[n].reshape(-1) for n, _ in model.named_parameters()])


def _relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def problem():
    model, tasks = bugs.tiny_problem(seed=0)
    reference = _flat(bugs.finite_difference_meta_gradient(copy.deepcopy(model), tasks, 2, 0.5), model)
    return model, tasks, reference


def test_the_correct_meta_gradient_matches_finite_differences(problem):
    model, tasks, reference = problem
    g = _flat(bugs.correct_meta_gradient(copy.deepcopy(model), tasks, 2, 0.5), model)
    assert _relative_error(g, reference) < 1e-6


@pytest.mark.parametrize("name", [n for n in bugs.VARIANTS if not n.startswith("correct")])
def test_every_bug_is_far_from_finite_differences(problem, name):
    model, tasks, reference = problem
    g = _flat(bugs.VARIANTS[name](copy.deepcopy(model), tasks, 2, 0.5), model)
    # measured on this problem: 0.29 (BatchNorm leak) to 0.81 (in place); the correct one is 1e-9
    assert _relative_error(g, reference) > 0.05, name


def test_create_graph_false_is_first_order_maml(problem):
    """Without create_graph the result is the gradient of the query loss at θ' taken as a
    function of θ' (first order): the same as differentiating with every inner gradient detached."""
    model, tasks, _ = problem
    params = dict(model.named_parameters())
    own = dict(model.named_buffers())
    T = tasks[0].shape[0]
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(T):
        task = [t[i] for t in tasks]
        adapted = {n: p.detach().clone().requires_grad_() for n, p in params.items()}
        buffers = fresh_buffers(own)
        sx, sy, qx, qy = task
        for _ in range(2):
            model.train()
            loss = torch.nn.functional.cross_entropy(functional_forward(model, adapted, buffers, sx), sy)
            grads = torch.autograd.grad(loss, list(adapted.values()))
            adapted = {n: (w - 0.5 * g).detach().requires_grad_() for (n, w), g in zip(adapted.items(), grads)}
        model.eval()
        q = torch.nn.functional.cross_entropy(functional_forward(model, adapted, buffers, qx), qy) / T
        model.train()
        for (n, _), g in zip(adapted.items(), torch.autograd.grad(q, list(adapted.values()))):
            total[n] += g
    got = bugs.no_create_graph_meta_gradient(copy.deepcopy(model), tasks, 2, 0.5)
    for n in total:
        torch.testing.assert_close(got[n], total[n])


def test_the_batchnorm_leak_depends_on_task_order_and_the_correct_one_does_not(problem):
    model, tasks, _ = problem
    reverse = tuple(t.flip(0) for t in tasks)
    for fn, order_matters in [(bugs.correct_meta_gradient, False), (bugs.batchnorm_leak_meta_gradient, True)]:
        a = _flat(fn(copy.deepcopy(model), tasks, 2, 0.5), model)
        b = _flat(fn(copy.deepcopy(model), reverse, 2, 0.5), model)
        assert (_relative_error(a, b) > 1e-3) == order_matters, fn.__name__


def test_which_variants_write_into_the_model():
    rows = {r.variant: r for r in bugs.gallery(seed=1)}
    changed = {name for name, r in rows.items() if r.changes_model}
    assert changed == {"in-place p.data -= lr * g", "BatchNorm statistics shared across tasks"}
    assert rows["correct (out of place, create_graph=True, fresh buffers)"].relative_error < 1e-6
    assert rows["correct (out of place, create_graph=True, fresh buffers)"].cosine > 0.999999


def test_the_gallery_is_deterministic_and_prints():
    a, b = bugs.gallery(seed=2, tasks=2), bugs.gallery(seed=2, tasks=2)
    assert a == b
    text = bugs.format_gallery(a)
    assert "create_graph=False" in text and "rel. error vs FD" in text


@pytest.mark.parametrize("kwargs, message", [({"steps": 0}, "steps must be at least 1"), ({"lr": -1.0}, "lr must be a positive"),
                                             ({"lr": float("nan")}, "lr must be a positive"), ({"tasks": 1}, "tasks must be at least 2")])
def test_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bugs.gallery(**kwargs)


def test_command_line(capsys):
    rows = bugs.main(["--seeds", "1", "--lr", "0.1", "--json"])
    assert len(rows) == len(bugs.VARIANTS) and {r["lr"] for r in rows} == {0.1}
    assert '"variant"' in capsys.readouterr().out
    for argv, message in [(["--steps", "0"], "--steps 0: must be"), (["--lr", "-1"], "--lr -1.0: must be")]:
        with pytest.raises(SystemExit) as exit_info:
            bugs.main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
