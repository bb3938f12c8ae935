"""What this machine's GPUs are doing now, through NVML (``nvidia-ml-py``, ``import pynvml``) only.

``probe_device`` never raises: without a driver it returns no GPUs and a ``note`` saying why. Processes are
matched to GPUs by UUID, never by pid (inside a container NVML reports host pids, not the container's).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from dataclasses import dataclass, field

import pynvml

# NVML clocks-event reasons that mean the clocks are held below what the work asks for. GPU idle,
# application-clock settings, sync boost and display clocks are left out: they are not slowdowns.
SLOWDOWN_REASONS = {
    pynvml.nvmlClocksEventReasonSwPowerCap: "software power cap",
    pynvml.nvmlClocksEventReasonHwSlowdown: "hardware slowdown",
    pynvml.nvmlClocksEventReasonSwThermalSlowdown: "software thermal slowdown",
    pynvml.nvmlClocksEventReasonHwThermalSlowdown: "hardware thermal slowdown",
    pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown: "hardware power brake",
}


@dataclass
class GpuInfo:
    """One GPU's state as NVML reports it; a field is None where the driver would not say."""

    index: int
    name: str
    uuid: str
    utilization_pct: float | None = None
    memory_used_mib: float | None = None
    memory_total_mib: float | None = None
    sm_clock_mhz: float | None = None
    max_sm_clock_mhz: float | None = None
    slowdown_reasons: list[str] = field(default_factory=list)


@dataclass
class DeviceInfo:
    """This machine: its GPUs, the compute processes on them (``{"gpu_uuid", "pid", "used_mib"}``), CPU load."""

    kind: str  # cuda | mps | cpu
    host: str
    gpus: list[GpuInfo] = field(default_factory=list)
    processes: list[dict] = field(default_factory=list)
    note: str | None = None  # why there is no GPU telemetry
    cpu_cores: int | None = None
    load_avg: tuple[float, float, float] | None = None

    def gpu(self, index: int = 0) -> GpuInfo | None:
        """The GPU with NVML index ``index``, if any."""
        return next((g for g in self.gpus if g.index == index), None)


def same_uuid(a: str | None, b: str | None) -> bool:
    """Whether two GPU UUIDs name one device (``GPU-`` prefix and case ignored)."""
    norm = [(u or "").strip().lower().removeprefix("gpu-") for u in (a, b)]
    return bool(norm[0]) and norm[0] == norm[1]


def processes_on_gpu(processes: list[dict], gpu_uuid: str | None) -> list[dict]:
    """The compute processes whose ``gpu_uuid`` is ``gpu_uuid``."""
    return [p for p in processes if same_uuid(p.get("gpu_uuid"), gpu_uuid)]


def probe_gpus() -> tuple[list[GpuInfo], list[dict], str | None]:
    """(GPUs, compute processes, None), or ([], [], why) when NVML cannot be used here."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:  # LibraryNotFound, DriverNotLoaded, ...
        return [], [], f"no NVIDIA driver (NVML: {err})"
    try:
        gpus, processes = [], []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            gpus.append(_gpu(i, handle))
            for p in _ask(pynvml.nvmlDeviceGetComputeRunningProcesses, handle) or []:
                used = p.usedGpuMemory / 2**20 if p.usedGpuMemory else None
                processes.append({"gpu_uuid": gpus[-1].uuid, "pid": int(p.pid), "used_mib": used})
        return gpus, processes, None
    except pynvml.NVMLError as err:
        return [], [], f"NVML query failed ({err})"
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def _ask(fn, *args):
    """One NVML query; None where this GPU or driver does not support it."""
    try:
        return fn(*args)
    except pynvml.NVMLError:
        return None


def _gpu(index: int, handle) -> GpuInfo:
    g = GpuInfo(
        index=index, name=str(pynvml.nvmlDeviceGetName(handle)), uuid=pynvml.nvmlDeviceGetUUID(handle)
    )
    if (util := _ask(pynvml.nvmlDeviceGetUtilizationRates, handle)) is not None:
        g.utilization_pct = float(util.gpu)
    if (mem := _ask(pynvml.nvmlDeviceGetMemoryInfo, handle)) is not None:
        g.memory_used_mib, g.memory_total_mib = mem.used / 2**20, mem.total / 2**20
    g.sm_clock_mhz = _ask(pynvml.nvmlDeviceGetClockInfo, handle, pynvml.NVML_CLOCK_SM)
    g.max_sm_clock_mhz = _ask(pynvml.nvmlDeviceGetMaxClockInfo, handle, pynvml.NVML_CLOCK_SM)
    reasons_fn = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None)  # the newer name (r535+)
    reasons = _ask(reasons_fn or pynvml.nvmlDeviceGetCurrentClocksThrottleReasons, handle) or 0
    g.slowdown_reasons = [text for bit, text in SLOWDOWN_REASONS.items() if reasons & bit]
    return g


def probe_device() -> DeviceInfo:
    """This machine's GPUs (NVML), or why there are none, and its CPU cores and load."""
    gpus, processes, note = probe_gpus()
    kind = "cuda" if gpus else "cpu"
    if not gpus and sys.platform == "darwin":
        import torch

        kind = "mps" if torch.backends.mps.is_available() else "cpu"
    info = DeviceInfo(kind=kind, host=socket.gethostname(), gpus=gpus, processes=processes, note=note)
    info.cpu_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with contextlib.suppress(OSError):
        info.load_avg = os.getloadavg()
    return info


def format_device(info: DeviceInfo, gpu: GpuInfo | None = None) -> list[str]:
    """Human lines: ``gpu`` (default: NVML index 0) with its state and processes, else why none; the CPU."""
    lines = [f"host {info.host}: {info.kind}"]
    gpu = gpu or info.gpu(0)
    if gpu is not None:
        lines.append(f"  GPU {gpu.index}: {gpu.name} ({gpu.uuid})")
        lines.append(
            f"  util {_f(gpu.utilization_pct)}% | memory {_f(gpu.memory_used_mib, 1 / 1024, '.1f')}"
            f"/{_f(gpu.memory_total_mib, 1 / 1024, '.1f')} GiB"
            f" | SM clock {_f(gpu.sm_clock_mhz)}/{_f(gpu.max_sm_clock_mhz)} MHz"
        )
        if gpu.slowdown_reasons:
            lines.append(f"  clocks held back by: {', '.join(gpu.slowdown_reasons)}")
        procs = processes_on_gpu(info.processes, gpu.uuid)
        lines.append("  compute processes: " + (", ".join(_process(p) for p in procs) or "none"))
    if info.note:
        lines.append(f"  {info.note}")
    load = "/".join(f"{x:.1f}" for x in info.load_avg) if info.load_avg else "?"
    lines.append(f"  CPU: {info.cpu_cores or '?'} cores, load average {load}")
    return lines


def _process(p: dict) -> str:
    used = f" ({p['used_mib'] / 1024:.1f} GiB)" if p.get("used_mib") else ""
    return f"pid {p['pid']}{used}"


def _f(x: float | None, scale: float = 1.0, spec: str = ".0f") -> str:
    return "?" if x is None else format(x * scale, spec)
