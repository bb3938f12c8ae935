"""ExperimentTracker: rows round-trip exactly, resume keeps rows byte for byte, status off the hot thread."""

from __future__ import annotations

import json
import random
import threading

import pandas as pd
import pytest

from cs336_basics.experiment_log import ExperimentTracker, load_experiment_log, tracker
from cs336_basics.experiment_log.reader import METRIC_COLUMNS


def _loss(i: int) -> float:
    """Awkward floats whose repr is long, to test exact round trips."""
    return 10.0 / (1 + i) ** 0.37 + random.Random(i).random() * 1e-9


def _row(i: int) -> dict:
    return {
        "step": i,
        "tokens": 256 * i,
        "wallclock_s": i * 0.1 + 1 / 3,
        "train_loss": _loss(i),
        "val_loss": _loss(i) + 0.1 if i % 10 == 0 else None,
        "lr": 1e-3 / 3,
        "grad_norm": 1 / 7,
        "tokens_per_sec": 12345.678,
        "ms_per_step": 9.87,
        "extra_signal": 1 / 3 + i,
    }


def _summary(steps: int) -> dict:
    return {"status": "finished", "steps": steps, "final_val_loss": 2.0, "reason": None}


def test_rows_round_trip_exactly_and_extra_columns_are_kept(tmp_path):
    t = ExperimentTracker({"max_lr": 1e-3, "max_steps": 30}, tmp_path / "r", columns=("extra_signal",))
    t.start()
    for i in range(1, 31):
        t.log(_row(i))
    t.finish(_summary(30))
    log = load_experiment_log(tmp_path / "r")
    assert list(log.metrics.columns[: len(METRIC_COLUMNS)]) == list(METRIC_COLUMNS)
    assert log.metrics["train_loss"].tolist() == [_loss(i) for i in range(1, 31)]  # repr round-trip: exact
    assert log.metrics["extra_signal"].tolist() == [1 / 3 + i for i in range(1, 31)]
    assert log.metrics["val_loss"].notna().sum() == 3
    assert log.state == "finished" and json.loads((tmp_path / "r" / "status.json").read_text())["step"] == 30


def test_resume_keeps_rows_up_to_the_step_byte_for_byte(tmp_path):
    full = ExperimentTracker({}, tmp_path / "full", columns=("extra_signal",))
    full.start()
    for i in range(1, 41):
        full.log(_row(i))
    full.finish(_summary(40))
    part = ExperimentTracker({}, tmp_path / "part", columns=("extra_signal",))
    part.start()
    for i in range(1, 28):  # killed after step 27; the checkpoint was at step 20
        part.log(_row(i))
    part.close()
    with open(tmp_path / "part" / "metrics.csv", "a") as f:
        f.write("28,7168,2.8")  # a half-written line
    resumed = ExperimentTracker({}, tmp_path / "part", columns=("extra_signal",))
    resumed.start(resume_step=20)
    for i in range(21, 41):
        resumed.log(_row(i))
    resumed.finish(_summary(40))
    assert (tmp_path / "part" / "metrics.csv").read_bytes() == (
        tmp_path / "full" / "metrics.csv"
    ).read_bytes()


def test_resume_recuts_rows_written_with_older_columns(tmp_path):
    run = tmp_path / "r"
    old = ExperimentTracker({}, run)
    old.start()
    for i in range(1, 11):
        old.log(_row(i))
    old.close()
    new = ExperimentTracker({}, run, columns=("extra_signal",))
    new.start(resume_step=5)
    new.close()
    df = pd.read_csv(run / "metrics.csv")
    assert df["step"].tolist() == [1, 2, 3, 4, 5] and df["extra_signal"].isna().all()
    assert df["train_loss"].tolist() == [_loss(i) for i in range(1, 6)]


def test_unknown_state_is_refused(tmp_path):
    t = ExperimentTracker({}, tmp_path / "r")
    t.start()
    with pytest.raises(ValueError, match="unknown run state"):
        t.set_status("exploded", step=1)
    t.close()


def test_reading_while_writing_never_raises(tmp_path):
    t = ExperimentTracker({"max_lr": 1e-3}, tmp_path / "r")
    t.start()
    errors, done = [], threading.Event()
    reads = 0

    def read():
        nonlocal reads
        while not done.is_set():
            try:
                load_experiment_log(tmp_path / "r")
            except Exception as err:  # pragma: no cover - the failure being tested for
                errors.append(err)
            reads += 1

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(1, 300):
        t.log(_row(i))
        t.set_status("running", step=i)
    t.finish(_summary(299))
    done.set()
    reader.join()
    assert not errors
    assert reads > 2  # the reader really ran alongside the writes


def test_status_is_written_on_the_background_thread_unless_asked_not_to(tmp_path, monkeypatch):
    """The real ``atomic_write_json``, wrapped only to record which thread each status.json write ran on."""
    real_write = tracker.atomic_write_json
    writers: list[tuple[threading.Thread, int]] = []

    def recording_write(path, obj):
        if path.name == "status.json":
            writers.append((threading.current_thread(), obj["step"]))
        real_write(path, obj)

    monkeypatch.setattr(tracker, "atomic_write_json", recording_write)
    t = ExperimentTracker({}, tmp_path / "r")
    t.start()  # writes status step 0 on the calling thread, so it is on disk before training begins
    t.set_status("running", step=5)  # the default: background
    t.set_status("running", step=6, background=False)
    t.finish(_summary(7))  # the final status: on the calling thread
    caller = threading.current_thread()
    assert [step for _, step in writers] == [0, 5, 6, 7]
    assert [thread is caller for thread, _ in writers] == [True, False, True, True]
    assert writers[1][0].name.startswith("status-writer")
    assert json.loads((tmp_path / "r" / "status.json").read_text())["step"] == 7  # the real file was written
