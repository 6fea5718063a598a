"""Checks that exercise notebooks call on a learner's code.

A check runs the learner's function on cases built to expose the classic mistakes and, on
the first failure, raises :class:`CheckFailed` with a message that names the case and
shows what was expected and what came back, not a bare ``assert``. On success it prints
one line per check. This package may import the whole library; nothing imports it.
"""

from __future__ import annotations

from contextlib import contextmanager


class CheckFailed(AssertionError):
    """A learner's code gave a wrong answer on a named case."""


class Check:
    """Bookkeeping for one check: the case being run, and the learner's function calls."""

    def __init__(self, name: str, fn_name: str):
        self.name, self.fn_name, self.cases = name, fn_name, 0
        self.current = "setup"

    @contextmanager
    def case(self, description: str):
        self.current = description
        yield
        self.cases += 1

    def fail(self, message: str):
        raise CheckFailed(f"{self.name} failed on case '{self.current}':\n    {message}")

    def expect(self, condition: bool, message: str):
        if not condition:
            self.fail(message)

    def call(self, fn, *args, **kwargs):
        """Call the learner's function, turning its exceptions into a readable failure."""
        try:
            return fn(*args, **kwargs)
        except NotImplementedError:
            raise CheckFailed(
                f"{self.name}: `{self.fn_name}` is not implemented yet: replace "
                "`raise NotImplementedError()` with your code, run that cell, then this one."
            ) from None
        except CheckFailed:
            raise
        except Exception as err:  # the learner's bug: show it with the case it happened on
            raise CheckFailed(
                f"{self.name} failed on case '{self.current}':\n    `{self.fn_name}` raised "
                f"{type(err).__name__}: {err}"
            ) from err

    def done(self) -> None:
        print(f"✓ {self.name}: all {self.cases} cases passed")
