"""MetaGAN on a prototypical network (Zhang, Che, Ghahramani, Bengio and Song, NeurIPS 2018).

The idea
--------
A few-shot classifier sees each class through one or five drawings: its decision boundaries
are drawn wherever the few points leave room. MetaGAN makes the classifier *also* a
discriminator: a task-conditioned generator produces fake drawings "near" the task, and the
classifier must put them in an extra class ``N + 1``, "generated". Fakes that look almost like
the task's characters sit near its class boundaries, so pushing them out sharpens the
boundaries (the semi-supervised GAN argument of Salimans et al., 2016, and Dai et al., 2017:
a "bad" generator, one that fills the gaps between classes, helps the classifier most).

The (N+1)-way discriminator without a new output (Salimans et al.'s trick)
-------------------------------------------------------------------------
ProtoNet's logits ``l_k = -||f(x) - c_k||^2 + b`` for the N classes, and the fake class gets a
logit fixed at 0. A softmax is unchanged when every logit moves by one constant, so fixing
one logit loses nothing, and ``b`` (one learned scalar; it shifts all N logits at once and so
never changes the N-way prediction) sets how close to a prototype a drawing must lie to be
called real. With ``Z(x) = sum_k exp(l_k)``::

    p(real | x) = Z / (Z + 1),      p(y = k | x, real) = softmax_k(l)

Discriminator loss (per episode; ``lambda`` = ``gan_weight``)::

    L_D = CE_N(l(x_q), y_q)                                  classify the real queries
        + lambda * [ softplus(-logsumexp(l(x_q)))            real queries are real: -log p(real)
                   + softplus( logsumexp(l(G(z, task))))]    fakes are fake: -log p(fake)

With ``lambda = 1`` the first two terms are *exactly* the (N+1)-way cross-entropy of the real
queries and the third that of the fakes labelled ``N + 1`` (:func:`n_plus_one_logits` and
the test that checks it). Generator loss, feature matching (Salimans et al.; Zhang et al.'s
choice)::

    L_G = || mean_q f(x_q) - mean_fakes f(G(z, task)) ||^2

The generator is conditioned on the task: its input is noise and the mean embedding of the
task's support set (computed without gradient), so it draws "characters like this task's".

At test time nothing changes: the N-way prediction is ProtoNet's (the generator and ``b``
are only used in training), so the two arms of a comparison are scored identically.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import get_device
from ..data.episodes import EpisodeDataset
from ..fewshot import validate_task
from ..metric.protonet import ProtoNet, prototypes, squared_euclidean
from ..train import History, train_loop


def n_plus_one_logits(class_logits: torch.Tensor, bias: torch.Tensor | float = 0.0) -> torch.Tensor:
    """``[M, N]`` class logits -> ``[M, N + 1]``: ``l + bias`` and a last column of zeros (the fake class)."""
    if not isinstance(class_logits, torch.Tensor) or class_logits.dim() != 2:
        raise ValueError(f"class_logits must be a tensor [M, N], got {getattr(class_logits, 'shape', type(class_logits).__name__)}")
    zeros = class_logits.new_zeros(class_logits.shape[0], 1)
    return torch.cat([class_logits + bias, zeros], dim=1)


def discriminator_loss(real_logits: torch.Tensor, real_y: torch.Tensor, fake_logits: torch.Tensor,
                       bias: torch.Tensor | float = 0.0, gan_weight: float = 1.0) -> dict[str, torch.Tensor]:  # fmt: skip
    """The discriminator's loss (see the module notes) and its parts: ``loss``, ``classification``, ``real``, ``fake``.

    ``real_logits [Q, N]`` with labels ``real_y [Q]`` in ``0..N-1``; ``fake_logits [F, N]``.
    Written with ``softplus`` and ``logsumexp`` so that distances of hundreds never overflow.
    """
    if real_logits.dim() != 2 or fake_logits.dim() != 2 or real_logits.shape[1] != fake_logits.shape[1]:
        raise ValueError(f"real_logits and fake_logits must be [Q, N] and [F, N], got {tuple(real_logits.shape)} "
                         f"and {tuple(fake_logits.shape)}")  # fmt: skip
    if real_y.shape != real_logits.shape[:1]:
        raise ValueError(f"real_y must be [{real_logits.shape[0]}], got {tuple(real_y.shape)}")
    if fake_logits.shape[0] == 0:
        raise ValueError("fake_logits holds no fake image")
    if not gan_weight >= 0:
        raise ValueError(f"gan_weight must be >= 0, got {gan_weight!r}")
    classification = F.cross_entropy(real_logits, real_y)
    real = F.softplus(-(torch.logsumexp(real_logits, 1) + bias)).mean()
    fake = F.softplus(torch.logsumexp(fake_logits, 1) + bias).mean()
    return {"loss": classification + gan_weight * (real + fake), "classification": classification, "real": real, "fake": fake}


def feature_matching_loss(real_features: torch.Tensor, fake_features: torch.Tensor) -> torch.Tensor:
    """``|| mean(real) - mean(fake) ||^2`` over the feature axis (the real side carries no gradient)."""
    if real_features.dim() != 2 or fake_features.dim() != 2 or real_features.shape[1] != fake_features.shape[1]:
        raise ValueError(f"features must be [A, D] and [B, D], got {tuple(real_features.shape)} and {tuple(fake_features.shape)}")
    return (real_features.detach().mean(0) - fake_features.mean(0)).pow(2).sum()


class TaskGenerator(nn.Module):
    """Noise and a task embedding -> ``size x size`` images in ``[0, 1]`` (two transposed convolutions)."""

    def __init__(self, embed_dim: int = 64, noise_dim: int = 32, width: int = 64, size: int = 28, channels: int = 1):
        super().__init__()
        if size % 4:
            raise ValueError(f"size must be a multiple of 4, got {size}")
        self.embed_dim, self.noise_dim, self.base = embed_dim, noise_dim, size // 4
        self.net = nn.Sequential(
            nn.Linear(embed_dim + noise_dim, width * self.base * self.base), nn.BatchNorm1d(width * self.base * self.base), nn.ReLU(),
            nn.Unflatten(1, (width, self.base, self.base)),
            nn.ConvTranspose2d(width, width // 2, 4, 2, 1), nn.BatchNorm2d(width // 2), nn.ReLU(),
            nn.ConvTranspose2d(width // 2, channels, 4, 2, 1), nn.Sigmoid(),
        )  # fmt: skip

    def forward(self, task_embedding: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``task_embedding [D]`` (one task) or ``[B, D]``, ``noise [B, noise_dim]``: images ``[B, C, size, size]``."""
        if noise.dim() != 2 or noise.shape[1] != self.noise_dim:
            raise ValueError(f"noise must be [B, {self.noise_dim}], got {tuple(noise.shape)}")
        if task_embedding.dim() == 1:
            task_embedding = task_embedding.expand(noise.shape[0], -1)
        if task_embedding.shape != (noise.shape[0], self.embed_dim):
            raise ValueError(f"task_embedding must be [{self.embed_dim}] or [{noise.shape[0]}, {self.embed_dim}], "
                             f"got {tuple(task_embedding.shape)}")  # fmt: skip
        return self.net(torch.cat([task_embedding, noise], dim=1))


