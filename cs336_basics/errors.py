"""One way to report a mistake the user can fix: a single line and a non-zero exit, never a traceback."""

from __future__ import annotations

import argparse
import errno
import functools
import re
import signal
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

from cs336_basics.atomic import TEMP_SUFFIX

F = TypeVar("F", bound=Callable[..., object])

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem with the user's input or environment.

    The message should say what is wrong, where (file, value, flag) and what to do about it.
    Command-line entry points print it as one line and exit with status 2.
    """


class StartOver(UserError):
    """A run dir that cannot be continued (its checkpoint unreadable, not ours, or of another config): only
    training it again from scratch helps. ``what`` says why; the message adds how with cs336-train, and a
    sweep says its own way instead (``--restart VALUE``: its ``--fresh`` would move the whole sweep aside)."""

    HOW = "restart this run from scratch with --fresh (the old run dir is moved aside, not deleted)"

    def __init__(self, what: str) -> None:
        super().__init__(f"{what}; {self.HOW}")
        self.what = what


class Stopped(KeyboardInterrupt):
    """A run or sweep stopped by a signal (Ctrl-C: SIGINT; kill or a scheduler: SIGTERM) after saving what it
    needs to resume. A command exits with 128 + the signal's number, as a shell reports it (130, 143)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @classmethod
    def of(cls, err: KeyboardInterrupt) -> Stopped:
        """``err`` as a Stopped: a plain KeyboardInterrupt (a second Ctrl-C, Python's own) is a SIGINT."""
        return err if isinstance(err, cls) else cls()

    @property
    def by(self) -> str:
        """Who stopped it, in words: ``by the user (Ctrl-C)`` or ``by SIGTERM``."""
        return (
            "by the user (Ctrl-C)"
            if self.signum == signal.SIGINT
            else f"by {signal.Signals(self.signum).name}"
        )


NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")  # -1, -0.5, -.5, -1e-3, -2.5E4


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage mistakes read like every other bad input: one line and exit 2, not the whole
    usage (``--help`` shows that). Sub-command parsers are of the same class.

    A negative number in scientific notation (``--lr -1e-3``) is a value, as ``-0.001`` is to argparse, so
    it reaches the option's own range check instead of failing as "expected one argument"."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_NUMBER

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def command_parser(prog: str, description: str | None) -> ArgumentParser:
    """A command's top-level parser: ``description`` (its module docstring) shown as written."""
    return ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def cli_entry(main: F) -> F:
    """Decorate a command's ``main``: a ``UserError`` becomes ``error: <message>`` on stderr and exit 2,
    a filesystem error (``OSError``) one line too, a stop by Ctrl-C or SIGTERM exit 130 or 143 with a short note. Anything else is a bug
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
        except KeyboardInterrupt as err:
            stopped = Stopped.of(err)
            print(f"interrupted {stopped.by}: re-run the same command to go on (finished work is kept; training "
                  "and downloads resume mid-way)", file=sys.stderr)  # fmt: skip
            raise SystemExit(128 + stopped.signum) from None

    return wrapper  # type: ignore[return-value]


def one_line(err: BaseException) -> str:
    """How a run or a point records the error that ended it: a user error's message, a filesystem error
    described, anything else as ``Type: message``."""
    if isinstance(err, UserError):
        return str(err)
    if isinstance(err, OSError):
        return describe_os_error(err)
    return f"{type(err).__name__}: {err}"


def describe_os_error(err: OSError) -> str:
    """One line for a filesystem error: what failed, on which path (of a rename from one of our temporary
    files, the target: the path the user gave), and what to do."""
    ours = err.filename2 and str(err.filename).endswith(TEMP_SUFFIX)
    target = err.filename2 if ours else err.filename
    path = f": {target}" if target else ""
    what = (err.strerror or str(err)).lower()
    advice = {
        errno.ENOSPC: "free some space and re-run (runs resume from their last checkpoint)",
        errno.EACCES: "choose a directory you can write to",
        errno.EPERM: "choose a directory you can write to",
        errno.EROFS: "choose a writable directory",
        errno.ENAMETOOLONG: "use a shorter path",
        errno.EEXIST: "a file is in the way: remove it or choose another path",
        errno.ENOTDIR: "a part of the path is a file, not a directory: choose another path",
        errno.EISDIR: "a directory is in the way: give a file path",
    }.get(err.errno, "check the path")
    return f"{what}{path}; {advice}"
