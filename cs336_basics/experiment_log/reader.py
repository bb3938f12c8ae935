"""The one reader of run directories, shared by the sweep, diagnose and analyze commands.

It is safe to call on a run that is still being written: a half-written last CSV line is dropped and a
missing or partial JSON file reads as ``None``. Only a path that is not a directory is an error.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cs336_basics.errors import UserError

METRIC_COLUMNS: tuple[str, ...] = (
    "step",
    "tokens",
    "wallclock_s",
    "train_loss",
    "val_loss",
    "lr",
    "grad_norm",
    "tokens_per_sec",
    "ms_per_step",
)
STATES: tuple[str, ...] = ("pending", "running", "finished", "diverged", "failed", "interrupted")
DONE_STATES: tuple[str, ...] = ("finished", "diverged")  # terminal: a re-run does not train these again
SHARPNESS_FILE = "sharpness.csv"
SHARPNESS_COLUMNS: tuple[str, ...] = ("step", "lr", "sharpness", "threshold", "ratio")

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
STATUS_FILE = "status.json"
SUMMARY_FILE = "summary.json"
PLOT_FILE = "loss_curves.png"
CHECKPOINT_DIR = "checkpoints"

COMPARE_COLUMNS: tuple[str, ...] = (
    "name",
    "lr",
    "state",
    "steps",
    "final_train_loss",
    "final_val_loss",
    "best_val_loss",
    "tokens",
    "wallclock_s",
    "tokens_per_sec",
    "target_met",
)

_LR_KEYS = ("max_lr", "learning_rate", "lr")


def empty_metrics() -> pd.DataFrame:
    """An empty metrics frame with the standard columns."""
    df = pd.DataFrame({c: pd.Series(dtype="float64") for c in METRIC_COLUMNS})
    df["step"] = df["step"].astype("int64")
    return df


def read_metrics_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Parse ``metrics.csv`` tolerantly: missing/empty file -> empty frame; incomplete last line dropped;
    non-numeric cells -> NaN; rows without a step dropped. Never raises for content problems."""
    try:
        raw = Path(path).read_bytes()
    except OSError:
        return empty_metrics()
    text = raw.decode("utf-8", errors="replace").replace("\x00", "")
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # drop the line still being written (or everything)
    if not text.strip():
        return empty_metrics()
    try:
        df = pd.read_csv(
            io.StringIO(text), dtype=str, keep_default_na=False, on_bad_lines="skip", skip_blank_lines=True
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError):
        return empty_metrics()
    df.columns = [str(c).strip() for c in df.columns]
    for col in METRIC_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df.columns else math.nan
    df = df[list(METRIC_COLUMNS) + [c for c in df.columns if c not in METRIC_COLUMNS]]
    df = df[df["step"].notna()].reset_index(drop=True)
    df["step"] = df["step"].astype("int64")
    for col in METRIC_COLUMNS[1:]:
        df[col] = df[col].astype("float64")
    return df


