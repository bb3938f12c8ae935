"""Atomic file writes: write to a temp file in the same directory, fsync, then rename over the final name.

A kill or a full disk at any moment leaves either the old file or the new one, never a half-written file
under the final name.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TEMP_SUFFIX = ".tmp"  # of the temp file beside its target: ``.NAME.XXXXXXXX.tmp``


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file beside ``path`` for writing; on success fsync it, rename it to ``path`` and remove the
    temp files of ``path`` that killed writers left (a kill -9 during a long tokenization left its partial
    output, up to GBs, for good). A writer holds an flock on its temp file until the rename, and the kernel
    drops it when the writer dies: a temp file whose lock can be taken has no live writer."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held until the rename below: nobody removes a live writer's file
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    _remove_dead_writers_files(path)


def _remove_dead_writers_files(path: Path) -> None:
    """The temp files of ``path`` (``.NAME.XXXXXXXX.tmp``, mkstemp's 8 random characters) nobody holds."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.{'[!.]' * 8}{TEMP_SUFFIX}"):
        with contextlib.suppress(OSError), open(stale, "rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer's
            stale.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not supported everywhere (e.g. Windows), so best effort.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
