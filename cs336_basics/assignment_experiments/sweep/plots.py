"""The figures every sweep client shares: loss curves of every point against steps and wallclock, final loss
against the swept value (mean ± std over seeds as error bars, optionally a fitted optimum), the sharpness
ratio against its stability threshold and the instability signals against step.

Colours are one function of a value's rank among the sweep's sorted values (viridis), so a value has the
same colour in both figures and at every seed. Drawn on matplotlib's Agg canvas (no pyplot) and saved atomically.
"""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib import colormaps
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import NullFormatter

from cs336_basics.assignment_experiments.sweep.view import SweepPoint, SweepView
from cs336_basics.experiment_log.plots import (
    FINE_SUBS,
    LOSS_LABEL,
    drawable,
    new_figure,
    no_data,
    plain_log_y,
    save_figure,
)
from cs336_basics.experiment_log.reader import DONE_STATES, SIGNALS

if TYPE_CHECKING:
    from cs336_basics.assignment_experiments.lr_sweep.optimum import Optimum

COMPARISON_FILE = "lr_sweep_comparison.png"
LR_LOSS_FILE = "lr_vs_final_loss.png"
SHARPNESS_PLOT_FILE = "lr_sweep_sharpness.png"
SIGNALS_PLOT_FILE = "lr_sweep_signals.png"
SEED_STYLES = ("-", "--", ":", "-.")  # line style by seed index, colour by value
LOG_SCALE_SIGNALS = ("max_attn_logit", "logz_sq_mean", "update_rms_ratio")
DIVERGED_COLOR = "#d62728"
DIVERGED_X = dict(ls="", marker="X", mfc=DIVERGED_COLOR, mec="black")  # a diverged run's last point
FIT_COLOR = "#ff7f0e"


def lr_colors(lrs) -> dict[float, tuple]:
    """One colour per value from its rank in the sorted list (viridis, light yellow end avoided)."""
    ordered = sorted(set(lrs))
    cmap = colormaps["viridis"]
    n = len(ordered)
    return {lr: cmap(0.88 * i / (n - 1) if n > 1 else 0.4) for i, lr in enumerate(ordered)}


def point_label(p: SweepPoint, label: str = "lr") -> str:
    """Legend text: ``lr 0.003`` (``, seed 1``) plus the state when it is not a plain finished run."""
    label = f"{label} {p.value:.3g}" + (f", seed {p.seed}" if p.seed else "")
    if p.state == "diverged":
        label += "  (diverged)"
    elif p.state != "finished":
        label += f"  ({p.state})"
    return label + ("  +" if p.is_extension else "")


def time_scale(seconds: float) -> tuple[float, str]:
    """A divisor and unit that keep wallclock ticks readable."""
    if seconds < 120:
        return 1.0, "seconds"
    if seconds < 2 * 3600:
        return 60.0, "minutes"
    return 3600.0, "hours"


def _run_line(ax, xs, ys, diverged: bool, mark_size: float, **style) -> None:
    """One run's curve (nothing when it has no points); a diverged run's last point marked with a red X. A
    single point draws no segment: it is a dot in the run's colour, wide enough to ring a diverged run's X."""
    if not len(xs):
        return
    if len(xs) == 1:
        style = {**style, "marker": "o", "ms": mark_size + 7 if diverged else style.get("ms", 6)}
    ax.plot(xs, ys, **style)
    if diverged:
        ax.plot(xs.iloc[-1], ys.iloc[-1], ms=mark_size, zorder=5, **DIVERGED_X)


def _seed_style(p: SweepPoint, view: SweepView) -> str:
    seeds = sorted({q.seed for q in view.points if q.value == p.value})
    return SEED_STYLES[seeds.index(p.seed) % len(SEED_STYLES)]


def _largest(points: list[SweepPoint], column: str) -> float:
    largest = max((float(p.log.metrics[column].max()) for p in points), default=0.0)
    return largest if math.isfinite(largest) else 0.0