class MetaGANProtoNet(ProtoNet):
    """ProtoNet trained as the (N+1)-way discriminator of a task-conditioned generator (see the module notes).

    ``gan_weight`` is ``lambda`` of the discriminator loss (0 trains a plain ProtoNet, with the
    generator along for the ride); ``fakes_per_query`` fakes are drawn per real query.
    Prediction is ProtoNet's.
    """

    method_name = "metagan-protonet"

    def __init__(self, in_channels: int = 1, hidden: int = 64, noise_dim: int = 32, gan_weight: float = 1.0,
                 fakes_per_query: float = 1.0, image_size: int = 28):  # fmt: skip
        super().__init__(in_channels=in_channels, hidden=hidden, distance="euclidean")
        if not gan_weight >= 0:
            raise ValueError(f"gan_weight must be >= 0, got {gan_weight!r}")
        if not fakes_per_query > 0:
            raise ValueError(f"fakes_per_query must be positive, got {fakes_per_query!r}")
        embed_dim = self.backbone.feature_dim((in_channels, image_size, image_size))
        self.generator = TaskGenerator(embed_dim, noise_dim, size=image_size, channels=in_channels)
        self.fake_bias = nn.Parameter(torch.zeros(()))  # b: the real/fake threshold
        self.gan_weight, self.fakes_per_query = float(gan_weight), float(fakes_per_query)

    def discriminator_parameters(self) -> list[nn.Parameter]:
        gen = {id(p) for p in self.generator.parameters()}
        return [p for p in self.parameters() if id(p) not in gen]

    def gan_losses(self, support_x, support_y, query_x, query_y, noise: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
        """One episode's ``d_loss`` and ``g_loss`` (and their parts, and the real queries' logits), in train mode.

        Support, queries and fakes pass through the backbone as one batch (BatchNorm sees
        them together, so it cannot normalise the fakes' difference away).
        """
        n_way = validate_task(support_x, support_y, query_x)
        if query_y.shape != query_x.shape[:1]:
            raise ValueError(f"query_y must be [{query_x.shape[0]}], got {tuple(query_y.shape)}")
        n_fake = max(1, round(self.fakes_per_query * len(query_x)))
        if noise is None:
            noise = torch.randn(n_fake, self.generator.noise_dim, generator=generator).to(query_x.device)
        with torch.no_grad():
            condition = self.backbone(support_x).mean(0)  # the task: mean support embedding
        fake = self.generator(condition, noise)
        z = self.backbone(torch.cat([support_x, query_x, fake]))
        s, q = len(support_x), len(query_x)
        zs, zq, zf = z[:s], z[s : s + q], z[s + q :]
        protos = prototypes(zs, support_y, n_way)
        real_logits, fake_logits = -squared_euclidean(zq, protos), -squared_euclidean(zf, protos)
        d = discriminator_loss(real_logits, query_y, fake_logits, self.fake_bias, self.gan_weight)
        g = feature_matching_loss(zq, zf)
        return {"d_loss": d["loss"], "g_loss": g, "classification": d["classification"], "real": d["real"],
                "fake": d["fake"], "logits": real_logits, "fake_images": fake}  # fmt: skip

    def meta_train(self, dataset, *, n_way: int = 5, k_shot: int = 1, q_query: int = 15, steps: int = 1000, lr: float = 1e-3,
                   time_budget: float | None = None, seed: int = 0, device=None, progress=True,
                   history: History | None = None) -> History:  # fmt: skip
        """Episodic training as :meth:`FewShotClassifier.meta_train`, with the GAN game in every step.

        One optimiser (``make_optimizer``, so a budget-aware schedule applies to both players)
        over all parameters; each player's gradient comes only from its own loss
        (``backward(inputs=...)``), then one step moves both.
        """
        device = torch.device(device) if device is not None else get_device()
        self.to(device)
        torch.manual_seed(seed)
        noise_rng = torch.Generator().manual_seed(seed + 1)
        episodes = EpisodeDataset(dataset, n_way, k_shot, q_query, num_episodes=max(1, steps), seed=seed)
        opt, sched = self.make_optimizer(lr, steps)
        d_params, g_params = self.discriminator_parameters(), list(self.generator.parameters())

        def step(i):
            self.train()
            ep = episodes[i % len(episodes)].to(device)
            out = self.gan_losses(ep.support_x, ep.support_y, ep.query_x, ep.query_y, generator=noise_rng)
            opt.zero_grad(set_to_none=True)
            out["d_loss"].backward(inputs=d_params, retain_graph=True)
            out["g_loss"].backward(inputs=g_params)
            opt.step()
            sched.step()
            acc = (out["logits"].argmax(-1) == ep.query_y).float().mean()
            return {"loss": out["d_loss"].item(), "classification": out["classification"].item(), "real": out["real"].item(),
                    "fake": out["fake"].item(), "g_loss": out["g_loss"].item(), "acc": acc.item(), "bias": self.fake_bias.item()}  # fmt: skip

        history = train_loop(step, steps, time_budget=time_budget, history=history, desc="meta-train MetaGAN-ProtoNet", progress=progress)
        self.eval()
        return history

    @torch.no_grad()
    def sample_fakes(self, support_x: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` generated images for the task of ``support_x`` (eval mode), on the CPU: for pictures."""
        was = self.training
        self.eval()
        try:
            condition = self.embed(support_x.to(self.device)).mean(0)
            noise = torch.randn(n, self.generator.noise_dim, generator=torch.Generator().manual_seed(seed)).to(self.device)
            return self.generator(condition, noise).cpu()
        finally:
            self.train(was)
