"""The trainer core's promises: contiguous batch blocks, one device read per log step, provenance, plain log
lines off a terminal, and filesystem failures (bad --out, a full disk, a killed write) as one line."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.overrides import TorchFunctionMode

from cs336_basics.basics.batching import BatchLoader, batch_starts
from cs336_basics.basics.progress import Progress
from cs336_basics.basics.provenance import git_state
from cs336_basics.basics.run_experiment import main as train_main
from cs336_basics.basics.run_experiment import run_experiment
from cs336_basics.data.token_file import write_sidecar
from cs336_basics.experiment_log import load_experiment_log
from tests.conftest import pattern_tokens, tiny_config

ROOT = Path(__file__).resolve().parents[1]


def _train_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "cs336_basics.basics.run_experiment", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=300,
    )


TINY_FLAGS = [
    "--preset", "demo", "--vocab-size", "64", "--context-length", "16", "--d-model", "32", "--d-ff", "64",
    "--num-layers", "1", "--num-heads", "2", "--batch-size", "4", "--log-interval", "5", "--eval-interval", "10",
    "--eval-batches", "2", "--checkpoint-interval", "10", "--device", "cpu", "--dtype", "fp32", "--compile", "off",
]  # fmt: skip


@pytest.fixture
def token_files(tmp_path):
    paths = []
    for name, arr in (("train", pattern_tokens(20_000)), ("valid", pattern_tokens(4_000, seed=1))):
        np.save(tmp_path / f"{name}.npy", arr)
        write_sidecar(
            tmp_path / f"{name}.npy",
            dtype="uint16",
            num_tokens=len(arr),
            vocab_size=64,
            tokenizer_sha256="t",
            source={},
            tokens_sha256=hashlib.sha256(arr.astype("<u2").tobytes()).hexdigest(),
        )
        paths.append(str(tmp_path / f"{name}.npy"))
    return paths


def test_batch_block_is_contiguous_and_equals_a_naive_gather():
    data = pattern_tokens(5_000)
    loader = BatchLoader(data, 4, 16, seed=3, device=torch.device("cpu"))
    try:
        block = loader._host_batch(7)
        assert block.is_contiguous() and block.shape == (4, 17)
        starts = batch_starts(3, 7, len(data) - 16, 4)
        naive = np.stack([data[s : s + 17] for s in starts]).astype(np.int64)
        assert np.array_equal(block.numpy(), naive)
        x, y = loader.get(7)
        assert torch.equal(x, torch.from_numpy(naive[:, :-1])) and torch.equal(
            y, torch.from_numpy(naive[:, 1:])
        )
    finally:
        loader.close()


class _DeviceReads(TorchFunctionMode):
    """Counts tensor -> Python reads (item, tolist, float): on a GPU each is a host sync."""

    READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__float__}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.READS and not any(
            f.filename.endswith("nn/init.py") for f in traceback.extract_stack()
        ):
            self.count += 1  # (weight initialisation's reads happen once, before training)
        return func(*args, **(kwargs or {}))


def test_one_device_read_per_log_step(tmp_path):
    """20 steps, log every 5, no evaluation or checkpoint inside: 1 read at step 1 (the initial loss) + 4 log
    steps x 1 transfer + the final evaluation's 1 read."""
    cfg = tiny_config(
        max_steps=20,
        log_interval=5,
        eval_interval=1000,
        checkpoint_interval=1000,
        sharpness_share=0.0,
        signals=False,
    )
    with _DeviceReads() as reads:
        run_experiment(
            cfg, pattern_tokens(20_000), pattern_tokens(4_000, seed=1), tmp_path / "r", progress=False
        )
    assert reads.count == 1 + 4 + 1


def test_git_state_matches_git_in_a_test_repo(tmp_path):
    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), *args], capture_output=True, text=True, check=True)

    git("init", "-q")
    (tmp_path / "a.txt").write_text("1")
    git("add", "a.txt")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "one")
    head = git("rev-parse", "HEAD").stdout.strip()
    assert git_state(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "a.txt").write_text("2")
    assert git_state(tmp_path) == {"commit": head, "dirty": True}
    assert git_state(tmp_path / "..") is None or git_state(tmp_path / "..")["commit"] != head


def test_the_eta_of_a_plain_line_is_the_runs_pace_since_its_first_log_step(capsys):
    """An interval's own step time swings with each evaluation or measurement; the ETA uses the wallclock since
    the first log step shown (here 10 steps in 100 s: 10 s a step), not the last interval's 0.1 s."""
    progress = Progress("r", start_step=0, max_steps=100, bar=False)
    row = dict(train_loss=3.0, lr=1e-3, tokens_per_sec=1e4, ms_per_step=1000.0)
    progress.update(
        10, {**row, "step": 10, "wallclock_s": 30.0}
    )  # the first line: its own step time, 90 x 1 s
    progress.update(10, {**row, "step": 20, "wallclock_s": 130.0, "ms_per_step": 100.0})  # 80 steps x 10 s
    first, second = capsys.readouterr().out.splitlines()
    assert first.endswith("| eta 90.0 s") and second.endswith("| eta 13.3 min")


