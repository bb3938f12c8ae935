"""The run-directory contract: file names, columns, states, number parsing and every derived quantity that
more than one command shows. The tracker writes through it; the sweep, diagnose, analyze and report read
through it, and nothing else opens a run dir's files.

Reading is safe on a run that is still being written: a half-written last CSV line is dropped, a missing or
partial JSON file reads as ``None``, and columns beyond the standard ones (instability signals, ...) are kept.

Throughput has two meanings, each with one home:
- ``ExperimentLog.tokens_per_sec`` (``median(metrics, "tokens_per_sec")``): the median of metrics.csv's
  per-interval training rate (evaluation and checkpoints excluded) over the whole run: shown by the sweep
  table, the reports and ``compare_experiments``. Over the last ``RECENT_ROWS`` intervals it is lr-diagnose's
  "tok/s now" and its speed verdict's measured rate.
- summary.json's ``tokens_per_sec``: tokens / wallclock including evaluation and checkpoints; shown only by
  cs336-train's closing summary. ``overhead_share`` explains the difference.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import math
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cs336_basics.basics.divergence import smooth
from cs336_basics.errors import UserError

METRIC_COLUMNS: tuple[str, ...] = (
    "step", "tokens", "wallclock_s", "train_loss", "val_loss", "lr", "grad_norm", "tokens_per_sec",
    "ms_per_step", "mfu",
)  # fmt: skip
STATES: tuple[str, ...] = ("pending", "running", "finished", "diverged", "failed", "interrupted")
DONE_STATES: tuple[str, ...] = ("finished", "diverged")  # terminal: a re-run does not train these again
SHARPNESS_FILE = "sharpness.csv"
SHARPNESS_COLUMNS: tuple[str, ...] = ("step", "lr", "sharpness", "threshold", "ratio")
ATTN_LOGIT_PREFIX = "max_attn_logit_l"  # metrics.csv has one such column per layer
# The instability signals per log step as ExperimentLog.signals gives them, with their names in words.
SIGNALS: dict[str, str] = {
    "max_attn_logit": "max attention logit",  # the max over the layers' max_attn_logit_l<i>
    "attn_entropy_min": "min attention entropy",
    "logz_mean": "mean log Z",
    "logz_sq_mean": "mean (log Z)²",
    "update_rms_ratio": "update-RMS ratio",
}


def signal_columns(num_layers: int) -> tuple[str, ...]:
    """metrics.csv's columns of the instability signals (basics/signals.py): the max attention logit of each
    layer, then the other SIGNALS."""
    return (*(f"{ATTN_LOGIT_PREFIX}{i}" for i in range(num_layers)), *list(SIGNALS)[1:])


RECENT_ROWS = 5  # "recent" in lr-diagnose: its rates, its ETA and the speed verdict use the last 5 log rows
# How the tables name and explain ExperimentLog.tokens_per_sec (next to a time column that includes more).
TRAIN_RATE = "train tok/s"
TRAIN_RATE_NOTE = (
    f"{TRAIN_RATE}: median training throughput of the log intervals (evaluation, checkpoints and stability "
    "measurements excluded; time includes them)"
)
CONFIG_FILE = "config.json"
SWEEP_FILE = "sweep.json"  # in a sweep's directory, beside its points' run dirs (sweep/record.py)
METRICS_FILE = "metrics.csv"
STATUS_FILE = "status.json"
SUMMARY_FILE = "summary.json"
PLOT_FILE = "loss_curves.png"
CHECKPOINT_DIR = "checkpoints"
LATEST_CHECKPOINT = f"{CHECKPOINT_DIR}/latest.pt"  # the one a re-run resumes from
RUN_LOCK_FILE = ".run.lock"  # run_dir_lock's flock: held while a trainer owns the dir

COMPARE_COLUMNS: tuple[str, ...] = (
    "name", "lr", "state", "steps", "final_train_loss", "final_val_loss", "best_val_loss", "tokens",
    "wallclock_s", "tokens_per_sec", "target_met",
)  # fmt: skip


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


def utc_timestamp(t: datetime | None = None) -> str:
    """``2026-01-02T03:04:05Z`` (``t`` or now): how status.json and sweep.json write a time."""
    return (t or datetime.now(UTC)).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_time(text) -> datetime | None:
    """An ISO-8601 timestamp (``...Z`` accepted) as an aware UTC datetime, or None."""
    if not isinstance(text, str):
        return None
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def read_json_dict(path: str | os.PathLike) -> dict | None:
    """A JSON object from ``path``, or ``None`` if missing, partial, corrupt or not an object."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def has_header(first_line: str) -> bool:
    """A run dir CSV starts with its header; a number there means the header was lost (a hand edit): the lines
    are data, in the writer's column order."""
    return finite_or_none(first_line.split(",", 1)[0]) is None


