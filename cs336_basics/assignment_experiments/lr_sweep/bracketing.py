"""Bracketing: extend the grid until the best learning rate is inside it and a point above it diverged.

On the full budget, published runs of the CS336 model find the best final validation loss near 1e-2 and the
first unstable learning rate near 3e-2, so the default grid (1e-4 ... 1e-2) alone has its optimum on its top
edge and nothing diverged: the divergence threshold can't be read from it. After the grid, this module proposes
one more point at a time on the 1-3-10 log ladder (..., 1e-2, 3e-2, 1e-1, ...) beyond the edge that needs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cs336_basics.assignment_experiments.sweep.view import SweepView


@dataclass(frozen=True)
class PointOutcome:
    lr: float
    state: str  # finished | diverged | failed | ...
    final_val_loss: float | None


def ladder_above(lr: float) -> float:
    """The next value of the 1-3-10 ladder strictly above ``lr`` (6e-3 -> 1e-2, 1e-2 -> 3e-2, 3e-2 -> 1e-1)."""
    exponent = math.floor(math.log10(lr))
    for k in range(exponent, exponent + 3):
        for m in (1, 3):
            value = float(f"{m}e{k}")
            if value > lr * (1 + 1e-9):
                return value
    raise AssertionError("unreachable")


def ladder_below(lr: float) -> float:
    """The next value of the 1-3-10 ladder strictly below ``lr`` (1e-4 -> 3e-5, 3e-5 -> 1e-5)."""
    exponent = math.floor(math.log10(lr))
    for k in range(exponent, exponent - 3, -1):
        for m in (3, 1):
            value = float(f"{m}e{k}")
            if value < lr * (1 - 1e-9):
                return value
    raise AssertionError("unreachable")


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


def next_extension(outcomes: list[PointOutcome]) -> tuple[float, str] | None:
    """The next learning rate to try and why (the reason only: callers say what they do with the value), or
    None when the sweep is bracketed (or can't say yet).

    Bracketed = the best converged point has a converged-or-diverged neighbour on both sides, and a point
    *above* it diverged: the divergence threshold is bracketed from above (a divergence far below the best, a
    crash-like point, says nothing about it). Failed points (crashes) carry no information and are ignored.
    """
    done = [o for o in outcomes if o.state in ("finished", "diverged")]
    if not done:
        return None
    converged = [o for o in done if o.state == "finished" and _finite(o.final_val_loss)]
    lrs = sorted(o.lr for o in done)
    if not converged:
        lowest = lrs[0]
        return ladder_below(lowest), f"every point diverged, the lowest at {lowest:g}"
    best = min(converged, key=lambda o: o.final_val_loss)
    diverged = [o for o in done if o.state == "diverged" and o.lr > best.lr]
    if best.lr == lrs[-1]:
        return ladder_above(best.lr), f"best lr {best.lr:g} is the largest tried"
    if not diverged:
        top = lrs[-1]
        return ladder_above(
            top
        ), f"no point above the best diverged: the divergence threshold lies above {top:g}"
    if best.lr == lrs[0]:
        return ladder_below(best.lr), f"best lr {best.lr:g} is the smallest tried"
    return None


def next_point(view: SweepView) -> tuple[float, str] | None:
    """``next_extension`` of a sweep's values (seeds pooled): what the sweep adds next, and what the analysis
    reports as still missing."""
    return next_extension([PointOutcome(g.value, g.state, g.final_val_loss) for g in view.groups])