def plot_sweep_comparison(
    view: SweepView, out_path: str | os.PathLike, label: str = "lr", by_tokens: bool = False
) -> Path:
    """2x2 figure: train (top) and val (bottom) loss against steps (left) and wallclock (right); with
    ``by_tokens`` a middle column against tokens seen (points whose steps hold different numbers of tokens)."""
    points = [p for p in view.points if p.log is not None and len(p.log.metrics)]
    colors = lr_colors(p.value for p in view.points)
    divisor, unit = time_scale(_largest(points, "wallclock_s"))
    token_divisor, token_unit = (1e6, "millions") if _largest(points, "tokens") >= 1e6 else (1e3, "thousands")
    x_axes = [("step", 1.0, "step (optimizer steps)"), ("wallclock_s", 1 / divisor, f"wallclock ({unit})")]
    if by_tokens:
        x_axes.insert(1, ("tokens", 1 / token_divisor, f"tokens seen ({token_unit})"))
    target = view.target_val_loss
    fig = new_figure((4.6 * len(x_axes) + 3.8, 8.5), left=0.07, right=0.80, bottom=0.08, top=0.92, wspace=0.08,
                     hspace=0.22)  # fmt: skip
    # Shared x per column: a run's lone final evaluation sits on the steps (or time) its training covered.
    axes = fig.subplots(2, len(x_axes), sharey="row", sharex="col")
    for row, (col_name, kind) in enumerate((("train_loss", "train"), ("val_loss", "validation"))):
        style = {"lw": 1.0, "alpha": 0.85} if row == 0 else {"lw": 1.4, "marker": "o", "ms": 3}
        for col, (x_col, scale, x_label) in enumerate(x_axes):
            ax = axes[row][col]
            for p in points:
                m = drawable(p.log.metrics, col_name)
                m = m[m[x_col].notna()]
                diverged = p.state == "diverged"
                line = dict(color=colors[p.value], ls=_seed_style(p, view), **style)
                _run_line(ax, m[x_col] * scale, m[col_name], diverged, 11, **line)
            if target is not None and target > 0:
                ax.axhline(target, color="gray", ls="--", lw=1)
            plain_log_y(ax, FINE_SUBS)
            if row == 1:  # the shared x axis is labelled once, under the validation row
                ax.set_xlabel(x_label)
            ax.grid(True, which="both", alpha=0.3)
            if col == 0:
                ax.set_ylabel(f"{kind} {LOSS_LABEL}")
            if not points:
                no_data(ax, "no runs with data yet")
    handles = [Line2D([], [], color=colors[p.value], ls=_seed_style(p, view), lw=2, label=point_label(p, label))
               for p in points]  # fmt: skip
    if any(p.state == "diverged" for p in points):
        handles.append(Line2D([], [], ms=10, label="diverged here", **DIVERGED_X))
    if target is not None:
        handles.append(Line2D([], [], color="gray", ls="--", lw=1, label=f"target val loss {target:g}"))
    if handles:
        fig.legend(handles=handles, loc="center left", bbox_to_anchor=(0.81, 0.5), title=label)
    fig.suptitle(f"{label} sweep: {_title(view)}")
    return save_figure(fig, out_path)


