"""What is this machine's accelerator doing right now? NVML, else ``nvidia-smi``, else MPS / CPU facts.

Nothing here raises: every query that fails leaves its field ``None`` and, when a whole source is missing,
``DeviceInfo.note`` says so in plain words. Only the standard library is imported at module level.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import socket
import subprocess
from dataclasses import asdict, dataclass, field

SMI_FIELDS = (
    "index",
    "uuid",
    "name",
    "memory.used",
    "memory.total",
    "utilization.gpu",
    "temperature.gpu",
    "clocks.sm",
    "clocks.max.sm",
    "power.draw",
    "power.limit",
)
_THROTTLE_BITS = {  # NVML clocks-event reason bits worth telling a person about
    0x08: "hardware slowdown",
    0x20: "thermal (software)",
    0x40: "thermal (hardware)",
    0x80: "power brake",
    0x04: "power cap",
}


@dataclass
class GpuInfo:
    """One GPU's live state; any field is ``None`` when the driver would not say."""

    index: int
    name: str
    uuid: str | None = None
    memory_used_mib: float | None = None
    memory_total_mib: float | None = None
    utilization_pct: float | None = None
    temperature_c: float | None = None
    sm_clock_mhz: float | None = None
    max_sm_clock_mhz: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    throttle_reasons: list[str] = field(default_factory=list)
    processes: list[dict] | None = None  # [{"pid", "used_mib"}], None = unknown


@dataclass
class DeviceInfo:
    """The machine this command runs on: its GPUs (if any) or its CPU / Apple GPU."""

    kind: str  # cuda | mps | cpu
    host: str
    source: str  # nvml | nvidia-smi | none
    cuda_available: bool | None = None
    gpus: list[GpuInfo] = field(default_factory=list)
    note: str | None = None
    cpu_model: str | None = None
    cpu_cores: int | None = None
    load_avg: tuple[float, float, float] | None = None

    def gpu(self, index: int = 0) -> GpuInfo | None:
        """The GPU that torch calls ``cuda:index`` (``CUDA_VISIBLE_DEVICES`` honoured), if known."""
        visible = _visible_devices()
        if visible is not None and index < len(visible):
            want = visible[index]
            for g in self.gpus:
                if want == str(g.index) or (g.uuid and g.uuid.startswith(want)):
                    return g
            return None
        return next((g for g in self.gpus if g.index == index), None)

    def as_dict(self) -> dict:
        return asdict(self)


def _visible_devices() -> list[str] | None:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None or not env.strip():
        return None
    return [part.strip() for part in env.split(",") if part.strip()]


def _text(x) -> str:
    return x.decode(errors="replace") if isinstance(x, bytes) else str(x)


