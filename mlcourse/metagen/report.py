"""Chapter 09's helpers: FIGR's two loops as a picture, support sets beside samples, and the
committed benchmark runs as tables with paired differences.

* :func:`figr_diagram`: the inner and outer loops of FIGR (Reptile on both networks) drawn
  with matplotlib, so the chapter builds it in a cell.
* :func:`pick_characters`, :func:`k_grid`, :func:`show_k_grid`: for one unseen character at
  each support size ``K``, its ``K`` drawings beside what each method draws from them
  (nested support sets: the ``K = 4`` set holds the ``K = 1`` drawing).
* :func:`committed_runs`: the committed full-mode runs (:func:`mlcourse.genbench.reference_runs`)
  of the chapter's rows, and one line for each one that is not there yet, so that the chapter
  runs before they are committed; :func:`committed_selection` the validation runs that chose
  the adaptation steps, :func:`committed_figure` the committed sample grid.
* :func:`paired_difference`, :func:`paired_table`: ``A − B`` on the same characters, score by
  score (:func:`mlcourse.evaluate.compare`), refusing runs scored on other characters (another
  ``fingerprint``; the real-vs-real floor has one by design), with a verdict that knows which
  direction is better for each score (for diversity and memorisation: closer to 1).
* :func:`run_from_scores`, :func:`sets_fingerprint`: a learner's own scores
  (:class:`~mlcourse.evaluation.generation.CharacterScores`) in the shape of a benchmark JSON,
  so the same tables read both.
* :func:`format_summary_table`, :func:`format_paired_table`, :func:`chosen_steps`,
  :func:`plot_adaptation_curve`: text tables and the validation curve, every number read from
  the runs (the chapter's prose quotes none).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from ..viz import image_grid

#: the per-character scores of a benchmark run, in the order the tables show them
SCORES = ("fd", "precision", "recall", "recognisability", "diversity", "memorisation")
#: which way is better: "lower", "higher", or "one" (closer to 1)
DIRECTION = {"fd": "lower", "precision": "higher", "recall": "higher", "recognisability": "higher",
             "diversity": "one", "memorisation": "one"}  # fmt: skip
#: the rows chapter 09 reads from the committed runs
REFERENCE_METHODS = ("real", "jitter", "scratch-gan", "finetune-gan", "reptile-gan")
METHOD_LABELS = {
    "real": "real drawings (the floor)",
    "jitter": "copy a support drawing, jittered",
    "scratch-gan": "GAN from scratch on the support set",
    "finetune-gan": "pretrain on all characters + fine-tune",
    "reptile-gan": "FIGR (Reptile-GAN)",
}


# ---------------------------------------------------------------------------------------
# The two loops, drawn
# ---------------------------------------------------------------------------------------
def figr_diagram(ax=None, inner_steps: int = 10, adapt_steps: int = 100):
    """FIGR's meta-training as boxes and arrows: a task (``K`` drawings of one training
    character), the inner loop on copies of both networks, and Reptile's outer update of
    ``θ_G`` and ``θ_D``; below it, what happens at test time. Returns the axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(11, 5.4))
    ax.set_xlim(0, 11.2)
    ax.set_ylim(0, 6.2)
    ax.set_axis_off()

    def box(x, y, w, h, text, colour, size=9):
        ax.add_patch(plt.Rectangle((x, y), w, h, facecolor=colour, edgecolor="black", lw=1, alpha=0.9))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size)

    def arrow(x0, y0, x1, y1, text=None, dx=0.0, dy=0.15, colour="black", head=True):
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops=dict(arrowstyle="->" if head else "-", lw=1.3, color=colour))
        if text:
            ax.text((x0 + x1) / 2 + dx, (y0 + y1) / 2 + dy, text, ha="center", fontsize=8, color=colour)

    box(0.2, 4.4, 1.9, 1.2, "meta-parameters\nθ_G (generator)\nθ_D (critic)", "#dbe9f6")
    box(0.2, 2.5, 1.9, 1.1, "task: K drawings\nof one random\ntraining character", "#fdf2d0")
    # the inner loop, on copies
    ax.add_patch(plt.Rectangle((2.9, 2.2), 4.7, 3.6, facecolor="none", edgecolor="tab:green", lw=1.5, ls="--"))
    ax.text(5.25, 5.5, f"inner loop: {inner_steps} WGAN-GP iterations on copies", ha="center", fontsize=9, color="tab:green")
    box(3.1, 4.1, 3.7, 1.0, "critic step: minimise\nf(G(z)) − f(x) + λ·GP  (K fakes, K real)", "#e3f1e0", 8)
    box(3.1, 2.5, 3.7, 1.0, "generator step: minimise\n− f(G(z))  (fresh noise)", "#e3f1e0", 8)
    arrow(4.95, 4.1, 4.95, 3.5)
    ax.annotate("", xy=(6.8, 4.6), xytext=(6.8, 3.0),
                arrowprops=dict(arrowstyle="->", lw=1.1, color="tab:green", connectionstyle="arc3,rad=0.6"))
    ax.text(7.35, 3.8, "repeat", fontsize=8, color="tab:green", rotation=90, va="center")
    arrow(2.1, 5.1, 3.1, 4.8, "copy: φ ← θ", dx=0.1, dy=0.3)
    arrow(2.1, 3.05, 3.1, 3.05, "x", dy=0.08)
    # the adapted copies, and the outer update
    box(8.3, 3.7, 2.6, 1.4, "adapted copies\nφ_G, φ_D", "#e3f1e0")
    arrow(7.6, 4.4, 8.3, 4.4)
    box(3.4, 0.85, 3.8, 1.2, "outer step (Reptile, both networks)\nθ_G ← θ_G + ε (φ_G − θ_G)\n"
        "θ_D ← θ_D + ε (φ_D − θ_D)", "#f6dcdc", 8)  # fmt: skip
    arrow(9.6, 3.7, 9.6, 1.45, head=False, colour="tab:red")
    arrow(9.6, 1.45, 7.2, 1.45, "ε annealed towards 0", colour="tab:red")
    arrow(3.4, 1.45, 2.5, 1.45, head=False, colour="tab:red")
    arrow(2.5, 1.45, 2.5, 4.6, head=False, colour="tab:red")
    arrow(2.5, 4.6, 2.1, 4.6, colour="tab:red")
    ax.text(2.4, 1.85, "the next task\nstarts from\nthe moved θ", fontsize=7, color="tab:red", ha="right")
    ax.text(0.2, 0.35, f"test time: copy θ, run the same inner loop on the K support drawings of an unseen character "
                       f"({adapt_steps} steps), then sample the adapted generator", fontsize=8)  # fmt: skip
    ax.set_title("FIGR: Reptile on a GAN (both the generator and the critic are meta-learned)", fontsize=10)
    return ax


