"""The sweep's best learning rate as a fitted optimum with a 68% interval, its LR sensitivity, and seed noise.

Pure functions of (lr, final validation loss) pairs: one pair per run, an lr repeated once per seed, ``None``
or NaN for a run that diverged. An lr counts as converged when all of its runs converged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Optimum:
    lr: float  # the estimated best learning rate
    low: float  # 68% interval (bootstrap 16th and 84th percentiles); NaN when the noise is unknown
    high: float
    loss: float  # the fitted (or best observed) loss there
    fit: str  # "quadratic": parabola in log10(lr) through the best point and its neighbours; "best point"
    fit_lrs: tuple[float, ...]  # the points the fit used
    # loss = a u^2 + b u + c with u = log10(lr); None for "best point"
    coeffs: tuple[float, float, float] | None
    on_edge: bool  # the optimum sits on the grid's edge: more points beyond it would move it
    noise: str  # where the bootstrap's noise level came from: NOISE_SEEDS, NOISE_SIGMA, NOISE_MIXED, NOISE_UNKNOWN

    @property
    def fit_text(self) -> str:
        """Which fit, in words (the report's sentence and the plot's legend)."""
        through = ", ".join(f"{lr:.3g}" for lr in self.fit_lrs)
        if self.fit == "quadratic":
            return f"fit: quadratic in log10 lr through {through}"
        why = "fewer than 3 converged lrs" if len(self.fit_lrs) < 3 else f"{through} are not convex"
        return f"fit: best point ({why}: no parabola)"


@dataclass(frozen=True)
class NeighbourComparison:
    lr: float
    margin: float  # neighbour's mean loss - best lr's mean loss (inf if the neighbour diverged)
    noise: float  # std of the best lr's seeds + std of the neighbour's (nan with a single seed)
    beats: bool | None  # margin > noise; None when there is no seed spread to judge by


NOISE_SEEDS = "std of seeds"
NOISE_SIGMA = "caller's sigma"
NOISE_MIXED = "mixed"  # seeds for some lrs, the caller's sigma for the others
NOISE_UNKNOWN = "unknown"  # a single-seed lr without a sigma: no interval


def _finite(v) -> bool:
    return v is not None and math.isfinite(v)


def _by_lr(lrs: Sequence[float], losses: Sequence[float | None], extra=None):
    """Sorted [(lr, losses of its runs, extras of its runs)]."""
    groups: dict[float, tuple[list, list]] = {}
    for lr, loss, x in zip(lrs, losses, [None] * len(lrs) if extra is None else extra):
        runs, extras = groups.setdefault(float(lr), ([], []))
        runs.append(loss)
        extras.append(x)
    return [(lr, *groups[lr]) for lr in sorted(groups)]


def fit_optimum(
    lrs: Sequence[float],
    losses: Sequence[float | None],
    sigmas: Sequence[float | None] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> Optimum | None:
    """Fit final loss against log10(lr) near the minimum; the optimum and a 68% parametric-bootstrap interval.

    Each converged lr's point is the mean of its runs; its noise is std/sqrt(n) over seeds when it has
    several, else the caller's ``sigmas`` for its run (e.g. std of the per-batch validation losses /
    sqrt(batches), which measures evaluation noise only); a single-seed lr without a sigma leaves the noise
    unknown and the interval NaN. ``None`` when no lr converged.
    """
    lr_list, y, s, from_seeds = [], [], [], []
    for lr, runs, sig in _by_lr(lrs, losses, sigmas):
        if all(_finite(v) for v in runs):
            lr_list.append(lr)
            y.append(float(np.mean(runs)))
            from_seeds.append(len(runs) > 1)
            if len(runs) > 1:
                s.append(float(np.std(runs, ddof=1)) / math.sqrt(len(runs)))
            else:
                s.append(float(sig[0]) if _finite(sig[0]) else math.nan)
    if not y:
        return None
    u, y, s = np.log10(lr_list), np.array(y), np.array(s)
    noise = NOISE_SEEDS if all(from_seeds) else NOISE_SIGMA if not any(from_seeds) else NOISE_MIXED
    if not np.isfinite(s).all():
        noise, n_boot = NOISE_UNKNOWN, 0
    best = int(np.argmin(y))
    edge = best in (0, len(y) - 1)
    samples = y + s * np.random.default_rng(seed).standard_normal((n_boot, len(y)))
    if len(y) < 3:  # no parabola: the interval is where the lowest point lands under the noise
        lo, hi = _interval(u[np.argmin(samples, axis=1)])
        return Optimum(
            lr_list[best], 10**lo, 10**hi, y[best], "best point", tuple(lr_list), None, edge, noise
        )
    start = min(max(best - 1, 0), len(y) - 3)  # the best point and its neighbours, shifted in at an edge
    w = slice(start, start + 3)
    uw = u[w]
    observed = np.concatenate([y[None, w], samples[:, w]])  # row 0: the data; then the bootstrap draws
    coeffs = np.linalg.solve(np.stack([uw**2, uw, np.ones(3)], axis=1), observed.T)  # parabolas through 3
    vertices = _vertices(coeffs, uw, observed)
    lo, hi = _interval(vertices[1:])
    a, b, c = coeffs[:, 0]
    u_opt = vertices[0]  # clamped to the fitted range: a parabola says nothing beyond its points
    if a <= 0:  # the three points are not convex: no vertex to speak of
        return Optimum(lr_list[best], 10**lo, 10**hi, y[best], "best point", tuple(10**uw), None, True, noise)
    edge = edge or not uw[0] <= -b / (2 * a) <= uw[-1]
    fitted = a * u_opt**2 + b * u_opt + c
    return Optimum(10**u_opt, 10**lo, 10**hi, fitted, "quadratic", tuple(10**uw), (a, b, c), edge, noise)


def _interval(u: np.ndarray) -> tuple[float, float]:
    """The 16th and 84th percentiles of bootstrap draws of log10(lr); NaN without draws."""
    return tuple(np.percentile(u, [16, 84])) if len(u) else (math.nan, math.nan)


def _vertices(coeffs: np.ndarray, u: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Each column's parabola vertex clamped to [u0, u2]; a concave one falls back to its lowest point."""
    a, b = coeffs[0], coeffs[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = np.where(a > 0, -b / (2 * a), np.nan)
    fallback = u[np.argmin(observed, axis=1)]
    return np.clip(np.where(np.isfinite(vertex), vertex, fallback), u[0], u[-1])


def lr_sensitivity(lrs: Sequence[float], losses: Sequence[float | None], initial_loss: float) -> float | None:
    """Wortsman et al. 2023: mean over the grid of min(loss, l0) - l*, a diverged run counting as l0 (the loss
    at initialisation), l* the best on the grid; seeds of one lr are averaged first. None if nothing converged."""
    per_lr = [
        np.mean([min(v, initial_loss) if _finite(v) else initial_loss for v in runs])
        for _, runs, _ in _by_lr(lrs, losses)
    ]
    if not any(_finite(v) for v in losses):
        return None
    return float(np.mean(per_lr) - np.min(per_lr))


def beats_neighbours(lrs: Sequence[float], losses: Sequence[float | None]) -> list[NeighbourComparison]:
    """Whether the best lr (lowest mean over seeds) beats each grid neighbour by more than mean +- std of seeds."""
    groups = _by_lr(lrs, losses)
    converged = [i for i, (_, runs, _) in enumerate(groups) if all(_finite(v) for v in runs)]
    if not converged:
        return []
    best = min(converged, key=lambda i: np.mean(groups[i][1]))
    b_runs = groups[best][1]
    out = []
    for i in (best - 1, best + 1):
        if not 0 <= i < len(groups):
            continue
        lr, runs, _ = groups[i]
        if i not in converged:
            out.append(NeighbourComparison(lr, math.inf, math.nan, True))
            continue
        margin = float(np.mean(runs) - np.mean(b_runs))
        if len(runs) < 2 or len(b_runs) < 2:
            out.append(NeighbourComparison(lr, margin, math.nan, None))
            continue
        noise = float(np.std(runs, ddof=1) + np.std(b_runs, ddof=1))
        out.append(NeighbourComparison(lr, margin, noise, margin > noise))
    return out
