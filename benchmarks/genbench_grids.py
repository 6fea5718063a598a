"""Sample grids of the trained few-shot generators: support sets of unseen characters, and what each method draws.

Usage::

    python benchmarks/genbench_grids.py --data glyphs --folder docs/runs/genbench/glyphs \\
        --out docs/img/genbench-glyphs-samples.png [--characters 3] [--shots 1,4,8] [--samples 8]

Rows: a test character at each support size K (the K support drawings, left); columns: the
methods' samples from that support set. The characters are the first ``--characters`` of
the ones ``python -m mlcourse.genbench`` scores on the test split (same ``--eval-seed``), the
models are the checkpoints that ``benchmarks/genbench_select.py`` left in ``--folder``
(``METHOD-DATA.pt``), each adapted with the steps its test run used (``adapt_steps`` in
``METHOD-DATA-test.json``). The from-scratch GAN has no checkpoint: it is built fresh
(seed 0) and trained on each support set. Methods whose checkpoint is missing are left out,
with a line saying so.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlcourse.cli import ArgumentParser, bad_argument, check_at_least, fail  # noqa: E402

PROG = "benchmarks/genbench_grids.py"
COLUMNS = (("reptile-gan", "FIGR (Reptile-GAN)"), ("finetune-gan", "pretrain + fine-tune"), ("scratch-gan", "GAN from scratch"),
           ("statistician", "Neural Statistician"), ("reptile-vae", "Reptile-VAE"))  # fmt: skip


def load_models(folder: Path, data: str, size: int, channels: int):
    import torch

    from mlcourse.metagen import FewShotGenerator, ScratchGAN

    models, missing = {}, []
    for method, label in COLUMNS:
        if method == "scratch-gan":
            torch.manual_seed(0)
            models[method] = (ScratchGAN(size=size, channels=channels), label)
            continue
        path = folder / f"{method}-{data}.pt"
        if not path.exists():
            missing.append(method)
            continue
        model = FewShotGenerator.load(path).eval()
        test = folder / f"{method}-{data}-test.json"
        if test.exists() and json.loads(test.read_text()).get("adapt_steps") is not None:
            model.adapt_steps = json.loads(test.read_text())["adapt_steps"]
        models[method] = (model, label)
    return models, missing


def main(argv=None) -> Path:
    p = ArgumentParser(prog=PROG, description="Support sets of unseen characters beside each trained method's samples.")
    p.add_argument("--data", default="glyphs", choices=["glyphs", "omniglot"])
    p.add_argument("--folder", required=True, help="where genbench_select.py left the checkpoints and JSONs")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--characters", type=int, default=3)
    p.add_argument("--shots", default="1,4,8", help="support sizes, separated by commas")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--eval-seed", type=int, default=12345)
    args = p.parse_args(argv)
    check_at_least(PROG, "--characters", args.characters, 1)
    check_at_least(PROG, "--samples", args.samples, 1)
    try:
        shots = [int(v) for v in args.shots.split(",")]
    except ValueError:
        bad_argument(PROG, "--shots", args.shots, "support sizes separated by commas, like 1,4,8")
    if min(shots) < 1:
        bad_argument(PROG, "--shots", args.shots, "sizes of at least 1")
    folder = Path(args.folder)
    if not folder.is_dir():
        fail(PROG, f"--folder {folder}: no such folder")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from mlcourse.bench import _load_data
    from mlcourse.genbench import _choose_characters
    from mlcourse.metagen import character_sets
    from mlcourse.viz import image_grid

    splits = _load_data(args.data, 28, False, True)
    test = splits.test
    pool = min(50, int((test.class_sizes() >= 11).sum()))  # genbench's default 50 characters (fewer on tiny data)
    classes = _choose_characters(test, pool, 4, 9, args.eval_seed)[: args.characters]
    models, missing = load_models(folder, args.data, test.image_shape[1], test.image_shape[0])
    for m in missing:
        print(f"{m}: no checkpoint {folder}/{m}-{args.data}.pt, left out", file=sys.stderr)
    cols = [("support", None)] + [(label, model) for model, label in models.values()]
    rows = [(c, k) for c in classes for k in shots]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.0 * len(cols), 1.15 * len(rows)), squeeze=False)
    half = (args.samples + 1) // 2
    for r, (c, k) in enumerate(rows):
        support = character_sets(test, k, classes=[c], seed=args.eval_seed)[0][0]
        for j, (label, model) in enumerate(cols):
            if model is None:
                pad = torch.full((max(0, args.samples - len(support)), *support.shape[1:]), 0.5)  # gray: no drawing here
                shown = torch.cat([support[: args.samples], pad])
            else:
                with torch.no_grad():
                    shown = model.generate(support, args.samples, seed=args.eval_seed + r).cpu()
            ax = axes[r, j]
            ax.imshow(image_grid(shown[: args.samples], nrow=half).squeeze(0).numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(label, fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{test.class_names[c][:14]}\nK = {k}", fontsize=7)
    fig.suptitle(f"Unseen {args.data} test characters: K support drawings (left) and each method's samples", fontsize=10)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(f"wrote {out} ({', '.join(models)}; characters {', '.join(test.class_names[c] for c in classes)})")
    return out


if __name__ == "__main__":
    main()
