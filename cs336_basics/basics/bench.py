"""cs336-bench: training throughput of the package's own step against an independent plain-PyTorch loop.

    cs336-bench                                          # the preset's run_experiment choices vs the plain loop
    cs336-bench --preset demo --precision fp32 --compile off,on --rounds 3
    cs336-bench --kernels fast,reference --batch-size 16,32 --memory --run 100 --json bench.json

Each variant is one point of precision x compile x batch size (x kernels for the package). ``package`` rows
run the trainer's own parts in ``Trainer.run``'s order: ``Interval.wait_for(BatchLoader.get)``, ``TrainStep``,
the device-side loss sum, and at the end of a round the log step's one transfer and ``Trainer.log``, whose
metrics row gives tokens/s, ms/step, MFU and the data wait. ``plain`` rows are the baseline: a minimal
hand-written loop with no nn.Module and no package code (F.scaled_dot_product_attention, F.rms_norm,
F.cross_entropy, clip_grad_norm_, torch.optim.AdamW fused where supported) on the same shapes.

All variants are built and warmed up first; then ``--rounds`` rounds of ``--steps`` steps each run every
variant back to back (the order rotates), so ``vs plain`` (the median of the per-round ratios) compares
numbers measured side by side on a noisy machine. Memory: CUDA peak allocated during a round over what was
allocated before it; on CPU (``--memory``) a fresh process per variant, peak RSS (VmHWM) over RSS after one
warm-up step. ``--run N`` trains N steps through ``run_experiment`` at the preset's intervals and reports
the evaluation + checkpoint share of its wallclock from summary.json.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import itertools
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cs336_basics.atomic import atomic_write_json
from cs336_basics.basics import config, hardware
from cs336_basics.basics.device import Runtime, resolve_device, set_tf32, setup_runtime, synchronize
from cs336_basics.basics.kernels import KERNELS
from cs336_basics.basics.progress import Interval
from cs336_basics.basics.run_experiment import run_experiment
from cs336_basics.basics.trainer import Trainer
from cs336_basics.errors import UserError, cli_entry, command_parser
from cs336_basics.experiment_log.reader import load_experiment_log
from cs336_basics.formatting import plural

PRECISIONS = (*config.CHOICES["dtype"], "tf32")  # --dtype's, and tf32: fp32 with TF32 matmuls (CUDA)
COMPILE = config.CHOICES["compile"]


def random_tokens(vocab_size: int, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab_size, size=n).astype(np.uint16)


def random_data(cfg, train_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Random train and validation tokens: nothing to learn, but the same work per step as real text."""
    val_tokens = cfg.batch_size * cfg.eval_batches * (cfg.context_length + 2)
    return random_tokens(cfg.vocab_size, train_tokens, cfg.seed), random_tokens(cfg.vocab_size, val_tokens, 1)


def quiet():
    """stdout swallowed: run_experiment's banner and summary, which would interleave with the report."""
    return contextlib.redirect_stdout(io.StringIO())


