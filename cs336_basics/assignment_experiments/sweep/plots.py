"""The figures every sweep client shares: loss curves of every point against steps and wallclock, final loss
against the swept value (mean ± std over seeds as error bars, optionally a fitted optimum), the sharpness
ratio against its stability threshold and the instability signals against step.

Colours are one function of a value's rank among the sweep's sorted values (viridis), so a value has the
same colour in both figures and at every seed. Drawn on matplotlib's Agg canvas (no pyplot) and saved atomically.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator

from cs336_basics.assignment_experiments.sweep.view import SweepPoint, SweepView
from cs336_basics.experiment_log.plots import save_figure
from cs336_basics.experiment_log.reader import DONE_STATES, SIGNALS

if TYPE_CHECKING:
    from cs336_basics.assignment_experiments.lr_sweep.optimum import Optimum

COMPARISON_FILE = "lr_sweep_comparison.png"
LR_LOSS_FILE = "lr_vs_final_loss.png"
SHARPNESS_PLOT_FILE = "lr_sweep_sharpness.png"
SIGNALS_PLOT_FILE = "lr_sweep_signals.png"
SEED_STYLES = ("-", "--", ":", "-.")  # line style by seed index, colour by value
LOG_SCALE_SIGNALS = ("max_attn_logit", "logz_sq_mean", "update_rms_ratio")
LOSS_LABEL = "loss (cross-entropy, nats/token)"
_PLAIN = FuncFormatter(lambda y, _pos: f"{y:g}")
DIVERGED_COLOR = "#d62728"


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


def _finite(df: pd.DataFrame, col: str) -> pd.DataFrame:
    return df[df[col].gt(0) & df[col].map(math.isfinite)]


def plot_sweep_comparison(view: SweepView, out_path: str | os.PathLike, label: str = "lr") -> Path:
    """2x2 figure: train (top) and val (bottom) loss against steps (left) and wallclock (right)."""
    points = [p for p in view.points if p.log is not None and len(p.log.metrics)]
    colors = lr_colors(p.value for p in view.points)
    max_wall = max((float(p.log.metrics["wallclock_s"].max()) for p in points), default=0.0)
    divisor, unit = time_scale(max_wall if math.isfinite(max_wall) else 0.0)
    fig = Figure(figsize=(13, 8.5))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.07, right=0.80, bottom=0.08, top=0.92, wspace=0.08, hspace=0.22)
    axes = fig.subplots(2, 2, sharey="row")
    for row, col_name in enumerate(("train_loss", "val_loss")):
        for col, (x_col, scale, x_label) in enumerate(
            (("step", 1.0, "step (optimizer steps)"), ("wallclock_s", 1 / divisor, f"wallclock ({unit})"))
        ):
            ax = axes[row][col]
            for p in points:
                _draw_curve(ax, p, col_name, x_col, scale, colors[p.value])
            _decorate(ax, view.target_val_loss, x_label)
            if col == 0:
                kind = "train" if row == 0 else "validation"
                ax.set_ylabel(f"{kind} {LOSS_LABEL}")
            if not points:
                ax.text(0.5, 0.5, "no runs with data yet", ha="center", va="center", transform=ax.transAxes)
    handles = [Line2D([], [], color=colors[p.value], lw=2, label=point_label(p, label)) for p in points]
    if any(p.state == "diverged" for p in points):
        handles.append(
            Line2D([], [], ls="", marker="X", ms=10, mfc=DIVERGED_COLOR, mec="black", label="diverged here")
        )
    if view.target_val_loss is not None:
        handles.append(
            Line2D([], [], color="gray", ls="--", lw=1, label=f"target val loss {view.target_val_loss:g}")
        )
    if handles:
        fig.legend(handles=handles, loc="center left", bbox_to_anchor=(0.81, 0.5), title=label)
    fig.suptitle(f"{label} sweep: {_title(view)}")
    return save_figure(fig, out_path)


def _draw_curve(ax, p: SweepPoint, col_name: str, x_col: str, scale: float, color) -> None:
    m = _finite(p.log.metrics, col_name)
    m = m[m[x_col].notna()]
    if not len(m):
        return
    style = {"lw": 1.0, "alpha": 0.85} if col_name == "train_loss" else {"lw": 1.4, "marker": "o", "ms": 3}
    ax.plot(m[x_col] * scale, m[col_name], color=color, **style)
    if p.state == "diverged":
        ax.plot(
            m[x_col].iloc[-1] * scale,
            m[col_name].iloc[-1],
            ls="",
            marker="X",
            ms=11,
            mfc=DIVERGED_COLOR,
            mec="black",
            zorder=5,
        )


def _decorate(ax, target: float | None, x_label: str) -> None:
    if target is not None and target > 0:
        ax.axhline(target, color="gray", ls="--", lw=1)
    ax.set_yscale("log")
    ax.yaxis.set_minor_locator(LogLocator(subs=(1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8)))
    ax.yaxis.set_major_formatter(_PLAIN)
    ax.yaxis.set_minor_formatter(_PLAIN)
    ax.set_xlabel(x_label)
    ax.grid(True, which="both", alpha=0.3)


def plot_lr_vs_loss(
    view: SweepView, out_path: str | os.PathLike, label: str = "learning rate", fit: Optimum | None = None
) -> Path:
    """Final val loss (mean ± std over seeds) and best val loss against the swept value (log x); diverged
    values as red x's at the top edge; the best value and the divergence threshold marked; with ``fit``
    (optimum.fit_optimum) the fitted parabola over its points, the optimum and its 68% interval."""
    groups = view.groups
    colors = lr_colors(g.value for g in groups)
    fig = Figure(figsize=(12, 5.5))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.07, right=0.70, bottom=0.12, top=0.9)
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
        if g.state in ("diverged", "failed"):
            style = dict(marker="x", ms=12, mew=3, color=DIVERGED_COLOR) if g.state == "diverged" else \
                dict(marker="s", ms=8, mfc="white", mec="gray", mew=1.5)  # fmt: skip
            ax.plot(
                g.value, 0.96 if g.state == "diverged" else 0.04, ls="", transform=top, clip_on=False, **style
            )
    best, diverged = view.best, view.smallest_diverged
    if best is not None:
        ax.axvline(best.value, color="green", ls="--", lw=1.2)
        ax.text(best.value, 0.98, f" best {best.value:.3g}", color="green", transform=top, va="top")
    if diverged is not None:
        ax.axvline(diverged.value, color=DIVERGED_COLOR, ls=":", lw=1.5)
        ax.text(
            diverged.value,
            0.88,
            f" diverges from {diverged.value:.3g}",
            color=DIVERGED_COLOR,
            transform=top,
            va="top",
        )
    if view.target_val_loss is not None:
        ax.axhline(view.target_val_loss, color="gray", ls="--", lw=1)
    fit_handles = _draw_fit(ax, fit) if fit is not None else []
    ax.set_xscale("log")
    if groups:
        ax.set_xlim(groups[0].value / 1.6, groups[-1].value * 1.6)
    ys = [y for g in ok for y in (g.final_val_loss, g.best_val_loss) if y is not None]
    ys += [fit.loss] if fit is not None and ys else []
    if ys:
        pad = max(0.08 * (max(ys) - min(ys)), 0.05)
        ax.set_ylim(min(ys) - pad, max(ys) + 3 * pad)  # head room for the diverged marks and labels
    else:
        ax.text(0.5, 0.5, "no validation loss yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(f"{label} (log scale)")
    ax.set_ylabel(f"final validation {LOSS_LABEL}")
    ax.grid(True, which="both", alpha=0.3)
    legend = [
        Line2D([], [], ls="", marker="o", ms=8, color="gray", label="final val loss (mean ± std over seeds)"),
        Line2D([], [], ls="", marker="_", ms=12, mew=2, color="gray", label="best val loss"),
        Line2D([], [], ls="", marker="x", ms=9, mew=3, color=DIVERGED_COLOR, label="diverged"),
        Line2D([], [], ls="", marker="s", mfc="white", mec="gray", label="failed (no loss)"),
        *fit_handles,
    ]
    ax.legend(handles=legend, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=9)
    ax.set_title(f"final validation loss vs {label}: {_title(view)}")
    return save_figure(fig, out_path)


FIT_COLOR = "#ff7f0e"


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
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])


def _seed_style(p: SweepPoint, view: SweepView) -> str:
    seeds = sorted({q.seed for q in view.points if q.value == p.value})
    return SEED_STYLES[seeds.index(p.seed) % len(SEED_STYLES)]


def plot_sharpness(
    view: SweepView, out_path: str | os.PathLike, edge_fraction: float | None = None, label: str = "lr"
) -> Path:
    """ratio = preconditioned sharpness / stability threshold against step, one line per run (colour by value,
    line style by seed), log y, the threshold (ratio 1) and, if given, ``edge_fraction`` of it as lines;
    a diverged run's last measurement marked with a red X."""
    fig = Figure(figsize=(11, 5.5))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.08, right=0.74, bottom=0.12, top=0.9)
    ax = fig.subplots()
    colors = lr_colors(p.value for p in view.points)
    handles, drawn = [], False
    for p in view.points:
        sh = p.log.sharpness if p.log is not None else None
        sh = sh[np.isfinite(sh["ratio"]) & (sh["ratio"] > 0)] if sh is not None else None
        if sh is None or not len(sh):
            continue
        drawn = True
        style = dict(color=colors[p.value], ls=_seed_style(p, view), lw=1.6, marker="o", ms=4)
        ax.plot(sh["step"], sh["ratio"], **style)
        handles.append(Line2D([], [], **style, label=point_label(p, label)))
        if p.state == "diverged":
            ax.plot(sh["step"].iloc[-1], sh["ratio"].iloc[-1], ls="", marker="X", ms=12, mfc=DIVERGED_COLOR,
                    mec="black", zorder=5)  # fmt: skip
    ax.axhline(1.0, color="black", ls="--", lw=1.2)
    handles.append(
        Line2D([], [], color="black", ls="--", lw=1.2, label=f"stability threshold {view.threshold_text}")
    )
    if edge_fraction is not None:
        ax.axhline(edge_fraction, color="gray", ls=":", lw=1.2)
        handles.append(
            Line2D([], [], color="gray", ls=":", lw=1.2, label=f"{edge_fraction:g} x the threshold")
        )
    if any(p.state == "diverged" for p in view.points):
        handles.append(Line2D([], [], ls="", marker="X", ms=10, mfc=DIVERGED_COLOR, mec="black",
                              label="diverged (last measurement)"))  # fmt: skip
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(_PLAIN)
    if not drawn:
        ax.text(0.5, 0.5, "no sharpness measured (sharpness.csv missing or empty)", ha="center", va="center",
                transform=ax.transAxes)  # fmt: skip
    ax.set_xlabel("step (optimizer steps)")
    ax.set_ylabel(f"λ_max(P⁻¹H) / ({view.threshold_text})  (log scale)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=9, title=label)
    ax.set_title(f"Adam-preconditioned sharpness against the edge of stability: {_title(view)}")
    return save_figure(fig, out_path)


def plot_signals(view: SweepView, out_path: str | os.PathLike, label: str = "lr") -> Path:
    """The instability signals (reader.SIGNALS) against step, one panel each, one line per run (colour by
    value, line style by seed); a diverged run's divergence step as a dotted vertical line in its colour."""
    fig = Figure(figsize=(15, 8.5))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.08, top=0.91, wspace=0.25, hspace=0.3)
    axes = fig.subplots(2, 3).ravel()
    colors = lr_colors(p.value for p in view.points)
    runs = [(p, p.log.signals) for p in view.points if p.log is not None]
    runs = [(p, sig) for p, sig in runs if len(sig)]
    for ax, (name, title) in zip(axes, SIGNALS.items()):
        for p, sig in runs:
            ok = sig[np.isfinite(sig[name])]
            if name in LOG_SCALE_SIGNALS:
                ok = ok[ok[name] > 0]
            ax.plot(ok["step"], ok[name], color=colors[p.value], ls=_seed_style(p, view), lw=1.4)
            if p.state == "diverged" and p.step is not None:
                ax.axvline(p.step, color=colors[p.value], ls=":", lw=1.5)
                if len(ok):
                    ax.plot(ok["step"].iloc[-1], ok[name].iloc[-1], ls="", marker="X", ms=10,
                            mfc=DIVERGED_COLOR, mec="black", zorder=5)  # fmt: skip
        if name in LOG_SCALE_SIGNALS:
            ax.set_yscale("log")
            ax.yaxis.set_minor_locator(LogLocator(subs=(2, 3, 5)))
            ax.yaxis.set_major_formatter(_PLAIN)
            ax.yaxis.set_minor_formatter(_PLAIN)
        ax.set_title(title + ("  (log scale)" if name in LOG_SCALE_SIGNALS else ""))
        ax.set_xlabel("step")
        ax.grid(True, which="both", alpha=0.3)
        if not runs:
            ax.text(0.5, 0.5, "no signals logged", ha="center", va="center", transform=ax.transAxes)
    legend_ax = axes[-1]
    legend_ax.axis("off")
    handles = [Line2D([], [], color=colors[p.value], ls=_seed_style(p, view), lw=2, label=point_label(p, label))
               for p, _ in runs]  # fmt: skip
    if any(p.state == "diverged" for p, _ in runs):
        handles.append(Line2D([], [], color="gray", ls=":", lw=1.5, label="divergence step"))
        handles.append(Line2D([], [], ls="", marker="X", ms=10, mfc=DIVERGED_COLOR, mec="black",
                              label="last logged value of a diverged run"))  # fmt: skip
    if handles:
        legend_ax.legend(handles=handles, loc="center", title=label)
    fig.suptitle(f"instability signals on the probe batch (Wortsman et al. 2023): {_title(view)}")
    return save_figure(fig, out_path)


def _title(view: SweepView) -> str:
    done = sum(p.state in DONE_STATES for p in view.points)
    preset = f"preset {view.preset}, " if view.preset else ""
    return f"{preset}{done}/{len(view.points)} points done"
