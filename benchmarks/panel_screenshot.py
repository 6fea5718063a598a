"""Screenshot of chapter 12b's generator panel after an upload of real handwriting.

What it does, as a learner would:

1. writes the files to upload into a temporary folder (the browser needs files to pick):
   the first drawings of one Omniglot test-alphabet character (original 105 x 105 scans, read
   from ../shared's zip) and one more drawing of it made photo-like (grey paper, uneven
   light, a larger canvas, blue ink, stored sideways with an EXIF tag);
2. starts JupyterLab on 127.0.0.1 over a temporary copy of chapters/12b_personal_generator.ipynb
   (fast mode, ``MLCOURSE_PANEL_CHECKPOINT`` pointing at the generator to load), opens it in
   Debian's headless Chromium with Playwright and runs all cells;
3. in the chapter's panel: picks the files in the upload button, waits for the prepared
   drawings, types the adaptation steps, clicks *Adapt and draw*, waits for the samples;
4. saves a screenshot of the panel (``--out``, checked to be under 2 MiB) and a JSON record
   of what it did (``--record``: files, generator, steps, seconds, hardware, load).

    python benchmarks/panel_screenshot.py --checkpoint runs/panel/reptile-gan-omniglot.pt

The generator comes from ``python -m mlcourse.genbench reptile-gan --data omniglot --threads 1
--checkpoint runs/panel/reptile-gan-omniglot.pt``. Needs Playwright and /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlcourse.metagen import personal  # noqa: E402

CHAPTER = "chapters/12b_personal_generator.ipynb"
CHROMIUM = Path(os.environ.get("MLCOURSE_CHROMIUM", "/usr/bin/chromium"))
SETTINGS = {  # no news pop-ups, every cell kept in the page
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}
ALL_CELLS_RAN = """() => {
    const prompts = Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputArea-prompt'));
    const indicator = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator');
    return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent))
        && (!indicator || indicator.getAttribute('data-status') === 'idle');
}"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=str(ROOT / "runs" / "panel" / "reptile-gan-omniglot.pt"))
    p.add_argument("--character", default="images_background_small2/Sanskrit/character05/",
                   help="zip folder of the character whose drawings are uploaded (a test alphabet)")
    p.add_argument("--scans", type=int, default=4, help="original scans uploaded (one more drawing goes in photo-like)")
    p.add_argument("--steps", type=int, default=300, help="adaptation steps typed into the panel")
    p.add_argument("--out", default=str(ROOT / "docs" / "img" / "panel-upload.png"))
    p.add_argument("--record", default=str(ROOT / "docs" / "runs" / "panel" / "screenshot.json"))
    p.add_argument("--timeout", type=int, default=900, help="seconds for the chapter to run and for the adaptation")
    return p.parse_args(argv)


def upload_files(folder: Path, character: str, scans: int) -> list[Path]:
    drawings = personal.omniglot_examples(character, n=scans + 1)
    if len(drawings) < scans + 1:
        sys.exit(f"panel_screenshot: found {len(drawings)} drawings under {character!r} in the Omniglot zip "
                 "(../shared/data/omniglot); need {scans + 1}")  # fmt: skip
    paths = []
    for name, data in drawings[:scans]:
        paths.append(folder / name)
        paths[-1].write_bytes(data)
    name, data = drawings[scans]
    paths.append(folder / f"photo-of-{Path(name).stem}.jpg")
    paths[-1].write_bytes(personal.photo_like(data, seed=7, exif_rotate=True))
    return paths


