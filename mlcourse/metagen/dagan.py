"""DAGAN: a generator that takes one drawing and draws another of the same character
(Antoniou, Storkey and Edwards, 2017, "Data Augmentation Generative Adversarial Networks",
arXiv:1711.04340), small enough for a CPU.

The idea
--------
A class-conditional GAN needs the class among its inputs, so it cannot draw a character it
was never trained on. DAGAN conditions on an *image* instead: the generator reads a source
drawing ``x`` and a noise vector ``z`` and returns ``x' = G(x, z)``, which should be another
drawing of the same character. Nothing in ``G`` is specific to a class, so once trained on
the training alphabets it applies to a character from a new alphabet as it stands: no
fine-tuning, one forward pass per generated drawing.

What makes ``x'`` a drawing *of the same character*, and not ``x`` itself, is the critic.
It judges **pairs**: a real pair is two different drawings of one training character
``(x, y)``, a fake pair is ``(x, G(x, z))``. To fool it the generator must produce something
that stands to ``x`` as a second drawer's version stands to the first: the same strokes,
moved, thickened, bent the way people's handwriting differs. Copying ``x`` is not enough,
because no real pair is two identical images; drawing another character fails too, because
in real pairs both halves are the same character.

Training is WGAN-GP (chapter 07, :mod:`mlcourse.generative.gan`): the critic minimises
``f(x, G(x, z)) - f(x, y) + λ GP`` and the generator ``-f(x, G(x, z))``, with ``n_critic``
critic steps per generator step. The penalty is taken with respect to the second image of
the pair, the source held fixed: the Lipschitz constraint is on what the generator controls.

The networks
------------
Generator (an encoder-decoder with skips, the U-Net shape of the paper made small)::

    x [1, 28, 28] -> conv -> e1 [w, 14, 14] -> conv -> e2 [2w, 7, 7] -> linear -> h [code]
    (h, z) -> linear -> [2w, 7, 7] ; cat e2 -> deconv -> [w, 14, 14] ; cat e1 -> deconv -> x'

The skips carry the source's layout to the decoder (where the strokes are); the code ``h``
and the noise ``z`` at the bottleneck decide how this drawing differs. The critic is chapter
07's :class:`~mlcourse.generative.gan.Discriminator` with two input channels (source and
candidate stacked) and layer normalisation, as WGAN-GP requires.

Images are ``[0, 1]`` outside and ``[-1, 1]`` inside, as everywhere in the course.
:class:`DAGAN` follows the :class:`~mlcourse.metagen.common.FewShotGenerator` protocol:
``meta_train`` on the training characters, ``generate(support, n, seed=)`` draws ``n`` images,
cycling through the support drawings as sources.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from ..config import get_device
from ..data.base import ImageClassDataset
from ..generative.common import from_tanh_range, to_tanh_range
from ..generative.gan import Discriminator, critic_loss_wgan, g_loss_wgan, gradient_penalty
from ..train import History, train_loop
from .common import FewShotGenerator, check_support

ADAM_BETAS = (0.0, 0.9)  # the WGAN-GP paper's


def _check_int(name: str, value, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


class PairGenerator(nn.Module):
    """``G(x, z)``: a source image ``x [B, 1, 28, 28]`` in ``[-1, 1]`` and noise ``z [B, z_dim]``
    -> a new image ``[B, 1, 28, 28]`` in ``[-1, 1]``."""

    def __init__(self, size: int = 28, channels: int = 1, width: int = 32, code_dim: int = 128, z_dim: int = 32):
        super().__init__()
        if size % 4:
            raise ValueError(f"size must be a multiple of 4 (two halvings), got {size}")
        self.size, self.channels, self.z_dim = size, channels, z_dim
        s = size // 4
        w = width
        self.enc1 = nn.Sequential(nn.Conv2d(channels, w, 4, 2, 1), nn.LeakyReLU(0.2))
        self.enc2 = nn.Sequential(nn.Conv2d(w, 2 * w, 4, 2, 1), nn.BatchNorm2d(2 * w), nn.LeakyReLU(0.2))
        self.code = nn.Sequential(nn.Flatten(), nn.Linear(2 * w * s * s, code_dim), nn.LeakyReLU(0.2))
        self.project = nn.Sequential(
            nn.Linear(code_dim + z_dim, 2 * w * s * s), nn.Unflatten(1, (2 * w, s, s)), nn.BatchNorm2d(2 * w), nn.ReLU()
        )
        self.up1 = nn.Sequential(nn.ConvTranspose2d(4 * w, w, 4, 2, 1), nn.BatchNorm2d(w), nn.ReLU())
        self.up2 = nn.Sequential(nn.ConvTranspose2d(2 * w, channels, 4, 2, 1), nn.Tanh())

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        d = self.project(torch.cat([self.code(e2), z], dim=1))
        d = self.up1(torch.cat([d, e2], dim=1))
        return self.up2(torch.cat([d, e1], dim=1))


class WarpGenerator(PairGenerator):
    """``G(x, z)`` that *redraws* the source: a smooth displacement field and a stroke residual,
    both decoded from the source's code and the noise, applied to the source itself.

    The U-Net above must learn to draw strokes from scratch, which takes a GAN thousands of
    steps; on this CPU budget it collapsed (chapter 11 shows it). Here the output starts as
    the source exactly (both heads start at zero), so every output is a drawing of the right
    character from the first step, and the critic's only lesson is *how* a second drawing
    differs from the first: where strokes move (the field, at most ``max_shift`` of the image
    side, upsampled from 7x7 so it bends strokes rather than scattering pixels) and where ink
    appears or fades (the residual).
    """

    def __init__(self, size: int = 28, channels: int = 1, width: int = 32, code_dim: int = 128, z_dim: int = 32,
                 max_shift: float = 0.15):  # fmt: skip
        super().__init__(size, channels, width, code_dim, z_dim)
        self.max_shift = max_shift
        w = width
        self.flow = nn.Conv2d(4 * w, 2, 3, padding=1)  # from the 7x7 decoder map (and the source's)
        self.up2 = nn.ConvTranspose2d(2 * w, channels, 4, 2, 1)  # the residual, no tanh yet
        for head in (self.flow, self.up2):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        d = torch.cat([self.project(torch.cat([self.code(e2), z], dim=1)), e2], dim=1)
        b = x.shape[0]
        flow = self.max_shift * 2 * torch.tanh(self.flow(d))  # grid units: the image spans [-1, 1]
        flow = F.interpolate(flow, size=x.shape[-2:], mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
        identity = torch.eye(2, 3, device=x.device, dtype=x.dtype).expand(b, 2, 3)
        grid = F.affine_grid(identity, list(x.shape), align_corners=False) + flow
        # warp in [0, 1] so that empty paper (0) fills what moves into view
        warped = F.grid_sample((x + 1) / 2, grid, align_corners=False, padding_mode="zeros")
        residual = torch.tanh(self.up2(torch.cat([self.up1(d), e1], dim=1)))
        return (2 * (warped + residual) - 1).clamp(-1, 1)


GENERATORS = {"unet": PairGenerator, "warp": WarpGenerator}


class PairCritic(nn.Module):
    """``f(x, y)``: one score per pair ``(source, candidate)``, both ``[B, 1, 28, 28]`` in ``[-1, 1]``."""

    def __init__(self, size: int = 28, channels: int = 1, width: int = 32):
        super().__init__()
        self.net = Discriminator(size=size, channels=2 * channels, width=width, norm="layer")

    def forward(self, source: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
        if source.shape != candidate.shape:
            raise ValueError(f"source {tuple(source.shape)} and candidate {tuple(candidate.shape)} must have the same shape")
        return self.net(torch.cat([source, candidate], dim=1))


def same_class_pairs(dataset: ImageClassDataset, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` pairs ``(x, y)`` of two *different* drawings of one random class each, floats in ``[0, 1]``."""
    pools = [idx for idx in dataset.indices_by_class() if len(idx) >= 2]
    if not pools:
        raise ValueError(f"no class of {dataset.name!r} has two images: DAGAN trains on pairs of drawings of one character")
    first, second = [], []
    for c in torch.randint(len(pools), (batch,), generator=generator).tolist():
        idx = pools[c]
        i, j = torch.randperm(len(idx), generator=generator)[:2].tolist()
        first.append(idx[i])
        second.append(idx[j])
    return dataset.as_float(torch.stack(first)), dataset.as_float(torch.stack(second))


