"""One sweep per directory: an flock on ``.sweep.lock``, which also records the holder's pid and host.

The kernel drops an flock when its holder dies (Ctrl-C, kill -9, a crash), so a lock left behind by a dead
sweep is simply free: there is no stale-lock guessing and no race between two sweeps taking it over.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from cs336_basics.errors import UserError

LOCK_FILE = ".sweep.lock"


class SweepLock:
    """``with SweepLock(dir):`` holds ``dir/.sweep.lock`` for the duration; a second holder gets a UserError."""

    def __init__(self, sweep_dir: Path):
        self.path = Path(sweep_dir) / LOCK_FILE
        self._handle = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 (held open for the lock's lifetime)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            try:
                holder = json.loads(handle.read())
                started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started_at", 0)))
                who = f"pid {holder.get('pid')} on {holder.get('host')}, started {started}"
            except (json.JSONDecodeError, AttributeError):
                who = "another process"
            handle.close()
            raise UserError(
                f"another sweep ({who}) is using {self.path.parent}; wait for it to finish, "
                f"or stop it (it resumes when re-run)"
            ) from None
        handle.seek(0)
        handle.truncate()
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started_at": time.time()}, handle)
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing drops the flock
            self._handle = None

    def __enter__(self) -> SweepLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