# ---------------------------------------------------------------------------------------
# Support sets beside samples
# ---------------------------------------------------------------------------------------
def pick_characters(dataset, n: int, need: int, seed: int = 12345) -> list[int]:
    """``n`` classes of ``dataset`` with at least ``need`` drawings, chosen at random under
    ``seed`` (sorted); a clear ``ValueError`` when there are fewer."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    eligible = torch.nonzero(dataset.class_sizes() >= need).flatten()
    if n > len(eligible):
        raise ValueError(f"{dataset.name!r} has {len(eligible)} classes with at least {need} drawings; asked for {n}")
    order = eligible[torch.randperm(len(eligible), generator=torch.Generator().manual_seed(seed))]
    return sorted(order[:n].tolist())


def as_generate(method) -> Callable[[torch.Tensor, int, int], torch.Tensor]:
    """``generate(support, n, seed)`` (images on the CPU) from a few-shot generator, or the
    function itself when ``method`` already is one."""
    if hasattr(method, "generate"):
        def generate(support, n, seed):
            with torch.no_grad():
                return method.generate(support, n, seed=seed).cpu()

        return generate
    if callable(method):
        return method
    raise TypeError(f"a method must have .generate(support, n, seed=) or be a function (support, n, seed); "
                    f"got {type(method).__name__}")


def k_grid(dataset, character: int, methods: Mapping[str, object], ks: Sequence[int] = (1, 4, 8), samples: int = 8,
           seed: int = 12345, progress: bool = True) -> dict[int, dict[str, torch.Tensor]]:  # fmt: skip
    """For each ``K`` in ``ks``: ``{"support": [K, C, H, W], name: [samples, C, H, W], ...}``.

    The support sets are nested (:func:`~mlcourse.metagen.common.character_sets` with one seed
    orders the character's drawings once; ``K`` takes the first ``K``), so the rows differ only
    in how many drawings the methods saw. Every method draws with the same ``seed``. ``methods``
    maps a column name to a few-shot generator or to ``generate(support, n, seed)``.
    """
    from tqdm.auto import tqdm

    from .common import character_sets

    if not ks:
        raise ValueError("ks: give at least one support size")
    if "support" in methods:
        raise ValueError("'support' is the name of the first column; call the method something else")
    fns = {name: as_generate(m) for name, m in methods.items()}
    grid: dict[int, dict[str, torch.Tensor]] = {}
    jobs = [(k, name) for k in ks for name in fns]
    bar = tqdm(total=len(jobs), desc="support sets -> samples", disable=not progress, leave=False)
    for k in ks:
        support = character_sets(dataset, int(k), classes=[character], seed=seed)[0][0]
        row = {"support": support}
        for name, fn in fns.items():
            row[name] = fn(support, samples, seed).detach().float().cpu()
            bar.update(1)
        grid[int(k)] = row
    bar.close()
    return grid


def show_k_grid(grid: Mapping[int, Mapping[str, torch.Tensor]], labels: Mapping[str, str] | None = None,
                title: str | None = None, nrow: int | None = None):  # fmt: skip
    """Draw :func:`k_grid`'s result: one row per ``K``, the support drawings on the left, then
    one panel per method. Returns ``(fig, axes)`` with ``axes`` of shape ``[len(ks), 1 + methods]``."""
    if not grid:
        raise ValueError("an empty grid")
    ks = list(grid)
    columns = list(next(iter(grid.values())))
    if columns[0] != "support":
        raise ValueError("each row of the grid starts with 'support' (use k_grid)")
    labels = dict(labels or {})
    most = max(len(grid[k][c]) for k in ks for c in columns[1:]) if len(columns) > 1 else 1
    nrow = nrow or max(1, math.ceil(most / 2))
    fig, axes = plt.subplots(len(ks), len(columns), figsize=(2.3 * len(columns) + 0.8, 1.3 * len(ks) + 0.6), squeeze=False)
    for r, k in enumerate(ks):
        for j, name in enumerate(columns):
            ax = axes[r, j]
            images = grid[k][name]
            picture = image_grid(images, nrow=min(nrow, len(images)))
            if picture.shape[0] == 1:
                ax.imshow(picture[0].numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(picture.permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(labels.get(name, "support drawings" if name == "support" else name), fontsize=8)
            if j == 0:
                ax.set_ylabel(f"K = {k}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig, axes


# ---------------------------------------------------------------------------------------
# Committed runs
# ---------------------------------------------------------------------------------------
def _runs_folder(data: str, folder=None) -> Path:
    return Path(folder) if folder is not None else Path(__file__).resolve().parents[2] / "docs" / "runs" / "genbench" / data


def committed_runs(data: str, methods: Sequence[str] = REFERENCE_METHODS, split: str = "test",
                   folder=None) -> tuple[dict[str, dict], list[str]]:  # fmt: skip
    """``(runs, missing)``: the committed runs of ``methods`` on ``data`` by method (in the
    order of ``methods``), and one line for each method whose file is not there. Never raises
    for a missing file: a chapter prints ``missing`` and goes on."""
    from ..genbench import reference_runs

    root = _runs_folder(data, folder)
    unreadable = {}
    try:
        found = reference_runs(data, split, folder=folder)
    except FileNotFoundError:
        found = {}
    except ValueError:  # a file that is not JSON (say, one still being written): read the others one by one
        import json

        found = {}
        for m in methods:
            path = root / f"{m}-{data}-{split}.json"
            if path.exists():
                try:
                    found[m] = {**json.loads(path.read_text()), "_path": str(path)}
                except ValueError as error:
                    unreadable[m] = f"the committed run of {m!r} on {data}/{split} ({path}) is not valid JSON ({error})"
    runs, missing = {}, []
    for m in methods:
        if m in found:
            runs[m] = found[m]
        elif m in unreadable:
            missing.append(unreadable[m])
        else:
            missing.append(f"the committed run of {m!r} on {data}/{split} is missing ({root / f'{m}-{data}-{split}.json'} "
                           "is not there yet): its row is left out")  # fmt: skip
    return runs, missing


def committed_selection(data: str, method: str = "reptile-gan", folder=None) -> dict[int, dict]:
    """The validation runs that chose ``method``'s adaptation steps on ``data``
    (``METHOD-DATA-val-adaptN.json``, written by ``benchmarks/genbench_select.py``), by ``N``
    in increasing order; empty when none is there."""
    import json

    root = _runs_folder(data, folder)
    pattern = re.compile(rf"{re.escape(method)}-{re.escape(data)}-val-adapt(\d+)\.json$")
    out = {}
    for path in root.glob(f"{method}-{data}-val-adapt*.json") if root.is_dir() else []:
        match = pattern.search(path.name)
        if match:
            run = json.loads(path.read_text())
            run["_path"] = str(path)
            out[int(match.group(1))] = run
    return dict(sorted(out.items()))


def committed_figure(data: str, root=None) -> Path | None:
    """The committed sample grid of ``data`` (``docs/img/genbench-DATA-samples.png``, made by
    ``benchmarks/genbench_grids.py``), or ``None`` when it is not there."""
    root = Path(root) if root is not None else Path(__file__).resolve().parents[2]
    path = root / "docs" / "img" / f"genbench-{data}-samples.png"
    return path if path.exists() else None


# ---------------------------------------------------------------------------------------
# A learner's scores in the shape of a run
# ---------------------------------------------------------------------------------------
def sets_fingerprint(sets, seed: int, ways: int) -> str:
    """A digest of the characters' support sets and of how many drawings each is scored
    against, plus the seed and way (the recipe of the benchmark's JSON): equal digests, a valid pairing."""
    h = hashlib.sha1(f"{seed}-{ways}".encode())
    for support, rest in sets:
        h.update(support.detach().cpu().contiguous().numpy().tobytes())
        h.update(str(tuple(rest.shape)).encode())
    return h.hexdigest()[:16]


def run_from_scores(scores, method: str, fingerprint: str, **extra) -> dict:
    """A :class:`~mlcourse.evaluation.generation.CharacterScores` as a benchmark-shaped dict:
    ``method``, ``summary``, ``scores`` (per-character lists), ``fingerprint``, and ``extra``."""
    per_character = {name: list(getattr(scores, name)) for name in SCORES}
    per_character["characters"] = list(scores.characters)
    return {"method": method, "summary": scores.summary(), "scores": per_character, "fingerprint": fingerprint,
            "shots": scores.shots, "samples": scores.samples, **extra}  # fmt: skip


def score_methods(methods: Mapping[str, object], sets, net, *, samples: int = 32, ways: int = 5, seed: int = 12345,
                  names: Sequence[str] | None = None, real: bool = True, progress: bool = True) -> dict[str, dict]:  # fmt: skip
    """Score each method on the same characters, as the benchmark does, and return benchmark-shaped runs.

    ``methods`` maps a name to a few-shot generator or ``generate(support, n, seed)``;
    ``sets`` are ``(support, rest)`` pairs (:func:`~mlcourse.metagen.common.character_sets`).
    Every method meets the same characters, supports, distractors and seeds
    (:func:`~mlcourse.evaluation.generation.score_characters`), so their runs share one
    fingerprint and pair. With ``real=True`` the real-vs-real floor comes first, under its own
    fingerprint (it is scored against half of each character's other drawings): it is shown,
    never paired.
    """
    from ..evaluation.generation import real_vs_real, score_characters

    runs: dict[str, dict] = {}
    if real:
        generate, scored = real_vs_real(sets)
        scores = score_characters(generate, scored, net, samples=samples, ways=ways, names=names, seed=seed)
        runs["real"] = run_from_scores(scores, "real", sets_fingerprint(scored, seed, ways))
    fingerprint = sets_fingerprint(sets, seed, ways)
    for name, method in methods.items():
        scores = score_characters(as_generate(method), sets, net, samples=samples, ways=ways, names=names, seed=seed,
                                  progress=progress)  # fmt: skip
        runs[name] = run_from_scores(scores, name, fingerprint, adapt_steps=getattr(method, "adapt_steps", None))
    return runs


def adaptation_curve(model, sets, net, steps: Sequence[int], *, samples: int = 32, ways: int = 5, seed: int = 12345,
                     progress: bool = True) -> dict[int, dict]:  # fmt: skip
    """``{s: run}``: ``model`` (a gradient-adapting generator such as
    :class:`~mlcourse.metagen.reptile_gan.ReptileGAN`) scored on ``sets`` after ``s`` adaptation
    steps, for each ``s`` of ``steps``: what ``benchmarks/genbench_select.py`` measures on the
    validation characters to choose the steps (one model, every value)."""
    from tqdm.auto import tqdm

    from ..evaluation.generation import score_characters

    fingerprint = sets_fingerprint(sets, seed, ways)
    out = {}
    for s in tqdm(sorted({int(v) for v in steps}), desc="adaptation steps", disable=not progress, leave=False):
        def generate(support, n, seed_, s=s):
            with torch.no_grad():
                return model.generate(support, n, seed=seed_, steps=s).cpu()

        scores = score_characters(generate, sets, net, samples=samples, ways=ways, seed=seed)
        out[s] = run_from_scores(scores, f"{getattr(model, 'method_name', 'model')} ({s} steps)", fingerprint, adapt_steps=s)
    return out


# ---------------------------------------------------------------------------------------
# Paired differences
# ---------------------------------------------------------------------------------------
def paired_difference(a: Mapping, b: Mapping, score: str):
    """``a − b`` on ``score``, character by character (:func:`mlcourse.evaluate.compare`).

    Raises ``ValueError`` when the two runs were scored on different characters (their
    ``fingerprint`` differs, or their lists have other lengths): such a pairing means nothing.
    """
    from ..evaluate import compare

    if score not in DIRECTION:
        raise ValueError(f"unknown score {score!r}: one of {', '.join(DIRECTION)}")
    fa, fb = a.get("fingerprint"), b.get("fingerprint")
    if not fa or not fb or fa != fb:
        raise ValueError(f"{a.get('method', 'A')} and {b.get('method', 'B')} were scored on different characters "
                         f"(fingerprints {fa} and {fb}): they cannot be paired")  # fmt: skip
    return compare(a["scores"][score], b["scores"][score], names=(a.get("method", "A"), b.get("method", "B")))


def verdict(a: Mapping, b: Mapping, score: str) -> str:
    """Which of the two is better on ``score``, on the same characters, or that they cannot be
    told apart (95% interval of the paired difference). For ``diversity`` and ``memorisation``
    "better" is "closer to 1", judged on the paired ``|score − 1|``."""
    from ..evaluate import compare

    c = paired_difference(a, b, score)
    name_a, name_b = c.names
    if DIRECTION[score] == "one":
        c = compare([abs(v - 1) for v in a["scores"][score]], [abs(v - 1) for v in b["scores"][score]])
        lower_is_better = True
    else:
        lower_is_better = DIRECTION[score] == "lower"
    if not c.significant:
        return "cannot be told apart"
    a_better = (c.difference < 0) == lower_is_better
    return f"{name_a if a_better else name_b} better"


@dataclass
class PairedRow:
    """One cell of :func:`paired_table`: ``a − b`` on ``score`` (or why it was not computed)."""

    a: str
    b: str
    score: str
    difference: float = float("nan")
    ci95: float = float("nan")
    p_value: float = float("nan")
    characters: int = 0
    verdict: str = ""
    refused: str | None = None


def paired_table(runs: Mapping[str, Mapping], of: str = "reptile-gan", against: Sequence[str] = ("finetune-gan", "scratch-gan"),
                 scores: Sequence[str] = SCORES) -> list[PairedRow]:  # fmt: skip
    """``of − b`` for each ``b`` of ``against`` and each score. A pair whose run is missing, or
    whose runs were scored on other characters, gets rows with ``refused`` saying why (never a
    number)."""
    rows = []
    for b in against:
        if of not in runs or b not in runs:
            gone = [m for m in (of, b) if m not in runs]
            rows += [PairedRow(of, b, s, refused=f"no run of {', '.join(gone)}") for s in scores]
            continue
        ra, rb = runs[of], runs[b]
        if ra.get("fingerprint") != rb.get("fingerprint"):
            why = f"scored on different characters (fingerprints {ra.get('fingerprint')} and {rb.get('fingerprint')}): not paired"
            rows += [PairedRow(of, b, s, refused=why) for s in scores]
            continue
        for s in scores:
            c = paired_difference(ra, rb, s)
            rows.append(PairedRow(of, b, s, c.difference, c.ci95, c.p_value, c.episodes, verdict(ra, rb, s)))
    return rows


def format_paired_table(rows: Sequence[PairedRow]) -> str:
    """:func:`paired_table` as text, one line per pair and score."""
    if not rows:
        return "(no pairs)"
    lines = [f"{'A − B':30s} {'score':16s} {'difference ± 95% CI':>22s} {'p':>8s}  verdict (same characters)"]
    said = set()
    for r in rows:
        pair = f"{r.a} − {r.b}"
        if r.refused:  # one line per refused pair, not one per score
            if (pair, r.refused) not in said:
                lines.append(f"{pair:30s} {'(every score)':16s} {'–':>22s} {'':>8s}  {r.refused}")
                said.add((pair, r.refused))
        else:
            p = "< 1e-4" if r.p_value < 1e-4 else f"{r.p_value:.3g}"
            lines.append(f"{pair:30s} {r.score:16s} {f'{r.difference:+.3f} ± {r.ci95:.3f}':>22s} {p:>8s}  {r.verdict}"
                         f" ({r.characters} characters)")  # fmt: skip
    closer = [s for s, d in DIRECTION.items() if d == "one" and any(r.score == s and not r.refused for r in rows)]
    if closer:
        lines.append(f"({' and '.join(closer)}: better is closer to 1, judged on the paired |score − 1|; the difference "
                     "and p are of the scores themselves)")  # fmt: skip
    return "\n".join(lines)


def _aligned(rows: Sequence[Sequence[str]], left: int = 1, rule: bool = False) -> str:
    """Rows of cells as text columns: the first ``left`` columns (and the last) left-aligned,
    the others right-aligned, each as wide as its widest cell."""
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    last = len(widths) - 1

    def line(r):
        return "  ".join(c.ljust(w) if j < left or j == last else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))).rstrip()

    lines = [line(r) for r in rows]
    if rule:
        lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _mean_ci(summary: Mapping, score: str) -> str:
    return f"{summary[score]['mean']:.3f} ± {summary[score]['ci95']:.3f}"


