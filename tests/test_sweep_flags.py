"""Flags of the sweeps that had no test: the SLURM flag mapping (against sbatch's documented --time formats),
executor and client mistakes through the real commands (one line, exit 2, nothing written under --out), the
preset aliases, lr-diagnose's interval checks and the batch-size sweep's token budget.

Several pin bugs found while writing them (fixed since): --time in sbatch's other formats, a --slurm-option
without a key, --gpus where torch sees no GPU, and lr-sweep --plan on a batch-size sweep's directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cs336_basics.assignment_experiments.batch_size.batch_size_sweep import main as bs_main
from cs336_basics.assignment_experiments.lr_sweep.diagnose_lr_sweep import main as diagnose_main
from cs336_basics.assignment_experiments.lr_sweep.learning_rate_sweep import main as sweep_main
from cs336_basics.assignment_experiments.sweep.executors import _minutes, choose_executor, slurm_parameters
from cs336_basics.data.token_file import write_sidecar
from cs336_basics.errors import UserError
from tests.conftest import pattern_tokens

# A model that times and trains in milliseconds; the preset's budget (batch, context, steps) is left alone
# where a test is about the preset.
TINY_MODEL = ["--vocab-size", "64", "--d-model", "32", "--d-ff", "64", "--num-layers", "1", "--num-heads", "2",
              "--device", "cpu", "--dtype", "fp32", "--compile", "off", "--no-progress"]  # fmt: skip
TINY_RUN = [*TINY_MODEL, "--preset", "demo", "--context-length", "16", "--batch-size", "4", "--max-steps", "10",
            "--log-interval", "5", "--eval-interval", "10", "--eval-batches", "1", "--checkpoint-interval", "10"]  # fmt: skip


def _one_error_line(capsys, fn, argv) -> str:
    """``fn(argv)`` exits 2 with exactly one stderr line starting ``error: ``; that line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        fn(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), (exc.value.code, err)
    return err[0]


@pytest.fixture
def token_files(tmp_path) -> list[str]:
    """Ready token files (vocab 64): a sweep given them prepares no dataset."""
    paths = []
    for name, arr in (("train", pattern_tokens(20_000)), ("valid", pattern_tokens(4_000, seed=1))):
        path = tmp_path / f"{name}.npy"
        np.save(path, arr)
        write_sidecar(
            path, dtype="uint16", num_tokens=len(arr), vocab_size=64, tokenizer_sha256="t", source={}
        )
        paths.append(str(path))
    return paths


# ---- the SLURM flags as submitit parameters ----------------------------------------------------------------
# sbatch --time: "Acceptable time formats include "minutes", "minutes:seconds", "hours:minutes:seconds", ...
# Time resolution is one minute and second values are rounded up to the next minute." (sbatch(1))


@pytest.mark.parametrize(
    "text, minutes",
    [
        ("90", 90),  # minutes
        ("01:30:00", 90),  # hours:minutes:seconds
        ("2:00:01", 121),  # ... its second rounded up to a whole minute
        ("00:00:30", 1),  # half a minute rounds up to one
        ("1:30", 2),  # minutes:seconds (not hours:minutes): 1 min 30 s, rounded up
        ("45:00", 45),  # minutes:seconds
        ("0:59", 1),
        ("1-12", 36 * 60),  # days-hours
        ("2-02:30", 2 * 1440 + 150),  # days-hours:minutes
        ("2-02:30:00", 2 * 1440 + 150),  # days-hours:minutes:seconds
        ("0", 0),  # sbatch: "a time limit of zero requests that no time limit be imposed"
    ],
)
def test_time_reads_sbatchs_formats_in_whole_minutes(text, minutes):
    assert _minutes(text) == minutes


def test_no_time_leaves_the_limit_to_the_cluster():
    assert _minutes(None) is None
    assert "timeout_min" not in slurm_parameters(None, _minutes(None), 1, None, [])
    assert slurm_parameters(None, _minutes("0"), 1, None, [])["timeout_min"] == 0  # no limit: passed on


@pytest.mark.parametrize("time, minutes", [(None, 60 * 24 * 365), ("0", 60 * 24 * 365), ("90", 90)])
def test_local_jobs_run_without_a_limit_unless_time_says(time, minutes):
    """submitit's local executor kills a job after 2 minutes when not told, and at once when told 0."""
    from cs336_basics.assignment_experiments.lr_sweep.learning_rate_sweep import build_parser

    args = build_parser().parse_args(["--executor", "local", *(["--time", time] if time else [])])
    assert choose_executor(args).parameters == {"timeout_min": minutes}


