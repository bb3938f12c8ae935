"""Tests for the run-directory tracker and the shared reader."""

from __future__ import annotations

import json
import math
import os
import random
import socket
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime

import pytest

from cs336_basics.errors import UserError
from cs336_basics.experiment_log import (
    METRIC_COLUMNS,
    ExperimentTracker,
    compare_experiments,
    load_experiment_log,
)
from cs336_basics.experiment_log import tracker as tracker_module

HEADER = ",".join(METRIC_COLUMNS) + "\n"


@pytest.fixture
def real_plots():
    """Request this to let the tracker draw loss_curves.png."""


@pytest.fixture(autouse=True)
def _no_plots(request, monkeypatch):
    """Drawing costs ~0.3 s a run, so only tests that request ``real_plots`` render the figure."""
    if "real_plots" not in request.fixturenames:
        monkeypatch.setattr(tracker_module, "plot_loss_curves", lambda log, out: None)


@dataclass
class Cfg:
    max_lr: float = 3e-4
    max_steps: int = 100
    target_val_loss: float | None = 2.0


def _loss(i: int) -> float:
    """Awkward floats whose repr is long, to test exact round trips."""
    return 10.0 / (1 + i) ** 0.37 + random.Random(i).random() * 1e-9


def _run(tracker: ExperimentTracker, steps, *, eval_every: int = 10) -> None:
    for i in steps:
        if i % eval_every == 0:
            tracker.log_eval(i, _loss(i), _loss(i) + 0.1)
        tracker.log_metrics(
            i,
            _loss(i),
            1e-3 / 3,
            12345.678,
            9.87,
            tokens=256 * i,
            wallclock_s=i * 0.1 + 1 / 3,
            grad_norm=1 / 7,
        )


def _strict_json(path):
    def no_nan(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=no_nan)


def test_write_and_read_back_round_trips_exactly(tmp_path):
    cfg = Cfg()
    tracker = ExperimentTracker(cfg, tmp_path / "run", status_interval_s=0)
    assert tracker.start() == 0.0
    _run(tracker, range(1, 31))
    summary = tracker.finish()

    text = (tmp_path / "run" / "metrics.csv").read_text()
    assert text.startswith(HEADER)
    assert (tmp_path / "run" / "checkpoints").is_dir()
    log = load_experiment_log(tmp_path / "run")
    assert log.name == "run"
    assert log.config == asdict(cfg)
    assert tuple(log.metrics.columns) == METRIC_COLUMNS
    assert all(str(t) in ("int64", "float64") for t in log.metrics.dtypes)
    m = log.metrics
    assert m["step"].tolist() == list(range(1, 31))
    assert m["train_loss"].tolist() == [_loss(i) for i in range(1, 31)]
    assert m["lr"].tolist() == [1e-3 / 3] * 30
    assert m["wallclock_s"].tolist() == [i * 0.1 + 1 / 3 for i in range(1, 31)]
    assert m["tokens"].tolist() == [256 * i for i in range(1, 31)]
    assert m["val_loss"].isna().sum() == 27
    assert log.eval_rows["step"].tolist() == [10, 20, 30]
    assert log.eval_rows["val_loss"].tolist() == [_loss(i) + 0.1 for i in (10, 20, 30)]

    assert log.state == "finished"
    assert log.last_step == 30
    assert log.learning_rate == 3e-4
    assert log.final_train_loss == _loss(30)
    assert log.final_val_loss == log.best_val_loss == _loss(30) + 0.1
    assert summary == _strict_json(tmp_path / "run" / "summary.json")
    assert summary["best_step"] == 30
    assert summary["steps"] == 30
    assert summary["tokens"] == 256 * 30
    assert summary["wallclock_s"] == 30 * 0.1 + 1 / 3
    assert summary["tokens_per_sec"] == pytest.approx(256 * 30 / (30 * 0.1 + 1 / 3))
    expected_keys = {"status", "final_train_loss", "final_val_loss", "best_val_loss", "best_step", "tokens"}
    expected_keys |= {"wallclock_s", "tokens_per_sec", "target_val_loss", "target_met", "reason", "notes"}
    assert expected_keys | {"steps"} == set(summary)


