"""The course as a book: every chapter executed, the exercises and the results, one static site.

``python -m mlcourse.book`` (or ``python3 course.py book``) runs every chapter top to bottom with
nbclient, a per-cell time limit and the current Python's kernel, then builds one HTML site with
Sphinx and myst-nb (configuration in ``book/conf.py``) into ``build/book/``: the chapters with
their outputs, in order; the exercises as a learner gets them (not executed: their cells raise
``NotImplementedError`` until the learner writes the code, so executing them would only show
tracebacks); the measured results (``docs/results.md`` and its figures); the teaching notes
(``docs/teaching.md``) when they exist; Sphinx's search page.

The site reads offline, from ``file://`` as well as from a web server:

* math is typeset by a local copy of MathJax 3 (from the ``django-static-mathjax`` wheel, a
  plain copy of MathJax's own distribution; no Django is needed or imported), copied into
  ``_static/mathjax`` by ``book/conf.py``; the default would load MathJax from a CDN;
* figures are files inside the site (myst-nb writes every image output to ``_images``);
* widgets, which need a running kernel (and, in a static page, a widget manager loaded from a
  CDN), are replaced by what they showed when the chapter ran: ``interact`` panels by their
  controls' values and the figure their output area held, progress bars by their last text.
  See :func:`static_widgets`.

Executed chapters are kept beside the site (``build/book-executed/``) with a key made of the
notebook, the library's source and the mode; a rebuild re-executes only the chapters whose key
changed, so an interrupted full (default-mode) build resumes where it stopped.

    python -m mlcourse.book --fast                  # fast mode (MLCOURSE_FAST=1): minutes
    python -m mlcourse.book                         # default mode: real training, hours of CPU
    python -m mlcourse.book --fast --chapters 00 04 --out /tmp/book   # a subset (the tests)
"""

from __future__ import annotations

import hashlib
import html
import importlib.util
import os
import re
import shutil
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
BOOK_CONFIG_DIR = ROOT / "book"  # conf.py lives there, readable on its own
DEFAULT_OUT = ROOT / "build" / "book"
FAST_CELL_TIMEOUT = 600  # seconds; the same limit as the test suite's nbval runs
FULL_CELL_TIMEOUT = 4 * 3600  # a full chapter trains for real; one cell may train for an hour or more

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
CACHE_KEY = "mlcourse_book"  # notebook metadata of an executed chapter: what it was executed from

# The Python modules the build imports; pip names in pyproject.toml's `book` extra.
BOOK_MODULES = {"sphinx": "sphinx", "myst_nb": "myst-nb", "sphinx_book_theme": "sphinx-book-theme",
                "mathjax": "django-static-mathjax"}
INSTALL_HINT = '.venv/bin/pip install -e ".[book]" (python3 course.py book does it by itself)'


# --------------------------------------------------------------------------- dependencies

def mathjax_dir() -> Path | None:
    """The folder of MathJax 3's browser components (``tex-chtml.js`` and the fonts and
    extensions it loads on demand) inside the ``django-static-mathjax`` wheel, or None when
    that wheel is not installed. Found without importing anything from it."""
    spec = importlib.util.find_spec("mathjax")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "static" / "mathjax" / "es5"
        if (candidate / "tex-chtml.js").is_file():
            return candidate
    return None


def missing_dependencies() -> list[str]:
    """The pip names of the ``book`` extra's packages that this Python cannot import."""
    missing = [pip for module, pip in BOOK_MODULES.items() if importlib.util.find_spec(module) is None]
    if "django-static-mathjax" not in missing and mathjax_dir() is None:
        missing.append("django-static-mathjax")  # a different package named `mathjax` is installed
    return missing


# --------------------------------------------------------------------------- widgets, made static

def static_widgets(nb):
    """Replace every widget output of ``nb`` by static outputs that show what it showed; drop
    the widget state. Returns ``nb`` (changed in place).

    A widget output is only a pointer (a model id) into the widget state that nbclient saved in
    the notebook's metadata; a page shows it only with a widget manager, which Sphinx would load
    from a CDN. Offline the reader would see nothing, or the ``text/plain`` fallback that was
    current when the widget was *created* (a tqdm bar at 0%). The state holds the *last* values,
    so each widget becomes: an HTML line for its controls and labels (a slider as its
    description and value, a progress bar as ``<progress>``, an HTML label as itself), followed
    by the outputs its ``Output`` areas captured (the figure an ``interact`` drew). A widget
    whose layout hides it (``visibility: hidden``, ``display: none``) shows nothing, as in
    JupyterLab: the course's progress bars hide themselves when they finish.
    """
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = _static_outputs(cell.outputs, state)
    nb.metadata.pop("widgets", None)
    return nb