def read_csv(path: str | os.PathLike, columns: tuple[str, ...]) -> pd.DataFrame:
    """A run dir's CSV, tolerantly: ``columns`` first (numeric, NaN where absent or garbage), then any extra
    column (numeric where it parses); a half-written last line and rows without a step are dropped. Without
    a header the rows are read in ``columns``' order (further columns unnamed)."""
    try:
        text = Path(path).read_bytes().decode("utf-8", errors="replace").replace("\x00", "")
    except OSError:
        text = ""
    text = text[: text.rfind("\n") + 1]  # drop the line still being written (or everything)
    df = pd.DataFrame()
    if text.strip() and not has_header(text):
        cells = text.split("\n", 1)[0].count(",") + 1
        text = ",".join([*columns, *(f"column_{i + 1}" for i in range(len(columns), cells))]) + "\n" + text
    if text.strip():
        try:
            df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, on_bad_lines="skip")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError):
            df = pd.DataFrame()
    df.columns = [str(c).strip() for c in df.columns]
    for col in [*columns, *(c for c in df.columns if c not in columns)]:
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df.columns else math.nan
    df = df[[*columns, *(c for c in df.columns if c not in columns)]].astype("float64")
    df = df[df["step"].notna()].reset_index(drop=True)
    df["step"] = df["step"].astype("int64")
    return df


def read_metrics_csv(path: str | os.PathLike) -> pd.DataFrame:
    """metrics.csv: ``METRIC_COLUMNS`` then any extra ones (signals, data wait, ...)."""
    return read_csv(path, METRIC_COLUMNS)


def empty_metrics() -> pd.DataFrame:
    return read_metrics_csv(os.devnull)


def smoothed(losses: Iterable[float]) -> list[float | None]:
    """The smoothed train-loss curve, as the divergence rule sees it (``divergence.smooth`` at each row)."""
    out, previous = [], None
    for loss in losses:
        previous = smooth(previous, float(loss))
        out.append(previous)
    return out


def median(metrics: pd.DataFrame | None, column: str, last: int | None = None) -> float | None:
    """The median of a metrics column's finite values (of its ``last`` logged ones if given); None without
    the column or values. ``median(m, "tokens_per_sec")`` is the training throughput; with ``last=RECENT_ROWS``
    it is the recent one lr-diagnose shows and judges."""
    if metrics is None or column not in metrics:
        return None
    values = metrics[column][np.isfinite(metrics[column])]
    values = values.tail(last) if last else values
    return float(values.median()) if len(values) else None


def pid_alive(pid: Any) -> bool:
    """Whether a process with this id exists on this machine (signal 0 checks without sending)."""
    try:
        os.kill(int(pid), 0)
    except PermissionError:
        return True  # exists, owned by someone else
    except (OSError, ValueError, TypeError, OverflowError):
        return False
    return True


def process_gone(record: dict | None) -> bool:
    """Whether the process a status.json or lock file names ran on this host and is gone (killed, crashed)."""
    record = record or {}
    return record.get("host") == socket.gethostname() and not pid_alive(record.get("pid"))


