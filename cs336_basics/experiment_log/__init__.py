"""Run directories: ``ExperimentTracker`` writes them, ``load_experiment_log`` reads them (for everyone)."""

from cs336_basics.experiment_log.plots import plot_loss_curves
from cs336_basics.experiment_log.reader import (
    METRIC_COLUMNS,
    STATES,
    ExperimentLog,
    compare_experiments,
    load_experiment_log,
    read_metrics_csv,
)
from cs336_basics.experiment_log.tracker import ExperimentTracker

__all__ = [
    "METRIC_COLUMNS",
    "STATES",
    "ExperimentLog",
    "ExperimentTracker",
    "compare_experiments",
    "load_experiment_log",
    "plot_loss_curves",
    "read_metrics_csv",
]
