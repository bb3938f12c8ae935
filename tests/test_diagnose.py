"""lr-diagnose: point states (stalled by dead pid or old update), ETAs, partial files, --json, --watch, and the
speed verdict's arithmetic and ranked causes on fake device snapshots."""

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
from cs336_basics.assignment_experiments.lr_sweep.device_probe import DeviceInfo, GpuInfo, parse_smi_gpus
from cs336_basics.assignment_experiments.lr_sweep.speed_verdict import RunFacts, speed_verdict
from cs336_basics.basics import hardware
from tests.test_analyze import real_sweep_template

CPU = DeviceInfo(
    kind="cpu", host="test", source="none", cuda_available=False, cpu_cores=2, load_avg=(0.5, 0.5, 0.5)
)
H100 = "NVIDIA H100 80GB HBM3"


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
    assert re.search(r"no status update for 10m0\ds \(--stale-after 120 s\)", out)
    d = diag.diagnose(sweep, device=CPU)
    by_lr = {p.lr: p for p in d.points}
    assert by_lr[1e-3].state == by_lr[0.1].state == "stalled"
    assert by_lr[3e-2].state == "running" and not by_lr[3e-2].live  # another host: not live here


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


def test_partial_files_never_crash(sweep, capsys):
    run = sweep / "lr_1e_03"
    (run / "summary.json").unlink()
    (run / "status.json").write_text('{"state": "runn')  # half-written JSON
    with open(run / "metrics.csv", "a") as f:
        f.write("45,2880,3.")  # half-written CSV line
    (sweep / "lr_3e_02" / "config.json").write_text("")
    (sweep / "sweep.json").write_text("{")
    capsys.readouterr()
    assert diag.main([str(sweep)]) == 0
    d = diag.diagnose(sweep, device=CPU)
    p = next(p for p in d.points if p.lr == 1e-3)
    assert p.step == 20 and p.train_loss is not None


def test_empty_sweep_dir_and_missing_dir(tmp_path, capsys):
    assert diag.main([str(tmp_path)]) == 0
    assert "no learning rate has started yet" in capsys.readouterr().out
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
    assert diag.main(["--watch", str(tmp_path)]) == 0  # --watch without a number takes the default
    out = capsys.readouterr().out
    assert calls == [diag.DEFAULT_WATCH_S] * 2 and out.count(diag.CLEAR_SCREEN) == 2


def _facts(**overrides) -> RunFacts:
    values = dict(
        name="lr_1e_03", vocab_size=10_000, context_length=256, d_model=512, num_layers=4, d_ff=1344,
        batch_size=128, device="cuda:0", device_name=H100, dtype="bf16", tf32=True, compile=True,
        measured_tokens_per_sec=100_000.0, pid=123, live=True,
    )  # fmt: skip
    values.update(overrides)
    return RunFacts(**values)


def _gpu_device(**gpu) -> DeviceInfo:
    g = dict(index=0, name=H100, memory_total_mib=81_559, utilization_pct=98, temperature_c=60,
             sm_clock_mhz=1980, max_sm_clock_mhz=1980, processes=[{"pid": 123, "used_mib": 9000}])  # fmt: skip
    g.update(gpu)
    return DeviceInfo(kind="cuda", host="test", source="nvml", cuda_available=True, gpus=[GpuInfo(**g)])