def _static_outputs(outputs, state: dict) -> list:
    result = []
    for output in outputs:
        view = output.get("data", {}).get(WIDGET_VIEW) if output.get("output_type") in ("display_data", "execute_result") else None
        if view is None:
            result.append(output)
            continue
        model_id = view.get("model_id", "")
        if model_id in state:
            result += _widget_outputs(model_id, state)
        elif output["data"].get("text/plain"):  # no saved state: the widget's own text fallback
            result.append(_display({"text/plain": output["data"]["text/plain"]}))
    return result


def _widget_outputs(model_id: str, state: dict) -> list:
    """Static outputs for one widget: consecutive HTML pieces merged into one line each."""
    outputs, pieces = [], []
    for kind, item in _walk(model_id, state, set()):
        if kind == "html":
            pieces.append(item)
            continue
        if pieces:
            outputs.append(_html_output(pieces))
            pieces = []
        outputs.append(item)
    if pieces:
        outputs.append(_html_output(pieces))
    return outputs


def _walk(model_id: str, state: dict, seen: set):
    """Yield ``("html", str)`` for what a widget displays and ``("output", output)`` for what
    its Output areas hold, in display order. ``seen`` guards against a cyclic state."""
    model = state.get(model_id)
    if model is None or model_id in seen:
        return
    seen = seen | {model_id}
    name, values = model.get("model_name", ""), model.get("state", {})
    if _hidden(values, state):  # as a finished tqdm bar (leave=False) hides itself: nothing on screen
        return
    if name == "OutputModel":
        for output in _static_outputs([nbformat.from_dict(o) for o in values.get("outputs", [])], state):
            yield "output", output
        return
    if "children" in values:  # VBox, HBox, Box, the interact container, Tab, Accordion
        for child in values["children"]:
            yield from _walk(str(child).removeprefix("IPY_MODEL_"), state, seen)
        return
    label = html.escape(str(values.get("description") or ""))
    if name in ("HTMLModel", "HTMLMathModel"):
        text = f"{label} {values.get('value', '')}" if label else str(values.get("value", ""))
    elif name in ("LabelModel", "TextModel", "TextareaModel"):
        text = html.escape(str(values.get("value", "")))
    elif name in ("FloatProgressModel", "IntProgressModel"):
        text = f'{label} <progress value="{values.get("value", 0)}" max="{values.get("max", 100)}"></progress>'
    elif "value" in values:  # sliders, dropdowns, checkboxes, ...
        span = f" (from {values['min']} to {values['max']})" if "min" in values and "max" in values else ""
        text = f"<b>{label or 'value'}</b> = {html.escape(str(values['value']))}{span}"
    else:  # layouts, styles: nothing to show
        return
    yield "html", text.strip()


def _hidden(values: dict, state: dict) -> bool:
    layout = state.get(str(values.get("layout", "")).removeprefix("IPY_MODEL_"), {}).get("state", {})
    return layout.get("visibility") == "hidden" or layout.get("display") == "none"


def _html_output(pieces: list[str]):
    line = " ".join(p for p in pieces if p)
    plain = html.unescape(re.sub(r"<[^>]+>", "", line))
    return _display({"text/html": f'<div class="mlcourse-static-widget">{line}</div>', "text/plain": plain})


def _display(data: dict):
    return nbformat.v4.new_output("display_data", data=data)


# --------------------------------------------------------------------------- execution

