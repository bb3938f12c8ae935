"""The W&B sink against the real ``wandb`` package in offline mode, read back from its ``.wandb`` log file:
on its own, under a sweep (each point a run, through the real command line, interrupted and resumed) and
under lr-analyze.

The reader below follows the documented file format (a LevelDB-style log of ``wandb.proto`` ``Record``
messages; see the module docstring of ``wandb/sdk/internal/datastore.py`` in wandb < 0.20), written
independently of the sink, so what the sink wrote is checked by what W&B would sync.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import struct
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest

wandb = pytest.importorskip("wandb")

from cs336_basics.assignment_experiments.lr_sweep.analyze_lr_sweep import main as analyze_main  # noqa: E402
from cs336_basics.assignment_experiments.lr_sweep.learning_rate_sweep import main as sweep_main  # noqa: E402
from cs336_basics.errors import UserError  # noqa: E402
from cs336_basics.experiment_log import load_experiment_log  # noqa: E402
from cs336_basics.experiment_log.wandb_sink import ID_FILE, INSTALL_HINT, WandbSink  # noqa: E402
from tests.test_sweep import demo_data_dir  # noqa: E402, F401 (fixture)
from tests.test_sweep_engine import _one_line_exit_2, _tiny, _wait_for  # noqa: E402

# System stats, machine info and the metadata probe cost seconds per init and are not under test.
FAST = dict(x_disable_stats=True, x_disable_meta=True, x_disable_machine_info=True)
BLOCK, HEADER = 32768, 7


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """Offline, silent, no network, nothing written outside tmp_path."""
    for key in ("WANDB_API_KEY", "WANDB_ENTITY", "WANDB_PROJECT", "WANDB_RUN_ID", "WANDB_RESUME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb_data"))
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # discard port: any network use fails fast
    for knob in ("WANDB__DISABLE_STATS", "WANDB__DISABLE_META", "WANDB__DISABLE_MACHINE_INFO"):
        monkeypatch.setenv(knob, "true")  # FAST for the runs the commands open (and their worker processes)
    (tmp_path / "wandb_dir").mkdir()
    return tmp_path


def read_records(path: Path) -> list:
    """Every ``Record`` of a ``.wandb`` file: a 7-byte file header, then 32 KiB blocks of chunks
    (crc32 of type byte + data, uint16 length, uint8 type FULL=1/FIRST=2/MIDDLE=3/LAST=4)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:HEADER])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0)
    records, pending, pos = [], b"", HEADER
    while pos < len(data):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a chunk header is zero padding
            pos += BLOCK - pos % BLOCK
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:  # preallocated, unwritten tail
            break
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == crc
        pending += chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def offline_runs(root: Path) -> list[Path]:
    return sorted(root.glob("wandb_dir/wandb/offline-run-*/run-*.wandb"))


