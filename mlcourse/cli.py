"""What every command line of the course shares: a bad argument gets one line and exit status 2.

A learner who types ``--ways 0`` should read *which* argument is wrong, the value they gave and
what would be valid, not a traceback from deep inside a training loop, and not argparse's
multi-line usage block either. Every entry point (``python -m mlcourse.bench``,
``python -m mlcourse.metrics``, ``python -m mlcourse.authoring``, the scripts in
``benchmarks/``) builds its parser with :class:`ArgumentParser` and checks its arguments
against the data with :func:`bad_argument` (or the ``check_*`` helpers) *before* any work
starts.

    >>> parser = ArgumentParser(prog="python -m mlcourse.bench")
    >>> bad_argument(parser, "--ways", 0, "an integer of at least 2")   # doctest: +SKIP
    python -m mlcourse.bench: error: --ways 0: must be an integer of at least 2

Tests call ``main(argv)`` directly, so the failure is a :class:`SystemExit` with code 2 and the
one line on standard error.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

EXIT_USAGE = 2  # the Unix convention for "bad command line", as argparse uses


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line: ``PROG: error: MESSAGE``.

    argparse prints the whole usage block before the message; with ten options the message
    scrolls out of sight. ``--help`` still prints the full usage.
    """

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        fail(self.prog, message)


def fail(prog: str, message: str) -> NoReturn:
    """Print ``PROG: error: MESSAGE`` (newlines folded) on standard error and exit with status 2."""
    line = " ".join(str(message).split())
    print(f"{prog}: error: {line}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USAGE)


def bad_argument(parser_or_prog, name: str, value, valid: str) -> NoReturn:
    """Refuse ``name value``, saying what would be valid (``valid`` reads after "must be")."""
    prog = parser_or_prog.prog if isinstance(parser_or_prog, argparse.ArgumentParser) else str(parser_or_prog)
    fail(prog, f"{name} {value}: must be {valid}")


def check_at_least(parser, name: str, value, minimum, what: str = "an integer") -> None:
    """``value`` is None (use the default) or at least ``minimum``."""
    if value is not None and value < minimum:
        bad_argument(parser, name, value, f"{what} of at least {minimum}")


def check_positive(parser, name: str, value) -> None:
    """``value`` is None or a number above zero."""
    if value is not None and not value > 0:
        bad_argument(parser, name, value, "a number above 0")


def check_choice(parser, name: str, value, choices) -> None:
    """``value`` is None or one of ``choices``."""
    choices = list(choices)
    if value is not None and value not in choices:
        bad_argument(parser, name, value, "one of " + ", ".join(str(c) for c in choices))


def check_existing_file(parser, name: str, path, what: str = "an existing file") -> None:
    """``path`` names a file that exists (not a folder)."""
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        bad_argument(parser, name, path, f"{what} (no such file)")
    if not p.is_file():
        bad_argument(parser, name, path, f"{what} (it is a folder)" if p.is_dir() else what)


def check_episodes_fit(
    parser,
    dataset,
    ways: int,
    shots: int,
    queries: int,
    *,
    ways_name: str = "--ways",
    shots_name: str = "--shots",
    queries_name: str | None = None,
    split: str = "the test split",
) -> None:
    """Refuse an N-way K-shot request with Q queries per class that ``dataset`` cannot fill.

    An episode needs ``ways`` classes with at least ``shots + queries`` images each. When no
    class is that large, the shots are blamed (or the queries, when ``queries_name`` is given
    and the queries alone are too many); otherwise ``--ways`` is, with the number of classes
    that are large enough as its limit. Call it after the cheap checks (``check_at_least``),
    as soon as the data is loaded and before any training.

        >>> check_episodes_fit(parser, splits.test, args.ways, args.shots, 15)  # doctest: +SKIP
        PROG: error: --ways 200: must be at most 106 (the test split has 106 classes with at least 16 images: 1 shot + 15 queries)
    """
    sizes = dataset.class_sizes()
    largest = int(sizes.max()) if len(sizes) else 0
    per_class = shots + queries
    if per_class > largest:
        if queries_name is not None and queries >= largest:
            bad_argument(parser, queries_name, queries,
                         f"at most {max(0, largest - shots)} (the largest class of {split} has {largest} images, "
                         f"and the support set takes {shots} of them per class)")
        bad_argument(parser, shots_name, shots,
                     f"at most {max(0, largest - queries)} (the largest class of {split} has {largest} images, "
                     f"and the queries take {queries} of them per class)")
    eligible = int((sizes >= per_class).sum())
    if ways > eligible:
        bad_argument(parser, ways_name, ways,
                     f"at most {eligible} ({split} has {eligible} classes with at least {per_class} images: "
                     f"{_count(shots, 'shot')} + {_count(queries, 'query', 'queries')})")


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"
