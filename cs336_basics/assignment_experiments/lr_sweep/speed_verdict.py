"""Is a run as fast as this device allows? Expected tokens/s from FLOPs, the measured rate, ranked causes.

Pure: it reads a run's facts (``RunFacts``, built from its config/metrics/summary) and a device snapshot
(``DeviceInfo`` from device_probe, or a fake one in tests) and returns a ``SpeedVerdict``. The expected rate is
FLOPs per token (hardware.flops_per_token) against the device's peak for the precision in use
(hardware.peak_flops) at a stated realistic utilisation (hardware.REALISTIC_MFU).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from cs336_basics.assignment_experiments.lr_sweep.device_probe import DeviceInfo, GpuInfo
from cs336_basics.basics import hardware
from cs336_basics.experiment_log.reader import finite_or_none as _num

SLOW_RATIO = 0.5  # measured / expected below this is "far below"
BIG_GPU_BF16_TFLOPS = 100.0  # a GPU with at least this bf16 peak counts as big
BIG_GPU_MEMORY_GIB = 40.0  # ... or with at least this much memory
SMALL_BATCH_TOKENS = 16_384  # tokens per optimizer step that keep a big GPU busy
LOW_GPU_UTIL_PCT = 70.0
LOW_CLOCK_FRACTION = 0.8
HOT_TEMPERATURE_C = 85.0
OVERHEAD_SHARE = 0.15  # evaluation + checkpointing above this share of wallclock is worth fixing


@dataclass
class RunFacts:
    """What the speed verdict needs to know about one run."""

    name: str
    vocab_size: int
    context_length: int
    d_model: int
    num_layers: int
    d_ff: int
    batch_size: int
    device: str = "cpu"  # cuda | cuda:N | mps | cpu
    device_name: str | None = None
    dtype: str = "fp32"  # bf16 | fp16 | fp32 (autocast precision)
    tf32: bool = False
    compile: bool = False
    runtime_notes: list[str] = field(default_factory=list)
    measured_tokens_per_sec: float | None = None
    pid: int | None = None
    live: bool = False  # running now, on this host: the device snapshot describes it
    wallclock_s: float | None = None
    eval_s: float | None = None
    checkpoint_s: float | None = None
    overhead_s: float | None = None  # eval + checkpoint, estimated from metrics when the summary lacks them

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.context_length

    @property
    def device_type(self) -> str:
        return self.device.split(":")[0]

    @property
    def device_index(self) -> int:
        _, _, idx = self.device.partition(":")
        return int(idx) if idx.isdigit() else 0

    @property
    def overhead_share(self) -> float | None:
        spent = (
            (self.eval_s or 0.0) + (self.checkpoint_s or 0.0)
            if self.eval_s is not None or self.checkpoint_s is not None
            else self.overhead_s
        )
        if spent is None or not self.wallclock_s:
            return None
        return spent / self.wallclock_s

    @property
    def compile_failed(self) -> bool:
        words = ("fail", "fell back", "error", "disabled")
        return any("compile" in n.lower() and any(w in n.lower() for w in words) for n in self.runtime_notes)

    @classmethod
    def from_log(cls, log, *, live: bool = False) -> RunFacts | None:
        """From an ``ExperimentLog``; None when config.json lacks the model shape (not written yet)."""
        c, rt = log.config, (log.config.get("runtime") or {})
        keys = ("vocab_size", "context_length", "d_model", "num_layers", "d_ff", "batch_size")
        if not all(isinstance(c.get(k), int) for k in keys):
            return None
        m, s = log.metrics, (log.summary or {})
        recent = m["tokens_per_sec"].dropna().tail(5)
        wall = _num(s.get("wallclock_s")) or (_num(m["wallclock_s"].max()) if len(m) else None)
        overhead = None
        rows = m[m["ms_per_step"].notna()]
        if len(rows) and wall:
            step_s = (
                float((rows["step"].diff().fillna(rows["step"].iloc[0]) * rows["ms_per_step"]).sum()) / 1e3
            )
            overhead = max(float(rows["wallclock_s"].iloc[-1]) - step_s, 0.0)
        return cls(
            name=log.name,
            **{k: c[k] for k in keys},
            device=str(rt.get("device") or c.get("device") or "cpu"),
            device_name=rt.get("device_name"),
            dtype=str(rt.get("dtype") or c.get("dtype") or "fp32"),
            tf32=bool(rt.get("tf32", False)),
            compile=bool(rt.get("compile", False)),
            runtime_notes=[str(n) for n in rt.get("notes") or []],
            measured_tokens_per_sec=float(recent.median()) if len(recent) else None,
            pid=(log.status or {}).get("pid"),
            live=live,
            wallclock_s=wall,
            eval_s=_num(s.get("eval_s")),
            checkpoint_s=_num(s.get("checkpoint_s")),
            overhead_s=overhead,
        )


@dataclass
class Cause:
    """One likely reason for lost speed; ``factor`` is a rough guess of the speed-up from fixing it."""

    key: str
    title: str
    detail: str
    factor: float


@dataclass
class SpeedVerdict:
    run: str
    device_name: str | None
    precision: str  # the peak column used: bf16 | fp16 | tf32 | fp32
    measured_tokens_per_sec: float | None
    flops_per_token: float | None
    peak_flops: float | None
    assumed_mfu: float
    expected_tokens_per_sec: float | None
    ratio: float | None  # measured / expected
    mfu: float | None  # measured model-FLOPs utilisation
    verdict: str  # ok | slow | unknown
    causes: list[Cause] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def peak_precision(dtype: str, tf32: bool) -> str:
    """The peak-table column for a run's precision: bf16/fp16 autocast, else tf32 or plain fp32."""
    if dtype in ("bf16", "fp16"):
        return dtype
    return "tf32" if tf32 else "fp32"