def finished_records(path: Path, timeout_s: float = 60.0) -> list:
    """The records once the run's exit record is on disk: ``finish`` returns before W&B's writer process
    has flushed the file (seen on a loaded machine), so wait for the end of the run, not a fixed time."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = read_records(path) if path.stat().st_size > HEADER else []
        if of_kind(records, "exit") or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def of_kind(records, kind: str) -> list:
    """The payloads of the records of one kind ("history", "summary", "run", "exit", ...)."""
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


def as_dict(items) -> dict:
    """History, summary or config items as {key: value} (a nested key joined with "/")."""
    return {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in items}


def history(records) -> list[dict]:
    return [as_dict(h.item) for h in of_kind(records, "history")]


def one(records, kind: str):
    found = of_kind(records, kind)
    assert found, f"no {kind} record"
    return found[0]


ROWS = [
    {"step": 10, "tokens": 640, "wallclock_s": 0.5, "train_loss": 7.25, "val_loss": None, "lr": 1e-3,
     "grad_norm": 1.5, "tokens_per_sec": 1280.0, "ms_per_step": 50.0},
    {"step": 20, "tokens": 1280, "wallclock_s": 1.0, "train_loss": 6.5, "val_loss": 6.75, "lr": 2e-3,
     "grad_norm": 1.25, "tokens_per_sec": 1300.0, "ms_per_step": 49.0},
    {"step": 30, "tokens": 1920, "wallclock_s": 1.5, "train_loss": 5.875, "val_loss": "", "lr": 1.5e-3,
     "grad_norm": 0.75, "tokens_per_sec": 1310.0, "ms_per_step": 48.5},
]  # fmt: skip


def test_rows_summary_and_config_read_back(wandb_env):
    run_dir = wandb_env / "lr_1e_03"
    config = {"max_lr": 1e-3, "batch_size": 4, "provenance": {"git": "abc"}}
    sink = WandbSink.open(
        run_dir, "proj", None, "offline", None, "sweep-a", ["lr=0.001"], config, settings=FAST
    )
    assert sink is not None and sink.active
    for row in ROWS:
        sink.log_row(row)
    sink.log_summary({"status": "finished", "best_val_loss": 6.75, "best_step": 20})
    sink.finish(exit_code=0)
    assert not sink.active
    sink.log_row({"step": 40, "train_loss": 1.0})  # after finish: ignored, no error

    [path] = offline_runs(wandb_env)
    assert path.name == f"run-{sink.run_id}.wandb"
    assert (run_dir / ID_FILE).read_text().strip() == sink.run_id
    records = finished_records(path)
    logged = history(records)
    assert [r["_step"] for r in logged] == [10, 20, 30]
    for row, got in zip(ROWS, logged, strict=True):
        expected = {k: v for k, v in row.items() if k != "step" and v not in (None, "")}
        assert {k: got[k] for k in expected} == expected
        assert ("val_loss" in got) == (row["val_loss"] not in (None, ""))
    run = one(records, "run")
    assert (run.run_id, run.project, run.display_name, run.run_group) == (
        sink.run_id,
        "proj",
        "lr_1e_03",
        "sweep-a",
    )
    assert list(run.tags) == ["lr=0.001"]
    run_config = as_dict(run.config.update)
    assert {k: run_config[k] for k in config} == config
    summary = {}
    for update in of_kind(records, "summary"):
        summary.update(as_dict(update.update))
    assert (summary["status"], summary["best_val_loss"], summary["best_step"]) == ("finished", 6.75, 20)
    assert one(records, "exit").exit_code == 0


def test_same_step_merges_earlier_step_skipped(wandb_env):
    sink = WandbSink.open(wandb_env / "run", "proj", mode="offline", settings=FAST)
    sink.log_row(ROWS[0])
    sink.log_row({"step": 10, "sharpness": 2.5, "sharpness_ratio": 0.5})  # tracker.log_sharpness, same step
    sink.log_row(ROWS[1])
    sink.log_row({"step": 10, "train_loss": 9.0})  # behind W&B's step: W&B would refuse it
    sink.finish()
    logged = history(finished_records(offline_runs(wandb_env)[0]))
    assert [r["_step"] for r in logged] == [10, 20]
    assert (logged[0]["train_loss"], logged[0]["sharpness"], logged[0]["sharpness_ratio"]) == (7.25, 2.5, 0.5)


def test_resume_keeps_one_run_id(wandb_env):
    run_dir = wandb_env / "run"
    first = WandbSink.open(run_dir, "proj", mode="offline", config={"a": 1}, settings=FAST)
    first.log_row(ROWS[0])
    first.finish(exit_code=1)
    second = WandbSink.open(run_dir, "proj", mode="offline", config={"a": 1}, settings=FAST)
    second.log_row(ROWS[1])
    second.finish()
    assert first.run_id == second.run_id == (run_dir / ID_FILE).read_text().strip()
    paths = offline_runs(wandb_env)
    assert [p.name for p in paths] == [f"run-{first.run_id}.wandb"] * 2  # two sessions of one W&B run
    assert [one(finished_records(p), "run").run_id for p in paths] == [first.run_id] * 2
    assert [[r["_step"] for r in history(finished_records(p))] for p in paths] == [[10], [20]]


def test_plots_and_report_attached(wandb_env):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [1, 0])
    png = wandb_env / "lr_sweep_losses.png"
    fig.savefig(png)
    plt.close(fig)
    report = wandb_env / "lr_sweep_analysis.md"
    report.write_text("# best lr 1e-3\n")
    sink = WandbSink.open(wandb_env / "sweep", "proj", mode="offline", job_type="analysis", settings=FAST)
    sink.log_images([png])
    sink.attach_files([report, wandb_env / "missing.md"])
    sink.finish()
    [path] = offline_runs(wandb_env)
    [row] = history(finished_records(path))
    assert row["lr_sweep_losses/_type"] == "image-file"
    files = path.parent / "files"
    assert (files / "lr_sweep_analysis.md").read_text() == "# best lr 1e-3\n"
    assert (files / row["lr_sweep_losses/path"]).read_bytes() == png.read_bytes()


def test_no_login_online_warns_once_and_training_goes_on(wandb_env, capsys):
    sink = WandbSink.open(wandb_env / "run", "proj", mode="online", settings=FAST)
    assert sink is not None and not sink.active
    for row in ROWS:
        sink.log_row(row)
    sink.log_summary({"status": "finished"})
    sink.finish()
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "API key" in err


def test_failure_mid_run_warns_once(wandb_env, capsys):
    sink = WandbSink.open(wandb_env / "run", "proj", mode="offline", settings=FAST)
    sink.log_row(ROWS[0])
    sink.run.finish()  # the W&B run ends under the sink (as after an internal W&B error): logging now fails
    sink.log_row(ROWS[1])
    sink.log_row(ROWS[2])
    sink.log_summary({"status": "finished"})
    sink.finish()
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "W&B log failed" in err
    assert [r["_step"] for r in history(finished_records(offline_runs(wandb_env)[0]))] == [10]


def test_missing_wandb_is_one_line_error(wandb_env, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # what `import wandb` sees when it is not installed
    with pytest.raises(UserError) as info:
        WandbSink.open(wandb_env / "run", "proj", mode="offline")
    assert str(info.value) == INSTALL_HINT and "\n" not in INSTALL_HINT
    assert "uv sync --extra wandb" in INSTALL_HINT and "uv run --extra wandb" in INSTALL_HINT
    # Not asked for: no wandb needed, nothing written.
    assert WandbSink.open(wandb_env / "run", None, mode="offline") is None
    assert WandbSink.open(wandb_env / "run", "proj", mode="disabled") is None
    assert not (wandb_env / "run").exists()
    # lr-sweep says so before any work: nothing is created.
    out = wandb_env / "sweep"
    args = _tiny(wandb_env / "data", out, 1e-3, extra=("--wandb", "P"))
    assert _one_line_exit_2(capsys, sweep_main, args) == f"error: {INSTALL_HINT}"
    assert not out.exists() and not (wandb_env / "data").exists()
    # So does lr-analyze, before it draws or writes anything (it used to write every output, then fail).
    assert _one_line_exit_2(capsys, analyze_main, [str(out), "--wandb", "P"]) == f"error: {INSTALL_HINT}"
    assert not out.exists()


def test_a_bad_wandb_mode_from_the_environment_names_the_variable(wandb_env, monkeypatch, capsys):
    """argparse checks a --wandb-mode the user typed; the default comes from $WANDB_MODE, so a bad value there
    is named as the variable, before any work."""
    monkeypatch.setenv("WANDB_MODE", "bogus")
    out = wandb_env / "sweep"
    args = _tiny(wandb_env / "data", out, 1e-3, extra=("--wandb", "P"))
    line = _one_line_exit_2(capsys, sweep_main, args)
    assert (
        line
        == "error: $WANDB_MODE='bogus' is not a W&B mode (online, offline, disabled); unset it or pass --wandb-mode"
    )
    assert not out.exists() and not (wandb_env / "data").exists()


# ---- a sweep's points and its analysis ------------------------------------------------------------------
def sessions_by_run(root: Path) -> dict[str, list[list]]:
    """Each W&B run's sessions (one ``.wandb`` file per process that opened it), oldest first, by run id."""
    runs: dict[str, list[list]] = {}
    for path in sorted(offline_runs(root), key=lambda p: p.parent.name):  # offline-run-<time>-<id>
        runs.setdefault(path.stem.removeprefix("run-"), []).append(finished_records(path))
    return runs


