"""Does the best learning rate train at the edge of stability? The sweep's answer, computed from its run dirs.

Pure functions of a ``SweepView`` returning rows and sentences (report.py renders them, plots.py draws):

- per lr, from each run's sharpness.csv: the peak of ratio = preconditioned sharpness / threshold (the
  threshold is (2 + 2 beta1) / ((1 - beta1) lr), 38/lr at beta1 = 0.9: Cohen et al. 2022, arXiv 2207.14484),
  the step of the peak, and the share of the *measured* steps with a ratio above ``EDGE_FRACTION``;
- whether the best lr trains at the edge (the rule: ``EDGE_MIN_SHARE``);
- which instability signal moved first in each run that diverged (``signal_moves``);
- the LR sensitivity (Wortsman et al. 2023, arXiv 2309.14322) and the fitted optimum with its 68% interval
  and, with seeds, whether the best lr beats each neighbour by more than the noise (optimum.py).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

import numpy as np

from cs336_basics.assignment_experiments.lr_sweep.optimum import (
    NOISE_MIXED,
    NOISE_SEEDS,
    NOISE_SIGMA,
    Optimum,
    beats_neighbours,
    fit_optimum,
    lr_sensitivity,
)
from cs336_basics.assignment_experiments.sweep.record import flag_text
from cs336_basics.assignment_experiments.sweep.view import SweepPoint, SweepView, ValueGroup
from cs336_basics.experiment_log.reader import DONE_STATES, SIGNALS, finite_or_none
from cs336_basics.formatting import loss_text

EDGE_FRACTION = 0.9  # a measured step is "at the edge" when its ratio is above 0.9 of the threshold
EDGE_MIN_SHARE = 0.2  # an lr trains at the edge when >= 20% of its measured steps are at the edge
FEW_MEASUREMENTS = 3  # fewer measurements than this make any answer coarse: said so
FAR_ABOVE = 3.0  # a converged run whose ratio peaks above this was not *at* the edge: the answer is "unclear"
INTERPOLATION_GAP = 0.05  # nats: a fitted minimum this far below every measured loss is flagged as a guess
BAND_SHARE = 0.25  # a diverged run's early band: its log steps up to 25% of the divergence step
MOVE_FACTOR = 2.0  # a signal moved when it left its early band by this factor (in its unstable direction)
FALLING_SIGNALS = ("attn_entropy_min",)  # collapses when unstable; every other signal grows (log Z in size)


# ---- sharpness against the threshold -----------------------------------------------------------------


@dataclass(frozen=True)
class EdgeRow:
    """One lr's sharpness measurements, pooled over its seeds."""

    lr: float
    state: str
    seeds: int
    measured: int  # sharpness measurements over all seeds
    above: int  # of them with ratio > EDGE_FRACTION
    peak: float | None  # peak ratio, mean over the seeds that measured
    peak_std: float | None  # std of the seeds' peaks (None with one seed)
    peak_steps: tuple[int, ...]  # the step of the peak, per seed that measured

    @property
    def share(self) -> float | None:
        return self.above / self.measured if self.measured else None


def edge_row(group: ValueGroup) -> EdgeRow:
    peaks, steps, measured, above = [], [], 0, 0
    for log in (p.log for p in group.points if p.log is not None):
        sh = log.sharpness
        sh = sh[np.isfinite(sh["ratio"])]
        if not len(sh):
            continue
        i = int(sh["ratio"].to_numpy().argmax())
        peaks.append(float(sh["ratio"].iloc[i]))
        steps.append(int(sh["step"].iloc[i]))
        measured += len(sh)
        above += int((sh["ratio"] > EDGE_FRACTION).sum())
    peak = statistics.fmean(peaks) if peaks else None
    std = statistics.stdev(peaks) if len(peaks) > 1 else None
    return EdgeRow(group.lr, group.state, len(group.points), measured, above, peak, std, tuple(steps))


def edge_rows(view: SweepView) -> list[EdgeRow]:
    return [edge_row(g) for g in view.groups]


