"""Checkpoints: CS336's save/load interface, written atomically, plus a background writer for the trainer."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import IO, Any, BinaryIO

import torch

from cs336_basics.atomic import atomic_write


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "_orig_mod", model)  # torch.compile wraps the module; save the original's keys


def save_checkpoint(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    iteration: int,
    out: str | os.PathLike | BinaryIO | IO[bytes],
    **extra: Any,
) -> None:
    """Save model, optimizer and iteration (plus ``extra`` entries) to a path (atomically) or a binary file."""
    obj = {"model": _unwrap(model).state_dict(), "iteration": int(iteration), **extra}
    if optimizer is not None:
        obj["optimizer"] = optimizer.state_dict()
    write_checkpoint(obj, out)


def write_checkpoint(obj: dict, out) -> None:
    if isinstance(out, (str, os.PathLike)):
        with atomic_write(out, "wb") as f:
            torch.save(obj, f)
    else:
        torch.save(obj, out)


def read_checkpoint(src, map_location: str | torch.device = "cpu") -> dict:
    """The raw checkpoint dict (tensors on ``map_location``); only tensors and plain Python data are unpickled."""
    return torch.load(src, map_location=map_location, weights_only=True)


def load_checkpoint(src, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Restore model (and optimizer) state from ``src`` (a path or binary file); return the saved iteration."""
    obj = read_checkpoint(src)
    _unwrap(model).load_state_dict(obj["model"])
    if optimizer is not None and "optimizer" in obj:
        optimizer.load_state_dict(obj["optimizer"])
    return int(obj["iteration"])


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


class CheckpointWriter:
    """Writes checkpoints on a background thread so the training loop only pays for a device-to-host copy.

    ``submit`` snapshots the state (tensors copied to CPU) before returning, so training can go on mutating
    the parameters. One write is in flight at a time; ``wait`` blocks until it is on disk (done at the end
    of a run, and before any resume-critical exit).
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, obj: dict, path: Path, background: bool = True) -> None:
        snapshot = _to_cpu(obj)
        self.wait()
        if not background:
            write_checkpoint(snapshot, path)
            return

        def work():
            try:
                write_checkpoint(snapshot, path)
            except BaseException as err:  # reported to the training loop on the next wait()
                self._error = err

        self._thread = threading.Thread(target=work, name="checkpoint-writer", daemon=False)
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise err