def _model_flops(run: RunFacts) -> float:
    return hardware.flops_per_token(
        vocab_size=run.vocab_size,
        context_length=run.context_length,
        d_model=run.d_model,
        num_layers=run.num_layers,
        d_ff=run.d_ff,
        training=True,
    )


def likely_causes(run: RunFacts, gpu: GpuInfo | None, device_name: str | None) -> list[Cause]:
    """Reasons a CUDA run is slower than it could be, most costly first, from its config and the GPU."""
    causes: list[Cause] = []
    bf16 = hardware.peak_flops(device_name, "bf16") if device_name else None
    if run.device_type == "cuda" and run.dtype == "fp32":
        precision = peak_precision(run.dtype, run.tf32)
        this = hardware.peak_flops(device_name, precision) if device_name else None
        gain = bf16 / this if bf16 and this else (8.0 if precision == "fp32" else 2.0)
        if not run.tf32:
            causes.append(
                Cause(
                    "fp32",
                    "float32 matmuls without TF32",
                    f"the tensor cores are idle: bf16 autocast (--dtype bf16, the CUDA default) is up to "
                    f"~{gain:.0f}x faster; at least keep --tf32 on",
                    gain,
                )
            )
        else:
            causes.append(
                Cause(
                    "tf32",
                    "float32 (TF32) instead of bf16 autocast",
                    f"bf16 autocast (--dtype bf16) has ~{gain:.1f}x the TF32 peak on this GPU",
                    gain,
                )
            )
    if run.device_type == "cuda" and (not run.compile or run.compile_failed):
        why = "failed, so the run fell back to eager mode" if run.compile_failed else "is off"
        causes.append(
            Cause(
                "compile",
                f"torch.compile {why}",
                "compiling fuses the elementwise ops (RMSNorm, SwiGLU, RoPE, the loss): typically 1.3-2x "
                "(--compile on; see the run's runtime notes for a failure)",
                1.5,
            )
        )
    big = (bf16 is not None and bf16 >= BIG_GPU_BF16_TFLOPS * 1e12) or (
        gpu is not None and (gpu.memory_total_mib or 0) >= BIG_GPU_MEMORY_GIB * 1024
    )
    if run.device_type == "cuda" and big and run.tokens_per_step < SMALL_BATCH_TOKENS:
        causes.append(
            Cause(
                "batch",
                f"batch too small for this GPU ({run.tokens_per_step:,} tokens per step)",
                f"a big GPU needs >= {SMALL_BATCH_TOKENS:,} tokens per step to stay busy; raise --batch-size "
                "(and re-tune the learning rate)",
                min(SMALL_BATCH_TOKENS / max(run.tokens_per_step, 1), 3.0),
            )
        )
    if run.device_type == "cuda" and run.live and gpu is not None:
        causes += _live_gpu_causes(run, gpu)
    share = run.overhead_share
    if share is not None and share >= OVERHEAD_SHARE:
        causes.append(
            Cause(
                "overhead",
                f"evaluation and checkpointing take {100 * share:.0f}% of the wallclock",
                "tokens/s counts training only, but the run takes that much longer: raise --eval-interval / "
                "--checkpoint-interval or lower --eval-batches",
                1 / max(1 - share, 0.05),
            )
        )
    return sorted(causes, key=lambda c: -c.factor)


