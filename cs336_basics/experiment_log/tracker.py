"""Writes a training run's directory: config.json, metrics.csv, status.json, summary.json, loss_curves.png.

metrics.csv is appended and flushed row by row so it can be read while the run is live; floats are
written with ``repr`` so they round-trip exactly (a resumed run's losses are byte-identical to an
uninterrupted run's). The JSON files and the figure are replaced atomically.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import math
import operator
import os
import socket
import time
import warnings
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cs336_basics.atomic import atomic_write_json, atomic_write_text
from cs336_basics.experiment_log.plots import plot_loss_curves
from cs336_basics.experiment_log.reader import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    METRIC_COLUMNS,
    METRICS_FILE,
    PLOT_FILE,
    STATES,
    STATUS_FILE,
    SUMMARY_FILE,
)
from cs336_basics.experiment_log.reader import finite_or_none as _finite

_INT_COLUMNS = ("step", "tokens")


def _config_dict(config: Any) -> dict:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(f"config must be a dataclass instance or a mapping, got {type(config).__name__}")


def _lookup(config: Any, key: str) -> Any:
    return config.get(key) if isinstance(config, Mapping) else getattr(config, key, None)


def _fmt(col: str, x: Any) -> str:
    """One CSV cell: empty for None, int for step/tokens, ``repr(float)`` otherwise (exact round trip)."""
    if x is None:
        return ""
    if col in _INT_COLUMNS:
        with contextlib.suppress(TypeError):
            return str(operator.index(x))  # exact for big ints
        v = float(x)
        return str(int(v)) if math.isfinite(v) else ""
    return repr(float(x))


def _csv_line(values: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


class ExperimentTracker:
    """Records one training run into ``log_dir``. Also a context manager: ``start()`` on enter (if not
    already started), ``finish()`` on exit; an exception finishes the run as ``failed`` (``interrupted``
    for KeyboardInterrupt/SystemExit) with the exception as the reason, and is re-raised."""

    def __init__(
        self,
        config: Any,
        log_dir: str | os.PathLike,
        *,
        max_steps: int | None = None,
        target_val_loss: float | None = None,
        status_interval_s: float = 5.0,
    ) -> None:
        self.config = _config_dict(config)
        self.log_dir = Path(log_dir)
        self.max_steps = max_steps if max_steps is not None else _lookup(config, "max_steps")
        self.target_val_loss = (
            target_val_loss if target_val_loss is not None else _lookup(config, "target_val_loss")
        )
        self.status_interval_s = float(status_interval_s)
        self._file: io.TextIOBase | None = None
        self._started = False
        self._finished = False
        self._state = "pending"
        self._t0: float | None = None
        self._wallclock_offset = 0.0
        self._last_status_t = -math.inf
        self._step = 0
        self._pending_eval: tuple[int, Any, Any] | None = None
        self._latest: dict[str, str] = {}  # last non-empty cell written, per column
        self._final: dict[str, float] = {}  # losses passed to finish()
        self._best_val_loss: float | None = None
        self._best_step: int | None = None
        self.summary: dict | None = None

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self, resume_step: int | None = None) -> float:
        """Create the run dir, write config.json and status ``running``. With ``resume_step``, keep only
        metrics rows with step <= resume_step and return the last kept row's wallclock_s (0.0 if none);
        otherwise start metrics.csv afresh and return 0.0."""
        self._close()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.log_dir / CHECKPOINT_DIR).mkdir(exist_ok=True)
        atomic_write_json(self.log_dir / CONFIG_FILE, self.config)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.log_dir / SUMMARY_FILE)  # stale from an earlier attempt
        metrics = self.log_dir / METRICS_FILE
        kept: list[dict[str, str]] = []
        if resume_step is not None and metrics.exists():
            kept = self._kept_rows(metrics, int(resume_step))
        body = "".join(_csv_line([r[c] for c in METRIC_COLUMNS]) for r in kept)
        atomic_write_text(metrics, _csv_line(list(METRIC_COLUMNS)) + body)
        self._restore(kept)
        self._file = open(metrics, "a", encoding="utf-8", newline="")  # noqa: SIM115 (open for the run)
        self._step = int(resume_step) if resume_step is not None else 0
        self._wallclock_offset = next(
            (float(r["wallclock_s"]) for r in reversed(kept) if _finite(r["wallclock_s"]) is not None), 0.0
        )
        self._t0 = time.monotonic()
        self._started, self._finished = True, False
        self.set_status("running")
        return self._wallclock_offset

    def finish(
        self,
        train_loss: float | None = None,
        val_loss: float | None = None,
        notes: str = "",
        *,
        state: str = "finished",
        reason: str | None = None,
        extra: dict | None = None,
    ) -> dict:
        """Flush any pending eval row, then write summary.json, the final status and loss_curves.png.

        ``train_loss``/``val_loss`` default to the last logged values. ``target_met`` is
        ``final_val_loss <= target_val_loss`` (None when there is no target). ``wallclock_s`` is the last
        logged row's, or the tracker's own clock when nothing was logged. ``extra`` entries (e.g. the time
        spent on evaluation and checkpoints) are added to the summary. Returns the summary dict."""
        self._check_state(state)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._flush_pending_eval()
        if train_loss is not None:
            self._final["train_loss"] = float(train_loss)
        if val_loss is not None:
            self._final["val_loss"] = float(val_loss)
            self._update_best(self._step, val_loss)
        self.summary = {**self._build_summary(state, reason, notes), **(extra or {})}
        atomic_write_json(self.log_dir / SUMMARY_FILE, self.summary)
        self.set_status(state, reason=reason)
        self._close()
        self._finished = True
        self.save()
        return self.summary

    def save(self) -> None:
        """Flush metrics.csv (writing any pending eval row) and redraw loss_curves.png from disk."""
        self._flush_pending_eval()
        if self._file is not None:
            self._file.flush()
        try:
            plot_loss_curves(self.log_dir, self.log_dir / PLOT_FILE)
        except Exception as err:  # a figure must never kill a training run
            warnings.warn(f"could not draw {self.log_dir / PLOT_FILE}: {err}", stacklevel=2)

    def __enter__(self) -> ExperimentTracker:
        if not self._started:
            self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._finished:
            return False
        if exc_type is None:
            self.finish()
            return False
        interrupted = issubclass(exc_type, KeyboardInterrupt | SystemExit)
        try:
            self.finish(
                state="interrupted" if interrupted else "failed",
                reason=f"{exc_type.__name__}: {exc}" if str(exc) else exc_type.__name__,
            )
        except Exception as err:  # never mask the original exception
            warnings.warn(f"could not record the run's failure in {self.log_dir}: {err}", stacklevel=2)
        return False

    # ---- logging ---------------------------------------------------------------------------------

    def log_metrics(
        self,
        iteration: int,
        train_loss: float,
        learning_rate: float,
        tokens_per_sec: float,
        iter_time_ms: float,
        *,
        tokens: int | None = None,
        wallclock_s: float | None = None,
        grad_norm: float | None = None,
        val_loss: float | None = None,
    ) -> None:
        """Append one metrics row (with the val_loss of a pending ``log_eval`` for the same iteration).
        ``wallclock_s`` defaults to the tracker's clock (continuing from the resumed wallclock)."""
        self._require_open()
        iteration = int(iteration)
        if self._pending_eval is not None and self._pending_eval[0] == iteration:
            if val_loss is None:
                val_loss = self._pending_eval[2]
            self._pending_eval = None
        self._flush_pending_eval()
        self._write_row(
            step=iteration,
            tokens=tokens,
            wallclock_s=self.elapsed() if wallclock_s is None else wallclock_s,
            train_loss=train_loss,
            val_loss=val_loss,
            lr=learning_rate,
            grad_norm=grad_norm,
            tokens_per_sec=tokens_per_sec,
            ms_per_step=iter_time_ms,
        )
        if val_loss is not None:
            self._update_best(iteration, val_loss)
        self._step = max(self._step, iteration)
        self._maybe_status()

    def log_eval(self, iteration: int, train_loss: float | None, val_loss: float) -> None:
        """Record an evaluation. It joins the next ``log_metrics`` row if that is for the same iteration;
        otherwise it becomes its own row (tokens/wallclock carried from the last row, other columns empty)
        when the next ``log_metrics``/``log_eval``/``save``/``finish`` comes. Log the eval before the
        same-step metrics to avoid two rows for one step."""
        self._require_open()
        iteration = int(iteration)
        if self._pending_eval is not None and self._pending_eval[0] != iteration:
            self._flush_pending_eval()
        self._pending_eval = (iteration, train_loss, val_loss)
        self._update_best(iteration, val_loss)
        self._step = max(self._step, iteration)

    def increment_gradient_step(self) -> None:
        """Count one optimizer step (status.json's ``step`` when metrics are logged sparsely)."""
        self._step += 1
        self._maybe_status()

    def set_status(self, state: str, reason: str | None = None, step: int | None = None) -> None:
        """Write status.json now."""
        self._check_state(state)
        if step is not None:
            self._step = int(step)
        self._state = state
        self.log_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            self.log_dir / STATUS_FILE,
            {
                "state": state,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "step": self._step,
                "max_steps": self.max_steps,
                "updated_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                "reason": reason,
            },
        )
        self._last_status_t = time.monotonic()

    def elapsed(self) -> float:
        """Run wallclock in seconds: resumed offset plus time since ``start()``."""
        return self._wallclock_offset + (time.monotonic() - self._t0 if self._t0 is not None else 0.0)

    def print_summary(self) -> None:
        """Print the summary (the final one after ``finish``, else the run so far) as a small table."""
        summary = self.summary or self._build_summary(self._state, None, "")
        width = max(len(k) for k in summary)
        print(f"run: {self.log_dir}")
        for key, value in summary.items():
            if isinstance(value, dict | list):
                continue  # nested details (e.g. runtime) are in summary.json
            if isinstance(value, float):
                value = f"{value:.6g}"
            print(f"  {key:<{width}}  {'-' if value in (None, '') else value}")

    # ---- internals -------------------------------------------------------------------------------

    def _check_state(self, state: str) -> None:
        if state not in STATES:
            raise ValueError(f"unknown run state {state!r}; expected one of {', '.join(STATES)}")

    def _require_open(self) -> None:
        if self._file is None:
            raise RuntimeError("ExperimentTracker: call start() before logging (and not after finish())")

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _maybe_status(self) -> None:
        if time.monotonic() - self._last_status_t >= self.status_interval_s:
            self.set_status(self._state)

    def _write_row(self, **values: Any) -> None:
        row = {c: _fmt(c, values.get(c)) for c in METRIC_COLUMNS}
        self._file.write(_csv_line([row[c] for c in METRIC_COLUMNS]))
        self._file.flush()
        self._latest.update({c: v for c, v in row.items() if v})

    def _flush_pending_eval(self) -> None:
        if self._pending_eval is None or self._file is None:
            return
        iteration, train_loss, val_loss = self._pending_eval
        self._pending_eval = None
        self._write_row(
            step=iteration,
            tokens=self._latest.get("tokens"),
            wallclock_s=self._latest.get("wallclock_s") or self.elapsed(),
            train_loss=train_loss,
            val_loss=val_loss,
        )

    def _update_best(self, step: int, val_loss: Any) -> None:
        v = _finite(val_loss)
        if v is not None and (self._best_val_loss is None or v < self._best_val_loss):
            self._best_val_loss, self._best_step = v, int(step)

    def _kept_rows(self, metrics: Path, resume_step: int) -> list[dict[str, str]]:
        """Raw (string) rows of metrics.csv with step <= resume_step; an incomplete last line is dropped."""
        text = metrics.read_text(encoding="utf-8", errors="replace")
        text = text[: text.rfind("\n") + 1]
        rows = list(csv.DictReader(io.StringIO(text)))
        kept = []
        for r in rows:
            step = _finite(r.get("step"))
            if step is not None and step <= resume_step:
                kept.append({c: (r.get(c) or "").strip() for c in METRIC_COLUMNS})
        return kept

    def _restore(self, kept: list[dict[str, str]]) -> None:
        self._pending_eval = None
        self._best_val_loss = self._best_step = None
        self._latest, self._final = {}, {}
        for r in kept:
            self._latest.update({c: v for c, v in r.items() if v})
            self._update_best(int(float(r["step"])), r["val_loss"])

    def _build_summary(self, state: str, reason: str | None, notes: str) -> dict:
        latest = {**self._latest, **self._final}
        tokens = _finite(latest.get("tokens"))
        wallclock = _finite(latest.get("wallclock_s"))
        if wallclock is None:
            wallclock = self.elapsed()
        tps = tokens / wallclock if tokens and wallclock else _finite(latest.get("tokens_per_sec"))
        final_val = _finite(latest.get("val_loss"))
        target = _finite(self.target_val_loss)
        return {
            "status": state,
            "final_train_loss": _finite(latest.get("train_loss")),
            "final_val_loss": final_val,
            "best_val_loss": self._best_val_loss,
            "best_step": self._best_step,
            "tokens": int(tokens) if tokens is not None else None,
            "wallclock_s": wallclock,
            "tokens_per_sec": tps,
            "target_val_loss": target,
            "target_met": None if target is None else (final_val is not None and final_val <= target),
            "reason": reason,
            "notes": notes,
            "steps": self._step,
        }
