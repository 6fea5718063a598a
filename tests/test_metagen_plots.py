"""Chapter 10's helpers: the conditional NLL by support size is the benchmark's own number,
committed runs are read (and their absence reported, never raised), and the pictures draw."""

from __future__ import annotations

import json
import math

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from conftest import toy_dataset  # noqa: E402

from mlcourse import genbench  # noqa: E402
from mlcourse.metagen import NeuralStatistician  # noqa: E402
from mlcourse.metagen.plots import (  # noqa: E402
    METHOD_LABELS,
    NLL_SHOTS,
    choose_characters,
    describe_run,
    nll_by_shots,
    plot_nll_by_shots,
    reference_curves,
    show_conditional_samples,
)


@pytest.fixture(scope="module")
def model_and_data():
    torch.manual_seed(0)
    model = NeuralStatistician(size=16, context_dim=4, latent_dim=4, width=4, hidden=16).eval()
    return model, toy_dataset(num_classes=6, per_class=12, size=16, seed=1)


def test_nll_by_shots_is_the_benchmark_measurement(model_and_data):
    model, data = model_and_data
    classes = choose_characters(data, 3, seed=7)
    assert classes == genbench._choose_characters(data, 3, 4, max(NLL_SHOTS), 7)
    ours = nll_by_shots(model, data, classes, k=3, seed=7, progress=False)
    theirs = genbench._nll_by_shots(model, data, classes, list(NLL_SHOTS), 3, 7)
    assert ours == theirs
    assert list(ours) == ["0", "1", "2", "4", "9"]
    for v in ours.values():
        assert len(v["per_character"]) == 3 and v["mean"] > 0 and math.isfinite(v["ci95"])


def test_nll_by_shots_and_choose_characters_refuse_bad_arguments(model_and_data):
    model, data = model_and_data
    with pytest.raises(ValueError, match="k must be"):
        nll_by_shots(model, data, [0], k=0, progress=False)
    with pytest.raises(ValueError, match="support sizes >= 0"):
        nll_by_shots(model, data, [0], shots=[-1, 2], progress=False)
    with pytest.raises(ValueError, match="classes with at least 11 drawings"):
        choose_characters(data, 7)
    with pytest.raises(ValueError, match="int >= 1"):
        choose_characters(data, 0)


def _run(method: str, nll: bool = True, **extra) -> dict:
    run = {"method": method, "data": "glyphs", "split": "test", "mode": "full", "meta_train_steps": 1234,
           "meta_train_seconds": 900.4, "device": "cpu", "threads": 2, "load_average": 2.5, "shots": 4, "nll_k": 100,
           "summary": {name: {"mean": 0.5, "ci95": 0.1} for name in
                       ("fd", "precision", "recall", "recognisability", "diversity", "memorisation")}}  # fmt: skip
    run["summary"]["fd"] = {"mean": 31.25, "ci95": 2.5}
    if nll:
        run["nll_by_shots"] = {str(s): {"mean": 120.0 - s, "ci95": 1.5, "per_character": [120.0 - s] * 3} for s in NLL_SHOTS}
    run.update(extra)
    return run


def test_reference_curves_reads_what_is_there_and_names_what_is_not(tmp_path):
    (tmp_path / "statistician-glyphs-test.json").write_text(json.dumps(_run("statistician")))
    (tmp_path / "vae-glyphs-test.json").write_text(json.dumps(_run("vae", nll=False)))
    (tmp_path / "reptile-vae-glyphs-val.json").write_text(json.dumps(_run("reptile-vae")))  # another split
    runs, missing = reference_curves("glyphs", folder=tmp_path)
    assert list(runs) == ["statistician"] and runs["statistician"]["nll_by_shots"]["9"]["mean"] == 111.0
    assert len(missing) == 2
    assert "'vae'" in missing[0] and "no conditional NLL" in missing[0]
    assert "'reptile-vae'" in missing[1] and "is missing" in missing[1]
    runs, missing = reference_curves("glyphs", folder=tmp_path / "nothing-here")
    assert runs == {} and len(missing) == len(METHOD_LABELS) and all("is missing" in m for m in missing)


def test_describe_run_reads_its_numbers_from_the_json():
    text = describe_run(_run("statistician", adapt_steps=None))
    assert "1234 meta-training steps in 900 s" in text and "load average 2.5" in text
    assert "given 0: 120.0 ± 1.5" in text and "given 9: 111.0 ± 1.5" in text and "3 characters, k = 100" in text
    assert "FD 31.2 ± 2.5" in text and "adaptation" not in text
    old = _run("reptile-vae", nll=False, adapt_steps=20)
    del old["load_average"]
    text = describe_run(old)
    assert "20 adaptation steps" in text and "NLL" not in text and "load average" not in text


def test_plot_nll_by_shots_draws_one_line_per_curve():
    a = _run("statistician")["nll_by_shots"]
    b = {s: {**v, "ci95": float("nan")} for s, v in a.items()}  # one character: no interval
    ax = plot_nll_by_shots({"a": a, "b": b}, title="t", styles={"b": {"ls": "--"}})
    assert len(ax.lines) >= 2 and ax.get_title() == "t"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
    assert list(ax.get_xticks()) == list(NLL_SHOTS)
    plot_nll_by_shots({})  # nothing to draw is not an error


def test_show_conditional_samples_puts_support_then_samples_in_each_row():
    rows = [(torch.zeros(3, 1, 8, 8), torch.ones(5, 1, 8, 8)) for _ in range(2)]
    ax = show_conditional_samples(rows, title="x")
    grid = ax.images[0].get_array()
    assert grid.shape == (2 * 10 + 2, 9 * 10 + 2)  # 2 rows; 3 + 1 blank + 5 columns of 8 px and 2 px padding
    assert grid[3, 3] == 0.0 and grid[3, 3 + 4 * 10] == 1.0 and grid[3, 3 + 3 * 10] == 0.5
    with pytest.raises(ValueError, match="every row needs 3 support images"):
        show_conditional_samples([rows[0], (torch.zeros(2, 1, 8, 8), torch.ones(5, 1, 8, 8))])
    with pytest.raises(ValueError, match="no rows"):
        show_conditional_samples([])
