"""One sweep per directory: a lock file holding pid and host; a stale lock from a dead process is taken over."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

from cs336_basics.errors import UserError

LOCK_FILE = ".sweep.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


class SweepLock:
    """``with SweepLock(dir):`` holds ``dir/.sweep.lock`` for the duration; a second holder gets a UserError."""

    def __init__(self, sweep_dir: Path):
        self.path = Path(sweep_dir) / LOCK_FILE
        self.mine = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": time.time()}

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and not self._stale(holder):
                    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started_at", 0)))
                    raise UserError(
                        f"another sweep (pid {holder.get('pid')} on {holder.get('host')}, started {started}) is "
                        f"using {self.path.parent}; wait for it to finish, or if that process is gone for good, "
                        f"delete {self.path}"
                    ) from None
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)  # stale: its process is dead
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.mine, f)
            return
        raise UserError(f"could not take the sweep lock {self.path}; another sweep keeps taking it")

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError):
            # Half-written by a process that died between create and write: stale once it is a few seconds old.
            with contextlib.suppress(OSError):
                if time.time() - self.path.stat().st_mtime < 5:
                    return {"pid": "?", "host": "?", "started_at": self.path.stat().st_mtime}
            return None

    def _stale(self, holder: dict) -> bool:
        if holder.get("host") != socket.gethostname():
            return False  # can't see another host's processes: assume alive
        pid = holder.get("pid")
        return isinstance(pid, int) and not _pid_alive(pid)

    def release(self) -> None:
        holder = self._holder()
        if (
            holder is not None
            and holder.get("pid") == self.mine["pid"]
            and holder.get("host") == self.mine["host"]
        ):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def __enter__(self) -> SweepLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
