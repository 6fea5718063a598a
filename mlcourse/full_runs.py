"""What a chapter's full run printed and drew, kept beside the chapter for every reader.

A learner runs a chapter in fast mode (a minute) or in full mode (tens of minutes to an hour on
a laptop CPU). To show what the full run gives without the wait, the course runs each chapter
in full mode once, with a committed command, and keeps the outputs of its experiments:

    python benchmarks/chapter_times.py chapters/07_gans.ipynb --keep runs/fulltime
    python -m mlcourse.full_runs harvest runs/fulltime/07_gans.ipynb dcgan-samples=3c53d32a ...

``harvest`` copies the text and the pictures of the named cells (a label for each cell id of
the executed notebook) into ``docs/full-runs/<chapter>.json`` and ``docs/full-runs/<chapter>/``,
with the run's provenance from ``docs/runs/chapter-times/<chapter>-full.json`` (hardware,
threads, load average, wall time, commit, date). In the chapter, a cell under the experiment
calls :func:`show` with the label:

    from mlcourse import full_runs
    full_runs.show("07_gans", "dcgan-samples")

``python -m mlcourse.full_runs list`` prints every kept output with its provenance.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path

from .config import repo_root

__all__ = ["FULL_RUNS", "TIMES", "load", "timing", "chapter_times", "print_chapter_times", "describe_run", "show", "harvest", "chapter_time_sentence", "annotate", "time_paragraph"]

FULL_RUNS = repo_root() / "docs" / "full-runs"
TIMES = repo_root() / "docs" / "runs" / "chapter-times"
PROGRESS = re.compile(r"\d+%\|.*\|")  # a progress bar's line
TEXT_LIMIT = 4000  # characters of a cell's printed text kept (the start and the end)


def timing(chapter: str, mode: str = "full") -> dict:
    """The JSON of ``benchmarks/chapter_times.py`` for ``chapter`` (a notebook's stem)."""
    path = TIMES / f"{chapter}-{mode}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no {mode}-mode timing for chapter {chapter!r}: {path} is missing "
                                f"(python benchmarks/chapter_times.py chapters/{chapter}.ipynb --mode {mode} makes it)")
    return json.loads(path.read_text())


def _minutes(seconds: float) -> str:
    minutes, sec = divmod(int(round(seconds)), 60)
    return f"{minutes} min {sec:02d} s" if minutes else f"{sec} s"


def describe_run(record: dict) -> str:
    """One sentence: the wall time, CPU time, threads, load, hardware, commit and date of a timed run."""
    load = record.get("load_average") or {}
    cpu = record.get("cpu_seconds")
    gpu = "GPU" if record.get("gpu") else "no GPU"
    state = "" if record.get("complete") else " (INCOMPLETE: the run stopped early)"
    return (f"{record['mode']} mode, {_minutes(record['wall_seconds'])} wall"
            + (f", {cpu:.0f} CPU s" if cpu is not None else "")
            + f", {record['threads']} torch thread(s), load average {load.get('mean')} (range {load.get('min')}–{load.get('max')}) "
            f"on {record['hardware']}, {gpu}; commit {record['commit']}, {record['started'][:10]}{state}")


def chapter_time_sentence(chapter: str) -> str:
    """What a chapter states about its full-mode time (the test compares the chapter's text with it)."""
    return f"{_minutes(timing(chapter)['wall_seconds'])}"


def chapter_times(mode: str = "full") -> list[dict]:
    """Every timed chapter: ``chapter``, ``wall_seconds``, ``cpu_seconds``, ``load``, ``threads``, ``complete``."""
    rows = []
    for path in sorted(TIMES.glob(f"*-{mode}.json")):
        r = json.loads(path.read_text())
        rows.append({"chapter": path.stem[: -len(mode) - 1], "wall_seconds": r["wall_seconds"], "cpu_seconds": r.get("cpu_seconds"),
                     "load": (r.get("load_average") or {}).get("mean"), "threads": r["threads"], "complete": r["complete"],
                     "hardware": r["hardware"], "date": r["started"][:10]})
    return rows