def at_edge_text(view: SweepView, rows: list[EdgeRow]) -> str:
    """The yes/no answer for the best lr, with its numbers and the rule."""
    best = view.best
    if best is None:
        return "No learning rate has finished yet, so whether the best one trains at the edge of stability is unknown."
    row = next(r for r in rows if r.lr == best.lr)
    threshold = f"the threshold {view.threshold_text}"
    if not row.measured:
        return (f"Whether the best learning rate {best.lr:.3g} trains at the edge of stability is unknown: it has "
                "no sharpness measurements (sharpness.csv missing or empty; `--sharpness-share 0` turns them off).")  # fmt: skip
    yes = row.share >= EDGE_MIN_SHARE
    far = yes and row.peak > FAR_ABOVE
    seeds = f" over its {row.seeds} seeds" if row.seeds > 1 else ""
    peak = loss_text(row.peak, row.peak_std, ".2f")
    verdict = "Unclear" if far else "Yes" if yes else "No"
    claim = "may train" if far else "trains" if yes else "does not train"
    text = (
        f"**{verdict}**: the best learning rate {best.lr:.3g} {claim} "
        f"at the edge of stability. Its preconditioned sharpness was above {EDGE_FRACTION:g} x {threshold} at "
        f"{row.above} of its {row.measured} measured steps{seeds} ({row.share:.0%}) and peaked at {peak} x the "
        f"threshold (step {steps_text(row.peak_steps)}). Rule: an lr trains at the edge when its ratio is above "
        f"{EDGE_FRACTION:g} at {EDGE_MIN_SHARE:.0%} or more of its measured steps."
    )
    if far:
        text += (f" But a ratio far above 1 (over {FAR_ABOVE:g} x) in a run that still converged says the measurement "
                 "left the regime, not the training: at the edge the ratio hovers near 1 (Cohen et al. 2022). Early "
                 "steps, while Adam's second moments are still small, inflate it; longer runs and more measurements "
                 "(`--sharpness-share`) settle it.")  # fmt: skip
    if row.measured < FEW_MEASUREMENTS * row.seeds:
        share = finite_or_none(view.config.get("sharpness_share")) or 0.0
        text += f" Only {row.measured} measurement(s): a coarse answer."
        if share < 0.5:  # doubled, up to half the wallclock; beyond that only a longer run measures more
            more = f"{min(2 * share, 0.5):g}" if share > 0 else "0.1"
            text += (f" For more, retrain it with `--restart {flag_text(best.lr)} --sharpness-share {more}` "
                     "(a finished run is not retrained).")  # fmt: skip
    return text


def steps_text(steps: tuple[int, ...]) -> str:
    """The step of the peak per seed, as the answer and the table show it: ``120 / 140``."""
    return " / ".join(str(s) for s in steps) or "-"


# ---- which instability signal moved first ----------------------------------------------------------


@dataclass(frozen=True)
class SignalMove:
    signal: str  # a key of reader.SIGNALS
    step: int | None  # the first log step after the band at which it moved; None: it did not
    value: float | None  # its value there
    band: tuple[float, float]  # (min, max) over the early band


def signal_moves(point: SweepPoint) -> list[SignalMove] | None:
    """How each instability signal of a diverged run behaved before the divergence step.

    A signal's *early band* is the (min, max) of its values at the log steps up to ``BAND_SHARE`` of the
    divergence step (at least its first logged value). The signal *moved* at the first later log step (up to
    the divergence step) where it left that band by ``MOVE_FACTOR`` in its unstable direction: above
    ``MOVE_FACTOR`` x the band's max for the signals that grow when training destabilises (the max attention
    logit over layers, the size |mean log Z|, the mean (log Z)^2, the update-RMS ratio), below the band's
    min / ``MOVE_FACTOR`` for the one that collapses (``FALLING_SIGNALS``: the min attention entropy). An
    infinite value counts as moved, a missing one (NaN) is skipped. ``None`` when the run has no signal row
    after its band.
    """
    if point.log is None or point.step is None:
        return None
    sig = point.log.signals
    sig = sig[sig["step"] <= point.step]
    cut = max(BAND_SHARE * point.step, float(sig["step"].min()) if len(sig) else 0.0)
    early, later = sig[sig["step"] <= cut], sig[sig["step"] > cut]
    if not len(early) or not len(later):
        return None
    out = []
    for name in SIGNALS:
        values = early[name].abs() if name == "logz_mean" else early[name]
        values = values[np.isfinite(values)]
        if not len(values):
            continue
        lo, hi = float(values.min()), float(values.max())
        moved = next(((int(s), float(v)) for s, v in zip(later["step"], later[name])
                      if not math.isnan(v) and _left_band(name, v, lo, hi)), (None, None))  # fmt: skip
        out.append(SignalMove(name, *moved, (lo, hi)))
    return out


def _left_band(name: str, value: float, lo: float, hi: float) -> bool:
    if not math.isfinite(value):
        return True
    if name in FALLING_SIGNALS:
        return value < lo / MOVE_FACTOR
    return abs(value) > MOVE_FACTOR * hi


