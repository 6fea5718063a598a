"""Every command line of the course answers a bad argument with one line and exit status 2.

The line is ``PROG: error: ...`` and names the argument and the value; there is no traceback,
and the check comes before any work: the subprocesses that fail an argument check which needs
no data must leave their (fresh) cache folder without a dataset in it. The subprocess cases
run concurrently, once per module (each pays a torch import); broader cases call ``main``
in-process, with small stand-in data where the check is against the data.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from mlcourse import cli
from mlcourse.data.base import ImageClassDataset
from mlcourse.data.sources import MetaSplits

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


def error_lines(stderr: str) -> list[str]:
    """The lines of stderr, without empty ones and without warnings a library might print."""
    out, in_warning = [], False
    for line in stderr.splitlines():
        if not line.strip():
            continue
        if re.search(r"\b\w*Warning\b:", line):
            in_warning = True  # a warnings.warn line; the next, indented, line is its source
            continue
        if in_warning and line.startswith((" ", "\t")):
            continue
        in_warning = False
        out.append(line)
    return out


def check_one_line(stderr: str, prog: str, *names: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = error_lines(stderr)
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    line = lines[0]
    assert line.startswith(f"{prog}: error: "), line
    for name in names:
        assert name in line, f"{name!r} not in {line!r}"
    return line


# ---------------------------------------------------------------------------------------
# Subprocesses: the real entry points
# ---------------------------------------------------------------------------------------
# (id, command after `python`, prog, strings the line must hold, needs data, marks)
# "{ckpt}" and "{tmp}" are filled in with a checkpoint and a folder that the fixture makes.
CASES = [
    ("metrics-size", ["-m", "mlcourse.metrics", "--size", "8"], "python -m mlcourse.metrics", ["--size", "8", "16"]),
    ("authoring-command", ["-m", "mlcourse.authoring", "exercize"], "python -m mlcourse.authoring", ["command", "exercize", "exercises"]),
    ("authoring-missing", ["-m", "mlcourse.authoring", "clean", "{tmp}/no/such.ipynb"], "python -m mlcourse.authoring clean",
     ["paths", "no/such.ipynb", "no such file"]),
    ("generative-budget", ["benchmarks/generative.py", "--gan-budget", "0"], "benchmarks/generative.py", ["--gan-budget", "0"]),
    ("generative-n", ["benchmarks/generative.py", "--n", "10"], "benchmarks/generative.py", ["--n", "10", "65"]),
    ("maml-ways", ["benchmarks/maml_speed.py", "--ways", "1"], "benchmarks/maml_speed.py", ["--ways", "1", "2"]),
    ("bn-missing-checkpoint", ["benchmarks/bn_recalibration.py", "{tmp}/none.pt"], "benchmarks/bn_recalibration.py",
     ["checkpoint", "none.pt", "no such file"]),
    ("bn-episodes", ["benchmarks/bn_recalibration.py", "{ckpt}", "--episodes", "0"], "benchmarks/bn_recalibration.py",
     ["--episodes", "0"]),
    ("bench-ways", ["-m", "mlcourse.bench", "protonet", "--ways", "0", "--fast"], "python -m mlcourse.bench", ["--ways", "0"],
     False),
    ("bench-episodes", ["-m", "mlcourse.bench", "protonet", "--episodes", "-3"], "python -m mlcourse.bench", ["--episodes", "-3"],
     False),
    ("bench-shots", ["-m", "mlcourse.bench", "protonet", "--shots", "100", "--fast"], "python -m mlcourse.bench",
     ["--shots", "100"], True),
    # against the real data (the Omniglot subsets: known limits, quick to load); the in-process tests
    # below check the other limits against stand-in data
    ("bn-ways-vs-data", ["benchmarks/bn_recalibration.py", "{ckpt}", "--data", "omniglot", "--split", "test", "--ways", "1000"],
     "benchmarks/bn_recalibration.py", ["--ways", "1000", "at most 106"], True, [pytest.mark.shared_data]),
]
CASES = [case + (False, [])[len(case) - 4:] for case in CASES]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every case of CASES run once, three at a time; ``{id: (CompletedProcess, cache folder)}``."""
    tmp = tmp_path_factory.mktemp("cli")
    from mlcourse.metric import ProtoNet

    ProtoNet(hidden=4).save(tmp / "proto.pt")
    fill = {"{ckpt}": str(tmp / "proto.pt")}
    data_cache = os.environ.get("MLCOURSE_TEST_CACHE") or str(tmp / "data-cache")

    def run(case):
        name, args, _, _, needs_data, _ = case
        args = [fill.get(a, a) for a in args]
        args = [a.replace("{tmp}", str(tmp)) for a in args]
        cache = data_cache if needs_data else str(tmp / f"cache-{name}")  # a fresh one: nothing may be loaded
        env = dict(os.environ, MLCOURSE_FAST="1", OMP_NUM_THREADS="1", MLCOURSE_CACHE=cache, PYTHONWARNINGS="ignore")
        proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
        return name, (proc, Path(cache))

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(run, [c for c in CASES if not _needs_shared(c) or _omniglot_present()]))