def start_lab(home: Path, env: dict) -> tuple[subprocess.Popen, str, str]:
    served = home / "course"
    (served / "chapters").mkdir(parents=True)
    shutil.copy2(ROOT / CHAPTER, served / CHAPTER)
    for name, values in SETTINGS.items():
        (home / "settings" / name).parent.mkdir(parents=True, exist_ok=True)
        (home / "settings" / name).write_text(json.dumps(values))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "mlcourse-panel-screenshot"
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ServerApp.port_retries=0",
           "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={served}",
           f"--LabApp.user_settings_dir={home / 'settings'}", f"--LabApp.workspaces_dir={home / 'workspaces'}"]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(home / "lab.log", "w")
    proc = subprocess.Popen(cmd, cwd=served, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"panel_screenshot: JupyterLab exited:\n{(home / 'lab.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=5):
                return proc, f"http://127.0.0.1:{port}", token
        except OSError:
            time.sleep(0.5)
    os.killpg(proc.pid, 15)
    sys.exit("panel_screenshot: JupyterLab did not answer within 120 s")


def main(argv=None) -> int:
    args = parse_args(argv)
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        sys.exit(f"panel_screenshot: no Chromium at {CHROMIUM} (apt-get install chromium)")
    checkpoint = Path(args.checkpoint).resolve()
    if not checkpoint.exists():
        sys.exit(f"panel_screenshot: no generator at {checkpoint}; make it with python -m mlcourse.genbench reptile-gan "
                 f"--data omniglot --threads 1 --checkpoint {args.checkpoint}")  # fmt: skip
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    home = Path(tempfile.mkdtemp(prefix="panel-screenshot-"))
    try:
        return _run(args, checkpoint, state, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _run(args, checkpoint: Path, state: dict, home: Path) -> int:
    from playwright.sync_api import sync_playwright

    files = upload_files(home, args.character, args.scans)
    env = dict(os.environ, MLCOURSE_FAST="1", OMP_NUM_THREADS="1", MLCOURSE_PANEL_CHECKPOINT=str(checkpoint),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"), JUPYTER_CONFIG_DIR=str(home / "config"), BROWSER="false")  # fmt: skip
    env.pop("MPLBACKEND", None)
    proc, base, token = start_lab(home, env)
    started = time.perf_counter()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-dev-shm-usage"])
            page = browser.new_page(viewport={"width": 1300, "height": 2000})  # tall: the whole panel in view
            page.goto(f"{base}/lab/tree/{CHAPTER}?token={token}", wait_until="domcontentloaded")
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
            page.wait_for_function("() => /Python/.test((document.querySelector('.jp-KernelName') || {}).textContent || '')",
                                   timeout=120_000)  # fmt: skip
            for attempt in range(4):  # the toolbar says idle before the kernel is connected: click until it starts
                page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
                page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
                try:
                    page.wait_for_function("() => /\\[(\\*|\\d+)\\]/.test((document.querySelector('.jp-CodeCell "
                                           ".jp-InputArea-prompt') || {}).textContent || '')", timeout=15_000)  # fmt: skip
                    break
                except Exception:  # noqa: BLE001 - playwright's TimeoutError: not started yet
                    if attempt == 3:
                        sys.exit("panel_screenshot: Run All Cells never started the chapter")
            page.wait_for_function(ALL_CELLS_RAN, timeout=args.timeout * 1000, polling=1000)
            chapter_seconds = time.perf_counter() - started
            errors = page.locator(".jp-OutputArea-output", has_text="Traceback").count()
            if errors:
                sys.exit(f"panel_screenshot: the chapter printed {errors} traceback(s)")

            panel = page.locator(".mlcourse-generator-panel").first
            panel.scroll_into_view_if_needed()
            with page.expect_file_chooser(timeout=60_000) as chooser:  # the button opens the file dialog
                panel.locator(".widget-upload").first.click()
            chooser.value.set_files([str(f) for f in files])
            page.wait_for_function(f"() => document.querySelector('.mlcourse-generator-panel').textContent"
                                   f".includes('{len(files)} drawings from the upload prepared')", timeout=120_000)  # fmt: skip
            steps_box = panel.locator(".widget-inline-hbox", has_text="adaptation steps").locator("input").first
            steps_box.fill(str(args.steps))
            steps_box.press("Tab")  # the value is sent on change
            time.sleep(1.0)
            adapt_start = time.perf_counter()
            panel.locator("button", has_text="Adapt and draw").click()
            page.wait_for_function(f"() => document.querySelector('.mlcourse-generator-panel').textContent"
                                   f".includes('new drawings after {args.steps} adaptation steps')",
                                   timeout=args.timeout * 1000, polling=500)  # fmt: skip
            adapt_wall = time.perf_counter() - adapt_start
            status = re.search(r"\d+ new drawings after \d+ adaptation steps in [\d.]+ s", panel.inner_text()).group(0)
            time.sleep(1.0)  # the images arrive with the status; let them paint
            panel.evaluate("element => element.scrollIntoView({block: 'center'})")  # clear of the toolbar
            time.sleep(0.5)
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            panel.screenshot(path=str(out))
            browser.close()
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
    size = out.stat().st_size
    if size > 2 * 2**20:
        sys.exit(f"panel_screenshot: {out} is {size / 2**20:.1f} MiB, over 2 MiB")
    match = re.search(r"in ([\d.]+) s", status)
    record = {
        "what": "chapter 12b's generator panel in JupyterLab (headless Chromium) after an upload of real handwriting",
        "command": "python benchmarks/panel_screenshot.py " + " ".join(sys.argv[1:]),
        "files": [f.name for f in files],
        "character": args.character,
        "generator": f"{state.get('class')} from {checkpoint.name}",
        "generator_made_by": "python -m mlcourse.genbench reptile-gan --data omniglot --threads 1 --checkpoint "
                             f"runs/panel/{checkpoint.name} (its default 900 s budget, one thread)",
        "generator_config": state.get("config"),
        "meta_train_steps": state.get("meta_train_steps"),
        "meta_train_seconds": round(state.get("meta_train_seconds", 0.0), 1),
        "adapt_steps": args.steps,
        "adapt_seconds": float(match.group(1)) if match else None,
        "adapt_wall_seconds_in_browser": round(adapt_wall, 1),
        "panel_status": status,
        "chapter_run_all_seconds": round(chapter_seconds, 1),
        "mode": "fast (MLCOURSE_FAST=1) for the chapter; the panel's steps typed in",
        "threads": 1,
        "hardware": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} (no GPU)",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "screenshot": str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out),
        "screenshot_bytes": size,
    }
    Path(args.record).parent.mkdir(parents=True, exist_ok=True)
    Path(args.record).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
