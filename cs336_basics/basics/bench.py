"""Training throughput: tokens/s of real optimizer steps, the same code path as ``run_experiment``.

    python -m cs336_basics.basics.bench                              # default preset for this device
    python -m cs336_basics.basics.bench --variants fp32,bf16+compile --steps 10 --json bench.json
    python -m cs336_basics.basics.bench --list-variants

The first variant, ``auto``, is what ``run_experiment`` itself runs on this device: the runtime from
``setup_runtime`` with the config's automatic choices, ``TrainStep`` and ``BatchLoader`` (on random tokens of
the config's vocabulary). The other variants change one thing (precision, compile, attention, optimizer) or
are the minimal plain-PyTorch loop (``plain``: same model, batch and precision; torch.optim.AdamW,
F.cross_entropy, clip_grad_norm_, one fixed random batch), so the table says what each choice is worth here.

Timing: ``--warmup`` steps (compile happens here; reported as startup), then ``--steps`` timed steps with a
device synchronisation only before and after the timed region (``--rounds R`` repeats the timed region,
round-robin over the variants, and reports the median: useful on a noisy machine). A separate, clearly
labelled instrumented pass then synchronises between phases to split a step into data wait, forward,
backward and optimizer. ``--overhead`` measures one evaluation, checkpoint and log step and computes their
share of a run at the preset's intervals; ``--overhead-run N`` trains N steps through ``run_experiment``
itself and measures it. ``--sync-check`` (CUDA) reports host synchronisations inside the hot loop.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import math
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import traceback
import types
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cs336_basics.basics import functional as basics_functional
from cs336_basics.basics import model as model_module
from cs336_basics.basics.batching import BatchLoader, eval_batches
from cs336_basics.basics.config import PRESETS, ExperimentConfig, add_config_arguments, config_overrides
from cs336_basics.basics.config import create_experiment_config as _create_config
from cs336_basics.basics.device import Runtime, _cpu_model, resolve_device, setup_runtime
from cs336_basics.basics.model import TransformerLM
from cs336_basics.basics.optim import get_lr_cosine_schedule, gradient_clipping
from cs336_basics.basics.trainer import TrainStep
from cs336_basics.errors import UserError, cli_entry

PRECISIONS = ("fp32", "tf32", "bf16")


# ---- variants -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Variant:
    """One row of the table. ``None`` fields follow the ``auto`` runtime (run_experiment's choices)."""

    name: str
    loop: str = "package"  # package (TrainStep + BatchLoader) | plain (minimal loop, fixed batch)
    precision: str | None = None  # fp32 | tf32 | bf16
    compile: bool | None = None
    attention: str = "fused"  # fused: F.scaled_dot_product_attention(is_causal) | naive: softmax + mask
    optimizer: str = "package"  # package | torch-foreach | torch-loop | torch-fused | compiled
    description: str = ""


def _precision_variants() -> list[Variant]:
    out = []
    for loop in ("package", "plain"):
        for p in PRECISIONS:
            for c in (False, True):
                name = f"{'plain-' if loop == 'plain' else ''}{p}{'+compile' if c else ''}"
                what = "minimal plain loop" if loop == "plain" else "TrainStep"
                out.append(
                    Variant(name, loop, p, c, description=f"{what}, {p}, compile {'on' if c else 'off'}")
                )
    return out


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant(
            "auto",
            description="run_experiment's own path: setup_runtime auto choices, TrainStep, BatchLoader",
        ),
        Variant(
            "plain", loop="plain", description="minimal plain-PyTorch loop, auto's precision and compile"
        ),
        *_precision_variants(),
        Variant(
            "naive-attention",
            attention="naive",
            description="auto, with functional.scaled_dot_product_attention (softmax + causal mask)",
        ),
        Variant(
            "torch-adamw-foreach",
            optimizer="torch-foreach",
            description="auto, with torch.optim.AdamW(foreach=True)",
        ),
        Variant(
            "torch-adamw-loop",
            optimizer="torch-loop",
            description="auto, with torch.optim.AdamW(foreach=False) (per-parameter loop)",
        ),
        Variant(
            "torch-adamw-fused",
            optimizer="torch-fused",
            description="auto, with torch.optim.AdamW(fused=True)",
        ),
        Variant(
            "compiled-optimizer",
            optimizer="compiled",
            description="auto, with clipping + torch AdamW(tensor lr) step under torch.compile",
        ),
    ]
}

DEFAULT_VARIANTS = {
    "cuda": "auto,plain,fp32,tf32,bf16,tf32+compile,bf16+compile,plain-bf16,naive-attention,"
    "torch-adamw-fused,compiled-optimizer",
    "cpu": "auto,plain,fp32,fp32+compile,plain-fp32,bf16,bf16+compile,naive-attention,"
    "torch-adamw-loop,compiled-optimizer",
    "mps": "auto,plain,fp32,bf16,naive-attention,torch-adamw-foreach",
}


def variant_settings(v: Variant, auto: Runtime) -> tuple[str, bool]:
    """(precision, compile) of a variant: its own, or the auto runtime's where it has none."""
    if v.precision is not None:
        precision = v.precision
    elif auto.dtype == "fp32":
        precision = "tf32" if auto.tf32 else "fp32"
    else:
        precision = auto.dtype
    return precision, auto.compile if v.compile is None else v.compile


def skip_reason(v: Variant, device: torch.device) -> str | None:
    """Why a variant makes no sense on this device (None = run it)."""
    if v.precision == "tf32" and device.type != "cuda":
        return "TF32 is a CUDA tensor-core mode; there is no TF32 on this device"
    if v.optimizer == "torch-fused" and not _fused_adamw_supported(device):
        return f"torch.optim.AdamW(fused=True) is not supported on {device.type} in torch {torch.__version__}"
    if v.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "this GPU has no bf16"
    return None


