"""The sweep engine's findings (issue 10) and the sweep side of reliability (issue 15), each through the real
command line: one run-dir contract, launch errors that never hide a run dir, the launcher's signals and GPU
mapping, checks before any point starts, honest exit codes, seeds, the batch-size client."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cs336_basics.assignment_experiments.lr_sweep.analyze_lr_sweep import main as analyze_main
from cs336_basics.assignment_experiments.lr_sweep.diagnose_lr_sweep import main as diagnose_main
from cs336_basics.assignment_experiments.lr_sweep.learning_rate_sweep import main as sweep_main
from cs336_basics.assignment_experiments.lr_sweep.naming import lr_dir_name
from cs336_basics.assignment_experiments.sweep.launcher import child_threads, visible_devices
from cs336_basics.assignment_experiments.sweep.record import SweepRecord
from cs336_basics.assignment_experiments.sweep.view import format_table, load_sweep
from cs336_basics.errors import UserError
from cs336_basics.experiment_log import compare_experiments, load_experiment_log
from tests.test_sweep import demo_data_dir, tiny_args  # noqa: F401 (fixtures)

SWEEP = [sys.executable, "-m", "cs336_basics.assignment_experiments.lr_sweep.learning_rate_sweep"]


def _one_line_exit_2(capsys, fn, *args) -> str:
    with pytest.raises(SystemExit) as exc:
        fn(*args)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1, err
    return err[0]


def _gone(pid: int) -> bool:
    """Exited (a zombie nobody reaped in a container without an init counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait_for(predicate, timeout=240.0):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory, demo_data_dir):  # noqa: F811
    """One small finished sweep of two points, copied by the tests that change it."""
    out = tmp_path_factory.mktemp("finished") / "sweep"
    args = _tiny(demo_data_dir, out, 3e-3, 1e-2, steps=10)
    assert sweep_main(args) == 0
    return out, args


def _tiny(data_dir, out, *lrs, steps=10, extra=()):
    return ["--preset", "demo", "--out", str(out), "--learning-rates", *map(repr, lrs), "--d-model", "32",
            "--d-ff", "64", "--num-layers", "1", "--num-heads", "2", "--context-length", "16", "--batch-size", "4",
            "--max-steps", str(steps), "--log-interval", "5", "--eval-interval", "10", "--eval-batches", "1",
            "--checkpoint-interval", "5", "--device", "cpu", "--dtype", "fp32", "--compile", "off",
            "--data-dir", str(data_dir), "--no-progress", "--no-extend", *extra]  # fmt: skip


def _copy(finished_sweep, tmp_path) -> tuple[Path, list[str]]:
    import shutil

    src, args = finished_sweep
    dst = tmp_path / "sweep"
    shutil.copytree(src, dst)
    return dst, [str(dst) if a == str(src) else a for a in args]


# ---- one run-dir contract ---------------------------------------------------------------------------------


def test_launch_error_never_hides_a_finished_run_dir(finished_sweep, tmp_path):
    """A duplicate (re-submitted) launch that lost the run lock must not turn a finished point into failed."""
    out, _ = _copy(finished_sweep, tmp_path)
    meta = json.loads((out / "sweep.json").read_text())
    meta["launch_errors"].append({"name": "lr_1e_02", "at": "x", "attempt": 99, "error": "lost the lock"})
    for p in meta["points"]:
        p["attempts"] = 99
    (out / "sweep.json").write_text(json.dumps(meta))
    assert load_sweep(out).point(1e-2).state == "finished"
    # the version-1 record of today's demo sweeps: a 'failed' state there no longer overrides the run dir
    v1 = {"version": 1, "config": meta["config"], "learning_rates": [3e-3, 1e-2], "points": [
        {"lr": 1e-2, "name": "lr_1e_02", "added_by": "grid", "state": "failed", "error": "is being trained by"},
        {"lr": 3e-3, "name": "lr_3e_03", "added_by": "extension", "state": "finished"}]}  # fmt: skip
    (out / "sweep.json").write_text(json.dumps(v1))
    view = load_sweep(out)
    assert [(p.value, p.state, p.added_by) for p in view.points] == [
        (3e-3, "finished", "bracketing"), (1e-2, "finished", "grid")]  # fmt: skip


