"""course.py, the one-command entry point: its errors, and `lab` starting a real JupyterLab."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COURSE = ROOT / "course.py"
STARTUP_TIMEOUT = 60.0  # seconds for JupyterLab to say it is serving


def run_course(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(COURSE), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_unknown_command_is_one_line_naming_it():
    r = run_course("lba")
    assert r.returncode == 2
    err = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(err) == 1, r.stderr
    assert "'lba'" in err[0] and "lab" in err[0] and "Traceback" not in r.stderr
    assert r.stdout == ""  # not the whole docstring


def test_no_command_prints_the_help_and_help_exits_0():
    bare, helped = run_course(), run_course("--help")
    assert bare.returncode == 2 and "python3 course.py lab" in bare.stdout
    assert helped.returncode == 0 and helped.stdout == bare.stdout


def _venv_is_current() -> bool:
    """What course.ensure_env checks: .venv exists and was installed from this pyproject.toml.
    Otherwise `course.py lab` would (re)install first, which a test must not do."""
    sys.path.insert(0, str(ROOT))
    try:
        import course
    finally:
        sys.path.remove(str(ROOT))
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    return course.venv_python().exists() and course.STAMP.exists() and course.STAMP.read_text().strip() == wanted


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str, deadline: float):
    """GET ``url`` as JSON, retrying refused connections until ``deadline`` (the server may print
    its address a moment before it accepts connections)."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.URLError as error:
            if not isinstance(error.reason, ConnectionRefusedError) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to course.py and the JupyterLab it started (one process group), then SIGKILL."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group (jupyter after course.py exited)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


@pytest.mark.skipif(os.name != "posix", reason="process groups and geteuid are POSIX")
def test_lab_starts_a_server_also_as_root(tmp_path):
    if not _venv_is_current():
        pytest.skip(".venv is missing or out of date: `course.py lab` would install before starting")
    port, token = _free_port(), "mlcourse-test-token"
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), BROWSER="false")
    proc = subprocess.Popen(
        [sys.executable, str(COURSE), "lab", "--no-browser", f"--port={port}", "--ServerApp.port_retries=0",
         f"--ServerApp.token={token}", "--ServerApp.ip=127.0.0.1"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout] and None, daemon=True).start()
    seen: list[str] = []
    serving = None
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while serving is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                if proc.poll() is not None and lines.empty():
                    break  # exited without serving: the output says why
                continue
            seen.append(line)
            # "Jupyter Server ... is running at:", then the address on the next line
            if re.search(rf"http://(127\.0\.0\.1|localhost):{port}/", line):
                serving = line
        if serving is not None:  # and it answers, with our token
            status = _get_json(f"http://127.0.0.1:{port}/api/status?token={token}", deadline)
    finally:
        _stop(proc)
    output = "".join(seen)
    assert serving is not None, f"JupyterLab did not start within {STARTUP_TIMEOUT:.0f} s:\n{output[-3000:]}"
    assert "is running at" in output and "started" in status
    assert "Running as root is not recommended" not in output
    assert "pip install" not in output and "environment ready" not in output  # no reinstall
    command = next(line for line in seen if line.startswith("+ "))  # course.py shows what it runs
    assert ("--allow-root" in command) == (os.geteuid() == 0), command
    assert "--no-browser" in command


def test_lab_adds_allow_root_only_as_root_and_only_once(monkeypatch):
    sys.path.insert(0, str(ROOT))
    try:
        import course
    finally:
        sys.path.remove(str(ROOT))
    monkeypatch.setattr(course, "running_as_root", lambda: True)
    assert course.lab_command("py", ["--no-browser"])[-1] == "--allow-root"
    assert course.lab_command("py", ["--allow-root"]).count("--allow-root") == 1
    assert "--allow-root" not in course.lab_command("py", ["--ServerApp.allow_root=False"])
    monkeypatch.setattr(course, "running_as_root", lambda: False)
    assert "--allow-root" not in course.lab_command("py", ["--no-browser"])


@pytest.mark.parametrize("args, named", [
    (["--fats"], "'--fats'"),
    (["--out"], "--out"),
    (["--out", "README.md"], "--out README.md"),
    (["--fast", "chapters"], "'chapters'"),
])
def test_book_refuses_a_bad_argument_in_one_line_before_installing_anything(args, named):
    r = run_course("book", *args)
    err = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(err) == 1, r.stderr
    assert err[0].startswith("course.py book: error:") and named in err[0] and "Traceback" not in r.stderr
    assert r.stdout == ""  # no "+ pip install", no build


def test_book_passes_its_arguments_on_to_mlcourse_book():
    sys.path.insert(0, str(ROOT))
    try:
        import course
    finally:
        sys.path.remove(str(ROOT))
    assert course.book_arguments([]) == []
    assert course.book_arguments(["--out=/tmp/b", "--fast"]) == ["--fast", "--out", "/tmp/b"]
    assert course.book_arguments(["--fast", "--out", "site"]) == ["--fast", "--out", "site"]
    assert "python3 course.py book" in run_course("--help").stdout