def read_json_dict(path: str | os.PathLike) -> dict | None:
    """A JSON object from ``path``, or ``None`` if missing, partial, corrupt or not an object."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def finite_or_none(x: Any) -> float | None:
    """``float(x)`` if ``x`` is a finite number (not a bool, not blank), else None: the one parser of
    optional numbers from JSON and CSV cells for every reader of run and sweep files."""
    if x is None or isinstance(x, bool) or (isinstance(x, str) and not x.strip()):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _num(x: Any) -> float | None:
    """``x`` as a float, or ``None`` if absent / not a number / NaN."""
    if isinstance(x, bool) or x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _last_valid(series: pd.Series) -> float | None:
    s = series.dropna()
    return float(s.iloc[-1]) if len(s) else None


@dataclass
class ExperimentLog:
    """Everything on disk for one run. JSON parts are ``None`` when missing or unreadable."""

    path: Path
    name: str
    config: dict = field(default_factory=dict)
    metrics: pd.DataFrame = field(default_factory=empty_metrics)
    status: dict | None = None
    summary: dict | None = None

    def _from_summary(self, key: str) -> float | None:
        return _num(self.summary.get(key)) if self.summary else None

    @property
    def state(self) -> str:
        """Summary status, else status.json state, else ``"pending"``."""
        for src, key in ((self.summary, "status"), (self.status, "state")):
            if src and isinstance(src.get(key), str):
                return src[key]
        return "pending"

    @property
    def last_step(self) -> int | None:
        """The furthest step known: max of the metrics steps, summary ``steps`` and status ``step``."""
        known = [_num(self.metrics["step"].max())] if len(self.metrics) else []
        known += [self._from_summary("steps"), _num(self.status.get("step")) if self.status else None]
        known = [k for k in known if k is not None]
        return int(max(known)) if known else None

    @property
    def final_train_loss(self) -> float | None:
        v = self._from_summary("final_train_loss")
        return v if v is not None else _last_valid(self.metrics["train_loss"])

    @property
    def final_val_loss(self) -> float | None:
        v = self._from_summary("final_val_loss")
        return v if v is not None else _last_valid(self.metrics["val_loss"])

    @property
    def best_val_loss(self) -> float | None:
        v = self._from_summary("best_val_loss")
        if v is not None:
            return v
        return _num(self.metrics["val_loss"].min()) if len(self.eval_rows) else None

    @property
    def eval_rows(self) -> pd.DataFrame:
        """Metrics rows that carry a validation loss."""
        return self.metrics[self.metrics["val_loss"].notna()]

    @property
    def learning_rate(self) -> float | None:
        """The config's ``max_lr`` / ``learning_rate`` / ``lr`` (top level, then one level down)."""
        nested = [v for v in self.config.values() if isinstance(v, dict)]
        for d in [self.config, *nested]:
            for key in _LR_KEYS:
                v = _num(d.get(key))
                if v is not None:
                    return v
        return None

    @property
    def target_val_loss(self) -> float | None:
        v = self._from_summary("target_val_loss")
        return v if v is not None else _num(self.config.get("target_val_loss"))


def load_experiment_log(path: str | os.PathLike) -> ExperimentLog:
    """Read a run directory, tolerating files that are missing or mid-write."""
    p = Path(path)
    if not p.is_dir():
        raise UserError(
            f"{p}: not a run directory (expected a folder holding {METRICS_FILE}); check the path"
        )
    return ExperimentLog(
        path=p,
        name=Path(os.path.abspath(p)).name,
        config=read_json_dict(p / CONFIG_FILE) or {},
        metrics=read_metrics_csv(p / METRICS_FILE),
        status=read_json_dict(p / STATUS_FILE),
        summary=read_json_dict(p / SUMMARY_FILE),
    )


def _pick(log: ExperimentLog, key: str) -> float | None:
    """The summary's value for ``key``, else the last logged one."""
    v = log._from_summary(key)
    return v if v is not None else _last_valid(log.metrics[key])


def compare_experiments(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """One row per run (name, lr, state, steps, losses, throughput, target_met), sorted by lr (NaN last)."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    rows = []
    for p in paths:
        log = load_experiment_log(p)
        rows.append(
            {
                "name": log.name,
                "lr": log.learning_rate,
                "state": log.state,
                "steps": log.last_step,
                "final_train_loss": log.final_train_loss,
                "final_val_loss": log.final_val_loss,
                "best_val_loss": log.best_val_loss,
                "tokens": _pick(log, "tokens"),
                "wallclock_s": _pick(log, "wallclock_s"),
                "tokens_per_sec": _pick(log, "tokens_per_sec"),
                "target_met": (log.summary or {}).get("target_met"),
            }
        )
    df = pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))
    float_cols = [c for c in COMPARE_COLUMNS if c not in ("name", "state", "steps", "target_met")]
    df[float_cols] = df[float_cols].astype("float64")
    df["steps"] = df["steps"].astype("Int64")
    return df.sort_values(["lr", "name"], na_position="last", kind="stable").reset_index(drop=True)
