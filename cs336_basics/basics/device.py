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
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cs336_basics.errors import UserError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# CPU runs shorter than this many tokens skip torch.compile: its warm-up (tens of seconds) would not pay off.
CPU_COMPILE_MIN_TOKENS = 10_000_000


@dataclass
class Runtime:
    device: torch.device
    dtype: str  # autocast dtype: bf16 | fp16 | fp32 (fp32 = no autocast)
    compile: bool
    compile_backend: str
    tf32: bool
    notes: list[str] = field(default_factory=list)
    threads: int = field(
        default_factory=torch.get_num_threads
    )  # intra-op threads (CPU numerics depend on it)
    deterministic: bool = field(default_factory=torch.are_deterministic_algorithms_enabled)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return None if self.dtype == "fp32" else DTYPES[self.dtype]

    def autocast(self):
        """The autocast context for forward passes (a no-op context in fp32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def device_name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        if self.device.type == "mps":
            return "Apple MPS"
        return _cpu_model()

    def as_dict(self) -> dict:
        return {
            "device": str(self.device),
            "device_name": self.device_name(),
            "dtype": self.dtype,
            "compile": self.compile,
            "compile_backend": self.compile_backend,
            "tf32": self.tf32,
            "threads": self.threads,
            "deterministic": self.deterministic,
            "torch": torch.__version__,
            "notes": list(self.notes),
        }

    def banner(self) -> str:
        compiled = f"compile={self.compile_backend}" if self.compile else "compile=off"
        where = f"{self.device} ({self.device_name()}" + (
            f", {self.threads} threads)" if self.device.type == "cpu" else ")"
        )
        return f"device {where} | precision {self.dtype} | {compiled} | tf32={self.tf32}"


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda > mps > cpu; otherwise the named device, checked to exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"device {name!r} asked for, but CUDA is not available here; use --device cpu or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(
                f"device {name!r} does not exist: {torch.cuda.device_count()} CUDA device(s) visible"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device {name!r} asked for, but MPS is not available here; use --device cpu or auto")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps")
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


def setup_runtime(
    device: str = "auto",
    dtype: str = "auto",
    compile: str = "auto",
    tf32: bool = True,
    run_tokens: int | None = None,
) -> Runtime:
    """Choose and apply device, precision, TF32 and compile settings; ``run_tokens`` sizes the CPU compile choice."""
    dev = resolve_device(device)
    notes: list[str] = []
    if dev.type == "cuda":
        set_tf32(tf32)
        if dtype == "auto":
            # fp16 would need a loss scaler (a host sync every step); without bf16, fp32 + TF32 is the safe choice.
            dtype = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
            notes.append(f"dtype auto -> {dtype} autocast (fp32 master weights)")
        do_compile, backend = compile != "off", "inductor"
    elif dev.type == "mps":
        tf32 = False
        if dtype == "auto":
            dtype = "fp32"
            notes.append("dtype auto -> fp32 on MPS (bf16 autocast support varies by macOS/torch version)")
        do_compile, backend = compile != "off", "aot_eager"
    else:
        tf32 = False
        # The embedding's backward (an index_put_ with accumulate) adds rows on several threads in whatever
        # order they finish: two runs of one command differed from step 10 on (tests/test_determinism.py).
        # Deterministic mode sorts the indices first; on CPU that costs nothing measurable. warn_only: an op
        # without a deterministic CPU kernel warns rather than stopping the run.
        torch.use_deterministic_algorithms(True, warn_only=True)
        if dtype == "auto":
            dtype, why = cpu_autocast_choice()
            notes.append(f"dtype auto -> {dtype} on this CPU ({why})")
        long_run = run_tokens is None or run_tokens >= CPU_COMPILE_MIN_TOKENS
        do_compile, backend = (compile == "on") or (compile == "auto" and long_run), "inductor"
        if compile == "auto":
            notes.append(
                f"compile auto -> {'on' if do_compile else 'off'} on CPU (run of {run_tokens or 0:,} tokens; "
                f"compile pays off from {CPU_COMPILE_MIN_TOKENS:,})"
            )
    if dtype == "fp16":
        raise UserError(
            "--dtype fp16 is not supported (it needs loss scaling); use bf16 (most GPUs since 2020) or fp32"
        )
    return Runtime(dev, dtype, do_compile, backend, tf32, notes)


def _cache_file() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "cs336_basics" / "cpu_precision.json"


def _cpu_key() -> str:
    return f"{platform.processor() or platform.machine()}|{_cpu_model()}|torch {torch.__version__}|{torch.get_num_threads()} threads"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def cpu_autocast_choice() -> tuple[str, str]:
    """'bf16' if bf16 autocast runs a Transformer-sized matmul step faster than fp32 on this CPU, else 'fp32'.

    Measured once (about a second) and cached in ~/.cache/cs336_basics/cpu_precision.json.
    """
    key, path = _cpu_key(), _cache_file()
    cache: dict = {}
    with contextlib.suppress(OSError, json.JSONDecodeError):
        cache = json.loads(path.read_text())
    if key in cache:
        entry = cache[key]
        return entry[
            "dtype"
        ], f"cached measurement: fp32 {entry['fp32_ms']:.1f} ms vs bf16 {entry['bf16_ms']:.1f} ms"
    fp32_ms, bf16_ms = _time_step(None), _time_step(torch.bfloat16)
    choice = "bf16" if bf16_ms < 0.9 * fp32_ms else "fp32"
    cache[key] = {"dtype": choice, "fp32_ms": fp32_ms, "bf16_ms": bf16_ms}
    with contextlib.suppress(OSError):
        from cs336_basics.atomic import atomic_write_json

        atomic_write_json(path, cache)
    return choice, f"measured: fp32 {fp32_ms:.1f} ms vs bf16 {bf16_ms:.1f} ms per test step"


def _time_step(dtype: torch.dtype | None, repeats: int = 3) -> float:
    """Milliseconds for the forward+backward of a small MLP of Transformer-like width."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(512, 512, generator=gen)
    w1 = torch.randn(1344, 512, generator=gen, requires_grad=True)
    w2 = torch.randn(512, 1344, generator=gen, requires_grad=True)
    ctx = torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()
    best = float("inf")
    for _ in range(repeats + 1):
        start = time.perf_counter()
        with ctx:
            loss = (
                (torch.nn.functional.linear(torch.nn.functional.silu(torch.nn.functional.linear(x, w1)), w2))
                .float()
                .square()
                .mean()
            )
        loss.backward()
        best = min(best, time.perf_counter() - start)
    return best * 1e3
