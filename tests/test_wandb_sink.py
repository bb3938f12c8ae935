"""The W&B sink against the real ``wandb`` package in offline mode, read back from its ``.wandb`` log file.

The reader below follows the documented file format (a LevelDB-style log of ``wandb.proto`` ``Record``
messages; see the module docstring of ``wandb/sdk/internal/datastore.py`` in wandb < 0.20), written
independently of the sink, so what the sink wrote is checked by what W&B would sync.
"""

from __future__ import annotations

import json
import struct
import sys
import time
import zlib
from pathlib import Path

import pytest

wandb = pytest.importorskip("wandb")

from cs336_basics.errors import UserError  # noqa: E402
from cs336_basics.experiment_log.wandb_sink import ID_FILE, INSTALL_HINT, WandbSink  # noqa: E402

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
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def history(records) -> list[dict]:
    rows = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            row = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item}
            rows.append(row)
    return rows


def one(records, kind: str):
    found = [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]
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
    run_config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert {k: run_config[k] for k in config} == config
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update(
                {(u.key or "/".join(u.nested_key)): json.loads(u.value_json) for u in r.summary.update}
            )
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


def test_missing_wandb_is_one_line_error(wandb_env, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # what `import wandb` sees when it is not installed
    with pytest.raises(UserError) as info:
        WandbSink.open(wandb_env / "run", "proj", mode="offline")
    assert str(info.value) == INSTALL_HINT and "\n" not in INSTALL_HINT
    assert "uv sync --extra wandb" in INSTALL_HINT and "uv run --extra wandb" in INSTALL_HINT
    # Not asked for: no wandb needed, nothing written.
    assert WandbSink.open(wandb_env / "run", None, mode="offline") is None
    assert WandbSink.open(wandb_env / "run", "proj", mode="disabled") is None
    assert not (wandb_env / "run").exists()