# ---- the independent baseline ---------------------------------------------------------------------------
def plain_params(cfg, device: torch.device) -> dict[str, torch.Tensor]:
    """The model's weights as plain tensors (q, k, v as one (3d, d) matrix, as a hand-written loop has it)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    d, f, v = cfg.d_model, cfg.d_ff, cfg.vocab_size
    shapes = {"emb": (v, d), "ln_f": (d,), "head": (v, d)}
    for i in range(cfg.num_layers):
        shapes |= {f"{i}.ln1": (d,), f"{i}.qkv": (3 * d, d), f"{i}.o": (d, d), f"{i}.ln2": (d,)}
        shapes |= {f"{i}.w1": (f, d), f"{i}.w3": (f, d), f"{i}.w2": (d, f)}
    params = {}
    for name, shape in shapes.items():
        std = 1.0 if name == "emb" else (2 / sum(shape)) ** 0.5
        t = torch.ones(shape) if len(shape) == 1 else torch.randn(shape, generator=gen) * std
        params[name] = t.to(device).requires_grad_()
    return params


def plain_loss(
    p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, num_heads: int, rope_theta: float
):
    """Mean next-token cross-entropy of the pre-norm RoPE/SwiGLU Transformer, from torch primitives."""
    (b, t), d = x.shape, p["emb"].shape[1]
    dh = d // num_heads
    inv_freq = rope_theta ** (-torch.arange(0, dh, 2, device=x.device) / dh)
    angles = torch.arange(t, device=x.device)[:, None] * inv_freq
    cos, sin = angles.cos(), angles.sin()

    def rope(u):  # rotate the pairs (u[2k], u[2k+1])
        even, odd = u[..., 0::2], u[..., 1::2]
        return torch.stack((even * cos - odd * sin, even * sin + odd * cos), -1).flatten(-2).to(u.dtype)

    h = F.embedding(x, p["emb"])
    for i in range(sum(k.endswith(".qkv") for k in p)):
        a = F.rms_norm(h, (d,), p[f"{i}.ln1"], eps=1e-5)
        q, k, v = F.linear(a, p[f"{i}.qkv"]).view(b, t, 3, num_heads, dh).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(rope(q), rope(k), v, is_causal=True)
        h = h + F.linear(a.transpose(1, 2).reshape(b, t, d), p[f"{i}.o"])
        a = F.rms_norm(h, (d,), p[f"{i}.ln2"], eps=1e-5)
        h = h + F.linear(F.silu(F.linear(a, p[f"{i}.w1"])) * F.linear(a, p[f"{i}.w3"]), p[f"{i}.w2"])
    logits = F.linear(F.rms_norm(h, (d,), p["ln_f"], eps=1e-5), p["head"])
    return F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), y.reshape(-1))


class PlainLoop:
    """A minimal training loop: random windows, forward + loss (compiled together if asked), backward,
    clip_grad_norm_, AdamW at a constant learning rate. Reads nothing back until ``finish``."""

    def __init__(self, cfg, runtime: Runtime, tokens: np.ndarray):
        self.cfg, self.runtime, self.device = cfg, runtime, runtime.device
        self.params = plain_params(cfg, self.device)
        kw = dict(lr=cfg.max_lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay)
        self.optimizer = torch.optim.AdamW(self.params.values(), fused=True, **kw)  # on CPU, CUDA and MPS
        self.loss_fn = (
            torch.compile(plain_loss, backend=runtime.compile_backend) if runtime.compile else plain_loss
        )
        self.tokens = torch.from_numpy(tokens.astype(np.int64))
        self.num_windows = len(tokens) - cfg.context_length - 1
        self.offsets = torch.arange(cfg.context_length + 1)
        self.gen = torch.Generator().manual_seed(cfg.seed)

    def start(self) -> None:
        self.t0, self.steps = time.perf_counter(), 0

    def step(self, it: int) -> None:
        cfg = self.cfg
        starts = torch.randint(self.num_windows, (cfg.batch_size, 1), generator=self.gen)
        block = self.tokens[starts + self.offsets]
        if self.device.type == "cuda":
            block = block.pin_memory()
        block = block.to(self.device, non_blocking=True)
        with self.runtime.autocast():
            self.loss = self.loss_fn(self.params, block[:, :-1], block[:, 1:], cfg.num_heads, cfg.rope_theta)
        self.loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params.values(), cfg.grad_clip, foreach=True)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1

    def finish(self, step: int) -> dict:
        self.loss.item()  # the one read-back, as a loop's log line would do
        seconds = time.perf_counter() - self.t0
        return hardware.throughput_row(self.cfg, self.runtime, self.steps, seconds)

    def close(self) -> None:
        """Nothing to release: no threads, no run directory."""


# ---- the package -----------------------------------------------------------------------------------------
class PackageLoop:
    """A ``Trainer`` (random tokens, a throw-away run directory) driven as ``Trainer.run`` drives it."""

    def __init__(self, cfg, runtime: Runtime, data: tuple[np.ndarray, np.ndarray], out_dir: Path):
        self.trainer = Trainer(cfg, out_dir, runtime, (*data, None), progress=False)
        self.trainer.tracker.start()
        self.loss_sum = torch.zeros((), device=runtime.device)

    def start(self) -> None:
        self.interval = Interval()

    def step(self, it: int) -> None:
        t = self.trainer
        loss, self.grad_norm, self.lr = t.step_fn(it, *self.interval.wait_for(t.loader.get, it))
        self.loss_sum += loss.detach().float()
        self.interval.steps += 1

    def finish(self, step: int) -> dict:
        """The log step: one transfer, then the trainer's own metrics row."""
        loss_total, grad_norm = torch.stack([self.loss_sum, self.grad_norm.float()]).tolist()
        self.interval.end()
        self.loss_sum.zero_()
        # No progress line: Trainer.run starts the progress bar, and this loop does not call it.
        return self.trainer.log(step, loss_total / self.interval.steps, grad_norm, self.lr, self.interval)

    def close(self) -> None:
        self.trainer.close()
        self.trainer.tracker.close()


