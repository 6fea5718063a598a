"""Sphinx configuration of the course book (``python -m mlcourse.book`` builds it).

``mlcourse.book`` executes the chapters itself and lays out the source folder (index, chapters,
exercises, results); this file only says how Sphinx turns that folder into pages that read
offline: no CDN for math, widgets or fonts, no launch buttons to online services.
"""

from __future__ import annotations

from pathlib import Path

from sphinx.util.fileutil import copy_asset

from mlcourse.book import mathjax_dir

project = "mlcourse: meta-learning, hands on"
author = "the mlcourse authors"
copyright = "the mlcourse authors, MIT licence"

extensions = ["myst_nb"]  # myst-nb reads notebooks and Markdown (it brings myst-parser)
exclude_patterns = [".doctrees", "**.ipynb_checkpoints", "**.partial"]

# The chapters arrive executed (mlcourse.book runs them with nbclient and makes widgets
# static); Sphinx only renders what they hold.
nb_execution_mode = "off"
nb_merge_streams = True  # one block per cell for prints and warnings, not one per write
myst_enable_extensions = ["dollarmath", "amsmath"]  # $...$ and $$...$$ as in the notebooks
myst_dmath_double_inline = True  # $$...$$ inside a paragraph or list item, as JupyterLab shows it (chapter 05)
myst_heading_anchors = 3  # links like [..](#a-heading) inside a page resolve
suppress_warnings = ["myst.header"]  # the notebooks' headings skip levels on purpose (a ### after a #)

# Math: MathJax 3 from a local copy (see copy_mathjax below), not the CDN Sphinx uses by default.
# A relative path is taken relative to _static/.
mathjax_path = "mathjax/tex-chtml.js"

html_theme = "sphinx_book_theme"
html_title = "mlcourse: meta-learning, hands on"
html_theme_options = {
    "use_download_button": True,  # the page as .ipynb/.md: works offline
    "use_fullscreen_button": False,
    "use_repository_button": False,
    "launch_buttons": {},  # Binder, Colab, JupyterHub: online services, not for an offline book
    "show_toc_level": 2,
}
# pydata-sphinx-theme (under the book theme) logs a console error on a first visit without one
html_context = {"default_mode": "light"}
html_static_path: list[str] = []
html_css_files = ["mlcourse-book.css"]
# Search summaries are fetched page by page with fetch(), which browsers refuse for file://
# pages; without them the search page still lists every matching page, offline.
html_show_search_summary = False
html_copy_source = True
html_show_sourcelink = False

CSS = """
/* a widget made static by mlcourse.book: its controls' values, above the figure they drew */
.mlcourse-static-widget { font-family: var(--pst-font-family-monospace, monospace); font-size: 0.85em;
  padding: 0.3em 0.6em; border-left: 3px solid var(--pst-color-border, #ccc); margin: 0.3em 0; }
.mlcourse-static-widget progress { width: 12em; vertical-align: middle; }
"""


def copy_assets(app, exception) -> None:
    """After a successful build, copy MathJax's components and the book's CSS into _static."""
    if exception is not None or app.builder.format != "html":
        return
    static = Path(app.outdir) / "_static"
    source = mathjax_dir()
    if source is None:
        raise RuntimeError("MathJax is missing: pip install django-static-mathjax (the book extra)")
    copy_asset(str(source), str(static / "mathjax"))
    (static / "mlcourse-book.css").write_text(CSS, encoding="utf-8")


def setup(app):
    app.connect("build-finished", copy_assets)
    return {"parallel_read_safe": True}