def test_provenance_and_plain_lines_off_a_terminal(tmp_path, token_files):
    out = tmp_path / "run"
    result = _train_cli(*TINY_FLAGS, "--max-steps", "20", "--train-data", token_files[0], "--val-data",
                        token_files[1], "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stdout
    step_lines = [line for line in result.stdout.splitlines() if " step " in line and "/20 | loss" in line]
    assert [line.split(" step ")[1].split("/")[0] for line in step_lines] == ["5", "10", "15", "20"]
    info = json.loads((out / "config.json").read_text())
    prov = info["provenance"]
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert prov["git"]["commit"] == head.stdout.strip()
    assert prov["train_data"]["bytes"] == Path(token_files[0]).stat().st_size
    ids = np.load(token_files[0]).astype("<u2").tobytes()  # the run names its ids by their hash
    assert prov["train_data"]["tokens_sha256"] == hashlib.sha256(ids).hexdigest()
    assert prov["command"][-2:] == ["--out", str(out)]
    assert prov["hostname"] and prov["torch"] == torch.__version__
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"mfu", "data_wait_ms"} <= set(header)


def test_resume_without_a_checkpoint_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        train_main(["--preset", "demo", "--out", "run", "--resume"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --resume given but there is no checkpoint at {Path('run/checkpoints/latest.pt')}; "
        "leave out --resume to start"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no run dir, no demo data prepared


def test_a_config_file_with_flags_over_it(tmp_path, token_files):
    """--config gives the fields it lists (the rest from its preset); a flag given beside it wins."""
    flags = dict(zip(TINY_FLAGS[::2], TINY_FLAGS[1::2]))
    file_values = {k[2:].replace("-", "_"): v for k, v in flags.items()}
    file_values = {
        k: v if k in ("preset", "device", "dtype", "compile") else int(v) for k, v in file_values.items()
    }
    (tmp_path / "c.json").write_text(json.dumps({**file_values, "max_steps": 40, "seed": 7}))
    assert train_main(["--config", str(tmp_path / "c.json"), "--max-steps", "10", "--train-data", token_files[0],
                       "--val-data", token_files[1], "--out", str(tmp_path / "run"), "--no-progress"]) == 0  # fmt: skip
    written = json.loads((tmp_path / "run" / "config.json").read_text())
    assert written["max_steps"] == 10 and written["seed"] == 7 and written["d_model"] == 32
    assert written["max_lr"] == 1e-2  # not in the file: the demo preset's


@pytest.mark.parametrize("kind", ["file", "under_file", "too_long", "unwritable"])
def test_bad_out_is_one_line(tmp_path, token_files, kind):
    (tmp_path / "f").write_text("x")
    target = {
        "file": tmp_path / "f",
        "under_file": tmp_path / "f" / "run",
        "too_long": tmp_path / ("x" * 300),
        "unwritable": tmp_path / "ro" / "run",
    }[kind]
    if kind == "unwritable":
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o500)
        if subprocess.run(["test", "-w", str(tmp_path / "ro")]).returncode == 0:
            (tmp_path / "ro").chmod(0o700)
            pytest.skip("running as root: permissions are not enforced")
    result = _train_cli(*TINY_FLAGS, "--max-steps", "5", "--train-data", token_files[0], "--val-data",
                        token_files[1], "--out", str(target))  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")


def test_stale_temp_files_are_cleaned(tmp_path):
    run = tmp_path / "r"
    (run / "checkpoints").mkdir(parents=True)
    stale = run / "checkpoints" / ".latest.pt.abc123.tmp"
    stale.write_bytes(b"")
    run_experiment(
        tiny_config(max_steps=5), pattern_tokens(20_000), pattern_tokens(4_000, seed=1), run, progress=False
    )
    assert not stale.exists()


def _can_mount_tmpfs(path: Path) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)], capture_output=True)
    if ok.returncode == 0:
        subprocess.run(["umount", str(path)])
    return ok.returncode == 0


@pytest.mark.parametrize("size_mb", [3, 20])
def test_full_disk_stops_at_the_next_step_with_one_line(tmp_path, token_files, size_mb):
    """The demo-size model's checkpoints (~11 MB with the optimizer) don't fit: the run stops at the step
    after the failed write, status failed with a 'no space left' reason; after freeing space it resumes."""
    mnt = tmp_path / "mnt"
    if not _can_mount_tmpfs(mnt):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mnt)], check=True)
    try:
        out = mnt / "run"
        flags = ["--preset", "demo", "--vocab-size", "64", "--context-length", "16", "--d-model", "128",
                 "--d-ff", "384", "--num-layers", "4", "--num-heads", "4", "--batch-size", "4", "--device", "cpu",
                 "--dtype", "fp32", "--compile", "off", "--log-interval", "5", "--eval-interval", "10",
                 "--eval-batches", "1", "--checkpoint-interval", "10", "--max-steps", "80", "--sharpness-share", "0",
                 "--train-data", token_files[0], "--val-data", token_files[1], "--out", str(out)]  # fmt: skip
        result = _train_cli(*flags)
        assert result.returncode == 2, result.stdout[-2000:] + result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert "no space left on device writing" in result.stderr and "free space and re-run" in result.stderr
        status = json.loads((out / "status.json").read_text())
        assert status["state"] == "failed" and "no space left" in status["reason"]
        assert status["step"] < (15 if size_mb == 3 else 35)  # the write failed at step 10 or 20 / 30
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)  # "free space"
        again = _train_cli(*flags)
        assert again.returncode == 0, again.stderr
        assert json.loads((out / "summary.json").read_text())["status"] == "finished"
        assert not list((out / "checkpoints").glob(".*.tmp"))
    finally:
        subprocess.run(["umount", str(mnt)])


