"""Reference models: written with their key and provenance, loaded only when they match today's
code and data, refused (naming what differs) when they do not; the committed ones load."""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path
import sys

import pytest
import torch

from mlcourse import reference
from mlcourse.reference import RECIPES, ReferenceMismatch


@pytest.fixture(scope="module")
def glyphs(tmp_path_factory):
    """The full glyph splits (what references are trained on), built once for the module, in the
    tests' own cache (conftest's, which a module fixture is set up before)."""
    cache = os.environ.get("MLCOURSE_TEST_CACHE") or str(tmp_path_factory.getbasetemp() / "mlcourse-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLCOURSE_CACHE", cache)
        return {False: reference._splits("glyphs"), True: reference._splits("glyphs", rotations=True)}


def _untrained(name: str, splits):
    """An untrained model of the reference's architecture, and what load needs to rebuild it."""
    recipe = RECIPES[name]
    if recipe.kind == "bench":
        from mlcourse import bench

        method = bench.METHODS[recipe.settings["method"]]
        settings = bench._train_settings(method, bench.build_parser().parse_args([recipe.settings["method"]]), fast=False)
        model = method.build(splits.train.image_shape, settings["train_ways"])
        return model, {"class": type(model).__name__, "config": model._config}
    return reference._generative_model(recipe, splits.train.image_shape), {"image_shape": list(splits.train.image_shape)}


def _write(name, tmp_path, glyphs):
    splits = glyphs[RECIPES[name].kind == "bench"]
    torch.manual_seed(0)
    model, extra = _untrained(name, splits)
    path = reference.write(name, "glyphs", model, {"command": "test", "steps": 0, "seconds": 0.0, "score": None},
                           extra, tmp_path / f"{name}.pt", splits=splits)  # fmt: skip
    return model, path, splits


@pytest.mark.parametrize("name", list(RECIPES))
def test_round_trip_gives_the_same_model(name, tmp_path, glyphs):
    model, path, splits = _write(name, tmp_path, glyphs)
    loaded = reference.load(name, "glyphs", path=path, device="cpu", splits=splits)
    assert path.stat().st_size < reference.MAX_BYTES
    assert loaded.reference["command"] == "test" and loaded.reference["torch"] == torch.__version__
    assert not loaded.training
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2
        if a.is_floating_point():
            # stored packed (half precision, the largest tensors int8 per row): equal to the packed value
            torch.testing.assert_close(b, reference.unpack(reference.pack(a)), rtol=0, atol=0)
        else:
            assert torch.equal(a, b)


def test_packing_loses_little():
    torch.manual_seed(0)
    big, small = torch.randn(600, 500), torch.randn(30, 20)
    assert isinstance(reference.pack(big), dict) and reference.pack(small).dtype == torch.float16
    for t in (big, small):
        error = (reference.unpack(reference.pack(t)) - t).abs().max() / t.abs().max()
        assert 0 < error < 1 / 250
    assert torch.equal(reference.unpack(reference.pack(torch.arange(5))), torch.arange(5))


def test_a_changed_setting_is_refused_by_name(tmp_path, glyphs, monkeypatch):
    _, path, splits = _write("protonet", tmp_path, glyphs)
    from mlcourse import bench

    changed = bench.METHODS["protonet"].__class__(**{**bench.METHODS["protonet"].__dict__, "steps": 123})
    monkeypatch.setitem(bench.METHODS, "protonet", changed)
    with pytest.raises(ReferenceMismatch, match=r"steps: 13000 in the checkpoint, 123 now.*build protonet"):
        reference.load("protonet", "glyphs", path=path, splits=splits)


def test_another_architecture_is_refused(tmp_path, glyphs, monkeypatch):
    _, path, splits = _write("vae", tmp_path, glyphs)
    monkeypatch.setitem(RECIPES, "vae", RECIPES["vae"].__class__(**{**RECIPES["vae"].__dict__,
                                                                   "settings": {**RECIPES["vae"].settings, "latent_dim": 8}}))
    with pytest.raises(ReferenceMismatch, match="latent_dim: 32 in the checkpoint, 8 now"):
        reference.load("vae", "glyphs", path=path, splits=splits)