def describe_pairs(rows: Sequence[PairedRow]) -> list[str]:
    """One sentence per pair of :func:`paired_table`: on which scores ``A`` is better, worse, or
    cannot be told apart from ``B`` on the same characters (refused pairs say why)."""
    out = []
    for a, b in dict.fromkeys((r.a, r.b) for r in rows):
        pair = [r for r in rows if (r.a, r.b) == (a, b)]
        if pair[0].refused:
            out.append(f"{a} against {b}: not compared ({pair[0].refused})")
            continue
        groups = {"better": [], "worse": [], "tied": []}
        for r in pair:
            key = "better" if r.verdict == f"{a} better" else "worse" if r.verdict == f"{b} better" else "tied"
            groups[key].append(r.score)
        out.append(f"{a} against {b} on the same {pair[0].characters} characters: better on {', '.join(groups['better']) or 'no score'}; "
                   f"worse on {', '.join(groups['worse']) or 'no score'}; cannot be told apart on "
                   f"{', '.join(groups['tied']) or 'no score'}")  # fmt: skip
    return out


def format_summary_table(runs: Mapping[str, Mapping], scores: Sequence[str] = SCORES,
                         labels: Mapping[str, str] | None = None) -> str:  # fmt: skip
    """One line per run: each score's mean ± 95% CI over characters, the pooled FD, and how
    the run was made (meta-training steps and seconds, adaptation steps), as its JSON says."""
    labels = dict(METHOD_LABELS if labels is None else labels)
    rows = [["method", *scores, "pooled FD", "made with"]]
    for method, r in runs.items():
        s = r["summary"]
        pooled = s.get("pooled_fd", float("nan"))
        pooled = "–" if pooled is None or pooled != pooled else f"{pooled:.2f}"  # nan: fewer samples than features
        made = []
        if r.get("meta_train_steps"):
            made.append(f"{r['meta_train_steps']:,} meta-training steps in {float(r.get('meta_train_seconds', 0)):.0f} s")
        if r.get("adapt_steps") is not None:
            made.append(f"{r['adapt_steps']} adaptation steps")
        if made and r.get("threads") is not None:
            made.append(f"{r['threads']} thread(s)")
        rows.append([method, *(_mean_ci(s, k) for k in scores), pooled, ", ".join(made) or labels.get(method, "")])
    return _aligned(rows, rule=True)


