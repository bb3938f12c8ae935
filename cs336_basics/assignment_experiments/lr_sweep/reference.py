"""The "where should this run be by now" curve for the sweep's stall rule: the best smoothed train loss of the
sweep's smaller learning rates at each step (see cs336_basics.basics.divergence)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


class ReferenceCurves:
    """``ref(step)`` -> the lowest smoothed train loss any smaller learning rate of the sweep logged at ``step``
    (None when none has reached that step). Curves of runs in progress are re-read at most every
    ``refresh_s`` seconds; this is called only at log steps."""

    def __init__(self, sweep_dir: Path, lr: float, refresh_s: float = 30.0):
        self.sweep_dir, self.lr, self.refresh_s = Path(sweep_dir), lr, refresh_s
        self._curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._read_at = -float("inf")

    def _refresh(self) -> None:
        from cs336_basics.assignment_experiments.sweep.view import load_sweep

        for p in load_sweep(self.sweep_dir).points:
            if p.log is not None and p.value < self.lr:
                self._curves[p.name] = p.log.smoothed_train_loss()
        self._read_at = time.monotonic()

    def __call__(self, step: int) -> float | None:
        if time.monotonic() - self._read_at > self.refresh_s:
            self._refresh()
        values = [float(np.interp(step, s, v)) for s, v in self._curves.values() if len(s) and s[-1] >= step]
        return min((v for v in values if np.isfinite(v)), default=None)