def moved_first_text(view: SweepView) -> list[str]:
    """One sentence per diverged run: which signal moved first, and when each moved against the divergence."""
    out = []
    for p in view.points:
        if p.state != "diverged":
            continue
        name = f"lr {p.value:.3g}" + (f" (seed {p.seed})" if p.seed else "")
        head = f"{name} diverged at step {p.step} ({p.reason or 'no reason recorded'})"
        moves = signal_moves(p)
        if moves is None:
            out.append(f"{head}: too few signal log steps before it to tell which signal moved first")
            continue
        moved = sorted((m for m in moves if m.step is not None), key=lambda m: m.step)
        if not moved:
            out.append(f"{head}: no signal left its early band by x{MOVE_FACTOR:g} before it")
            continue
        first = [m for m in moved if m.step == moved[0].step]
        lead = p.step - first[0].step
        each = "; ".join(_move_text(m) for m in [*moved, *(m for m in moves if m.step is None)])
        out.append(f"{head}: **{' and '.join(SIGNALS[m.signal] for m in first)}** moved first, at step "
                   f"{first[0].step} ({lead} steps before the divergence). Each signal: {each}")  # fmt: skip
    return out


def _move_text(m: SignalMove) -> str:
    """``max attention logit at step 60 (30, above 2 x 10)`` / ``... did not move``."""
    if m.step is None:
        return f"{SIGNALS[m.signal]} did not move"
    if m.signal in FALLING_SIGNALS:
        bound = f"below {m.band[0]:.3g} / {MOVE_FACTOR:g}"
    else:
        bound = f"above {MOVE_FACTOR:g} x {m.band[1]:.3g}"
    return f"{SIGNALS[m.signal]} at step {m.step} ({m.value:.3g}, {bound})"


def moved_rule_text() -> str:
    return (f"A signal *moved* when it left its early-training band (its values up to {BAND_SHARE:.0%} of the "
            f"divergence step) by x{MOVE_FACTOR:g} in its unstable direction: the max attention logit (over "
            "layers), |mean log Z|, mean (log Z)² and the update-RMS ratio upwards, the min attention entropy "
            "downwards.")  # fmt: skip


# ---- LR sensitivity and the fitted optimum ------------------------------------------------------------


def _done_runs(view: SweepView) -> list[SweepPoint]:
    """The runs of the learning rates whose every seed finished or diverged: a running or failed seed says
    nothing about the loss landscape, and a learning rate with one is left out whole, as ``view.best``
    leaves it out (its other seeds alone would be another mean)."""
    return [p for g in view.groups if g.state in DONE_STATES for p in g.points]


def _lrs_and_losses(runs: list[SweepPoint]) -> tuple[list[float], list[float | None]]:
    """optimum.py's input: each run's lr and final validation loss, None for a run that did not converge."""
    return [p.value for p in runs], [p.final_val_loss if p.converged else None for p in runs]


def sensitivity_text(view: SweepView) -> str:
    runs = _done_runs(view)
    l0s = [p.initial_loss for p in runs if p.initial_loss is not None]
    if view.best is None:
        return "LR sensitivity: unknown (no learning rate has converged yet)."
    if not l0s:
        return "LR sensitivity: unknown (no summary.json records `initial_loss`, the loss at step 1)."
    l0 = statistics.fmean(l0s)
    value = lr_sensitivity(*_lrs_and_losses(runs), l0)
    best = view.best.final_val_loss  # l*: the lowest mean over seeds, as lr_sensitivity takes it
    n = len({p.value for p in runs})
    return (f"LR sensitivity (Wortsman et al. 2023): **{value:.3f} nats**, the mean over the {n} learning rates "
            f"tried of min(final val loss, ℓ₀) − ℓ*, with ℓ₀ = {l0:.3f} (the loss at step 1, summary.json's "
            f"`initial_loss`; a diverged lr counts as ℓ₀) and ℓ* = {best:.4f} (the best on the grid; seeds of "
            f"one lr averaged first). 0 means every lr tried is as good as the best; lower is more robust.")  # fmt: skip


def optimum_fit(view: SweepView) -> Optimum | None:
    """fit_optimum on the finished and diverged runs; a single seed's noise is its summary's val_loss_sem."""
    runs = _done_runs(view)
    return fit_optimum(*_lrs_and_losses(runs), [p.val_loss_sem for p in runs])


