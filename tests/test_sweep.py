"""The learning-rate sweep end to end on the demo data with a tiny model: layout, resume after kill -9,
divergence, failures, the lock, submitit's local executor, several worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cs336_basics.assignment_experiments.lr_sweep.learning_rate_sweep import main as sweep_main
from cs336_basics.assignment_experiments.lr_sweep.naming import lr_dir_name
from cs336_basics.assignment_experiments.sweep.record import LOCK_FILE
from cs336_basics.assignment_experiments.sweep.view import load_sweep
from cs336_basics.experiment_log import load_experiment_log

EXACT = ["step", "tokens", "train_loss", "val_loss", "lr", "grad_norm"]


@pytest.fixture(scope="session")
def demo_data_dir(tmp_path_factory) -> Path:
    from cs336_basics.data import prepare_dataset

    data_dir = tmp_path_factory.mktemp("data")
    prepare_dataset("demo", data_dir, progress=False)
    return data_dir


@pytest.fixture
def tiny_args(demo_data_dir):
    def make(out: Path, *lrs: float, steps: int = 20, extra: tuple[str, ...] = ()) -> list[str]:
        return [
            "--preset",
            "demo",
            "--out",
            str(out),
            "--learning-rates",
            *[repr(x) for x in lrs],
            "--d-model",
            "32",
            "--d-ff",
            "64",
            "--num-layers",
            "1",
            "--num-heads",
            "2",
            "--context-length",
            "16",
            "--batch-size",
            "4",
            "--max-steps",
            str(steps),
            "--log-interval",
            "5",
            "--eval-interval",
            "10",
            "--eval-batches",
            "1",
            "--checkpoint-interval",
            "5",
            "--device",
            "cpu",
            "--dtype",
            "fp32",
            "--compile",
            "off",
            "--data-dir",
            str(demo_data_dir),
            "--no-progress",
            *extra,
        ]

    return make


def _metrics(run_dir: Path):
    return load_experiment_log(run_dir).metrics[EXACT]


def test_sweep_layout_summary_and_rerun(tmp_path, tiny_args, capsys):
    out = tmp_path / "sweep"
    assert sweep_main(tiny_args(out, 3e-3, 1e-2, 3e-3, extra=("--no-extend",))) == 0
    printed = capsys.readouterr().out
    meta = json.loads((out / "sweep.json").read_text())
    assert [p["value"] for p in meta["points"]] == [3e-3, 1e-2]  # duplicates removed, sorted
    assert meta["state"] == "finished" and meta["config"]["vocab_size"] == 2048
    # sweep.json holds only what run dirs can't: no states, losses or write-only summaries
    assert not {"best_lr", "target_met", "bracketing"} & set(meta)
    assert not {"state", "reason", "error"} & {k for p in meta["points"] for k in p}
    for lr in (3e-3, 1e-2):
        run = out / lr_dir_name(lr)
        assert (run / "summary.json").exists() and (run / "checkpoints" / "final.pt").exists()
    assert "best lr" in printed and "final val" in printed
    # Re-running the finished sweep retrains nothing.
    before = (out / "lr_1e_02" / "metrics.csv").read_bytes()
    assert sweep_main(tiny_args(out, 3e-3, 1e-2, extra=("--no-extend",))) == 0
    assert (out / "lr_1e_02" / "metrics.csv").read_bytes() == before
    assert sweep_main(["--summary", "--out", str(out)]) == 0
    assert "best lr" in capsys.readouterr().out


def test_kill_9_then_rerun_equals_uninterrupted(tmp_path, tiny_args):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    lrs = (1e-3, 3e-3, 1e-2)
    assert sweep_main(tiny_args(straight, *lrs, steps=40, extra=("--no-extend",))) == 0
    cmd = [
        sys.executable,
        "-m",
        "cs336_basics.assignment_experiments.lr_sweep.learning_rate_sweep",
        *tiny_args(killed, *lrs, steps=40, extra=("--no-extend",)),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = killed / lr_dir_name(3e-3) / "checkpoints" / "latest.pt"  # second point under way
    deadline = time.time() + 240
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert target.exists(), "the sweep never reached its second point"
    assert not (killed / lr_dir_name(1e-2) / "summary.json").exists()
    assert (
        sweep_main(tiny_args(killed, *lrs, steps=40, extra=("--no-extend",))) == 0
    )  # takes over the stale lock
    for lr in lrs:
        assert _metrics(killed / lr_dir_name(lr)).equals(_metrics(straight / lr_dir_name(lr))), lr
    assert json.loads((killed / "sweep.json").read_text())["state"] == "finished"


@pytest.mark.parametrize("executor", [(), ("--concurrent", "2")])
def test_a_checkpoint_that_cant_continue_is_told_the_sweeps_way_to_start_over(tmp_path, tiny_args, executor):
    """Not ours (a dict without weights): the trainer's advice is cs336-train's --fresh, which in a sweep
    would move the whole sweep aside; the sweep says --restart instead, in-process and from a worker."""
    import torch

    out = tmp_path / "sweep"
    (out / lr_dir_name(3e-3) / "checkpoints").mkdir(parents=True)
    torch.save({"a": 1}, out / lr_dir_name(3e-3) / "checkpoints" / "latest.pt")
    assert sweep_main(tiny_args(out, 3e-3, steps=5, extra=("--no-extend", *executor))) == 1
    reason = load_sweep(out).point(3e-3).reason
    assert "is not a training checkpoint of this project" in reason, reason
    assert reason.endswith("; retrain this point with --restart 0.003") and "--fresh" not in reason


def test_divergent_point_is_stopped_and_failed_point_does_not_stop_the_sweep(tmp_path, tiny_args, capsys):
    out = tmp_path / "sweep"
    bad = out / lr_dir_name(3e-3) / "checkpoints"
    bad.mkdir(parents=True)
    (bad / "latest.pt").write_bytes(b"not a checkpoint")  # this point fails when it tries to resume
    assert sweep_main(tiny_args(out, 1e-2, 3e-3, 20.0, steps=60, extra=("--no-extend",))) == 1
    view = load_sweep(out)
    states = {p.value: p.state for p in view.points}
    assert states == {3e-3: "failed", 1e-2: "finished", 20.0: "diverged"}
    diverged = view.point(20.0)
    assert diverged.step < 60 and diverged.reason
    reason = view.point(3e-3).reason
    assert "cannot read checkpoint" in reason and reason.endswith("--restart 0.003") and "\n" not in reason
    err = capsys.readouterr().err.splitlines()  # non-zero exit, each failed point named with its reason once
    assert [line for line in err if line.startswith("not done:")] == [f"not done: lr_3e_03 failed: {reason}"]


def test_bracketing_adds_points_beyond_the_edge(tmp_path, tiny_args):
    out = tmp_path / "sweep"
    assert sweep_main(tiny_args(out, 1e-3, 3e-3, steps=40, extra=("--max-extra-points", "2"))) == 0
    meta = json.loads((out / "sweep.json").read_text())
    added = [p for p in meta["points"] if p["added_by"] == "bracketing"]
    assert 1 <= len(added) <= 2
    assert all(p["value"] > 3e-3 for p in added) and all(p["why"] for p in added)
    view = load_sweep(out)
    assert sum(p.is_extension for p in view.points) == len(added)


def test_second_sweep_on_same_dir_is_refused(tmp_path, tiny_args, capsys):
    out = tmp_path / "sweep"
    out.mkdir()
    holder = subprocess.Popen(  # another sweep process holding the directory's lock
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom cs336_basics.assignment_experiments.sweep.record import sweep_lock\n"
            "with sweep_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SystemExit) as exc:
            sweep_main(tiny_args(out, 1e-2))
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"pid {holder.pid}" in err[0] and "is using" in err[0]
    finally:
        holder.kill()  # like kill -9: the kernel releases its lock
        holder.wait()
    assert sweep_main(tiny_args(out, 1e-2, steps=10, extra=("--no-extend",))) == 0


def test_rerun_waits_for_a_point_a_live_process_trains(tmp_path, tiny_args):
    """A point held by a leftover trainer is neither trained twice nor recorded failed: the sweep waits."""
    out = tmp_path / "sweep"
    run_dir = out / lr_dir_name(1e-2)
    run_dir.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from cs336_basics.experiment_log.reader "
         "import run_dir_lock; cm = run_dir_lock(Path(sys.argv[1])); cm.__enter__(); print('held', flush=True); "
         "time.sleep(120)", str(run_dir)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    sweep = None
    try:
        assert holder.stdout.readline().strip() == "held"
        cmd = [sys.executable, "-m", "cs336_basics.assignment_experiments.lr_sweep.learning_rate_sweep",
               *tiny_args(out, 1e-2, steps=10, extra=("--no-extend",))]  # fmt: skip
        sweep = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in sweep.stdout:
            if "waiting for it to end" in line:
                break
        assert "is being trained by pid" in line and sweep.poll() is None
        assert json.loads((out / "sweep.json").read_text())["state"] == "running"
    finally:
        holder.kill()
        holder.wait()
    rest = sweep.communicate(timeout=300)[0]
    assert sweep.returncode == 0, rest
    assert load_sweep(out).point(1e-2).state == "finished"
    assert json.loads((out / "sweep.json").read_text())["launch_errors"] == []


def test_submitit_local_executor(tmp_path, tiny_args, monkeypatch):
    """Real submitit jobs on this machine; they all run at once, so they split the cores like workers do.
    ``--time 0`` means no limit (submitit's local executor read 0 as "kill at once", and gives 2 minutes when
    not told)."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    out = tmp_path / "sweep"
    flags = ("--no-extend", "--executor", "local", "--time", "0")
    assert sweep_main(tiny_args(out, 3e-3, 1e-2, steps=10, extra=flags)) == 0
    view = load_sweep(out)
    assert [p.state for p in view.points] == ["finished", "finished"]
    share = max(1, len(os.sched_getaffinity(0)) // 2)
    assert [p.log.config["runtime"]["threads"] for p in view.points] == [share, share]
    assert json.loads((out / "sweep.json").read_text())["executor"] == "submitit"
    assert any((out / "submitit").rglob("*_log.out"))  # real submitit job folders
    assert not (out / "submitit" / "%j").exists()  # the folder template is not left behind


def test_slurm_executor_without_slurm_is_one_line_before_anything_is_written(
    tmp_path, tiny_args, monkeypatch, capsys
):
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without sbatch / srun: a machine without SLURM
    out = tmp_path / "sweep"
    with pytest.raises(SystemExit) as exc:
        sweep_main(tiny_args(out, 1e-2, steps=5, extra=("--no-extend", "--executor", "slurm")))
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1, err
    assert "--executor slurm: no SLURM on this machine (sbatch / srun not on PATH)" in err[0]
    assert not out.exists()


def test_concurrent_points_in_worker_processes(tmp_path, tiny_args, monkeypatch, capsys):
    """Two points at once share this machine's cores: each child trains on its half of them (torch's
    default, every core in each child, oversubscribed the CPU: a demo point ran 3.3x slower)."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    out = tmp_path / "sweep"
    assert sweep_main(tiny_args(out, 3e-3, 1e-2, steps=10, extra=("--no-extend", "--concurrent", "2"))) == 0
    assert [p.state for p in load_sweep(out).points] == ["finished", "finished"]
    log = out / "logs" / "lr_1e_02.log"
    assert log.exists()
    printed = capsys.readouterr().out  # the console names where each point's output goes, and how it ended
    assert f"lr_1e_02: training in a worker process, its output in {log}" in printed
    assert f"lr_1e_02: finished (output in {log})" in printed
    share = max(1, len(os.sched_getaffinity(0)) // 2)
    for point in load_sweep(out).points:
        assert point.log.config["runtime"]["threads"] == share, point.name


def test_restart_of_a_point_that_never_ran_moves_nothing_and_a_typo_is_refused_first(
    tmp_path, tiny_args, capsys
):
    out = tmp_path / "sweep"
    assert sweep_main(tiny_args(out, 1e-2, steps=10, extra=("--no-extend", "--restart", "1e-2"))) == 0
    assert "restarting lr_1e_02: it had not started, nothing to move aside" in capsys.readouterr().out
    assert not list(out.glob("*.old-*")) and load_sweep(out).point(1e-2).state == "finished"
    with pytest.raises(SystemExit) as exc:
        sweep_main(tiny_args(out, 1e-2, steps=10, extra=("--no-extend", "--restart", "3e-2")))
    printed = capsys.readouterr()
    assert exc.value.code == 2 and "--restart 0.03: not a point of this sweep; points: 0.01" in printed.err
    assert "plan for" not in printed.out  # refused before the plan times anything


def test_the_restart_value_a_sweep_prints_is_one_it_takes(tmp_path, tiny_args, capsys):
    """Values are printed as flags read them back: ``:g`` turned 0.0123456789 into 0.0123457, no point."""
    out, lr = tmp_path / "sweep", 0.0123456789
    assert sweep_main(tiny_args(out, lr, steps=5, extra=("--no-extend",))) == 0
    with pytest.raises(SystemExit):
        sweep_main(tiny_args(out, lr, steps=5, extra=("--no-extend", "--restart", "3e-2")))
    listed = capsys.readouterr().err.rsplit("points: ", 1)[1].split()[0]
    assert listed == "0.0123456789"
    assert sweep_main(tiny_args(out, lr, steps=5, extra=("--no-extend", "--restart", listed))) == 0
    assert len(list(out.glob("lr_*.old-*"))) == 1


def test_restart_moves_old_run_aside(tmp_path, tiny_args, capsys):
    out = tmp_path / "sweep"
    assert sweep_main(tiny_args(out, 1e-2, steps=10, extra=("--no-extend",))) == 0
    with pytest.raises(SystemExit):  # another config: the error's advice is --restart 0.01 ...
        sweep_main(tiny_args(out, 1e-2, steps=15, extra=("--no-extend",)))
    assert (
        capsys.readouterr().err.strip().endswith("retrain it with --restart 0.01, or use --fresh / --out DIR")
    )
    # ... and --restart takes it: the point retrains at the new config (the old config.json was refused too)
    assert sweep_main(tiny_args(out, 1e-2, steps=15, extra=("--no-extend", "--restart", "1e-2"))) == 0
    assert len(list(out.glob("lr_1e_02.old-*"))) == 1
    assert load_sweep(out).point(1e-2).state == "finished" and load_sweep(out).point(1e-2).step == 15
    assert sweep_main(tiny_args(out, 1e-2, steps=10, extra=("--no-extend", "--fresh"))) == 0
    assert len(list(tmp_path.glob("sweep.old-*"))) == 1


@pytest.mark.parametrize(
    ("rates", "message"),
    [
        (["1e-3", "-1e-3"], "not a positive finite number"),
        (["abc"], "is not a number"),
        (["0"], "not a positive finite number"),
    ],
)
def test_bad_learning_rates(tmp_path, tiny_args, capsys, rates, message):
    args = tiny_args(tmp_path / "s", 1e-3)
    i = args.index("--learning-rates")
    args[i + 1] = rates[0]
    args[i + 2 : i + 2] = rates[1:]
    with pytest.raises(SystemExit) as exc:
        sweep_main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and message in err[0]


def test_changed_config_is_refused(tmp_path, tiny_args, capsys):
    out = tmp_path / "sweep"
    assert sweep_main(tiny_args(out, 1e-2, steps=10, extra=("--no-extend",))) == 0
    with pytest.raises(SystemExit):
        sweep_main(tiny_args(out, 1e-2, steps=12, extra=("--no-extend",)))
    assert "different config" in capsys.readouterr().err
    # a field the trainer's resume policy lets change is accepted here too (one policy for both)
    assert sweep_main(tiny_args(out, 1e-2, steps=10, extra=("--no-extend", "--eval-interval", "5"))) == 0


def test_summary_of_missing_dir_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        sweep_main(["--summary", "--out", str(tmp_path / "nope")])
    assert exc.value.code == 2 and "no sweep directory" in capsys.readouterr().err


def test_lock_left_by_a_dead_sweep_is_free(tmp_path, tiny_args):
    import socket

    out = tmp_path / "sweep"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    (out / LOCK_FILE).write_text(json.dumps({"pid": proc.pid, "host": socket.gethostname(), "started_at": 0}))
    assert sweep_main(tiny_args(out, 1e-2, steps=5, extra=("--no-extend",))) == 0
    assert os.path.exists(out / "sweep.json")


def test_the_advice_for_more_sharpness_measurements_is_a_command_that_takes_them(tmp_path, tiny_args):
    """'raise --sharpness-share for more' did nothing on a finished sweep (a finished run is not retrained);
    the advice is now a --restart of the best lr with a larger share, and that command retrains it so."""
    import shlex

    from cs336_basics.assignment_experiments.lr_sweep.stability import at_edge_text, edge_rows

    out = tmp_path / "sweep"
    assert sweep_main(tiny_args(out, 1e-2, steps=10, extra=("--no-extend", "--sharpness-share", "0.05"))) == 0
    view = load_sweep(out)
    text = at_edge_text(view, edge_rows(view))
    assert "`--restart 0.01 --sharpness-share 0.1`" in text, text
    advised = shlex.split(text.split("retrain it with `")[1].split("`")[0])
    assert sweep_main(tiny_args(out, 1e-2, steps=10, extra=("--no-extend", *advised))) == 0
    assert len(list(out.glob("lr_1e_02.old-*"))) == 1
    assert load_experiment_log(out / "lr_1e_02").config["sharpness_share"] == 0.1


def test_restart_retrains_every_seed_of_the_value_the_sweep_holds(tmp_path, tiny_args, capsys):
    """--restart with fewer --seeds than the sweep ran moved only the seeds of this command aside: the other
    seed kept its old run and the table still averaged it."""
    out = tmp_path / "sweep"
    assert sweep_main(tiny_args(out, 1e-2, steps=5, extra=("--no-extend", "--seeds", "2"))) == 0
    assert sweep_main(tiny_args(out, 1e-2, steps=5, extra=("--no-extend", "--restart", "1e-2"))) == 0
    printed = capsys.readouterr().out
    assert (
        "restarting lr_1e_02 (previous run" in printed and "restarting lr_1e_02_s1 (previous run" in printed
    )
    assert sorted(p.name.split(".old-")[0] for p in out.glob("*.old-*")) == ["lr_1e_02", "lr_1e_02_s1"]
    assert [p.state for p in load_sweep(out).points] == ["finished", "finished"]
