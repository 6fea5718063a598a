"""Chapter 09's helpers (mlcourse.metagen.report): pairing refuses runs scored on other
characters, the tables hold every row and say what is missing, verdicts know which way is
better, the K-grid has one row per K and one column per method, and the diagram draws."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from conftest import toy_dataset  # noqa: E402

from mlcourse.evaluation import copy_with_jitter, score_characters  # noqa: E402
from mlcourse.metagen import ReptileGAN, character_sets  # noqa: E402
from mlcourse.metagen import report  # noqa: E402


def fake_run(method: str, fingerprint: str = "abc", n: int = 6, shift: float = 0.0, seed: int = 0, **extra) -> dict:
    """A run in the shape of a genbench JSON, with per-character scores chosen by the test."""
    g = torch.Generator().manual_seed(seed)
    scores = {}
    for name in report.SCORES:
        scores[name] = (torch.rand(n, generator=g, dtype=torch.float64) + 1 + shift).tolist()
    summary = {name: {"mean": sum(v) / n, "ci95": 0.1} for name, v in scores.items()}
    summary["pooled_fd"] = 3.0
    return {"method": method, "fingerprint": fingerprint, "scores": {**scores, "characters": [f"c{i}" for i in range(n)]},
            "summary": summary, "meta_train_steps": 10, "meta_train_seconds": 1.0, "threads": 1, "adapt_steps": 5,
            "split": "test", **extra}  # fmt: skip


def write(folder, run: dict, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(run))


# -- pairing ---------------------------------------------------------------------------
def test_pairing_refuses_runs_scored_on_other_characters():
    a, b = fake_run("reptile-gan", "abc"), fake_run("finetune-gan", "xyz", seed=1)
    with pytest.raises(ValueError, match="different characters"):
        report.paired_difference(a, b, "fd")
    with pytest.raises(ValueError, match="different characters"):
        report.paired_difference(a, {**b, "fingerprint": None}, "fd")
    rows = report.paired_table({"reptile-gan": a, "finetune-gan": b}, against=("finetune-gan",))
    assert len(rows) == len(report.SCORES)
    assert all(r.refused and "not paired" in r.refused for r in rows)
    assert all(r.difference != r.difference for r in rows)  # nan: never a number for a refused pair
    assert "not paired" in report.format_paired_table(rows)


def test_paired_difference_is_the_mean_of_per_character_differences():
    a, b = fake_run("reptile-gan", seed=0), fake_run("finetune-gan", seed=1)
    c = report.paired_difference(a, b, "recall")
    expected = sum(x - y for x, y in zip(a["scores"]["recall"], b["scores"]["recall"])) / 6
    assert c.difference == pytest.approx(expected)
    assert c.names == ("reptile-gan", "finetune-gan") and c.episodes == 6
    with pytest.raises(ValueError, match="unknown score"):
        report.paired_difference(a, b, "accuracy")


def test_verdicts_know_which_direction_is_better():
    n = 12
    low = fake_run("reptile-gan", n=n, seed=0)
    high = fake_run("finetune-gan", n=n, seed=0, shift=5.0)  # every score 5 higher, character by character
    assert report.verdict(low, high, "fd") == "reptile-gan better"  # lower FD
    assert report.verdict(low, high, "recognisability") == "finetune-gan better"  # higher is better
    # closer to 1: low's values lie in [1, 2], high's in [6, 7]
    assert report.verdict(low, high, "memorisation") == "reptile-gan better"
    assert report.verdict(low, dict(low, method="other"), "fd") == "cannot be told apart"
    rows = report.paired_table({"reptile-gan": low, "finetune-gan": high}, against=("finetune-gan", "scratch-gan"))
    assert [r.b for r in rows] == ["finetune-gan"] * 6 + ["scratch-gan"] * 6
    assert all(r.refused is None for r in rows[:6]) and all("no run of scratch-gan" in r.refused for r in rows[6:])
    assert rows[0].difference == pytest.approx(-5.0) and rows[0].characters == n
    said = report.describe_pairs(rows)
    assert len(said) == 2 and said[1].startswith("reptile-gan against scratch-gan: not compared (no run of scratch-gan")
    assert "better on fd, diversity, memorisation;" in said[0] and "worse on precision, recall, recognisability;" in said[0]


# -- committed runs --------------------------------------------------------------------
def test_committed_runs_keep_the_order_and_name_what_is_missing(tmp_path):
    folder = tmp_path / "glyphs"
    runs, missing = report.committed_runs("glyphs", folder=folder)
    assert runs == {} and len(missing) == len(report.REFERENCE_METHODS)
    assert all("is missing" in line and "not there yet" in line for line in missing)
    for m in ("reptile-gan", "real", "finetune-gan"):
        write(folder, fake_run(m, "real-fp" if m == "real" else "abc"), f"{m}-glyphs-test.json")
    write(folder, fake_run("scratch-gan"), "scratch-gan-glyphs-val.json")  # another split: not read
    runs, missing = report.committed_runs("glyphs", folder=folder)
    assert list(runs) == ["real", "finetune-gan", "reptile-gan"]
    assert [line.split("'")[1] for line in missing] == ["jitter", "scratch-gan"]
    text = report.format_summary_table(runs)
    lines = text.splitlines()
    assert len(lines) == 2 + 3 and all(any(line.startswith(m) for line in lines) for m in runs)
    assert "10 meta-training steps" in text and "5 adaptation steps" in text
    rows = report.paired_table(runs, against=("finetune-gan", "real"))
    assert all(r.refused is None for r in rows if r.b == "finetune-gan")
    assert all(r.refused and "different characters" in r.refused for r in rows if r.b == "real")
    (folder / "jitter-glyphs-test.json").write_text("")  # a file still being written: the others are still read
    runs, missing = report.committed_runs("glyphs", folder=folder)
    assert list(runs) == ["real", "finetune-gan", "reptile-gan"]
    assert "not valid JSON" in missing[0] and "'jitter'" in missing[0] and "'scratch-gan'" in missing[1]


def test_committed_selection_and_the_choice_of_steps(tmp_path):
    folder = tmp_path / "omniglot"
    assert report.committed_selection("omniglot", folder=folder) == {}
    for steps, fd in ((10, 30.0), (100, 20.0), (300, 25.0)):
        run = fake_run("reptile-gan")
        run["summary"]["fd"]["mean"] = fd
        write(folder, run, f"reptile-gan-omniglot-val-adapt{steps}.json")
    write(folder, fake_run("reptile-gan"), "reptile-gan-omniglot-val.json")  # no adapt suffix: not a candidate
    found = report.committed_selection("omniglot", folder=folder)
    assert list(found) == [10, 100, 300]
    assert report.chosen_steps(found) == 100
    found[300]["summary"]["recall"]["mean"] = 99.0
    assert report.chosen_steps(found, "recall") == 300  # higher is better
    with pytest.raises(ValueError):
        report.chosen_steps({})
    ax = report.plot_adaptation_curve({"committed": found})
    assert len(ax.lines) >= 1
    plt.close("all")


def test_committed_figure_is_none_until_it_exists(tmp_path):
    assert report.committed_figure("glyphs", root=tmp_path) is None
    (tmp_path / "docs" / "img").mkdir(parents=True)
    png = tmp_path / "docs" / "img" / "genbench-glyphs-samples.png"
    png.write_bytes(b"\x89PNG")
    assert report.committed_figure("glyphs", root=tmp_path) == png


# -- a learner's scores in the shape of a run -------------------------------------------
def test_a_learners_scores_pair_like_committed_runs():
    data = toy_dataset(num_classes=5, per_class=8, size=8)
    sets = character_sets(data, 2, seed=0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 6))
    torch.manual_seed(0)
    jitter = score_characters(copy_with_jitter(), sets, net, samples=4, ways=3)
    noise = score_characters(lambda s, n, seed: torch.rand(n, *s.shape[1:], generator=torch.Generator().manual_seed(seed)),
                             sets, net, samples=4, ways=3)  # fmt: skip
    fp = report.sets_fingerprint(sets, 0, 3)
    assert fp == report.sets_fingerprint(character_sets(data, 2, seed=0), 0, 3)
    assert fp != report.sets_fingerprint(character_sets(data, 2, seed=1), 0, 3)
    runs = {"jitter": report.run_from_scores(jitter, "jitter", fp), "noise": report.run_from_scores(noise, "noise", fp)}
    assert runs["jitter"]["scores"]["fd"] == jitter.fd and runs["jitter"]["summary"]["fd"]["mean"] == pytest.approx(
        sum(jitter.fd) / len(jitter.fd))
    rows = report.paired_table(runs, of="jitter", against=("noise",))
    assert len(rows) == 6 and all(r.refused is None and r.characters == 5 for r in rows)


def test_score_methods_and_the_adaptation_curve_score_the_same_characters():
    data = toy_dataset(num_classes=5, per_class=9, size=16)
    sets = character_sets(data, 3, seed=0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 6))
    torch.manual_seed(0)
    gan = ReptileGAN(size=16, z_dim=4, width=4, inner_steps=1, adapt_steps=2)
    runs = report.score_methods({"figr": gan, "jitter": copy_with_jitter()}, sets, net, samples=4, ways=3, seed=1,
                                progress=False)  # fmt: skip
    assert list(runs) == ["real", "figr", "jitter"]
    assert runs["figr"]["fingerprint"] == runs["jitter"]["fingerprint"] == report.sets_fingerprint(sets, 1, 3)
    assert runs["real"]["fingerprint"] != runs["figr"]["fingerprint"]  # the floor is never paired
    assert runs["figr"]["adapt_steps"] == 2 and runs["jitter"]["adapt_steps"] is None
    rows = report.paired_table(runs, of="figr", against=("jitter", "real"))
    assert sum(r.refused is None for r in rows) == 6 and sum(r.refused is not None for r in rows) == 6
    curve = report.adaptation_curve(gan, sets, net, [3, 0], samples=4, ways=3, seed=1, progress=False)
    assert list(curve) == [0, 3] and {r["fingerprint"] for r in curve.values()} == {runs["figr"]["fingerprint"]}
    assert curve[0]["adapt_steps"] == 0 and len(curve[3]["scores"]["fd"]) == 5
    assert report.chosen_steps(curve) in (0, 3)
    assert "(chosen)" in report.format_selection_table(curve)
    assert gan.adapt_steps == 2  # the model's own setting is left alone


# -- pictures ----------------------------------------------------------------------------
def test_k_grid_has_a_row_per_k_and_a_column_per_method():
    data = toy_dataset(num_classes=4, per_class=12, size=16)
    torch.manual_seed(0)
    gan = ReptileGAN(size=16, z_dim=4, width=4, inner_steps=1, adapt_steps=1)
    methods = {"figr": gan, "copy": lambda support, n, seed: support[torch.arange(n) % len(support)]}
    grid = report.k_grid(data, 2, methods, ks=(1, 4, 8), samples=3, seed=5, progress=False)
    assert list(grid) == [1, 4, 8]
    for k, row in grid.items():
        assert list(row) == ["support", "figr", "copy"]
        assert row["support"].shape == (k, 1, 16, 16)
        assert row["figr"].shape == row["copy"].shape == (3, 1, 16, 16)
        assert 0 <= row["figr"].min() and row["figr"].max() <= 1
    assert torch.equal(grid[4]["support"], grid[8]["support"][:4])  # nested support sets
    assert torch.equal(grid[1]["support"], grid[4]["support"][:1])
    fig, axes = report.show_k_grid(grid, labels={"figr": "FIGR"}, title="t")
    assert axes.shape == (3, 3)
    assert axes[0, 1].get_title() == "FIGR" and axes[0, 0].get_title() == "support drawings"
    assert axes[2, 0].get_ylabel() == "K = 8"
    plt.close(fig)
    with pytest.raises(ValueError, match="support"):
        report.k_grid(data, 2, {"support": gan}, progress=False)
    with pytest.raises(TypeError):
        report.k_grid(data, 2, {"x": 3}, progress=False)


def test_pick_characters_needs_enough_drawings():
    data = toy_dataset(num_classes=6, sizes=[5, 12, 12, 3, 12, 12], size=8)
    picked = report.pick_characters(data, 3, need=10, seed=0)
    assert len(picked) == 3 and set(picked) <= {1, 2, 4, 5} and picked == sorted(picked)
    with pytest.raises(ValueError, match="4 classes"):
        report.pick_characters(data, 5, need=10)


def test_the_diagram_names_both_networks_and_both_loops():
    ax = report.figr_diagram(inner_steps=7, adapt_steps=42)
    text = " ".join(t.get_text() for t in ax.texts)
    for piece in ("θ_G", "θ_D", "φ_G", "φ_D", "7 WGAN-GP iterations", "42 steps", "ε"):
        assert piece in text, piece
    plt.close("all")
