"""Loss-curve figure for one run, drawn from what is on disk.

Renders through matplotlib's Agg canvas directly (no pyplot), so it never needs a display, never touches
the process-wide backend and is safe to call from any thread.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

from cs336_basics.atomic import atomic_write
from cs336_basics.experiment_log.reader import ExperimentLog, load_experiment_log

_LOSS_LABEL = "loss (cross-entropy, nats/token)"
_PLAIN = FuncFormatter(lambda y, _pos: f"{y:g}")


def plot_loss_curves(log: ExperimentLog | str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Draw train/val loss vs step and vs wallclock (log-scale y) to ``out_path`` atomically."""
    if not isinstance(log, ExperimentLog):
        log = load_experiment_log(log)
    out_path = Path(out_path)
    m = log.metrics
    train = m[m["train_loss"].gt(0) & m["train_loss"].map(math.isfinite)]
    val = m[m["val_loss"].gt(0) & m["val_loss"].map(math.isfinite)]
    target = log.target_val_loss
    ys = [*train["train_loss"], *val["val_loss"]]
    # Label more in-between ticks when the losses span less than a decade or so.
    subs = (2, 3, 5) if not ys or max(ys) / min(ys) > 30 else (1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8)

    fig = Figure(figsize=(12, 4.5))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.9, wspace=0.06)  # faster than constrained
    FigureCanvasAgg(fig)
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
            ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_yscale("log")
        ax.yaxis.set_minor_locator(LogLocator(subs=subs))
        ax.yaxis.set_major_formatter(_PLAIN)
        ax.yaxis.set_minor_formatter(_PLAIN)
        ax.set_xlabel(x_label)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    panels[0].set_ylabel(_LOSS_LABEL)
    lr = log.learning_rate
    title = log.name + (f"  (lr={lr:.3g})" if lr is not None else "") + f"  [{log.state}]"
    fig.suptitle(title)

    save_figure(fig, out_path)
    return out_path


def save_figure(fig: Figure, out_path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write a figure as PNG through ``atomic_write`` (never a half-written figure under the final name)."""
    out_path = Path(out_path)
    with atomic_write(out_path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    return out_path
