"""Time chapters top to bottom, cell by cell, in full (default) or fast mode.

    python benchmarks/chapter_times.py chapters/02_prototypical_networks.ipynb --threads 1 \
        --out-dir docs/runs/chapter-times --keep runs/fulltime

Each notebook runs in a fresh kernel (the same nbclient client as the book and the tests) with
``MLCOURSE_FAST`` set from ``--mode`` and the kernel's torch threads from ``--threads``. The JSON
``OUT_DIR/<notebook>-<mode>.json`` is rewritten after every cell, so a run cut short still says
how far it got; it records the wall time and the kernel's CPU seconds per cell and in total, the
load average sampled every 10 s (other jobs on the machine slow a run down: the figure is only
as good as the load beside it), the hardware, torch, the commit and the date. The executed
notebook is written to ``--keep`` (git-ignored ``runs/``), never over the chapter.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlcourse.cli import ArgumentParser, bad_argument, check_at_least  # noqa: E402

PROG = "benchmarks/chapter_times.py"


def hardware() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu}){mem}"


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class LoadSampler(threading.Thread):
    """The 1-minute load average every ``every`` seconds, while the notebook runs."""

    def __init__(self, every: float = 10.0):
        super().__init__(daemon=True)
        self.every, self.samples, self._stop_event = every, [], threading.Event()

    def run(self):
        while not self._stop_event.is_set():
            self.samples.append(round(os.getloadavg()[0], 2))
            self._stop_event.wait(self.every)

    def stop(self):
        self._stop_event.set()


def kernel_cpu_seconds(client) -> float | None:
    """User + system CPU seconds of the kernel process and its children so far (psutil)."""
    try:
        import psutil

        pid = client.km.provisioner.process.pid
        proc = psutil.Process(pid)
        total = 0.0
        for p in [proc, *proc.children(recursive=True)]:
            t = p.cpu_times()
            total += t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0)
        return total
    except Exception:  # noqa: BLE001 - psutil missing, the kernel gone: no CPU figure rather than no run
        return None


def run_one(path: Path, mode: str, threads: int, out_dir: Path, keep: Path | None, timeout: int) -> dict:
    import nbformat

    from mlcourse.authoring import patient_client_class

    nb = nbformat.read(path, as_version=4)
    record = {
        "notebook": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
        "mode": mode, "threads": threads, "hardware": hardware(), "gpu": False,
        "python": platform.python_version(), "commit": commit(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([f"python {PROG}", str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
                             "--mode", mode, "--threads", str(threads)]),
        "complete": False, "cells": [],
    }
    try:
        import torch

        record["torch"] = torch.__version__
        record["gpu"] = bool(torch.cuda.is_available())
    except ImportError:
        pass
    target = out_dir / f"{path.stem}-{mode}.json"
    out_dir.mkdir(parents=True, exist_ok=True)
    sampler = LoadSampler()
    state = {"t": None, "cpu": 0.0}

    def write():
        record["load_average"] = {"min": min(sampler.samples, default=None), "max": max(sampler.samples, default=None),
                                  "mean": round(sum(sampler.samples) / len(sampler.samples), 2) if sampler.samples else None}
        target.write_text(json.dumps(record, indent=1) + "\n")

    NotebookClient = patient_client_class()
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})

    def on_start(cell, cell_index, **_):
        state["t"] = time.perf_counter()

    def on_done(cell, cell_index, **_):
        if cell.cell_type != "code":
            return
        cpu = kernel_cpu_seconds(client)
        first = next((line for line in cell.source.splitlines() if line.strip()), "")
        record["cells"].append({"index": cell_index, "first_line": first[:100],
                                "seconds": round(time.perf_counter() - state["t"], 2),
                                "cpu_seconds": None if cpu is None else round(cpu - state["cpu"], 2)})
        if cpu is not None:
            state["cpu"] = cpu
        record["wall_seconds"] = round(time.perf_counter() - start, 1)
        record["cpu_seconds"] = None if cpu is None else round(cpu, 1)
        write()

    client.on_cell_execute = on_start
    client.on_cell_executed = on_done
    sampler.start()
    start = time.perf_counter()
    error = None
    try:
        client.execute()
    except Exception as exc:  # noqa: BLE001 - recorded in the JSON, then raised again
        error = exc
        record["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else ''}"
    finally:
        sampler.stop()
    record["wall_seconds"] = round(time.perf_counter() - start, 1)
    record["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record["complete"] = error is None
    write()
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, keep / path.name)
    print(f"{record['wall_seconds']:8.1f} s wall  {record.get('cpu_seconds')} CPU s  load {record['load_average']}  "
          f"{path.name} ({mode}){'  FAILED: ' + record['error'] if error else ''}", flush=True)
    return record


def table(out_dir: Path, mode: str) -> str:
    """The markdown table of every timed chapter in ``out_dir`` (what docs/results.md shows)."""
    rows = ["| chapter | wall | kernel CPU | slowest cell | load average (min–max) | threads | commit | complete |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for path in sorted(out_dir.glob(f"*-{mode}.json")):
        r = json.loads(path.read_text())
        slow = max(r["cells"], key=lambda c: c["seconds"]) if r["cells"] else None
        minutes, sec = divmod(int(round(r.get("wall_seconds", 0))), 60)
        load = r.get("load_average") or {}
        rows.append(f"| `{Path(r['notebook']).stem}` | {minutes} min {sec:02d} s | {r.get('cpu_seconds')} s | "
                    + (f"{slow['seconds']:.0f} s (`{slow['first_line'][:40]}`)" if slow else "–")
                    + f" | {load.get('mean')} ({load.get('min')}–{load.get('max')}) | {r['threads']} | {r['commit']} | "
                    f"{'yes' if r.get('complete') else 'NO'} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="chapter notebooks to time, one after another")
    parser.add_argument("--table", action="store_true", help="print the table of the timed chapters in --out-dir and stop")
    parser.add_argument("--mode", default="full", help="full (the default mode) or fast (MLCOURSE_FAST=1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the kernel (default 1)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "runs" / "chapter-times")
    parser.add_argument("--keep", type=Path, default=None, help="folder for the executed notebooks (default: not kept)")
    parser.add_argument("--timeout", type=int, default=14400, help="seconds one cell may take (default 14400)")
    args = parser.parse_args(argv)
    if args.mode not in ("full", "fast"):
        bad_argument(PROG, "--mode", args.mode, "full or fast")
    if args.table:
        print(table(args.out_dir, args.mode))
        return 0
    if not args.notebooks:
        bad_argument(PROG, "notebooks", "(none)", "one or more chapter notebooks (.ipynb), or --table")
    check_at_least(PROG, "--threads", args.threads, 1)
    check_at_least(PROG, "--timeout", args.timeout, 1)
    threads, timeout = args.threads, args.timeout
    for p in args.notebooks:
        if not p.is_file() or p.suffix != ".ipynb":
            bad_argument(PROG, "notebook", p, "an existing .ipynb file")
    os.environ["MLCOURSE_FAST"] = "1" if args.mode == "fast" else "0"
    os.environ.pop("MLCOURSE_REFERENCE", None)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    failed = 0
    for p in args.notebooks:
        failed += not run_one(p.resolve(), args.mode, threads, args.out_dir, args.keep, timeout)["complete"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