def print_chapter_times(mode: str = "full") -> list[dict]:
    """Print :func:`chapter_times` as a table a learner can plan with."""
    rows = chapter_times(mode)
    print(f"{'chapter':28s} {mode + ' mode':>14s} {'CPU':>8s} {'load':>5s}")
    for r in rows:
        cpu = f"{r['cpu_seconds']:.0f} s" if r["cpu_seconds"] is not None else "?"
        note = "" if r["complete"] else "  (incomplete run)"
        print(f"{r['chapter']:28s} {_minutes(r['wall_seconds']):>14s} {cpu:>8s} {r['load'] or 0:5.1f}{note}")
    if rows:
        print(f"measured with python benchmarks/chapter_times.py, one torch thread, on {rows[0]['hardware']}, no GPU")
    return rows


def load(chapter: str) -> dict:
    path = FULL_RUNS / f"{chapter}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no kept full-run outputs for chapter {chapter!r}: {path} is missing "
                                f"(python -m mlcourse.full_runs harvest runs/fulltime/{chapter}.ipynb LABEL=CELL_ID ... makes it)")
    return json.loads(path.read_text())


def show(chapter: str, label: str, display: bool = True) -> dict:
    """Print (and, in a notebook, draw) what cell ``label`` of ``chapter``'s full run gave."""
    kept = load(chapter)
    if label not in kept["cells"]:
        raise KeyError(f"chapter {chapter!r} kept no full-run output labelled {label!r}; kept: {', '.join(sorted(kept['cells']))}")
    cell = kept["cells"][label]
    run = kept["run"]
    print(f"What the full run gave ({describe_run(run)}); this cell took {_minutes(cell['seconds'])}. "
          f"Command: {run['command']}")
    if cell["text"]:
        print("-" * 40)
        print(cell["text"].rstrip())
    if display:
        try:
            from IPython import get_ipython
            from IPython.display import Image, display as ipy_display
        except ImportError:  # pragma: no cover - IPython comes with Jupyter
            get_ipython = None
        if get_ipython is not None and get_ipython() is not None:
            for name in cell["images"]:
                ipy_display(Image(filename=str(FULL_RUNS / chapter / name)))
        elif cell["images"]:
            print(f"(pictures: {', '.join(str(FULL_RUNS / chapter / n) for n in cell['images'])})")
    return cell


def _small_png(data: bytes) -> bytes:
    """The picture with at most 256 colours (matplotlib figures lose nothing visible; a third of the bytes)."""
    try:
        import io

        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib
        return data
    image = Image.open(io.BytesIO(data))
    if image.mode == "P":
        return data
    small = io.BytesIO()
    image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(small, format="PNG", optimize=True)
    return small.getvalue() if small.tell() < len(data) else data


def _cell_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream" and out.get("name") == "stdout":
            parts.append("".join(out.get("text", "")))
        elif out.get("output_type") in ("execute_result", "display_data"):
            data = out.get("data", {})
            if "text/plain" in data and not any(k.startswith("image/") for k in data):
                text = "".join(data["text/plain"])
                if not text.startswith(("<Figure", "<IPython")) and "Widget" not in text:
                    parts.append(text + "\n")
    text = "".join(parts)
    # progress bars write carriage returns: keep the last state of each line
    text = "\n".join(line.split("\r")[-1] for line in text.split("\n"))
    text = "\n".join(line for line in text.split("\n") if not PROGRESS.search(line))
    if len(text) > TEXT_LIMIT:
        half = TEXT_LIMIT // 2
        text = text[:half] + "\n[...]\n" + text[-half:]
    return text


