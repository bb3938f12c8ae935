"""When is a run diverged? A pure rule, checked at every log step on the (host-side) train loss.

A run is stopped with status ``diverged`` when, at a log step:
1. ``non-finite``: the loss is NaN or infinite;
2. ``exploded``: the loss is above ``explode_factor`` x the run's first logged loss (for a fresh model that is
   about ln(vocab), the loss of a uniform guess: a healthy run never goes back above it);
3. ``rebounded``: the smoothed loss has climbed more than ``rebound_margin`` nats above the lowest smoothed loss
   the run had reached (a too-high learning rate that first learned, then fell apart);
4. ``stalled``: after ``check_after`` x max_steps (and at least ``min_steps``), the smoothed loss is still above ``stall_fraction`` x the
   initial loss (the model has learned next to nothing), or, in a sweep, it is more than ``stall_margin`` nats
   above the best run with a *smaller* learning rate at the same step. With gradient clipping, too-high
   learning rates rarely give NaN: they sit at a high loss (~4.5-5 nats for the TinyStories model) while
   smaller learning rates are far below; rule 4 catches that. A too-low learning rate is not "diverged": its
   loss falls steadily (no rebound), and it is compared only against *smaller* learning rates.
The smoothed loss is an exponential moving average over log steps (``SMOOTHING``), so one noisy interval
does not stop a run. ``stability_threshold`` is the sharpness above which Adam's updates are unstable: what the
measured sharpness (probe.py) is compared with. Nothing here imports torch: the read-only commands use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

SMOOTHING = 0.8  # EMA weight of the previous smoothed value, per log step


@dataclass(frozen=True)
class DivergenceRule:
    """The thresholds of the rules below; their defaults and meaning live in ExperimentConfig's divergence_*."""

    check_after: float
    explode_factor: float
    rebound_margin: float
    stall_fraction: float
    stall_margin: float
    min_steps: int

    @classmethod
    def from_config(cls, config) -> DivergenceRule:
        """The rule of an ``ExperimentConfig``: each field ``x`` here is its ``divergence_x``."""
        return cls(**{f.name: getattr(config, f"divergence_{f.name}") for f in fields(cls)})


def smooth(previous: float | None, loss: float) -> float | None:
    """Exponential moving average of the logged train loss. A non-finite loss (a NaN row) leaves it as it
    was: it is rule 1's to judge, and must not reset the history the stall and rebound rules compare."""
    if not math.isfinite(loss):
        return previous
    if previous is None:
        return loss
    return SMOOTHING * previous + (1.0 - SMOOTHING) * loss


def divergence_reason(
    rule: DivergenceRule,
    *,
    step: int,
    max_steps: int,
    loss: float,
    smoothed_loss: float,
    initial_loss: float,
    min_smoothed_loss: float | None = None,
    reference_loss: float | None = None,
) -> str | None:
    """The reason the run counts as diverged at ``step``, or None if it looks healthy."""
    if not math.isfinite(loss):
        return f"non-finite train loss ({loss}) at step {step}"
    if loss > rule.explode_factor * initial_loss:
        return (
            f"exploded: train loss {loss:.3f} at step {step} is above {rule.explode_factor:g} x "
            f"the initial loss {initial_loss:.3f}"
        )
    if min_smoothed_loss is not None and smoothed_loss > min_smoothed_loss + rule.rebound_margin:
        return (
            f"rebounded: smoothed train loss {smoothed_loss:.3f} at step {step} climbed "
            f"{smoothed_loss - min_smoothed_loss:.2f} nats above its lowest, {min_smoothed_loss:.3f}"
        )
    if step < max(rule.check_after * max_steps, rule.min_steps):  # too early to call a stall
        return None
    if smoothed_loss > rule.stall_fraction * initial_loss:
        smoothed, bound = _apart(smoothed_loss, rule.stall_fraction * initial_loss)
        return (
            f"stalled: smoothed train loss {smoothed} (last logged {loss:.3f}) at step {step} is still "
            f"above {rule.stall_fraction:g} x the initial loss {initial_loss:.3f} = {bound}"
        )
    if reference_loss is not None and smoothed_loss > reference_loss + rule.stall_margin:
        return (
            f"stalled: smoothed train loss {smoothed_loss:.3f} (last logged {loss:.3f}) at step {step} is {smoothed_loss - reference_loss:.2f} "
            f"nats above a smaller learning rate's {reference_loss:.3f} at the same step (margin {rule.stall_margin:g})"
        )
    return None


def stability_threshold(lr: float, beta1: float) -> float:
    """(2 + 2 beta1) / ((1 - beta1) lr): Adam's edge of stability (38 / lr at beta1 = 0.9); inf at lr = 0."""
    return math.inf if lr <= 0 else (2.0 + 2.0 * beta1) / ((1.0 - beta1) * lr)


def _apart(value: float, bound: float) -> tuple[str, str]:
    """``value`` and ``bound`` at 3 decimals, or at as many more (up to 6) as it takes to tell them apart: a stall
    called by a hair read "6.892 is still above ... = 6.892"."""
    for digits in range(3, 7):
        shown = f"{value:.{digits}f}", f"{bound:.{digits}f}"
        if shown[0] != shown[1]:
            break
    return shown
