"""Device set-up in one place: which device, which precision, whether to compile, and why.

CUDA > MPS > CPU by default. On CUDA: TF32 on, bf16 autocast (fp32 + TF32 on cards without bf16), torch.compile.
On MPS: no TF32, compile with the "aot_eager" backend. On CPU: bf16 autocast only if a brief measurement
(cached per CPU model and torch version) shows it is faster; compile only for runs long enough to repay the
warm-up. Every choice is recorded (``Runtime.as_dict``) in the run's config.json and printed in the banner.

CPU runs are deterministic for a given machine and intra-op thread count: ``torch.use_deterministic_algorithms``
is on there (see ``setup_runtime``), and the thread count is recorded, since a reduction split over another
number of threads rounds differently.
"""

from __future__ import annotations

import contextlib
import functools
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from cs336_basics import CPU_WAIT_NOTE
from cs336_basics.errors import UserError
from cs336_basics.formatting import plural

# CPU runs shorter than this many tokens skip torch.compile: its warm-up (tens of seconds) would not pay off.
CPU_COMPILE_MIN_TOKENS = 10_000_000


@dataclass
class Runtime:
    device: torch.device
    dtype: str  # autocast dtype: bf16 | fp32 (fp32 = no autocast)
    compile: bool
    compile_backend: str
    tf32: bool
    notes: list[str] = field(default_factory=list)
    # Intra-op threads: CPU numerics depend on them (a reduction split over more threads rounds differently).
    threads: int = field(default_factory=torch.get_num_threads)
    deterministic: bool = field(default_factory=torch.are_deterministic_algorithms_enabled)

    def autocast(self):
        """The autocast context for forward passes (a no-op context in fp32)."""
        if self.dtype == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def device_name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        if self.device.type == "mps":
            return "Apple MPS"
        return cpu_model()

    def as_dict(self) -> dict:
        """The runtime block of config.json and summary.json: every field, the device's name, torch's version."""
        info = {"device": str(self.device), "device_name": self.device_name()}
        return {**asdict(self), **info, "torch": torch.__version__}

    def banner(self) -> str:
        threads = f", {plural(self.threads, 'thread')}" if self.device.type == "cpu" else ""
        compiled = self.compile_backend if self.compile else "off"
        where = f"{self.device} ({self.device_name()}{threads})"
        return f"device {where} | precision {self.dtype} | compile={compiled} | tf32={self.tf32}"


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda > mps > cpu; otherwise the named device, checked to exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if device.type not in available:
        raise UserError(f"unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    if not available[device.type]:
        raise UserError(
            f"device {name!r} asked for, but {device.type.upper()} is not available here; use --device cpu or auto"
        )
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"device {name!r} does not exist: {torch.cuda.device_count()} CUDA device(s) visible")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU): for timing."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def set_tf32(on: bool) -> None:
    """TF32 for CUDA float32 matmuls and convolutions: a process-wide switch."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on
    torch.set_float32_matmul_precision("high" if on else "highest")


def setup_runtime(device: str, dtype: str, compile: str, tf32: bool, run_tokens: int) -> Runtime:
    """Choose and apply device, precision, TF32 and compile settings (the config's ``device``, ``dtype``,
    ``compile`` and ``tf32``, where "auto" is chosen here); ``run_tokens`` sizes the CPU compile choice."""
    dev = resolve_device(device)
    tf32 = tf32 and dev.type == "cuda"  # a CUDA switch: recorded off elsewhere
    notes: list[str] = []
    if dev.type == "cuda":
        set_tf32(tf32)
        if dtype == "auto":
            # fp16 would need a loss scaler (a host sync every step); without bf16, fp32 + TF32 is the safe choice.
            dtype = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
            notes.append(f"dtype auto -> {dtype} autocast (fp32 master weights)")
        do_compile, backend = compile != "off", "inductor"
    elif dev.type == "mps":
        if dtype == "auto":
            dtype = "fp32"
            notes.append("dtype auto -> fp32 on MPS (bf16 autocast support varies by macOS/torch version)")
        do_compile, backend = compile != "off", "aot_eager"
    else:
        # The embedding's backward (an index_put_ with accumulate) adds rows on several threads in whatever
        # order they finish: two runs of one command differed from step 10 on (tests/test_determinism.py).
        # Deterministic mode sorts the indices first; on CPU that costs nothing measurable. warn_only: an op
        # without a deterministic CPU kernel warns rather than stopping the run (switched on below).
        if dtype == "auto":
            from cs336_basics.basics.cpu_precision import cpu_autocast_choice

            dtype, why = cpu_autocast_choice()
            notes.append(f"dtype auto -> {dtype} on this CPU ({why})")
        if CPU_WAIT_NOTE:
            notes.append(CPU_WAIT_NOTE)
        long_run = run_tokens >= CPU_COMPILE_MIN_TOKENS
        do_compile, backend = (compile == "on") or (compile == "auto" and long_run), "inductor"
        if do_compile:
            torch.use_deterministic_algorithms(True, warn_only=True)
        else:  # the same switch, without importing inductor's config (seconds) for a run that never compiles
            torch._C._set_deterministic_algorithms(True, warn_only=True)
        if compile == "auto":
            notes.append(
                f"compile auto -> {'on' if do_compile else 'off'} on CPU (run of {run_tokens:,} tokens; "
                f"compile pays off from {CPU_COMPILE_MIN_TOKENS:,})"
            )
    return Runtime(dev, dtype, do_compile, backend, tf32, notes)


@functools.cache  # constant for the process: the trainer asks at every log step (hardware.throughput_row)
def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()
