"""How fast is one MAML meta-step? mlcourse.optim against a hand-written loop and ``higher``.

Usage::

    python benchmarks/maml_speed.py                   # the full table (slow on a CPU: see below)
    python benchmarks/maml_speed.py --fast            # seconds: a tiny network, one configuration
    python benchmarks/maml_speed.py --threads 1 --clock cpu --hidden 32 --repeats 3   # shared CPU
    python benchmarks/maml_speed.py --device cuda     # on a GPU, where vmap may win

One *meta-step* is: the meta-gradient of a meta-batch of T tasks (each adapted with k inner
SGD steps on its support set, then scored on its queries), followed by one Adam step on θ.
The contestants, all in this one process, on the same tasks from the same initial weights:

* ``mlcourse loop``: :func:`mlcourse.optim.meta_gradient` with ``vectorize=False``;
* ``mlcourse vmap``: the same with ``vectorize=True`` (``vmap`` over tasks of ``grad``);
* ``naive loop`` (baseline): the pattern of most PyTorch MAML tutorials, written here: a
  hand-written functional Conv-4 taking a list of weights, ``torch.autograd.grad(...,
  create_graph=True)``, the query losses of all tasks summed and one ``backward()``;
* ``higher`` (baseline, if installed): Grefenstette et al., 2019, ``higher.innerloop_ctx``
  with a differentiable SGD, one ``backward()`` per task (its documented pattern).
  First order uses ``track_higher_grads=False`` and the gradient at the adapted weights.

Before timing, the script checks that every contestant computes the same meta-gradient.
Each is then run ``--warmup`` times untimed (the first of those under the memory probe)
and ``--repeats`` times timed, *interleaved* (A B C D, B C D A, ...) so that drifting load
on a shared machine hits all of them alike; the table shows the median, the ratio to the
fastest baseline (of wall time, or with ``--clock cpu`` of process CPU time, which does not
count the time other jobs on a shared machine hold the cores: the steadier measure there,
with ``--threads 1``), and the peak memory a meta-step adds (:func:`mlcourse.profiling.peak_memory_mb`:
``torch.cuda.max_memory_allocated`` on a GPU, and on a CPU the peak of the running sum of the
allocations and frees that the PyTorch profiler records; ``tracemalloc`` cannot see
PyTorch's allocations, and the process RSS never goes down between contestants).

On a CPU the paper's network (64 filters) makes a meta-step of 32 tasks take seconds, and
the full table (8 configurations x 4 contestants x warm-up and repeats) tens of minutes;
``--hidden 32`` quarters the convolutions. On a machine whose cores are shared with other
jobs, ``--threads 1`` avoids the huge slow-downs of oversubscribed OpenMP threads (we saw
10-25x on 2 busy cores).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mlcourse.cli import ArgumentParser, bad_argument, check_at_least  # noqa: E402
from mlcourse.models import conv4_classifier  # noqa: E402
from mlcourse.optim import meta_gradient  # noqa: E402
from mlcourse.profiling import peak_memory_mb  # noqa: E402  (CUDA allocator peak, or the CPU profiler's)

try:  # a real peer, optional
    import higher
    HIGHER_ERROR = None
except Exception as error:  # noqa: BLE001 - any failure to import means "skip it"
    higher, HIGHER_ERROR = None, f"{type(error).__name__}: {error}"


@dataclass(frozen=True)
class Config:
    meta_batch: int
    inner_steps: int
    first_order: bool
    ways: int = 5
    shots: int = 1
    queries: int = 15
    size: int = 28
    hidden: int = 64
    inner_lr: float = 0.4

    @property
    def label(self) -> str:
        return f"T={self.meta_batch} k={self.inner_steps} {'1st' if self.first_order else '2nd'}"


def make_tasks(cfg: Config, device, seed: int = 0):
    """Random images with class labels: timing does not care what the pictures show."""
    g = torch.Generator().manual_seed(seed)
    T, n, s, q = cfg.meta_batch, cfg.ways, cfg.shots, cfg.queries
    sx = torch.rand(T, n * s, 1, cfg.size, cfg.size, generator=g)
    qx = torch.rand(T, n * q, 1, cfg.size, cfg.size, generator=g)
    sy = torch.arange(n).repeat_interleave(s).repeat(T, 1)
    qy = torch.arange(n).repeat_interleave(q).repeat(T, 1)
    return tuple(t.to(device) for t in (sx, sy, qx, qy))


# ---------------------------------------------------------------------------------------
# The contestants: each holds its own copy of the same initial network and its own Adam.
# grads(tasks) returns the meta-gradient (in named_parameters order) without stepping;
# step(tasks) is the timed meta-step.
# ---------------------------------------------------------------------------------------
class Library:
    def __init__(self, model, cfg: Config, vectorize: bool):
        self.model, self.cfg, self.vectorize = model, cfg, vectorize
        self.name = "mlcourse vmap" if vectorize else "mlcourse loop"
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def grads(self, tasks):
        res = meta_gradient(self.model, tasks, inner_steps=self.cfg.inner_steps, inner_lr=self.cfg.inner_lr,
                            first_order=self.cfg.first_order, vectorize=self.vectorize)  # fmt: skip
        return [res.grads[n] for n, _ in self.model.named_parameters()]

    def step(self, tasks):
        grads = self.grads(tasks)
        self.opt.zero_grad(set_to_none=True)
        for p, g in zip(self.model.parameters(), grads):
            p.grad = g
        self.opt.step()


def conv4_functional(x, w):
    """Conv-4 + linear head as one function of a list of 18 weights (the tutorial pattern)."""
    for i in range(4):
        conv_w, conv_b, bn_w, bn_b = w[4 * i : 4 * i + 4]
        x = F.conv2d(x, conv_w, conv_b, padding=1)
        x = F.batch_norm(x, None, None, bn_w, bn_b, training=True)
        x = F.max_pool2d(F.relu(x), 2)
    return F.linear(x.flatten(1), w[16], w[17])


class NaiveLoop:
    name = "naive loop"
    baseline = True

    def __init__(self, model, cfg: Config):
        self.cfg = cfg
        self.weights = [p.detach().clone().requires_grad_() for p in model.parameters()]
        self.opt = torch.optim.Adam(self.weights, lr=1e-3)

    def meta_loss(self, tasks):
        sx, sy, qx, qy = tasks
        T, total = sx.shape[0], 0.0
        for t in range(T):
            fast = self.weights
            for _ in range(self.cfg.inner_steps):
                loss = F.cross_entropy(conv4_functional(sx[t], fast), sy[t])
                g = torch.autograd.grad(loss, fast, create_graph=not self.cfg.first_order)
                fast = [w - self.cfg.inner_lr * gi for w, gi in zip(fast, g)]
            total = total + F.cross_entropy(conv4_functional(qx[t], fast), qy[t])
        return total / T

    def grads(self, tasks):
        return list(torch.autograd.grad(self.meta_loss(tasks), self.weights))

    def step(self, tasks):
        self.opt.zero_grad(set_to_none=True)
        self.meta_loss(tasks).backward()
        self.opt.step()


class Higher:
    name = "higher"
    baseline = True

    def __init__(self, model, cfg: Config):
        self.model, self.cfg = model, cfg
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        self.inner_opt = torch.optim.SGD(model.parameters(), lr=cfg.inner_lr)

    def accumulate_grads(self, tasks):
        """Meta-gradient into ``.grad`` of the model's parameters, one task at a time."""
        sx, sy, qx, qy = tasks
        T, params = sx.shape[0], list(self.model.parameters())
        second = not self.cfg.first_order
        for t in range(T):
            with higher.innerloop_ctx(self.model, self.inner_opt, copy_initial_weights=False, track_higher_grads=second) as (fmodel, diffopt):
                for _ in range(self.cfg.inner_steps):
                    diffopt.step(F.cross_entropy(fmodel(sx[t]), sy[t]))
                loss = F.cross_entropy(fmodel(qx[t]), qy[t]) / T
                if second:
                    loss.backward()
                else:  # no graph back to θ: the gradient at the adapted weights is the update
                    for p, g in zip(params, torch.autograd.grad(loss, list(fmodel.parameters()))):
                        p.grad = g if p.grad is None else p.grad + g

    def grads(self, tasks):
        self.opt.zero_grad(set_to_none=True)
        self.accumulate_grads(tasks)
        grads = [p.grad.clone() for p in self.model.parameters()]
        self.opt.zero_grad(set_to_none=True)
        return grads

    def step(self, tasks):
        self.opt.zero_grad(set_to_none=True)
        self.accumulate_grads(tasks)
        self.opt.step()


