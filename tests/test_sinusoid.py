import matplotlib

matplotlib.use("Agg")
import torch  # noqa: E402

from mlcourse import sinusoid  # noqa: E402


def test_tasks_and_points():
    g = torch.Generator().manual_seed(0)
    tasks = sinusoid.sample_tasks(4, g)
    x, y = sinusoid.sample_points(tasks, 7, g)
    assert x.shape == y.shape == (4, 7, 1)
    assert torch.allclose(y, tasks.amplitude[:, None, None] * torch.sin(x - tasks.phase[:, None, None]))
    assert (tasks.amplitude >= 0.1).all() and (tasks.amplitude <= 5).all()


def test_maml_beats_pretraining_after_one_step():
    """The paper's claim in miniature: after 1 step on 10 points, MAML's curve is closer."""
    maml, h = sinusoid.train_maml(steps=400, outer_lr=3e-3, seed=0, progress=False)
    pre, _ = sinusoid.train_pretrained(steps=400, seed=0, progress=False)
    assert sum(h["loss"][-30:]) < sum(h["loss"][:30])
    maml_err, pre_err = 0.0, 0.0
    for seed in range(10):
        c = sinusoid.adaptation_curves({"maml": maml, "pre": pre}, max_steps=1, seed=100 + seed)
        maml_err += c.mse["maml"][1]
        pre_err += c.mse["pre"][1]
    assert maml_err < 0.6 * pre_err


def test_widget_callback_draws_without_a_browser():
    model = sinusoid.sine_mlp()
    c = sinusoid.adaptation_curves({"m": model}, max_steps=3, seed=0)
    assert len(c.predictions["m"]) == 4 and len(c.mse["m"]) == 4
    axes = sinusoid.plot_adaptation(c, step=2)
    assert len(axes[0].lines) == 3  # truth, the average wave, one model
    assert len(sinusoid.plot_adaptation(c, step=2, show_average=False)[0].lines) == 2


def test_the_average_task_is_minus_1_62_cos_x_not_flat():
    """What a pretrained model can at best learn: the mean wave over tasks (the docs quote it)."""
    import math

    from mlcourse import sinusoid

    g = torch.Generator().manual_seed(0)
    n = 200_000
    amplitude = sinusoid.AMPLITUDE[0] + (sinusoid.AMPLITUDE[1] - sinusoid.AMPLITUDE[0]) * torch.rand(n, generator=g)
    phase = sinusoid.PHASE[0] + (sinusoid.PHASE[1] - sinusoid.PHASE[0]) * torch.rand(n, generator=g)
    x = torch.linspace(-5, 5, 11)
    mean_wave = (amplitude[:, None] * torch.sin(x[None] - phase[:, None])).mean(0)
    expected = -(sinusoid.AMPLITUDE[0] + sinusoid.AMPLITUDE[1]) / 2 * (2 / math.pi) * torch.cos(x)
    assert torch.allclose(mean_wave, expected, atol=0.03) and expected.abs().max() > 1.6
    assert torch.allclose(sinusoid.average_wave(x), expected, atol=1e-5)


def test_a_pretrained_model_starts_near_the_average_wave_not_near_zero():
    """Chapter 04's claim, on a short run: the task-blind regressor drifts to the mean wave."""
    model, _ = sinusoid.train_pretrained(steps=300, seed=0, progress=False)
    x = torch.linspace(-5, 5, 200).view(-1, 1)
    with torch.no_grad():
        prediction = model(x).view(-1)
    to_average = (prediction - sinusoid.average_wave(x.view(-1))).pow(2).mean()
    to_flat = prediction.pow(2).mean()
    assert to_average < 0.5 * to_flat  # measured 0.27 against 0.85
