"""The run-directory contract: the tracker writes through it, the reader reads back exactly what was written,
tolerates files mid-write, and keeps columns beyond the standard ones."""

from __future__ import annotations

import json
import math
import threading

import pandas as pd
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


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch):
    """Drawing costs ~0.3 s a run; the figure has its own test in test_analyze."""
    monkeypatch.setattr(tracker_module, "plot_loss_curves", lambda log, out: None)


def _loss(i: int) -> float:
    """Awkward floats whose repr is long, to test exact round trips."""
    return 10.0 / (1 + i) ** 0.37 + 1e-9 / 7


def _row(i: int, **extra) -> dict:
    return {"step": i, "tokens": 256 * i, "wallclock_s": i * 0.1 + 1 / 3, "train_loss": _loss(i),
            "val_loss": _loss(i) + 0.1 if i % 10 == 0 else None, "lr": 1e-3 / 3, "grad_norm": 1 / 7,
            "tokens_per_sec": 12345.678 + i, "ms_per_step": 9.87, **extra}  # fmt: skip


def _summary(steps: int, **extra) -> dict:
    return {"status": "finished", "steps": steps, "final_val_loss": 2.0, "best_val_loss": 1.9, **extra}


def test_write_and_read_back_round_trips_exactly_with_extra_columns(tmp_path):
    t = ExperimentTracker({"max_lr": 1e-3, "max_steps": 30}, tmp_path, columns=("mfu", "max_attn_logit_l0"))
    t.start()
    for i in range(5, 31, 5):
        t.log(_row(i, max_attn_logit_l0=i / 3))
    t.log_sharpness({"step": 10, "lr": 1e-3, "sharpness": 3.5, "threshold": 38000.0, "ratio": 3.5 / 38000})
    t.finish(_summary(30))
    log = load_experiment_log(tmp_path)
    assert list(log.metrics.columns[: len(METRIC_COLUMNS)]) == list(METRIC_COLUMNS)
    assert log.metrics["train_loss"].tolist() == [_loss(i) for i in range(5, 31, 5)]  # repr: exact
    assert log.metrics["max_attn_logit_l0"].tolist() == [i / 3 for i in range(5, 31, 5)]
    assert log.sharpness["ratio"].tolist() == [3.5 / 38000]
    assert (log.state, log.last_step, log.final_val_loss, log.learning_rate) == ("finished", 30, 2.0, 1e-3)
    assert log.tokens_per_sec == pytest.approx(12345.678 + 17.5)  # the median of the intervals


def test_resume_keeps_rows_up_to_the_resume_step(tmp_path):
    t = ExperimentTracker({"max_lr": 1e-3}, tmp_path)
    t.start()
    for i in range(5, 31, 5):
        t.log(_row(i))
    t.close()
    before = (tmp_path / "metrics.csv").read_text().splitlines()
    t = ExperimentTracker({"max_lr": 1e-3}, tmp_path)
    t.start(resume_step=15)
    t.close()
    assert (tmp_path / "metrics.csv").read_text().splitlines() == before[:4]


def test_a_lost_header_keeps_the_rows_for_the_reader_and_on_resume(tmp_path):
    """A metrics.csv whose header line was deleted (a hand edit) still holds the run's rows, in the columns'
    order: the reader reads them, and a resume keeps them (it used to take the first row for a header and
    silently drop the run's history)."""
    t = ExperimentTracker({"max_lr": 1e-3}, tmp_path, columns=("mfu",))
    t.start()
    for i in range(5, 31, 5):
        t.log(_row(i, mfu=i / 100))
    t.close()
    path = tmp_path / "metrics.csv"
    header, *rows = path.read_text().splitlines(keepends=True)
    path.write_text("".join(rows))
    m = load_experiment_log(tmp_path).metrics
    assert m["step"].tolist() == list(range(5, 31, 5))
    assert m["train_loss"].tolist() == [_loss(i) for i in range(5, 31, 5)]
    t = ExperimentTracker({"max_lr": 1e-3}, tmp_path, columns=("mfu",))
    t.start(resume_step=20)
    t.close()
    assert path.read_text() == header + "".join(rows[:4])


def test_reader_drops_half_written_line_and_coerces_garbage(tmp_path):
    (tmp_path / "metrics.csv").write_text(
        HEADER + "1,10,0.5,3.25,,0.1,1,2,3,\n2,20,1.0,oops,,0.1,1,2,3,\n3,30,1."
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


def test_status_states_are_the_contracts(tmp_path):
    t = ExperimentTracker({"max_steps": 500}, tmp_path)
    t.start()
    t.set_status("running", step=7, background=False)
    status = json.loads((tmp_path / "status.json").read_text())
    assert (status["state"], status["step"], status["max_steps"]) == ("running", 7, 500)
    with pytest.raises(ValueError, match="unknown run state"):
        t.set_status("done", step=1)
    t.close()


def test_compare_experiments_sorted_by_lr(tmp_path):
    for name, lr in (("b", 1e-2), ("a", 1e-4), ("c", 1e-3)):
        t = ExperimentTracker({"max_lr": lr}, tmp_path / name)
        t.start()
        t.log({**_row(10), "tokens_per_sec": 100.0})
        t.finish(_summary(10, target_met=lr < 1e-2, tokens_per_sec=5.0))
    (tmp_path / "pending").mkdir()
    df = compare_experiments([tmp_path / n for n in ("pending", "b", "a", "c")])
    assert df["name"].tolist() == ["a", "c", "b", "pending"]
    assert df["lr"].tolist()[:3] == [1e-4, 1e-3, 1e-2] and math.isnan(df["lr"].iloc[3])
    assert df["state"].tolist() == ["finished"] * 3 + ["pending"]
    assert df["target_met"].tolist()[:3] == [True, True, False]
    assert df["tokens_per_sec"].iloc[0] == 100.0  # the training rate, as every other command shows it


def test_concurrent_reading_never_raises(tmp_path):
    t = ExperimentTracker({"max_lr": 1e-3}, tmp_path)
    t.start()
    done = threading.Event()

    def write():
        try:
            for i in range(1, 301):
                t.log(_row(i))
                if i % 50 == 0:
                    t.set_status("running", step=i)
            t.finish(_summary(300))
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    seen = reads = 0
    while not done.is_set():
        reads += 1
        m = load_experiment_log(tmp_path).metrics
        assert m["step"].is_monotonic_increasing and len(m) >= seen
        seen = len(m)
    writer.join()
    assert reads > 2 and load_experiment_log(tmp_path).metrics["step"].tolist() == list(range(1, 301))


def test_median_of_a_metrics_column_skips_gaps_and_takes_the_last_rows():
    """reader.median is the one median every throughput shown comes from (whole run, or lr-diagnose's recent
    rows): checked against statistics.median of the finite values, written out by hand."""
    import statistics

    from cs336_basics.experiment_log.reader import RECENT_ROWS, median

    tps = [100.0, math.nan, 300.0, math.inf, 200.0, 50.0, 400.0, 250.0, 150.0]
    m = pd.DataFrame({"step": range(len(tps)), "tokens_per_sec": tps})
    finite = [100.0, 300.0, 200.0, 50.0, 400.0, 250.0, 150.0]
    assert median(m, "tokens_per_sec") == statistics.median(finite)
    assert median(m, "tokens_per_sec", last=RECENT_ROWS) == statistics.median(finite[-RECENT_ROWS:])
    assert median(m, "data_wait_ms") is None and median(None, "tokens_per_sec") is None
    assert median(m.iloc[:0], "tokens_per_sec") is None
