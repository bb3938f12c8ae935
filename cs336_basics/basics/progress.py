"""What a run shows while it trains, and how its time between log steps is measured."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from cs336_basics.formatting import duration


class Progress:
    """A progress bar on a terminal; elsewhere (SLURM logs, nohup, CI) one plain line per log step."""

    def __init__(self, name: str, start_step: int, max_steps: int, bar: bool):
        self.name, self.max_steps = name, max_steps
        self._first: tuple[float, int] | None = None  # (wallclock_s, step) of the first log step shown
        self.bar = (
            tqdm(total=max_steps, initial=start_step, desc=name, dynamic_ncols=True, unit="step")
            if (bar and sys.stdout.isatty())
            else None
        )

    def update(self, n: int, row: dict) -> None:
        mfu = f" | mfu {100 * row['mfu']:.1f}%" if row.get("mfu") is not None else ""
        eta = (self.max_steps - row["step"]) * self._seconds_per_step(row)
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(
                loss=f"{row['train_loss']:.3f}", lr=f"{row['lr']:.2e}", tok_s=f"{row['tokens_per_sec']:,.0f}"
            )
            return
        print(
            f"[{self.name}] step {row['step']}/{self.max_steps} | loss {row['train_loss']:.4f} | lr {row['lr']:.2e} | "
            f"{row['tokens_per_sec'] / 1e3:,.1f}k tok/s{mfu} | eta {duration(eta)}",
            flush=True,
        )

    def _seconds_per_step(self, row: dict) -> float:
        """For the ETA: the run's wallclock (the row's, TrainState's) per step since the first log step this
        process showed (evaluations, checkpoints and measurements included; the warm-up before it left out),
        else that row's step time."""
        if self._first is None:
            self._first = (row["wallclock_s"], row["step"])
        first_wallclock, first_step = self._first
        if row["step"] > first_step:
            return (row["wallclock_s"] - first_wallclock) / (row["step"] - first_step)
        return row["ms_per_step"] / 1e3

    def write(self, text: str) -> None:
        (self.bar.write if self.bar is not None else print)(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass
class Interval:
    """The training time between two log steps (evaluation, checkpoints and logging fall outside)."""

    start: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0
    steps: int = 0
    data_wait_s: float = 0.0  # time the loop waited for its batch: a data stall if it is a large share

    def wait_for(self, get_batch, it: int):
        start = time.perf_counter()
        batch = get_batch(it)
        self.data_wait_s += time.perf_counter() - start
        return batch

    def end(self) -> float:
        now = time.perf_counter()
        self.seconds = now - self.start
        return now