def probe_nvml() -> tuple[list[GpuInfo] | None, str | None]:
    """All GPUs through NVML (``pip install nvidia-ml-py``); ``(None, why)`` when NVML is unusable."""
    try:
        import pynvml
    except ImportError:
        return None, "nvidia-ml-py (pynvml) is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as err:  # NVMLError_LibraryNotFound / DriverNotLoaded / ...
        return None, f"NVML unavailable ({err})"
    try:
        return [_nvml_gpu(pynvml, i) for i in range(pynvml.nvmlDeviceGetCount())], None
    except Exception as err:
        return None, f"NVML query failed ({err})"
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _nvml_gpu(nv, index: int) -> GpuInfo:
    h = nv.nvmlDeviceGetHandleByIndex(index)

    def ask(fn, *args):
        try:
            return getattr(nv, fn)(h, *args)
        except Exception:
            return None

    g = GpuInfo(index=index, name=_text(ask("nvmlDeviceGetName") or "unknown GPU"))
    g.uuid = _text(u) if (u := ask("nvmlDeviceGetUUID")) is not None else None
    if (mem := ask("nvmlDeviceGetMemoryInfo")) is not None:
        g.memory_used_mib, g.memory_total_mib = mem.used / 2**20, mem.total / 2**20
    if (util := ask("nvmlDeviceGetUtilizationRates")) is not None:
        g.utilization_pct = float(util.gpu)
    g.temperature_c = _float(ask("nvmlDeviceGetTemperature", nv.NVML_TEMPERATURE_GPU))
    g.sm_clock_mhz = _float(ask("nvmlDeviceGetClockInfo", nv.NVML_CLOCK_SM))
    g.max_sm_clock_mhz = _float(ask("nvmlDeviceGetMaxClockInfo", nv.NVML_CLOCK_SM))
    if (mw := ask("nvmlDeviceGetPowerUsage")) is not None:
        g.power_w = mw / 1000
    if (mw := ask("nvmlDeviceGetEnforcedPowerLimit")) is not None:
        g.power_limit_w = mw / 1000
    reasons = ask("nvmlDeviceGetCurrentClocksEventReasons")
    if reasons is None:
        reasons = ask("nvmlDeviceGetCurrentClocksThrottleReasons")
    g.throttle_reasons = [text for bit, text in _THROTTLE_BITS.items() if reasons and reasons & bit]
    procs = ask("nvmlDeviceGetComputeRunningProcesses")
    if procs is not None:
        g.processes = [
            {"pid": int(p.pid), "used_mib": p.usedGpuMemory / 2**20 if p.usedGpuMemory else None}
            for p in procs
        ]
    return g


def parse_smi_value(text: str) -> float | None:
    """A number from nvidia-smi's csv (``[N/A]``, ``[Not Supported]`` and the like -> ``None``)."""
    try:
        return float(text.strip())
    except ValueError:
        return None


def parse_smi_gpus(csv_text: str) -> list[GpuInfo]:
    """Rows of ``nvidia-smi --query-gpu=<SMI_FIELDS> --format=csv,noheader,nounits``."""
    gpus = []
    for line in csv_text.strip().splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(SMI_FIELDS):
            continue
        v = dict(zip(SMI_FIELDS, cells))
        idx = parse_smi_value(v["index"])
        gpus.append(
            GpuInfo(
                index=int(idx) if idx is not None else len(gpus),
                name=v["name"],
                uuid=v["uuid"] or None,
                memory_used_mib=parse_smi_value(v["memory.used"]),
                memory_total_mib=parse_smi_value(v["memory.total"]),
                utilization_pct=parse_smi_value(v["utilization.gpu"]),
                temperature_c=parse_smi_value(v["temperature.gpu"]),
                sm_clock_mhz=parse_smi_value(v["clocks.sm"]),
                max_sm_clock_mhz=parse_smi_value(v["clocks.max.sm"]),
                power_w=parse_smi_value(v["power.draw"]),
                power_limit_w=parse_smi_value(v["power.limit"]),
            )
        )
    return gpus


def probe_nvidia_smi(timeout: float = 5.0) -> tuple[list[GpuInfo] | None, str | None]:
    """All GPUs through the ``nvidia-smi`` command; ``(None, why)`` when it is missing or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None, "nvidia-smi is not on PATH"
    try:
        out = subprocess.run(
            [exe, f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, f"nvidia-smi failed ({err})"
    if out.returncode != 0:
        return None, f"nvidia-smi failed ({(out.stderr or out.stdout).strip().splitlines()[:1]})"
    gpus = parse_smi_gpus(out.stdout)
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        apps = subprocess.run(
            [exe, "--query-compute-apps=gpu_uuid,pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if apps.returncode == 0:
            for g in gpus:
                g.processes = []
            for line in apps.stdout.strip().splitlines():
                cells = [c.strip() for c in line.split(",")]
                if len(cells) != 3 or parse_smi_value(cells[1]) is None:
                    continue
                for g in gpus:
                    if g.uuid == cells[0]:
                        g.processes.append({"pid": int(cells[1]), "used_mib": parse_smi_value(cells[2])})
    return gpus, None


def cpu_model() -> str | None:
    """The CPU's marketing name (Linux /proc/cpuinfo, macOS sysctl), else ``platform.processor()``."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    if platform.system() == "Darwin":
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=2
            )
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
    return platform.processor() or platform.machine() or None