# ---- variants ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Variant:
    loop: str  # package | plain
    precision: str  # as asked: auto | fp32 | tf32 | bf16
    compile: str  # auto | on | off
    batch_size: int
    kernels: str = "-"  # package only: fast | reference


def resolve(base, v: Variant):
    """(config, Runtime) of a variant: the config resolved from ``base`` (unresolved, so derived fields follow
    its max_steps) with the variant's batch size and kernels; the runtime from its precision and compile."""
    kernels = v.kernels if v.loop == "package" else base.kernels
    cfg = dataclasses.replace(base, batch_size=v.batch_size, kernels=kernels).resolved()
    dtype = {"auto": cfg.dtype, "bf16": "bf16"}.get(v.precision, "fp32")
    tf32 = {"fp32": False, "tf32": True}.get(v.precision, cfg.tf32)
    return cfg, setup_runtime(cfg.device, dtype, v.compile, tf32, run_tokens=cfg.total_tokens)


def warmed_up(cfg, runtime: Runtime, v: Variant, out_dir: Path, warmup: int) -> dict:
    """A variant's loop, built and run for ``warmup`` steps (compiling, allocating the optimizer state)."""
    t0 = time.perf_counter()
    data = random_data(cfg, max(1 << 20, 64 * cfg.tokens_per_step))
    loop = PlainLoop(cfg, runtime, data[0]) if v.loop == "plain" else PackageLoop(cfg, runtime, data, out_dir)
    if warmup:
        timed_round(loop, runtime, 0, warmup)
    return dict(v=v, cfg=cfg, runtime=runtime, loop=loop, warmup_s=time.perf_counter() - t0)


