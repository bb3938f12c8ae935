"""One way to report a mistake the user can fix: a single line and a non-zero exit, never a traceback."""

from __future__ import annotations

import errno
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
    a filesystem error (``OSError``) one line too, Ctrl-C exit 130 with a short note. Anything else is a bug
    and keeps its traceback."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(EXIT_USER_ERROR) from None
        except OSError as err:  # a filesystem problem the user can fix: a bad --out, a full disk, ...
            print(f"error: {describe_os_error(err)}", file=sys.stderr)
            raise SystemExit(EXIT_USER_ERROR) from None
        except KeyboardInterrupt:
            print("interrupted: re-run the same command to resume", file=sys.stderr)
            raise SystemExit(EXIT_INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]


def describe_os_error(err: OSError) -> str:
    """One line for a filesystem error: what failed, on which path, and what to do."""
    path = f" {err.filename}" if err.filename else ""
    what = (err.strerror or str(err)).lower()
    advice = {
        errno.ENOSPC: "free some space and re-run (runs resume from their last checkpoint)",
        errno.EACCES: "choose a directory you can write to (--out)",
        errno.EPERM: "choose a directory you can write to (--out)",
        errno.EROFS: "choose a writable directory (--out)",
        errno.ENAMETOOLONG: "use a shorter path (--out)",
        errno.EEXIST: "a file is in the way: remove it or choose another --out",
        errno.ENOTDIR: "a part of the path is a file, not a directory: choose another --out",
    }.get(err.errno, "check the path")
    return f"{what}:{path}; {advice}"
