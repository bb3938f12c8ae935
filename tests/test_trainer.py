"""run_experiment end to end: learning, exact resume, divergence, checkpoints that survive a crash, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from cs336_basics.basics.checkpoint import read_checkpoint
from cs336_basics.basics.run_experiment import main as train_main
from cs336_basics.basics.run_experiment import run_experiment
from cs336_basics.errors import Stopped, UserError, cli_entry
from cs336_basics.experiment_log import load_experiment_log
from tests.conftest import tiny_config

EXACT_COLUMNS = ["step", "tokens", "train_loss", "val_loss", "lr", "grad_norm"]


def _metrics(run_dir):
    return load_experiment_log(run_dir).metrics[EXACT_COLUMNS]


def test_loss_falls_and_run_dir_is_complete(tmp_path, tokens):
    train, val = tokens
    summary = run_experiment(tiny_config(max_steps=60), train, val, tmp_path / "run", progress=False)
    assert summary["status"] == "finished"
    log = load_experiment_log(tmp_path / "run")
    losses = log.metrics["train_loss"].to_numpy()
    assert losses[-1] < 0.7 * losses[0]
    assert summary["final_val_loss"] < np.log(64)
    for name in ("config.json", "metrics.csv", "status.json", "summary.json", "loss_curves.png"):
        assert (tmp_path / "run" / name).stat().st_size > 0
    for name in ("latest.pt", "best.pt", "final.pt"):
        assert (tmp_path / "run" / "checkpoints" / name).exists()
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "finished"
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["runtime"]["dtype"] == "fp32" and config["runtime"]["compile"] is False
    # Eval rows sit at multiples of eval_interval and at the end.
    assert log.eval_rows["step"].tolist() == [10, 20, 30, 40, 50, 60]


def test_finished_run_is_not_retrained(tmp_path, tokens):
    train, val = tokens
    first = run_experiment(tiny_config(max_steps=10), train, val, tmp_path / "run", progress=False)
    mtime = (tmp_path / "run" / "metrics.csv").stat().st_mtime_ns
    again = run_experiment(tiny_config(max_steps=10), train, val, tmp_path / "run", progress=False)
    assert again["final_val_loss"] == first["final_val_loss"]
    assert (tmp_path / "run" / "metrics.csv").stat().st_mtime_ns == mtime


def test_resume_after_crash_equals_uninterrupted(tmp_path, tokens):
    """A crash after the step-20 checkpoint (metrics already logged to 25) resumes to identical numbers."""
    train, val = tokens
    run_experiment(tiny_config(), train, val, tmp_path / "straight", progress=False)

    def crash(step):
        if step >= 25:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        run_experiment(tiny_config(), train, val, tmp_path / "resumed", progress=False, reference_loss=crash)
    assert json.loads((tmp_path / "resumed" / "status.json").read_text())["state"] == "failed"
    assert read_checkpoint(tmp_path / "resumed" / "checkpoints" / "latest.pt")["iteration"] == 20
    run_experiment(tiny_config(), train, val, tmp_path / "resumed", progress=False)
    assert _metrics(tmp_path / "resumed").equals(_metrics(tmp_path / "straight"))


class _InterruptingTokens(np.ndarray):
    """Token array that sends this process ``signum`` (SIGINT: a Ctrl-C) when the batch of step 18 is gathered."""

    calls = 0
    signum = signal.SIGINT

    def __getitem__(self, index):
        if isinstance(index, np.ndarray) and index.ndim == 2:  # a batch gather, once per training step
            type(self).calls += 1
            if type(self).calls == 19:
                os.kill(os.getpid(), type(self).signum)
        return super().__getitem__(index)


class _SecondCtrlC(np.ndarray):
    """Token array whose third batch gather raises KeyboardInterrupt, as a second Ctrl-C does mid-step."""

    def __getitem__(self, index):
        if isinstance(index, np.ndarray) and index.ndim == 2:
            type(self).calls = getattr(type(self), "calls", 0) + 1
            if type(self).calls == 3:
                raise KeyboardInterrupt
        return super().__getitem__(index)


def test_a_stop_before_the_first_checkpoint_says_the_rerun_starts_at_step_0(tmp_path, tokens):
    train, val = tokens
    with pytest.raises(Stopped):
        run_experiment(tiny_config(), train.view(_SecondCtrlC), val, tmp_path / "r", progress=False)
    status = json.loads((tmp_path / "r" / "status.json").read_text())
    assert not (tmp_path / "r" / "checkpoints" / "latest.pt").exists()
    assert status["reason"].endswith("re-run the same command to resume it (no checkpoint yet: from step 0)")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_saves_mid_interval_and_resumes_exactly(tmp_path, tokens, signum, monkeypatch):
    """Ctrl-C (or a kill's SIGTERM) stops at the next step boundary, inside a log interval; the resumed run
    logs exactly the same. The stop names its signal: the command exits 128 + its number."""
    train, val = tokens
    run_experiment(tiny_config(), train, val, tmp_path / "straight", progress=False)
    monkeypatch.setattr(_InterruptingTokens, "calls", 0)
    monkeypatch.setattr(_InterruptingTokens, "signum", signum)
    with pytest.raises(Stopped) as stopped:
        run_experiment(
            tiny_config(), train.view(_InterruptingTokens), val, tmp_path / "resumed", progress=False
        )
    assert stopped.value.signum == signum

    @cli_entry
    def command():
        raise stopped.value

    with pytest.raises(SystemExit) as exited:
        command()
    assert exited.value.code == 128 + signum  # 130 after Ctrl-C, 143 after SIGTERM, as a shell reports them
    stopped_at = read_checkpoint(tmp_path / "resumed" / "checkpoints" / "latest.pt")["iteration"]
    assert 17 <= stopped_at <= 19  # mid-interval (log every 5 steps): partial loss sums are in the checkpoint
    status = json.loads((tmp_path / "resumed" / "status.json").read_text())
    assert status["state"] == "interrupted" and ("SIGTERM" in status["reason"]) == (signum == signal.SIGTERM)
    assert status["checkpoint_step"] == stopped_at  # where the re-run resumes, as lr-diagnose reports it
    assert status["reason"].endswith(
        f"re-run the same command to resume it from step {stopped_at} (its last checkpoint)"
    )
    run_experiment(tiny_config(), train, val, tmp_path / "resumed", progress=False)
    assert _metrics(tmp_path / "resumed").equals(_metrics(tmp_path / "straight"))


def test_divergent_learning_rate_is_stopped_early(tmp_path, tokens):
    train, val = tokens
    summary = run_experiment(
        tiny_config(max_steps=200, max_lr=5.0, log_interval=5), train, val, tmp_path / "run", progress=False
    )
    assert summary["status"] == "diverged"
    assert summary["reason"]
    assert summary["steps"] < 200
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "diverged"


def test_stall_against_smaller_learning_rate_is_divergence(tmp_path, tokens):
    train, val = tokens
    summary = run_experiment(
        tiny_config(max_steps=40),
        train,
        val,
        tmp_path / "run",
        progress=False,
        reference_loss=lambda step: 0.01,
    )
    assert summary["status"] == "diverged"
    assert "smaller learning rate" in summary["reason"]
    assert summary["steps"] == 20  # first log step at or after 50% of 40 steps


def test_checkpoint_survives_kill_during_write(tmp_path):
    """A process killed (SIGKILL) while rewriting a checkpoint leaves the last complete one readable."""
    path = tmp_path / "ckpt.pt"
    script = textwrap.dedent(f"""
        import torch
        from cs336_basics.basics.checkpoint import save_checkpoint
        model = torch.nn.Linear(2048, 4096)
        opt = torch.optim.AdamW(model.parameters())
        i = 0
        while True:
            save_checkpoint(model, opt, i, {str(path)!r})
            i += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 300  # importing torch takes long on a loaded 2-core machine
    while not path.exists() and time.time() < deadline:
        time.sleep(0.05)

    # Kill it while a rewrite is under way: its temp file (.ckpt.pt.*.tmp) is there and has data in it.
    def writing() -> bool:
        try:
            return any(t.stat().st_size > 0 for t in tmp_path.glob(".ckpt.pt.*.tmp"))
        except FileNotFoundError:  # renamed into place between the glob and the stat
            return False

    while not writing() and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob(".ckpt.pt.*.tmp")), "the kill did not land during a write"
    ckpt = read_checkpoint(path)
    assert ckpt["model"]["weight"].shape == (4096, 2048)
    assert isinstance(ckpt["iteration"], int)