def plot_lr_vs_loss(
    view: SweepView, out_path: str | os.PathLike, label: str = "learning rate", fit: Optimum | None = None
) -> Path:
    """Final val loss (mean ± std over seeds) and best val loss against the swept value (log x); diverged
    values as red x's at the top edge; the best value and the divergence threshold marked; with ``fit``
    (optimum.fit_optimum) the fitted parabola over its points, the optimum and its 68% interval."""
    groups = view.groups
    colors = lr_colors(g.value for g in groups)
    fig = new_figure((12, 5.5), left=0.07, right=0.70, bottom=0.12, top=0.9)
    ax = fig.subplots()
    ok = [g for g in groups if g.state != "diverged" and g.final_val_loss is not None]
    if ok:
        ax.plot([g.value for g in ok], [g.final_val_loss for g in ok], color="gray", lw=1, zorder=1)
    for g in ok:
        c = colors[g.value]
        ax.errorbar(g.value, g.final_val_loss, yerr=g.final_val_std, fmt="o", ms=9, color=c,
                    mfc=c if g.state == "finished" else "white", mew=2, capsize=4)  # fmt: skip
        if g.best_val_loss is not None:
            ax.plot(g.value, g.best_val_loss, "_", ms=14, mew=2, color=c)
    top = ax.get_xaxis_transform()  # x in data, y in axes fraction
    for g in groups:
        if g.state == "diverged":
            ax.plot(g.value, 0.96, ls="", transform=top, clip_on=False, marker="x", ms=12, mew=3,
                    color=DIVERGED_COLOR)  # fmt: skip
        elif g.state == "failed":
            ax.plot(g.value, 0.04, ls="", transform=top, clip_on=False, marker="s", ms=8, mfc="white",
                    mec="gray", mew=1.5)  # fmt: skip
    best, diverged = view.best, view.smallest_diverged
    if best is not None:
        ax.axvline(best.value, color="green", ls="--", lw=1.2)
        ax.text(best.value, 0.98, f" best {best.value:.3g}", color="green", transform=top, va="top")
    if diverged is not None:
        ax.axvline(diverged.value, color=DIVERGED_COLOR, ls=":", lw=1.5)
        ax.text(diverged.value, 0.88, f" diverges from {diverged.value:.3g}", color=DIVERGED_COLOR,
                transform=top, va="top")  # fmt: skip
    if view.target_val_loss is not None:
        ax.axhline(view.target_val_loss, color="gray", ls="--", lw=1)
    fit_handles = _draw_fit(ax, fit) if fit is not None else []
    ax.set_xscale("log")
    if groups:
        ax.set_xlim(groups[0].value / 1.6, groups[-1].value * 1.6)
        ax.set_xticks([g.value for g in groups], [f"{g.value:g}" for g in groups])  # every swept value named
        ax.xaxis.set_minor_formatter(NullFormatter())
    ys = [y for g in ok for y in (g.final_val_loss, g.best_val_loss) if y is not None]
    ys += [fit.loss] if fit is not None and ys else []
    if ys:
        pad = max(0.08 * (max(ys) - min(ys)), 0.05)
        ax.set_ylim(min(ys) - pad, max(ys) + 3 * pad)  # head room for the diverged marks and labels
    else:
        no_data(ax, "no validation loss yet")
    ax.set_xlabel(f"{label} (log scale)")
    ax.set_ylabel(f"final validation {LOSS_LABEL}")
    ax.grid(True, which="both", alpha=0.3)
    seeds = " (mean ± std over seeds)" if any(len(g.points) > 1 for g in groups) else ""
    states = {g.state for g in groups}
    legend = [
        Line2D([], [], ls="", marker="o", ms=8, color="gray", label=f"final val loss{seeds}"),
        Line2D([], [], ls="", marker="_", ms=12, mew=2, color="gray", label="best val loss"),
        *([Line2D([], [], ls="", marker="x", ms=9, mew=3, color=DIVERGED_COLOR, label="diverged")]
          if "diverged" in states else []),
        *([Line2D([], [], ls="", marker="s", mfc="white", mec="gray", label="failed (no loss)")]
          if "failed" in states else []),
        *fit_handles,
    ]  # fmt: skip
    ax.legend(handles=legend, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=9)
    ax.set_title(f"final validation loss vs {label}: {_title(view)}")
    return save_figure(fig, out_path)


def _draw_fit(ax, fit: Optimum) -> list:
    """The parabola over the points it used, the optimum as a star, its 68% interval as a shaded span;
    returns the legend handles (which fit, the optimum, the interval)."""
    handles = []
    if fit.coeffs is not None:
        a, b, c = fit.coeffs
        u = np.linspace(math.log10(min(fit.fit_lrs)), math.log10(max(fit.fit_lrs)), 100)
        ax.plot(10**u, a * u**2 + b * u + c, color=FIT_COLOR, ls="-.", lw=1.5, zorder=2)
        handles.append(Line2D([], [], color=FIT_COLOR, ls="-.", lw=1.5, label=_wrap(fit.fit_text)))
    else:
        handles.append(Line2D([], [], ls="", label=_wrap(fit.fit_text)))
    ax.plot(fit.lr, fit.loss, ls="", marker="*", ms=16, mfc=FIT_COLOR, mec="black", zorder=6)
    handles.append(Line2D([], [], ls="", marker="*", ms=12, mfc=FIT_COLOR, mec="black",
                          label=f"fitted optimum {fit.lr:.3g}" + ("  (on the edge)" if fit.on_edge else "")))  # fmt: skip
    if math.isfinite(fit.low) and math.isfinite(fit.high):
        ax.axvspan(fit.low, fit.high, color=FIT_COLOR, alpha=0.15, lw=0)
        handles.append(
            Patch(color=FIT_COLOR, alpha=0.3, label=f"68% interval [{fit.low:.3g}, {fit.high:.3g}]")
        )
    else:
        handles.append(Patch(color="white", label="68% interval: unknown (no noise level)"))
    return handles


def _wrap(text: str, width: int = 34) -> str:
    """Break a long legend entry at spaces."""
    return textwrap.fill(text, width, break_long_words=False, break_on_hyphens=False)


def _hline(ax, y: float, label: str, **style) -> Line2D:
    """A horizontal reference line and its legend handle."""
    ax.axhline(y, **style)
    return Line2D([], [], label=label, **style)


