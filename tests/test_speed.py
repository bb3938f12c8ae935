"""The speed verdict on synthetic run records (config dicts + metrics), UUID matching, and the NVML probe
against the real pynvml module (on a machine without a driver it must fail cleanly)."""

from __future__ import annotations

import shutil

import pandas as pd
import pynvml
import pytest

from cs336_basics.assignment_experiments.lr_sweep import gpu_probe
from cs336_basics.assignment_experiments.lr_sweep.gpu_probe import DeviceInfo, GpuInfo
from cs336_basics.assignment_experiments.lr_sweep.speed import (
    RunFacts,
    format_verdict,
    run_facts,
    speed_verdict,
)
from tests.test_analyze import real_sweep_template

H100 = "NVIDIA H100 80GB HBM3"
SHAPE = {"vocab_size": 10_000, "context_length": 256, "d_model": 512, "num_layers": 4, "d_ff": 1344}
FLOPS_17M = 111_750_144  # 6N + 12*L*d*T by hand (tests/test_hardware.py)
UUID = "GPU-bbbbbbbb-0000-0000-0000-000000000001"
OTHER_UUID = "GPU-aaaaaaaa-0000-0000-0000-000000000000"


def _config(**runtime) -> dict:
    rt = {"device": "cuda", "device_name": H100, "dtype": "bf16", "compile": True, "tf32": True, "notes": []}
    return {**SHAPE, "batch_size": 128, "runtime": {**rt, **runtime}, "provenance": {"gpu_uuid": UUID}}


def _metrics(tokens_per_sec=1_000_000.0, ms_per_step=32.8, **extra) -> pd.DataFrame:
    rows = {"step": [50, 100, 150], "tokens_per_sec": [5.0, tokens_per_sec, tokens_per_sec]}
    rows["ms_per_step"] = [ms_per_step] * 3
    return pd.DataFrame({**rows, **{k: [v] * 3 for k, v in extra.items()}})


def _verdict(config=None, metrics=None, summary=None, device=None, live=False):
    facts = run_facts(
        "lr_1e_03", config or _config(), _metrics() if metrics is None else metrics, summary, live=live
    )
    return speed_verdict(facts, device)


def _causes(v) -> set[str]:
    return {c.cause for c in v.causes}


def test_well_configured_bf16_run_expected_rate_and_no_cause():
    v = _verdict()
    assert v.flops_per_token == FLOPS_17M and v.precision == "bf16"
    assert v.peak_flops == 989.4e12 and v.assumed_mfu == 0.23
    assert v.expected_tokens_per_sec == pytest.approx(989.4e12 * 0.23 / FLOPS_17M)
    assert v.measured_tokens_per_sec == 1_000_000.0  # median of the last 5 logged values
    assert v.mfu == pytest.approx(1e6 * FLOPS_17M / 989.4e12)
    assert v.ratio == pytest.approx(1e6 / v.expected_tokens_per_sec)
    assert v.causes == []
    assert any("not live" in n for n in v.notes)
    text = "\n".join(format_verdict(v))
    assert (
        "expected ~2,036,346 tokens/s" in text
        and "MFU 11.3%" in text
        and "slowdown causes: none found" in text
    )


def test_recorded_precision_and_compile_choices_are_causes_with_evidence():
    v = _verdict(_config(dtype="fp32", tf32=True, compile=False))
    assert _causes(v) == {"tf32 matmuls instead of bf16 autocast", "torch.compile is off"}
    evidence = {c.cause: c.evidence for c in v.causes}
    assert "495 TFLOP/s tf32 vs 989 bf16" in evidence["tf32 matmuls instead of bf16 autocast"]
    assert evidence["torch.compile is off"] == "config.json runtime: compile false"
    # No measured or cited MFU for tf32: no expected rate, but the measured MFU against the tf32 peak.
    assert v.expected_tokens_per_sec is None and v.mfu == pytest.approx(1e6 * FLOPS_17M / 494.7e12)
    assert any("no measured or cited MFU for tf32" in n for n in v.notes)


def test_compile_failure_note_in_summary_runtime():
    note = "compile failed (BackendCompilerFailed: no C compiler); fell back to eager"
    summary = {"runtime": {**_config()["runtime"], "compile": False, "notes": [note]}}
    v = _verdict(summary=summary)
    assert [(c.cause, c.evidence) for c in v.causes] == [
        ("torch.compile failed, so the run fell back to eager", f"runtime note: {note}")
    ]


def test_attention_choice_only_when_recorded_and_not_fused():
    assert _verdict(_config(attention="fused")).causes == []
    v = _verdict(_config(attention="naive"))
    assert _causes(v) == {"attention 'naive', not the fused kernel"}


def test_data_wait_share_from_metrics():
    v = _verdict(metrics=_metrics(ms_per_step=10.0, data_wait_ms=3.0))
    assert [c.evidence for c in v.causes] == ["metrics.csv: data wait 3.0 of 10.0 ms per step (30%)"]
    assert _verdict(metrics=_metrics(ms_per_step=10.0, data_wait_ms=0.5)).causes == []