def test_eval_merged_into_same_step_row_else_own_row(tmp_path):
    tracker = ExperimentTracker({"lr": 0.01}, tmp_path / "r")
    tracker.start()
    tracker.log_metrics(5, 3.0, 0.01, 100.0, 10.0, tokens=500, wallclock_s=5.0)
    tracker.log_eval(10, 2.9, 2.5)
    tracker.log_metrics(10, 2.8, 0.01, 100.0, 10.0, tokens=1000, wallclock_s=10.0)
    tracker.log_eval(12, 2.7, 2.4)  # no metrics row for step 12 follows
    tracker.log_metrics(15, 2.6, 0.01, 100.0, 10.0, tokens=1500, wallclock_s=15.0)
    tracker.log_eval(15, 2.5, 2.6)  # eval after the same-step metrics row: flushed by finish
    tracker.finish()

    m = load_experiment_log(tmp_path / "r").metrics
    assert m["step"].tolist() == [5, 10, 12, 15, 15]
    row10 = m.iloc[1]
    assert (row10["train_loss"], row10["val_loss"], row10["tokens"]) == (2.8, 2.5, 1000)
    row12 = m.iloc[2]
    assert (row12["train_loss"], row12["val_loss"]) == (2.7, 2.4)
    assert (row12["tokens"], row12["wallclock_s"]) == (1000, 10.0)  # carried from the last row
    assert math.isnan(row12["lr"]) and math.isnan(row12["ms_per_step"])
    assert m.iloc[4]["val_loss"] == 2.6
    summary = _strict_json(tmp_path / "r" / "summary.json")
    assert (summary["best_val_loss"], summary["best_step"]) == (2.4, 12)
    assert summary["final_val_loss"] == 2.6
    assert summary["target_met"] is None


def test_save_flushes_pending_eval_and_draws(tmp_path, real_plots):
    tracker = ExperimentTracker({}, tmp_path / "r")
    tracker.start()
    tracker.log_metrics(1, 3.0, 0.1, 1.0, 1.0, wallclock_s=1.0)
    tracker.log_eval(2, None, 2.0)
    tracker.save()
    m = load_experiment_log(tmp_path / "r").metrics
    assert m["step"].tolist() == [1, 2]
    assert m["val_loss"].iloc[1] == 2.0 and math.isnan(m["train_loss"].iloc[1])
    assert (tmp_path / "r" / "loss_curves.png").stat().st_size > 0


def test_resume_truncates_and_matches_uninterrupted_run(tmp_path):
    full = ExperimentTracker(Cfg(), tmp_path / "full")
    full.start()
    _run(full, range(1, 61))
    full.finish()

    part = ExperimentTracker(Cfg(), tmp_path / "part")
    part.start()
    _run(part, range(1, 48))  # "crashed" at 47 with the last checkpoint at step 40
    part._file.write("48,12288,4.8,2.1")  # and a half-written line
    part._file.flush()

    resumed = ExperimentTracker(Cfg(), tmp_path / "part")
    wallclock = resumed.start(resume_step=40)
    assert wallclock == 40 * 0.1 + 1 / 3
    assert load_experiment_log(tmp_path / "part").metrics["step"].tolist() == list(range(1, 41))
    assert not (tmp_path / "part" / "summary.json").exists()
    _run(resumed, range(41, 61))
    resumed.finish()

    a = (tmp_path / "full" / "metrics.csv").read_bytes()
    b = (tmp_path / "part" / "metrics.csv").read_bytes()
    assert a == b
    assert _strict_json(tmp_path / "full" / "summary.json") == _strict_json(
        tmp_path / "part" / "summary.json"
    )


def test_resume_restores_best_val_and_without_metrics_returns_zero(tmp_path):
    t = ExperimentTracker({}, tmp_path / "r")
    t.start()
    t.log_eval(10, 2.0, 1.5)
    t.log_metrics(10, 2.0, 0.1, 1.0, 1.0, wallclock_s=7.5)
    t.log_metrics(20, 2.0, 0.1, 1.0, 1.0, wallclock_s=9.0, val_loss=1.9)
    t2 = ExperimentTracker({}, tmp_path / "r")
    assert t2.start(resume_step=20) == 9.0
    summary = t2.finish()
    assert (summary["best_val_loss"], summary["best_step"], summary["final_val_loss"]) == (1.5, 10, 1.9)
    assert ExperimentTracker({}, tmp_path / "fresh").start(resume_step=5) == 0.0


