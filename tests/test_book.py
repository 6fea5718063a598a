"""The course book (mlcourse.book): widgets made static, its command line, and a built book read
in a real browser (headless Chromium driven by Playwright), offline, from file:// URLs.

The built-book tests build a small book once per session: chapters 00 (figures) and 04 (math, a
slider, progress bars) executed in fast mode, every exercise and the results page. The whole
course in the book is `python3 course.py book --fast`; nbval already runs every chapter.

Without the `book` extra, or without Playwright and /usr/bin/chromium, those tests skip with
the reason; with ``MLCOURSE_REQUIRE_BROWSER=1`` (CI sets it once it has installed them) they
fail instead, so a missing install cannot pass as a green run.

``MLCOURSE_BOOK_SITE=build/book`` checks a book already built (the whole course, after
`python3 course.py book --fast`) instead; ``MLCOURSE_BOOK_SCREENSHOTS=docs/img`` writes the
three screenshots (book-*.png) there.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from mlcourse import book

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("MLCOURSE_CHROMIUM", "/usr/bin/chromium"))
BOOK_CHAPTERS = ["00", "04"]
SCREENSHOT_LIMIT = 300_000  # bytes per committed screenshot
WIDGET_VIEW, WIDGET_STATE = book.WIDGET_VIEW, book.WIDGET_STATE


def need(condition: bool, reason: str) -> None:
    """Skip with ``reason`` unless ``condition``; fail instead where CI said the tools are installed."""
    if condition:
        return
    if os.environ.get("MLCOURSE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (MLCOURSE_REQUIRE_BROWSER=1: it was meant to be installed)")
    pytest.skip(reason)


def launch_chromium(playwright):
    """Debian's Chromium under Playwright (its driver comes in the wheel; no browser download)."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-dev-shm-usage"])


def sync_playwright_or_skip():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    need(sync_playwright is not None, 'Playwright is not installed: .venv/bin/pip install -e ".[browser]"')
    need(CHROMIUM.exists(), f"no Chromium at {CHROMIUM}: apt-get install chromium (root; .ci/run does it)")
    return sync_playwright


# --------------------------------------------------------------------------- widgets made static

def _model(name: str, **state) -> dict:
    return {"model_name": name, "model_module": "@jupyter-widgets/controls", "model_module_version": "2.0.0",
            "state": {"_model_name": name, **state}}


def _widget_notebook() -> nbformat.NotebookNode:
    """What nbclient leaves after an `interact` with one slider and a finished tqdm bar (leave=False)."""
    figure = {"output_type": "display_data", "metadata": {},
              "data": {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure size 640x480 with 1 Axes>"}}
    state = {
        "slider": _model("IntSliderModel", description="steps", value=3, min=0, max=10, layout="IPY_MODEL_shown"),
        "out": _model("OutputModel", outputs=[figure], layout="IPY_MODEL_shown"),
        "panel": _model("VBoxModel", children=["IPY_MODEL_slider", "IPY_MODEL_out"], layout="IPY_MODEL_shown"),
        "shown": _model("LayoutModel"),
        "label": _model("HTMLModel", value="training: 100%", layout="IPY_MODEL_shown"),
        "bar": _model("FloatProgressModel", value=50.0, max=50.0, layout="IPY_MODEL_shown"),
        "tqdm": _model("HBoxModel", children=["IPY_MODEL_label", "IPY_MODEL_bar"], layout="IPY_MODEL_hidden"),
        "hidden": _model("LayoutModel", visibility="hidden"),
        "failed": _model("HBoxModel", children=["IPY_MODEL_label", "IPY_MODEL_bar"], layout="IPY_MODEL_shown"),
    }

    def view(model_id: str, text: str) -> dict:
        return nbformat.v4.new_output("display_data", data={WIDGET_VIEW: {"model_id": model_id, "version_major": 2},
                                                            "text/plain": text})

    cell = nbformat.v4.new_code_cell("interact(...)")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="before\n"), view("panel", "interactive(...)"),
                    view("tqdm", "training: 0%"), view("failed", "training: 0%"), view("gone", "a widget with no state")]
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb.metadata["widgets"] = {WIDGET_STATE: {"state": state, "version_major": 2, "version_minor": 0}}
    return nb


def test_static_widgets_show_the_last_values_and_the_figure_and_drop_the_state():
    nb = book.static_widgets(_widget_notebook())
    outputs = nb.cells[0].outputs
    assert "widgets" not in nb.metadata
    assert all(WIDGET_VIEW not in o.get("data", {}) for o in outputs)
    assert outputs[0].text == "before\n"  # ordinary outputs stay as they were
    # the interact panel: its slider's value above the figure its Output area captured
    assert "steps" in outputs[1].data["text/html"] and "= 3" in outputs[1].data["text/plain"]
    assert "(from 0 to 10)" in outputs[1].data["text/plain"]
    assert outputs[2].data["image/png"] == "iVBORw0KGgo="
    # the hidden (finished) bar shows nothing; a visible one shows its label and a <progress>
    assert '<progress value="50.0" max="50.0">' in outputs[3].data["text/html"]
    assert "training: 100%" in outputs[3].data["text/plain"]
    # no saved state for that model: the widget's own text fallback
    assert outputs[4].data == {"text/plain": "a widget with no state"}
    assert len(outputs) == 5
    nbformat.validate(nb)


