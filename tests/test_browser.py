"""JupyterLab in a real browser, as a learner meets it: a chapter opens, Run All runs it to the end
in fast mode without an error, and chapter 04's slider (an ``ipywidgets.interact`` panel) moves
and redraws its figure.

The test starts its own JupyterLab on 127.0.0.1 (a free port, a token, ``--no-browser``,
``--allow-root`` as root) over a temporary copy of the chapter, with fresh settings and
``MLCOURSE_FAST=1``, and drives Debian's Chromium with Playwright. Without Playwright or
/usr/bin/chromium it skips with the reason (fails with ``MLCOURSE_REQUIRE_BROWSER=1``, as in CI).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

from test_book import launch_chromium, sync_playwright_or_skip

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = "chapters/04_maml.ipynb"
STARTUP_TIMEOUT = 90  # seconds for the server to answer
RUN_ALL_TIMEOUT = 600  # seconds for the chapter, fast mode (about 10-20 s alone on two cores)

# Fresh user settings: no news or update pop-ups, and every cell kept in the page (no windowing),
# so that the test sees each cell's prompt and outputs.
SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"JupyterLab exited with status {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if "started" in json.loads(response.read()):
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer within {STARTUP_TIMEOUT} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab serving a temporary folder that holds a copy of chapter 04; yields
    ``(base_url, token, folder)`` and stops the server (its whole process group) afterwards."""
    sync_playwright_or_skip()
    home = tmp_path_factory.mktemp("lab")
    served = home / "course"
    (served / "chapters").mkdir(parents=True)
    shutil.copy2(ROOT / CHAPTER, served / CHAPTER)
    settings = home / "settings"
    for name, values in SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(values))
    port, token = _free_port(), "mlcourse-browser-test"
    env = dict(os.environ, MLCOURSE_FAST="1", OMP_NUM_THREADS="1", JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               JUPYTER_CONFIG_DIR=str(home / "config"), BROWSER="false")
    env.pop("MPLBACKEND", None)  # the test suite sets Agg; the kernel must draw inline, as for a learner
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ServerApp.port_retries=0",
           "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={served}",
           f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={home / 'workspaces'}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = home / "lab.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=served, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", proc, log)
        yield f"http://127.0.0.1:{port}", token, served
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(timeout=10)


ALL_CELLS_RAN = """() => {
    const prompts = Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputArea-prompt'));
    const indicator = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator');
    return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent))
        && (!indicator || indicator.getAttribute('data-status') === 'idle');
}"""


STARTED = """() => {
    const first = document.querySelector('.jp-CodeCell .jp-InputArea-prompt');
    return first !== null && /\\[(\\*|\\d+)\\]/.test(first.textContent);
}"""


def _menu(page, menu: str, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=menu).first.click()
    page.locator(".lm-Menu-itemLabel", has_text=item).first.click()


def test_a_chapter_runs_to_the_end_and_its_slider_redraws(lab):
    base, token, served = lab
    sync_playwright = sync_playwright_or_skip()
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        uncaught: list[str] = []
        page.on("pageerror", lambda e: uncaught.append(str(e)))
        page.goto(f"{base}/lab/tree/{CHAPTER}?token={token}", wait_until="domcontentloaded")
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=STARTUP_TIMEOUT * 1000)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=STARTUP_TIMEOUT * 1000)

        # The toolbar says "idle" before the kernel has connected; a Run All then does nothing,
        # so run again until the first prompt leaves "[ ]:" (queued "[*]:" or done "[1]:").
        for attempt in range(4):
            page.wait_for_function("() => /Python/.test((document.querySelector('.jp-KernelName') || {}).textContent || '')",
                                   timeout=STARTUP_TIMEOUT * 1000)
            _menu(page, "Run", "Run All Cells")
            try:
                page.wait_for_function(STARTED, timeout=15_000)
                break
            except Exception:  # noqa: BLE001 - playwright's TimeoutError: not started yet, click again
                assert attempt < 3, "Run All Cells never started the chapter"
        page.wait_for_function(ALL_CELLS_RAN, timeout=RUN_ALL_TIMEOUT * 1000, polling=1000)
        tracebacks = page.locator(".jp-OutputArea-output", has_text="Traceback").count()
        prompts = page.locator(".jp-CodeCell .jp-InputArea-prompt").count()

        # chapter 04's `interact`: a slider above the figure it draws
        panel = page.locator(".widget-interact").first
        panel.wait_for(timeout=60_000)
        figure, readout = panel.locator("img").first, panel.locator(".widget-readout").first
        figure.wait_for(timeout=60_000)
        before_value, before_figure = readout.inner_text().strip(), figure.get_attribute("src")
        handle = panel.locator(".noUi-handle").first
        handle.focus()
        handle.press("ArrowRight")
        handle.press("ArrowRight")  # as a learner drags it: two steps more
        page.wait_for_function(
            "([before]) => { const r = document.querySelector('.widget-interact .widget-readout');"
            " return r && r.textContent.trim() !== before; }", arg=[before_value], timeout=30_000)
        page.wait_for_function(
            "([before]) => { const i = document.querySelector('.widget-interact img');"
            " return i && i.getAttribute('src') !== before && i.naturalWidth > 0; }",
            arg=[before_figure], timeout=60_000)
        after_value = readout.inner_text().strip()

        page.keyboard.press("Control+s")  # save, to read the outputs as JupyterLab keeps them
        saved = served / CHAPTER
        deadline = time.monotonic() + 30
        nb = nbformat.read(saved, as_version=4)
        while not any(c.get("outputs") for c in nb.cells if c.cell_type == "code") and time.monotonic() < deadline:
            time.sleep(0.5)
            nb = nbformat.read(saved, as_version=4)
        browser.close()

    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code_cells for o in c.outputs if o.output_type == "error"]
    assert prompts == len(code_cells) and all(c.execution_count for c in code_cells), "not every cell ran"
    assert not errors and tracebacks == 0, [f"{e.ename}: {e.evalue}" for e in errors]
    assert int(after_value) == int(before_value) + 2, (before_value, after_value)
    assert not uncaught, uncaught