def test_other_training_images_are_refused(tmp_path, glyphs):
    _, path, splits = _write("gan", tmp_path, glyphs)
    changed = copy.deepcopy(splits)
    changed.train.images[0, 0, 0, 0] ^= 1  # one pixel: another data set
    with pytest.raises(ReferenceMismatch, match="trained on other glyphs images"):
        reference.load("gan", "glyphs", path=path, splits=changed)


def test_a_missing_or_foreign_file_gets_a_clear_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m mlcourse.reference build maml --data glyphs"):
        reference.read("maml", "glyphs", path=tmp_path / "nothing.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ReferenceMismatch, match="not a reference model"):
        reference.read("maml", "glyphs", path=tmp_path / "other.pt")
    with pytest.raises(ValueError, match="unknown reference model 'resnet'"):
        reference.path_for("resnet", "glyphs")


@pytest.mark.parametrize("value, expected", [("", False), ("0", False), ("1", True), ("yes", True), ("off", False)])
def test_loaded_only_when_asked(value, expected, monkeypatch):
    monkeypatch.setenv(reference.ENV, value)
    assert reference.wanted() is expected
    assert reference.wanted(True) is True and reference.wanted(False) is False


def test_a_bad_request_value_is_an_error(monkeypatch):
    monkeypatch.setenv(reference.ENV, "maybe")
    with pytest.raises(ValueError, match="MLCOURSE_REFERENCE='maybe'"):
        reference.wanted()


def test_building_in_fast_mode_is_refused(monkeypatch):
    monkeypatch.setenv("MLCOURSE_FAST", "1")
    with pytest.raises(RuntimeError, match="full-mode run"):
        reference.build("vae", "glyphs")


@pytest.mark.parametrize("argv, message", [
    ([], "COMMAND"),
    (["build", "resnet"], "NAME"),
    (["build", "vae", "--threads", "0"], "--threads"),
    (["list", "--data", "mnist"], "--data"),
])  # fmt: skip
def test_bad_arguments_get_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        reference.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_the_module_runs_as_a_command():
    out = subprocess.run([sys.executable, "-m", "mlcourse.reference", "build", "resnet"], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_only_bench_models_reuse_a_checkpoint(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        reference.main(["build", "gan", "--checkpoint", str(tmp_path / "x.pt")])
    assert exit_info.value.code == 2 and "only protonet and maml" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        reference.main(["build", "maml", "--checkpoint", str(tmp_path / "missing.pt")])
    assert "an existing file" in capsys.readouterr().err
@pytest.mark.parametrize("name", list(RECIPES))
def test_the_committed_glyph_references_match_the_code(name, glyphs):
    """What a fresh clone has: every glyph reference in the package loads with today's code.
    A change to a recipe, an architecture or the glyph renderer fails here until the file is remade."""
    path = reference.path_for(name, "glyphs")
    if not path.exists():
        pytest.fail(f"{path} is missing: make it with `python -m mlcourse.reference build {name} --data glyphs`")
    model = reference.load(name, "glyphs", device="cpu", splits=glyphs[RECIPES[name].kind == "bench"])
    assert model.reference["steps"] > 0 and model.reference["seconds"] > 0




@pytest.mark.slow
@pytest.mark.parametrize("chapter, name", [("02_prototypical_networks", "protonet"), ("04_maml", "maml"), ("08_vaes", "vae")])
def test_a_chapter_uses_its_reference_model_when_asked(chapter, name, monkeypatch):
    """A fresh clone's path: the glyphs, fast mode, MLCOURSE_REFERENCE=1. The chapter runs to the
    end without an error and prints the reference model's provenance (the rest of chapter 08 then
    works on the reference VAE)."""
    import nbformat

    from mlcourse.authoring import notebook_client

    root = Path(__file__).resolve().parents[1]
    for key, value in (("MLCOURSE_REFERENCE", "1"), ("MLCOURSE_DATA", "glyphs"), ("MLCOURSE_FAST", "1")):
        monkeypatch.setenv(key, value)
    nb = nbformat.read(root / "chapters" / f"{chapter}.ipynb", as_version=4)
    notebook_client(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(root / "chapters")}}).execute()
    printed = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert f"reference {name} (glyphs): `python -m mlcourse" in printed