def harvest(executed: Path, labels: dict[str, str], out: Path = FULL_RUNS, times: Path = TIMES) -> Path:
    """Keep the outputs of the cells ``labels`` names (label -> cell id) from an executed chapter."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    chapter = Path(executed).stem
    record = json.loads((times / f"{chapter}-full.json").read_text())
    if not record.get("complete"):
        raise ValueError(f"{times / f'{chapter}-full.json'} records an incomplete run: keep outputs of complete runs only")
    by_id = {c.get("id"): c for c in nb.cells}
    seconds = {c["index"]: c["seconds"] for c in record["cells"]}
    target = out / chapter
    target.mkdir(parents=True, exist_ok=True)
    path = out / f"{chapter}.json"
    kept = json.loads(path.read_text()) if path.is_file() else {"cells": {}}
    if kept.get("run", {}).get("started") not in (None, record["started"]):
        kept = {"cells": {}}  # a new run replaces every output of the old one
        for old in target.glob("*.png"):
            old.unlink()
    kept["run"] = {k: record[k] for k in ("notebook", "mode", "threads", "hardware", "gpu", "commit", "started",
                                          "finished", "command", "complete", "wall_seconds", "cpu_seconds",
                                          "load_average") if k in record}
    for label, cell_id in labels.items():
        if cell_id not in by_id or by_id[cell_id].cell_type != "code":
            raise KeyError(f"{executed}: no code cell with id {cell_id!r} (label {label!r})")
        cell = by_id[cell_id]
        index = nb.cells.index(cell)
        images = []
        for out_ in cell.get("outputs", []):
            png = out_.get("data", {}).get("image/png") if out_.get("output_type") in ("display_data", "execute_result") else None
            if png:
                name = f"{label}-{len(images)}.png"
                (target / name).write_bytes(_small_png(base64.b64decode(png)))
                images.append(name)
        kept["cells"][label] = {"cell_id": cell_id, "index": index,
                                "first_line": next((l for l in cell.source.splitlines() if l.strip()), "")[:100],
                                "seconds": seconds.get(index, 0.0), "text": _cell_text(cell), "images": images}
    path.write_text(json.dumps(kept, indent=1, ensure_ascii=False) + "\n")
    return path


TIME_HEADING = "**How long it takes.**"


def time_paragraph(chapter: str) -> str:
    """The paragraph under a chapter's objectives that states its measured full-mode time."""
    r = timing(chapter)
    hardware = r["hardware"]
    cpu = hardware.split("cores (", 1)[1].rsplit("), ", 1)[0] if "cores (" in hardware else hardware
    memory = hardware.rsplit(", ", 1)[1] if ", " in hardware else ""
    longest = max((c["seconds"] for c in r["cells"]), default=0.0)
    text = (f"{TIME_HEADING} Fast mode (`MLCOURSE_FAST=1`): about a minute. "
            f"Full mode: **{chapter_time_sentence(chapter)}** wall on 2 CPU cores ({cpu}, {memory}, no GPU), "
            f"one torch thread, load average {(r.get('load_average') or {}).get('mean')} (another job ran on the other core), "
            f"on the Omniglot subsets, {r['started'][:10]}: `python benchmarks/chapter_times.py chapters/{chapter}.ipynb` "
            f"(every cell's time is in `docs/runs/chapter-times/{chapter}-full.json`; the longest cell took {_minutes(longest)} of it).")
    if (FULL_RUNS / f"{chapter}.json").is_file():
        text += (" Under each experiment, a cell shows what that full run printed and drew (`mlcourse.full_runs`): "
                 "compare your run with it without the wait.")
    return text


def show_source(chapter: str, label: str) -> str:
    return f'full_runs.show("{chapter}", "{label}")  # what the full run (MLCOURSE_FAST=0) printed and drew here'


