"""The "where should this run be by now" curve for the sweep's stall rule: the best smoothed train loss of the
sweep's smaller learning rates at each step (see cs336_basics.basics.divergence)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from cs336_basics.assignment_experiments.lr_sweep.naming import lr_from_dir_name
from cs336_basics.basics.divergence import smooth
from cs336_basics.experiment_log import load_experiment_log


class ReferenceCurves:
    """``ref(step)`` -> the lowest smoothed train loss any smaller learning rate of the sweep logged at ``step``
    (None when none has reached that step). Curves of runs still in progress are re-read at most every
    ``refresh_s`` seconds; this is called only at log steps."""

    def __init__(self, sweep_dir: Path, lr: float, refresh_s: float = 30.0):
        self.sweep_dir, self.lr, self.refresh_s = Path(sweep_dir), lr, refresh_s
        self._curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._final: set[str] = set()
        self._read_at = -float("inf")

    def _refresh(self) -> None:
        for child in sorted(self.sweep_dir.iterdir()):
            lr = lr_from_dir_name(child.name)
            if lr is None or not lr < self.lr or child.name in self._final or not child.is_dir():
                continue
            log = load_experiment_log(child)
            if not len(log.metrics):
                continue
            steps = log.metrics["step"].to_numpy(dtype=float)
            smoothed, values = None, []
            for loss in log.metrics["train_loss"].to_numpy(dtype=float):
                smoothed = smooth(smoothed, float(loss))
                values.append(smoothed)
            self._curves[child.name] = (steps, np.asarray(values))
            if log.state in ("finished", "diverged", "failed"):
                self._final.add(child.name)
        self._read_at = time.monotonic()

    def __call__(self, step: int) -> float | None:
        if time.monotonic() - self._read_at > self.refresh_s:
            self._refresh()
        best = None
        for steps, values in self._curves.values():
            if len(steps) == 0 or steps[-1] < step:
                continue
            value = float(np.interp(step, steps, values))
            if np.isfinite(value) and (best is None or value < best):
                best = value
        return best