# ---------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of ``fn()``."""
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def build_contestants(cfg: Config, device, methods: list[str]):
    torch.manual_seed(0)
    init = conv4_classifier(cfg.ways, (1, cfg.size, cfg.size), hidden=cfg.hidden, out_channels=cfg.hidden, track_running_stats=False).to(device)
    out, skipped = [], []
    for name in methods:
        model = copy.deepcopy(init)  # same initial weights for everyone
        if name == "loop":
            out.append(Library(model, cfg, vectorize=False))
        elif name == "vmap":
            out.append(Library(model, cfg, vectorize=True))
        elif name == "naive":
            out.append(NaiveLoop(model, cfg))
        elif name == "higher":
            if higher is None:
                skipped.append(f"higher: not importable ({HIGHER_ERROR}); pip install higher to include it")
                continue
            out.append(Higher(model, cfg))
    return out, skipped


def check_agreement(contestants, tasks, cfg: Config) -> tuple[list, list[str]]:
    """Every contestant's meta-gradient against the first one's; drop those that fail."""
    reference = contestants[0].grads(tasks)
    scale = max(g.abs().max().item() for g in reference)
    kept, notes = [contestants[0]], []
    for c in contestants[1:]:
        try:
            grads = c.grads(tasks)
        except Exception as error:  # noqa: BLE001 - a peer that breaks on this torch is skipped, not fatal
            notes.append(f"{c.name}: skipped, it failed on {cfg.label} ({type(error).__name__}: {error})")
            continue
        diff = max((a - b).abs().max().item() for a, b in zip(reference, grads))
        if diff > 1e-2 * scale + 1e-6:  # float32 sums in another order, amplified by k inner steps
            notes.append(f"{c.name}: meta-gradient differs from {contestants[0].name} by {diff:.2e} (scale {scale:.2e}) on {cfg.label}")
        kept.append(c)
    return kept, notes


