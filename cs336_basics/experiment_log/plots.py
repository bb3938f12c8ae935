"""Loss-curve figure for one run, drawn from what is on disk, and the figure helpers every plot shares.

Renders through matplotlib's Agg canvas directly (no pyplot), so it never needs a display, never touches
the process-wide backend and is safe to call from any thread.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

from cs336_basics.atomic import atomic_write
from cs336_basics.experiment_log.reader import ExperimentLog, load_experiment_log

LOSS_LABEL = "loss (cross-entropy, nats/token)"
FINE_SUBS = (1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8)  # labelled minor ticks for losses within a decade or so
_PLAIN = FuncFormatter(lambda y, _pos: f"{y:g}")


def new_figure(figsize: tuple[float, float], **margins) -> Figure:
    """A figure on its own Agg canvas with fixed ``subplots_adjust`` margins (faster than constrained)."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(**margins)
    return fig


def plain_log_y(ax, minor_subs: tuple | None = None) -> None:
    """Log-scale y with plain tick labels (``2.5``, not ``2.5×10⁰``); ``minor_subs``: labelled minor ticks."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(_PLAIN)
    if minor_subs is not None:
        ax.yaxis.set_minor_locator(LogLocator(subs=minor_subs))
        ax.yaxis.set_minor_formatter(_PLAIN)


def drawable(df: pd.DataFrame, col: str, positive: bool = True) -> pd.DataFrame:
    """The rows whose ``col`` is finite (and positive, as a log axis needs)."""
    keep = np.isfinite(df[col])
    return df[keep & (df[col] > 0)] if positive else df[keep]


def no_data(ax, text: str) -> None:
    """Say in the middle of an empty panel why it is empty."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)


def save_figure(fig: Figure, out_path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write a figure as PNG through ``atomic_write`` (never a half-written figure under the final name)."""
    out_path = Path(out_path)
    with atomic_write(out_path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    return out_path


def plot_loss_curves(log: ExperimentLog | str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Draw train/val loss vs step and vs wallclock (log-scale y) to ``out_path`` atomically."""
    if not isinstance(log, ExperimentLog):
        log = load_experiment_log(log)
    train, val = drawable(log.metrics, "train_loss"), drawable(log.metrics, "val_loss")
    target = log.target_val_loss
    ys = [*train["train_loss"], *val["val_loss"]]
    # Label more in-between ticks when the losses span less than a decade or so.
    subs = (2, 3, 5) if not ys or max(ys) / min(ys) > 30 else FINE_SUBS

    fig = new_figure((12, 4.5), left=0.07, right=0.98, bottom=0.12, top=0.9, wspace=0.06)
    panels = fig.subplots(1, 2, sharey=True)
    for ax, x_col, scale, x_label in (
        (panels[0], "step", 1.0, "step (optimizer steps)"),
        (panels[1], "wallclock_s", 1 / 60, "wallclock (minutes)"),
    ):
        t, v = train[train[x_col].notna()], val[val[x_col].notna()]
        if len(t):
            ax.plot(t[x_col] * scale, t["train_loss"], lw=1.0, alpha=0.8, label="train")
        if len(v):
            ax.plot(v[x_col] * scale, v["val_loss"], "o-", ms=3, lw=1.2, label="val")
        if target is not None and target > 0:
            ax.axhline(target, color="gray", ls="--", lw=0.8, label=f"target {target:g}")
        if not (len(t) or len(v)):
            no_data(ax, "no data yet")
        plain_log_y(ax, subs)
        ax.set_xlabel(x_label)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    panels[0].set_ylabel(LOSS_LABEL)
    lr = log.learning_rate
    fig.suptitle(log.name + (f"  (lr={lr:.3g})" if lr is not None else "") + f"  [{log.state}]")
    return save_figure(fig, out_path)