# ---- measurement -------------------------------------------------------------------------------------------
def timed_round(loop, runtime: Runtime, start: int, steps: int) -> dict:
    """``steps`` steps from ``start``, then the log step: its metrics row, with the process CPU time per step
    and (CUDA) ``peak_bytes``, the peak allocated over what was allocated at the start."""
    set_tf32(runtime.tf32)  # a process-wide switch: each variant's before its steps (off except on CUDA)
    dev = runtime.device
    synchronize(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        resident = torch.cuda.memory_allocated(dev)
    cpu = time.process_time()  # CPU seconds of the whole process: robust to a shared machine's queueing
    loop.start()
    for it in range(start, start + steps):
        loop.step(it)
    row = {**loop.finish(start + steps), "cpu_ms_per_step": 1e3 * (time.process_time() - cpu) / steps}
    row["peak_bytes"] = torch.cuda.max_memory_allocated(dev) - resident if dev.type == "cuda" else None
    return row


def timed_rounds(live: list[dict], steps: int, warmup: int, rounds: int) -> dict:
    """``rounds`` rounds of every variant back to back (the order rotates), then the first package row's
    host-sync check and step breakdown."""
    for r in range(rounds):
        for m in live[r % len(live) :] + live[: r % len(live)]:
            m["rounds"].append(timed_round(m["loop"], m["runtime"], warmup + r * steps, steps))
        tokens_per_sec = ", ".join(f"{m['rounds'][-1]['tokens_per_sec']:,.0f}" for m in live)
        print(f"  round {r + 1}/{rounds}: {tokens_per_sec}")
    first = next((m for m in live if m["v"].loop == "package"), None)
    if first is None:
        return {}
    loop, runtime, start = first["loop"], first["runtime"], warmup + rounds * steps
    syncs = sync_check(loop, runtime, start, steps)  # before the breakdown, whose steps follow its
    return {"sync_check": syncs, "breakdown_ms": breakdown(loop, runtime, start + steps, min(steps, 3))}


def sync_check(loop, runtime: Runtime, start: int, steps: int) -> dict:
    """Host synchronisations inside ``steps`` non-log steps (torch.cuda.set_sync_debug_mode("warn"))."""
    if runtime.device.type != "cuda":
        return {"steps": steps, "host_syncs": "n/a (no CUDA device: there is no device->host sync to catch)"}
    loop.start()  # no synchronize first: the check counts synchronising calls, not time
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for it in range(start, start + steps):
                loop.step(it)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    loop.finish(start + steps)  # the log step's transfer, outside the checked region
    sites = Counter(f"{w.filename}:{w.lineno}: {str(w.message).splitlines()[0][:120]}" for w in caught)
    return {"steps": steps, "host_syncs": sum(sites.values()), "sites": dict(sites)}


def breakdown(loop: PackageLoop, runtime: Runtime, start: int, steps: int) -> dict[str, float]:
    """ms per phase of ``TrainStep.__call__`` itself, synchronised at each phase boundary (so its total is
    above the timed ms/step): its loss function is wrapped and ``optimizer.step`` gets a pre-hook."""
    fn, marks = loop.trainer.step_fn, []
    loss_fn = fn.loss_fn

    def mark(*hook_args):
        synchronize(runtime.device)
        marks.append(time.perf_counter())

    def forward(x, y):
        mark()
        out = loss_fn(x, y)
        mark()  # the backward starts
        return out

    fn.loss_fn, hook = forward, fn.optimizer.register_step_pre_hook(mark)
    try:
        set_tf32(runtime.tf32)
        for it in range(start, start + steps):
            mark()  # the data wait starts
            fn(it, *loop.trainer.loader.get(it))
            mark()
    finally:
        fn.loss_fn = loss_fn
        hook.remove()
    ms = 1e3 * np.diff(np.reshape(marks, (steps, 5)), axis=1)  # a row per step, a column per phase
    phases = ("data_wait", "forward", "backward+clip", "optimizer")
    return dict(zip(phases, np.median(ms, axis=0).tolist()))


def _rss(field: str) -> int:
    """``field`` of /proc/self/status in bytes: VmRSS (resident now) or VmHWM (its peak)."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(status[field].split()[0]) * 1024


def _memory_child(base, v: Variant, steps: int, threads: int) -> int:
    torch.set_num_threads(threads)
    cfg, runtime = resolve(base, v)
    with tempfile.TemporaryDirectory(prefix="cs336-bench-") as tmp:
        loop = warmed_up(cfg, runtime, v, Path(tmp) / "run", 1)["loop"]  # allocates the optimizer state
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        resident = _rss("VmRSS")
        timed_round(loop, runtime, 1, steps)
        step_bytes = _rss("VmHWM") - resident
        loop.close()
        return step_bytes


def cpu_step_memory(base, v: Variant, steps: int) -> int:
    """Peak RSS of a training step over the RSS before it, in a fresh process (spawned, so nothing of this
    one is in its RSS)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_memory_child, base, v, steps, torch.get_num_threads()).result()