def annotate(path: Path) -> bool:
    """Write (or refresh) a chapter's time paragraph and a :func:`show` cell under each kept experiment.

    The paragraph goes right under the first cell (the objectives); each show cell right under the
    cell whose output it keeps (found by cell id); ``full_runs`` is imported in the first code
    cell. Running it twice changes nothing. Returns whether the notebook changed.
    """
    import nbformat

    path = Path(path)
    chapter = path.stem
    nb = nbformat.read(path, as_version=4)
    before = nbformat.writes(nb)
    paragraph = time_paragraph(chapter)
    heading = [c for c in nb.cells if c.cell_type == "markdown" and c.source.startswith(TIME_HEADING)]
    if heading:
        heading[0].source = paragraph
    else:
        nb.cells.insert(1, nbformat.v4.new_markdown_cell(paragraph))
    kept = load(chapter) if (FULL_RUNS / f"{chapter}.json").is_file() else {"cells": {}}
    present = {c.source for c in nb.cells if c.cell_type == "code"}
    for label, cell in kept["cells"].items():
        code = show_source(chapter, label)
        if code in present:
            continue
        where = [i for i, c in enumerate(nb.cells) if c.get("id") == cell["cell_id"]]
        if not where:
            raise KeyError(f"{path}: no cell with id {cell['cell_id']!r} for the kept output {label!r}")
        nb.cells.insert(where[0] + 1, nbformat.v4.new_code_cell(code))
    first = next((c for c in nb.cells if c.cell_type == "code"), None)
    if kept["cells"] and first is not None and "full_runs" not in first.source:
        if "from mlcourse import config\n" in first.source:
            first.source = first.source.replace("from mlcourse import config\n", "from mlcourse import config, full_runs\n", 1)
        else:
            first.source = "from mlcourse import full_runs\n" + first.source
    if nbformat.writes(nb) == before:
        return False
    nbformat.write(nb, path)
    return True


def main(argv: list[str] | None = None) -> int:
    from .cli import ArgumentParser, bad_argument

    parser = ArgumentParser(prog="python -m mlcourse.full_runs", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="command", help="list, harvest or annotate")
    sub.add_parser("list", help="every kept full-run output, with its run")
    an = sub.add_parser("annotate", help="write a chapter's time paragraph and its show cells from the kept run")
    an.add_argument("chapters", nargs="+", type=Path, help="chapter notebooks (chapters/NN_name.ipynb)")
    hv = sub.add_parser("harvest", help="keep the outputs of labelled cells of an executed chapter")
    hv.add_argument("executed", type=Path, help="the executed notebook (benchmarks/chapter_times.py --keep DIR)")
    hv.add_argument("labels", nargs="+", help="LABEL=CELL_ID, one per kept cell")
    args = parser.parse_args(argv)
    if args.command == "list":
        for path in sorted(FULL_RUNS.glob("*.json")):
            kept = json.loads(path.read_text())
            print(f"{path.stem}: {describe_run(kept['run'])}")
            for label, cell in kept["cells"].items():
                print(f"  {label}: cell {cell['index']} ({cell['first_line']}), {len(cell['images'])} picture(s), {cell['seconds']} s")
        return 0
    if args.command == "annotate":
        for chapter in args.chapters:
            if not chapter.is_file() or chapter.suffix != ".ipynb":
                bad_argument(parser, "chapter", chapter, "an existing chapter notebook (.ipynb)")
            try:
                changed = annotate(chapter)
            except (KeyError, FileNotFoundError) as error:
                bad_argument(parser, "chapter", chapter, f"a chapter with a timed full run ({str(error).strip(chr(39))})")
            print(f"{chapter}: {'updated' if changed else 'already up to date'}")
        return 0
    if not args.executed.is_file():
        bad_argument(parser, "executed", args.executed, "an executed notebook (.ipynb) that exists")
    labels = {}
    for item in args.labels:
        label, sep, cell_id = item.partition("=")
        if not sep or not label or not cell_id:
            bad_argument(parser, "label", item, "LABEL=CELL_ID")
        labels[label] = cell_id
    try:
        print(harvest(args.executed, labels))
    except (KeyError, ValueError, FileNotFoundError) as error:
        bad_argument(parser, "executed", args.executed, str(error).strip("'\""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