def resume_text(step: int | None) -> str:
    """Where a re-run resumes, to follow "re-run ... to resume it": `` from step 1000 (its last checkpoint)``,
    `` (no checkpoint yet: from step 0)``; empty when unknown (None)."""
    if step:
        return f" from step {step} (its last checkpoint)"
    return " (no checkpoint yet: from step 0)" if step == 0 else ""


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
        return finite_or_none(self.summary.get(key)) if self.summary else None

    def _pick(self, key: str, column: str | None = None) -> float | None:
        """summary.json's value (a finished run's numbers are exact there), else the last one logged in
        metrics.csv's ``column`` (default: the same name)."""
        v = self._from_summary(key)
        if v is not None:
            return v
        logged = self.metrics[column or key].dropna()
        return float(logged.iloc[-1]) if len(logged) else None

    @property
    def state(self) -> str:
        """summary.json's status, else status.json's state, else ``"pending"``; a ``running`` run whose process
        is gone on this host (killed, crashed) is ``interrupted``, as every command shows it."""
        for src, key in ((self.summary, "status"), (self.status, "state")):
            if src and src.get(key) in STATES:
                return "interrupted" if src[key] == "running" and process_gone(self.status) else src[key]
        return "pending"

    @property
    def live(self) -> bool:
        """Running now on this host (status.json says running and its pid exists here)."""
        return self.state == "running" and (self.status or {}).get("host") == socket.gethostname()

    @property
    def reason(self) -> str | None:
        status = self.status or {}
        if self.state == "interrupted" and status.get("state") == "running":
            resume = f"re-run to resume it{resume_text(self.resume_step)}"
            return f"process {status.get('pid')} is gone on this host (killed or crashed mid-run); {resume}"
        for src in (self.summary, self.status):
            if src and src.get("reason"):
                return str(src["reason"])
        return None

    @property
    def resume_step(self) -> int | None:
        """Where a re-run resumes: the step of the run's latest.pt as status.json last recorded it, 0 before
        the first checkpoint; None for run dirs written before status.json recorded it."""
        status = self.status or {}
        if "checkpoint_step" not in status:
            return None
        return int(finite_or_none(status["checkpoint_step"]) or 0)

    @property
    def last_step(self) -> int | None:
        """The furthest step known: max of the metrics steps, summary ``steps`` and status ``step``."""
        known = [finite_or_none(self.metrics["step"].max())] if len(self.metrics) else []
        known += [self._from_summary("steps"), finite_or_none((self.status or {}).get("step"))]
        known = [k for k in known if k is not None]
        return int(max(known)) if known else None

    @property
    def max_steps(self) -> int | None:
        status = self.status or {}
        v = finite_or_none(status.get("max_steps")) or finite_or_none(self.config.get("max_steps"))
        return int(v) if v else None

    @property
    def final_train_loss(self) -> float | None:
        return self._pick("final_train_loss", "train_loss")

    @property
    def final_val_loss(self) -> float | None:
        return self._pick("final_val_loss", "val_loss")

    @property
    def best_val_loss(self) -> float | None:
        v = self._from_summary("best_val_loss")
        if v is None and len(self.eval_rows):
            return finite_or_none(self.eval_rows["val_loss"].min())
        return v

    @property
    def tokens(self) -> float | None:
        return self._pick("tokens")

    @property
    def wallclock_s(self) -> float | None:
        return self._pick("wallclock_s")

    @property
    def tokens_per_sec(self) -> float | None:
        """The training throughput (see the module docstring)."""
        return median(self.metrics, "tokens_per_sec")

    @property
    def eval_rows(self) -> pd.DataFrame:
        """Metrics rows that carry a validation loss."""
        return self.metrics[self.metrics["val_loss"].notna()]

    @property
    def learning_rate(self) -> float | None:
        return finite_or_none(self.config.get("max_lr"))

    @property
    def target_val_loss(self) -> float | None:
        v = self._from_summary("target_val_loss")
        return v if v is not None else finite_or_none(self.config.get("target_val_loss"))

    @property
    def sharpness(self) -> pd.DataFrame:
        """sharpness.csv (step, lr, sharpness, threshold, ratio); empty when the run measured none."""
        return read_csv(self.path / SHARPNESS_FILE, SHARPNESS_COLUMNS)

    @property
    def signals(self) -> pd.DataFrame:
        """``step`` and the ``SIGNALS`` of the metrics rows that carry any signal (``max_attn_logit`` is the
        max over the layers' columns); empty when the run logged none."""
        m = self.metrics
        layers = [c for c in m.columns if c.startswith(ATTN_LOGIT_PREFIX)]
        out = pd.DataFrame({"step": m["step"]})
        out["max_attn_logit"] = m[layers].max(axis=1, skipna=False) if layers else math.nan
        for name in list(SIGNALS)[1:]:
            out[name] = m[name] if name in m.columns else math.nan
        return out[out[list(SIGNALS)].notna().any(axis=1)].reset_index(drop=True)

    @property
    def initial_loss(self) -> float | None:
        """summary.json's loss at step 1 (the loss at initialisation, l0 of the LR sensitivity)."""
        return self._from_summary("initial_loss")

    @property
    def val_loss_sem(self) -> float | None:
        """summary.json's std / sqrt(n) of the final evaluation's per-batch validation losses (its noise)."""
        return self._from_summary("val_loss_sem")

    def smoothed_train_loss(self) -> tuple[np.ndarray, np.ndarray]:
        """(steps, smoothed train loss) of the rows with a train loss: the curve the stall rule compares."""
        m = self.metrics[self.metrics["train_loss"].notna()]
        values = [np.nan if v is None else v for v in smoothed(m["train_loss"])]
        return m["step"].to_numpy(dtype=float), np.asarray(values, dtype=float)

    def overhead_share(self) -> dict | None:
        """Share of wallclock spent outside training steps: from summary.json (eval, checkpoint and the stability
        measurements, 0 in runs from before they were timed), else estimated from metrics (wallclock minus steps x
        ms_per_step). ``{"eval", "checkpoint", "measure", "total", "wallclock_s", "estimated"}``; total covers
        evaluation and checkpoints, the part their intervals control."""
        wall, ev, ck = (self._from_summary(k) for k in ("wallclock_s", "eval_s", "checkpoint_s"))
        if wall and ev is not None and ck is not None:
            measure = (self._from_summary("measure_s") or 0.0) / wall
            return {"eval": ev / wall, "checkpoint": ck / wall, "measure": measure, "total": (ev + ck) / wall,
                    "wallclock_s": wall, "estimated": False}  # fmt: skip
        m = self.metrics[self.metrics["ms_per_step"].notna() & self.metrics["wallclock_s"].notna()]
        if len(m) < 2 or not m["wallclock_s"].iloc[-1] > 0:
            return None
        wall = float(m["wallclock_s"].iloc[-1])
        step_s = float((m["step"].diff().fillna(m["step"].iloc[0]) * m["ms_per_step"]).sum()) / 1e3
        return {"eval": None, "checkpoint": None, "measure": None, "total": max(wall - step_s, 0.0) / wall,
                "wallclock_s": wall, "estimated": True}  # fmt: skip


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