def run_config(cfg: Config, device, methods, warmup: int, repeats: int, memory: bool, clock: str = "wall"):
    tasks = make_tasks(cfg, device)
    contestants, notes = build_contestants(cfg, device, methods)
    contestants, more = check_agreement(contestants, tasks, cfg)
    notes += more
    mem = {}
    for c in contestants:
        for i in range(warmup):
            if i == 0 and memory:
                mem[c.name] = peak_memory_mb(lambda: c.step(tasks), device)
            else:
                c.step(tasks)
    wall, cpu = {c.name: [] for c in contestants}, {c.name: [] for c in contestants}
    for r in range(repeats):
        order = contestants[r % len(contestants):] + contestants[: r % len(contestants)]  # rotate
        for c in order:
            w, u = timed(lambda: c.step(tasks), device)
            wall[c.name].append(w)
            cpu[c.name].append(u)
    rows = []
    median = lambda ts: statistics.median(ts)  # noqa: E731
    ranked = {name: median(ts) for name, ts in (cpu if clock == "cpu" else wall).items()}
    baselines = [ranked[c.name] for c in contestants if getattr(c, "baseline", False)]
    fastest = min(baselines) if baselines else min(ranked.values())
    for c in contestants:
        rows.append({
            "config": cfg.label, "method": c.name, "ms": 1000 * median(wall[c.name]), "cpu_ms": 1000 * median(cpu[c.name]),
            "ratio": ranked[c.name] / fastest, "peak_mb": mem.get(c.name, float("nan")), "baseline": getattr(c, "baseline", False),
        })  # fmt: skip
    return rows, notes


def format_table(rows, clock: str = "wall") -> str:
    head = f"{'config':<16} {'method':<14} {'wall ms':>9} {'CPU ms':>9} {'vs best baseline':>17} {'peak MB':>8}"
    lines = [head, "-" * len(head)]
    last = None
    for r in rows:
        config = r["config"] if r["config"] != last else ""
        last = r["config"]
        tag = " (baseline)" if r["baseline"] else ""
        lines.append(f"{config:<16} {r['method']:<14} {r['ms']:>9.1f} {r['cpu_ms']:>9.1f} {r['ratio']:>16.2f}x {r['peak_mb']:>8.1f}{tag}")
    lines.append(f"(medians per meta-step; ratios of {clock} time to the fastest baseline's; peak MB: memory a meta-step adds)")
    return "\n".join(lines)