def _needs_shared(case) -> bool:
    """Cases marked shared_data need the Omniglot subsets; the others run with whatever data is here."""
    return any(getattr(mark, "name", None) == "shared_data" for mark in case[5])


def _omniglot_present() -> bool:
    from mlcourse.config import shared_dir

    return shared_dir() is not None and (shared_dir() / "data" / "omniglot").is_dir()


@pytest.mark.parametrize(
    "name, prog, names, needs_data",
    [pytest.param(c[0], c[2], c[3], c[4], id=c[0], marks=c[5]) for c in CASES],
)
def test_entry_point_refuses_a_bad_argument_in_one_line(runs, name, prog, names, needs_data):
    proc, cache = runs[name]
    assert proc.returncode == 2, f"exit status {proc.returncode}\n{proc.stderr[-2000:]}"
    check_one_line(proc.stderr, prog, *names)
    assert proc.stdout == ""
    if not needs_data:  # refused before any data was loaded (the loaders cache what they load)
        assert not cache.exists() or not any(p.is_file() for p in cache.rglob("*")), sorted(cache.rglob("*"))


# ---------------------------------------------------------------------------------------
# In-process: more arguments, and checks against small stand-in data
# ---------------------------------------------------------------------------------------
def load_script(name: str):
    """``benchmarks/NAME.py`` as a module (once; registered, as dataclasses need)."""
    key = f"benchmark_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def refused(main, argv, capsys, prog: str, *names: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    return check_one_line(err, prog, *names)


@pytest.mark.parametrize("argv, names", [
    (["--size", "15"], ["--size", "15", "at least 16"]),
    (["--steps", "-1"], ["--steps", "-1"]),
    (["--size", "big"], ["--size", "big"]),
    (["--seeds", "3"], ["--seeds"]),
])
def test_metrics(argv, names, capsys, monkeypatch):
    from mlcourse import metrics

    monkeypatch.setattr(metrics, "feature_net", lambda *a, **k: pytest.fail("trained despite a bad argument"))
    refused(metrics.main, argv, capsys, "python -m mlcourse.metrics", *names)