def run_share(base, steps: int) -> dict:
    """Train ``steps`` steps through run_experiment (random tokens, the preset's intervals, divergence rule
    off: random tokens cannot be learned) and read the share of its wallclock spent on evaluations and
    checkpoints as lr-analyze reads it (``overhead_share``)."""
    never = dict(divergence_explode_factor=1e9, divergence_rebound_margin=1e9, divergence_min_steps=steps + 1)
    cfg = dataclasses.replace(base, max_steps=steps, target_val_loss=None, **never)
    train, val = random_data(cfg, 1 << 20)
    with tempfile.TemporaryDirectory(prefix="cs336-bench-run-") as tmp, quiet():
        s = run_experiment(cfg, train, val, Path(tmp) / "run", resume="never", progress=False)
        share = load_experiment_log(Path(tmp) / "run").overhead_share()["total"]
    out = {k: s[k] for k in ("steps", "wallclock_s", "eval_s", "checkpoint_s", "tokens_per_sec")}
    return {**out, "share": share}


def benchmark(base, variants: list[Variant], *, steps: int, warmup: int, rounds: int, memory: bool) -> dict:
    """Build and warm up every variant, then time them in alternating rounds: the report's result rows, the
    variants skipped, and the first package row's host-sync check and step breakdown."""
    if any(v.compile != "off" for v in variants):
        import torch._dynamo

        # Every variant keeps its compiled graphs alive (same code objects, other shapes): compile each one
        # static, as a run of one shape is, instead of letting dynamo switch to dynamic shapes.
        dynamo = torch._dynamo.config
        dynamo.automatic_dynamic_shapes, dynamo.cache_size_limit = False, max(dynamo.cache_size_limit, 64)
        dynamo.accumulated_cache_size_limit = max(dynamo.accumulated_cache_size_limit, 512)
    live, skipped = {}, []  # what each variant runs as (its row's values) -> its loop and measurements
    with tempfile.TemporaryDirectory(prefix="cs336-bench-") as tmp:
        for i, v in enumerate(variants):
            cfg, runtime = resolve(base, v)
            # What it runs as (auto choices resolved): the table's columns and the key of a duplicate.
            precision = hardware.peak_precision(runtime.dtype, runtime.tf32)
            row = dataclasses.asdict(v) | {"precision": precision, "compile": runtime.compile}
            if v.precision == "tf32" and runtime.device.type != "cuda":
                skipped.append(f"{v}: tf32 is a CUDA tensor-core mode")
            elif tuple(row.values()) in live:
                skipped.append(f"{v}: same settings as an earlier variant")
            else:
                print(f"  building {row} and warming up ({warmup} step(s))...")
                state = warmed_up(cfg, runtime, v, Path(tmp) / f"v{i}", warmup)
                live[tuple(row.values())] = {"row": row, "rounds": [], **state}
        if not live:
            raise UserError(f"nothing to measure: skipped {'; '.join(skipped)}; choose another --precision")
        extras = timed_rounds(list(live.values()), steps, warmup, rounds)
        for m in live.values():
            m["loop"].close()
    rows = [summary(m, warmup) for m in live.values()]
    for m, row in zip(live.values(), rows, strict=True):
        if memory and m["runtime"].device.type == "cpu":
            print(f"  memory of {m['row']} in a fresh process...")
            row["memory_bytes"] = cpu_step_memory(base, m["v"], steps)
    add_plain_ratios(rows)
    return {"rows": rows, "skipped": skipped, **extras}