def plot_sharpness(
    view: SweepView, out_path: str | os.PathLike, edge_fraction: float | None = None, label: str = "lr"
) -> Path:
    """ratio = preconditioned sharpness / stability threshold against step, one line per run (colour by value,
    line style by seed), log y, the threshold (ratio 1) and, if given, ``edge_fraction`` of it as lines;
    a diverged run's last measurement marked with a red X."""
    fig = new_figure((11, 5.5), left=0.08, right=0.74, bottom=0.12, top=0.9)
    ax = fig.subplots()
    colors = lr_colors(p.value for p in view.points)
    handles, marked = [], False
    for p in view.points:
        sh = drawable(p.log.sharpness, "ratio") if p.log is not None else []
        if not len(sh):
            continue
        style = dict(color=colors[p.value], ls=_seed_style(p, view), lw=1.6, marker="o", ms=4)
        _run_line(ax, sh["step"], sh["ratio"], p.state == "diverged", 12, **style)
        handles.append(Line2D([], [], **style, label=point_label(p, label)))
        marked |= p.state == "diverged"
    drawn = bool(handles)
    handles.append(
        _hline(ax, 1.0, f"stability threshold {view.threshold_text}", color="black", ls="--", lw=1.2)
    )
    if edge_fraction is not None:
        handles.append(
            _hline(ax, edge_fraction, f"{edge_fraction:g} x the threshold", color="gray", ls=":", lw=1.2)
        )
    if marked:  # a diverged run with measurements: its last one carries the X
        handles.append(Line2D([], [], ms=10, label="diverged (last measurement)", **DIVERGED_X))
    plain_log_y(ax)
    if not drawn:
        no_data(ax, "no sharpness measured (sharpness.csv missing or empty)")
    ax.set_xlabel("step (optimizer steps)")
    ax.set_ylabel(f"λ_max(P⁻¹H) / ({view.threshold_text})  (log scale)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=9, title=label)
    ax.set_title(f"Adam-preconditioned sharpness against the edge of stability: {_title(view)}")
    return save_figure(fig, out_path)


def plot_signals(view: SweepView, out_path: str | os.PathLike, label: str = "lr") -> Path:
    """The instability signals (reader.SIGNALS) against step, one panel each, one line per run (colour by
    value, line style by seed); a diverged run's divergence step as a dotted vertical line in its colour."""
    fig = new_figure((15, 8.5), left=0.06, right=0.98, bottom=0.08, top=0.91, wspace=0.25, hspace=0.3)
    axes = fig.subplots(2, 3).ravel()
    colors = lr_colors(p.value for p in view.points)
    runs = [(p, p.log.signals) for p in view.points if p.log is not None]
    runs = [(p, sig) for p, sig in runs if len(sig)]
    for ax, (name, title) in zip(axes, SIGNALS.items()):
        log_scale = name in LOG_SCALE_SIGNALS
        for p, sig in runs:
            ok = drawable(sig, name, positive=log_scale)
            diverged = p.state == "diverged" and p.step is not None
            style = dict(color=colors[p.value], ls=_seed_style(p, view), lw=1.4)
            _run_line(ax, ok["step"], ok[name], diverged, 10, **style)
            if diverged:
                ax.axvline(p.step, color=colors[p.value], ls=":", lw=1.5)
        if log_scale:
            plain_log_y(ax, (2, 3, 5))
        ax.set_title(title + ("  (log scale)" if log_scale else ""))
        ax.set_xlabel("step")
        ax.grid(True, which="both", alpha=0.3)
        if not runs:
            no_data(ax, "no signals logged")
    legend_ax = axes[-1]
    legend_ax.axis("off")
    handles = [Line2D([], [], color=colors[p.value], ls=_seed_style(p, view), lw=2, label=point_label(p, label))
               for p, _ in runs]  # fmt: skip
    if any(p.state == "diverged" for p, _ in runs):
        handles.append(Line2D([], [], color="gray", ls=":", lw=1.5, label="divergence step"))
        handles.append(Line2D([], [], ms=10, label="last logged value of a diverged run", **DIVERGED_X))
    if handles:
        legend_ax.legend(handles=handles, loc="center", title=label)
    fig.suptitle(f"instability signals on the probe batch (Wortsman et al. 2023): {_title(view)}")
    return save_figure(fig, out_path)


def _title(view: SweepView) -> str:
    done = sum(p.state in DONE_STATES for p in view.points)
    preset = f"preset {view.preset}, " if view.preset else ""
    return f"{preset}{done}/{len(view.points)} points done"
