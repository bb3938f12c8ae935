"""The sweep plan: a real (tiny) measurement, consistent arithmetic, no files written, a full disk reported;
printed by every sweep before any work, and a too-small disk stops the sweep there."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from cs336_basics.assignment_experiments.lr_sweep.learning_rate_sweep import main as sweep_main
from cs336_basics.assignment_experiments.lr_sweep.plan import (
    Measurement,
    Plan,
    expected_rate,
    format_plan,
    make_plan,
    schedule,
)
from cs336_basics.assignment_experiments.sweep.disk import DEMO_DATA_BYTES, DiskNeed, check_disk
from cs336_basics.basics.config import ExperimentConfig
from tests.test_sweep import demo_data_dir  # noqa: F401 (fixture)
from tests.test_sweep_engine import _one_line_exit_2, _tiny


def tiny(tmp_path: Path, **overrides) -> ExperimentConfig:
    values = dict(
        preset="demo",
        dataset="demo",
        data_dir=str(tmp_path / "data"),
        vocab_size=64,
        context_length=16,
        d_model=16,
        d_ff=32,
        num_layers=1,
        num_heads=2,
        batch_size=2,
        max_steps=40,
        eval_interval=10,
        eval_batches=2,
        log_interval=10,
        checkpoint_interval=20,
        device="cpu",
        dtype="fp32",
        compile="off",
    )
    return ExperimentConfig(**{**values, **overrides}).resolved()


def points(tmp_path: Path, lrs=(1e-3, 3e-3)) -> list[tuple[str, ExperimentConfig]]:
    base = tiny(tmp_path)
    return [(f"lr_{lr:g}", dataclasses.replace(base, max_lr=lr, min_lr=0.1 * lr)) for lr in lrs]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else ["<absent>"]


def test_plan_writes_nothing_and_is_consistent(tmp_path):
    out = tmp_path / "sweep"
    pts = points(tmp_path)
    two = make_plan(pts, out, done=set(), extra_points=0, measure_steps=3)
    assert not out.exists() and not (tmp_path / "data").exists()
    out.mkdir()
    (out / "keep.txt").write_text("x")
    make_plan(pts[:1], out, done=set(), extra_points=0, measure_steps=2)
    assert tree(out) == ["keep.txt"]

    assert len(two.measurements) == 1  # the points differ only in learning rate: timed once
    m = two.measurements[0]
    assert m.timed_steps == 3 and m.warmup_steps == 1 and m.step_s > 0 and m.forward_s > 0
    assert m.tokens_per_sec == pytest.approx(2 * 16 / m.step_s)
    # Checkpoint sizes against the model itself: fp32 weights, AdamW's two moments per parameter.
    n = m.params
    assert m.model_bytes == 4 * n and m.optimizer_bytes == pytest.approx(8 * n, rel=0.01)

    p = two.points[0]
    assert p.evals == 4 and p.tokens == 40 * 32
    assert p.train_s == pytest.approx(40 * m.step_s) and p.eval_s == pytest.approx(4 * 2 * m.forward_s)
    # The stability measurements take sharpness_share of the wallclock (the config's default, 5%).
    assert p.measure_s / (p.train_s + p.eval_s + p.measure_s) == pytest.approx(0.05)
    assert p.seconds > 0 and two.remaining_s == pytest.approx(2 * p.seconds)
    on_two_slots = dataclasses.replace(two, slots=2)
    assert schedule([pt.seconds for pt in on_two_slots.points], 2) == pytest.approx(p.seconds)
    assert "1 warm-up step" in format_plan(two) and "3 timed step(s)" in format_plan(two)


def test_done_points_excluded_and_extra_points_counted(tmp_path):
    pts = points(tmp_path, (1e-3, 3e-3, 1e-2))
    plan = make_plan(pts, tmp_path / "sweep", done={"lr_0.001"}, extra_points=2, measure_steps=2)
    per_point = plan.points[1].seconds
    assert plan.points[0].done and plan.points[0].seconds == 0
    assert plan.remaining_s == pytest.approx(2 * per_point)
    assert plan.with_extra_s == pytest.approx(4 * per_point)
    text = format_plan(plan)
    assert "lr_0.001       done" in text and "1 already done" in text and "bracketing adds 2" in text
    # Disk: checkpoints of the two points to run (not the done one), the bracketing points, and the demo data.
    assert [d.what for d in plan.disk] == [
        "lr_0.003 checkpoints",
        "lr_0.01 checkpoints",
        "demo data (text, tokenizer, tokens)",
    ]
    assert plan.disk[-1].bytes == DEMO_DATA_BYTES and plan.disk_ok


def test_nothing_is_timed_when_every_point_is_done(tmp_path):
    pts = points(tmp_path)
    plan = make_plan(pts, tmp_path / "sweep", done={name for name, _ in pts}, extra_points=2)
    assert plan.measurements == [] and plan.remaining_s == 0 and plan.disk_ok
    text = format_plan(plan)
    assert "every point is done" in text and "bracketing may add 2 point(s) (not timed)" in text
    assert "measured" not in text


def _gpu_measurement(device_name: str, dtype: str) -> Measurement:
    return Measurement(banner="", notes=[], warmup_steps=1, timed_steps=1, step_s=1.0, tokens_per_sec=1.0,
                       warmup_s=1.0, forward_s=0.1, eval_warmup_s=0.0, params=0, model_bytes=0, optimizer_bytes=0,
                       device_name=device_name, device_type="cuda", dtype=dtype)  # fmt: skip


def test_expected_rate_on_a_known_card_by_hand(tmp_path):
    """H100 SXM bf16: 989.4 TFLOP/s dense x 23% MFU / FLOPs per token. The tiny model (V=64, T=16, d=16,
    d_ff=32, L=1): N = 4*16^2 + 3*16*32 + 2*16 + 16 + 16*64 = 3632; 6N + 12*L*d*T = 21792 + 3072 = 24864."""
    rate, note = expected_rate(tiny(tmp_path), _gpu_measurement("NVIDIA H100 80GB HBM3", "bf16"))
    assert rate == pytest.approx(989.4e12 * 0.23 / 24864)
    assert note == "989 TFLOP/s bf16 peak x 23% realistic MFU"
    rate, note = expected_rate(tiny(tmp_path), _gpu_measurement("NVIDIA H100 80GB HBM3", "fp32"))
    assert rate is None and "no measured or cited MFU for fp32" in note
    rate, note = expected_rate(tiny(tmp_path), _gpu_measurement("Some Unknown GPU", "bf16"))
    assert rate is None and "no dense bf16 peak" in note


def test_a_cpu_timing_under_load_says_so(tmp_path):
    """The plan's times scale with what else runs on the CPU: a timing at load 6 on 2 cores says so."""

    def plan_text(load: float) -> str:
        m = dataclasses.replace(
            _gpu_measurement("cpu", "fp32"), device_type="cpu", load_average=load, cores=2
        )
        return format_plan(Plan(tmp_path, [], [m], slots=1, extra_points=0, extra_point_s=0.0, remaining_s=0.0,
                                with_extra_s=0.0))  # fmt: skip

    assert "timed at load average 6.0 on 2 core(s): other processes share this CPU" in plan_text(6.0)
    assert "load average" not in plan_text(0.2)