def test_incompatible_checkpoint_is_refused(tmp_path, tokens):
    train, val = tokens

    def crash(step):
        if step >= 10:  # after the step-5 checkpoint
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        run_experiment(
            tiny_config(checkpoint_interval=5),
            train,
            val,
            tmp_path / "run",
            progress=False,
            reference_loss=crash,
        )
    with pytest.raises(UserError, match="different config"):
        run_experiment(tiny_config(d_model=64), train, val, tmp_path / "run", progress=False)
    # From its files (no arrays given) the data would be prepared first (for TinyStories: a download):
    # the other config is refused before, and nothing is prepared.
    data_dir = tmp_path / "data"
    with pytest.raises(UserError, match="different config"):
        run_experiment(tiny_config(d_model=64, dataset="demo", data_dir=str(data_dir)), out_dir=tmp_path / "run",
                       progress=False)  # fmt: skip
    assert not data_dir.exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(train=np.array([1, 2, 70] * 100, dtype=np.uint16)), "token id 70 >= vocab size 64"),
        (dict(train=np.arange(10, dtype=np.uint16)), "fewer than one window"),
        (dict(config=dict(max_lr=-1.0)), r"--max-lr \(--lr\) must be a finite number > 0"),
        (dict(config=dict(device="tpu")), "unknown device|unsupported device"),
        (dict(config=dict(batch_size=0)), "--batch-size must be > 0"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, tokens, kwargs, message):
    train, val = tokens
    with pytest.raises(UserError, match=message):
        run_experiment(
            tiny_config(**kwargs.get("config", {})),
            kwargs.get("train", train),
            val,
            tmp_path / "r",
            progress=False,
        )


