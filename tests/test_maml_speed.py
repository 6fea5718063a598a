"""The MAML speed benchmark runs, checks its contestants agree, and prints its table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "maml_speed.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("maml_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_fast_benchmark_prints_a_table(capsys):
    bench = load_benchmark()
    threads = torch.get_num_threads()
    try:
        rows = bench.main(["--fast", "--threads", "1", "--repeats", "1", "--clock", "cpu"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "wall ms" in out and "CPU ms" in out and "vs best baseline" in out and "peak MB" in out
    methods = {r["method"] for r in rows}
    assert {"mlcourse loop", "mlcourse vmap", "naive loop"} <= methods
    assert (bench.higher is not None) == ("higher" in methods)
    if bench.higher is None:
        assert "skipping higher" in out
    assert "all contestants computed the same meta-gradient" in out
    for r in rows:
        assert r["ms"] > 0 and r["cpu_ms"] > 0 and r["ratio"] > 0
        assert r["peak_mb"] > 0  # mlcourse.profiling.peak_memory_mb: the CPU profiler's memory events
    assert min(r["ratio"] for r in rows if r["baseline"]) == 1.0


def test_naive_and_library_agree_on_first_order_too():
    bench = load_benchmark()
    torch.manual_seed(0)
    cfg = bench.Config(meta_batch=2, inner_steps=2, first_order=True, queries=1, hidden=4)
    tasks = bench.make_tasks(cfg, torch.device("cpu"))
    contestants, _ = bench.build_contestants(cfg, torch.device("cpu"), ["loop", "naive", "higher"])
    kept, notes = bench.check_agreement(contestants, tasks, cfg)
    assert notes == [] and len(kept) == len(contestants)