def test_reader_drops_half_written_line_and_coerces_garbage(tmp_path):
    (tmp_path / "metrics.csv").write_text(
        HEADER + "1,10,0.5,3.25,,0.1,1,2,3\n2,20,1.0,oops,,0.1,1,2,3\n3,30,1."
    )
    m = load_experiment_log(tmp_path).metrics
    assert m["step"].tolist() == [1, 2]
    assert m["train_loss"].iloc[0] == 3.25 and math.isnan(m["train_loss"].iloc[1])
    assert math.isnan(m["val_loss"].iloc[0])

    (tmp_path / "metrics.csv").write_text(HEADER[:20])  # header itself half-written
    assert load_experiment_log(tmp_path).metrics.empty


def test_reader_on_empty_dir(tmp_path):
    log = load_experiment_log(tmp_path)
    assert tuple(log.metrics.columns) == METRIC_COLUMNS and log.metrics.empty
    assert log.config == {} and log.status is None and log.summary is None
    assert log.state == "pending"
    assert log.last_step is None and log.final_train_loss is None and log.best_val_loss is None
    assert log.eval_rows.empty and log.learning_rate is None
    (tmp_path / "metrics.csv").write_text("")
    assert load_experiment_log(tmp_path).metrics.empty


def test_reader_on_corrupt_json(tmp_path):
    (tmp_path / "summary.json").write_text('{"status": "fini')
    (tmp_path / "status.json").write_text("[1, 2]")
    (tmp_path / "config.json").write_bytes(b"\xff\x00garbage")
    log = load_experiment_log(tmp_path)
    assert log.summary is None and log.status is None and log.config == {}
    (tmp_path / "status.json").write_text('{"state": "running", "step": 7}')
    log = load_experiment_log(tmp_path)
    assert (log.state, log.last_step) == ("running", 7)


def test_reader_rejects_non_directory(tmp_path):
    with pytest.raises(UserError):
        load_experiment_log(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError):
        load_experiment_log(tmp_path / "file")


def test_status_json(tmp_path):
    t = ExperimentTracker(Cfg(max_steps=500), tmp_path / "r", status_interval_s=3600)
    t.start()
    status = _strict_json(tmp_path / "r" / "status.json")
    assert status["state"] == "running"
    assert status["pid"] == os.getpid() and status["host"] == socket.gethostname()
    assert status["max_steps"] == 500 and status["step"] == 0 and status["reason"] is None
    assert datetime.fromisoformat(status["updated_at"]).utcoffset().total_seconds() == 0
    for _ in range(3):
        t.increment_gradient_step()
    t.log_metrics(3, 2.0, 0.1, 1.0, 1.0)
    assert _strict_json(tmp_path / "r" / "status.json")["step"] == 0  # throttled
    t.status_interval_s = 0
    t.increment_gradient_step()
    assert _strict_json(tmp_path / "r" / "status.json")["step"] == 4
    t.set_status("running", step=9)
    assert _strict_json(tmp_path / "r" / "status.json")["step"] == 9
    with pytest.raises(ValueError):
        t.set_status("exploded")
    t.finish(state="diverged", reason="loss is NaN")
    status = _strict_json(tmp_path / "r" / "status.json")
    assert (status["state"], status["reason"]) == ("diverged", "loss is NaN")


@pytest.mark.parametrize(
    ("final_val", "target", "met"), [(1.9, 2.0, True), (2.0, 2.0, True), (2.1, 2.0, False)]
)
def test_summary_target_met(tmp_path, final_val, target, met):
    t = ExperimentTracker({"target_val_loss": 99.0}, tmp_path / "r", target_val_loss=target)
    t.start()
    t.log_metrics(1, 3.0, 0.1, 1.0, 1.0, val_loss=1.0)
    summary = t.finish(2.5, final_val, notes="hello")
    assert summary["target_met"] is met
    assert summary["target_val_loss"] == target
    assert (summary["final_val_loss"], summary["best_val_loss"], summary["notes"]) == (
        final_val,
        1.0,
        "hello",
    )


def test_nan_losses_keep_json_strict(tmp_path):
    t = ExperimentTracker({}, tmp_path / "r")
    t.start()
    t.log_metrics(1, float("nan"), 0.1, 1.0, 1.0, grad_norm=float("inf"))
    summary = t.finish(state="diverged", reason="NaN loss")
    assert summary["final_train_loss"] is None
    _strict_json(tmp_path / "r" / "summary.json")
    m = load_experiment_log(tmp_path / "r").metrics
    assert math.isnan(m["train_loss"].iloc[0]) and m["grad_norm"].iloc[0] == math.inf


