"""lr-diagnose: point states (stalled by dead pid or old update), ETAs, partial files, --json, --watch.
The speed verdict and the NVML probe are tested in test_speed.py."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from cs336_basics.assignment_experiments.lr_sweep import diagnose_lr_sweep as diag
from cs336_basics.assignment_experiments.lr_sweep.analyze_lr_sweep import findings
from cs336_basics.assignment_experiments.lr_sweep.gpu_probe import DeviceInfo
from cs336_basics.assignment_experiments.sweep.view import format_table, load_sweep
from cs336_basics.experiment_log.reader import pid_alive
from tests.test_analyze import real_sweep_template

CPU = DeviceInfo(kind="cpu", host="test", note="no NVIDIA driver", cpu_cores=2, load_avg=(0.5, 0.5, 0.5))


@pytest.fixture
def sweep(tmp_path_factory, tmp_path):
    dst = tmp_path / "sweep"
    shutil.copytree(real_sweep_template(tmp_path_factory), dst)
    return dst


@pytest.fixture(autouse=True)
def _all_gpus_visible(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def _set_status(run, **values):
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, **values}))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _make_running(run, **status):
    (run / "summary.json").unlink()
    _set_status(run, state="running", **status)


def _now_iso(seconds_ago: float = 0) -> str:
    return (
        (datetime.now(UTC) - timedelta(seconds=seconds_ago))
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )


def test_json_output_parses_and_counts_points(sweep, capsys):
    capsys.readouterr()
    assert diag.main([str(sweep), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    states = {p["lr"]: p["state"] for p in d["points"]}
    assert states == {1e-3: "finished", 3e-2: "finished", 0.1: "diverged", 0.3: "failed"}
    assert d["sweep"]["points_done"] == 3 and d["sweep"]["eta_s"] == 0.0
    assert d["device"]["kind"] in ("cpu", "cuda", "mps")
    assert d["speed"]["measured_tokens_per_sec"] > 0


def test_text_output_and_stalled_runs(sweep, capsys):
    _make_running(sweep / "lr_1e_03", host=socket.gethostname(), pid=_dead_pid(), updated_at=_now_iso())
    _make_running(sweep / "lr_1e_01", host="elsewhere", pid=1, updated_at=_now_iso(600))
    _make_running(sweep / "lr_3e_02", host="elsewhere", pid=1, updated_at=_now_iso(5), step=10)
    capsys.readouterr()
    assert diag.main([str(sweep), "--stale-after", "120"]) == 0
    out = capsys.readouterr().out
    assert "is gone on this host" in out
    assert re.search(r"no status update for 10\.0 min \(--stale-after 120 s\)", out)
    d = diag.diagnose(sweep, device=CPU)
    by_lr = {p.lr: p for p in d.points}
    assert by_lr[1e-3].state == "interrupted"  # its process is gone here: a fact, not a time threshold
    assert by_lr[0.1].state == "stalled"  # another host, silent for 10 min
    assert by_lr[3e-2].state == "running" and not by_lr[3e-2].live  # another host: not live here


def test_a_killed_run_reads_interrupted_in_every_command(sweep, capsys):
    """status.json still says running, but its process is gone on this host: the sweep table, the analysis
    and lr-diagnose all show it interrupted, with the same reason (one rule, in the run-dir reader)."""
    pid = _dead_pid()
    _make_running(sweep / "lr_1e_03", host=socket.gethostname(), pid=pid, updated_at=_now_iso())
    view = load_sweep(sweep)
    point = view.point(1e-3)
    assert point.state == "interrupted" and point.reason.startswith(f"process {pid} is gone on this host")
    assert re.search(r"^ +0\.001 interrupted ", format_table(view), re.M)
    assert "lr_1e_03: interrupted at step" in "\n".join(findings(view).missing)
    d = diag.diagnose(sweep, device=CPU)
    assert next(p for p in d.points if p.lr == 1e-3).note == point.reason


def test_eta_from_recent_rate(sweep):
    run = sweep / "lr_3e_02"
    _make_running(run, host="elsewhere", pid=1, updated_at=_now_iso(), max_steps=100)
    rows = ["step,tokens,wallclock_s,train_loss,val_loss,lr,grad_norm,tokens_per_sec,ms_per_step"]
    rows += [f"{s},{s * 64},{s * 0.5},{5 - s / 100},,0.01,1.0,128,500" for s in range(10, 60, 10)]
    (run / "metrics.csv").write_text("\n".join(rows) + "\n")
    d = diag.diagnose(sweep, device=CPU)
    p = next(p for p in d.points if p.lr == 3e-2)
    assert p.step == 50 and p.max_steps == 100 and p.percent == pytest.approx(50)
    assert p.steps_per_sec == pytest.approx(2.0) and p.eta_s == pytest.approx(25.0)
    assert p.tokens_per_sec == pytest.approx(128)
    assert d.sweep["remaining_steps"] == 50 and d.sweep["eta_s"] == pytest.approx(25.0)


def test_the_sweep_eta_with_nothing_running_is_never_before_a_points_own(sweep):
    """Two interrupted points (no process): the sweep runs them one at a time at their median rate, and cannot
    end before the slower one does at its own rate; the rate is not said to come from finished points."""
    import dataclasses

    view = load_sweep(sweep)
    base = next(p for p in diag.diagnose(sweep, device=CPU).points if p.state == "finished")
    fast = dataclasses.replace(
        base, state="interrupted", step=90, resume_step=90, max_steps=100, steps_per_sec=10.0, eta_s=1.0
    )
    slow = dataclasses.replace(
        base, state="interrupted", step=0, resume_step=0, max_steps=100, steps_per_sec=1.0, eta_s=100.0
    )
    s = diag.sweep_progress(view, [fast, slow])
    assert s["remaining_steps"] == 110 and s["steps_per_sec"] == pytest.approx(5.5)  # median of 10 and 1
    assert s["eta_s"] == pytest.approx(100.0)  # not 110 / 5.5 = 20 s
    assert s["rate_from"] == "the points' last rates, none running"


def test_partial_files_never_crash(sweep, capsys):
    run = sweep / "lr_1e_03"
    (run / "summary.json").unlink()
    (run / "status.json").write_text('{"state": "runn')  # half-written JSON
    with open(run / "metrics.csv", "a") as f:
        f.write("45,2880,3.")  # half-written CSV line
    (sweep / "lr_3e_02" / "config.json").write_text("")
    capsys.readouterr()
    assert diag.main([str(sweep)]) == 0
    d = diag.diagnose(sweep, device=CPU)
    p = next(p for p in d.points if p.lr == 1e-3)
    assert p.step == 20 and p.train_loss is not None


def test_empty_sweep_dir_and_missing_dir(tmp_path, capsys):
    assert diag.main([str(tmp_path)]) == 1
    assert "nothing here yet" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        diag.main([str(tmp_path / "missing")])
    assert exc.value.code == 2 and capsys.readouterr().err.startswith("error: no sweep directory")


def test_watch_redraws_until_ctrl_c(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_sleep(seconds):
        calls.append(seconds)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(diag.time, "sleep", fake_sleep)
    (tmp_path / "sweep.json").write_text(
        '{"version": 2, "field": "max_lr", "points": [], "state": "running"}'
    )
    assert diag.main(["--watch", str(tmp_path)]) == 0  # --watch without a number takes the default
    out = capsys.readouterr().out
    assert calls == [diag.DEFAULT_WATCH_S] * 2 and out.count(diag.CLEAR_SCREEN) == 2


def test_pid_alive():
    import os

    assert pid_alive(os.getpid())
    assert not pid_alive(_dead_pid())


def test_recent_rates_with_one_row():
    m = pd.DataFrame({"step": [10], "wallclock_s": [5.0], "tokens_per_sec": [100.0]})
    assert diag.recent_rates(m) == (100.0, 2.0)


def test_the_read_only_commands_do_not_import_torch():
    """lr-diagnose, lr-analyze and the sweeps' --summary / --help only read run dirs: importing torch would
    add seconds to every start (and to every --watch start). The sweep commands import it when they train or
    plan; cs336-train when it trains (its --help and a usage mistake answered in 7.4 s with it, 2.4 s without).
    Checked in a fresh interpreter; the package's lazy exports still work."""
    code = (
        "import sys\n"
        "import cs336_basics.assignment_experiments.lr_sweep.diagnose_lr_sweep\n"
        "import cs336_basics.assignment_experiments.lr_sweep.analyze_lr_sweep\n"
        "import cs336_basics.assignment_experiments.lr_sweep.learning_rate_sweep\n"
        "import cs336_basics.assignment_experiments.batch_size.batch_size_sweep\n"
        "from cs336_basics.basics.run_experiment import build_parser\n"
        "build_parser().format_help()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "from cs336_basics.basics import TransformerLM\n"
        "assert TransformerLM.__module__ == 'cs336_basics.basics.model'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_the_speed_verdict_prefers_a_finished_run_to_a_newer_diverged_one(sweep):
    """A point that diverged after a few steps says little about speed; with nothing live, the newest
    *finished* run is the one the verdict reads, even when the diverged one was updated later."""
    view = load_sweep(sweep)
    diverged = next(p for p in view.points if p.state == "diverged")
    _set_status(sweep / diverged.name, updated_at=_now_iso(0))
    for p in view.points:
        if p.state == "finished":
            _set_status(sweep / p.name, updated_at=_now_iso(3600))
    now, host = datetime.now(UTC), socket.gethostname()
    points = [diag.point_status(p, now=now, stale_after=120, host=host) for p in load_sweep(sweep).points]
    dated = [s for s in points if s.updated_s_ago is not None and s.tokens_per_sec is not None]
    assert min(dated, key=lambda s: s.updated_s_ago).state == "diverged"  # the newest is the diverged one
    assert diag.focus_point(load_sweep(sweep), points).state == "finished"


@pytest.mark.parametrize("extend", [True, False])
def test_a_running_sweep_may_grow_only_when_bracketing_is_on(sweep, extend, capsys):
    """--no-extend is recorded in sweep.json: lr-diagnose must not say bracketing may still add points."""
    meta = json.loads((sweep / "sweep.json").read_text())
    (sweep / "sweep.json").write_text(json.dumps({**meta, "state": "running", "extend": extend}))
    assert diag.main([str(sweep)]) == 0
    assert ("(bracketing may still add points)" in capsys.readouterr().out) is extend


def test_the_table_shows_a_small_points_tokens_and_time_as_read(sweep):
    """Tokens below a million are shown whole (they read '0.0M' before), and the time as a duration."""
    metrics = pd.read_csv(sweep / "lr_1e_03" / "metrics.csv")
    tokens = int(metrics["tokens"].dropna().iloc[-1])
    assert tokens < 1e6
    row = next(
        line for line in format_table(load_sweep(sweep)).splitlines() if re.match(r"^.\s+0\.001 ", line)
    )
    assert f" {tokens:,} " in row and re.search(r" \d+\.\d (s|min) ", row)


def test_a_killed_run_counts_its_remaining_steps_from_its_checkpoint(sweep, capsys):
    """kill -9 at step 30 after the step-20 checkpoint: the re-run resumes at step 20, so the reason says so
    and the sweep's remaining steps count from there, not from the last logged step."""
    run = sweep / "lr_1e_03"
    last = int(pd.read_csv(run / "metrics.csv")["step"].max())
    checkpoint, max_steps = last // 2, last + 50
    _make_running(run, host=socket.gethostname(), pid=_dead_pid(), step=last, checkpoint_step=checkpoint,
                  max_steps=max_steps, updated_at=_now_iso())  # fmt: skip
    d = diag.diagnose(sweep, device=CPU)
    p = next(p for p in d.points if p.lr == 1e-3)
    assert p.state == "interrupted" and p.step == last
    assert p.note.endswith(f"re-run to resume it from step {checkpoint} (its last checkpoint)")
    assert d.sweep["remaining_steps"] == max_steps - checkpoint
    _set_status(run, checkpoint_step=None)  # killed before its first checkpoint
    assert load_sweep(sweep).point(1e-3).reason.endswith("(no checkpoint yet: from step 0)")
    assert diag.diagnose(sweep, device=CPU).sweep["remaining_steps"] == max_steps


def test_between_two_points_the_sweep_eta_comes_from_the_finished_points_rate(sweep):
    """A finished point and one not started (no rate, no ETA of its own): the moment between two points of a
    running sweep. lr-diagnose crashed here (max() of one number) when it began bounding the sweep ETA.
    Expected values from the run dirs' own files: the pending point's steps from its config.json, the rate as
    the docs define it (steps/s over the last RECENT_ROWS = 5 log intervals, wallclock-based, of each point
    that logged; with none running, their median), recomputed from the raw metrics.csv."""
    import csv
    import statistics

    run = sweep / "lr_3e_02"
    for name in ("summary.json", "status.json", "metrics.csv"):
        (run / name).unlink()
    view = load_sweep(sweep)
    d = diag.diagnose(sweep, device=CPU)
    pending = next(p for p in d.points if p.lr == 3e-2)
    assert pending.state == "pending" and pending.eta_s is None
    # Remaining: the pending point's whole run (the failed point has no run dir and is not counted).
    max_steps = json.loads((run / "config.json").read_text())["max_steps"]
    assert max_steps == 20  # the fixture's runs (test_analyze.real_sweep_template)
    assert d.sweep["remaining_steps"] == max_steps
    rates = []
    for metrics in sorted(sweep.glob("lr_*/metrics.csv")):  # the finished and the diverged point
        rows = [r for r in csv.DictReader(metrics.open()) if r["wallclock_s"]][-6:]  # 5 intervals: 6 rows
        steps = int(rows[-1]["step"]) - int(rows[0]["step"])
        rates.append(steps / (float(rows[-1]["wallclock_s"]) - float(rows[0]["wallclock_s"])))
    assert len(rates) == 2
    assert d.sweep["rate_from"] == "the points' last rates, none running"
    assert d.sweep["steps_per_sec"] == pytest.approx(statistics.median(rates))
    assert d.sweep["eta_s"] == pytest.approx(max_steps / statistics.median(rates))
    assert view.point(3e-2).state == "pending"
