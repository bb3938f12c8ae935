"""Batches of token windows: CS336's ``get_batch``, reproducible (seed, step) sampling, prefetch, eval windows."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor


def get_batch(
    dataset: npt.NDArray, batch_size: int, context_length: int, device: str | torch.device
) -> tuple[Tensor, Tensor]:
    """Random windows from a 1-D token array: x and y = x shifted by one, int64, on ``device``.

    Starts are uniform in [0, len - context_length) from NumPy's global RNG (the CS336 interface).
    An invalid ``device`` raises.
    """
    device = torch.device(device)
    starts = np.random.randint(0, len(dataset) - context_length, size=batch_size)
    x, y = _windows(dataset, starts, context_length)
    return x.to(device), y.to(device)


def _windows(dataset: npt.NDArray, starts: npt.NDArray, context_length: int) -> tuple[Tensor, Tensor]:
    offsets = np.arange(context_length + 1)
    tokens = torch.from_numpy(np.asarray(dataset[starts[:, None] + offsets], dtype=np.int64))
    return tokens[:, :-1], tokens[:, 1:]


def batch_starts(seed: int, step: int, num_windows: int, batch_size: int) -> npt.NDArray[np.int64]:
    """Window starts for training step ``step``: a pure function of (seed, step), so a resumed run
    draws exactly the batches an uninterrupted one would."""
    rng = np.random.default_rng([seed, step])
    return rng.integers(0, num_windows, size=batch_size)


def eval_starts(dataset_len: int, context_length: int, num_windows: int) -> npt.NDArray[np.int64]:
    """A fixed, evenly spaced set of validation windows: the same for every run and learning rate."""
    last = dataset_len - context_length - 1
    return np.linspace(0, max(last, 0), num=num_windows).astype(np.int64)


class BatchLoader:
    """Training batches by step, gathered on a worker thread one step ahead of the training loop.

    On CUDA the batch lands in pinned memory and is copied with ``non_blocking=True``, so neither the
    memmap gather nor the host-to-device copy holds up the GPU.
    """

    def __init__(
        self, dataset: npt.NDArray, batch_size: int, context_length: int, seed: int, device: torch.device
    ):
        if len(dataset) <= context_length + 1:
            raise ValueError(
                f"dataset of {len(dataset)} tokens is shorter than one window of {context_length + 1}"
            )
        self.dataset, self.batch_size, self.context_length = dataset, batch_size, context_length
        self.seed, self.device = seed, device
        self.num_windows = len(dataset) - context_length
        self.pin = device.type == "cuda"
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-prefetch")
        self._pending: dict[int, Future] = {}

    def _host_batch(self, step: int) -> tuple[Tensor, Tensor]:
        starts = batch_starts(self.seed, step, self.num_windows, self.batch_size)
        x, y = _windows(self.dataset, starts, self.context_length)
        if self.pin:
            x, y = x.pin_memory(), y.pin_memory()
        return x, y

    def get(self, step: int) -> tuple[Tensor, Tensor]:
        """The batch of ``step`` on the device; starts gathering the batch of ``step + 1``."""
        future = self._pending.pop(step, None)
        x, y = future.result() if future is not None else self._host_batch(step)
        self._pending = {step + 1: self._pool.submit(self._host_batch, step + 1)}
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def eval_batches(
    dataset: npt.NDArray, batch_size: int, context_length: int, num_batches: int, device: torch.device
) -> list[tuple[Tensor, Tensor]]:
    """The fixed validation set as a list of device batches (built once per run; a few MB at most)."""
    starts = eval_starts(len(dataset), context_length, batch_size * num_batches)
    out = []
    for i in range(num_batches):
        x, y = _windows(dataset, starts[i * batch_size : (i + 1) * batch_size], context_length)
        out.append((x.to(device), y.to(device)))
    return out