def _fused_adamw_supported(device: torch.device) -> bool:
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        return device.type in _get_fused_kernels_supported_devices()
    except ImportError:  # pragma: no cover - older torch
        return device.type == "cuda"


def parse_variants(text: str | None, device: torch.device) -> list[str]:
    """Variant names to run, ``auto`` first (always: it is the reference for the table and the JSON)."""
    names = [
        n.strip() for n in (text or DEFAULT_VARIANTS.get(device.type, "auto,plain")).split(",") if n.strip()
    ]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise UserError(
            f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)} (see --list-variants)"
        )
    return ["auto", *dict.fromkeys(n for n in names if n != "auto")]


# ---- precision / runtime helpers ---------------------------------------------------------------
def variant_runtime(v: Variant, auto: Runtime, cfg: ExperimentConfig) -> Runtime:
    if v.precision is None and v.compile is None:
        return auto
    precision, compile_on = variant_settings(v, auto)
    # bf16 keeps run_experiment's TF32 setting (it only touches fp32 matmuls outside autocast).
    dtype, tf32 = ("fp32", True) if precision == "tf32" else (precision, precision != "fp32" and auto.tf32)
    return setup_runtime(
        str(auto.device), dtype, "on" if compile_on else "off", tf32, run_tokens=cfg.total_tokens
    )


def apply_tf32(runtime: Runtime) -> None:
    """Re-apply a runtime's TF32 switches (they are process-global; variants run interleaved)."""
    if runtime.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = runtime.tf32
        torch.backends.cudnn.allow_tf32 = runtime.tf32
        torch.set_float32_matmul_precision("high" if runtime.tf32 else "highest")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def random_tokens(cfg: ExperimentConfig, seed: int = 0, windows: int = 64) -> np.ndarray:
    """Uniform random token ids of the config's vocabulary, enough for many distinct windows."""
    n = max(cfg.batch_size * windows * (cfg.context_length + 1), 1 << 20)
    dtype = np.uint16 if cfg.vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32
    return np.random.default_rng(seed).integers(0, cfg.vocab_size, size=n).astype(dtype)


# ---- naive attention ----------------------------------------------------------------------------
def naive_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_):
    """F.scaled_dot_product_attention's signature on top of the package's naive softmax attention."""
    if is_causal:
        mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
        attn_mask = mask if attn_mask is None else attn_mask & mask
    return basics_functional.scaled_dot_product_attention(q, k, v, attn_mask)


def _naive_functional() -> types.ModuleType:
    shim = types.ModuleType("torch.nn.functional_naive_attention")
    shim.__dict__.update({k: v for k, v in vars(F).items() if not k.startswith("__")})
    shim.scaled_dot_product_attention = naive_sdpa
    return shim


_NAIVE_F = _naive_functional()


@contextlib.contextmanager
def attention_impl(kind: str):
    """Swap the model's attention kernel for the duration (model.py calls ``F.scaled_dot_product_attention``)."""
    if kind == "fused":
        yield
        return
    saved = model_module.F
    model_module.F = _NAIVE_F
    try:
        yield
    finally:
        model_module.F = saved


