"""Benchmark the course's GAN and VAE on handwritten characters, with metrics that work offline.

Usage::

    python benchmarks/generative.py                      # Omniglot if found, else glyphs; ~6 + 5 min of training
    python benchmarks/generative.py --data omniglot --json
    python benchmarks/generative.py --fast               # a one-minute smoke run (also MLCOURSE_FAST=1)
    python benchmarks/generative.py --only vae --vae-budget 120

What happens:

1. **Data.** :func:`mlcourse.data.sources.meta_splits` gives a training split and a test split
   of *disjoint alphabets*. The models train on the training split only.
2. **Feature net.** :func:`mlcourse.metrics.feature_net`: a Conv-4 classifier trained on the
   training split (cached in ``cache_dir()/feature_net``; trained now if missing).
3. **References.** Each split is cut into two disjoint random halves A and B of ``--n``
   images (seeded). Every set of images is scored against test B (*held-out alphabets*, what
   the issue asks for) and against train B (the distribution the models were trained on),
   always at the same size ``n``: the Fréchet distance is biased by sample size. The real A
   halves calibrate the numbers: ``real test (A)`` vs test B and ``real train (A)`` vs train B
   are the floors (same distribution, other images), and ``real train (A)`` vs test B is what
   a *perfect* model of the training alphabets scores against the new alphabets. (The feature
   net was trained on the training split, so it spreads training characters apart more than
   new ones: compare numbers within a column, not across the two.)
4. **GAN** (DCGAN, non-saturating loss by default) and **VAE** (Bernoulli decoder, dynamic
   binarisation) train for a time budget; ``n`` samples of each are scored against B. The
   VAE's test log-likelihood is the importance-weighted bound ``L_k`` (Burda et al., 2016) on
   one fixed stochastic binarisation of the whole test split.
5. Sample grids are written as PNGs to ``--out`` (default: a temporary folder).

``--json`` prints one JSON object on stdout (progress and the table go to stderr).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch


def save_grid(images: torch.Tensor, path: Path, nrow: int = 16, scale: int = 2) -> Path:
    """Write ``[B, 1, H, W]`` images in ``[0, 1]`` as one PNG grid (no matplotlib needed)."""
    from PIL import Image

    from mlcourse.viz import image_grid

    grid = image_grid(images, nrow=nrow, pad=2, pad_value=0.3)[0]
    img = Image.fromarray((grid.clamp(0, 1) * 255).round().to(torch.uint8).numpy(), mode="L")
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def save_snapshots(snapshots, path: Path, per_row: int = 16) -> Path | None:
    """One row of the first ``per_row`` images of each snapshot (training progress, top to bottom)."""
    if not snapshots:
        return None
    if len(snapshots) > 8:  # eight rows, evenly spaced over training
        snapshots = [snapshots[i] for i in torch.linspace(0, len(snapshots) - 1, 8).round().long().tolist()]
    rows = snapshots
    return save_grid(torch.cat([imgs[:per_row] for _, imgs in rows]), path, nrow=per_row)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# The Fréchet distance needs more images per set than the feature net's 64 dimensions.
MIN_N = 65


def main(argv: list[str] | None = None) -> dict:
    from mlcourse.cli import ArgumentParser, bad_argument, check_at_least, check_positive

    parser = ArgumentParser(prog="benchmarks/generative.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, choices=["auto", "omniglot", "glyphs"])
    parser.add_argument("--fast", action="store_true", help="smoke-test sizes (same as MLCOURSE_FAST=1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--only", choices=["gan", "vae"], default=None, help="run one model only")
    parser.add_argument("--gan-loss", default="nonsaturating", choices=["nonsaturating", "wgan-gp"])
    parser.add_argument("--gan-budget", type=float, default=None, help="seconds of GAN training (default 360; fast 20)")
    parser.add_argument("--vae-budget", type=float, default=None, help="seconds of VAE training (default 300; fast 20)")
    parser.add_argument("--gan-steps", type=int, default=None, help="step cap for the GAN (default 20000; fast 30)")
    parser.add_argument("--vae-steps", type=int, default=None, help="step cap for the VAE (default 20000; fast 30)")
    parser.add_argument("--gan-width", type=int, default=32)
    parser.add_argument("--gan-batch", type=int, default=32)
    parser.add_argument("--k", type=int, default=None, help="importance samples of the IWAE bound (default 100; fast 5)")
    parser.add_argument("--n", type=int, default=None,
                        help=f"images per set for FD and precision/recall (default 1000; fast 200; at least {MIN_N})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", default=None, help="folder for the sample PNGs (default: a new temporary folder)")
    parser.add_argument("--log-every", type=float, default=30.0,
                        help="seconds between progress lines on stderr when it is not a terminal (default 30)")
    args = parser.parse_args(argv)
    # every check that needs no data, before anything is loaded or trained
    for name in ("gan_budget", "vae_budget", "log_every"):
        check_positive(parser, "--" + name.replace("_", "-"), getattr(args, name))
    for name in ("gan_steps", "vae_steps", "gan_width", "gan_batch", "k", "threads"):
        check_at_least(parser, "--" + name.replace("_", "-"), getattr(args, name), 1)
    if args.n is not None and args.n < MIN_N:
        bad_argument(parser, "--n", args.n, f"an integer of at least {MIN_N} (the Fréchet distance needs more images "
                                            f"per set than the {MIN_N - 1} feature dimensions)")
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        bad_argument(parser, "--out", args.out, "a folder (this is a file)")
    if args.fast:
        os.environ["MLCOURSE_FAST"] = "1"
    # a bar on a terminal; plain lines every --log-every seconds in a log file or a pipe
    progress = True if sys.stderr.isatty() else args.log_every

    from mlcourse.config import device_info, get_device, pick, seed_everything
    from mlcourse.data.sources import meta_splits
    from mlcourse.generative import evaluate_vae, train_gan, train_vae
    from mlcourse.metrics import feature_net, generation_report

    t_start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = get_device()
    gan_budget = args.gan_budget if args.gan_budget is not None else pick(20.0, 360.0)
    vae_budget = args.vae_budget if args.vae_budget is not None else pick(20.0, 300.0)
    gan_steps = args.gan_steps if args.gan_steps is not None else pick(30, 20000)
    vae_steps = args.vae_steps if args.vae_steps is not None else pick(30, 20000)
    k = args.k if args.k is not None else pick(5, 100)
    n = args.n if args.n is not None else pick(200, 1000)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    seed_everything(args.seed)
    splits = meta_splits(args.data, seed=args.seed)
    train, test = splits.train, splits.test
    most = min(len(test), len(train)) // 2  # each set is half of a split
    if n > most and (args.n is not None or most < MIN_N):  # checked before anything is written or trained
        bad_argument(parser, "--n", n, f"at most {most} (each set is half of a split: the {splits.source} splits "
                                       f"have {len(train)} training and {len(test)} test images)"
                                       + (f", and at least {MIN_N}: this data is too small" if most < MIN_N else ""))
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="mlcourse-generative-"))
    log(device_info(device))
    log(str(splits))
    if n > most:  # the default is more than this data holds: use what there is
        n = most
        log(f"the splits have {len(train)} and {len(test)} images: using n = {n} per set")

    t0 = time.perf_counter()
    net = feature_net(args.data, seed=args.seed, progress=progress).to(device)
    feature_s = time.perf_counter() - t0
    log(f"feature net: {net.description} ({feature_s:.1f} s)")

    def halves(images, seed):
        perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
        return images[perm[:n]], images[perm[n : 2 * n]]

    # B halves are what every set is scored against; A halves are the real-vs-real references
    test_a, test_b = halves(test.images, args.seed)
    train_a, train_b = halves(train.images, args.seed)
    rows: dict[str, dict] = {"vs test": {}, "vs train": {}}

    def score(name, images):
        for split, ref in (("vs test", test_b), ("vs train", train_b)):
            rep = generation_report(ref, images, net, n=n, seed=args.seed)
            rows[split][name] = rep.as_dict()
            log(f"  {split:<8} {name:<18} {rep}")

    log(f"metrics against {n} real images of the test split (new alphabets) and of the training split (feature dim {net.dim}):")
    score("real test (A)", test_a)
    score("real train (A)", train_a)
    save_grid(test_a[:128].float() / 255, out / "real_test.png")
    save_grid(train_a[:128].float() / 255, out / "real_train.png")

    result = {
        "data": splits.source, "description": splits.description,
        "train_images": len(train), "test_images": len(test), "n": n,
        "device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "fast": bool(pick(True, False)),
        "feature_net": net.description, "feature_net_seconds": round(feature_s, 1),
        "load_average_before": round(load_before, 2), "metrics": rows, "pngs": {},
    }

    if args.only in (None, "gan"):
        t0 = time.perf_counter()
        gan, hist = train_gan(train, loss=args.gan_loss, steps=gan_steps, time_budget=gan_budget, width=args.gan_width,
                              batch_size=args.gan_batch,
                              seed=args.seed, device=device, snapshot_every=max(1, gan_steps // 50) if args.fast else 100,
                              progress=progress)
        seconds = time.perf_counter() - t0
        samples = gan.sample(n, seed=args.seed)
        score(f"GAN ({args.gan_loss})", samples)
        result["gan"] = {"loss": args.gan_loss, "width": args.gan_width, "batch_size": args.gan_batch, "steps": len(hist["loss"]),
                         "train_seconds": round(seconds, 1), "final_d_loss": hist.last("loss", 50),
                         "final_g_loss": hist.last("g_loss", 50)}
        result["pngs"]["gan"] = str(save_grid(samples[:128], out / "gan_samples.png"))
        snap = save_snapshots(gan.snapshots, out / "gan_progress.png")
        result["pngs"]["gan_progress"] = str(snap) if snap else None
        log(f"GAN: {len(hist['loss'])} steps in {seconds:.0f} s")

    if args.only in (None, "vae"):
        t0 = time.perf_counter()
        vae, hist = train_vae(train, steps=vae_steps, time_budget=vae_budget, seed=args.seed, device=device,
                              kl_warmup=pick(10, 500), snapshot_every=max(1, vae_steps // 50) if args.fast else 100,
                              progress=progress)
        seconds = time.perf_counter() - t0
        samples = vae.sample(n, seed=args.seed)
        score("VAE", samples)
        t1 = time.perf_counter()
        ll = evaluate_vae(vae, test, k=k, binarization="dynamic", seed=args.seed)
        eval_s = time.perf_counter() - t1
        result["vae"] = {"steps": len(hist["loss"]), "train_seconds": round(seconds, 1),
                         "final_train_elbo": hist.last("elbo", 50), "test_elbo": ll["elbo"], "test_iwae": ll["iwae"],
                         "k": k, "binarization": ll["binarization"] + " (test set binarised once, seed %d)" % args.seed,
                         "test_images": ll["images"], "eval_seconds": round(eval_s, 1)}
        result["pngs"]["vae"] = str(save_grid(samples[:128], out / "vae_samples.png"))
        snap = save_snapshots(vae.snapshots, out / "vae_progress.png")
        result["pngs"]["vae_progress"] = str(snap) if snap else None
        result["pngs"]["vae_reconstructions"] = str(save_grid(
            torch.cat([test_a[:64].float() / 255, vae.reconstruct(test_a[:64].float().div(255).to(device)).cpu()]),
            out / "vae_reconstructions.png"))
        log(f"VAE: {len(hist['loss'])} steps in {seconds:.0f} s; test ELBO {ll['elbo']:.2f}, "
            f"IWAE (k={k}) {ll['iwae']:.2f} nats/image on {ll['images']} images ({ll['binarization']} binarisation, {eval_s:.0f} s)")

    result["load_average_after"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    result["total_seconds"] = round(time.perf_counter() - t_start, 1)
    log(f"sample grids in {out}")
    if args.json:
        print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