def test_cpu_and_unknown_gpu_have_no_expected_rate():
    v = _verdict(_config(device="cpu", device_name="Intel Xeon", dtype="fp32", tf32=False, compile=False))
    assert (
        v.expected_tokens_per_sec is None and v.peak_flops is None and v.causes == []
    )  # CPU fp32 eager: a choice
    assert any("no peak FLOP/s for CPUs" in n for n in v.notes)
    assert any(f"{1e6 * FLOPS_17M / 1e9:,.1f} GFLOP/s of model math" in n for n in v.notes)
    v = _verdict(_config(device_name="Mystery GPU 9000", dtype="fp32", tf32=False))
    assert v.expected_tokens_per_sec is None and v.causes == []  # no table peaks: no precision evidence
    assert any("Mystery GPU 9000 has no dense fp32 peak" in n for n in v.notes)


def test_processes_are_matched_by_uuid_not_pid():
    procs = [
        {"gpu_uuid": UUID.upper(), "pid": 1, "used_mib": 1.0},
        {"gpu_uuid": OTHER_UUID, "pid": 2, "used_mib": 1.0},
        {"gpu_uuid": UUID.removeprefix("GPU-"), "pid": 3, "used_mib": None},
    ]
    assert [p["pid"] for p in gpu_probe.processes_on_gpu(procs, UUID)] == [1, 3]
    assert gpu_probe.processes_on_gpu(procs, None) == []
    assert not gpu_probe.same_uuid(None, None) and not gpu_probe.same_uuid("", "GPU-")


def _device(**run_gpu) -> DeviceInfo:
    busy = GpuInfo(0, H100, OTHER_UUID, utilization_pct=20.0, slowdown_reasons=["hardware slowdown"])
    mine = GpuInfo(1, H100, UUID.lower(), utilization_pct=99.0, sm_clock_mhz=1980, max_sm_clock_mhz=1980)
    for k, v in run_gpu.items():
        setattr(mine, k, v)
    procs = [
        {"gpu_uuid": OTHER_UUID, "pid": 7, "used_mib": 1.0},
        {"gpu_uuid": UUID, "pid": 8, "used_mib": 9e3},
    ]
    return DeviceInfo(kind="cuda", host="h", gpus=[busy, mine], processes=procs)


def test_live_gpu_causes_come_from_the_run_s_gpu_only():
    assert _verdict(device=_device(), live=True).causes == []  # GPU 0's idling and neighbour are not ours
    device = _device(utilization_pct=35.0, sm_clock_mhz=1100, slowdown_reasons=["software power cap"])
    device.processes.append({"gpu_uuid": UUID, "pid": 9, "used_mib": 5e3})
    v = _verdict(device=device, live=True)
    evidence = {c.cause: c.evidence for c in v.causes}
    assert set(evidence) == {
        "other processes share the GPU",
        "the GPU idles between kernels (host-bound: Python overhead, syncs or data)",
        "clocks held below maximum",
    }
    assert (
        evidence["other processes share the GPU"]
        == f"NVML: 2 compute processes on {UUID.lower()} (pids 8, 9)"
    )
    assert evidence["clocks held below maximum"].endswith("software power cap; SM clock 1100/1980 MHz")
    assert _verdict(device=device, live=False).causes == []  # not live here: the snapshot is not about it


def test_live_run_without_a_recorded_or_visible_uuid_says_so():
    config = _config()
    del config["provenance"]
    v = _verdict(config, device=_device(utilization_pct=5.0), live=True)
    assert v.causes == [] and any("config.json records no GPU UUID" in n for n in v.notes)
    v = _verdict(device=DeviceInfo(kind="cuda", host="h", gpus=[]), live=True)
    assert any(f"GPU {UUID} is not visible to NVML here" in n for n in v.notes)


def test_from_a_real_run_directory(tmp_path_factory, tmp_path):
    from cs336_basics.experiment_log import load_experiment_log

    run = tmp_path / "run"
    shutil.copytree(real_sweep_template(tmp_path_factory) / "lr_1e_03", run)
    log = load_experiment_log(run)
    facts = RunFacts.from_log(log)
    assert facts.shape == {k: log.config[k] for k in SHAPE}
    assert facts.runtime == log.summary["runtime"] and facts.device_type == "cpu"
    assert facts.measured_tokens_per_sec == pytest.approx(
        log.metrics["tokens_per_sec"].dropna().tail(5).median()
    )
    assert (
        RunFacts.from_log(type(log)(log.path, log.name, {}, log.metrics)) is None
    )  # config.json not written yet


def test_nvml_probe_against_the_real_module():
    gpus, processes, note = gpu_probe.probe_gpus()
    if note is not None:  # no driver here: the real NVMLError becomes one plain note
        assert note.startswith("no NVIDIA driver (NVML: ") and gpus == [] and processes == []
        with pytest.raises(pynvml.NVMLError):
            pynvml.nvmlInit()
    else:
        assert gpus and all(g.uuid and g.name for g in gpus)
        assert {p["gpu_uuid"] for p in processes} <= {g.uuid for g in gpus}
    info = gpu_probe.probe_device()
    assert info.kind in ("cpu", "cuda", "mps") and info.note == note
    text = "\n".join(gpu_probe.format_device(info))
    assert (note in text) if note else ("compute processes" in text)
