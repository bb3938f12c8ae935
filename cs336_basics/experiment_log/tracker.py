"""Writes a training run's directory: config.json, metrics.csv, status.json, summary.json, loss_curves.png.

The tracker keeps no clock, step counter or best loss of its own: the trainer's state is the one source of
those, and every row, status and summary is handed in whole. metrics.csv is appended and flushed row by row
so it can be read while the run is live; floats are written with ``repr`` so they round-trip exactly (a
resumed run's rows are byte-identical to an uninterrupted run's). The JSON files and the figure are replaced
atomically; status.json is written on a background thread, off the training loop.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import math
import operator
import os
import socket
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
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
    SHARPNESS_COLUMNS,
    SHARPNESS_FILE,
    STATES,
    STATUS_FILE,
    SUMMARY_FILE,
    has_header,
    utc_timestamp,
)
from cs336_basics.experiment_log.reader import finite_or_none as _finite

_INT_COLUMNS = ("step", "tokens")


def _cell(col: str, x: Any) -> str:
    """One CSV cell: empty for None, int for step/tokens, ``repr(float)`` otherwise (exact round trip)."""
    if x is None or x == "":
        return ""
    if col in _INT_COLUMNS:
        with contextlib.suppress(TypeError):
            return str(operator.index(x))
        v = float(x)
        return str(int(v)) if math.isfinite(v) else ""
    return repr(float(x))


def _csv_line(values: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


class CsvLog:
    """An append-only CSV of a run dir, flushed row by row; on resume it keeps the rows up to the resume step."""

    def __init__(self, path: Path, columns: tuple[str, ...]):
        self.path, self.columns = path, columns
        self._file: io.TextIOBase | None = None

    def start(self, resume_step: int | None) -> None:
        kept = self._kept_lines(resume_step) if resume_step is not None else []
        atomic_write_text(self.path, _csv_line(list(self.columns)) + "".join(kept))
        self._file = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115 (open for the run)

    def append(self, row: dict) -> None:
        self._file.write(_csv_line([_cell(c, row.get(c)) for c in self.columns]))
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _kept_lines(self, resume_step: int) -> list[str]:
        """Data lines with step <= resume_step, byte for byte (re-cut if an older version wrote other
        columns); a half-written last line is dropped (the run resumes from a checkpoint at or before it)."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        text = text[: text.rfind("\n") + 1]
        header, *lines = text.splitlines(keepends=True) or [""]
        if not has_header(header):  # the header was lost: the lines are this log's, in its column order
            lines = [line for line in [header, *lines] if line.count(",") == len(self.columns) - 1]
        elif header.strip() != ",".join(self.columns):
            rows = csv.DictReader(io.StringIO(text))
            lines = [_csv_line([r.get(c) or "" for c in self.columns]) for r in rows]
        steps = [_finite(line.split(",", 1)[0]) for line in lines]
        return [line for line, step in zip(lines, steps) if step is not None and step <= resume_step]


class ExperimentTracker:
    """Records one run into ``log_dir``: ``start`` -> ``log`` per log step -> ``finish``.

    ``columns``: metrics.csv's header, the standard ``METRIC_COLUMNS`` then any extra ones (instability
    signals, ...). ``sink``: an optional mirror of every row and of the summary (Weights & Biases).
    """

    def __init__(self, run_info: dict, log_dir: str | os.PathLike, *, columns=(), sink=None) -> None:
        self.run_info, self.log_dir = run_info, Path(log_dir)  # written at start(): later additions included
        self.columns = tuple(METRIC_COLUMNS) + tuple(c for c in columns if c not in METRIC_COLUMNS)
        self.sink = sink
        self.metrics = CsvLog(self.log_dir / METRICS_FILE, self.columns)
        self.sharpness = CsvLog(self.log_dir / SHARPNESS_FILE, SHARPNESS_COLUMNS)
        self._status_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="status-writer")
        self._status_future: Future | None = None

    def start(self, resume_step: int | None = None) -> None:
        """Write config.json and status ``running``; metrics.csv keeps only rows with step <= ``resume_step``
        (all of them are dropped when starting afresh)."""
        (self.log_dir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.log_dir / CONFIG_FILE, self.run_info)
        (self.log_dir / SUMMARY_FILE).unlink(missing_ok=True)  # stale from an earlier attempt
        self.metrics.start(resume_step)
        self.sharpness.start(resume_step)
        self.set_status("running", step=resume_step or 0, checkpoint_step=resume_step, background=False)

    def update_info(self, run_info: dict) -> None:
        """Rewrite config.json (e.g. after a compile failure changed the runtime)."""
        self.run_info = dict(run_info)
        atomic_write_json(self.log_dir / CONFIG_FILE, self.run_info)

    def log(self, row: dict) -> None:
        """Append one metrics row (missing columns stay empty) and mirror it to the sink."""
        self.metrics.append(row)
        if self.sink is not None:
            self.sink.log_row(row)

    def log_sharpness(self, row: dict) -> None:
        """Append one row of sharpness.csv (step, lr, sharpness, threshold, ratio)."""
        self.sharpness.append(row)
        if self.sink is not None:
            self.sink.log_row(
                {"step": row["step"], "sharpness": row["sharpness"], "sharpness_ratio": row["ratio"]}
            )

    def set_status(self, state: str, *, step: int, checkpoint_step: int | None = None, reason: str | None = None,
                   background: bool = True) -> None:  # fmt: skip
        """Write status.json (on the background thread unless ``background=False``); ``checkpoint_step`` is
        the step of the latest.pt on disk (None: none yet), where a re-run of a killed run resumes."""
        if state not in STATES:
            raise ValueError(f"unknown run state {state!r}; expected one of {', '.join(STATES)}")
        status = {
            "state": state,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "step": int(step),
            "checkpoint_step": checkpoint_step,
            "max_steps": self.run_info.get("max_steps"),
            "updated_at": utc_timestamp(),
            "reason": reason,
        }
        self._wait_status()
        write = functools.partial(atomic_write_json, self.log_dir / STATUS_FILE, status)
        if background:
            self._status_future = self._status_pool.submit(write)
        else:
            write()

    def finish(self, summary: dict) -> dict:
        """Write summary.json, the final status and loss_curves.png; close the files."""
        self.close()
        atomic_write_json(self.log_dir / SUMMARY_FILE, summary)
        self.set_status(
            summary["status"], step=summary["steps"], reason=summary.get("reason"), background=False
        )
        try:
            plot_loss_curves(self.log_dir, self.log_dir / PLOT_FILE)
        except Exception as err:  # a figure must never fail a finished run
            warnings.warn(f"could not draw {self.log_dir / PLOT_FILE}: {err}", stacklevel=2)
        if self.sink is not None:
            self.sink.log_summary(summary)
        return summary

    def close(self) -> None:
        self.metrics.close()
        self.sharpness.close()
        self._wait_status()

    def _wait_status(self) -> None:
        """A failed background status write surfaces here, at the next status change."""
        if self._status_future is not None:
            future, self._status_future = self._status_future, None
            future.result()


def print_summary(summary: dict, log_dir: Path) -> None:
    """The summary as a small two-column table (nested details stay in summary.json)."""
    flat = {k: v for k, v in summary.items() if not isinstance(v, dict | list)}
    width = max(len(k) for k in flat)
    print(f"run: {log_dir}")
    for key, value in flat.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        print(f"  {key:<{width}}  {'-' if value in (None, '') else value}")