# ---------------------------------------------------------------------------------------
# The adaptation steps, chosen on validation
# ---------------------------------------------------------------------------------------
def chosen_steps(candidates: Mapping[int, Mapping], criterion: str = "fd") -> int:
    """The adaptation steps whose run has the best mean ``criterion`` (``fd``: lowest), as
    ``benchmarks/genbench_select.py`` chooses them."""
    if not candidates:
        raise ValueError("no candidate runs to choose from")
    sign = -1 if DIRECTION.get(criterion) == "higher" else 1
    if DIRECTION.get(criterion) == "one":
        return min(candidates, key=lambda v: abs(candidates[v]["summary"][criterion]["mean"] - 1))
    return min(candidates, key=lambda v: sign * candidates[v]["summary"][criterion]["mean"])


def format_selection_table(candidates: Mapping[int, Mapping], criterion: str = "fd",
                           scores: Sequence[str] = ("fd", "recognisability", "diversity", "memorisation")) -> str:  # fmt: skip
    """One line per candidate number of adaptation steps (each ``{steps: run}``): the scores'
    means ± 95% CI, the chosen value (:func:`chosen_steps` on ``criterion``) marked."""
    if not candidates:
        return "(no candidates)"
    best = chosen_steps(candidates, criterion)
    rows = [["adapt steps", *scores]]
    for steps in sorted(candidates):
        summary = candidates[steps]["summary"]
        rows.append([f"{steps}{' (chosen)' if steps == best else ''}", *(_mean_ci(summary, k) for k in scores)])
    return _aligned(rows)