def _cuda_and_mps() -> tuple[bool | None, bool]:
    try:
        import torch
    except ImportError:
        return None, False
    cuda = torch.cuda.is_available()  # does not create a CUDA context
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    return cuda, mps


def probe_device() -> DeviceInfo:
    """Everything this machine can say about its accelerator and CPU, without creating a CUDA context."""
    cuda, mps = _cuda_and_mps()
    info = DeviceInfo(kind="cpu", host=socket.gethostname(), source="none", cuda_available=cuda)
    info.cpu_model = cpu_model()
    with contextlib.suppress(AttributeError):
        info.cpu_cores = len(os.sched_getaffinity(0))
    info.cpu_cores = info.cpu_cores or os.cpu_count()
    with contextlib.suppress(OSError, AttributeError):
        info.load_avg = tuple(round(x, 2) for x in os.getloadavg())
    gpus, why_nvml = probe_nvml()
    if gpus is not None:
        info.source, info.gpus = "nvml", gpus
    else:
        gpus, why_smi = probe_nvidia_smi()
        if gpus is not None:
            info.source, info.gpus = "nvidia-smi", gpus
        elif cuda:
            info.note = f"no GPU telemetry: {why_nvml}; {why_smi}"
        else:
            info.note = f"no NVIDIA GPU telemetry ({why_nvml}; {why_smi})"
    if cuda or info.gpus:
        info.kind = "cuda"
    elif mps:
        info.kind = "mps"
    return info


def _float(x) -> float | None:
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def format_device(info: DeviceInfo, gpu: GpuInfo | None = None) -> list[str]:
    """Human lines: CUDA status and ``gpu`` (default cuda:0: utilisation, memory, clocks, power), the CPU."""
    lines = [f"host {info.host}: " + _kind_text(info)]
    gpu = gpu or info.gpu(0)
    if gpu is not None:
        lines.append(f"  GPU {gpu.index}: {gpu.name}  (via {info.source})")
        lines.append(
            "  "
            + " | ".join(
                [
                    f"util {_f(gpu.utilization_pct, '.0f')}%",
                    f"memory {_f(_gib(gpu.memory_used_mib), '.1f')}/{_f(_gib(gpu.memory_total_mib), '.1f')} GiB",
                    f"temp {_f(gpu.temperature_c, '.0f')} C",
                    f"SM clock {_f(gpu.sm_clock_mhz, '.0f')}/{_f(gpu.max_sm_clock_mhz, '.0f')} MHz",
                    f"power {_f(gpu.power_w, '.0f')}/{_f(gpu.power_limit_w, '.0f')} W",
                ]
            )
        )
        if gpu.throttle_reasons:
            lines.append(f"  clocks held back by: {', '.join(gpu.throttle_reasons)}")
        if gpu.processes is not None:
            pids = ", ".join(str(p["pid"]) for p in gpu.processes) or "none"
            lines.append(f"  compute processes on it: {pids}")
    elif info.gpus:
        lines.append(f"  (cuda:0 is not visible here; GPUs: {', '.join(g.name for g in info.gpus)})")
    if info.note:
        lines.append(f"  {info.note}")
    load = "/".join(f"{x:.1f}" for x in info.load_avg) if info.load_avg else "-"
    lines.append(f"  CPU: {info.cpu_model or 'unknown'} | {info.cpu_cores or '?'} cores | load avg {load}")
    return lines


def _kind_text(info: DeviceInfo) -> str:
    if info.kind == "cuda":
        usable = "yes" if info.cuda_available else "NO (torch cannot use it)"
        return f"CUDA available: {usable}"
    if info.kind == "mps":
        return "CUDA available: no; Apple MPS available"
    return "CUDA available: no; MPS: no (CPU only)"


def _gib(mib: float | None) -> float | None:
    return None if mib is None else mib / 1024


def _f(x, fmt: str) -> str:
    return "?" if x is None else format(x, fmt)