def test_tokens_per_sec_is_one_number_everywhere(finished_sweep, capsys):
    from cs336_basics.assignment_experiments.lr_sweep.diagnose_lr_sweep import diagnose
    from cs336_basics.assignment_experiments.lr_sweep.gpu_probe import DeviceInfo

    out, _ = finished_sweep
    run = out / lr_dir_name(1e-2)
    log = load_experiment_log(run)
    shown = {
        "reader": log.tokens_per_sec,
        "sweep view": load_sweep(out).point(1e-2).tokens_per_sec,
        "compare_experiments": float(compare_experiments([run])["tokens_per_sec"].iloc[0]),
    }
    assert len(set(shown.values())) == 1, shown
    assert shown["reader"] == pytest.approx(float(log.metrics["tokens_per_sec"].median()))
    d = diagnose(out, device=DeviceInfo(kind="cpu", host="t", note="", cpu_cores=2, load_avg=(0, 0, 0)))
    assert next(p for p in d.points if p.lr == 1e-2).tokens_per_sec == pytest.approx(
        float(log.metrics["tokens_per_sec"].tail(5).median()))  # fmt: skip


def test_extra_metric_columns_and_sharpness_are_kept(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("step,train_loss,max_attn_logit_l0,logz_mean\n5,3.0,7.5,0.25\n10,2.5,")
    (run / "sharpness.csv").write_text("step,lr,sharpness,threshold,ratio\n5,0.01,1900.0,3800.0,0.5\n")
    log = load_experiment_log(run)
    assert list(log.metrics["max_attn_logit_l0"]) == [7.5] and "mfu" in log.metrics.columns
    assert log.sharpness.to_dict("records") == [
        {"step": 5, "lr": 0.01, "sharpness": 1900.0, "threshold": 3800.0, "ratio": 0.5}]  # fmt: skip


# ---- the launcher --------------------------------------------------------------------------------------------


def test_gpu_slots_index_the_parents_visible_devices():
    assert visible_devices("2,3", ["0", "1"], count=2) == ["2", "3"]
    assert visible_devices(None, ["0", "1"], count=4) == ["0", "1"]
    assert visible_devices("5", [None, None], count=1) == [None, None]
    assert visible_devices("GPU-a1, GPU-b2", ["1"], count=2) == ["GPU-b2"]
    with pytest.raises(UserError, match="sees 2 GPU"):
        visible_devices("2,3", ["2"], count=2)
    with pytest.raises(UserError, match=r"sees 2 GPU\(s\); give ids from 0 to 1"):
        visible_devices(None, ["2"], count=2)


def test_children_at_once_split_the_cores_and_a_users_thread_count_is_kept(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert [child_threads(n, environ={}) for n in (1, 2, 3, 4, 32)] == [None, "8", "5", "4", "1"]
    assert child_threads(4, environ={"OMP_NUM_THREADS": "2"}) is None  # the user's choice stands


def test_gpus_on_a_machine_without_cuda_is_one_line_before_anything_runs(tmp_path):
    """--gpus where torch sees no GPU (and CUDA_VISIBLE_DEVICES hides them all) is refused with one line and
    exit 2 before the sweep writes anything, instead of running CPU points in workers."""
    out = tmp_path / "sweep"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "cs336_basics.assignment_experiments.lr_sweep.learning_rate_sweep",
           "--preset", "demo", "--learning-rates", "1e-3", "--gpus", "0,1", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: --gpus 0: no CUDA GPU is visible to this process; leave out --gpus "
        "(--concurrent N runs several points on one device)"
    ]
    assert not out.exists()


def test_ctrl_c_gives_each_worker_one_sigint_and_a_step_boundary_checkpoint(tmp_path, demo_data_dir):  # noqa: F811
    """The terminal's Ctrl-C goes to the whole foreground group; workers must see one SIGINT (the sweep's),
    not two, and so stop at a step boundary with a checkpoint (none is due on their own before the end)."""
    out = tmp_path / "sweep"
    args = _tiny(
        demo_data_dir,
        out,
        3e-3,
        1e-2,
        steps=4000,
        extra=("--concurrent", "2", "--checkpoint-interval", "4000"),
    )
    proc = subprocess.Popen(
        [*SWEEP, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    runs = [out / lr_dir_name(lr) for lr in (3e-3, 1e-2)]
    _wait_for(
        lambda: (
            all(len(load_experiment_log(r).metrics) >= 1 for r in runs if r.is_dir())
            and all(r.is_dir() for r in runs)
        )
    )
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does
    assert proc.wait(timeout=240) == 130, proc.stderr.read()
    for run in runs:
        log = load_experiment_log(run)
        assert log.state == "interrupted" and (run / "checkpoints" / "latest.pt").exists(), run


def test_kill_9_of_the_parent_leaves_no_orphans_and_the_rerun_finishes(tmp_path, demo_data_dir):  # noqa: F811
    out = tmp_path / "sweep"
    args = _tiny(demo_data_dir, out, 3e-3, 1e-2, steps=400, extra=("--concurrent", "2"))
    proc = subprocess.Popen([*SWEEP, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = [out / lr_dir_name(lr) for lr in (3e-3, 1e-2)]
    _wait_for(
        lambda: all(load_experiment_log(r).live for r in runs if r.is_dir()) and all(r.is_dir() for r in runs)
    )
    pids = [load_experiment_log(r).status["pid"] for r in runs]
    proc.kill()
    proc.wait()
    _wait_for(lambda: not any(load_experiment_log(r).live for r in runs), timeout=120)  # they died with it
    _wait_for(lambda: all(_gone(pid) for pid in pids), timeout=120)
    assert load_sweep(out).state == "interrupted"  # never "finished" while points are unfinished
    assert sweep_main(args) == 0
    assert [p.state for p in load_sweep(out).points] == ["finished", "finished"]


# ---- checks before any point starts, exit codes ------------------------------------------------------------


def test_device_every_point_would_miss_is_one_line_before_any_point(tmp_path, tiny_args, capsys):  # noqa: F811
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    out = tmp_path / "sweep"
    args = tiny_args(out, 3e-3, 1e-2, extra=("--no-extend",))
    args[args.index("--device") + 1] = "cuda"
    assert "cuda" in _one_line_exit_2(capsys, sweep_main, args)
    assert not out.exists()  # the sweep dir made for it goes again: no .sweep.lock left alone in it


def test_min_lr_above_a_point_is_refused_before_any_point(tmp_path, tiny_args, capsys):  # noqa: F811
    out = tmp_path / "sweep"
    line = _one_line_exit_2(
        capsys, sweep_main, tiny_args(out, 3e-3, 1e-2, extra=("--no-extend", "--min-lr", "5e-3"))
    )
    assert "lr_3e_03" in line and "--min-lr" in line
    assert not list(out.rglob("metrics.csv"))


def test_empty_learning_rates_is_refused(tmp_path, tiny_args, capsys):  # noqa: F811
    args = tiny_args(tmp_path / "s", 1e-3)
    args.remove(repr(1e-3))
    assert "give at least one learning rate" in _one_line_exit_2(capsys, sweep_main, args)


def test_hand_edited_config_of_a_finished_point_is_refused(finished_sweep, tmp_path, capsys):
    out, args = _copy(finished_sweep, tmp_path)
    path = out / lr_dir_name(1e-2) / "config.json"
    cfg = json.loads(path.read_text())
    path.write_text(json.dumps({**cfg, "d_model": 64}))
    line = _one_line_exit_2(capsys, sweep_main, args)
    assert "different config" in line and "d_model" in line and "--restart 0.01" in line
    assert (
        "d_model: config.json 64 vs now " in line
    )  # what was compared: the run dir's file, not a checkpoint
    path.write_text('{"max_lr": 0.01, "d_mod')  # a truncated config.json is unreadable, not another config
    line = _one_line_exit_2(capsys, sweep_main, args)
    assert "is unreadable (not a JSON object of config fields)" in line and "--restart 0.01" in line


def test_structurally_wrong_sweep_json_is_one_line_everywhere(finished_sweep, tmp_path, capsys):
    out, args = _copy(finished_sweep, tmp_path)
    (out / "sweep.json").write_text(json.dumps({"points": 5, "config": "abc"}))
    for fn, argv in (
        (sweep_main, args),
        (diagnose_main, [str(out)]),
        (analyze_main, [str(out), "--no-sample"]),
    ):
        assert "is not a sweep record" in _one_line_exit_2(capsys, fn, argv)
    assert sweep_main([*args, "--fresh"]) == 0  # as the error advises: the broken sweep is moved aside
    assert len(list(tmp_path.glob("sweep.old-*"))) == 1 and load_sweep(out).state == "finished"
    capsys.readouterr()
    # A point whose value is not a number is named with the value as written, not as None.
    meta = json.loads((finished_sweep[0] / "sweep.json").read_text())
    meta["points"][0]["value"] = "abc"
    (out / "sweep.json").write_text(json.dumps(meta))
    line = _one_line_exit_2(capsys, diagnose_main, [str(out)])
    assert (
        "a point whose value is not a number or whose name is not a string" in line
        and "'value': 'abc'" in line
    )


def test_analyze_and_diagnose_on_a_dir_that_is_no_sweep(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert "is not a sweep" in _one_line_exit_2(capsys, analyze_main, [str(tmp_path)])
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]  # nothing written
    assert diagnose_main([str(tmp_path)]) == 1
    assert "nothing here yet" in capsys.readouterr().err
    assert "is not a sweep" in _one_line_exit_2(capsys, sweep_main, ["--summary", "--out", str(tmp_path)])


def test_each_command_refuses_a_sweep_over_another_field(finished_sweep, tmp_path, capsys):
    """batch-size-sweep --summary on an lr sweep was a traceback; the lr readers called a batch-size sweep's
    batch sizes learning rates ('best lr: 8') and lr-analyze wrote its report into it."""
    from cs336_basics.assignment_experiments.batch_size.batch_size_sweep import main as batch_main

    lr_sweep, _ = _copy(finished_sweep, tmp_path)
    line = _one_line_exit_2(capsys, batch_main, ["--summary", "--out", str(lr_sweep)])
    assert line == f"error: {lr_sweep} holds a sweep over max_lr, not batch_size; choose another directory"
    meta = json.loads((lr_sweep / "sweep.json").read_text())
    (lr_sweep / "sweep.json").write_text(
        json.dumps({**meta, "field": "batch_size"})
    )  # now a batch-size sweep
    before = sorted(os.listdir(lr_sweep))
    for main, argv in [
        (sweep_main, ["--summary", "--out"]),
        (analyze_main, ["--no-sample"]),
        (diagnose_main, []),
    ]:
        line = _one_line_exit_2(capsys, main, [*argv, str(lr_sweep)])
        assert line.endswith("holds a sweep over batch_size, not max_lr; choose another directory"), main
    assert sorted(os.listdir(lr_sweep)) == before  # no report written into it


def test_a_run_dir_and_a_sweep_dir_are_not_taken_for_each_other(finished_sweep, tmp_path, capsys):
    """cs336-train --out SWEEP wrote a run's files beside sweep.json (and --fresh would move the sweep aside);
    lr-sweep --out RUN made a sweep inside a training run's directory."""
    from cs336_basics.basics.run_experiment import main as train_main

    sweep, args = _copy(finished_sweep, tmp_path)
    before = sorted(os.listdir(sweep))
    line = _one_line_exit_2(capsys, train_main, ["--preset", "demo", "--out", str(sweep), "--fresh"])
    assert line == f"error: {sweep} is a sweep's directory (it holds sweep.json); give the run its own --out"
    assert sorted(os.listdir(sweep)) == before and not list(tmp_path.glob("*.old-*"))
    run = sweep / "lr_1e_02"
    inside = sorted(os.listdir(run))
    for main, argv in [
        (sweep_main, [*args[: args.index("--out")], "--out", str(run)]),
        (analyze_main, [str(run)]),
    ]:
        line = _one_line_exit_2(capsys, main, argv)
        assert line == f"error: {run} is a training run's directory (it holds config.json), not a sweep's; " \
                       "choose another directory", main  # fmt: skip
    assert sorted(os.listdir(run)) == inside


def test_plan_refuses_what_the_run_refuses_and_counts_restarts_as_to_do(finished_sweep, tmp_path, capsys):
    """--plan called points 'done' that the run would refuse (another config), ignored --restart, took a
    --restart value that is no point, and planned into an --out that is a file."""
    sweep, args = _copy(finished_sweep, tmp_path)
    steps = args.index("--max-steps") + 1
    longer = [*args[:steps], "20", *args[steps + 1 :]]
    run_line = _one_line_exit_2(capsys, sweep_main, longer)
    assert "is from a different config" in run_line and "--restart 0.003" in run_line
    assert _one_line_exit_2(capsys, sweep_main, [*longer, "--plan"]) == run_line  # the same refusal
    assert sweep_main([*args, "--plan"]) == 0
    assert "2 point(s), 2 already done" in capsys.readouterr().out
    assert sweep_main([*longer, "--plan", "--restart", "3e-3", "--restart", "1e-2"]) == 0
    assert "2 point(s), 0 already done" in capsys.readouterr().out
    line = _one_line_exit_2(capsys, sweep_main, [*args, "--plan", "--restart", "0.5"])
    assert line == "error: --restart 0.5: not a point of this sweep; points: 0.003, 0.01"
    afile = tmp_path / "afile"
    afile.write_text("x")
    out = args.index("--out") + 1
    line = _one_line_exit_2(capsys, sweep_main, [*args[:out], str(afile), *args[out + 1 :], "--plan"])
    assert line == f"error: {afile} is a file, not a sweep directory; choose another --out"
    assert not list(sweep.glob("*.old-*"))  # --plan moved nothing


@pytest.mark.parametrize("kind", ["file", "under_file", "unwritable", "too_long"])
def test_bad_out_is_one_line(tmp_path, tiny_args, capsys, finished_sweep, kind):  # noqa: F811
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    out = {"file": blocker, "under_file": blocker / "sweep", "unwritable": locked / "sweep",
           "too_long": tmp_path / ("x" * 300)}[kind]  # fmt: skip
    if kind == "unwritable" and os.access(locked, os.W_OK):
        pytest.skip("running as a user who can write anywhere (root)")
    _one_line_exit_2(capsys, sweep_main, tiny_args(out, 1e-2))
    _one_line_exit_2(capsys, analyze_main, [str(finished_sweep[0]), "--out", str(out), "--no-sample"])


def test_diagnose_prefers_the_summary_over_a_truncated_metrics_csv(finished_sweep, tmp_path, capsys):
    out, _ = _copy(finished_sweep, tmp_path)
    run = out / lr_dir_name(1e-2)
    summary = json.loads((run / "summary.json").read_text())
    lines = (run / "metrics.csv").read_text().splitlines()
    (run / "metrics.csv").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:5])  # last line cut short
    assert diagnose_main([str(out), "--json"]) == 0
    point = next(p for p in json.loads(capsys.readouterr().out)["points"] if p["lr"] == 1e-2)
    assert point["val_loss"] == summary["final_val_loss"]


# ---- seeds and the second client -----------------------------------------------------------------------------


def test_seeds_name_points_and_tables_show_mean_and_std(tmp_path, tiny_args):  # noqa: F811
    out = tmp_path / "sweep"
    assert (
        sweep_main(tiny_args(out, 1e-2, steps=10, extra=("--no-extend", "--seeds", "2", "--seed", "5"))) == 0
    )
    assert {p.name: load_experiment_log(out / p.name).config["seed"] for p in load_sweep(out).points} == {
        "lr_1e_02": 5,
        "lr_1e_02_s1": 6,
    }  # fmt: skip: seed k of the sweep trains at the base seed + k
    group = load_sweep(out).group(1e-2)
    losses = [p.final_val_loss for p in group.points]
    assert losses[0] != losses[1] and group.final_val_loss == pytest.approx(sum(losses) / 2)
    assert "±" in format_table(load_sweep(out))
    # Without sweep.json the run dirs alone give the same seed indices (not the config's seeds 5 and 6).
    seeds = {p.name: p.seed for p in load_sweep(out).points}
    (out / "sweep.json").unlink()
    assert {p.name: p.seed for p in load_sweep(out).points} == seeds == {"lr_1e_02": 0, "lr_1e_02_s1": 1}
    assert load_sweep(out).point(1e-2, seed=1).final_val_loss == losses[1]


def test_batch_size_client(tmp_path, demo_data_dir, monkeypatch):  # noqa: F811
    from cs336_basics.assignment_experiments.batch_size.batch_size_sweep import main as bs_main
    from cs336_basics.assignment_experiments.sweep import plots

    figures = {}
    real_save = plots.save_figure
    monkeypatch.setattr(
        plots, "save_figure", lambda fig, path: figures.update({path.name: fig}) or real_save(fig, path)
    )

    out = tmp_path / "bs"
    args = _tiny(demo_data_dir, out, 1e-2, steps=10)
    i = args.index("--learning-rates")
    del args[i : i + 2]
    args.remove("--no-extend")
    args[args.index("--max-steps") : args.index("--max-steps") + 2] = []
    assert (
        bs_main(
            [*args, "--batch-sizes", "2", "8", "--tokens", "1280", "--lr", "1e-2", "--lr-scaling", "sqrt"]
        )
        == 0
    )
    view = load_sweep(out)
    assert [(p.name, p.state) for p in view.points] == [("bs_2", "finished"), ("bs_8", "finished")]
    cfgs = [load_experiment_log(out / p.name).config for p in view.points]
    assert [c["max_steps"] for c in cfgs] == [40, 10]  # the same token budget
    assert [c["max_lr"] for c in cfgs] == pytest.approx([1e-2 * (2 / 4) ** 0.5, 1e-2 * (8 / 4) ** 0.5])
    report = (out / "batch_size_report.md").read_text()
    assert "| 2 |" in report and (out / "batch_size_curves.png").exists()
    assert "train tok/s: median training throughput of the log intervals" in report
    # Curves against steps, tokens seen and wallclock: at one step bs 8 has seen 4x the tokens of bs 2.
    labels = [ax.get_xlabel() for ax in figures["batch_size_curves.png"].axes[3:]]
    assert labels == ["step (optimizer steps)", "tokens seen (thousands)", "wallclock (seconds)"]
    tokens_axis = figures["batch_size_curves.png"].axes[1]
    runs = [line for line in tokens_axis.get_lines() if line.get_color() != "gray"]  # not the target line
    assert [max(line.get_xdata()) for line in runs] == pytest.approx([1.28, 1.28])


def test_batch_size_summary_and_bad_numbers_are_one_line(tmp_path, capsys):
    """--summary reads a batch-size sweep's table; --seeds 0, --tokens 0 and a non-integer batch size are one
    line and exit 2 before anything is written."""
    from cs336_basics.assignment_experiments.batch_size.batch_size_sweep import main as bs_main

    out = tmp_path / "bs"
    for bad, message in ((["--seeds", "0"], "--seeds must be >= 1, got 0"),
                         (["--tokens", "0"], "--tokens must be a positive number of tokens, got 0"),
                         (["--batch-sizes", "8", "x"], "--batch-sizes: give positive integers, got 8 x")):  # fmt: skip
        with pytest.raises(SystemExit) as exc:
            bs_main(["--preset", "demo", "--out", str(out), *bad])
        assert exc.value.code == 2 and capsys.readouterr().err.strip() == f"error: {message}"
    assert not out.exists()
    run = out / "bs_8"
    run.mkdir(parents=True)
    record = SweepRecord.open(out, "batch_size", {"preset": "demo"}, prefix="bs")
    record.add_point("bs_8", 8, 0, "grid")
    (run / "config.json").write_text(json.dumps({"batch_size": 8, "seed": 0, "max_steps": 10}))
    (run / "summary.json").write_text(json.dumps({"status": "finished", "final_val_loss": 2.5, "steps": 10}))
    assert bs_main(["--out", str(out), "--summary"]) == 0
    table = capsys.readouterr().out
    assert "batch" in table.splitlines()[0] and re.search(r"^\*\s+8 finished .* 2\.500", table, re.M)


def test_the_device_is_checked_here_only_when_the_points_run_here(tmp_path):
    """SLURM points run on other machines: --device cuda from a login node without a GPU is theirs to check.
    The batch-size sweep checked it anyway (only the lr sweep knew); the executor now says where points run."""
    import torch

    from cs336_basics.assignment_experiments.sweep.engine import SweepSpec, run_sweep
    from cs336_basics.assignment_experiments.sweep.executors import InProcessExecutor, SubmititExecutor
    from cs336_basics.basics.config import create_experiment_config

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")

    class Planned(Exception):
        pass

    def stop(points, done):
        raise Planned(len(points))

    spec, base = SweepSpec("batch_size", "bs", [4, 8]), create_experiment_config("demo", device="cuda")
    with pytest.raises(Planned):  # the plan is reached: no device check for SLURM points
        run_sweep(spec, base, tmp_path / "slurm", SubmititExecutor("slurm"), plan=stop)
    for executor in (InProcessExecutor(), SubmititExecutor("local")):
        with pytest.raises(UserError, match="CUDA is not available"):
            run_sweep(spec, base, tmp_path / executor.name, executor, plan=stop)
    assert not (tmp_path / "in-process").exists()  # refused before anything was written


def test_a_sweep_of_another_preset_is_told_which_preset_it_was(finished_sweep, tmp_path, capsys):
    """lr-sweep without --preset on a demo sweep listed the differences and said 'the settings it was made
    with'; the flag that brings them back is named."""
    sweep, args = _copy(finished_sweep, tmp_path)
    i = args.index("--preset")
    other = [*args[:i], "--preset", "quick-test", *args[i + 2 :]]
    line = _one_line_exit_2(capsys, sweep_main, other)
    assert "re-run with --preset demo (the settings it was made with), retrain it with --restart" in line
    assert sweep_main(args) == 0  # with --preset demo: every point is done