NOISE_TEXT = {
    NOISE_SEEDS: "the std over seeds / sqrt(seeds)",
    NOISE_SIGMA: "the spread of the final evaluation's per-batch validation losses (val_loss_sem: evaluation "
    "noise only, not seed-to-seed)",
    NOISE_MIXED: "the std over seeds where an lr has several, else val_loss_sem",
}


def optimum_text(view: SweepView, fit: Optimum | None) -> list[str]:
    """The fitted optimum with its interval and fit, an edge warning, and the seed-noise comparison."""
    if fit is None:
        return ["No learning rate has converged yet: no fitted optimum."]
    if math.isfinite(fit.low) and math.isfinite(fit.high):
        same = fit.low == fit.high  # every noise draw picks the same lr
        interval = (
            "the same lr under every noise draw" if same else f"68% interval [{fit.low:.3g}, {fit.high:.3g}]"
        )
        noise = f"noise from {NOISE_TEXT[fit.noise]}"
    else:
        interval = "68% interval unknown"
        noise = ("noise unknown: one seed per lr and no `val_loss_sem` in summary.json (runs from an older "
                 "trainer; `--seeds 2` measures the seed-to-seed noise)")  # fmt: skip
    fitted = fit.fit == "quadratic"
    out = [f"{'Fitted optimum' if fitted else 'Optimum'}: lr **{fit.lr:.3g}** ({interval}, {fit.fit_text}, {noise}); "
           f"{'fitted ' if fitted else ''}loss there {fit.loss:.4f}."]  # fmt: skip
    best = view.best
    gap = best.final_val_loss - fit.loss if best is not None and fitted else 0.0
    if gap > INTERPOLATION_GAP:
        lo = max((x for x in fit.fit_lrs if x <= fit.lr), default=fit.lr)
        hi = min((x for x in fit.fit_lrs if x >= fit.lr), default=fit.lr)
        out.append(f"Warning: the parabola's minimum lies {gap:.2f} nats below the best measured loss, between "
                   f"{lo:.3g} and {hi:.3g}, where nothing was tried: there the fit is a guess; a point near "
                   f"{fit.lr:.2g} (`--learning-rates ... {fit.lr:.2g}`) checks it.")  # fmt: skip
    if fit.on_edge:
        side = "upper" if fit.lr >= math.sqrt(min(fit.fit_lrs) * max(fit.fit_lrs)) else "lower"
        out.append(f"Warning: the optimum sits on the {side} edge of the converged points: learning rates beyond "
                   "it were not tried or did not converge, so the true optimum may lie further out.")  # fmt: skip
    out += neighbour_text(view)
    return out


def neighbour_text(view: SweepView) -> list[str]:
    """With seeds: does the best lr beat each grid neighbour by more than the noise of the seeds?"""
    runs = _done_runs(view)
    if max((len(g.points) for g in view.groups), default=1) < 2:
        return ["One seed per learning rate: whether the best lr beats its neighbours by more than the noise "
                "is not measured (run `--seeds 2`)."]  # fmt: skip
    best = view.best
    out = []
    for c in beats_neighbours(*_lrs_and_losses(runs)):
        name = f"lr {best.lr:.3g} vs its neighbour {c.lr:.3g}"
        if math.isinf(c.margin):
            out.append(f"{name}: the neighbour diverged (at one seed or more), so the best beats it")
        elif c.beats is None:
            out.append(
                f"{name}: {c.margin:+.4f} nats; one of the two has a single seed, so no noise to judge by"
            )
        else:
            verdict = (
                "beats it by more than the noise" if c.beats else "does not beat it by more than the noise"
            )
            out.append(f"{name}: {verdict} (margin {c.margin:+.4f} nats, noise {c.noise:.4f}: the sum of the "
                       "two lrs' seed stds)")  # fmt: skip
    return out


# ---- everything the report shows ------------------------------------------------------------------------


@dataclass
class StabilityFindings:
    rows: list[EdgeRow] = field(default_factory=list)
    at_edge: str = ""
    moved_first: list[str] = field(default_factory=list)
    sensitivity: str = ""
    fit: Optimum | None = None
    optimum: list[str] = field(default_factory=list)

    def sentences(self) -> list[str]:
        """What the terminal shows."""
        return [self.at_edge, *self.moved_first, self.sensitivity, *self.optimum]


def stability_findings(view: SweepView) -> StabilityFindings:
    rows = edge_rows(view)
    fit = optimum_fit(view)
    return StabilityFindings(rows, at_edge_text(view, rows), moved_first_text(view), sensitivity_text(view),
                             fit, optimum_text(view, fit))  # fmt: skip
