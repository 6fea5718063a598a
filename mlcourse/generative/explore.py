"""Walking a VAE's latent space: interpolations, traversals, and the picture behind the explorer widget.

Everything here is a plain function of a trained VAE (anything with ``encode(x, y=None) ->
(mu, logvar)``, ``decode(z, y=None)`` and ``latent_dim``, e.g. :class:`~.vae.ConvVAE`), so
that chapter 08 can wire it to sliders with ``ipywidgets.interact`` and the tests can call it
without a browser.

* :func:`interpolate` decodes the straight line between the posterior means of two images;
* :func:`latent_traversal` moves one image's code along one latent axis (or any direction);
* :func:`active_axes` orders the latent axes by how much information they carry (their
  average KL from the prior; an axis with KL near 0 is ignored by the decoder, Burda et al.,
  2016, call the others "active units");
* :func:`explorer_figure` draws both strips for a pair of images, and :func:`show_explorer`
  shows it: the callback of the widget.

Images come in as ``uint8`` or floats in ``[0, 1]`` and go out as floats in ``[0, 1]`` on the CPU
(the decoder's mean: pixel probabilities for a Bernoulli decoder).
"""

from __future__ import annotations

from typing import Sequence

import torch

from .common import as_unit_float


def _device(vae) -> torch.device:
    return next(vae.parameters()).device


def _batch(x: torch.Tensor) -> torch.Tensor:
    """One image ``[C, H, W]`` or a batch ``[B, C, H, W]`` -> float batch in ``[0, 1]``."""
    x = as_unit_float(torch.as_tensor(x))
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f"expected an image [C, H, W] or images [B, C, H, W], got shape {tuple(x.shape)}")
    return x


def _label(y, n: int, device) -> torch.Tensor | None:
    if y is None:
        return None
    y = torch.as_tensor(y, dtype=torch.long).reshape(-1)
    return (y.expand(n) if y.numel() == 1 else y).to(device)


@torch.no_grad()
def encode_mean(vae, x: torch.Tensor, y=None) -> torch.Tensor:
    """Posterior means ``mu(x)``, ``[B, latent_dim]`` on the CPU (one row for a single image)."""
    x = _batch(x)
    was_training = vae.training
    vae.eval()
    try:
        mu, _ = vae.encode(x.to(_device(vae)), _label(y, len(x), _device(vae)))
    finally:
        vae.train(was_training)
    return mu.cpu()


@torch.no_grad()
def decode_mean(vae, z: torch.Tensor, y=None) -> torch.Tensor:
    """The decoder's mean image for each code of ``z [B, latent_dim]``, in ``[0, 1]`` on the CPU."""
    was_training = vae.training
    vae.eval()
    try:
        out = vae.decode(z.to(_device(vae)), _label(y, len(z), _device(vae)))
    finally:
        vae.train(was_training)
    if getattr(vae, "likelihood", "bernoulli") == "bernoulli":
        out = torch.sigmoid(out)
    return out.clamp(0, 1).cpu()


def interpolate(vae, x_a: torch.Tensor, x_b: torch.Tensor, steps: int = 8, y=None) -> torch.Tensor:
    """``steps`` images decoded from ``z_t = (1 - t) mu(x_a) + t mu(x_b)``, ``t = 0 .. 1``: ``[steps, C, H, W]``.

    The first and last images are the reconstructions of ``x_a`` and ``x_b``. ``y`` is the label
    for a conditional VAE (one label for the whole path).
    """
    if steps < 2:
        raise ValueError(f"an interpolation needs at least 2 steps, got {steps}")
    z_a, z_b = encode_mean(vae, x_a, y)[:1], encode_mean(vae, x_b, y)[:1]
    t = torch.linspace(0.0, 1.0, steps).unsqueeze(1)
    return decode_mean(vae, (1 - t) * z_a + t * z_b, y)