def metrics_rows(run_dir: Path) -> dict[int, dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return {
            int(r["step"]): {k: float(v) for k, v in r.items() if k != "step" and v}
            for r in csv.DictReader(f)
        }


@pytest.fixture
def one_thread(monkeypatch):
    """One intra-op thread here and in every process a command starts: on a shared 2-core machine a tiny
    model's steps are several times faster so."""
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def has_rows(run_dir: Path) -> bool:
    path = run_dir / "metrics.csv"
    return path.exists() and len(path.read_text().splitlines()) >= 2


def test_sweep_points_are_runs_that_resume_and_are_not_repeated(wandb_env, demo_data_dir, one_thread):  # noqa: F811
    out = wandb_env / "sweep"
    args = _tiny(demo_data_dir, out, 3e-3, 1e-2, steps=100, extra=("--wandb", "P", "--wandb-mode", "offline"))
    tags = {"lr_3e_03": ["lr=0.003"], "lr_1e_02": ["lr=0.01"]}
    runs = {name: out / name for name in tags}

    # Session 1, in-process executor: Ctrl-C (a real SIGINT to this process, which runs the command) once the
    # first point has logged a row (at step 5 of 100).
    def interrupt():
        _wait_for(lambda: has_rows(runs["lr_3e_03"]))
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(SystemExit) as stopped:
        sweep_main(args)
    assert stopped.value.code == 130
    assert [load_experiment_log(r).state for r in runs.values()] == ["interrupted", "pending"]
    first_id = (runs["lr_3e_03"] / ID_FILE).read_text().strip()
    # Session 2, worker processes: the interrupted point resumes its W&B run, the other one starts its own.
    assert sweep_main([*args, "--concurrent", "2"]) == 0
    sessions = sessions_by_run(wandb_env)
    ids = {name: (run / ID_FILE).read_text().strip() for name, run in runs.items()}
    assert ids["lr_3e_03"] == first_id and set(sessions) == set(ids.values())
    assert [len(sessions[ids[n]]) for n in runs] == [2, 1]
    sweep_json = json.loads((out / "sweep.json").read_text())
    for name, run_dir in runs.items():
        records = [r for session in sessions[ids[name]] for r in session]
        run = one(sessions[ids[name]][-1], "run")
        assert (run.display_name, run.run_group, list(run.tags)) == (name, sweep_json["id"], tags[name])
        config = json.loads((run_dir / "config.json").read_text())
        logged_config = as_dict(run.config.update)
        assert {k: logged_config[k] for k in config} == config
        # Every metrics.csv row at its step, the later session's value where both logged one.
        logged: dict[int, dict] = {}
        for row in history(records):
            logged.setdefault(row["_step"], {}).update(row)
        expected = metrics_rows(run_dir)
        assert sorted(s for s, row in logged.items() if "train_loss" in row) == sorted(expected)
        for step, row in expected.items():
            assert {k: logged[step][k] for k in row} == row, (name, step)
    # Session 3: everything finished, no new W&B run and no new session.
    before = offline_runs(wandb_env)
    assert sweep_main(args) == 0
    assert offline_runs(wandb_env) == before


def test_analysis_attached_to_the_sweeps_group(wandb_env, demo_data_dir, one_thread):  # noqa: F811
    sweep = wandb_env / "sweep"
    assert sweep_main(_tiny(demo_data_dir, sweep, 3e-3, 1e-2, steps=10)) == 0
    assert analyze_main([str(sweep), "--no-sample", "--wandb", "P", "--wandb-mode", "offline"]) == 0
    [path] = offline_runs(wandb_env)
    records = finished_records(path)
    run = one(records, "run")
    group = json.loads((sweep / "sweep.json").read_text())["id"]
    assert (run.display_name, run.run_group, run.job_type) == ("sweep-analysis", group, "analysis")
    files = path.parent / "files"
    written = [p for p in sweep.iterdir() if p.suffix in (".png", ".md")]
    assert {p.suffix for p in written} == {".png", ".md"}
    for p in written:
        assert (files / p.name).read_bytes() == p.read_bytes(), p.name
    media = {k.split("/")[0] for row in history(records) for k in row if k.endswith("/_type")}
    assert media == {p.stem for p in written if p.suffix == ".png"} | {"results"}  # images and the table
    # The results table: one row per point, its numbers those of the point's summary.json.
    [table_row] = [row for row in history(records) if "results/_type" in row]
    table = json.loads((files / table_row["results/path"]).read_text())
    by_name = {row[table["columns"].index("name")]: dict(zip(table["columns"], row)) for row in table["data"]}
    assert sorted(by_name) == sorted(p.name for p in sweep.iterdir() if (p / "summary.json").exists())
    for name, row in by_name.items():
        summary = json.loads((sweep / name / "summary.json").read_text())
        assert (row["state"], row["final_val_loss"], row["tokens"]) == (
            summary["status"],
            summary["final_val_loss"],
            summary["tokens"],
        )
