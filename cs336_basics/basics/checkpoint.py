"""Checkpoints: CS336's save/load interface, written atomically, plus a background writer for the trainer."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from pathlib import Path
from typing import IO, BinaryIO

import torch
from torch.utils._pytree import tree_leaves, tree_map_only

from cs336_basics.atomic import atomic_write
from cs336_basics.errors import UserError


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "_orig_mod", model)  # torch.compile wraps the module; save the original's keys


def save_checkpoint(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    iteration: int,
    out: str | os.PathLike | BinaryIO | IO[bytes],
) -> None:
    """Save model, optimizer and iteration to a path (atomically) or a binary file."""
    write_checkpoint(checkpoint_dict(model, optimizer, iteration), out)


def checkpoint_dict(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, iteration: int, **extra
) -> dict:
    """What a checkpoint holds: the model's state dict, the iteration, ``extra``, and the optimizer's state."""
    obj = {"model": _unwrap(model).state_dict(), "iteration": int(iteration), **extra}
    if optimizer is not None:
        obj["optimizer"] = optimizer.state_dict()
    return obj


def write_checkpoint(obj: dict, out) -> None:
    if isinstance(out, (str, os.PathLike)):
        with atomic_write(out, "wb") as f:
            torch.save(obj, f)
    else:
        torch.save(obj, out)


def read_checkpoint(src) -> dict:
    """The raw checkpoint dict, tensors on the CPU; only tensors and plain Python data are unpickled."""
    return torch.load(src, map_location="cpu", weights_only=True)


def unreadable_text(path, err: BaseException) -> str:
    """One line for a checkpoint torch can't load: the path and the first sentence of torch's reason (its
    "internal miniz error ... high likelihood that your checkpoint file is corrupted" paragraph cut short)."""
    first = " ".join(str(err).split()).split(". ")[0][:80]
    return f"cannot read checkpoint {path}: corrupt or truncated ({type(err).__name__}: {first})"


def load_checkpoint(src, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Restore model (and optimizer) state from ``src`` (a path or binary file); return the saved iteration."""
    obj = read_checkpoint(src)
    _unwrap(model).load_state_dict(obj["model"])
    if optimizer is not None and "optimizer" in obj:
        optimizer.load_state_dict(obj["optimizer"])
    return int(obj["iteration"])


def _host_copy(tensor: torch.Tensor, pinned: bool) -> torch.Tensor:
    """A host copy of ``tensor``. From CUDA into a pinned buffer with a non-blocking copy, so the loop does not
    wait: the copies are ordered on the stream before any later update of the parameters, and the writer
    thread waits for them (the ``ready`` event) before serialising."""
    if tensor.device.type == "cpu":
        return tensor.detach().clone()
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=pinned)
    return host.copy_(tensor.detach(), non_blocking=pinned)


class CheckpointWriteError(UserError):
    """A checkpoint could not be written; the message says why and which checkpoint is intact."""


def _is_disk_full(err: BaseException) -> bool:
    """torch.save reports ENOSPC as 'unexpected pos' with the OSError only in the chained context."""
    while err is not None:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        if "unexpected pos" in str(err) or "No space left" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def tensor_bytes(obj) -> int:
    """Bytes of all tensors in ``obj`` (nested dicts, lists and tuples)."""
    return sum(t.nbytes for t in tree_leaves(obj) if isinstance(t, torch.Tensor))


class CheckpointWriter:
    """Writes checkpoints on a background thread; the training loop pays only for queuing a snapshot.

    One write is in flight at a time. A failed background write is raised (as ``CheckpointWriteError``, one
    line) by the loop's next ``raise_if_failed`` (every step), so a full disk stops the run at once instead of
    after more compute; the previous checkpoint of that kind stays intact (writes are atomic renames).
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.written_step: dict[str, int] = {}  # kind -> step of the last checkpoint safely on disk

    def submit(self, obj: dict, path: Path, background: bool = True) -> None:
        self.wait()
        pinned = torch.cuda.is_available()
        snapshot = tree_map_only(torch.Tensor, lambda t: _host_copy(t, pinned), obj)
        ready = torch.cuda.current_stream().record_event() if pinned else None  # marks the end of the copies
        args = (snapshot, path, ready)
        self._thread = threading.Thread(target=self._write, args=args, name="checkpoint-writer")
        self._thread.start()
        if not background:
            self.wait()

    def _write(self, snapshot: dict, path: Path, ready) -> None:
        try:
            if ready is not None:
                ready.synchronize()
            write_checkpoint(snapshot, path)
            self.written_step[path.stem] = int(snapshot.get("iteration", 0))
        except BaseException as err:
            self._error = self._describe(err, snapshot, path)

    def _describe(self, err: BaseException, snapshot: dict, path: Path) -> BaseException:
        kept = self.written_step.get(path.stem)
        intact = f"no {path.name} was written yet"
        if kept is not None:
            intact = f"the last good {path.name} (step {kept}) is intact"
        if _is_disk_full(err):
            need = tensor_bytes(snapshot) / 1e6
            return CheckpointWriteError(
                f"no space left on device writing {path} (needs ~{need:.0f} MB); {intact}; free space and re-run"
            )
        if isinstance(err, OSError):
            return CheckpointWriteError(f"cannot write {path}: {err.strerror or err}; {intact}")
        return err

    def failure(self) -> BaseException | None:
        """The failed background write, if any, once the write in flight has ended (and forgets it)."""
        self.wait(raise_error=False)
        err, self._error = self._error, None
        return err

    def raise_if_failed(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def wait(self, raise_error: bool = True) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if raise_error:
            self.raise_if_failed()


def clean_stale_temp_files(run_dir: Path) -> None:
    """Remove temp files a killed writer left behind (``.latest.pt.*.tmp``, ...): only this run's own trainer,
    which holds the run-dir lock, ever writes them."""
    for tmp in [*run_dir.glob(".*.tmp"), *run_dir.glob("checkpoints/.*.tmp")]:
        with contextlib.suppress(OSError):
            tmp.unlink()
