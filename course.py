#!/usr/bin/env python3
"""Set up and run the course with one command. Uses only the Python standard library.

    python3 course.py lab      # open the course in JupyterLab (creates .venv on first use)
    python3 course.py test     # library tests + every notebook under nbval, in fast mode
    python3 course.py build    # execute every chapter headless into build/ (add --fast to shrink)
    python3 course.py book     # the executed course as one offline HTML book in build/book/ (add --fast)

On first use it creates a virtual environment in ``.venv`` beside this file and installs
the course into it (``pip install -e ".[course,test]"``). It reinstalls by itself when
``pyproject.toml`` changes. Set ``MLCOURSE_PIP_ARGS`` to pass extra arguments to pip (for
example ``--index-url https://download.pytorch.org/whl/cpu`` for a CPU-only torch).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".mlcourse-installed"
NOTEBOOK_DIRS = ["chapters", "solutions"]


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def run(cmd: list[str], **kwargs) -> None:
    print("+", " ".join(shlex.quote(str(c)) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)


def ensure_env() -> Path:
    """Create ``.venv`` and install the course into it, unless that is already done."""
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    python = venv_python()
    if python.exists() and STAMP.exists() and STAMP.read_text().strip() == wanted:
        return python
    start = time.perf_counter()
    if not python.exists():
        if sys.version_info < (3, 10):
            sys.exit(f"mlcourse needs Python 3.10 or newer; this is {sys.version.split()[0]}")
        run([sys.executable, "-m", "venv", VENV])
    extra = shlex.split(os.environ.get("MLCOURSE_PIP_ARGS", ""))
    run([python, "-m", "pip", "install", "--disable-pip-version-check", "-q", "-e", ".[course,test]", *extra], cwd=ROOT)
    STAMP.write_text(wanted + "\n")
    print(f"environment ready in {time.perf_counter() - start:.0f} s: {VENV}", flush=True)
    return python


def fast_env() -> dict[str, str]:
    env = dict(os.environ)
    env["MLCOURSE_FAST"] = "1"
    # Fast-mode runs are dominated by small operations, where two threads per process fight
    # over two cores (measured 5-17x slower on a busy machine); one thread is predictable.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def lab_command(python, args: list[str]) -> list[str]:
    """The ``jupyter lab`` command line: as root (a container, a lab machine) Jupyter refuses
    to start ("Running as root is not recommended") unless told ``--allow-root``, so we tell it,
    unless the user already said something about it."""
    cmd = [str(python), "-m", "jupyter", "lab", "chapters/00_welcome.ipynb", *args]
    if running_as_root() and not any(a.startswith(("--allow-root", "--no-allow-root")) or "allow_root" in a for a in args):
        cmd.append("--allow-root")
    return cmd


def cmd_lab(args: list[str]) -> int:
    python = ensure_env()
    os.chdir(ROOT)
    cmd = lab_command(python, args)
    print("+", " ".join(shlex.quote(c) for c in cmd), flush=True)
    return subprocess.call(cmd)


def cmd_test(args: list[str]) -> int:
    python = ensure_env()
    pytest = [
        str(python), "-m", "pytest",
        "tests", *NOTEBOOK_DIRS,
        "--nbval-lax", "--nbval-current-env", "--nbval-cell-timeout=600",
        "-p", "no:cacheprovider",
        "--durations=15",
        *args,
    ]
    print("+", " ".join(pytest), flush=True)
    return subprocess.call(pytest, cwd=ROOT, env=fast_env())


def cmd_build(args: list[str]) -> int:
    python = ensure_env()
    env = fast_env() if "--fast" in args else dict(os.environ)
    args = [a for a in args if a != "--fast"]
    return subprocess.call([str(python), "-m", "mlcourse.authoring", "execute", *(args or ["chapters"]), "--out", "build"], cwd=ROOT, env=env)


BOOK_USAGE = "python3 course.py book [--fast] [--out DIR]"


def book_arguments(args: list[str]) -> list[str]:
    """Check ``course.py book``'s arguments before anything is installed or run; return the
    arguments for ``python -m mlcourse.book``. A bad one is one line on standard error, exit 2."""
    out, fast, rest = None, False, list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--fast":
            fast = True
        elif arg == "--out" or arg.startswith("--out="):
            value = arg.partition("=")[2] if "=" in arg else (rest.pop(0) if rest else "")
            if not value:
                book_error("--out needs a folder")
            if Path(value).exists() and not Path(value).is_dir():
                book_error(f"--out {value}: must be a folder (this is a file)")
            out = value
        else:
            book_error(f"unknown argument {arg!r}: usage: {BOOK_USAGE}")
    return (["--fast"] if fast else []) + (["--out", out] if out else [])


def book_error(message: str) -> None:
    print(f"course.py book: error: {message}", file=sys.stderr)
    sys.exit(2)


def cmd_book(args: list[str]) -> int:
    """Build the course book (mlcourse.book), installing the ``book`` extra first if needed."""
    book_args = book_arguments(args)
    python = ensure_env()
    missing = subprocess.run([str(python), "-c", "import mlcourse.book as b; print(' '.join(b.missing_dependencies()))"],
                             cwd=ROOT, capture_output=True, text=True)
    if missing.returncode != 0 or missing.stdout.strip():
        extra = shlex.split(os.environ.get("MLCOURSE_PIP_ARGS", ""))
        run([python, "-m", "pip", "install", "--disable-pip-version-check", "-q", "-e", ".[course,test,book]", *extra], cwd=ROOT)
    env = fast_env() if "--fast" in book_args else dict(os.environ)
    cmd = [str(python), "-m", "mlcourse.book", *book_args]
    print("+", " ".join(shlex.quote(c) for c in cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT, env=env)


COMMANDS = {"lab": cmd_lab, "test": cmd_test, "build": cmd_build, "book": cmd_book,
            "setup": lambda a: (ensure_env(), 0)[1]}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        # one line, like every command line of the course (mlcourse.cli, which this file cannot import)
        print(f"course.py: error: unknown command {argv[0]!r}: choose one of {', '.join(COMMANDS)} "
              "(python3 course.py --help says what each does)", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