def test_expected_throughput_arithmetic(monkeypatch):
    run = _facts()
    fpt = hardware.flops_per_token(
        vocab_size=10_000, context_length=256, d_model=512, num_layers=4, d_ff=1344
    )
    v = speed_verdict(run, _gpu_device())
    peak = hardware.peak_flops(H100, "bf16")
    assert v.precision == "bf16" and v.peak_flops == peak and v.flops_per_token == fpt
    assert v.expected_tokens_per_sec == pytest.approx(peak * hardware.REALISTIC_MFU / fpt)
    assert v.ratio == pytest.approx(100_000 / v.expected_tokens_per_sec)
    assert v.mfu == pytest.approx(100_000 * fpt / peak)
    # A known peak: 100 TFLOP/s at the realistic utilisation.
    monkeypatch.setattr(hardware, "peak_flops", lambda name, dtype: 100e12)
    v = speed_verdict(run, _gpu_device())
    assert v.expected_tokens_per_sec == pytest.approx(100e12 * hardware.REALISTIC_MFU / fpt)
    # fp32 + TF32 looks up the tf32 column
    seen = []
    monkeypatch.setattr(hardware, "peak_flops", lambda name, dtype: seen.append(dtype) or 50e12)
    speed_verdict(_facts(dtype="fp32", tf32=True), _gpu_device())
    assert "tf32" in seen


def test_slow_run_causes_ranked():
    run = _facts(dtype="fp32", tf32=False, compile=False, batch_size=4, measured_tokens_per_sec=2_000.0,
                 eval_s=30.0, checkpoint_s=10.0, wallclock_s=100.0)  # fmt: skip
    device = _gpu_device(utilization_pct=35, sm_clock_mhz=1100, temperature_c=88,
                         processes=[{"pid": 123, "used_mib": 1}, {"pid": 999, "used_mib": 5000}])  # fmt: skip
    v = speed_verdict(run, device)
    assert v.verdict == "slow" and v.ratio < 0.5
    keys = [c.key for c in v.causes]
    assert set(keys) == {"fp32", "compile", "batch", "input-bound", "throttling", "shared-gpu", "overhead"}
    assert keys[0] == "fp32"
    factors = [c.factor for c in v.causes]
    assert factors == sorted(factors, reverse=True)
    # Not live: the device snapshot is not used to explain the run.
    v = speed_verdict(_facts(live=False, measured_tokens_per_sec=2_000.0), device)
    assert {c.key for c in v.causes}.isdisjoint({"input-bound", "throttling", "shared-gpu"})


def test_fast_run_is_ok():
    run = _facts()
    expected = speed_verdict(run, _gpu_device()).expected_tokens_per_sec
    v = speed_verdict(_facts(measured_tokens_per_sec=expected), _gpu_device())
    assert v.verdict == "ok" and v.ratio == pytest.approx(1.0) and v.causes == []


def test_cpu_and_unknown_gpu_have_no_expected_rate():
    v = speed_verdict(_facts(device="cpu", device_name="x86_64", dtype="fp32", tf32=False), CPU)
    assert v.expected_tokens_per_sec is None and v.verdict == "unknown"
    assert any("no peak-FLOP/s table for CPU" in n for n in v.notes)
    assert any("GFLOP/s of model math" in n for n in v.notes)
    v = speed_verdict(_facts(device_name="Mystery GPU 9000"), _gpu_device(name="Mystery GPU 9000"))
    assert v.expected_tokens_per_sec is None and any("not in the peak table" in n for n in v.notes)


def test_overhead_estimated_from_metrics_when_summary_lacks_it(sweep):
    from cs336_basics.experiment_log import load_experiment_log

    run = sweep / "lr_1e_03"
    (run / "summary.json").unlink()
    facts = RunFacts.from_log(load_experiment_log(run))
    m = load_experiment_log(run).metrics
    step_s = float((m["step"].diff().fillna(m["step"].iloc[0]) * m["ms_per_step"]).sum()) / 1e3
    assert facts.eval_s is None and facts.overhead_s == pytest.approx(m["wallclock_s"].iloc[-1] - step_s)
    assert facts.overhead_share == pytest.approx(facts.overhead_s / m["wallclock_s"].max())