class DAGAN(FewShotGenerator):
    """Image-conditional WGAN-GP: a drawing and noise in, another drawing of its character out.

    Args:
        size, channels: image shape (28x28 grayscale for the course's Omniglot).
        width: channels of the first conv layer of generator and critic (each later one doubles).
        code_dim: length of the bottleneck code of the source image.
        z_dim: length of the noise vector.
        n_critic: critic steps per generator step (5 in WGAN-GP).
        gp_weight: ``λ`` of the gradient penalty (10 in WGAN-GP).
        lr: Adam learning rate of both networks.
        batch: pairs per step.
        generator: ``"warp"`` (default: the source redrawn through a learned displacement field
            and residual, :class:`WarpGenerator`) or ``"unet"`` (an encoder-decoder that draws
            the output from scratch, the paper's shape, :class:`PairGenerator`).
    """

    method_name = "dagan"

    def __init__(self, size: int = 28, channels: int = 1, width: int = 32, code_dim: int = 128, z_dim: int = 32,
                 n_critic: int = 5, gp_weight: float = 10.0, lr: float = 1e-4, batch: int = 32, generator: str = "warp"):  # fmt: skip
        super().__init__()
        for name, value, low in (("size", size, 8), ("channels", channels, 1), ("width", width, 1),
                                 ("code_dim", code_dim, 1), ("z_dim", z_dim, 1), ("n_critic", n_critic, 1), ("batch", batch, 2)):  # fmt: skip
            _check_int(name, value, low)
        if not gp_weight >= 0 or not lr > 0:
            raise ValueError(f"gp_weight must be >= 0 and lr > 0, got {gp_weight!r} and {lr!r}")
        self.size, self.channels, self.z_dim = size, channels, z_dim
        self.n_critic, self.gp_weight, self.lr, self.batch = n_critic, gp_weight, lr, batch
        if generator not in GENERATORS:
            raise ValueError(f"generator must be one of {sorted(GENERATORS)}, got {generator!r}")
        self.generator = GENERATORS[generator](size, channels, width, code_dim, z_dim)
        self.critic = PairCritic(size, channels, width)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)

    def forward(self, source: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``G(source, z)`` in ``[-1, 1]`` (sources in ``[-1, 1]`` too)."""
        return self.generator(source, z)

    def training_step(self, x: torch.Tensor, y: torch.Tensor, g_opt, c_opt, generator: torch.Generator | None = None) -> dict:
        """One generator step after ``n_critic`` critic steps on the pairs ``(x, y)`` (``[-1, 1]``)."""
        b = x.shape[0]

        def noise():
            return torch.randn(b, self.z_dim, generator=generator).to(x.device)

        for _ in range(self.n_critic):
            with torch.no_grad():
                fake = self.generator(x, noise())
            real_scores, fake_scores = self.critic(x, y), self.critic(x, fake)
            gp = gradient_penalty(lambda c: self.critic(x, c), y, fake, generator=generator)
            c_loss = critic_loss_wgan(real_scores, fake_scores) + self.gp_weight * gp
            c_opt.zero_grad(set_to_none=True)
            c_loss.backward()
            c_opt.step()
        g_loss = g_loss_wgan(self.critic(x, self.generator(x, noise())))
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
        return {"loss": c_loss.item(), "g_loss": g_loss.item(), "gp": gp.item(),
                "wdist": (real_scores.mean() - fake_scores.mean()).item()}  # fmt: skip

    def meta_train(self, dataset: ImageClassDataset, *, steps: int, time_budget: float | None = None, seed: int = 0,
                   device=None, progress=True, history: History | None = None) -> History:  # fmt: skip
        """``steps`` generator steps (or ``time_budget`` seconds) on pairs of drawings of the
        same character of ``dataset`` (the training alphabets). Logged per step: ``loss`` (the
        critic's, penalty included), ``g_loss``, ``gp`` and ``wdist`` (the critic's estimate of
        the Wasserstein distance between real and generated pairs: it should fall)."""
        _check_int("steps", steps, 0)
        if not isinstance(dataset, ImageClassDataset):
            raise TypeError(f"meta_train needs an ImageClassDataset, got {type(dataset).__name__}")
        if tuple(dataset.image_shape) != self.image_shape:
            raise ValueError(f"dataset images are {tuple(dataset.image_shape)}, this model was built for {self.image_shape}")
        device = torch.device(device) if device is not None else get_device()
        self.to(device)
        torch.manual_seed(seed)
        rng = torch.Generator().manual_seed(seed)
        g_opt = torch.optim.Adam(self.generator.parameters(), lr=self.lr, betas=ADAM_BETAS)
        c_opt = torch.optim.Adam(self.critic.parameters(), lr=self.lr, betas=ADAM_BETAS)

        def step(i):
            x, y = same_class_pairs(dataset, self.batch, rng)
            return self.training_step(to_tanh_range(x).to(device), to_tanh_range(y).to(device), g_opt, c_opt, rng)

        self.train()
        try:
            history = train_loop(step, steps, time_budget=time_budget, history=history, desc="train DAGAN", progress=progress)
        finally:
            self.eval()
        return history

    @torch.no_grad()
    def generate(self, support: torch.Tensor, n: int, *, seed: int = 0) -> torch.Tensor:
        """``n`` new drawings from the support drawings (``[K, C, H, W]`` in ``[0, 1]``): image
        ``i`` is ``G(support[i % K], z_i)``. Returns ``float [n, C, H, W]`` in ``[0, 1]`` on the
        CPU, deterministic under ``seed``."""
        _check_int("n", n, 1)
        support = check_support(support, self.image_shape)
        rng = torch.Generator().manual_seed(seed)
        sources = support[torch.arange(n) % support.shape[0]]
        z = torch.randn(n, self.z_dim, generator=rng)
        was_training = self.training
        self.eval()
        try:
            out = self.generator(to_tanh_range(sources).to(self.device), z.to(self.device))
        finally:
            self.train(was_training)
        return from_tanh_range(out).cpu().clamp(0, 1)

    @torch.no_grad()
    def pair_wdist(self, dataset: ImageClassDataset, pairs: int = 256, seed: int = 0) -> float:
        """The critic's ``mean f(x, y) - mean f(x, G(x, z))`` on ``pairs`` pairs of ``dataset``:
        how well the current critic still tells real pairs from generated ones (e.g. on the
        validation alphabet, which neither network saw)."""
        rng = torch.Generator().manual_seed(seed)
        x, y = same_class_pairs(dataset, pairs, rng)
        x, y = to_tanh_range(x).to(self.device), to_tanh_range(y).to(self.device)
        was_training = self.training
        self.eval()
        try:
            fake = self.generator(x, torch.randn(pairs, self.z_dim, generator=rng).to(self.device))
            return (self.critic(x, y).mean() - self.critic(x, fake).mean()).item()
        finally:
            self.train(was_training)


def main(argv: list[str] | None = None) -> dict:
    """``python -m mlcourse.metagen.dagan --out runs/aug/dagan.pt --time-budget 600 --threads 1``:
    train a DAGAN on the training alphabets (with their rotations, as the bench trains), save
    it, print one JSON line (steps reached, seconds, load, the critic's gap on validation pairs)."""
    import json
    import os
    import sys

    from ..cli import ArgumentParser, bad_argument, check_at_least

    prog = "python -m mlcourse.metagen.dagan"
    p = ArgumentParser(prog=prog, description="Train a DAGAN on the training alphabets and save it.")
    p.add_argument("--out", required=True, help="checkpoint path to write")
    p.add_argument("--data", default="omniglot", help="omniglot (default) or glyphs")
    p.add_argument("--steps", type=int, default=100_000, help="generator steps at most (default 100000: the time budget ends training)")
    p.add_argument("--time-budget", type=float, default=600.0, help="seconds of training (default 600)")
    p.add_argument("--n-critic", type=int, default=2, help="critic steps per generator step (default 2)")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate (default 2e-4)")
    p.add_argument("--generator", choices=sorted(GENERATORS), default="warp", help="warp (default) or unet")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="also write the summary (and the loss curves) to this JSON file")
    args = p.parse_args(argv)
    check_at_least(p, "--steps", args.steps, 1)
    check_at_least(p, "--n-critic", args.n_critic, 1)
    check_at_least(p, "--threads", args.threads, 1)
    if not args.time_budget > 0:
        bad_argument(p, "--time-budget", args.time_budget, "a number of seconds above 0")
    if not args.lr > 0:
        bad_argument(p, "--lr", args.lr, "a learning rate above 0")
    torch.set_num_threads(args.threads)
    from ..data.sources import meta_splits

    try:
        splits = meta_splits(args.data, rotations=True)
    except (FileNotFoundError, ValueError) as error:
        bad_argument(p, "--data", args.data, f"an available data source ({str(error).splitlines()[0]})")
    model = DAGAN(n_critic=args.n_critic, lr=args.lr, generator=args.generator)
    start, cpu = time.perf_counter(), time.process_time()
    history = model.meta_train(splits.train, steps=args.steps, time_budget=args.time_budget, seed=args.seed, device="cpu", progress="log")
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    steps_done = len(history["loss"])
    model.save(args.out, train_seconds=seconds, train_steps=steps_done, train_alphabets=sorted(set(splits.train.class_groups)))
    out = {
        "command": "python -m mlcourse.metagen.dagan " + " ".join(sys.argv[1:] if argv is None else argv),
        "data": splits.source, "train_alphabets": sorted(set(splits.train.class_groups)), "train_classes": splits.train.num_classes,
        "config": model._config, "steps": steps_done, "seconds": seconds, "cpu_seconds": cpu_seconds,
        "threads": torch.get_num_threads(), "load_average": os.getloadavg()[0], "seed": args.seed,
        "val_pair_wdist": model.pair_wdist(splits.val, seed=1), "train_pair_wdist": model.pair_wdist(splits.train, seed=1),
        "history": {k: v[:: max(1, len(v) // 200)] for k, v in history.values.items()},
        "history_steps": list(range(0, steps_done, max(1, steps_done // 200))),
    }  # fmt: skip
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(out, f)
    print(json.dumps({k: v for k, v in out.items() if not k.startswith("history")}))
    return out


if __name__ == "__main__":
    main()
