"""How good are generated characters? Metrics that need nothing from the internet.

The usual numbers (FID, Heusel et al., 2017; precision/recall, Kynkäänniemi et al., 2019)
compare *features* of real and generated images, taken from an Inception network trained on
ImageNet. Its weights have to be downloaded, and photographs are a poor model of pen
strokes. We use the same formulas in the feature space of a network the course trains
itself: a Conv-4 classifier (:func:`mlcourse.baselines.pretrain_classifier`) trained to tell
apart the *training* characters of :func:`mlcourse.data.sources.meta_splits`. Its 64-number
embedding (for 28x28 images; global average pooling keeps it at 64 for other sizes) is
what "looks like a character" means below. Numbers in this space are *not* comparable with
published FIDs, only with each other (same feature net, same sample sizes).

The net is cached in ``config.cache_dir() / "feature_net"``, one file per data source, image
size, seed and number of training steps, so every chapter and benchmark uses the same one.
Rebuild it with ``python -m mlcourse.metrics --rebuild`` (``MLCOURSE_FAST=1`` or ``--fast``
trains it briefly). For tests, :func:`random_feature_net` gives an untrained, fixed Conv-4:
random convolutional features already separate images by low-level statistics (blur, noise,
position), which is all the sanity checks need (Naeem et al., 2020, discuss random
embeddings as a reference for these metrics).

Three metrics
-------------
* :func:`frechet_distance`: fit a Gaussian to each feature set and take the Fréchet (2-
  Wasserstein) distance between them::

      FD = ||mu_1 - mu_2||^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})

  One number for "same distribution": it grows when samples are off (quality) and when they
  are too alike (diversity). It is biased upwards for small sets (Chong and Forsyth, 2020):
  compare numbers computed with the *same* number of images, and keep the real-vs-real
  value at that size as the floor.
* :func:`precision_recall`: the k-nearest-neighbour *manifold* estimate (Kynkäänniemi et al.,
  2019, "Improved Precision and Recall Metric for Assessing Generative Models"). Around each
  real feature draw a ball reaching its k-th nearest real neighbour; **precision** is the
  fraction of generated samples inside the union of those balls (are the fakes realistic?),
  **recall** the fraction of real samples inside the balls around the fakes (is all of the
  real variety covered?). Two numbers, separating quality from diversity.
* :func:`class_consistency`: for a class-conditional generator, the fraction of images
  generated for class ``c`` that a few-shot classifier, given real support images of the
  classes, assigns to ``c``. The default classifier is the nearest class mean in the
  feature space (ProtoNet-style); any ``predictor(support_x, support_y, query_x) -> scores``
  of the course can be passed instead.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import cache_dir, get_device, pick
from .data.base import ImageClassDataset
from .models import Conv4

CHUNK = 500  # images per forward pass when extracting features
_FORMAT = 1  # bump when the cached file's layout or the training recipe changes


# ---------------------------------------------------------------------------------------
# The feature network
# ---------------------------------------------------------------------------------------
class FeatureNet(nn.Module):
    """A frozen Conv-4 encoder followed by global average pooling: ``[B, C, H, W] -> [B, 64]``.

    For 28x28 inputs the map after four poolings is 1x1, so the pooling changes nothing and
    these are exactly the classifier's features. ``description`` says how it was made.
    """

    def __init__(self, encoder: Conv4, description: str = ""):
        super().__init__()
        self.encoder = encoder
        self.description = description
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    @property
    def dim(self) -> int:
        return self.encoder.encoder[-1][0].out_channels

    def train(self, mode: bool = True):  # always in eval mode: BatchNorm uses running statistics
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.encoder(x).mean(dim=(2, 3))


def random_feature_net(seed: int = 0, in_channels: int = 1) -> FeatureNet:
    """An untrained Conv-4 with weights fixed by ``seed``: cheap features for tests and sanity checks."""
    g_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        enc = Conv4(in_channels=in_channels)
    finally:
        torch.random.set_rng_state(g_state)
    return FeatureNet(enc, f"random Conv-4 (seed {seed}, untrained)")


def _fingerprint(dataset: ImageClassDataset) -> str:
    h = hashlib.sha1()
    h.update(str((dataset.name, tuple(dataset.images.shape), dataset.num_classes)).encode())
    h.update(dataset.images[:: max(1, len(dataset) // 256)].numpy().tobytes())  # a cheap content sample
    return h.hexdigest()[:10]


def feature_net_path(key: str) -> Path:
    return cache_dir() / "feature_net" / f"{key}.pt"


def build_feature_net(dataset: ImageClassDataset, steps: int, seed: int = 0, device: torch.device | None = None,
                      progress: bool = True, time_budget: float | None = None) -> tuple[FeatureNet, dict]:
    """Train a Conv-4 classifier on every class of ``dataset`` and keep its encoder (no caching)."""
    from .baselines import pretrain_classifier  # imported here: baselines pulls in more than metrics needs

    start = time.perf_counter()
    model, history = pretrain_classifier(dataset, steps=steps, seed=seed, device=device, progress=progress,
                                         time_budget=time_budget)
    info = {
        "dataset": repr(dataset), "steps": steps, "seed": seed,
        "final_train_acc": history.last("acc", 20) if "acc" in history else float("nan"),
        "seconds": time.perf_counter() - start,
    }
    desc = (f"Conv-4 trained {steps} steps on {dataset.name} ({dataset.num_classes} classes), "
            f"train acc {info['final_train_acc']:.2f}")
    return FeatureNet(model.backbone.cpu(), desc), info


def feature_net(
    source: str | None = None,
    size: int = 28,
    seed: int = 0,
    steps: int | None = None,
    *,
    dataset: ImageClassDataset | None = None,
    rebuild: bool = False,
    device: torch.device | None = None,
    progress: bool = True,
) -> FeatureNet:
    """The course's feature network for generation metrics, from the cache or trained now.

    Trained on the *training* split of ``meta_splits(source, size, seed=seed)`` (or on
    ``dataset`` when given) for ``steps`` steps (default ``pick(fast=50, full=500)``).
    The cache key holds the data (source and split name, or a fingerprint of ``dataset``),
    the size, the seed and the steps, so changing any of them trains a new net. Returned on
    the CPU; move it with ``.to(device)``.
    """
    steps = steps if steps is not None else pick(fast=50, full=500)
    if dataset is None:
        from .data.sources import meta_splits

        splits = meta_splits(source, size=size, seed=seed)
        dataset = splits.train
        key = f"{splits.source}-{dataset.name.replace('/', '_')}-{size}px-seed{seed}-{steps}steps"
    else:
        key = (f"custom-{dataset.name.replace('/', '_')}-{_fingerprint(dataset)}-"
               f"{dataset.image_shape[-1]}px-seed{seed}-{steps}steps")
    path = feature_net_path(key)
    if path.exists() and not rebuild:
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("format") == _FORMAT:
            enc = Conv4(in_channels=state["in_channels"])
            enc.load_state_dict(state["encoder"])
            net = FeatureNet(enc, state["description"])
            net.cache_path = path
            return net
    net, info = build_feature_net(dataset, steps, seed, device or get_device(), progress)
    from .train import save_checkpoint

    save_checkpoint(path, {"format": _FORMAT, "encoder": net.encoder.state_dict(), "in_channels": dataset.image_shape[0],
                           "description": net.description, "info": info})
    net.cache_path = path
    return net


# ---------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------
def _as_unit_images(images: torch.Tensor) -> torch.Tensor:
    if images.dtype == torch.uint8:
        return images.float().div(255.0)
    images = images.float()
    if images.numel() and (images.min() < -1e-3 or images.max() > 1 + 1e-3):
        raise ValueError(
            f"images must be uint8 or floats in [0, 1], got values in [{images.min():.3g}, {images.max():.3g}]; "
            "a tanh generator's output in [-1, 1] becomes [0, 1] with (x + 1) / 2"
        )
    return images


@torch.no_grad()
def extract_features(images, net: nn.Module, batch_size: int = CHUNK) -> torch.Tensor:
    """Features ``[N, D]`` (float64, CPU) of ``images`` (uint8, or float in ``[0, 1]``; or a dataset)."""
    if isinstance(images, ImageClassDataset):
        images = images.images
    if images.dim() != 4:
        raise ValueError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")
    net.eval()
    device = next(net.parameters()).device
    out = [net(_as_unit_images(images[i : i + batch_size]).to(device)).cpu().double()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, 0, dtype=torch.float64)


# ---------------------------------------------------------------------------------------
# Fréchet distance
# ---------------------------------------------------------------------------------------
def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition.

    Round-off can make tiny eigenvalues negative; they are clamped to zero.
    """
    vals, vecs = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def trace_sqrt_product(s1: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    """``tr((S_1 S_2)^{1/2})`` for symmetric PSD ``S_1, S_2``, without a non-symmetric square root.

    ``S_1 S_2`` is similar to ``M = S_1^{1/2} S_2 S_1^{1/2}`` (conjugate by ``S_1^{1/2}``), and
    ``M`` is symmetric PSD, so the eigenvalues of ``S_1 S_2`` are those of ``M``: real and
    non-negative. Hence ``tr((S_1 S_2)^{1/2}) = sum_i sqrt(eig_i(M))``, computed with ``eigh``,
    which is stable, unlike ``scipy.linalg.sqrtm`` on the non-symmetric product (whose small
    imaginary parts implementations of FID have to discard).
    """
    r1 = _psd_sqrt(s1)
    m = r1 @ s2 @ r1
    return torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()


def gaussian_fit(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` (float64) of features ``[N, D]``."""
    f = features.double()
    mu = f.mean(0)
    centred = f - mu
    return mu, centred.T @ centred / (f.shape[0] - 1)


def _check_sizes(name: str, n: int, d: int, minimum: int) -> None:
    if n < minimum:
        raise ValueError(f"{name}: got {n} samples of {d}-dimensional features; need at least {minimum}")


def frechet_distance(features_1: torch.Tensor, features_2: torch.Tensor) -> float:
    """Fréchet distance between Gaussian fits of two feature sets ``[N1, D]`` and ``[N2, D]``.

    Each set needs more samples than dimensions (``N > D``), or its covariance is singular
    and the number mostly measures the sample size; a ``ValueError`` says so. Use several
    times ``D`` (with D = 64, a thousand or more) and the same ``N`` for every comparison.
    """
    if features_1.dim() != 2 or features_2.dim() != 2 or features_1.shape[1] != features_2.shape[1]:
        raise ValueError(f"feature sets must be [N, D] with the same D, "
                         f"got {tuple(features_1.shape)} and {tuple(features_2.shape)}")
    d = features_1.shape[1]
    for name, f in (("first set", features_1), ("second set", features_2)):
        if f.shape[0] <= d:
            raise ValueError(
                f"Fréchet distance needs more samples than feature dimensions for a full-rank covariance: "
                f"the {name} has {f.shape[0]} samples of {d}-dimensional features; use at least {d + 1} "
                f"(several times {d} for a stable estimate)"
            )
    mu1, s1 = gaussian_fit(features_1)
    mu2, s2 = gaussian_fit(features_2)
    fd = (mu1 - mu2).pow(2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * trace_sqrt_product(s1, s2)
    return max(float(fd), 0.0)  # round-off can give -1e-12 for identical sets


# ---------------------------------------------------------------------------------------
# Precision and recall (k-NN manifolds)
# ---------------------------------------------------------------------------------------
def _kth_neighbour_radii(features: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Distance from each point to its k-th nearest *other* point of the same set."""
    radii = []
    for i in range(0, len(features), chunk):
        d = torch.cdist(features[i : i + chunk], features)
        # the smallest distance is the point to itself (0); the (k+1)-th smallest is the k-th neighbour
        radii.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def _coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """For each point, whether it lies in at least one ball ``||p - centre_j|| <= radius_j``."""
    inside = []
    for i in range(0, len(points), chunk):
        d = torch.cdist(points[i : i + chunk], centres)
        inside.append((d <= radii.unsqueeze(0)).any(dim=1))
    return torch.cat(inside)


def precision_recall(real_features: torch.Tensor, fake_features: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019), ``k = 3`` as in the paper.

    precision = fraction of fakes inside the real manifold (union of k-NN balls of the reals);
    recall    = fraction of reals inside the fake manifold. Each set needs more than ``k`` samples.
    """
    if real_features.dim() != 2 or fake_features.dim() != 2 or real_features.shape[1] != fake_features.shape[1]:
        raise ValueError(f"feature sets must be [N, D] with the same D, "
                         f"got {tuple(real_features.shape)} and {tuple(fake_features.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    d = real_features.shape[1]
    _check_sizes(f"precision/recall with k={k} (real set)", real_features.shape[0], d, k + 1)
    _check_sizes(f"precision/recall with k={k} (generated set)", fake_features.shape[0], d, k + 1)
    real, fake = real_features.cpu().double(), fake_features.cpu().double()
    precision = _coverage(fake, real, _kth_neighbour_radii(real, k)).double().mean()
    recall = _coverage(real, fake, _kth_neighbour_radii(fake, k)).double().mean()
    return float(precision), float(recall)


# ---------------------------------------------------------------------------------------
# Class consistency
# ---------------------------------------------------------------------------------------
class NearestClassMean:
    """Few-shot predictor: minus the squared distance to each support class's mean feature.

    ProtoNet's rule (Snell et al., 2017) applied to the feature net; same signature as every
    predictor of the course: ``(support_x, support_y, query_x) -> scores [Q, N]``.
    """

    def __init__(self, net: nn.Module):
        self.net = net

    def __call__(self, support_x, support_y, query_x):
        fs, fq = extract_features(support_x, self.net), extract_features(query_x, self.net)
        n_way = int(support_y.max()) + 1
        onehot = F.one_hot(support_y.long().cpu(), n_way).double()
        counts = onehot.sum(0)
        if (counts == 0).any():
            raise ValueError(f"classes {torch.nonzero(counts == 0).flatten().tolist()} have no support image")
        means = onehot.T @ fs / counts.unsqueeze(1)
        return -torch.cdist(fq, means).pow(2)


def class_consistency(
    support_x: torch.Tensor,
    support_y: torch.Tensor,
    generated_x: torch.Tensor,
    intended_y: torch.Tensor,
    predictor: Callable | None = None,
    net: nn.Module | None = None,
) -> float:
    """Fraction of generated images that ``predictor`` assigns to the class they were generated for.

    ``support_x/support_y``: real images of the N classes (labels ``0..N-1``); ``generated_x``:
    images generated for classes ``intended_y``. Default predictor:
    :class:`NearestClassMean` on ``net`` (required then). Chance level is ``1 / N``.
    """
    if len(generated_x) != len(intended_y):
        raise ValueError(f"{len(generated_x)} generated images but {len(intended_y)} intended labels")
    if len(generated_x) == 0:
        raise ValueError("class_consistency: no generated images")
    if predictor is None:
        if net is None:
            raise ValueError("class_consistency needs a predictor or a feature net")
        predictor = NearestClassMean(net)
    support_x, generated_x = _as_unit_images(support_x), _as_unit_images(generated_x)
    with torch.no_grad():
        scores = predictor(support_x, support_y, generated_x)
    return float((scores.argmax(1).cpu() == intended_y.cpu()).double().mean())


# ---------------------------------------------------------------------------------------
# Everything at once
# ---------------------------------------------------------------------------------------
@dataclass
class GenerationReport:
    fd: float
    precision: float
    recall: float
    n_real: int
    n_fake: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def __str__(self) -> str:
        return (f"FD {self.fd:.3f} | precision {self.precision:.3f} | recall {self.recall:.3f} "
                f"({self.n_fake} generated vs {self.n_real} real)")


def subsample(images: torch.Tensor, n: int | None, seed: int = 0) -> torch.Tensor:
    """``n`` images drawn without replacement under ``seed`` (all of them when ``n`` is None)."""
    if n is None or n >= len(images):
        return images
    return images[torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]]


def generation_report(real, fake, net: nn.Module, k: int = 3, n: int | None = None, seed: int = 0) -> GenerationReport:
    """FD and precision/recall of ``fake`` against ``real`` images (each subsampled to ``n`` under ``seed``)."""
    if isinstance(real, ImageClassDataset):
        real = real.images
    if isinstance(fake, ImageClassDataset):
        fake = fake.images
    real, fake = subsample(real, n, seed), subsample(fake, n, seed + 1)
    fr, ff = extract_features(real, net), extract_features(fake, net)
    p, r = precision_recall(fr, ff, k)
    return GenerationReport(frechet_distance(fr, ff), p, r, len(real), len(fake))


# ---------------------------------------------------------------------------------------
# python -m mlcourse.metrics --rebuild
# ---------------------------------------------------------------------------------------
# Conv-4 halves the image four times: 16 pixels is the smallest side that leaves one.
MIN_SIZE = 16


def main(argv: list[str] | None = None) -> int:
    from .cli import ArgumentParser, check_at_least

    parser = ArgumentParser(prog="python -m mlcourse.metrics",
                            description="Build or inspect the feature net of the generation metrics.")
    parser.add_argument("--rebuild", action="store_true", help="train it again even if cached")
    parser.add_argument("--data", default=None, choices=["auto", "omniglot", "glyphs"],
                        help="data source (default: $MLCOURSE_DATA or auto)")
    parser.add_argument("--size", type=int, default=28, help="image side in pixels (at least 16: Conv-4 halves it 4 times)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="training steps (default 50 in fast mode, 500 otherwise)")
    parser.add_argument("--fast", action="store_true", help="same as MLCOURSE_FAST=1: a short training")
    args = parser.parse_args(argv)
    check_at_least(parser, "--size", args.size, MIN_SIZE)
    check_at_least(parser, "--steps", args.steps, 1)
    if args.fast:
        import os

        os.environ["MLCOURSE_FAST"] = "1"
    start = time.perf_counter()
    net = feature_net(args.data, args.size, args.seed, args.steps, rebuild=args.rebuild)
    print(f"{net.description}\n{net.dim}-dimensional features; ready in {time.perf_counter() - start:.1f} s; "
          f"cached in {net.cache_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