def test_nvidia_smi_parsing_tolerates_missing_fields():
    text = "0, GPU-abc, NVIDIA A100-SXM4-40GB, 1000, 40960, 97, 71, 1410, 1410, [N/A], 400.00\n"
    (g,) = parse_smi_gpus(text)
    assert g.name == "NVIDIA A100-SXM4-40GB" and g.memory_total_mib == 40960 and g.power_w is None
    assert g.utilization_pct == 97 and g.sm_clock_mhz == g.max_sm_clock_mhz == 1410
    assert parse_smi_gpus("garbage\n") == []


def test_pid_alive():
    import os

    assert diag.pid_alive(os.getpid())
    assert not diag.pid_alive(_dead_pid())


def test_recent_rates_with_one_row():
    m = pd.DataFrame({"step": [10], "wallclock_s": [5.0], "tokens_per_sec": [100.0]})
    assert diag.recent_rates(m) == (100.0, 2.0)


def test_nvml_probe_with_a_fake_driver(monkeypatch):
    import types

    from cs336_basics.assignment_experiments.lr_sweep import device_probe

    class NotSupported(Exception):
        pass

    def unsupported(*_):
        raise NotSupported("not supported")

    ns = types.SimpleNamespace
    fake = ns(
        NVML_TEMPERATURE_GPU=0,
        NVML_CLOCK_SM=1,
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: f"h{i}",
        nvmlDeviceGetName=lambda h: b"NVIDIA H100 80GB HBM3",
        nvmlDeviceGetUUID=lambda h: "GPU-1234",
        nvmlDeviceGetMemoryInfo=lambda h: ns(used=2 * 2**30, total=80 * 2**30),
        nvmlDeviceGetUtilizationRates=lambda h: ns(gpu=42),
        nvmlDeviceGetTemperature=lambda h, kind: 77,
        nvmlDeviceGetClockInfo=lambda h, kind: 1500,
        nvmlDeviceGetMaxClockInfo=lambda h, kind: 1980,
        nvmlDeviceGetPowerUsage=unsupported,
        nvmlDeviceGetEnforcedPowerLimit=lambda h: 700_000,
        nvmlDeviceGetCurrentClocksEventReasons=lambda h: 0x04 | 0x20,
        nvmlDeviceGetComputeRunningProcesses=lambda h: [ns(pid=55, usedGpuMemory=2**30)],
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    gpus, why = device_probe.probe_nvml()
    assert why is None and len(gpus) == 1
    g = gpus[0]
    assert g.name == "NVIDIA H100 80GB HBM3" and g.uuid == "GPU-1234"
    assert g.memory_total_mib == 80 * 1024 and g.utilization_pct == 42 and g.temperature_c == 77
    assert (g.sm_clock_mhz, g.max_sm_clock_mhz, g.power_w, g.power_limit_w) == (1500, 1980, None, 700)
    assert set(g.throttle_reasons) == {"power cap", "thermal (software)"}
    assert g.processes == [{"pid": 55, "used_mib": 1024}]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1234")
    info = DeviceInfo(kind="cuda", host="h", source="nvml", gpus=gpus)
    assert info.gpu(0) is g
    text = "\n".join(device_probe.format_device(info))
    assert "util 42%" in text and "SM clock 1500/1980 MHz" in text and "power ?/700 W" in text


def test_the_run_s_gpu_is_found_by_pid():
    """A sweep pins each run to its GPU with CUDA_VISIBLE_DEVICES (each sees cuda:0): find it by pid."""
    device = _gpu_device()
    busy = GpuInfo(index=1, name=H100, utilization_pct=20, sm_clock_mhz=1980, max_sm_clock_mhz=1980,
                   processes=[{"pid": 777, "used_mib": 1}])  # fmt: skip
    device.gpus.append(busy)
    v = speed_verdict(_facts(pid=777, measured_tokens_per_sec=1_000.0), device)
    assert "input-bound" in {c.key for c in v.causes}  # GPU 1's 20% utilisation, not GPU 0's 98%
    v = speed_verdict(_facts(pid=123, measured_tokens_per_sec=1_000.0), device)
    assert "input-bound" not in {c.key for c in v.causes}