def _live_gpu_causes(run: RunFacts, gpu: GpuInfo) -> list[Cause]:
    causes = []
    if gpu.utilization_pct is not None and gpu.utilization_pct < LOW_GPU_UTIL_PCT:
        causes.append(
            Cause(
                "input-bound",
                f"GPU utilisation only {gpu.utilization_pct:.0f}%",
                "the GPU waits for the host (Python overhead, data loading, syncs): compile, a larger batch, "
                "or check the CPU is not overloaded",
                min(100.0 / max(gpu.utilization_pct, 10.0), 5.0),
            )
        )
    clock = gpu.sm_clock_mhz / gpu.max_sm_clock_mhz if gpu.sm_clock_mhz and gpu.max_sm_clock_mhz else None
    hot = gpu.temperature_c is not None and gpu.temperature_c >= HOT_TEMPERATURE_C
    busy = gpu.utilization_pct is None or gpu.utilization_pct >= 50
    if (clock is not None and clock < LOW_CLOCK_FRACTION and busy) or hot or gpu.throttle_reasons:
        bits = (
            [f"SM clock {gpu.sm_clock_mhz:.0f}/{gpu.max_sm_clock_mhz:.0f} MHz"] if clock is not None else []
        )
        if gpu.temperature_c is not None:
            bits.append(f"{gpu.temperature_c:.0f} C")
        if gpu.throttle_reasons:
            bits.append("driver reports: " + ", ".join(gpu.throttle_reasons))
        causes.append(
            Cause(
                "throttling",
                "the GPU is throttling (" + "; ".join(bits) + ")",
                "clocks held below maximum by heat or the power cap: check cooling, power limit and neighbours",
                1 / clock if clock else 1.2,
            )
        )
    if gpu.processes:
        others = [p for p in gpu.processes if run.pid is None or p.get("pid") != run.pid]
        if others:
            pids = ", ".join(str(p.get("pid")) for p in others[:5])
            causes.append(
                Cause(
                    "shared-gpu",
                    f"{len(others)} other process(es) on the GPU (pid {pids})",
                    "another job shares the GPU's compute and memory: stop it or use another GPU",
                    1.0 + len(others),
                )
            )
    return causes


def cpu_advice(run: RunFacts, device: DeviceInfo | None) -> list[str]:
    """MFU-free advice for CPU and Apple-GPU runs."""
    tips = []
    if run.device_type == "mps":
        tips.append("on Apple GPUs fp32 is the safe default; --compile on uses the aot_eager backend")
        return tips
    if run.dtype == "bf16":
        tips.append(
            "bf16 autocast on CPU only pays on CPUs with AMX / AVX512-BF16; compare with --dtype fp32"
        )
    else:
        tips.append(
            "fp32: bf16 autocast can be faster on CPUs with AMX / AVX512-BF16 (--dtype auto measures it)"
        )
    if not run.compile:
        tips.append("compile is off: --compile on usually pays off for CPU runs of 10M+ tokens")
    if device is not None and device.cpu_cores and device.load_avg:
        load = device.load_avg[0]
        if load > device.cpu_cores + 0.5:
            tips.append(
                f"load average {load:.1f} on {device.cpu_cores} cores: other processes compete for the CPU; "
                "torch uses one thread per core by default (set OMP_NUM_THREADS / torch.set_num_threads to "
                "the cores you really have)"
            )
        else:
            tips.append(f"{device.cpu_cores} cores, load average {load:.1f}: threads are not oversubscribed")
    return tips


