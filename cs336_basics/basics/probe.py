"""What a run measures about its own stability, on one small fixed probe batch (the same windows for every
learning rate and every step): the instability signals at log steps (signals.py) and the Adam-preconditioned
sharpness against its threshold 38/lr (sharpness.py) on a schedule that keeps its cost near
``sharpness_share`` of the wallclock. Nothing here touches the model's weights, the optimizer's state or any
random state of training, so a run's trajectory is the same with the measurements on or off.
"""

from __future__ import annotations

import math

import torch

from cs336_basics.basics.config import ExperimentConfig
from cs336_basics.basics.divergence import stability_threshold
from cs336_basics.basics.kernels import loss_function
from cs336_basics.basics.sharpness import measurement_model, preconditioned_sharpness
from cs336_basics.basics.signals import instability_signals, update_rms_ratio
from cs336_basics.experiment_log.reader import signal_columns

PROBE_WINDOWS = 8  # windows of the probe batch


def sharpness_interval(cost_s: float, step_s: float, share: float, log_interval: int) -> int:
    """Steps between sharpness measurements so that they cost about ``share`` of the wallclock: the smallest
    ``log_interval * 2**k`` with ``cost_s <= share * (interval * step_s + cost_s)``. Rounding to powers of two
    makes every learning rate of a sweep (equal cost per step) measure at the same steps, and a re-run of the
    same command pick the same steps unless the timing sits near a power-of-two boundary."""
    if share >= 1:
        return log_interval
    needed_steps = cost_s * (1 - share) / (share * max(step_s, 1e-9))
    return log_interval * 2 ** max(0, math.ceil(math.log2(max(needed_steps / log_interval, 1.0))))


class Probe:
    """The probe batch and the measurements taken on it (see the module docstring)."""

    def __init__(self, cfg: ExperimentConfig, model: torch.nn.Module, optimizer, val_batch: tuple):
        self.cfg, self.model, self.optimizer = cfg, model, optimizer
        self.x, self.y = (t[:PROBE_WINDOWS] for t in val_batch)
        self.columns = signal_columns(cfg.num_layers) if cfg.signals else ()

    def weights(self) -> list[torch.Tensor] | None:
        """A copy of the weights before a log step's optimizer step (for the update-RMS ratio); None when the
        signals are off."""
        return [p.detach().clone() for p in self.model.parameters()] if self.columns else None

    def signals(self, weights_before: list[torch.Tensor] | None) -> dict:
        """The metrics.csv signal columns (empty when off)."""
        if not self.columns:
            return {}
        with torch.no_grad():
            row = instability_signals(self.model, self.x)
        after = [p.detach() for p in self.model.parameters()]
        row["update_rms_ratio"] = update_rms_ratio(weights_before, after)
        return row

    def sharpness(self, step: int, lr: float) -> dict:
        """One sharpness.csv row: lambda_max(P^-1 H) on the probe batch against (2 + 2 b1) / ((1 - b1) lr),
        measured on an eager copy of the model with the math attention (it has a double backward)."""
        model, reference_loss = measurement_model(self.model), loss_function("reference")
        sharpness = preconditioned_sharpness(
            model, self.optimizer, self.x, self.y, loss_fn=reference_loss, iters=self.cfg.sharpness_iters
        )
        threshold = stability_threshold(lr, self.cfg.beta1)
        return dict(step=step, lr=lr, sharpness=sharpness, threshold=threshold, ratio=sharpness / threshold)