def test_static_widgets_survive_a_cyclic_state():
    nb = _widget_notebook()
    nb.metadata["widgets"][WIDGET_STATE]["state"]["panel"]["state"]["children"].append("IPY_MODEL_panel")
    outputs = book.static_widgets(nb).cells[0].outputs
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 1


# --------------------------------------------------------------------------- the command line

@pytest.mark.parametrize("args, named", [
    (["--chapters", "99"], "--chapters 99"),
    (["--chapters", "04", "nope"], "--chapters nope"),
    (["--timeout", "0"], "--timeout 0"),
    (["--timeout", "soon"], "--timeout"),
    (["--out", str(ROOT / "README.md")], "README.md: must be a folder"),
    (["--out", str(ROOT)], "must be a folder that does not hold the repository"),
    (["--pages"], "--pages"),
])
def test_bad_arguments_are_one_line_and_exit_2(args, named, capsys):
    with pytest.raises(SystemExit) as exit_:
        book.main(args)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert exit_.value.code == 2 and len(lines) == 1, captured.err
    assert lines[0].startswith("python -m mlcourse.book: error:") and named in lines[0]
    assert captured.out == ""  # refused before any work


def test_the_module_runs_as_a_command():
    r = subprocess.run([sys.executable, "-m", "mlcourse.book", "--chapters", "99"], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_chapters_are_named_by_number_or_name_and_kept_in_course_order():
    picked = book.select_chapters("prog", ["08_vaes.ipynb", "4", "00", "04_maml"])
    assert [p.name for p in picked] == ["00_welcome.ipynb", "04_maml.ipynb", "08_vaes.ipynb"]
    assert book.select_chapters("prog", None) == book.chapter_paths()


def test_executions_are_reused_only_while_notebook_library_and_mode_match(tmp_path, monkeypatch):
    notebook = tmp_path / "n.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
    nbformat.write(nb, notebook)
    key = book.execution_key(notebook, fast=True, library="abc")
    assert key == book.execution_key(notebook, fast=True, library="abc")
    assert key != book.execution_key(notebook, fast=False, library="abc")
    assert key != book.execution_key(notebook, fast=True, library="abd")
    monkeypatch.setenv("MLCOURSE_DATA", "omniglot")
    assert key != book.execution_key(notebook, fast=True, library="abc")
    target = tmp_path / "executed.ipynb"
    stored = nbformat.v4.new_notebook()
    stored.metadata[book.CACHE_KEY] = key
    nbformat.write(stored, target)
    monkeypatch.delenv("MLCOURSE_DATA")
    assert book.execute_chapter(notebook, target, key, timeout=60) is None  # same key: not run again


# --------------------------------------------------------------------------- a built book

@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> Path:
    """A fast-mode book of chapters 00 and 04, the exercises and the results (built once), or
    the book already built in ``MLCOURSE_BOOK_SITE`` (``build/book`` after `course.py book`)."""
    if os.environ.get("MLCOURSE_BOOK_SITE"):
        site = Path(os.environ["MLCOURSE_BOOK_SITE"]).resolve()
        assert (site / "index.html").is_file(), f"MLCOURSE_BOOK_SITE={site}: no index.html there"
        return site
    missing = book.missing_dependencies()
    need(not missing, f"the book extra is not installed ({', '.join(missing)}): {book.INSTALL_HINT}")
    out = tmp_path_factory.mktemp("book") / "site"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "mlcourse.book", "--fast", "--chapters", *BOOK_CHAPTERS, "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


def _pages(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("*.html") if not {"_static", "_sources"} & set(p.relative_to(site).parts))


def test_the_book_holds_the_chapters_exercises_results_and_search(built_book):
    names = {p.relative_to(built_book).as_posix() for p in _pages(built_book)}
    assert {"index.html", "search.html", "results.html", "chapters/00_welcome.html", "chapters/04_maml.html"} <= names
    assert {f"exercises/{p.stem}.html" for p in (ROOT / "exercises").glob("*.ipynb")} <= names
    assert ("teaching.html" in names) == (ROOT / "docs" / "teaching.md").exists()
    assert (built_book / "searchindex.js").is_file()
    assert (built_book / "_static" / "mathjax" / "tex-chtml.js").is_file()
    index = (built_book / "index.html").read_text(encoding="utf-8")
    assert index.index("00_welcome.html") < index.index("04_maml.html") < index.index("results.html")


def test_the_book_loads_nothing_from_the_network_and_has_no_widget_views(built_book):
    import re

    for page in _pages(built_book):
        text = page.read_text(encoding="utf-8")
        # scripts, styles and images only from inside the site (a link to read elsewhere is fine)
        remote = re.findall(r'<(?:script|img|link|iframe)\b[^>]*\b(?:src|href)="(?:https?:)?//[^"]*"', text)
        assert not remote, f"{page.name}: {remote[:3]}"
        assert WIDGET_VIEW not in text and "require.js" not in text, page.name
    chapter = (built_book / "chapters" / "04_maml.html").read_text(encoding="utf-8")
    assert "mlcourse-static-widget" in chapter and "steps" in chapter  # the slider, as its value


# --------------------------------------------------------------------------- read in a real browser

CHECK_PAGE = """async () => {
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
    const article = document.querySelector("article") || document.body;
    const prose = article.cloneNode(true);
    prose.querySelectorAll("pre, code, .highlight, mjx-container, script").forEach(e => e.remove());
    const text = prose.textContent;
    const images = Array.from(document.images);
    await Promise.all(images.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })));
    return {
        math: article.querySelectorAll(".math").length,
        typeset: article.querySelectorAll(".math mjx-container, mjx-container").length,
        untypeset: Array.from(article.querySelectorAll(".math")).filter(m => !m.querySelector("mjx-container")).length,
        rawTex: (text.match(/\\$\\$|\\\\\\(|\\\\\\[|\\\\begin\\{|\\$[^$\\n]*[\\\\^_][^$\\n]*\\$/g) || []).slice(0, 3),
        images: images.length,
        broken: images.filter(i => !(i.naturalWidth > 0)).map(i => i.getAttribute("src")),
    };
}"""


def _open(context, url: str):
    """Open ``url``; return the page and the list that collects its problems (console errors,
    uncaught exceptions, failed loads, any request that leaves the machine)."""
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"uncaught: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed to load {r.url}: {r.failure}"))
    page.on("request", lambda r: None if r.url.startswith(("file:", "data:", "blob:", "about:")) else problems.append(f"network request: {r.url}"))
    page.goto(url, wait_until="load")
    return page, problems