@pytest.mark.parametrize("text", ["abc", "1.5", "", "1:xx:00"])
def test_a_time_that_is_no_duration_is_one_line_naming_the_flag(text):
    with pytest.raises(UserError) as exc:
        _minutes(text)
    assert str(exc.value) == (
        f"--time {text!r}: give minutes (90), MM:SS, HH:MM:SS (01:30:00) or D-HH[:MM[:SS]] "
        "(1-12), as sbatch --time reads them"
    )


@pytest.mark.parametrize("text", ["-5", "1:02:03:04", "1-", "-1:00"])
def test_a_time_sbatch_would_not_read_is_refused(text):
    """Neither is one of sbatch's formats; _minutes gives -5 and 124 (the leading field silently dropped)."""
    with pytest.raises(UserError, match="--time"):
        _minutes(text)


def test_the_slurm_flags_become_submitits_parameters():
    """--partition, --account, --time (minutes), --gpus-per-job, one task per job (the docstring, and
    submitit's AutoExecutor names: slurm_* for the cluster's own, the rest shared)."""
    assert slurm_parameters("gpu", 90, 2, "proj", []) == {
        "gpus_per_node": 2,
        "tasks_per_node": 1,
        "timeout_min": 90,
        "slurm_partition": "gpu",
        "slurm_account": "proj",
    }
    # Flags not given are left out, so the cluster's defaults apply (no partition=None reaches sbatch).
    assert slurm_parameters(None, None, 1, None, []) == {"gpus_per_node": 1, "tasks_per_node": 1}


def test_slurm_option_key_value_reaches_sbatch_as_its_option():
    """Each --slurm-option KEY=VALUE is one sbatch option: a leading -- and spaces around = are tolerated,
    a value may hold '='; submitit writes the key's '_' as '-' again, so the #SBATCH line reads as typed."""
    from submitit.slurm.slurm import _make_sbatch_string

    options = ["qos=high", "--mem=32G", "cpus-per-task = 8", "comment=a=b"]
    extra = slurm_parameters(None, None, 1, None, options)["slurm_additional_parameters"]
    assert extra == {"qos": "high", "mem": "32G", "cpus_per_task": "8", "comment": "a=b"}
    script = _make_sbatch_string(command="true", folder="/tmp/unused", additional_parameters=extra)
    lines = set(script.splitlines())
    assert {
        "#SBATCH --qos=high",
        "#SBATCH --mem=32G",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --comment=a=b",
    } <= lines


@pytest.mark.parametrize("option", ["=high", "=", "--=x"])
def test_a_slurm_option_without_a_key_is_refused(option):
    with pytest.raises(UserError, match="--slurm-option"):
        slurm_parameters(None, None, 1, None, [option])


# ---- executor flags through the real commands --------------------------------------------------------------


def _lr_args(out: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [*TINY_RUN, "--learning-rates", "1e-2", "--no-extend", "--data-dir", str(tmp_path / "data"),
            "--out", str(out), *extra]  # fmt: skip


def _bs_args(out: Path, tmp_path: Path, *extra: str) -> list[str]:
    args = [*TINY_RUN, "--data-dir", str(tmp_path / "data"), "--out", str(out), *extra]
    i = args.index("--max-steps")
    del args[i : i + 2]  # the batch-size sweep derives each point's steps from --tokens
    return args


@pytest.mark.parametrize("command", ["lr-sweep", "batch-size-sweep"])
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--concurrent", "0"], "--concurrent must be >= 1, got 0"),
        (["--gpus", "a,b"], "--gpus 'a,b': give GPU ids separated by commas, e.g. 0,1,2,3"),
        (["--gpus", ","], "--gpus ',': give GPU ids separated by commas, e.g. 0,1,2,3"),
        (
            ["--executor", "local", "--time", "abc"],
            "--time 'abc': give minutes (90), MM:SS, HH:MM:SS (01:30:00) or "
            "D-HH[:MM[:SS]] (1-12), as sbatch --time reads them",
        ),
        # job flags the executor would ignore (with the default --executor auto they were dropped silently)
        (
            ["--time", "abc"],
            "--time is for --executor slurm or local, not --executor auto; add --executor "
            "local, or leave it out",
        ),  # fmt: skip
        (
            ["--executor", "local", "--partition", "gpu", "--slurm-option", "qos=high"],
            "--partition, --slurm-option are for --executor slurm, not --executor local; add --executor slurm, "
            "or leave them out",
        ),  # fmt: skip
    ],
)
def test_a_bad_executor_flag_is_one_line_and_writes_nothing(command, flags, message, tmp_path, capsys):
    out = tmp_path / "sweep"
    if command == "lr-sweep":
        fn, argv = sweep_main, _lr_args(out, tmp_path, *flags)
    else:
        fn, argv = bs_main, _bs_args(out, tmp_path, "--batch-sizes", "4", "--tokens", "640", *flags)
    assert _one_error_line(capsys, fn, argv) == f"error: {message}"
    assert not out.exists() and not (tmp_path / "data").exists()