def test_authoring(tmp_path, capsys):
    from mlcourse import authoring

    prog = "python -m mlcourse.authoring"
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken.ipynb").write_text("{ not json")
    (tmp_path / "a_file").write_text("x")
    good = tmp_path / "good.ipynb"
    import nbformat

    nbformat.write(nbformat.v4.new_notebook(), good)
    before = good.read_bytes()
    refused(authoring.main, [], capsys, prog, "command")
    refused(authoring.main, ["run"], capsys, prog, "command", "'run'", "execute")
    refused(authoring.main, ["clean"], capsys, prog + " clean", "paths")
    refused(authoring.main, ["clean", str(tmp_path / "a_file")], capsys, prog + " clean", "paths", "a_file", ".ipynb")
    refused(authoring.main, ["execute", str(tmp_path / "nothing.ipynb")], capsys, prog + " execute", "paths",
            "nothing.ipynb", "no such file")
    refused(authoring.main, ["clean", str(tmp_path / "empty")], capsys, prog + " clean", "paths", "empty", "no .ipynb")
    # a good notebook before a broken one: refused before the good one is rewritten
    refused(authoring.main, ["clean", str(good), str(tmp_path / "broken.ipynb")], capsys, prog + " clean",
            "paths", "broken.ipynb", "readable Jupyter notebook")
    assert good.read_bytes() == before
    refused(authoring.main, ["execute", str(good), "--out", str(tmp_path / "a_file")], capsys, prog + " execute",
            "--out", "a_file", "folder")
    refused(authoring.main, ["exercises", "--chek"], capsys, prog, "--chek")


@pytest.mark.parametrize("argv, names", [
    (["--meta-batch", "-1"], ["--meta-batch", "-1"]),
    (["--inner-steps", "1", "0"], ["--inner-steps", "0"]),
    (["--hidden", "0"], ["--hidden", "0"]),
    (["--shots", "0"], ["--shots", "0"]),
    (["--queries", "-5"], ["--queries", "-5"]),
    (["--size", "12"], ["--size", "12", "16"]),
    (["--warmup", "-1"], ["--warmup", "-1"]),
    (["--repeats", "0"], ["--repeats", "0"]),
    (["--threads", "-2"], ["--threads", "-2"]),
    (["--device", "mps"], ["--device", "mps"]),
    (["--device", "cuda:99"], ["--device", "cuda:99"]),
    (["--clock", "sun"], ["--clock", "sun"]),
])
def test_maml_speed(argv, names, capsys, monkeypatch):
    module = load_script("maml_speed")
    monkeypatch.setattr(module, "run_config", lambda *a, **k: pytest.fail("timed despite a bad argument"))
    if argv[:2] == ["--device", "cuda:99"] and not torch.cuda.is_available():
        names = ["--device", "cuda:99", "CUDA is not available"]
    refused(module.main, argv, capsys, "benchmarks/maml_speed.py", *names)


def tiny_splits(train_classes=20, test_classes=10, per_class=20) -> MetaSplits:
    g = torch.Generator().manual_seed(0)

    def part(n, name):
        return ImageClassDataset(torch.randint(0, 256, (per_class * n, 1, 28, 28), generator=g, dtype=torch.uint8),
                                 torch.arange(n).repeat_interleave(per_class), [f"{name}{c}" for c in range(n)],
                                 [f"{name}-alphabet{c % 2}" for c in range(n)], name=name)

    return MetaSplits(part(train_classes, "train"), part(3, "val"), part(test_classes, "test"), "tiny", "tiny random data")


@pytest.fixture
def tiny(monkeypatch):
    splits = tiny_splits()
    monkeypatch.setattr("mlcourse.data.sources.meta_splits", lambda source=None, size=28, rotations=False, seed=0: splits)
    return splits


@pytest.mark.parametrize("argv, names", [
    (["--gan-budget", "-1"], ["--gan-budget", "-1"]),
    (["--vae-budget", "0"], ["--vae-budget", "0"]),
    (["--gan-steps", "0"], ["--gan-steps", "0"]),
    (["--gan-width", "0"], ["--gan-width", "0"]),
    (["--gan-batch", "-4"], ["--gan-batch", "-4"]),
    (["--k", "0"], ["--k", "0"]),
    (["--n", "64"], ["--n", "64", "at least 65"]),
    (["--log-every", "-1"], ["--log-every", "-1"]),
    (["--only", "flow"], ["--only", "flow"]),
    # against the data: halves of 200 test images
    (["--n", "101"], ["--n", "101", "at most 100", "200 test images"]),
])
def test_generative(argv, names, capsys, monkeypatch, tiny):
    module = load_script("generative")
    monkeypatch.setattr("mlcourse.metrics.feature_net", lambda *a, **k: pytest.fail("trained despite a bad argument"))
    refused(module.main, argv, capsys, "benchmarks/generative.py", *names)


def test_generative_out_must_not_be_a_file(tmp_path, capsys, tiny):
    (tmp_path / "f").write_text("x")
    refused(load_script("generative").main, ["--out", str(tmp_path / "f")], capsys, "benchmarks/generative.py",
            "--out", "folder")


@pytest.fixture
def checkpoint(tmp_path):
    from mlcourse.metric import ProtoNet

    return str(ProtoNet(hidden=4).save(tmp_path / "proto.pt"))


@pytest.mark.parametrize("argv, names", [
    (["--ways", "1"], ["--ways", "1", "at least 2"]),
    (["--shots", "0"], ["--shots", "0"]),
    (["--episodes", "-3"], ["--episodes", "-3"]),
    (["--bn-episodes", "-1"], ["--bn-episodes", "-1"]),
    (["--train-ways", "1"], ["--train-ways", "1"]),
    (["--train-queries", "0"], ["--train-queries", "0"]),
    (["--threads", "0"], ["--threads", "0"]),
    # against the stand-in data: 10 test classes and 20 training classes of 20 images
    (["--ways", "11"], ["--ways", "11", "at most 10", "test split"]),
    (["--shots", "6"], ["--shots", "6", "at most 5", "15"]),
    (["--shots", "5", "--ways", "11"], ["--ways", "11", "at most 10"]),
    (["--train-ways", "21"], ["--train-ways", "21", "at most 20", "training split"]),
    (["--train-queries", "20"], ["--train-queries", "20", "at most 19"]),
])
def test_bn_recalibration(argv, names, capsys, monkeypatch, tiny, checkpoint):
    module = load_script("bn_recalibration")
    monkeypatch.setattr("mlcourse.evaluate.evaluate", lambda *a, **k: pytest.fail("evaluated despite a bad argument"))
    refused(module.main, [checkpoint, "--split", "test", *argv], capsys, "benchmarks/bn_recalibration.py", *names)


def test_bn_recalibration_without_recalibration_needs_no_training_episodes(capsys, monkeypatch, tiny, checkpoint):
    """--bn-episodes 0 (score as stored only) does not check the recalibration episodes' size."""
    module = load_script("bn_recalibration")

    class Evaluated(Exception):
        pass

    def evaluate(*args, **kwargs):
        raise Evaluated

    monkeypatch.setattr("mlcourse.evaluate.evaluate", evaluate)
    with pytest.raises(Evaluated):
        module.main([checkpoint, "--split", "test", "--bn-episodes", "0", "--train-ways", "500"])


@pytest.mark.parametrize("state, names", [
    ({"bench": {}, "state_dict": {}}, ["pretrained classifier"]),
    ({"class": "NoSuchNet", "config": {}, "state_dict": {}}, ["NoSuchNet"]),
    ([1, 2, 3], ["few-shot model checkpoint"]),
])
def test_bn_recalibration_refuses_what_is_not_a_few_shot_checkpoint(state, names, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("mlcourse.data.sources.meta_splits", lambda *a, **k: pytest.fail("data loaded before the checkpoint was checked"))
    path = tmp_path / "other.pt"
    torch.save(state, path)
    refused(load_script("bn_recalibration").main, [str(path)], capsys, "benchmarks/bn_recalibration.py",
            "checkpoint", str(path), *names)


def test_bn_recalibration_refuses_a_file_that_torch_cannot_load(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("not a checkpoint\n")
    refused(load_script("bn_recalibration").main, [str(path)], capsys, "benchmarks/bn_recalibration.py",
            "checkpoint", "notes.txt", "few-shot model checkpoint", "torch.load failed")


def test_bn_recalibration_refuses_a_model_for_other_images(tmp_path, capsys, tiny):
    from mlcourse.metric import ProtoNet

    path = ProtoNet(in_channels=3, hidden=4).save(tmp_path / "rgb.pt")
    refused(load_script("bn_recalibration").main, [str(path), "--split", "test"], capsys, "benchmarks/bn_recalibration.py",
            "checkpoint", "1x28x28")


# ---------------------------------------------------------------------------------------
# The helpers themselves
# ---------------------------------------------------------------------------------------
def uneven(sizes) -> ImageClassDataset:
    n = sum(sizes)
    return ImageClassDataset(torch.zeros(n, 1, 4, 4, dtype=torch.uint8),
                             torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes)),
                             [f"c{i}" for i in range(len(sizes))], ["g"] * len(sizes))


def refused_by(fn, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        fn()
    assert exit_info.value.code == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1
    return lines[0]


def test_check_episodes_fit_names_the_argument_and_the_limit(capsys):
    data = uneven([20, 20, 20, 10, 10, 10, 10])  # 3 classes of 20 images, 4 of 10
    cli.check_episodes_fit("prog", data, 7, 1, 9)  # 10 images per class: all 7 classes qualify
    assert refused_by(lambda: cli.check_episodes_fit("prog", data, 4, 1, 15), capsys) == (
        "prog: error: --ways 4: must be at most 3 (the test split has 3 classes with at least 16 images: "
        "1 shot + 15 queries)")
    line = refused_by(lambda: cli.check_episodes_fit("prog", data, 2, 6, 15), capsys)
    assert line.startswith("prog: error: --shots 6: must be at most 5 (the largest class of the test split has 20 images")
    line = refused_by(lambda: cli.check_episodes_fit("prog", data, 2, 1, 20, queries_name="--queries"), capsys)
    assert line.startswith("prog: error: --queries 20: must be at most 19")
    # too many shots with the queries fixed: the shots are blamed even when queries_name is given
    line = refused_by(lambda: cli.check_episodes_fit("prog", data, 2, 8, 15, queries_name="--queries"), capsys)
    assert line.startswith("prog: error: --shots 8: must be at most 5")


def test_check_helpers(tmp_path, capsys):
    parser = cli.ArgumentParser(prog="prog")
    cli.check_choice(parser, "--mode", None, ["a", "b"])
    cli.check_choice(parser, "--mode", "a", ["a", "b"])
    assert refused_by(lambda: cli.check_choice(parser, "--mode", "c", ["a", "b"]), capsys) == \
        "prog: error: --mode c: must be one of a, b"
    (tmp_path / "f").write_text("x")
    cli.check_existing_file(parser, "path", tmp_path / "f")
    assert "no such file" in refused_by(lambda: cli.check_existing_file(parser, "path", tmp_path / "g"), capsys)
    assert "folder" in refused_by(lambda: cli.check_existing_file(parser, "path", tmp_path), capsys)
    assert refused_by(lambda: parser.parse_args(["--nope"]), capsys) == "prog: error: unrecognized arguments: --nope"


def test_glyph_table_script_refuses_an_unknown_stage():
    proc = subprocess.run(["bash", str(BENCHMARKS / "glyph_table.sh"), "everything"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and proc.stdout == ""
    assert error_lines(proc.stderr) == ["benchmarks/glyph_table.sh: error: everything: must be 'all' (the default) or 'compare'"]