def build_parser():
    p = ArgumentParser(prog="benchmarks/maml_speed.py", description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fast", action="store_true", help="seconds: 4 filters, T=2, k=1, second order, 2 queries, 2 repeats")
    p.add_argument("--meta-batch", type=int, nargs="+", default=[16, 32], help="tasks per meta-step (default 16 32)")
    p.add_argument("--inner-steps", type=int, nargs="+", default=[1, 5], help="inner SGD steps (default 1 5)")
    p.add_argument("--order", choices=["second", "first"], nargs="+", default=["second", "first"])
    p.add_argument("--methods", choices=["loop", "vmap", "naive", "higher"], nargs="+", default=["loop", "vmap", "naive", "higher"])
    p.add_argument("--hidden", type=int, default=64, help="Conv-4 filters (default 64, as in the paper)")
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=15, help="queries per class (default 15)")
    p.add_argument("--size", type=int, default=28, help=f"image side (default 28, at least {MIN_SIZE})")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-memory", action="store_true", help="skip the memory probe")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="time the ratios use: wall (default) or process CPU time, steadier on a shared machine with --threads 1")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    return p


# Conv-4 halves the image four times: 16 pixels is the smallest side that leaves one.
MIN_SIZE = 16


def parse_args(argv=None):
    """The arguments, each checked (one line and exit status 2 for a bad one) before any timing."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, values in (("--meta-batch", args.meta_batch), ("--inner-steps", args.inner_steps)):
        for value in values:
            check_at_least(parser, name, value, 1)
    for name, value, minimum in (
        ("--hidden", args.hidden, 1), ("--ways", args.ways, 2), ("--shots", args.shots, 1),
        ("--queries", args.queries, 1), ("--size", args.size, MIN_SIZE), ("--warmup", args.warmup, 0),
        ("--repeats", args.repeats, 1), ("--threads", args.threads, 1),
    ):  # fmt: skip
        check_at_least(parser, name, value, minimum)
    try:
        device = torch.device(args.device)
    except (RuntimeError, ValueError):
        bad_argument(parser, "--device", args.device, "cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            bad_argument(parser, "--device", args.device, "cpu on this machine: CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            bad_argument(parser, "--device", args.device,
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1} (this machine has {torch.cuda.device_count()} GPUs)")
    elif device.type != "cpu":
        bad_argument(parser, "--device", args.device, "cpu or cuda (what this benchmark measures)")
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    if args.fast:
        args.meta_batch, args.inner_steps, args.order = [2], [1], ["second"]
        args.hidden, args.queries, args.repeats, args.warmup = 4, 2, 2, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"MAML meta-step timing | torch {torch.__version__} | {device} | {torch.get_num_threads()} threads | "
          f"Conv-4 with {args.hidden} filters, {args.ways}-way {args.shots}-shot, {args.queries} queries/class, {args.size}x{args.size} "
          f"| median of {args.repeats} after {args.warmup} warm-up", flush=True)  # fmt: skip
    if "higher" in args.methods and higher is None:
        print(f"note: skipping higher: {HIGHER_ERROR} (pip install higher)", flush=True)
    rows, notes = [], []
    for T, k, order in itertools.product(args.meta_batch, args.inner_steps, args.order):
        cfg = Config(T, k, order == "first", args.ways, args.shots, args.queries, args.size, args.hidden)
        start = time.perf_counter()
        r, n = run_config(cfg, device, args.methods, args.warmup, args.repeats, not args.no_memory, args.clock)
        rows += r
        notes += [x for x in n if x not in notes]
        print(f"  {cfg.label}: done in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    print(format_table(rows, args.clock))
    for note in notes:
        print("note:", note)
    if not [x for x in notes if not x.startswith("higher: not importable")]:  # a skipped peer is no disagreement
        print("all contestants computed the same meta-gradient (checked before timing)")
    return rows


if __name__ == "__main__":
    main()