# ---- the minimal plain loop ---------------------------------------------------------------------
class PlainLoop:
    """The baseline: what a minimal hand-written PyTorch training loop does with the same model and batch.

    Same init (seed, TransformerLM), same learning-rate schedule and hyper-parameters; torch.optim.AdamW with
    its defaults, F.cross_entropy, torch.nn.utils.clip_grad_norm_; ``torch.compile(model)`` when compiling.
    """

    def __init__(
        self, cfg: ExperimentConfig, device: torch.device, dtype: str = "fp32", compile: bool = False
    ):
        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        self.model = TransformerLM(
            cfg.vocab_size,
            cfg.context_length,
            cfg.d_model,
            cfg.num_layers,
            cfg.num_heads,
            cfg.d_ff,
            cfg.rope_theta,
            device=device,
        )
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=cfg.max_lr,
            betas=(cfg.beta1, cfg.beta2),
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
        )
        self.forward = torch.compile(self.model) if compile else self.model
        autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype)
        self.autocast = (
            (lambda: torch.autocast(device.type, dtype=autocast_dtype))
            if autocast_dtype
            else contextlib.nullcontext
        )

    def step(self, it: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        lr = get_lr_cosine_schedule(it, cfg.max_lr, cfg.min_lr, cfg.warmup_steps, cfg.cosine_cycle_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with self.autocast():
            logits = self.forward(x)
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss


# ---- runners: one per variant -------------------------------------------------------------------
class Runner:
    """Builds one variant and runs its steps; ``run(start, n)`` enqueues n steps, ``finish()`` syncs."""

    def __init__(self, variant: Variant, cfg: ExperimentConfig, auto: Runtime, tokens: np.ndarray):
        self.variant, self.cfg, self.device = variant, cfg, auto.device
        self.precision, self.compile = variant_settings(variant, auto)
        self.runtime = variant_runtime(variant, auto, cfg)
        self.loader: BatchLoader | None = None
        with self.active():
            if variant.loop == "plain":
                self.plain = PlainLoop(cfg, self.device, self.runtime.dtype, self.compile)
                gen = torch.Generator().manual_seed(cfg.seed)
                shape = (cfg.batch_size, cfg.context_length)
                self.x = torch.randint(0, cfg.vocab_size, shape, generator=gen).to(self.device)
                self.y = torch.randint(0, cfg.vocab_size, shape, generator=gen).to(self.device)
                self.model = self.plain.model
                self.loss_sum = None
            else:
                self.step_fn = TrainStep(cfg, self.runtime)
                self.model = self.step_fn.model
                self._set_optimizer(variant.optimizer)
                self.loader = BatchLoader(tokens, cfg.batch_size, cfg.context_length, cfg.seed, self.device)
                self.loss_sum = torch.zeros((), device=self.device)

    def _set_optimizer(self, kind: str) -> None:
        cfg, params = self.cfg, list(self.model.parameters())
        kwargs = dict(betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay)
        if kind == "package":
            return
        if kind == "compiled":
            # A tensor lr lets the compiled step see a new lr every step without recompiling (torch allows it
            # with foreach=False; under compile the per-parameter loop is fused by inductor anyway).
            opt = torch.optim.AdamW(params, lr=torch.tensor(cfg.max_lr), foreach=False, **kwargs)
            self.step_fn.optimizer = opt

            @torch.compile
            def clip_and_step():
                gradient_clipping(params, cfg.grad_clip)
                opt.step()

            self.compiled_opt_step = clip_and_step
            return
        extra = {
            "torch-foreach": dict(foreach=True),
            "torch-loop": dict(foreach=False),
            "torch-fused": dict(fused=True),
        }
        self.step_fn.optimizer = torch.optim.AdamW(params, lr=cfg.max_lr, **extra[kind], **kwargs)

    @contextlib.contextmanager
    def active(self):
        apply_tf32(self.runtime)
        with attention_impl(self.variant.attention):
            yield

    def one_step(self, it: int) -> None:
        if self.variant.loop == "plain":
            self.plain.step(it, self.x, self.y)
            return
        x, y = self.loader.get(it)
        if self.variant.optimizer == "compiled":
            loss = self._compiled_opt_train_step(it, x, y)
        else:
            loss, _grad_norm, _lr = self.step_fn(it, x, y)
        self.loss_sum += loss.detach().float()  # as run_experiment does every step

    def _compiled_opt_train_step(self, it, x, y):
        cfg, step_fn = self.cfg, self.step_fn
        lr = get_lr_cosine_schedule(it, cfg.max_lr, cfg.min_lr, cfg.warmup_steps, cfg.cosine_cycle_steps)
        for group in step_fn.optimizer.param_groups:
            group["lr"].fill_(lr)
        with self.runtime.autocast():
            loss = step_fn.loss_fn(x, y)
        loss.backward()
        self.compiled_opt_step()
        step_fn.optimizer.zero_grad(set_to_none=True)
        return loss

    def run(self, start: int, n: int) -> None:
        with self.active():
            for it in range(start, start + n):
                self.one_step(it)

    def finish(self) -> None:
        """The log step's read-back (package) or a plain synchronisation."""
        synchronize(self.device)
        if self.loss_sum is not None:
            self.loss_sum.item()

    def instrumented(self, start: int, n: int) -> dict[str, float]:
        """ms per phase, with a synchronisation after each phase: mirrors TrainStep.__call__ step by step."""
        if self.variant.loop != "package" or self.variant.optimizer == "compiled":
            return {}
        cfg, fn, dev = self.cfg, self.step_fn, self.device
        phases = {"data_wait": [], "forward": [], "backward": [], "optimizer": []}
        with self.active():
            for it in range(start, start + n):
                synchronize(dev)
                t0 = time.perf_counter()
                x, y = self.loader.get(it)
                synchronize(dev)
                t1 = time.perf_counter()
                lr = get_lr_cosine_schedule(
                    it, cfg.max_lr, cfg.min_lr, cfg.warmup_steps, cfg.cosine_cycle_steps
                )
                for group in fn.optimizer.param_groups:
                    group["lr"] = lr
                with fn.runtime.autocast():
                    loss = fn.loss_fn(x, y)
                synchronize(dev)
                t2 = time.perf_counter()
                loss.backward()
                synchronize(dev)
                t3 = time.perf_counter()
                gradient_clipping(fn.model.parameters(), cfg.grad_clip)
                fn.optimizer.step()
                fn.optimizer.zero_grad(set_to_none=True)
                self.loss_sum += loss.detach().float()
                synchronize(dev)
                t4 = time.perf_counter()
                for key, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                    phases[key].append(dt * 1e3)
        out = {k: statistics.median(v) for k, v in phases.items()}
        out["forward_backward"] = out["forward"] + out["backward"]
        out["total"] = sum(out[k] for k in ("data_wait", "forward", "backward", "optimizer"))
        return out

    def close(self) -> None:
        if self.loader is not None:
            self.loader.close()


# ---- memory --------------------------------------------------------------------------------------
def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        with contextlib.suppress(OSError):  # Linux: "5" resets the process's peak RSS (VmHWM)
            Path("/proc/self/clear_refs").write_text("5")


def _peak_memory(device: torch.device) -> tuple[int | None, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda max_memory_allocated"
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024, "process peak RSS (VmHWM, reset per variant)"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss * (1 if sys.platform == "darwin" else 1024), "process max RSS so far"


# ---- peak FLOP/s and MFU -------------------------------------------------------------------------
def measure_peak_flops(device: torch.device, precision: str, seconds: float = 1.0) -> float:
    """FLOP/s of a large square matmul in ``precision`` on ``device``, timed on the spot (best of repeats)."""
    n = 8192 if device.type == "cuda" else 2048
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision())
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.set_float32_matmul_precision("high" if precision == "tf32" else "highest")
    try:
        gen = torch.Generator(device=device).manual_seed(0)
        a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
        b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
        torch.mm(a, b)
        synchronize(device)
        best, spent, reps = math.inf, 0.0, 0
        while (spent < seconds or reps < 3) and reps < 50:
            inner = 10 if device.type == "cuda" else 1
            t0 = time.perf_counter()
            for _ in range(inner):
                torch.mm(a, b)
            synchronize(device)
            dt = (time.perf_counter() - t0) / inner
            best, spent, reps = min(best, dt), spent + dt * inner, reps + 1
        return 2 * n**3 / best
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved[0]
        torch.set_float32_matmul_precision(saved[1])


def config_flops_per_token(cfg: ExperimentConfig) -> float:
    from cs336_basics.basics.hardware import flops_per_token

    return flops_per_token(
        vocab_size=cfg.vocab_size,
        context_length=cfg.context_length,
        d_model=cfg.d_model,
        num_layers=cfg.num_layers,
        d_ff=cfg.d_ff,
        training=True,
    )


def mfu(tokens_per_sec: float, flops_per_token: float, peak_flops: float | None) -> float | None:
    """Model FLOPs utilisation: achieved model FLOP/s over the stated peak (None without a peak)."""
    if not peak_flops:
        return None
    from cs336_basics.basics.hardware import model_flops_utilization

    return model_flops_utilization(tokens_per_sec, flops_per_token, peak_flops)


class Peaks:
    """Peak FLOP/s per precision: hardware.py's table for a known GPU, else (or with --measure-peak) timed."""

    def __init__(self, runtime: Runtime, measure: bool):
        self.device, self.name, self.measure = runtime.device, runtime.device_name(), measure
        self._cache: dict[str, tuple[float | None, str]] = {}

    def get(self, precision: str) -> tuple[float | None, str]:
        if precision not in self._cache:
            self._cache[precision] = self._lookup(precision)
        return self._cache[precision]

    def _lookup(self, precision: str) -> tuple[float | None, str]:
        if not self.measure and self.device.type == "cuda":
            from cs336_basics.basics.hardware import peak_flops

            value = peak_flops(self.name, precision)
            if value:
                return float(value), f"hardware.py table: {self.name}, dense {precision}"
        if not self.measure:
            return None, f"no table peak for {self.name}; pass --measure-peak"
        value = measure_peak_flops(self.device, precision)
        return value, f"measured: {precision} matmul on {self.name}"

    def remeasure(self, rows: list[dict], fpt: float) -> None:
        """Time the measured peaks again and keep the higher (a busy shared machine only ever lowers a
        measurement), then recompute the rows' MFU against the final peaks."""
        if not self.measure:
            return
        for precision, (value, source) in list(self._cache.items()):
            again = measure_peak_flops(self.device, precision)
            self._cache[precision] = (max(value or 0.0, again), f"{source} (best of two timings)")
        for r in rows:
            r["peak_flops"], r["peak_source"] = self.get(r["precision"])
            r["mfu"] = mfu(r["tokens_per_sec"], fpt, r["peak_flops"])


# ---- timing ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class Measurement:
    runner: Runner
    warmup_s: float = 0.0
    round_s: list[float] = dataclasses.field(default_factory=list)
    peak_memory: int | None = None
    memory_kind: str = ""
    next_it: int = 0


def warm_up(runner: Runner, warmup: int) -> Measurement:
    m = Measurement(runner)
    synchronize(runner.device)
    t0 = time.perf_counter()
    runner.run(0, warmup)
    runner.finish()
    m.warmup_s = time.perf_counter() - t0
    m.next_it = warmup
    return m


def timed_round(m: Measurement, steps: int) -> None:
    dev = m.runner.device
    synchronize(dev)
    _reset_peak_memory(dev)
    t0 = time.perf_counter()
    m.runner.run(m.next_it, steps)
    m.runner.finish()  # the only synchronisation: after the timed region
    m.round_s.append(time.perf_counter() - t0)
    peak, m.memory_kind = _peak_memory(dev)
    m.peak_memory = max(m.peak_memory or 0, peak or 0) or None
    m.next_it += steps


def result_row(
    m: Measurement, cfg: ExperimentConfig, steps: int, warmup: int, peaks: Peaks, fpt: float
) -> dict:
    v, runner = m.runner.variant, m.runner
    seconds = statistics.median(m.round_s)
    tokens_per_sec = steps * cfg.tokens_per_step / seconds
    peak, peak_source = peaks.get(runner.precision)
    return {
        "variant": v.name,
        "tokens_per_sec": tokens_per_sec,
        "ms_per_step": 1e3 * seconds / steps,
        "mfu": mfu(tokens_per_sec, fpt, peak),
        "precision": runner.precision,
        "compile": runner.compile,
        "loop": v.loop,
        "attention": v.attention,
        "optimizer": v.optimizer,
        "description": v.description,
        "peak_flops": peak,
        "peak_source": peak_source,
        "peak_memory_bytes": m.peak_memory,
        "peak_memory_kind": m.memory_kind,
        "startup_s": max(m.warmup_s - warmup * seconds / steps, 0.0),
        "warmup_s": m.warmup_s,
        "rounds_tokens_per_sec": [steps * cfg.tokens_per_step / s for s in m.round_s],
    }


def add_plain_ratios(rows: list[dict]) -> None:
    """vs_plain: tokens/s over the plain loop's with the same precision and compile setting (if measured)."""
    plain = {(r["precision"], r["compile"]): r for r in rows if r["loop"] == "plain"}
    for r in rows:
        ref = plain.get((r["precision"], r["compile"]))
        if ref is None or r["loop"] != "package":
            r["vs_plain"] = r["plain_reference"] = r["vs_plain_paired"] = None
            continue
        r["vs_plain"] = r["tokens_per_sec"] / ref["tokens_per_sec"]
        r["plain_reference"] = ref["variant"]
        # With --rounds, round i of every variant ran back to back: the median of the per-round ratios is
        # less exposed to a shared machine's drifting speed than the ratio of the medians.
        a, b = r["rounds_tokens_per_sec"], ref["rounds_tokens_per_sec"]
        r["vs_plain_paired"] = statistics.median(x / y for x, y in zip(a, b)) if len(a) == len(b) else None


def same_as(v: Variant, measured: dict[str, Variant], auto: Runtime) -> str | None:
    """A measured variant with identical settings (e.g. fp32+compile = auto on a CPU), to alias not re-run."""
    key = (v.loop, *variant_settings(v, auto), v.attention, v.optimizer)
    for name, other in measured.items():
        if (other.loop, *variant_settings(other, auto), other.attention, other.optimizer) == key:
            return name
    return None


def _cache_counters() -> dict[str, int]:
    """Inductor FX-graph and AOTAutograd cache hit/miss counters (process totals)."""
    if "torch._dynamo" not in sys.modules:  # nothing compiled yet (and importing dynamo takes seconds)
        return {}
    from torch._dynamo.utils import counters

    return {
        f"{group}.{k}": int(v)
        for group in ("inductor", "aot_autograd")
        for k, v in counters[group].items()
        if "cache" in k and ("hit" in k or "miss" in k or "bypass" in k)
    }


def _dynamo_reset() -> None:
    if "torch._dynamo" in sys.modules:
        torch._dynamo.reset()


def benchmark(
    cfg: ExperimentConfig,
    auto: Runtime,
    names: list[str],
    *,
    steps: int,
    warmup: int,
    rounds: int,
    peaks: Peaks,
    breakdown_steps: int,
    on_row: Callable[[list[dict], list[dict]], None] | None = None,
    after_first: Callable[[Runner, dict], None] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[list[dict], list[dict], dict]:
    """Warm up and time each variant; returns (rows, skipped, instrumented breakdown of the first).

    ``after_first(runner, row)`` runs on the warm ``auto`` runner before any other variant resets dynamo.
    """
    tokens = random_tokens(cfg, cfg.seed)
    fpt = config_flops_per_token(cfg)
    rows: list[dict] = []
    skipped: list[dict] = []
    breakdown: dict = {}
    measured: dict[str, Variant] = {}
    live: list[Measurement] = []
    interleave = rounds > 1
    if interleave:  # all variants stay alive; compiled ones share dynamo's per-code-object cache
        limit = max(torch._dynamo.config.cache_size_limit, 8 * len(names))
        torch._dynamo.config.cache_size_limit = limit
        torch._dynamo.config.accumulated_cache_size_limit = max(
            torch._dynamo.config.accumulated_cache_size_limit, limit
        )

    def emit(m: Measurement, cache: dict) -> None:
        rows.append({**result_row(m, cfg, steps, warmup, peaks, fpt), "compile_cache": cache})
        add_plain_ratios(rows)
        r = rows[-1]
        log(
            f"  {r['variant']:<22} {r['tokens_per_sec']:>12,.0f} tok/s {r['ms_per_step']:>10.1f} ms/step"
            f"  startup {r['startup_s']:.1f} s"
        )
        if on_row:
            on_row(rows, skipped)

    caches: dict[str, dict] = {}
    for name in names:
        v = VARIANTS[name]
        reason = skip_reason(v, auto.device)
        alias = same_as(v, measured, auto) if name != "auto" else None
        if reason or alias:
            skipped.append(
                {"variant": name, "reason": reason or f"same settings as '{alias}' (not re-measured)"}
            )
            log(f"  {name:<22} skipped: {skipped[-1]['reason']}")
            continue
        if not interleave:
            _dynamo_reset()  # fresh dynamo caches per variant (recompile limits, guard overhead)
        log(f"  {name:<22} building and warming up ({warmup} step(s))...")
        before = _cache_counters()
        runner = Runner(v, cfg, auto, tokens)
        m = warm_up(runner, warmup)
        after = _cache_counters()
        caches[name] = {k: n - before.get(k, 0) for k, n in after.items() if n - before.get(k, 0)}
        measured[name] = v
        if interleave:
            live.append(m)
            continue
        for _ in range(rounds):
            timed_round(m, steps)
        if name == "auto" and breakdown_steps > 0:
            breakdown = runner.instrumented(m.next_it, breakdown_steps)
            m.next_it += breakdown_steps
        emit(m, caches[name])
        if name == "auto" and after_first is not None:
            after_first(runner, rows[0])
        runner.close()
        del runner, m
    if interleave:
        for r in range(rounds):
            log(f"  round {r + 1}/{rounds}")
            k = r % len(live)  # rotate the order, so no variant always runs first (or last) in a round
            for m in live[k:] + live[:k]:
                timed_round(m, steps)
        for m in live:
            emit(m, caches[m.runner.variant.name])
        first = live[0]
        if breakdown_steps > 0:
            breakdown = first.runner.instrumented(first.next_it, breakdown_steps)
        if after_first is not None:
            after_first(first.runner, rows[0])
        for m in live:
            m.runner.close()
    return rows, skipped, breakdown


# ---- sync check (CUDA) -------------------------------------------------------------------------------
def sync_check(runner: Runner, start: int, steps: int) -> dict:
    """Run ``steps`` hot-loop steps under torch.cuda.set_sync_debug_mode("warn") and list every host sync.

    The log step's read-back (``loss_sum.item()`` every log_interval steps) is outside the checked region.
    """
    if runner.device.type != "cuda":
        return {"ran": False, "note": "--sync-check needs CUDA (torch.cuda.set_sync_debug_mode)"}
    sites: dict[tuple[str, str], int] = {}
    root = str(Path(__file__).resolve().parents[1])

    def record(message, category, filename, lineno, file=None, line=None):
        frames = [f for f in traceback.extract_stack()[:-1] if f.filename.startswith(root)]
        where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else f"{filename}:{lineno}"
        key = (str(message).splitlines()[0][:200], where)
        sites[key] = sites.get(key, 0) + 1

    synchronize(runner.device)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with runner.active():
                for it in range(start, start + steps):
                    runner.one_step(it)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    runner.finish()
    found = [
        {"message": m, "where": w, "count": c} for (m, w), c in sorted(sites.items(), key=lambda kv: -kv[1])
    ]
    return {"ran": True, "steps": steps, "host_syncs": sum(sites.values()), "sites": found}


# ---- evaluation / checkpoint / logging overhead --------------------------------------------------------
def measure_overhead(runner: Runner, cfg: ExperimentConfig, ms_per_step: float, log=print) -> dict:
    """Cost of one evaluation, checkpoint and log step, measured with the run's own pieces, and their share of
    a run's wallclock at the preset's intervals (computed; see the README for the method).

    Evaluation mirrors run_experiment's ``evaluate()`` (the fixed validation windows, no_grad, autocast, the
    same compiled loss); the first call (which compiles the inference graph) is reported as startup.
    Checkpoints go through CheckpointWriter (foreground snapshot; the write runs on a background thread).
    """
    from cs336_basics.basics.checkpoint import CheckpointWriter
    from cs336_basics.basics.divergence import DivergenceRule, divergence_reason, smooth
    from cs336_basics.experiment_log import ExperimentTracker

    fn, dev, runtime = runner.step_fn, runner.device, runner.runtime
    model, optimizer = fn.model, fn.optimizer
    val = random_tokens(cfg, cfg.seed + 1, windows=cfg.eval_batches + 4)
    val_set = eval_batches(val, cfg.batch_size, cfg.context_length, cfg.eval_batches, dev)

    @torch.no_grad()
    def evaluate() -> float:
        model.eval()
        total = torch.zeros((), device=dev)
        for x, y in val_set:
            with runtime.autocast():
                total += fn.loss_fn(x, y).float()
        model.train()
        return (total / len(val_set)).item()

    def timed(f, repeats=1):
        times = []
        for _ in range(repeats):
            synchronize(dev)
            t0 = time.perf_counter()
            f()
            synchronize(dev)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    # Training steps timed right before and after the evaluation: the share compares costs measured under the
    # same conditions (a shared CPU's speed drifts between the benchmark's timed region and this point).
    n_adjacent, next_it = (2 if dev.type == "cpu" else 20), [2 * 10**6]

    def train_steps():
        runner.run(next_it[0], n_adjacent)
        runner.finish()
        next_it[0] += n_adjacent

    with runner.active():
        log("  overhead: first evaluation (compiles the inference graph if compiling)...")
        first_eval_s = timed(evaluate)
        before_s = timed(train_steps)
        eval_s = timed(evaluate, 1 if dev.type == "cpu" else 3)
        after_s = timed(train_steps)
    adjacent_ms = 1e3 * (before_s + after_s) / (2 * n_adjacent)
    out: dict = {
        "eval_first_s": first_eval_s,
        "eval_s": eval_s,
        "eval_startup_s": max(first_eval_s - eval_s, 0.0),
        "ms_per_step_adjacent": adjacent_ms,
        "ms_per_step_benchmark": ms_per_step,
    }

    with tempfile.TemporaryDirectory(prefix="cs336-bench-") as tmp:
        tmp = Path(tmp)
        writer = CheckpointWriter()

        def ckpt_obj(kind):
            obj = {"model": model.state_dict(), "iteration": 1, "config": cfg.to_dict(), "kind": kind}
            if kind != "best":
                obj["optimizer"] = optimizer.state_dict()
            return obj

        for kind in ("latest", "best"):
            t0 = time.perf_counter()
            writer.submit(ckpt_obj(kind), tmp / f"{kind}.pt")
            fg = time.perf_counter() - t0
            writer.wait()
            out[f"ckpt_{kind}_foreground_s"] = fg
            out[f"ckpt_{kind}_background_s"] = time.perf_counter() - t0 - fg
        out["checkpoint_bytes"] = (tmp / "latest.pt").stat().st_size
        t0 = time.perf_counter()
        writer.submit(ckpt_obj("final"), tmp / "final.pt", background=False)
        out["ckpt_final_s"] = time.perf_counter() - t0

        tracker = ExperimentTracker({**cfg.to_dict()}, tmp / "run", max_steps=cfg.max_steps)
        tracker.start()
        rule = DivergenceRule.from_config(cfg)
        loss_sum, smoothed = torch.zeros((), device=dev) + 3.0, None
        grad_norm = torch.ones((), device=dev)
        n_log = 200
        t0 = time.perf_counter()
        for i in range(n_log):  # a log step: read-back, divergence rule, metrics row
            step = (i + 1) * cfg.log_interval
            train_loss = loss_sum.item() / cfg.log_interval
            smoothed = smooth(smoothed, train_loss)
            divergence_reason(
                rule,
                step=step,
                max_steps=cfg.max_steps,
                loss=train_loss,
                smoothed_loss=smoothed,
                initial_loss=10.0,
                min_smoothed_loss=smoothed,
                reference_loss=None,
            )
            tracker.log_metrics(
                step, train_loss, 1e-3, 1.0, 1.0, tokens=step, wallclock_s=1.0, grad_norm=float(grad_norm)
            )
        out["log_step_s"] = (time.perf_counter() - t0) / n_log
        t0 = time.perf_counter()
        for _ in range(20):
            tracker.set_status("running")
        out["status_write_s"] = (time.perf_counter() - t0) / 20
        t0 = time.perf_counter()
        tracker.finish(3.0, 3.0)
        out["finish_s"] = time.perf_counter() - t0
    out.update(overhead_share(cfg, adjacent_ms, out))
    out["share_at_benchmark_rate"] = overhead_share(cfg, ms_per_step, out)["share"]
    return out


def overhead_share(cfg: ExperimentConfig, ms_per_step: float, c: dict) -> dict:
    """Share of a run's wallclock spent on evaluation, checkpoints and logging, from per-event costs ``c``."""
    n = cfg.max_steps
    n_eval = n // cfg.eval_interval + (1 if n % cfg.eval_interval else 0)
    n_latest = (n - 1) // cfg.checkpoint_interval
    n_log = len({s for s in range(cfg.log_interval, n + 1, cfg.log_interval)} | {n})
    train_s = n * ms_per_step / 1e3
    status_writes = train_s / 5.0  # ExperimentTracker's status_interval_s
    parts = {
        "eval": n_eval * c["eval_s"],
        "best_checkpoint": n_eval * c["ckpt_best_foreground_s"],  # upper bound: every eval improves
        "latest_checkpoint": n_latest * c["ckpt_latest_foreground_s"],
        "log": n_log * c["log_step_s"] + status_writes * c["status_write_s"],
        "end_of_run": c["ckpt_final_s"] + c["finish_s"],
    }
    background = n_eval * c["ckpt_best_background_s"] + n_latest * c["ckpt_latest_background_s"]
    overhead = sum(parts.values())
    return {
        "counts": {"steps": n, "evals": n_eval, "latest_checkpoints": n_latest, "log_steps": n_log},
        "train_s": train_s,
        "overhead_parts_s": parts,
        "share": overhead / (train_s + overhead),
        "share_with_background_writes": (overhead + background) / (train_s + overhead + background),
    }


def overhead_run(cfg: ExperimentConfig, steps: int, ms_per_step: float, log=print) -> dict:
    """Train ``steps`` steps through run_experiment itself (random tokens, the config's intervals) and split
    its wallclock into training (steps x the benchmark's ms/step), startup and overhead."""
    from cs336_basics.basics.trainer import run_experiment

    # Random tokens cannot be learned: switch the divergence rule off (a "stall" would stop the run early).
    never = {
        "divergence_explode_factor": 1e9,
        "divergence_rebound_margin": 1e9,
        "divergence_stall_fraction": 1e9,
        "divergence_stall_margin": 1e9,
    }
    never = {k: v for k, v in never.items() if hasattr(cfg, k)}
    run_cfg = dataclasses.replace(cfg, max_steps=steps, target_val_loss=None, **never)
    train, val = random_tokens(cfg, cfg.seed), random_tokens(cfg, cfg.seed + 1, windows=cfg.eval_batches + 4)
    with tempfile.TemporaryDirectory(prefix="cs336-bench-run-") as tmp:
        log(f"  overhead run: run_experiment for {steps} steps into a temporary directory...")
        t0 = time.perf_counter()
        summary = run_experiment(run_cfg, train, val, Path(tmp) / "run", resume="never", progress=False)
        total_s = time.perf_counter() - t0
        import csv

        with open(Path(tmp) / "run" / "metrics.csv") as f:
            rows = [r for r in csv.DictReader(f) if r.get("ms_per_step")]
    loop_s = float(rows[-1]["wallclock_s"])
    first = rows[0]
    first_steps = int(first["step"])
    train_startup_s = max(first_steps * (float(first["ms_per_step"]) - ms_per_step) / 1e3, 0.0)
    train_s = steps * ms_per_step / 1e3
    overhead_s = max(loop_s - train_s - train_startup_s, 0.0)
    return {
        "steps": steps,
        "intervals": {k: getattr(cfg, k) for k in ("log_interval", "eval_interval", "checkpoint_interval")},
        "call_s": total_s,
        "loop_wallclock_s": loop_s,
        "train_s_at_benchmark_rate": train_s,
        "train_startup_s": train_startup_s,
        "overhead_s": overhead_s,
        "share_incl_eval_compile": overhead_s / max(loop_s - train_startup_s, 1e-9),
        "status": summary.get("status"),
        "summary_eval_s": summary.get("eval_s"),
        "summary_checkpoint_s": summary.get("checkpoint_s"),
        "logged_tokens_per_sec_median": statistics.median(
            float(r["tokens_per_sec"]) for r in rows[1:] or rows
        ),
    }


# ---- output --------------------------------------------------------------------------------------------
def compile_cache_info() -> dict:
    info: dict = {}
    with contextlib.suppress(Exception):
        import torch._inductor.config as inductor_config
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        info["fx_graph_cache"] = inductor_config.fx_graph_cache
        info["cache_dir"] = cache_dir()
    with contextlib.suppress(Exception):
        import torch._functorch.config as functorch_config

        info["autograd_cache"] = functorch_config.enable_autograd_cache
    return info


def _fmt_bytes(n: int | None) -> str:
    return "-" if not n else f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def format_table(rows: list[dict], skipped: list[dict]) -> str:
    head = f"{'variant':<22} {'precision':<9} {'compile':<7} {'tokens/s':>11} {'ms/step':>9} {'MFU':>7} {'peak mem':>10} {'vs plain':>9} {'startup':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        mfu_s = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        ratio = "-" if r.get("vs_plain") is None else f"{r['vs_plain']:.3f}x"
        lines.append(
            f"{r['variant']:<22} {r['precision']:<9} {'on' if r['compile'] else 'off':<7} {r['tokens_per_sec']:>11,.0f}"
            f" {r['ms_per_step']:>9.1f} {mfu_s:>7} {_fmt_bytes(r['peak_memory_bytes']):>10} {ratio:>9} {r['startup_s']:>7.1f}s"
        )
    for s in skipped:
        lines.append(f"{s['variant']:<22} skipped: {s['reason']}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cs336-bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--preset", default=None, choices=list(PRESETS), help="default: full on CUDA, low-resource elsewhere"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps per round (default 20 CUDA, 3 CPU)"
    )
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 5 CUDA, 2 CPU)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="timed rounds, round-robin over variants; median"
    )
    parser.add_argument("--variants", default=None, help="comma-separated subset (auto always runs first)")
    parser.add_argument("--list-variants", action="store_true", help="list the variants and exit")
    parser.add_argument("--measure-peak", action="store_true", help="time a large matmul for the MFU peak")
    parser.add_argument("--breakdown-steps", type=int, default=None, help="instrumented steps (0 = none)")
    parser.add_argument("--sync-check", action="store_true", help="CUDA: report host syncs in the hot loop")
    parser.add_argument("--overhead", action="store_true", help="measure eval/checkpoint/log cost and share")
    parser.add_argument("--overhead-run", type=int, default=0, metavar="N", help="run_experiment for N steps")
    parser.add_argument("--json", type=Path, default=None, help="write the results here (atomically)")
    add_config_arguments(parser)
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_variants:
        for v in VARIANTS.values():
            print(f"{v.name:<22} {v.description}")
        return 0
    overrides = config_overrides(args)
    device = resolve_device(overrides.get("device", "auto"))
    preset = args.preset or ("full" if device.type == "cuda" else "low-resource")
    cfg = _create_config(preset, **overrides).resolved()
    cuda = device.type == "cuda"
    steps = args.steps if args.steps is not None else (20 if cuda else 3)
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 2)
    breakdown_steps = (
        args.breakdown_steps if args.breakdown_steps is not None else min(steps, 5 if cuda else 1)
    )
    for flag, value, low in (("--steps", steps, 1), ("--warmup", warmup, 0), ("--rounds", args.rounds, 1)):
        if value < low:
            raise UserError(f"{flag} must be at least {low}, got {value}")
    names = parse_variants(args.variants, device)

    # What run_experiment would choose for this config and device (device, precision, compile, TF32).
    auto = setup_runtime(cfg.device, cfg.dtype, cfg.compile, cfg.tf32, run_tokens=cfg.total_tokens)
    peaks = Peaks(auto, args.measure_peak)
    report = {
        "device": auto.device_name() if auto.device.type != "cpu" else _cpu_model(),
        "device_type": auto.device.type,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "config": cfg.to_dict(),
        "runtime": auto.as_dict(),
        "steps": steps,
        "warmup": warmup,
        "rounds": args.rounds,
        "flops_per_token": config_flops_per_token(cfg),
        "results": [],
        "skipped": [],
    }

    def save(partial: bool = True) -> None:
        if args.json is not None:
            from cs336_basics.atomic import atomic_write_json

            atomic_write_json(args.json, {**report, "partial": partial})

    def on_row(rows, skipped):
        report["results"], report["skipped"] = rows, skipped
        save()

    print(
        f"cs336-bench: preset {preset} | {cfg.num_layers} layers d_model {cfg.d_model} d_ff {cfg.d_ff} | "
        f"batch {cfg.batch_size} x context {cfg.context_length} = {cfg.tokens_per_step:,} tokens/step | "
        f"{report['flops_per_token'] / 1e6:.1f} MFLOP/token"
    )
    print(f"auto runtime: {auto.banner()}")
    for note in auto.notes:
        print(f"  {note}")
    print(
        f"{warmup} warm-up + {steps} timed step(s) x {args.rounds} round(s) per variant; torch {torch.__version__}"
    )

    def after_first(runner: Runner, row: dict) -> None:
        start = 10**6  # any step index: batches are a function of (seed, step)
        if args.sync_check:
            report["sync_check"] = sc = sync_check(runner, start, steps)
            if sc["ran"]:
                print(
                    f"  sync check: {sc['host_syncs']} host synchronisation(s) in {sc['steps']} hot-loop steps"
                )
                for s in sc["sites"]:
                    print(f"    {s['count']:>4} x {s['where']}: {s['message']}")
            else:
                print(f"  sync check: {sc['note']}")
            save()
        if args.overhead:
            report["overhead"] = oh = measure_overhead(runner, cfg, row["ms_per_step"])
            print(
                f"  overhead at the preset's intervals (computed from measured costs): {100 * oh['share']:.2f}% "
                f"({100 * oh['share_with_background_writes']:.2f}% counting background checkpoint writes) | "
                f"eval {oh['eval_s']:.2f} s (first {oh['eval_first_s']:.2f} s), checkpoint "
                f"{oh['ckpt_latest_foreground_s']:.3f} s + {oh['ckpt_latest_background_s']:.2f} s background, "
                f"log step {1e3 * oh['log_step_s']:.2f} ms"
            )
            save()

    rows, skipped, breakdown = benchmark(
        cfg,
        auto,
        names,
        steps=steps,
        warmup=warmup,
        rounds=args.rounds,
        peaks=peaks,
        breakdown_steps=breakdown_steps,
        on_row=on_row,
        after_first=after_first,
    )
    peaks.remeasure(rows, report["flops_per_token"])
    report["results"], report["skipped"] = rows, skipped
    report["breakdown_ms"] = breakdown
    if any(r["compile"] for r in rows):
        report["compile_cache"] = compile_cache_info()
    print()
    print(format_table(rows, skipped))
    peak_notes = sorted({f"{r['precision']}: {r['peak_source']}" for r in rows})
    print("MFU peaks: " + "; ".join(peak_notes))
    auto_row = rows[0]
    if auto_row.get("vs_plain") is not None:
        report["package_vs_plain"] = auto_row["vs_plain"]
        print(
            f"package (run_experiment path) / plain loop ({auto_row['plain_reference']}), same precision and "
            f"compile: {auto_row['vs_plain']:.3f}x"
            + (
                f" (median of per-round ratios {auto_row['vs_plain_paired']:.3f}x)"
                if args.rounds > 1 and auto_row.get("vs_plain_paired")
                else ""
            )
        )
    if breakdown:
        print(
            "instrumented pass (synchronised between phases, so slower than the timed loop), ms/step: "
            + ", ".join(f"{k} {v:.1f}" for k, v in breakdown.items())
        )
    save()
    if args.overhead_run:
        _dynamo_reset()
        run = overhead_run(cfg, args.overhead_run, auto_row["ms_per_step"])
        if "overhead" in report:  # the first evaluation's compile is startup, measured by --overhead
            eval_compile = report["overhead"]["eval_startup_s"]
            run["eval_startup_s_from_overhead"] = eval_compile
            run["share"] = max(run["overhead_s"] - eval_compile, 0.0) / max(
                run["loop_wallclock_s"] - run["train_startup_s"] - eval_compile, 1e-9
            )
        report["overhead_run"] = run
        print(
            f"overhead run ({run['steps']} steps through run_experiment): {100 * run['share_incl_eval_compile']:.2f}% "
            f"of the loop's wallclock (incl. the first eval's compile); training startup {run['train_startup_s']:.1f} s"
            + (f"; {100 * run['share']:.2f}% without the eval compile" if "share" in run else "")
        )
    save(partial=False)
    if args.json is not None:
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
