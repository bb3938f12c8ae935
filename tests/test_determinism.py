"""CPU training is deterministic: the same command twice, or killed with SIGKILL and run again, writes the same
numbers, at the demo preset's model size and with another CPU-heavy process running beside it.

Before device.py turned on ``torch.use_deterministic_algorithms`` for CPU runs, the embedding's backward (an
``index_put_`` with accumulate over two threads) made two runs differ from the first log step on.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Columns that measure time, not training: they differ between any two runs.
TIMING_COLUMNS = {"wallclock_s", "tokens_per_sec", "ms_per_step", "mfu", "data_wait_ms"}
# The demo preset's model (vocab 2048, d_model 128, 2 layers, batch 16 x 128): large enough for the math
# library to split work across threads, unlike the suite's tiny models. Without the fix, runs differed from
# the first log row (step 5) on.
FLAGS = ("--preset", "demo", "--max-steps", "20", "--log-interval", "5", "--eval-interval", "10")
FLAGS += ("--checkpoint-interval", "10", "--dtype", "fp32", "--compile", "off", "--sharpness-share", "0")
FLAGS += ("--no-progress",)


def train_command(data_dir: Path, out: Path) -> list[str]:
    script = Path(sys.executable).parent / "cs336-train"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "cs336_basics.basics.run_experiment"]
    return [*cmd, *FLAGS, "--data-dir", str(data_dir), "--out", str(out)]


def train(data_dir: Path, out: Path) -> None:
    done = subprocess.run(train_command(data_dir, out), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def training_columns(run_dir: Path) -> list[dict[str, str]]:
    """metrics.csv rows without the timing columns, as the exact text written (byte-level comparison)."""
    try:
        with open(run_dir / "metrics.csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("step")]
    except FileNotFoundError:
        return []
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    from cs336_basics.data import prepare_dataset

    data_dir = tmp_path_factory.mktemp("demo-data")
    prepare_dataset("demo", data_dir, vocab_size=2048, progress=False)
    return data_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory, demo_data) -> dict[str, list[dict[str, str]]]:
    """The same command three times: ``whole`` uninterrupted; ``killed`` started at the same moment, killed
    with SIGKILL after its step-15 row (past the step-10 checkpoint, mid-interval), then run again to the end.
    Both compete for the 2 cores with each other and with a process spinning beside them."""
    root = tmp_path_factory.mktemp("determinism")
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    procs = {
        name: subprocess.Popen(train_command(demo_data, root / name), stderr=subprocess.PIPE, text=True)
        for name in ("whole", "killed")
    }
    try:
        deadline = time.monotonic() + 300
        while not any(
            r["step"] == "15" and None not in r.values() for r in training_columns(root / "killed")
        ):
            assert procs["killed"].poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(procs["killed"].pid, signal.SIGKILL)
        before_kill = training_columns(root / "killed")
        assert procs["whole"].wait(timeout=300) == 0, procs["whole"].stderr.read()[-2000:]
        assert (root / "killed" / "checkpoints" / "latest.pt").exists()
        train(demo_data, root / "killed")
    finally:
        for proc in (*procs.values(), burner):
            proc.kill()
            proc.wait()
    return {
        "whole": training_columns(root / "whole"),
        "before_kill": before_kill,
        "rerun": training_columns(root / "killed"),
    }


def test_same_command_twice_gives_identical_numbers(runs):
    whole, other = runs["whole"], runs["before_kill"]
    assert len(whole) == 20 // 5 and {"train_loss", "val_loss", "grad_norm", "lr"} <= set(whole[0])
    assert [r["step"] for r in other] == ["5", "10", "15"]
    for row_a, row_b in zip(whole, other, strict=False):
        assert row_a == row_b, f"step {row_a['step']}: {row_a} vs {row_b}"


def test_kill_9_and_rerun_gives_the_uninterrupted_numbers(runs):
    assert runs["rerun"] == runs["whole"]