def plot_adaptation_curve(curves: Mapping[str, Mapping[int, Mapping]], score: str = "fd", ax=None, title: str | None = None,
                          criterion: str = "fd"):  # fmt: skip
    """``score`` (mean ± 95% CI over characters) against the number of adaptation steps, one
    line per label of ``curves`` (each ``{steps: run}``), the value chosen on ``criterion``
    (:func:`chosen_steps`) circled on each line."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    for label, runs in curves.items():
        steps = sorted(runs)
        if not steps:
            continue
        means = [runs[s]["summary"][score]["mean"] for s in steps]
        cis = [runs[s]["summary"][score]["ci95"] for s in steps]
        line = ax.errorbar(steps, means, yerr=cis, marker="o", capsize=3, label=label)
        best = chosen_steps(runs, criterion)
        ax.scatter([best], [runs[best]["summary"][score]["mean"]], s=160, facecolors="none",
                   edgecolors=line[0].get_color(), lw=2)  # fmt: skip
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("adaptation steps on the support set")
    ax.set_ylabel(f"{score} ({DIRECTION[score]} is better)" if DIRECTION[score] != "one" else f"{score} (1 is best)")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


__all__ = ["SCORES", "DIRECTION", "REFERENCE_METHODS", "METHOD_LABELS", "figr_diagram", "pick_characters", "k_grid",
           "show_k_grid", "committed_runs", "committed_selection", "committed_figure", "sets_fingerprint",
           "run_from_scores", "as_generate", "score_methods", "adaptation_curve", "paired_difference", "verdict",
           "PairedRow", "paired_table", "describe_pairs", "format_paired_table", "format_summary_table", "chosen_steps",
           "format_selection_table", "plot_adaptation_curve"]  # fmt: skip