def test_gpus_where_torch_sees_none_is_one_line_for_the_batch_size_sweep_too(tmp_path, capsys, monkeypatch):
    """No CUDA_VISIBLE_DEVICES and no GPU for torch: --gpus 0 names the flag and what to do instead."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    out = tmp_path / "bs"
    line = _one_error_line(capsys, bs_main, _bs_args(out, tmp_path, "--batch-sizes", "4", "--gpus", "0"))
    assert line == ("error: --gpus 0: no CUDA GPU is visible to this process; leave out --gpus "
                    "(--concurrent N runs several points on one device)")  # fmt: skip
    assert not out.exists()


def test_gpus_is_refused_where_torch_sees_no_gpu_whatever_cuda_visible_devices_says(monkeypatch):
    """torch sees no GPU (no driver, a CPU-only machine) but CUDA_VISIBLE_DEVICES=0 is set (a login shell, a
    scheduler): visible_devices trusts the variable, and --gpus 0 makes a worker executor whose points train
    on the CPU. (``lr-sweep --gpus 0 --plan`` then exits 0; without --plan the sweep runs.)"""
    import torch

    from cs336_basics.assignment_experiments.lr_sweep.learning_rate_sweep import build_parser
    from cs336_basics.assignment_experiments.sweep.executors import choose_executor

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(UserError, match="--gpus"):
        choose_executor(build_parser().parse_args(["--gpus", "0"]))


def test_a_negative_max_extra_points_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = _lr_args(out, tmp_path, "--max-extra-points", "-1")
    argv.remove("--no-extend")
    assert _one_error_line(capsys, sweep_main, argv) == "error: --max-extra-points must be >= 0, got -1"
    assert not out.exists() and not (tmp_path / "data").exists()


# ---- lr-sweep: another sweep's directory, the preset aliases --------------------------------------------------


def _batch_size_sweep_dir(path: Path) -> bytes:
    """What batch-size-sweep leaves (record.py's sweep.json, version 2): one point bs_8 over batch_size."""
    (path / "bs_8").mkdir(parents=True)
    meta = {"version": 2, "id": "bs-20250101-000000", "field": "batch_size", "prefix": "bs", "values": [8],
            "points": [{"value": 8, "seed": 0, "name": "bs_8", "added_by": "grid", "why": None, "attempts": 1}],
            "launch_errors": [], "config": {"preset": "demo", "batch_size": 4}, "preset": "demo",
            "state": "finished", "tokens": 1280, "lr_scaling": "none"}  # fmt: skip
    (path / "sweep.json").write_text(json.dumps(meta))
    return (path / "sweep.json").read_bytes()


def test_lr_sweep_refuses_an_out_holding_a_batch_size_sweep(tmp_path, token_files, capsys):
    out = tmp_path / "bs"
    before = _batch_size_sweep_dir(out)
    argv = _lr_args(out, tmp_path, "--train-data", token_files[0], "--val-data", token_files[1])
    line = _one_error_line(capsys, sweep_main, argv)
    assert line == f"error: {out} holds a sweep over batch_size, not max_lr; choose another directory"
    assert (out / "sweep.json").read_bytes() == before  # the other sweep's record is untouched
    assert sorted(p.name for p in out.iterdir() if p.name != ".sweep.lock") == ["bs_8", "sweep.json"]


def test_lr_sweep_plan_refuses_an_out_holding_a_batch_size_sweep(tmp_path, token_files, capsys):
    """--plan on a batch-size sweep's dir is refused too (it printed a plan with a point lr_8: batch size 8
    read as lr 8), and so before any plan or data preparation."""
    out = tmp_path / "bs"
    _batch_size_sweep_dir(out)
    argv = _lr_args(out, tmp_path, "--train-data", token_files[0], "--val-data", token_files[1], "--plan")
    assert "batch_size" in _one_error_line(capsys, sweep_main, argv)


@pytest.mark.parametrize(
    "preset_flags, steps, bracketing",
    [
        # --help: "= --preset quick-test: every lr for a handful of steps" (its preset: 10); no bracketing on
        # quick-test (a handful of steps says nothing about stability).
        (["--quick-test"], 10, False),
        # --help: "= --preset low-resource: 40.96M tokens" = 32 x 5,000 x 256; bracketing adds up to 3 by
        # default. Given after --preset quick-test, as a second --preset would be: the last one counts.
        (["--preset", "quick-test", "--low-resource"], 5000, True),
    ],
)
def test_the_preset_aliases_select_their_preset(preset_flags, steps, bracketing, tmp_path, capsys):
    """The preset's steps and bracketing, at batch 4 x context 16 (so the plan times a tiny step): the point
    trains 64 x steps tokens."""
    out = tmp_path / "sweep"
    argv = [*TINY_MODEL, *preset_flags, "--batch-size", "4", "--context-length", "16", "--learning-rates", "1e-3",
            "--data-dir", str(tmp_path / "data"), "--out", str(out), "--plan"]  # fmt: skip
    capsys.readouterr()
    assert sweep_main(argv) == 0
    plan = capsys.readouterr().out
    assert f"  lr_1e_03       {64 * steps:,} tokens ({steps} steps)" in plan, plan
    assert ("bracketing may add up to 3" in plan) is bracketing, plan
    assert not out.exists()  # --plan creates nothing


# ---- lr-diagnose ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--watch", "0"], "--watch needs a positive number of seconds, got 0"),
        (["--watch", "-2"], "--watch needs a positive number of seconds, got -2"),
        (["--stale-after", "0"], "--stale-after needs a positive number of seconds, got 0"),
        (["--stale-after", "-1"], "--stale-after needs a positive number of seconds, got -1"),
    ],
)
def test_diagnose_refuses_a_non_positive_interval(flags, message, tmp_path, capsys):
    """Refused before it reads the dir: an empty one would otherwise say 'nothing here yet' and exit 1."""
    assert _one_error_line(capsys, diagnose_main, [str(tmp_path), *flags]) == f"error: {message}"


