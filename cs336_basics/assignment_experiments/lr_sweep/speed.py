"""Is a run as fast as its device allows? Expected vs measured tokens/s, and causes named only with evidence.

The expected rate is the device's dense peak for the run's precision (hardware.peak_flops) x the realistic
MFU that benchmarks/README.md backs (hardware.REALISTIC_MFU) / FLOPs per token (hardware.flops_per_token);
no expected rate where either is missing. Each cause comes with the evidence that shows it: the precision,
compile and attention choices and notes recorded in the run's runtime, the data-wait share of a step, and,
for a run live on this host, NVML's view of the run's GPU (matched by the UUID in config.json).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cs336_basics.assignment_experiments.lr_sweep.gpu_probe import (
    DeviceInfo,
    GpuInfo,
    processes_on_gpu,
    same_uuid,
)
from cs336_basics.basics import hardware
from cs336_basics.experiment_log.reader import RECENT_ROWS, median

DATA_WAIT_SHARE = 0.10  # a step waiting this much of its time for its batch is input-bound
LOW_UTILIZATION_PCT = 80.0  # NVML: a kernel ran in less than this share of the last sample period
FUSED_ATTENTION = ("fused", "sdpa", "flash")


@dataclass
class RunFacts:
    """What the verdict reads about one run (see ``run_facts``)."""

    name: str
    shape: dict  # hardware.FLOPS_SHAPE
    runtime: dict  # device.Runtime.as_dict(): device, device_name, dtype, tf32, compile, notes (attention)
    gpu_uuid: str | None = None
    measured_tokens_per_sec: float | None = None
    data_wait_share: float | None = None  # of a training step's time
    data_wait_evidence: str | None = None
    live: bool = False  # running now on this host: the NVML snapshot describes it

    @property
    def device_type(self) -> str:
        return str(self.runtime.get("device") or "cpu").split(":")[0]

    @property
    def precision(self) -> str:
        """The peak column its matmuls use: bf16 | fp16 | tf32 | fp32."""
        return hardware.peak_precision(str(self.runtime.get("dtype")), bool(self.runtime.get("tf32")))

    @classmethod
    def from_log(cls, log, *, live: bool = False) -> RunFacts | None:
        """From an ``ExperimentLog``; None when its config.json lacks the model shape (not written yet)."""
        return run_facts(log.name, log.config, log.metrics, log.summary, live=live)


def run_facts(
    name: str, config: dict, metrics, summary: dict | None = None, *, live=False
) -> RunFacts | None:
    """A run's facts from its config.json, metrics.csv (a DataFrame) and summary.json, as recorded.

    The runtime is summary.json's (written last, so it carries a compile failure) else config.json's. The
    data-wait share is metrics.csv's ``data_wait_ms / ms_per_step`` over the last rows.
    """
    if not all(isinstance(config.get(k), int) for k in hardware.FLOPS_SHAPE):
        return None
    summary = summary or {}
    runtime = summary.get("runtime") or config.get("runtime") or {}
    uuid = (config.get("provenance") or {}).get("gpu_uuid") or runtime.get("gpu_uuid")
    facts = RunFacts(
        name,
        {k: config[k] for k in hardware.FLOPS_SHAPE},
        runtime,
        uuid,
        median(metrics, "tokens_per_sec", RECENT_ROWS),
        live=live,
    )
    wait_ms = median(metrics, "data_wait_ms", RECENT_ROWS)
    step_ms = median(metrics, "ms_per_step", RECENT_ROWS)
    if wait_ms is not None and step_ms:
        facts.data_wait_share = wait_ms / step_ms
        facts.data_wait_evidence = f"metrics.csv: data wait {wait_ms:.1f} of {step_ms:.1f} ms per step"
    return facts


@dataclass
class Cause:
    cause: str
    evidence: str


@dataclass
class SpeedVerdict:
    run: str
    device_name: str | None
    precision: str  # the peak column: bf16 | fp16 | tf32 | fp32
    flops_per_token: float
    measured_tokens_per_sec: float | None
    peak_flops: float | None = None
    assumed_mfu: float | None = None
    expected_tokens_per_sec: float | None = None
    mfu: float | None = None  # measured
    ratio: float | None = None  # measured / expected
    causes: list[Cause] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def recorded_causes(run: RunFacts) -> list[Cause]:
    """Causes shown by what the run recorded: precision, compile, attention, compile failure, data wait."""
    rt = run.runtime
    failures = [str(n) for n in rt.get("notes") or [] if "compile" in str(n) and "fail" in str(n)]
    causes = [
        Cause("torch.compile failed, so the run fell back to eager", f"runtime note: {n}") for n in failures
    ]
    name = rt.get("device_name")
    precision = run.precision
    if run.device_type == "cuda" and not rt.get("compile") and not failures:
        causes.append(Cause("torch.compile is off", "config.json runtime: compile false"))
    bf16, this = hardware.peak_flops(name, "bf16"), hardware.peak_flops(name, precision)
    if run.device_type == "cuda" and precision != "bf16" and bf16 and this and bf16 > this:
        causes.append(
            Cause(
                f"{precision} matmuls instead of bf16 autocast",
                f"config.json runtime: dtype {rt.get('dtype')}, tf32 {rt.get('tf32')}; dense peak of "
                f"{hardware.match_gpu(name)}: {this / 1e12:,.0f} TFLOP/s {precision} vs {bf16 / 1e12:,.0f} bf16",
            )
        )
    attention = rt.get("attention")
    if attention and attention not in FUSED_ATTENTION:
        causes.append(
            Cause(
                f"attention {attention!r}, not the fused kernel",
                f"config.json runtime: attention {attention}",
            )
        )
    if run.data_wait_share is not None and run.data_wait_share >= DATA_WAIT_SHARE:
        causes.append(
            Cause(
                "the step waits for its batch", f"{run.data_wait_evidence} ({100 * run.data_wait_share:.0f}%)"
            )
        )
    return causes


def gpu_causes(gpu: GpuInfo, processes: list[dict]) -> list[Cause]:
    """Causes shown by NVML on the run's GPU (``processes``: all of this machine's, matched here by UUID)."""
    causes = []
    on_gpu = processes_on_gpu(processes, gpu.uuid)
    if len(on_gpu) > 1:  # the live run is one of them
        pids = ", ".join(str(p["pid"]) for p in on_gpu)
        causes.append(
            Cause(
                "other processes share the GPU",
                f"NVML: {len(on_gpu)} compute processes on {gpu.uuid} (pids {pids})",
            )
        )
    if gpu.utilization_pct is not None and gpu.utilization_pct < LOW_UTILIZATION_PCT:
        causes.append(
            Cause(
                "the GPU idles between kernels (host-bound: Python overhead, syncs or data)",
                f"NVML: utilisation {gpu.utilization_pct:.0f}% on {gpu.uuid}",
            )
        )
    if gpu.slowdown_reasons:
        clock = f"; SM clock {gpu.sm_clock_mhz}/{gpu.max_sm_clock_mhz} MHz" if gpu.sm_clock_mhz else ""
        causes.append(
            Cause(
                "clocks held below maximum",
                f"NVML clocks-event reasons: {', '.join(gpu.slowdown_reasons)}{clock}",
            )
        )
    return causes


def gpu_for_run(run: RunFacts, device: DeviceInfo | None) -> GpuInfo | None:
    """The GPU this machine's NVML lists under the run's recorded UUID, if any."""
    gpus = device.gpus if device is not None else []
    return next((g for g in gpus if same_uuid(g.uuid, run.gpu_uuid)), None)


def speed_verdict(run: RunFacts, device: DeviceInfo | None = None) -> SpeedVerdict:
    """Expected vs measured tokens/s for ``run`` and every cause that has evidence."""
    gpu = gpu_for_run(run, device)
    name = run.runtime.get("device_name") or (gpu.name if gpu else None)
    precision = run.precision
    v = SpeedVerdict(
        run.name, name, precision, hardware.flops_per_token(**run.shape), run.measured_tokens_per_sec
    )
    measured, fpt = v.measured_tokens_per_sec, v.flops_per_token
    v.peak_flops = hardware.peak_flops(name, precision) if run.device_type == "cuda" else None
    v.assumed_mfu = hardware.REALISTIC_MFU.get(precision)
    if run.device_type != "cuda":
        v.notes.append(
            f"no peak FLOP/s for {'Apple MPS' if run.device_type == 'mps' else 'CPUs'}: no expected rate"
        )
    elif v.peak_flops is None:
        v.notes.append(
            f"{name or 'this GPU'} has no dense {precision} peak in hardware.PEAK_TFLOPS: no expected rate"
        )
    elif v.assumed_mfu is None:
        v.notes.append(f"no measured or cited MFU for {precision} (benchmarks/README.md): no expected rate")
    else:
        v.expected_tokens_per_sec = hardware.expected_tokens_per_sec(fpt, v.peak_flops, v.assumed_mfu)
    if measured is None:
        v.notes.append("no throughput logged yet")
    elif v.peak_flops is not None:
        v.mfu = hardware.model_flops_utilization(measured, fpt, v.peak_flops)
        v.ratio = measured / v.expected_tokens_per_sec if v.expected_tokens_per_sec else None
    else:
        v.notes.append(
            f"measured {measured * fpt / 1e9:,.1f} GFLOP/s of model math ({fpt / 1e6:,.1f} MFLOP per token)"
        )
    v.causes = recorded_causes(run)
    if not run.live:
        v.notes.append("not live on this host: GPU utilisation, clocks and processes not considered")
    elif run.device_type == "cuda" and gpu is None:
        why = (
            f"GPU {run.gpu_uuid} is not visible to NVML here"
            if run.gpu_uuid
            else "config.json records no GPU UUID"
        )
        v.notes.append(f"{why}: GPU utilisation, clocks and processes not attributed to this run")
    elif gpu is not None:
        v.causes += gpu_causes(gpu, device.processes)
    return v


def format_verdict(v: SpeedVerdict) -> list[str]:
    """Human lines for the diagnosis."""
    lines = [f"speed of {v.run} on {v.device_name or 'unknown device'} ({v.precision}):"]
    if v.expected_tokens_per_sec is not None:
        lines.append(
            f"  expected ~{v.expected_tokens_per_sec:,.0f} tokens/s = {v.peak_flops / 1e12:,.0f} TFLOP/s dense peak"
            f" x {100 * v.assumed_mfu:.0f}% MFU (benchmarks/README.md) / {v.flops_per_token / 1e6:,.1f} MFLOP per token"
        )
    if v.measured_tokens_per_sec is not None:
        mfu = f" = MFU {100 * v.mfu:.1f}%" if v.mfu is not None else ""
        ratio = f" ({v.ratio:.2f} of expected)" if v.ratio is not None else ""
        lines.append(f"  measured ~{v.measured_tokens_per_sec:,.0f} tokens/s{mfu}{ratio}")
    lines += [f"  cause: {c.cause} -- {c.evidence}" for c in v.causes]
    if not v.causes:
        lines.append("  slowdown causes: none found in the run's records or the device's state")
    return lines + [f"  note: {n}" for n in v.notes]