def gpu_for_run(run: RunFacts, device: DeviceInfo | None) -> GpuInfo | None:
    """The GPU running ``run``: the one listing its pid (right even when a sweep pins each run to its own GPU
    with CUDA_VISIBLE_DEVICES), else the one torch calls ``cuda:N`` here."""
    if device is None or run.device_type != "cuda":
        return None
    if run.pid is not None:
        for g in device.gpus:
            if any(p.get("pid") == run.pid for p in g.processes or []):
                return g
    return device.gpu(run.device_index)


def speed_verdict(run: RunFacts, device: DeviceInfo | None = None) -> SpeedVerdict:
    """Expected vs measured tokens/s for ``run`` and, when far below, the likely causes ranked."""
    gpu = gpu_for_run(run, device)
    name = (
        (gpu.name if gpu is not None and run.live else None) or run.device_name or (gpu.name if gpu else None)
    )
    precision = peak_precision(run.dtype, run.tf32)
    fpt = _model_flops(run)
    measured = run.measured_tokens_per_sec
    v = SpeedVerdict(
        run=run.name,
        device_name=name,
        precision=precision,
        measured_tokens_per_sec=measured,
        flops_per_token=fpt,
        peak_flops=None,
        assumed_mfu=hardware.REALISTIC_MFU,
        expected_tokens_per_sec=None,
        ratio=None,
        mfu=None,
        verdict="unknown",
    )
    if run.device_type != "cuda":
        kind = "Apple MPS" if run.device_type == "mps" else "CPU"
        v.notes.append(f"no peak-FLOP/s table for {kind}: no expected rate, only measured numbers")
        if measured:
            v.notes.append(
                f"measured {measured:,.0f} tokens/s = {measured * fpt / 1e9:,.1f} GFLOP/s of model math "
                f"({fpt / 1e6:,.2f} MFLOP per token)"
            )
        v.notes += cpu_advice(run, device)
        return v
    peak = hardware.peak_flops(name, precision) if name else None
    v.peak_flops = peak
    if peak is None:
        v.notes.append(f"GPU {name or '(unknown)'} is not in the peak table: no expected rate")
    else:
        v.expected_tokens_per_sec = hardware.expected_tokens_per_sec(fpt, peak, hardware.REALISTIC_MFU)
        if measured:
            v.ratio = measured / v.expected_tokens_per_sec
            v.mfu = hardware.model_flops_utilization(measured, fpt, peak)
            v.verdict = "slow" if v.ratio < SLOW_RATIO else "ok"
    if measured is None:
        v.notes.append("no throughput logged yet")
    if not run.live:
        v.notes.append(
            "device utilisation, clocks and processes are not considered: the run is not live here"
        )
    v.causes = likely_causes(run, gpu, name)
    if v.verdict == "slow" and not v.causes:
        v.notes.append(
            "no obvious cause in the config or the device state: profile a few steps (torch.profiler) and "
            "check the data loader"
        )
    return v


def format_verdict(v: SpeedVerdict) -> list[str]:
    """Human lines for the diagnosis."""
    lines = [f"speed of {v.run} on {v.device_name or 'unknown device'} ({v.precision}):"]
    if v.expected_tokens_per_sec is not None:
        lines.append(
            f"  expected ~{v.expected_tokens_per_sec:,.0f} tokens/s = peak {v.peak_flops / 1e12:,.0f} TFLOP/s "
            f"x {100 * v.assumed_mfu:.0f}% realistic MFU / {v.flops_per_token / 1e6:,.1f} MFLOP per token"
        )
    if v.measured_tokens_per_sec is not None:
        rel = f" = {v.ratio:.2f} of expected (MFU {100 * v.mfu:.1f}%)" if v.ratio is not None else ""
        lines.append(f"  measured ~{v.measured_tokens_per_sec:,.0f} tokens/s{rel}")
    if v.verdict == "slow":
        lines.append("  FAR BELOW expected; likely causes, most costly first:")
    elif v.causes:
        lines.append("  could still be faster:")
    for i, c in enumerate(v.causes, 1):
        lines.append(f"   {i}. {c.title} (~{c.factor:.1f}x): {c.detail}")
    lines += [f"  note: {n}" for n in v.notes]
    return lines