# ---- batch-size-sweep: the token budget -----------------------------------------------------------------------


def test_tokens_below_one_step_of_a_batch_size_is_one_line_before_anything_is_written(tmp_path, capsys):
    """--tokens 100 at context 16: batch 2 gets 100 // 32 = 3 steps, batch 8 needs 8 x 16 = 128 for one."""
    out = tmp_path / "bs"
    argv = _bs_args(out, tmp_path, "--batch-sizes", "2", "8", "--tokens", "100")
    line = _one_error_line(capsys, bs_main, argv)
    assert (
        line == "error: --tokens 100 is less than one step of batch size 8 (128 tokens); give at least that"
    )
    assert not out.exists() and not (tmp_path / "data").exists()


def test_a_batch_size_below_one_is_named(tmp_path, capsys):
    """--batch-sizes 0 8 said 'give at least one positive integer', though 8 was one."""
    line = _one_error_line(capsys, bs_main, _bs_args(tmp_path / "bs", tmp_path, "--batch-sizes", "0", "8"))
    assert line == "error: --batch-sizes: 0 is not a positive batch size; leave it out"


def test_a_budget_below_ten_steps_of_batch_size_1_is_one_line(tmp_path, capsys):
    """Without --batch-sizes, sizes are probed from 1 while the budget gives at least MIN_STEPS = 10 steps: at
    context 16 that takes 160 tokens, so 159 leaves no batch size (refused before any probe step is timed)."""
    out = tmp_path / "bs"
    line = _one_error_line(capsys, bs_main, _bs_args(out, tmp_path, "--tokens", "159"))
    assert (
        line
        == "error: --tokens 159 is fewer than 10 steps of batch size 1 (10 x 16 tokens); give at least 160"
    )
    assert not out.exists() and not (tmp_path / "data").exists()


def test_a_cpu_batch_that_cannot_be_allocated_does_not_fit():
    """The CPU allocator refuses a 2 TB activation with a RuntimeError, not torch.OutOfMemoryError: the probe
    reads it as 'does not fit' instead of a traceback (it crashed the batch-size probe before)."""
    from cs336_basics.assignment_experiments.batch_size.batch_size_sweep import fits
    from tests.conftest import tiny_config

    if Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "1":
        pytest.skip("the kernel grants any allocation here (overcommit_memory=1): touching it would OOM-kill")
    assert fits(tiny_config(batch_size=2**30)) is False  # 2**30 x 16 tokens x 32 features x 4 B = 2 TB
    assert fits(tiny_config(batch_size=2)) is True


def test_time_0_is_no_limit_for_points_run_here_too():
    """--time 0 (none) asks for what a point run by this process gets anyway: not refused."""
    from cs336_basics.assignment_experiments.lr_sweep.learning_rate_sweep import build_parser

    assert choose_executor(build_parser().parse_args(["--time", "0"])).name == "in-process"
