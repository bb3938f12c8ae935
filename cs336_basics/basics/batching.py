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
    starts = np.random.randint(0, len(dataset) - context_length, size=batch_size)
    block = _block(dataset, starts, context_length).to(device)
    return block[:, :-1], block[:, 1:]


def _block(dataset: npt.NDArray, starts: npt.NDArray, context_length: int) -> Tensor:
    """The windows ``dataset[s : s + context_length + 1]`` as one contiguous int64 (B, T+1) tensor."""
    offsets = np.arange(context_length + 1)
    return torch.from_numpy(np.ascontiguousarray(dataset[starts[:, None] + offsets], dtype=np.int64))


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
        self.dataset, self.batch_size, self.context_length = dataset, batch_size, context_length
        self.seed, self.device = seed, device
        self.num_windows = len(dataset) - context_length
        self.pin = device.type == "cuda"
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-prefetch")
        self._pending: dict[int, Future] = {}

    def _host_batch(self, step: int) -> Tensor:
        """The (B, T+1) token block of ``step``, contiguous (and pinned on CUDA: a non-contiguous pinned
        tensor would be copied through a pageable temporary, a blocking copy despite ``non_blocking``)."""
        starts = batch_starts(self.seed, step, self.num_windows, self.batch_size)
        block = _block(self.dataset, starts, self.context_length)
        return block.pin_memory() if self.pin else block

    def get(self, step: int) -> tuple[Tensor, Tensor]:
        """The batch of ``step`` on the device; starts gathering the batch of ``step + 1``."""
        future = self._pending.pop(step, None)
        block = future.result() if future is not None else self._host_batch(step)
        self._pending = {step + 1: self._pool.submit(self._host_batch, step + 1)}
        block = block.to(self.device, non_blocking=True)  # one copy; x and y are views on the device
        return block[:, :-1], block[:, 1:]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def eval_batches(
    dataset: npt.NDArray, batch_size: int, context_length: int, num_batches: int, device: torch.device
) -> list[tuple[Tensor, Tensor]]:
    """The fixed validation set as a list of device batches (built once per run; a few MB at most)."""
    starts = eval_starts(len(dataset), context_length, batch_size * num_batches)
    block = _block(dataset, starts, context_length).to(device)
    return [(batch[:, :-1], batch[:, 1:]) for batch in block.split(batch_size)]