def summary(m: dict, warmup: int) -> dict:
    """A variant's row: medians over its rounds, and the per-round series the paired ratios need."""
    keys = ("tokens_per_sec", "cpu_ms_per_step", "mfu", "peak_bytes")
    series = {k: [x.get(k) for x in m["rounds"]] for k in keys}
    tokens_per_sec = statistics.median(series["tokens_per_sec"])
    ms_per_step = 1e3 * m["cfg"].tokens_per_step / tokens_per_sec
    return {
        **m["row"],
        "tokens_per_sec": tokens_per_sec,
        "ms_per_step": ms_per_step,
        "mfu": None if None in series["mfu"] else statistics.median(series["mfu"]),  # ~ tokens/s
        "data_wait_ms": statistics.median(x.get("data_wait_ms", 0.0) for x in m["rounds"]),
        "startup_s": max(m["warmup_s"] - warmup * ms_per_step / 1e3, 0.0),
        "memory_bytes": None if None in series["peak_bytes"] else max(series["peak_bytes"]),
        "rounds_tokens_per_sec": series["tokens_per_sec"],
        "rounds_cpu_ms_per_step": series["cpu_ms_per_step"],
    }


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a[i] / b[i] (round i of both ran back to back)."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def add_plain_ratios(rows: list[dict]) -> None:
    """vs_plain: package tokens/s over the plain loop's with the same precision, compile and batch size."""
    plain = {(r["precision"], r["compile"], r["batch_size"]): r for r in rows if r["loop"] == "plain"}
    for r in rows:
        ref = plain.get((r["precision"], r["compile"], r["batch_size"])) if r["loop"] == "package" else None
        r["vs_plain"] = r["vs_plain_cpu"] = None
        if ref is not None:
            r["vs_plain"] = paired_ratio(r["rounds_tokens_per_sec"], ref["rounds_tokens_per_sec"])
            # From CPU time per step (plain's over the package's): with one thread per process it counts the
            # work done, not the time spent waiting for a core on a shared machine.
            r["vs_plain_cpu"] = paired_ratio(ref["rounds_cpu_ms_per_step"], r["rounds_cpu_ms_per_step"])


# ---- output and command line ------------------------------------------------------------------------------
TABLE_ROW = "{:<8} {:<9} {:<7} {:>5} {:<9} {:>10} {:>9} {:>6} {:>10} {:>8} {:>7} {:>8}"
TABLE_HEAD = ("loop", "precision", "compile", "batch", "kernels", "tokens/s", "ms/step", "MFU")
TABLE_HEAD += ("step mem", "vs plain", "(cpu)", "startup")
TABLE_LEGEND = (
    "vs plain: median per-round ratio of tokens/s to the plain loop's (same precision, compile, batch); "
    "(cpu): the same from process CPU time, the steadier number on a shared machine"
)


def _cell(x: float | None, spec: str, unit: str = "", scale: float = 1) -> str:
    return "-" if x is None else f"{x * scale:{spec}}{unit}"


def format_table(rows: list[dict]) -> str:
    head = TABLE_ROW.format(*TABLE_HEAD)
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = [r["loop"], r["precision"], "on" if r["compile"] else "off", r["batch_size"], r["kernels"]]
        cells += [_cell(r["tokens_per_sec"], ",.0f"), _cell(r["ms_per_step"], ".1f"), _cell(r["mfu"], ".1%")]
        cells += [_cell(r["memory_bytes"], ",.0f", " MiB", scale=2**-20)]
        cells += [_cell(r["vs_plain"], ".3f", "x"), _cell(r["vs_plain_cpu"], ".3f", "x")]
        lines.append(TABLE_ROW.format(*cells, _cell(r["startup_s"], ".1f", "s")))
    return "\n".join([*lines, TABLE_LEGEND])