@pytest.fixture(scope="module")
def browser_context():
    sync_playwright = sync_playwright_or_skip()
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        yield context
        browser.close()


def test_every_page_loads_offline_typesets_its_math_and_shows_its_figures(built_book, browser_context):
    seen_math = seen_images = 0
    for path in _pages(built_book):
        page, problems = _open(browser_context, path.as_uri())
        found = page.evaluate(CHECK_PAGE)
        page.close()
        where = path.relative_to(built_book).as_posix()
        assert not problems, f"{where}: {problems[:5]}"
        assert found["untypeset"] == 0 and found["rawTex"] == [], f"{where}: math left as TeX: {found}"
        assert found["broken"] == [], f"{where}: images that did not load: {found['broken'][:5]}"
        seen_math += found["typeset"]
        seen_images += found["images"]
    chapter, _ = _open(browser_context, (built_book / "chapters" / "04_maml.html").as_uri())
    found = chapter.evaluate(CHECK_PAGE)
    chapter.close()
    assert found["typeset"] >= 5 and found["images"] >= 2, found  # chapter 04: equations and plots
    assert seen_math > 20 and seen_images > 10


def test_the_search_box_finds_pages_offline(built_book, browser_context):
    page, problems = _open(browser_context, (built_book / "index.html").as_uri())
    page.locator("button.search-button-field").first.click()  # the sidebar's "Search" field opens the dialog
    query = page.locator("input[name=q]:visible").first
    query.fill("prototypes")
    query.press("Enter")
    page.wait_for_url("**/search.html?q=prototypes*")
    page.wait_for_function("document.querySelector('#search-results .search-summary') !== null", timeout=30_000)
    results = page.locator("#search-results ul.search li")
    assert results.count() >= 1, page.inner_text("#search-results")
    titles = page.inner_text("#search-results")
    page.close()
    assert "Prototypical" in titles and not problems, (titles, problems)


def _small_png(png: bytes) -> bytes:
    """A screenshot as a 256-colour PNG: text and plots lose nothing visible, the file a lot."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


SCREENSHOTS = [  # file name, page, what to scroll to (None: the top)
    ("book-index.png", "index.html", None),
    ("book-chapter04.png", "chapters/04_maml.html", "mjx-container[display='true']"),
    ("book-results.png", "results.html", "img[src*='glyphs_20_drawers']"),
]


def test_screenshots_of_three_pages(built_book, browser_context, tmp_path):
    folder = Path(os.environ.get("MLCOURSE_BOOK_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    for name, where, anchor in SCREENSHOTS:
        page, problems = _open(browser_context, (built_book / where).as_uri())
        page.evaluate(CHECK_PAGE)  # math typeset, images loaded
        if anchor is not None:
            page.locator(anchor).first.evaluate("e => e.scrollIntoView({block: 'center'})")
            page.wait_for_timeout(300)
        png = _small_png(page.screenshot())
        page.close()
        assert not problems, problems
        assert 10_000 < len(png) < SCREENSHOT_LIMIT, (name, len(png))
        (folder / name).write_bytes(png)