def library_digest() -> str:
    """A digest of the library's source: the outputs of a chapter depend on it as much as on
    the notebook, so an executed chapter is reused only while both are unchanged."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "mlcourse").rglob("*.py")):
        if path == Path(__file__).resolve():  # this file builds the book; no chapter imports it
            continue
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


KEY_ENVIRONMENT = ("MLCOURSE_DATA", "MLCOURSE_DEVICE", "MLCOURSE_OMNIGLOT")  # they change what a chapter computes


def execution_key(notebook: Path, fast: bool, library: str) -> dict:
    """What an executed chapter was executed from: reused only while all of it is the same."""
    return {"notebook_sha256": hashlib.sha256(notebook.read_bytes()).hexdigest(), "library_sha256": library,
            "fast": fast, "environment": {name: os.environ.get(name, "") for name in KEY_ENVIRONMENT}}


def execute_chapter(source: Path, target: Path, key: dict, timeout: int) -> float | None:
    """Execute ``source`` into ``target`` unless ``target`` already holds an execution with the
    same key; return the seconds it took, None when reused. The copy keeps its widget state
    (:func:`static_widgets` is applied when the page is laid out, so changing it re-executes nothing)."""
    if target.exists():
        try:
            if nbformat.read(target, as_version=4).metadata.get(CACHE_KEY) == key:
                return None
        except Exception:  # noqa: BLE001 - an unreadable leftover of an interrupted run: execute again
            pass
    from .authoring import patient_client_class

    NotebookClient = patient_client_class()  # waits for a widget cell's reply in slices (nbclient#312)

    nb = nbformat.read(source, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(source.parent)}}).execute()
    seconds = time.perf_counter() - start
    nb.metadata[CACHE_KEY] = key
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    nbformat.write(nb, partial)
    partial.replace(target)  # never leave a half-written notebook that a later build would read
    return seconds


# --------------------------------------------------------------------------- the book's pages

def chapter_paths(root: Path = ROOT) -> list[Path]:
    return sorted((root / "chapters").glob("*.ipynb"))


def select_chapters(parser, names: list[str] | None, root: Path = ROOT) -> list[Path]:
    """The chapters that ``names`` (``04``, ``04_maml`` or ``04_maml.ipynb``) name, in course
    order; all of them when ``names`` is None. An unknown name is refused with one line."""
    from .cli import bad_argument

    chapters = chapter_paths(root)
    if names is None:
        return chapters
    chosen = set()
    for name in names:
        matches = [p for p in chapters if _names_chapter(name, p)]
        if not matches:
            valid = ", ".join(p.stem.split("_")[0] for p in chapters)
            bad_argument(parser, "--chapters", name, f"a chapter number or name: one of {valid}")
        chosen.update(matches)
    return [p for p in chapters if p in chosen]


def _names_chapter(name: str, chapter: Path) -> bool:
    """``04``, ``4``, ``04_maml`` and ``04_maml.ipynb`` all name chapters/04_maml.ipynb."""
    stem, number = name.removesuffix(".ipynb"), chapter.stem.split("_")[0]
    return stem in (chapter.stem, number) or (stem.isdigit() and number.isdigit() and int(stem) == int(number))


def write_index(source_dir: Path, chapters: list[Path], exercises: list[Path], pages: list[str], fast: bool) -> None:
    """The front page: what the book holds and how it was made, then one table of contents per part."""
    mode = ("fast mode (`MLCOURSE_FAST=1`): every training run shrunk to a smoke test; the numbers are "
            "not results (those are on the results page)") if fast else "default mode: every chapter trained for real"
    lines = [
        "# mlcourse: meta-learning, hands on",
        "",
        "A Jupyter-first course on meta-learning for few-shot image classification and image generation.",
        f"This book holds the chapters as they ran, {mode}, with their outputs; the exercises as a learner",
        "gets them (not executed: their code cells wait for your code); and the measured results.",
        "Interactive widgets are shown as what they displayed when the chapter ran; open the chapter",
        "in JupyterLab (`python3 course.py lab`) to move them.",
        "",
    ]
    parts = [("Chapters", [f"chapters/{p.stem}" for p in chapters]),
             ("Exercises", [f"exercises/{p.stem}" for p in exercises]),
             ("Results and teaching", pages)]
    for caption, entries in parts:
        if entries:
            lines += ["```{toctree}", f":caption: {caption}", ":maxdepth: 1", "", *entries, "```", ""]
    (source_dir / "index.md").write_text("\n".join(lines), encoding="utf-8")


def stage_pages(source_dir: Path, root: Path = ROOT) -> list[str]:
    """Copy the exercises, ``docs/results.md``, ``docs/teaching.md`` (when there) and the
    figures they show into the book's source; return the Markdown pages' names."""
    exercises_dir = source_dir / "exercises"
    shutil.rmtree(exercises_dir, ignore_errors=True)
    exercises_dir.mkdir(parents=True)
    for path in sorted((root / "exercises").glob("*.ipynb")):
        shutil.copy2(path, exercises_dir / path.name)
    pages = []
    for name in ("results", "teaching"):
        page = root / "docs" / f"{name}.md"
        (source_dir / page.name).unlink(missing_ok=True)
        if page.exists():
            shutil.copy2(page, source_dir / page.name)
            pages.append(name)
    images = source_dir / "img"
    shutil.rmtree(images, ignore_errors=True)
    if (root / "docs" / "img").is_dir():  # the pages link figures as img/NAME.png
        shutil.copytree(root / "docs" / "img", images)
    return pages


def run_sphinx(source_dir: Path, out: Path, quiet: bool = True) -> int:
    """Build the HTML site from ``source_dir`` into ``out`` with ``book/conf.py``."""
    from sphinx.cmd.build import build_main

    args = ["-b", "html", "-c", str(BOOK_CONFIG_DIR), "-d", str(source_dir / ".doctrees"), "--keep-going",
            str(source_dir), str(out)]
    return build_main((["-q"] if quiet else []) + args)


# --------------------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    from .cli import ArgumentParser, bad_argument, check_at_least, fail

    parser = ArgumentParser(prog="python -m mlcourse.book", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="execute in fast mode (MLCOURSE_FAST=1, one thread)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the site (default: build/book)")
    parser.add_argument("--chapters", nargs="+", metavar="CHAPTER", default=None,
                        help="only these chapters (numbers like 04 or names); default: all")
    parser.add_argument("--timeout", type=int, default=None,
                        help=f"seconds one cell may run (default {FAST_CELL_TIMEOUT} in fast mode, {FULL_CELL_TIMEOUT} otherwise)")
    parser.add_argument("--verbose", action="store_true", help="show Sphinx's progress, not only its warnings")
    args = parser.parse_args(argv)

    check_at_least(parser, "--timeout", args.timeout, 1)
    chapters = select_chapters(parser, args.chapters)
    out = args.out.resolve()
    if out.exists() and not out.is_dir():
        bad_argument(parser, "--out", args.out, "a folder (this is a file)")
    if out == ROOT or ROOT.is_relative_to(out):
        bad_argument(parser, "--out", args.out, "a folder that does not hold the repository (the site and its build folders are written there)")
    missing = missing_dependencies()
    if missing:
        fail(parser.prog, f"the book needs {', '.join(missing)}: {INSTALL_HINT}")

    if args.fast:  # the kernels nbclient starts inherit this environment
        os.environ["MLCOURSE_FAST"] = "1"
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    # Figures reach the page only through the inline backend; a MPLBACKEND=Agg in the caller's
    # environment (a headless server, the test suite) would leave every chapter without its plots.
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    from .config import fast_mode

    fast = fast_mode()
    timeout = args.timeout or (FAST_CELL_TIMEOUT if fast else FULL_CELL_TIMEOUT)
    executed_dir = out.parent / f"{out.name}-executed"  # kept: a rebuild reuses what still matches
    source_dir = out.parent / f"{out.name}-source"  # what Sphinx reads: laid anew every build
    for part in ("chapters", "exercises"):
        shutil.rmtree(source_dir / part, ignore_errors=True)
    (source_dir / "chapters").mkdir(parents=True)

    start = time.perf_counter()
    library = library_digest()
    print(f"executing {len(chapters)} chapters ({'fast' if fast else 'default'} mode, at most {timeout} s a cell)", flush=True)
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    for path in chapters:
        try:
            seconds = execute_chapter(path, executed_dir / path.name, execution_key(path, fast, library), timeout)
        except (CellExecutionError, CellTimeoutError) as error:
            print(str(error), file=sys.stderr)
            print(f"{parser.prog}: {path.relative_to(ROOT)} failed (above); nothing was built", file=sys.stderr)
            return 1
        print(f"{'reused' if seconds is None else f'{seconds:6.1f} s'}  {path.relative_to(ROOT)}", flush=True)
        page = static_widgets(nbformat.read(executed_dir / path.name, as_version=4))
        page.metadata.pop(CACHE_KEY, None)
        nbformat.write(page, source_dir / "chapters" / path.name)
    executed = time.perf_counter() - start

    pages = stage_pages(source_dir)
    exercises = sorted((source_dir / "exercises").glob("*.ipynb"))
    write_index(source_dir, chapters, exercises, pages, fast)
    status = run_sphinx(source_dir, out, quiet=not args.verbose)
    total = time.perf_counter() - start
    if status != 0:
        print(f"{parser.prog}: Sphinx failed (exit status {status})", file=sys.stderr)
        return 1
    print(f"book built in {total:.0f} s ({executed:.0f} s executing chapters): {out / 'index.html'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