def _list(allowed=None):
    """A comma-separated list: of ``allowed`` words, or of integers."""

    def parse(text: str) -> list:
        values = [x.strip() if allowed else int(x) for x in text.split(",") if x.strip()]
        if not values or (allowed and set(values) - set(allowed)):
            raise argparse.ArgumentTypeError(f"{text!r}: expected a comma list of {allowed or 'integers'}")
        return values

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("cs336-bench", __doc__)
    flag = p.add_argument
    flag("--precision", dest="precisions", type=_list(PRECISIONS), default=["auto"], help="default auto")
    flag("--compile", dest="compiles", type=_list(COMPILE), default=["auto"], help="default auto")
    flag("--batch-size", dest="batch_sizes", type=_list(), help="comma list; default the preset's")
    flag("--kernels", dest="kernel_list", type=_list(KERNELS), help="package rows; default the config's")
    flag("--no-plain", action="store_true", help="skip the plain-PyTorch baseline")
    flag("--steps", type=int, help="timed steps per round (default 20 on CUDA, 3 elsewhere)")
    flag("--warmup", type=int, help="warm-up steps per variant, compile included (default 5 CUDA, 2 else)")
    flag("--rounds", type=int, default=3, help="alternating timed rounds; rows give medians (default 3)")
    flag("--memory", action="store_true", help="CPU: each variant's step memory, in a fresh process")
    flag("--run", type=int, default=0, metavar="N", help="N steps of run_experiment: eval + checkpoint share")
    flag("--json", type=Path, help="write the report here")
    config.add_config_arguments(p, skip=("dtype", "tf32", "compile", "batch_size", "kernels"))
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    base = config.config_from_args(args)
    device = resolve_device(base.device)
    cuda = device.type == "cuda"
    base.resolved()  # validates
    steps = args.steps if args.steps is not None else (20 if cuda else 3)
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 2)
    for flag, value, low in (("--steps", steps, 1), ("--warmup", warmup, 0), ("--rounds", args.rounds, 1)):
        if value < low:
            raise UserError(f"{flag} must be at least {low}, got {value}")
    if args.json is not None:  # before the timing (missing directories are made when it is written)
        existing = next(p for p in (args.json, *args.json.parents) if p.exists())  # itself, else its nearest
        if existing == args.json and existing.is_dir():
            raise UserError(f"--json {args.json} is a directory; give the path of a file to write")
        if existing != args.json and not existing.is_dir():
            raise UserError(
                f"--json {args.json} is under {existing}, which is a file; give the path of a file to write"
            )
    points = list(itertools.product(args.precisions, args.compiles, args.batch_sizes or [base.batch_size]))
    variants = [Variant("package", *point, k) for point in points for k in args.kernel_list or [base.kernels]]
    variants += [] if args.no_plain else [Variant("plain", *point) for point in points]
    load = os.getloadavg()
    machine = resolve(base, variants[0])[1].device_name()  # as the trainer's banner names it
    print(
        f"cs336-bench: preset {base.preset} | {base.num_layers} layers d_model {base.d_model} "
        f"d_ff {base.d_ff} vocab {base.vocab_size} context {base.context_length} | {warmup} warm-up "
        f"+ {args.rounds} x {steps} steps | {device} ({machine}), {plural(torch.get_num_threads(), 'thread')}, "
        f"torch {torch.__version__} | load {load[0]:.1f}"
    )
    result = benchmark(base, variants, steps=steps, warmup=warmup, rounds=args.rounds, memory=args.memory)
    report = {
        "device": machine,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average": [load, os.getloadavg()],
        "config": base.to_dict(),
        **{"steps": steps, "warmup": warmup, "rounds": args.rounds},
        **result,
    }
    print(f"\n{format_table(result['rows'])}")
    for s in result["skipped"]:
        print(f"skipped {s}")
    if "sync_check" in result:
        print(f"host syncs outside log steps: {result['sync_check']['host_syncs']} in {steps} steps")
        for site, n in result["sync_check"].get("sites", {}).items():
            print(f"  {n:>4} x {site}")
        phases = ", ".join(f"{k} {v:.1f}" for k, v in result["breakdown_ms"].items())
        print(f"step breakdown (first package row, synchronised per phase), ms: {phases}")
    save = (lambda: atomic_write_json(args.json, report)) if args.json is not None else (lambda: None)
    save()  # the table survives a failing --run
    if args.run:
        print(f"run_experiment for {args.run} steps at the preset's intervals...")
        report["run"] = run = run_share(base, args.run)
        print(
            f"  eval + checkpoint: {100 * run['share']:.1f}% of {run['wallclock_s']:.1f} s "
            f"(eval {run['eval_s']:.1f} s, checkpoint {run['checkpoint_s']:.2f} s)"
        )
    wrote = f"; wrote {args.json}" if args.json else ""
    print(f"load average {os.getloadavg()[0]:.1f} (was {load[0]:.1f}){wrote}")
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
