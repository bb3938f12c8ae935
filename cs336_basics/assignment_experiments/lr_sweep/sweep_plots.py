"""The sweep's two figures: loss curves of every learning rate, and final loss against learning rate.

Colours are one function of a learning rate's rank among the sweep's sorted learning rates (viridis), so an
LR has the same colour in both figures. Drawn on matplotlib's Agg canvas (no pyplot) and saved atomically.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator

from cs336_basics.assignment_experiments.lr_sweep.sweep_reader import SweepPoint, SweepView
from cs336_basics.experiment_log.plots import save_figure

COMPARISON_FILE = "lr_sweep_comparison.png"
LR_LOSS_FILE = "lr_vs_final_loss.png"
LOSS_LABEL = "loss (cross-entropy, nats/token)"
_PLAIN = FuncFormatter(lambda y, _pos: f"{y:g}")
DIVERGED_COLOR = "#d62728"


def lr_colors(lrs) -> dict[float, tuple]:
    """One colour per learning rate from its rank in the sorted list (viridis, light yellow end avoided)."""
    ordered = sorted(set(lrs))
    cmap = colormaps["viridis"]
    n = len(ordered)
    return {lr: cmap(0.88 * i / (n - 1) if n > 1 else 0.4) for i, lr in enumerate(ordered)}


def point_label(p: SweepPoint) -> str:
    """Legend text: ``lr 3e-03`` plus the state when it is not a plain finished run."""
    label = f"lr {p.lr:.3g}"
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


def plot_sweep_comparison(view: SweepView, out_path: str | os.PathLike) -> Path:
    """2x2 figure: train (top) and val (bottom) loss against steps (left) and wallclock (right)."""
    points = [p for p in view.points if p.log is not None and len(p.log.metrics)]
    colors = lr_colors(p.lr for p in view.points)
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
                _draw_curve(ax, p, col_name, x_col, scale, colors[p.lr])
            _decorate(ax, view.target_val_loss, x_label)
            if col == 0:
                kind = "train" if row == 0 else "validation"
                ax.set_ylabel(f"{kind} {LOSS_LABEL}")
            if not points:
                ax.text(0.5, 0.5, "no runs with data yet", ha="center", va="center", transform=ax.transAxes)
    handles = [Line2D([], [], color=colors[p.lr], lw=2, label=point_label(p)) for p in points]
    if any(p.state == "diverged" for p in points):
        handles.append(
            Line2D([], [], ls="", marker="X", ms=10, mfc=DIVERGED_COLOR, mec="black", label="diverged here")
        )
    if view.target_val_loss is not None:
        handles.append(
            Line2D([], [], color="gray", ls="--", lw=1, label=f"target val loss {view.target_val_loss:g}")
        )
    if handles:
        fig.legend(handles=handles, loc="center left", bbox_to_anchor=(0.81, 0.5), title="learning rate")
    fig.suptitle(f"learning-rate sweep: {_title(view)}")
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


def plot_lr_vs_loss(view: SweepView, out_path: str | os.PathLike) -> Path:
    """Final and best val loss against learning rate (log x); diverged LRs as red x's at the top edge;
    the best LR and the divergence threshold marked."""
    colors = lr_colors(p.lr for p in view.points)
    fig = Figure(figsize=(11, 5.5))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.08, right=0.74, bottom=0.12, top=0.9)
    ax = fig.subplots()
    ok = [p for p in view.points if p.state != "diverged" and p.final_val_loss is not None]
    bad = [p for p in view.points if p.state == "diverged"]
    if ok:
        ax.plot([p.lr for p in ok], [p.final_val_loss for p in ok], color="gray", lw=1, zorder=1)
    for p in ok:
        done = p.state == "finished"
        ax.plot(
            p.lr,
            p.final_val_loss,
            "o",
            ms=9,
            color=colors[p.lr],
            mfc=colors[p.lr] if done else "white",
            mew=2,
        )
        if p.best_val_loss is not None:
            ax.plot(p.lr, p.best_val_loss, "_", ms=14, mew=2, color=colors[p.lr])
    top = ax.get_xaxis_transform()  # x in data, y in axes fraction
    for p in bad:
        ax.plot(p.lr, 0.96, "x", ms=12, mew=3, color=DIVERGED_COLOR, transform=top, clip_on=False)
    for p in view.points:
        if p.state == "failed":
            ax.plot(p.lr, 0.04, "s", ms=8, mfc="white", mec="gray", mew=1.5, transform=top, clip_on=False)
    _mark_edges(ax, view, top)
    if view.target_val_loss is not None:
        ax.axhline(view.target_val_loss, color="gray", ls="--", lw=1)
    ax.set_xscale("log")
    lrs = [p.lr for p in view.points]
    if lrs:
        ax.set_xlim(min(lrs) / 1.6, max(lrs) * 1.6)
    ys = [y for p in ok for y in (p.final_val_loss, p.best_val_loss) if y is not None]
    if ys:
        lo, hi = min(ys), max(ys)
        pad = max(0.08 * (hi - lo), 0.05)
        ax.set_ylim(lo - pad, hi + 3 * pad)  # head room for the diverged marks and labels
    else:
        ax.text(0.5, 0.5, "no validation loss yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("peak learning rate (log scale)")
    ax.set_ylabel(f"validation {LOSS_LABEL}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(handles=_lr_legend(view), loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=9)
    ax.set_title(f"final validation loss vs learning rate: {_title(view)}")
    return save_figure(fig, out_path)


def _mark_edges(ax, view: SweepView, top) -> None:
    best, diverged = view.best_point, view.smallest_diverged
    if best is not None:
        ax.axvline(best.lr, color="green", ls="--", lw=1.2)
        ax.text(best.lr, 0.98, f" best lr {best.lr:.3g}", color="green", transform=top, va="top")
    if diverged is not None:
        ax.axvspan(diverged.lr, ax.get_xlim()[1] * 10, color=DIVERGED_COLOR, alpha=0.07, lw=0)
        ax.axvline(diverged.lr, color=DIVERGED_COLOR, ls=":", lw=1.5)
        ax.text(
            diverged.lr,
            0.88,
            f" diverges from lr {diverged.lr:.3g}",
            color=DIVERGED_COLOR,
            transform=top,
            va="top",
        )


def _lr_legend(view: SweepView) -> list[Line2D]:
    h = [
        Line2D([], [], ls="", marker="o", ms=8, color="gray", label="final val loss (filled: finished)"),
        Line2D([], [], ls="", marker="_", ms=12, mew=2, color="gray", label="best val loss"),
    ]
    if view.smallest_diverged is not None:
        h.append(Line2D([], [], ls="", marker="x", ms=9, mew=3, color=DIVERGED_COLOR, label="diverged"))
    if any(p.state == "failed" for p in view.points):
        h.append(Line2D([], [], ls="", marker="s", mfc="white", mec="gray", label="failed (no loss)"))
    if view.target_val_loss is not None:
        h.append(Line2D([], [], color="gray", ls="--", label=f"target val loss {view.target_val_loss:g}"))
    h.append(Line2D([], [], color="green", ls="--", label="best learning rate"))
    if view.smallest_diverged is not None:
        h.append(Line2D([], [], color=DIVERGED_COLOR, ls=":", label="divergence threshold"))
    return h


def _title(view: SweepView) -> str:
    done = sum(p.state in ("finished", "diverged") for p in view.points)
    preset = f"preset {view.preset}, " if view.preset else ""
    return f"{preset}{done}/{len(view.points)} points done"
