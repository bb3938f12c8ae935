"""Whether bf16 autocast pays on this CPU: a second's measurement of a Transformer-sized matmul step in fp32 and
bf16, cached per CPU model, torch version and thread count (device.setup_runtime's ``dtype="auto"`` on CPU)."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cs336_basics.basics.device import cpu_model


def _cache_file() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "cs336_basics" / "cpu_precision.json"


def _cpu_key() -> str:
    return f"{platform.processor() or platform.machine()}|{cpu_model()}|torch {torch.__version__}|{torch.get_num_threads()} threads"


def cpu_autocast_choice() -> tuple[str, str]:
    """'bf16' if bf16 autocast runs a Transformer-sized matmul step faster than fp32 on this CPU, else 'fp32'.

    Measured once (about a second) and cached in ~/.cache/cs336_basics/cpu_precision.json.
    """
    key, path = _cpu_key(), _cache_file()
    cache: dict = {}
    with contextlib.suppress(OSError, json.JSONDecodeError):
        cache = json.loads(path.read_text())
    how = "cached measurement"
    if key not in cache:
        how, fp32_ms, bf16_ms = "measured", _time_step(None), _time_step(torch.bfloat16)
        choice = "bf16" if bf16_ms < 0.9 * fp32_ms else "fp32"
        cache[key] = {"dtype": choice, "fp32_ms": fp32_ms, "bf16_ms": bf16_ms}
        with contextlib.suppress(OSError):
            from cs336_basics.atomic import atomic_write_json

            atomic_write_json(path, cache)
    entry = cache[key]
    timing = f"fp32 {entry['fp32_ms']:.1f} ms vs bf16 {entry['bf16_ms']:.1f} ms per test step"
    return entry["dtype"], f"{how}: {timing}"


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
            loss = F.linear(F.silu(F.linear(x, w1)), w2).float().square().mean()
        loss.backward()
        best = min(best, time.perf_counter() - start)
    return best * 1e3