def compare_experiments(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """One row per run (name, lr, state, steps, losses, throughput, target_met), sorted by lr (NaN last)."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    rows = []
    for p in paths:
        log = load_experiment_log(p)
        rows.append({
            "name": log.name, "lr": log.learning_rate, "state": log.state, "steps": log.last_step,
            "final_train_loss": log.final_train_loss, "final_val_loss": log.final_val_loss,
            "best_val_loss": log.best_val_loss, "tokens": log.tokens, "wallclock_s": log.wallclock_s,
            "tokens_per_sec": log.tokens_per_sec, "target_met": (log.summary or {}).get("target_met"),
        })  # fmt: skip
    df = pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))
    float_cols = [c for c in COMPARE_COLUMNS if c not in ("name", "state", "steps", "target_met")]
    df[float_cols] = df[float_cols].astype("float64")
    df["steps"] = df["steps"].astype("Int64")
    return df.sort_values(["lr", "name"], na_position="last", kind="stable").reset_index(drop=True)


# ---- owning and retiring a run dir -------------------------------------------------------------------
BUSY = "is being trained by"  # run_dir_lock's refusal: the sweep reads it as "another live process owns it"


@contextlib.contextmanager
def run_dir_lock(out_dir: Path):
    """One trainer per run directory: an flock the kernel drops when the holder dies (even by kill -9)."""
    with open(out_dir / RUN_LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise UserError(f"{out_dir} {BUSY} {holder}; wait for it, or stop that process first") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def make_dirs(path: Path) -> list[Path]:
    """``mkdir -p path``; the directories it created, deepest first (what ``removed_if_refused`` may remove)."""
    created = [d for d in (path, *path.parents) if not d.exists()]
    path.mkdir(parents=True, exist_ok=True)
    return created


@contextlib.contextmanager
def removed_if_refused(created: list[Path], lock_name: str):
    """The directories a command created for a run or sweep (``make_dirs``'s list) go again when it is refused before
    it wrote anything there but its lock ``lock_name`` (missing data, no such device): a refusal leaves
    nothing behind. The lock is still held: no other process is using what is removed."""
    try:
        yield
    except BaseException:
        if created and [p.name for p in created[0].iterdir()] == [lock_name]:
            (created[0] / lock_name).unlink()
            for d in created:
                with contextlib.suppress(OSError):
                    d.rmdir()
        raise


def refuse_sweep_dir(out_dir: Path) -> None:
    """A training run's --out must not be a sweep's directory: its files would mix with the sweep's."""
    if (Path(out_dir) / SWEEP_FILE).exists():
        raise UserError(
            f"{out_dir} is a sweep's directory (it holds {SWEEP_FILE}); give the run its own --out"
        )


def refuse_run_dir(sweep_dir: Path) -> None:
    """A sweep's directory must not be a training run's: the sweep would write its points inside it."""
    if (Path(sweep_dir) / CONFIG_FILE).is_file() and not (Path(sweep_dir) / SWEEP_FILE).exists():
        raise UserError(f"{sweep_dir} is a training run's directory (it holds {CONFIG_FILE}), not a sweep's; "
                        "choose another directory")  # fmt: skip


MOVED_ASIDE = ".old-"  # in the name of a directory move_aside renamed: readers skip it


def move_aside(path: Path) -> Path | None:
    """Rename an existing run dir to ``<name>.old-<timestamp>`` so results are never silently deleted."""
    if not path.exists():
        return None
    old = f"{path.name}{MOVED_ASIDE}{time.strftime('%Y%m%d-%H%M%S')}"
    target, n = path.with_name(old), 1
    while target.exists():
        target, n = path.with_name(f"{old}-{n}"), n + 1
    path.rename(target)
    return target