def latent_traversal(vae, x: torch.Tensor, axis, values: Sequence[float] | torch.Tensor, y=None) -> torch.Tensor:
    """Move the code of ``x`` along one latent axis and decode: ``[len(values), C, H, W]``.

    ``axis`` an int: coordinate ``axis`` of ``mu(x)`` is *set* to each value (the prior is
    ``N(0, 1)`` on every axis, so ``-3 .. 3`` spans it), the others are kept.
    ``axis`` a vector ``[latent_dim]``: the code moves to ``mu(x) + value * axis / ||axis||``
    (e.g. a principal direction of the codes).
    """
    mu = encode_mean(vae, x, y)[:1]
    values = torch.as_tensor(values, dtype=mu.dtype).reshape(-1)
    z = mu.repeat(len(values), 1)
    if isinstance(axis, torch.Tensor) and axis.dim() == 1:
        if axis.numel() != mu.shape[1]:
            raise ValueError(f"a direction must have {mu.shape[1]} entries, got {axis.numel()}")
        direction = axis.to(mu.dtype) / axis.norm().clamp(min=1e-12)
        z = z + values.unsqueeze(1) * direction
    else:
        axis = int(axis)
        if not -mu.shape[1] <= axis < mu.shape[1]:
            raise ValueError(f"axis {axis} out of range for a {mu.shape[1]}-dimensional latent space")
        z[:, axis] = values
    return decode_mean(vae, z, y)


@torch.no_grad()
def active_axes(vae, images: torch.Tensor, y=None, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """``(order, kl)``: the latent axes sorted by their mean KL over ``images`` (largest first),
    and that KL per axis, in nats. Axes with KL near 0 carry no information about the image."""
    x = _batch(images)
    device = _device(vae)
    was_training = vae.training
    vae.eval()
    total = torch.zeros(vae.latent_dim, dtype=torch.float64)
    try:
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(device)
            yb = None if y is None else _label(torch.as_tensor(y)[i : i + batch_size], len(xb), device)
            mu, logvar = vae.encode(xb, yb)
            total += (0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)).sum(0).cpu().double()
    finally:
        vae.train(was_training)
    kl = total / len(x)
    return torch.argsort(kl, descending=True), kl


def explorer_figure(vae, images: torch.Tensor, a: int = 0, b: int = 1, axis: int = 0, span: float = 3.0,
                    steps: int = 9, order: Sequence[int] | torch.Tensor | None = None, kl: torch.Tensor | None = None):
    """The explorer's picture for images ``a`` and ``b`` of ``images``: a matplotlib ``Figure``.

    Top row: image ``a``, the interpolation from ``a`` to ``b`` (decoded), image ``b``.
    Bottom row: image ``a`` and its code moved along latent axis ``order[axis]`` from ``-span``
    to ``+span`` (``order`` from :func:`active_axes`, so ``axis=0`` is the most used axis;
    identity when omitted). ``kl`` (per axis) is shown in the title when given.
    """
    import matplotlib.pyplot as plt

    x = _batch(images)
    n = len(x)
    if not (0 <= a < n and 0 <= b < n):
        raise IndexError(f"image indices a={a}, b={b} out of range for {n} images")
    latent = int(order[axis]) if order is not None else int(axis)
    path = interpolate(vae, x[a], x[b], steps)
    walk = latent_traversal(vae, x[a], latent, torch.linspace(-span, span, steps))
    fig, axes = plt.subplots(2, steps + 2, figsize=(1.0 * (steps + 2), 2.5))
    rows = [(x[a], path, x[b]), (x[a], walk, None)]
    for r, (left, strip, right) in enumerate(rows):
        cells = [left, *strip, right]
        for c, img in enumerate(cells):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if img is None:
                ax.set_axis_off()
                continue
            ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
            if c in (0, steps + 1):
                for s in ax.spines.values():
                    s.set_edgecolor("tab:orange")
                    s.set_linewidth(2)
    axes[0, 0].set_title(f"image {a}", fontsize=8)
    axes[0, steps + 1].set_title(f"image {b}", fontsize=8)
    axes[0, 1 + steps // 2].set_title("decoded interpolation  a → b", fontsize=8)
    info = f" (KL {float(kl[latent]):.2f} nats)" if kl is not None else ""
    axes[1, 1 + steps // 2].set_title(f"latent axis {latent}{info}: {-span:g} → {span:g}", fontsize=8)
    fig.tight_layout()
    return fig


def show_explorer(vae, images: torch.Tensor, a: int = 0, b: int = 1, axis: int = 0, span: float = 3.0,
                  steps: int = 9, order=None, kl=None) -> None:
    """Draw :func:`explorer_figure` and show it: the callback for ``ipywidgets.interact``."""
    import matplotlib.pyplot as plt

    explorer_figure(vae, images, a, b, axis, span, steps, order, kl)
    plt.show()