def test_loss_curves_png(tmp_path, real_plots):
    t = ExperimentTracker({"max_lr": 1e-3}, tmp_path / "r")
    t.start()
    _run(t, range(1, 21), eval_every=5)
    t.finish()
    png = tmp_path / "r" / "loss_curves.png"
    assert png.stat().st_size > 1000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "r").iterdir() if p.name.startswith(".")) == []


def test_context_manager_records_failure(tmp_path):
    with pytest.raises(RuntimeError), ExperimentTracker({}, tmp_path / "r") as t:
        t.log_metrics(1, 3.0, 0.1, 1.0, 1.0)
        raise RuntimeError("CUDA out of memory")
    log = load_experiment_log(tmp_path / "r")
    assert log.state == "failed"
    assert log.status["reason"] == "RuntimeError: CUDA out of memory"
    with pytest.raises(KeyboardInterrupt), ExperimentTracker({}, tmp_path / "k"):
        raise KeyboardInterrupt
    assert load_experiment_log(tmp_path / "k").state == "interrupted"
    with ExperimentTracker({}, tmp_path / "ok") as t:
        t.log_metrics(1, 3.0, 0.1, 1.0, 1.0)
    assert load_experiment_log(tmp_path / "ok").state == "finished"


def test_compare_experiments_sorted_by_lr(tmp_path):
    for name, lr in (("b", 1e-2), ("a", 1e-4), ("c", 1e-3)):
        t = ExperimentTracker({"max_lr": lr}, tmp_path / name, target_val_loss=2.5)
        t.start()
        t.log_metrics(10, 3.0, lr, 100.0, 1.0, tokens=1000, wallclock_s=10.0, val_loss=2.0 + lr * 100)
        t.finish()
    (tmp_path / "pending").mkdir()
    df = compare_experiments([tmp_path / n for n in ("pending", "b", "a", "c")])
    assert df["name"].tolist() == ["a", "c", "b", "pending"]
    assert df["lr"].tolist()[:3] == [1e-4, 1e-3, 1e-2] and math.isnan(df["lr"].iloc[3])
    assert df["state"].tolist() == ["finished"] * 3 + ["pending"]
    assert df["target_met"].tolist()[:3] == [True, True, False]
    assert df["steps"].tolist()[:3] == [10, 10, 10]
    assert df["tokens_per_sec"].iloc[0] == 100.0
    expected = ["name", "lr", "state", "steps", "final_train_loss", "final_val_loss", "best_val_loss"]
    assert df.columns.tolist() == expected + ["tokens", "wallclock_s", "tokens_per_sec", "target_met"]


def test_concurrent_reading_never_raises(tmp_path):
    run = tmp_path / "r"
    t = ExperimentTracker({"max_lr": 1e-3}, run, status_interval_s=0.01)
    t.start()
    raw = tmp_path / "raw"
    raw.mkdir()
    done = threading.Event()

    def write():
        try:
            with open(raw / "metrics.csv", "w") as f:
                f.write(HEADER)
                for i in range(1, 401):
                    t.log_metrics(i, _loss(i), 1e-3, 1.0, 1.0, wallclock_s=float(i))
                    if i % 25 == 0:
                        t.log_eval(i, None, 2.0)
                    line = f"{i},{i},{i}.5,{_loss(i)!r},,0.001,1.0,1.0,1.0\n"
                    f.write(line[: len(line) // 2])  # deliberately flush half a line
                    f.flush()
                    time.sleep(0.0005)  # let the reader catch the half line
                    f.write(line[len(line) // 2 :])
                    f.flush()
            t.finish()
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    seen, reads = [0, 0], 0
    while not done.is_set():
        reads += 1
        for k, d in enumerate((run, raw)):
            m = load_experiment_log(d).metrics
            assert m["step"].is_monotonic_increasing
            assert len(m) >= seen[k]
            seen[k] = len(m)
    writer.join()
    assert reads > 5
    assert load_experiment_log(raw).metrics["step"].tolist() == list(range(1, 401))
    assert load_experiment_log(run).state == "finished"
