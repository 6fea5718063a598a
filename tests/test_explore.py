"""The latent-space explorer of chapter 08 works headless: interpolations, traversals, active
axes, the figure, and the widget callback driven by ipywidgets without a browser."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from mlcourse.generative import ConvVAE  # noqa: E402
from mlcourse.generative.explore import (  # noqa: E402
    active_axes,
    decode_mean,
    encode_mean,
    explorer_figure,
    interpolate,
    latent_traversal,
    show_explorer,
)


@pytest.fixture
def vae():
    torch.manual_seed(0)
    return ConvVAE(size=8, latent_dim=4, width=4, hidden=16).train()


@pytest.fixture
def images():
    return torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)


def test_interpolation_runs_between_the_two_reconstructions(vae, images):
    path = interpolate(vae, images[0], images[1], steps=5)
    assert path.shape == (5, 1, 8, 8) and path.device.type == "cpu"
    assert 0 <= float(path.min()) and float(path.max()) <= 1
    x = images[:2].float() / 255
    recon = vae.eval().reconstruct(x)
    assert torch.allclose(path[0], recon[0], atol=1e-6) and torch.allclose(path[-1], recon[1], atol=1e-6)
    # the midpoint is the decoding of the mean code
    mid = decode_mean(vae, encode_mean(vae, x).mean(0, keepdim=True))
    assert torch.allclose(interpolate(vae, images[0], images[1], steps=3)[1], mid[0], atol=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        interpolate(vae, images[0], images[1], steps=1)


def test_training_mode_is_left_as_it_was(vae, images):
    assert vae.training
    interpolate(vae, images[0], images[1])
    assert vae.training


def test_traversal_sets_one_coordinate(vae, images):
    values = [-2.0, 0.0, 2.0]
    walk = latent_traversal(vae, images[2], axis=1, values=values)
    assert walk.shape == (3, 1, 8, 8)
    z = encode_mean(vae, images[2]).repeat(3, 1)
    z[:, 1] = torch.tensor(values)
    assert torch.allclose(walk, decode_mean(vae, z), atol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        latent_traversal(vae, images[2], axis=7, values=values)


def test_traversal_along_a_direction(vae, images):
    direction = torch.tensor([3.0, 0.0, 4.0, 0.0])
    walk = latent_traversal(vae, images[0], axis=direction, values=torch.tensor([0.0, 5.0]))
    z0 = encode_mean(vae, images[0])
    want = decode_mean(vae, torch.cat([z0, z0 + torch.tensor([3.0, 0.0, 4.0, 0.0])]))
    assert torch.allclose(walk, want, atol=1e-6)
    with pytest.raises(ValueError, match="4 entries"):
        latent_traversal(vae, images[0], axis=torch.ones(3), values=[1.0])


def test_active_axes_are_sorted_by_their_kl(vae, images):
    order, kl = active_axes(vae, images, batch_size=4)  # two batches
    assert sorted(order.tolist()) == [0, 1, 2, 3]
    assert torch.all(kl[order][:-1] >= kl[order][1:])
    with torch.no_grad():
        mu, logvar = vae.eval().encode(images.float() / 255)
    want = (0.5 * (mu.pow(2) + logvar.exp() - logvar - 1)).mean(0).double()
    assert torch.allclose(kl, want, atol=1e-5)


def test_conditional_vae_takes_a_label():
    torch.manual_seed(0)
    cvae = ConvVAE(size=8, latent_dim=3, width=4, hidden=16, num_classes=5)
    x = torch.rand(2, 1, 8, 8)
    assert interpolate(cvae, x[0], x[1], steps=4, y=2).shape == (4, 1, 8, 8)
    assert latent_traversal(cvae, x[0], 0, [0.0, 1.0], y=torch.tensor(3)).shape == (2, 1, 8, 8)
    a = interpolate(cvae, x[0], x[1], steps=2, y=0)
    b = interpolate(cvae, x[0], x[1], steps=2, y=4)
    assert not torch.allclose(a, b)


def test_explorer_figure_and_callback(vae, images):
    order, kl = active_axes(vae, images)
    fig = explorer_figure(vae, images, a=1, b=4, axis=0, span=2.0, steps=5, order=order, kl=kl)
    assert len(fig.axes) == 2 * (5 + 2)
    assert f"latent axis {int(order[0])}" in " ".join(ax.get_title() for ax in fig.axes)
    plt.close(fig)
    with pytest.raises(IndexError):
        explorer_figure(vae, images, a=0, b=6)
    before = len(plt.get_fignums())
    assert show_explorer(vae, images, 0, 2, 1, steps=4) is None
    plt.close("all")
    assert len(plt.get_fignums()) <= before


def test_the_widget_calls_the_library_function(vae, images):
    """What chapter 08 does with ipywidgets, minus the browser: moving a slider calls the callback."""
    widgets = pytest.importorskip("ipywidgets")
    calls = []

    def spy(**kwargs):
        calls.append(kwargs)
        return show_explorer(**kwargs)

    w = widgets.interactive(spy, vae=widgets.fixed(vae), images=widgets.fixed(images),
                            a=widgets.IntSlider(value=0, min=0, max=len(images) - 1),
                            b=widgets.IntSlider(value=1, min=0, max=len(images) - 1),
                            axis=widgets.IntSlider(value=0, min=0, max=3),
                            span=widgets.FloatSlider(value=3.0, min=0.5, max=4.0), steps=widgets.fixed(5))
    assert calls and calls[-1]["a"] == 0 and calls[-1]["b"] == 1
    w.children[1].value = 3  # the slider of b
    assert calls[-1]["b"] == 3 and calls[-1]["vae"] is vae
    plt.close("all")
