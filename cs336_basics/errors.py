"""One way to report a mistake the user can fix: a single line and a non-zero exit, never a traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A problem with the user's input or environment.

    The message should say what is wrong, where (file, value, flag) and what to do about it.
    Command-line entry points print it as one line and exit with status 2.
    """


def cli_entry(main: F) -> F:
    """Decorate a command's ``main``: a ``UserError`` becomes ``error: <message>`` on stderr and exit 2,
    Ctrl-C becomes exit 130 with a short note. Anything else is a bug and keeps its traceback."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(EXIT_USER_ERROR) from None
        except KeyboardInterrupt:
            print("interrupted: re-run the same command to resume", file=sys.stderr)
            raise SystemExit(EXIT_INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]
