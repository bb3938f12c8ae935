"""``--fresh`` moves a run (or a sweep) aside only when nothing is using it: the lock is taken before the move,
so a live trainer never has its directory renamed from under it (issue 10)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cs336_basics.assignment_experiments.lr_sweep.learning_rate_sweep import main as sweep_main
from cs336_basics.assignment_experiments.sweep.record import LOCK_FILE
from cs336_basics.basics.run_experiment import main as train_main
from cs336_basics.experiment_log.reader import RUN_LOCK_FILE
from tests.test_sweep import demo_data_dir  # noqa: F401 (fixture)
from tests.test_sweep_engine import _tiny

HOLD = """
import fcntl, sys, time
handle = open(sys.argv[1], "a+")
fcntl.flock(handle, fcntl.LOCK_EX)
handle.write("pid 999 on the-other-host"); handle.flush()
print("held", flush=True)
time.sleep(120)
"""


@pytest.fixture
def hold_lock():
    """Hold an flock on a file from another process, as a live trainer or sweep does."""
    procs = []

    def hold(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()


def _refused(capsys, fn, args) -> str:
    with pytest.raises(SystemExit) as exc:
        fn(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1, err
    return err[0]


def test_train_fresh_refuses_while_the_run_is_live(tmp_path, hold_lock, capsys):
    run = tmp_path / "run"
    hold_lock(run / RUN_LOCK_FILE)
    (run / "metrics.csv").write_text("step\n")
    line = _refused(
        capsys, train_main, ["--preset", "demo", "--fresh", "--out", str(run), "--max-steps", "1"]
    )
    assert "is being trained by pid 999 on the-other-host" in line
    assert (run / "metrics.csv").exists() and not list(tmp_path.glob("run.old-*"))  # nothing moved


def test_sweep_fresh_refuses_while_another_sweep_holds_it(tmp_path, hold_lock, capsys, demo_data_dir):  # noqa: F811
    out = tmp_path / "sweep"
    hold_lock(out / LOCK_FILE)
    line = _refused(capsys, sweep_main, [*_tiny(demo_data_dir, out, 1e-2), "--fresh"])
    assert "another sweep" in line
    assert out.exists() and not list(tmp_path.glob("sweep.old-*"))


def test_sweep_fresh_refuses_while_a_point_is_live(tmp_path, hold_lock, capsys, demo_data_dir):  # noqa: F811
    """The sweep that started a point may be gone (a SLURM job outlives it): its run lock still counts."""
    out = tmp_path / "sweep"
    hold_lock(out / "lr_1e_02" / RUN_LOCK_FILE)
    line = _refused(capsys, sweep_main, [*_tiny(demo_data_dir, out, 1e-2), "--fresh"])
    assert "lr_1e_02" in line and "pid 999 on the-other-host" in line
    assert (out / "lr_1e_02").exists() and not list(tmp_path.glob("sweep.old-*"))


@pytest.mark.parametrize(
    "content, says",
    [(os.urandom(4096), "corrupt or truncated"), ({"a": 1}, "is not a training checkpoint of this project")],
    ids=["random bytes", "a torch file of something else"],
)
def test_a_corrupt_checkpoint_fails_the_run_in_its_own_files(tmp_path, capsys, content, says):
    """A run killed mid-way leaves status.json "running"; if its latest.pt is then unreadable (or a loadable file
    that is no checkpoint of ours), the re-run refuses in one line saying so (not "from a different config")
    and the run dir says failed, with the reason (not "running" with a dead pid)."""
    import torch

    from cs336_basics.experiment_log import load_experiment_log

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    if isinstance(content, bytes):
        (run / "checkpoints" / "latest.pt").write_bytes(content)
    else:
        torch.save(content, run / "checkpoints" / "latest.pt")
    (run / "status.json").write_text(
        json.dumps({"state": "running", "pid": 999999, "step": 5, "max_steps": 10})
    )
    args = ["--preset", "demo", "--out", str(run), "--max-steps", "10", "--d-model", "32", "--d-ff", "64",
            "--num-layers", "1", "--num-heads", "2", "--context-length", "16", "--batch-size", "4",
            "--device", "cpu", "--dtype", "fp32", "--compile", "off", "--no-progress"]  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        train_main(args)
    errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert exc.value.code == 2 and len(errors) == 1, errors  # data-prep progress lines come before it
    line = errors[0]
    assert says in line and "different config" not in line
    assert line.endswith(
        "restart this run from scratch with --fresh (the old run dir is moved aside, not deleted)"
    )
    log = load_experiment_log(run)
    assert log.status["state"] == "failed" and says in log.status["reason"]