def test_one_window_of_data_is_enough_and_less_is_refused():
    """context_length + 1 tokens are one window (inputs and their next tokens): the loader draws it, so
    the data check takes it (it refused it); one token fewer is refused."""
    import torch

    from cs336_basics.basics.batching import BatchLoader
    from cs336_basics.data.run_data import load_run_data

    cfg = tiny_config()
    window = np.arange(cfg.context_length + 1, dtype=np.uint16) % cfg.vocab_size
    train, _, _ = load_run_data(cfg, window, window)
    loader = BatchLoader(train, 2, cfg.context_length, seed=0, device=torch.device("cpu"))
    x, y = loader.get(0)
    loader.close()
    assert x.tolist() == [window[:-1].tolist()] * 2 and y.tolist() == [window[1:].tolist()] * 2
    with pytest.raises(UserError, match="fewer than one window"):
        load_run_data(cfg, window[:-1], window)


def _cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        train_main(args)
    err = capsys.readouterr().err.strip().splitlines()
    return exc.value.code, err


def test_cli_errors_are_one_line(tmp_path, capsys):
    code, err = _cli(["--preset", "demo", "--lr", "0", "--out", str(tmp_path / "r")], capsys)
    assert (
        code == 2
        and len(err) == 1
        and err[0].startswith("error: --max-lr (--lr) must be a finite number > 0")
    )
    code, err = _cli(
        [
            "--preset",
            "demo",
            "--train-data",
            str(tmp_path / "missing.npy"),
            "--val-data",
            str(tmp_path / "missing.npy"),
            "--out",
            str(tmp_path / "r"),
        ],
        capsys,
    )
    assert code == 2 and len(err) == 1 and "missing.npy" in err[0]
    code, err = _cli(["--preset", "nope"], capsys)
    assert code == 2 and "invalid choice: 'nope'" in err[-1]


def test_device_auto_is_recorded(tmp_path, tokens):
    train, val = tokens
    run_experiment(
        tiny_config(max_steps=5, device="auto", dtype="auto"), train, val, tmp_path / "r", progress=False
    )
    runtime = json.loads((tmp_path / "r" / "config.json").read_text())["runtime"]
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert runtime["device"].startswith(expected)
    assert runtime["notes"]


def test_run_config_json_rederives_schedule(tmp_path, tokens):
    """Reusing a run's config.json with a new lr re-derives min_lr/warm-up instead of keeping the old ones."""
    from cs336_basics.basics.config import ExperimentConfig

    train, val = tokens
    run_experiment(tiny_config(max_steps=10, max_lr=1e-2), train, val, tmp_path / "r", progress=False)
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["min_lr"] == pytest.approx(1e-3) and set(saved["derived_fields"]) >= {
        "min_lr",
        "warmup_steps",
    }
    cfg = ExperimentConfig.load(tmp_path / "r" / "config.json")
    cfg.max_lr, cfg.max_steps = 3e-4, 40
    resolved = cfg.resolved()
    assert (
        resolved.min_lr == pytest.approx(3e-5)
        and resolved.warmup_steps == 4
        and resolved.cosine_cycle_steps == 39
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(batch_size="16"), "must be int"),
        (dict(max_lr=float("inf")), r"--max-lr \(--lr\) must be a finite number > 0"),
        (dict(beta2=1.0), r"--beta2 must be a finite number in \[0, 1\)"),
        (dict(dtype="fp16"), "--dtype must be one of"),
    ],
)
def test_config_values_are_checked(overrides, message):
    with pytest.raises(UserError, match=message):
        tiny_config(**overrides).resolved()


def test_a_cpu_run_resumed_on_another_thread_count_says_its_numbers_will_differ(tmp_path, tokens, capsys):
    """--concurrent splits the cores, so a point may resume on fewer threads than it started on: the banner
    and config.json's runtime notes say so (a reduction split over other threads rounds differently)."""
    train, val = tokens
    out = tmp_path / "run"

    def crash(step):
        if step >= 25:
            raise RuntimeError("simulated crash")

    threads = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_experiment(tiny_config(), train, val, out, progress=False, reference_loss=crash)
    other = 1 if threads > 1 else 2
    torch.set_num_threads(other)
    try:
        run_experiment(tiny_config(), train, val, out, progress=True)
    finally:
        torch.set_num_threads(threads)
    note = f"resumed on {other} CPU thread(s), {threads} before"
    assert note in capsys.readouterr().out
    runtime = json.loads((out / "config.json").read_text())["runtime"]
    assert runtime["threads"] == other and any(n.startswith(note) for n in runtime["notes"])
    run_experiment(tiny_config(), train, val, tmp_path / "same", progress=False)  # not resumed: no such note
    notes = json.loads((tmp_path / "same" / "config.json").read_text())["runtime"]["notes"]
    assert not [n for n in notes if n.startswith("resumed on")]