def test_schedule_on_slots():
    assert schedule([3.0, 1.0, 1.0, 1.0], 2) == 3.0
    assert schedule([2.0, 2.0, 2.0], 1) == 6.0
    assert schedule([2.0, 2.0, 2.0], 3) == 2.0


def test_disk_check_against_statvfs(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    os_free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    [fits] = check_disk([DiskNeed("a", tmp_path / "not" / "yet", 10), DiskNeed("b", tmp_path, 5)])
    assert fits.ok and fits.needed == 15 and abs(fits.free - os_free) < 1 << 24
    [full] = check_disk([DiskNeed("huge", tmp_path / "x", free + (1 << 30))])
    assert not full.ok
    # The filesystem is named by its mount point, as df names it (not by the nearest existing folder).
    df = subprocess.run(["df", "--output=target", str(tmp_path)], capture_output=True, text=True, check=True)
    assert full.mount == Path(df.stdout.splitlines()[-1].strip())


@pytest.fixture
def tiny_fs(tmp_path):
    """A real 64 KiB filesystem (tmpfs), if this machine lets us mount one (root on Linux)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_tiny_out_filesystem_reported(tmp_path, tiny_fs):
    out = tiny_fs / "sweep"
    plan = make_plan(points(tmp_path)[:1], out, done=set(), extra_points=0, measure_steps=1)
    assert not plan.disk_ok and not out.exists()
    [small] = [c for c in plan.disk_checks if c.mount == tiny_fs]
    assert small.free <= 64 * 1024 < small.needed
    assert f"NOT ENOUGH ROOM under {tiny_fs}" in format_plan(plan)


def test_lr_sweep_plan_flag_prints_and_creates_nothing(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "sweep"
    flags = ["--preset", "demo", "--vocab-size", "64", "--context-length", "16", "--d-model", "32", "--d-ff", "64",
             "--num-layers", "1", "--num-heads", "2", "--batch-size", "4", "--max-steps", "20", "--device", "cpu",
             "--dtype", "fp32", "--compile", "off", "--learning-rates", "1e-3", "1e-2"]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "cs336_basics.assignment_experiments.lr_sweep.learning_rate_sweep", *flags,
         "--plan", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "2 point(s), 0 already done" in result.stdout and "tokens/s" in result.stdout
    assert not out.exists()


def test_every_sweep_prints_its_plan_before_any_work(tmp_path, demo_data_dir, capsys):  # noqa: F811
    out = tmp_path / "my sweep"
    args = _tiny(demo_data_dir, out, 1e-2, steps=5)
    assert sweep_main(args) == 0
    printed = capsys.readouterr().out
    assert printed.index(f"plan for {out}: 1 point(s), 0 already done") < printed.index("=== lr_1e_02 ===")
    assert f"next: lr-diagnose '{out}'   |   lr-analyze '{out}'" in printed  # pastes into a shell as printed
    assert "measured" in printed and "lr_1e_02       320 tokens (5 steps): " in printed
    # Run again: the plan says every point is done and times nothing.
    assert sweep_main(args) == 0
    printed = capsys.readouterr().out
    assert (
        f"plan for {out}: 1 point(s), 1 already done" in printed and "sweep: every point is done" in printed
    )
    assert "measured" not in printed


def test_tiny_out_filesystem_stops_the_sweep_before_it_starts(tmp_path, tiny_fs, demo_data_dir, capsys):  # noqa: F811
    out = tiny_fs / "sweep"
    error = _one_line_exit_2(capsys, sweep_main, _tiny(demo_data_dir, out, 1e-3, 1e-2, steps=5))
    assert error.startswith(f"error: not enough disk space under {tiny_fs} for this sweep: ")
    assert not out.exists()  # refused before anything but its lock: the sweep dir made for it goes again


def test_prepared_data_is_not_counted_again(tmp_path):
    """Once prepare_dataset has written the token files (in their vocab/BPE folder), the plan needs no disk
    for the data; before, it looked for them one folder up and always counted them."""
    from cs336_basics.assignment_experiments.sweep.disk import data_needs
    from cs336_basics.data import prepare_dataset

    cfg = tiny(tmp_path, vocab_size=300)
    assert [n.what for n in data_needs(cfg)] == ["demo data (text, tokenizer, tokens)"]
    prepare_dataset("demo", cfg.data_dir, vocab_size=300, progress=False)
    assert data_needs(cfg) == []
    assert data_needs(tiny(tmp_path, vocab_size=400)) != []  # another vocabulary is another set of files


def test_a_point_that_resumes_is_timed_from_its_checkpoint(tmp_path):
    """A point killed after its step-20 checkpoint (of 40) has 20 steps and 2 evaluations left: the plan times
    those, says where it resumes, and still times a bracketing point from step 0."""
    pts = points(tmp_path, (1e-3, 3e-3))
    run = tmp_path / "sweep" / "lr_0.003"
    run.mkdir(parents=True)
    (run / "status.json").write_text(json.dumps({"state": "interrupted", "step": 25, "checkpoint_step": 20}))
    plan = make_plan(pts, tmp_path / "sweep", done=set(), extra_points=1, measure_steps=2)
    fresh, resumed = plan.points
    m = plan.measurements[0]
    assert (fresh.start, resumed.start) == (0, 20) and (fresh.evals, resumed.evals) == (4, 2)
    assert resumed.train_s == pytest.approx(20 * m.step_s) and fresh.train_s == pytest.approx(40 * m.step_s)
    assert plan.extra_point_s == pytest.approx(fresh.run_s)
    assert "lr_0.003       1,280 tokens (40 steps, resumes at step 20)" in format_plan(plan)


def test_checkpoint_bytes_match_what_a_run_writes(tmp_path):
    """The disk check's checkpoint size against a real run's latest.pt + best.pt + final.pt: within 5% once
    the weights outweigh each file's fixed framing (config, train state, pickle: about 5 to 15 KB)."""
    from cs336_basics.basics.run_experiment import run_experiment

    name, cfg = points(tmp_path)[0]
    cfg = dataclasses.replace(cfg, d_model=64, d_ff=128)  # 49k parameters: 1.4 MB of checkpoints
    plan = make_plan([(name, cfg)], tmp_path / "sweep", done=set(), extra_points=0, measure_steps=2)
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, 4000).astype(np.uint16)
    run_experiment(cfg, tokens, tokens[:1000], out_dir=tmp_path / "run", progress=False)
    written = sum(p.stat().st_size for p in (tmp_path / "run" / "checkpoints").glob("*.pt"))
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("*.pt")) == [
        "best.pt",
        "final.pt",
        "latest.pt",
    ]
    assert plan.measurements[0].checkpoint_bytes == pytest.approx(written, rel=0.05)


def test_a_done_sweep_that_brackets_its_best_lr_plans_no_bracketing(tmp_path):
    """lr-sweep --plan on a finished, bracketed sweep said 'bracketing may add up to 3'; the run adds none."""
    from cs336_basics.assignment_experiments.lr_sweep.learning_rate_sweep import sweep_plan
    from cs336_basics.assignment_experiments.sweep.executors import InProcessExecutor
    from tests.test_stability_report import write_run

    sweep = tmp_path / "sweep"
    for lr, val in ((1e-3, 1.5), (3e-3, 1.2), (1e-2, 1.4)):
        write_run(sweep, lr, final_val=val)
    pts = points(tmp_path, (1e-3, 3e-3, 1e-2))
    names = {name for name, _ in pts}
    assert sweep_plan(pts, names, sweep, 3, InProcessExecutor()).extra_points == 3  # nothing diverged yet
    write_run(sweep, 3e-2, final_val=None, steps=20, reason="exploded")
    pts += points(tmp_path, (3e-2,))
    assert sweep_plan(pts, names | {"lr_0.03"}, sweep, 3, InProcessExecutor()).extra_points == 0
    assert sweep_plan(pts, names, sweep, 3, InProcessExecutor()).extra_points == 3  # one still to run