def test_measurements_do_not_change_the_trajectory(tmp_path):
    """Sharpness (every log step here) and signals on vs off: the same losses, bit for bit; sharpness.csv has
    its columns and a ratio = sharpness / (38 / lr)."""
    train, val = pattern_tokens(20_000), pattern_tokens(4_000, seed=1)
    cols = ["step", "train_loss", "val_loss", "grad_norm"]
    on = run_experiment(
        tiny_config(max_steps=20, sharpness_share=0.99, signals=True),
        train,
        val,
        tmp_path / "on",
        progress=False,
    )
    off = run_experiment(
        tiny_config(max_steps=20, sharpness_share=0.0, signals=False),
        train,
        val,
        tmp_path / "off",
        progress=False,
    )
    assert on["final_train_loss"] == off["final_train_loss"]
    m_on, m_off = (load_experiment_log(tmp_path / d).metrics for d in ("on", "off"))
    assert m_on[cols].equals(m_off[cols])
    assert m_on["logz_mean"].notna().all() and "logz_mean" not in m_off.columns
    sharp = pd.read_csv(tmp_path / "on" / "sharpness.csv")
    assert len(sharp) >= 2 and np.allclose(sharp["threshold"], 38 / sharp["lr"])
    assert np.allclose(sharp["ratio"], sharp["sharpness"] / sharp["threshold"])
    assert len(pd.read_csv(tmp_path / "off" / "sharpness.csv")) == 0


def test_cpu_runs_are_deterministic_without_importing_the_compiler():
    """setup_runtime on CPU turns deterministic mode on (warn-only), and for a run that does not compile it
    does so without importing inductor's config, which took seconds of every run's start; with compile on it
    goes through torch.use_deterministic_algorithms, which also sets inductor's flag. Fresh interpreters, as
    this test process may have imported the compiler already."""
    code = """
import sys, torch
from cs336_basics.basics.device import setup_runtime
setup_runtime("cpu", "fp32", "{compile}", True, 1000)
print("torch._inductor.config" in sys.modules)
import torch._inductor.config as inductor
print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
      inductor.deterministic)
"""
    for compile_flag, inductor_flag in (("off", "False"), ("on", "True")):
        run = [sys.executable, "-c", code.format(compile=compile_flag)]
        out = subprocess.run(run, capture_output=True, text=True, timeout=300, check=True).stdout.split()
        assert out == [str(compile_flag == "on"), "True", "True", inductor_flag], (compile_flag, out)


@pytest.mark.parametrize("given", [{}, {"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "1234"}])
def test_the_packages_wait_policy_reaches_libgomp_and_a_users_own_is_kept(given):
    """Importing the package before torch sets the wait policy before libgomp loads: read from libgomp's own
    report of its settings (its spin count: 0 sleeping at once, 300,000 its default, 30 billion ACTIVE), in
    a fresh interpreter (this one has loaded torch already)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env |= {**given, "OMP_DISPLAY_ENV": "VERBOSE"}
    code = (
        "import os, cs336_basics.basics, torch; torch.ones(8).sum(); print(os.environ.get('OMP_WAIT_POLICY'))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    shown = re.search(r"GOMP_SPINCOUNT = '(\d+)'", run.stderr)
    if shown is None:
        pytest.skip("torch here does not use libgomp (no GOMP_SPINCOUNT in its OpenMP report)")
    policy = run.stdout.split()[-1]
    expected = {"ACTIVE": "30000000000", "PASSIVE": "0", "None": "300000"}[policy]
    assert shown[1] == given.get("GOMP_SPINCOUNT", expected)
    assert policy == given.get("OMP_WAIT_POLICY", policy)  # the user's, else the package's choice


def test_cpu_threads_sleep_while_they_wait_only_on_a_busy_machine():
    """Beside one busy process a demo run trained 16x slower with libgomp's spinning threads, and 27% slower
    on an idle machine with sleeping ones (benchmarks/README.md): the package chooses by the load at start."""
    from cs336_basics import cpu_wait_policy

    assert cpu_wait_policy({}, 0.3, 2) == ({}, None)
    env, note = cpu_wait_policy({}, 1.4, 2)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"} and "load 1.4 on 2 cores" in note
    env, note = cpu_wait_policy({"GOMP_SPINCOUNT": "10"}, 5.0, 2)
    assert env == {} and "GOMP_SPINCOUNT=10" in note
