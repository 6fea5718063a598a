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
