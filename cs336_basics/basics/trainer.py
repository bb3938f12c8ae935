"""The training loop of one run: model, optimizer, batches, evaluation, checkpoints, divergence, resume.

The hot loop never reads a value back to the host except at log steps (one ``.item()`` per log interval);
batches are gathered one step ahead on a worker thread; checkpoints are written on a background thread.
Everything a resumed run needs (model, optimizer, step, partial loss sums, wallclock) is in the checkpoint,
and batches are a function of (seed, step), so on CPU a resumed run logs exactly what an uninterrupted one does.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from cs336_basics.atomic import atomic_write_json
from cs336_basics.basics.batching import BatchLoader, eval_batches
from cs336_basics.basics.checkpoint import CheckpointWriter, read_checkpoint
from cs336_basics.basics.config import DERIVED_FIELDS, ExperimentConfig
from cs336_basics.basics.device import Runtime, setup_runtime
from cs336_basics.basics.divergence import DivergenceRule, divergence_reason, smooth
from cs336_basics.basics.functional import cross_entropy
from cs336_basics.basics.model import TransformerLM
from cs336_basics.basics.optim import AdamW, get_lr_cosine_schedule, gradient_clipping
from cs336_basics.errors import UserError
from cs336_basics.experiment_log import ExperimentTracker, load_experiment_log

DONE_STATES = ("finished", "diverged")


@dataclass
class TrainState:
    """Loop state beyond model and optimizer that a checkpoint must carry for an exact resume."""

    step: int = 0
    wallclock_s: float = 0.0
    loss_sum: float = 0.0  # train losses since the last log step (logged value = their mean)
    loss_count: int = 0
    smoothed_loss: float | None = None
    min_smoothed_loss: float | None = None
    initial_loss: float | None = None
    best_val_loss: float | None = None
    eval_s: float = 0.0  # time spent evaluating, checkpointing and logging: the run's overhead
    checkpoint_s: float = 0.0


class StopRequest:
    """Ctrl-C / SIGTERM ask the loop to stop at the next step boundary (a checkpoint is saved there);
    a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            # Inside a submitit job, SIGTERM belongs to submitit (preemption -> checkpoint -> requeue).
            signals = (
                (signal.SIGINT,) if os.environ.get("SUBMITIT_EXECUTOR") else (signal.SIGINT, signal.SIGTERM)
            )
            for sig in signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class RunInterrupted(Exception):
    """Raised after a stop request once the checkpoint is safely on disk."""


class TrainStep:
    """Model, optimizer and one optimizer step, exactly as every run (and the benchmark) executes it.

    ``step(it, x, y)`` sets the scheduled learning rate, runs forward (autocast, compiled if chosen) and
    backward, clips, steps and zeroes the grads; it returns device tensors (loss, pre-clip grad norm) and the
    learning rate without reading anything back from the device.
    """

    def __init__(self, cfg: ExperimentConfig, runtime: Runtime):
        self.cfg, self.runtime = cfg, runtime
        torch.manual_seed(cfg.seed)
        self.model = TransformerLM(
            cfg.vocab_size,
            cfg.context_length,
            cfg.d_model,
            cfg.num_layers,
            cfg.num_heads,
            cfg.d_ff,
            cfg.rope_theta,
            device=runtime.device,
        )
        self.optimizer = AdamW(
            self.model.parameters(),
            lr=cfg.max_lr,
            betas=(cfg.beta1, cfg.beta2),
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
        )
        model = self.model

        def forward_loss(x, y):
            return cross_entropy(model(x), y)

        # Compiling model and loss together lets the loss fuse with the LM head's output.
        self._eager = forward_loss
        self.loss_fn = (
            torch.compile(forward_loss, backend=runtime.compile_backend) if runtime.compile else forward_loss
        )
        self._first_call = True

    def __call__(self, it: int, x: torch.Tensor, y: torch.Tensor):
        cfg = self.cfg
        lr = get_lr_cosine_schedule(it, cfg.max_lr, cfg.min_lr, cfg.warmup_steps, cfg.cosine_cycle_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with self.runtime.autocast():
            loss = self._first_forward(x, y) if self._first_call else self.loss_fn(x, y)
        loss.backward()
        grad_norm = gradient_clipping(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, grad_norm, lr

    def _first_forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The first call compiles; if compilation itself fails, fall back to eager and say so (the note
        lands in the run's summary.json runtime, where lr-diagnose looks for it)."""
        self._first_call = False
        if self.loss_fn is self._eager:
            return self.loss_fn(x, y)
        try:
            return self.loss_fn(x, y)
        except torch.OutOfMemoryError:
            raise
        except Exception as err:  # inductor/dynamo failures: missing compiler, unsupported op, ...
            first_line = (str(err).strip().splitlines() or [""])[0][:200]
            note = f"compile failed ({type(err).__name__}: {first_line}); fell back to eager"
            warnings.warn(note, stacklevel=2)
            self.runtime.notes.append(note)
            self.runtime.compile = False
            self.loss_fn = self._eager
            return self.loss_fn(x, y)


def load_run_data(cfg: ExperimentConfig, train_data=None, val_data=None):
    """Training and validation token arrays (memmaps) and the tokenizer path, preparing the dataset if needed."""
    tokenizer_path = cfg.tokenizer_path
    train_data = train_data if train_data is not None else cfg.train_data
    val_data = val_data if val_data is not None else cfg.val_data
    if train_data is None or val_data is None:
        from cs336_basics.data import prepare_dataset

        prepared = prepare_dataset(cfg.dataset, cfg.data_dir, vocab_size=cfg.vocab_size)
        train_data = prepared.train_tokens if train_data is None else train_data
        val_data = prepared.valid_tokens if val_data is None else val_data
        tokenizer_path = tokenizer_path or str(prepared.tokenizer_path)
    arrays = []
    for name, data in (("training", train_data), ("validation", val_data)):
        if isinstance(data, (str, Path)):
            path = Path(data)
            if tokenizer_path is None and (path.parent / "tokenizer.json").exists():
                tokenizer_path = str(path.parent / "tokenizer.json")
            from cs336_basics.data import load_token_file

            arr = load_token_file(path, vocab_size=cfg.vocab_size)
        else:
            arr = np.asarray(data) if not isinstance(data, np.ndarray) else data
            if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
                raise UserError(
                    f"{name} data must be a 1-D integer token array, got shape {arr.shape} {arr.dtype}"
                )
            if len(arr) and int(arr.max()) >= cfg.vocab_size:
                raise UserError(
                    f"{name} data has token id {int(arr.max())} >= vocab size {cfg.vocab_size}; "
                    f"pass --vocab-size {int(arr.max()) + 1} or re-tokenize"
                )
        if len(arr) <= cfg.context_length + 1:
            raise UserError(
                f"{name} data has {len(arr)} tokens, fewer than one window of context_length + 1 = "
                f"{cfg.context_length + 1}; use a smaller --context-length or more data"
            )
        arrays.append(arr)
    return arrays[0], arrays[1], tokenizer_path


# Fields that may change when a run is resumed: they don't change what is computed (or only its speed).
RESUMABLE_CHANGES = {
    "device",
    "dtype",
    "compile",
    "tf32",
    "extra",
    "data_dir",
    "train_data",
    "val_data",
    "tokenizer_path",
    "eval_batches",
    "eval_interval",
    "checkpoint_interval",
    "target_val_loss",
}


def _check_compatible(saved: dict, cfg: ExperimentConfig, path: Path) -> None:
    """A checkpoint continues only the run it came from: every field that shapes the result must match."""
    current = cfg.to_dict()
    diffs = [
        f"{k}: checkpoint {saved.get(k)!r} vs now {v!r}"
        for k, v in current.items()
        if k not in RESUMABLE_CHANGES and k in saved and saved[k] != v
    ]
    if diffs:
        raise UserError(
            f"checkpoint {path} is from a different config ({'; '.join(diffs[:4])}); "
            f"use --fresh to start over (the old run is moved aside) or a different --out"
        )


def run_experiment(
    config: ExperimentConfig,
    train_data=None,
    val_data=None,
    out_dir: str | Path = "runs/experiment",
    *,
    resume: str = "auto",
    progress: bool = True,
    reference_loss: Callable[[int], float | None] | None = None,
    runtime: Runtime | None = None,
) -> dict:
    """Train one run into ``out_dir`` and return its summary (as in summary.json).

    ``train_data``/``val_data``: token arrays or token-file paths (default: the config's, else the prepared
    dataset). ``resume``: "auto" continues from ``checkpoints/latest.pt`` if there is one (a finished or
    diverged run is not retrained), "never" starts over, "must" fails without a checkpoint.
    ``reference_loss(step)``: the best smoothed train loss of smaller learning rates at ``step`` (sweeps).
    """
    cfg = config.resolved()
    out_dir = Path(out_dir)
    if resume not in ("auto", "never", "must"):
        raise ValueError(f"resume must be auto, never or must, not {resume!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    with run_dir_lock(out_dir):
        derived = [
            k for k in DERIVED_FIELDS if getattr(config, k) is None
        ]  # re-derived when config.json is reused
        return _run_locked(
            cfg, train_data, val_data, out_dir, resume, progress, reference_loss, runtime, derived
        )


@contextlib.contextmanager
def run_dir_lock(out_dir: Path):
    """One trainer per run directory: an flock the kernel drops when the holder dies (even by kill -9)."""
    with open(out_dir / ".run.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise UserError(
                f"{out_dir} is being trained by {holder}; wait for it, or stop that process first"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_locked(
    cfg, train_data, val_data, out_dir, resume, progress, reference_loss, runtime, derived_fields
) -> dict:
    if resume != "never":
        log = load_experiment_log(out_dir)
        if log.summary and log.summary.get("status") in DONE_STATES:
            _check_compatible(log.config, cfg, out_dir / "config.json")
            print(f"{out_dir}: already {log.summary['status']}, not retrained (use --fresh to retrain)")
            return log.summary
    train, val, tokenizer_path = load_run_data(cfg, train_data, val_data)
    runtime = runtime or setup_runtime(
        cfg.device, cfg.dtype, cfg.compile, cfg.tf32, run_tokens=cfg.total_tokens
    )
    device = runtime.device

    step_fn = TrainStep(cfg, runtime)
    model, optimizer = step_fn.model, step_fn.optimizer
    state, resumed = TrainState(), False
    latest = out_dir / "checkpoints" / "latest.pt"
    if resume != "never" and latest.exists():
        try:
            ckpt = read_checkpoint(latest)
        except Exception as err:
            raise UserError(
                f"cannot read checkpoint {latest} ({type(err).__name__}: {err}); delete it or use --fresh"
            ) from None
        _check_compatible(ckpt.get("config", {}), cfg, latest)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state = TrainState(**ckpt["train_state"])
        resumed = True
    elif resume == "must":
        raise UserError(f"--resume given but there is no checkpoint at {latest}")

    run_info = {
        **cfg.to_dict(),
        "runtime": runtime.as_dict(),
        "tokenizer_path": tokenizer_path,
        "train_tokens": len(train),
        "val_tokens": len(val),
        "parameters": model.num_parameters(exclude_embeddings=False),
        "non_embedding_parameters": model.num_parameters(),
        "derived_fields": derived_fields,
    }
    tracker = ExperimentTracker(
        run_info, out_dir, max_steps=cfg.max_steps, target_val_loss=cfg.target_val_loss
    )
    tracker.start(resume_step=state.step if resumed else None)  # drops metric rows after the checkpoint
    (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)

    print(f"[{out_dir.name}] {runtime.banner()}")
    for note in runtime.notes:
        print(f"[{out_dir.name}]   {note}")
    print(
        f"[{out_dir.name}] {run_info['non_embedding_parameters'] / 1e6:.2f}M non-embedding parameters | "
        f"lr {cfg.max_lr:g} | {cfg.max_steps} steps x {cfg.tokens_per_step} tokens = {cfg.total_tokens / 1e6:.2f}M tokens"
        + (f" | resuming at step {state.step}" if resumed else "")
    )

    val_set = eval_batches(val, cfg.batch_size, cfg.context_length, cfg.eval_batches, device)
    loader = BatchLoader(train, cfg.batch_size, cfg.context_length, cfg.seed, device)
    writer = CheckpointWriter()
    rule = DivergenceRule.from_config(cfg)

    @torch.no_grad()
    def evaluate() -> float:
        model.eval()
        total = torch.zeros((), device=device)
        for x, y in val_set:
            with runtime.autocast():
                total += step_fn.loss_fn(x, y).float()
        model.train()
        return (total / len(val_set)).item()

    def checkpoint_obj(kind: str) -> dict:
        obj = {
            "model": model.state_dict(),
            "iteration": state.step,
            "config": cfg.to_dict(),
            "tokenizer_path": tokenizer_path,
            "train_state": asdict(state),
            "kind": kind,
        }
        if kind != "best":
            obj["optimizer"] = optimizer.state_dict()
        return obj

    final_state, reason, val_loss, train_loss = "finished", None, None, None
    loss_sum = torch.tensor(state.loss_sum, device=device)
    interval_start, interval_steps = time.perf_counter(), 0
    clock_start = time.perf_counter() - state.wallclock_s
    bar = tqdm(
        total=cfg.max_steps,
        initial=state.step,
        desc=out_dir.name,
        disable=not progress,
        dynamic_ncols=True,
        unit="step",
    )
    try:
        with StopRequest() as stop:
            for it in range(state.step, cfg.max_steps):
                if stop.requested:
                    raise RunInterrupted
                x, y = loader.get(it)
                loss, grad_norm, lr = step_fn(it, x, y)
                loss_sum += loss.detach().float()
                state.loss_count += 1
                state.step, interval_steps = it + 1, interval_steps + 1
                tracker.increment_gradient_step()
                bar.update(1)
                if state.initial_loss is None:
                    state.initial_loss = loss.item()  # one sync, on the first step only
                    if run_info["runtime"]["compile"] and not runtime.compile:  # compile failed: say so
                        run_info["runtime"] = runtime.as_dict()
                        atomic_write_json(out_dir / "config.json", run_info)
                step = state.step
                is_eval = step % cfg.eval_interval == 0 or step == cfg.max_steps
                is_ckpt = step % cfg.checkpoint_interval == 0 and step < cfg.max_steps
                if not (step % cfg.log_interval == 0 or is_eval or is_ckpt or step == cfg.max_steps):
                    continue
                # ---- log step: the only place the loop waits for the device ----
                train_loss = loss_sum.item() / state.loss_count  # note: CPU-GPU sync point
                now = time.perf_counter()  # after the sync, so the interval covers the device's work
                loss_sum.zero_()
                state.loss_count = 0
                train_s = max(now - interval_start, 1e-9)  # eval/checkpoint time falls outside intervals
                tokens_per_sec = interval_steps * cfg.tokens_per_step / train_s
                ms_per_step = 1e3 * train_s / interval_steps
                state.smoothed_loss = smooth(state.smoothed_loss, train_loss)
                reason = divergence_reason(
                    rule,
                    step=step,
                    max_steps=cfg.max_steps,
                    loss=train_loss,
                    smoothed_loss=state.smoothed_loss,
                    initial_loss=state.initial_loss,
                    min_smoothed_loss=state.min_smoothed_loss,
                    reference_loss=reference_loss(step) if reference_loss else None,
                )
                if state.min_smoothed_loss is None or state.smoothed_loss < state.min_smoothed_loss:
                    state.min_smoothed_loss = state.smoothed_loss
                overhead_start = time.perf_counter()
                if is_eval and reason is None:
                    val_loss = evaluate()
                    tracker.log_eval(step, train_loss, val_loss)
                    if state.best_val_loss is None or val_loss < state.best_val_loss:
                        state.best_val_loss = val_loss
                        writer.submit(checkpoint_obj("best"), out_dir / "checkpoints" / "best.pt")
                eval_done = time.perf_counter()
                state.eval_s += eval_done - overhead_start
                if is_ckpt and reason is None:
                    state.wallclock_s = time.perf_counter() - clock_start
                    state.loss_sum = 0.0
                    writer.submit(checkpoint_obj("latest"), latest)
                state.checkpoint_s += time.perf_counter() - eval_done
                state.wallclock_s = time.perf_counter() - clock_start
                tracker.log_metrics(
                    step,
                    train_loss,
                    lr,
                    tokens_per_sec,
                    ms_per_step,
                    tokens=step * cfg.tokens_per_step,
                    wallclock_s=state.wallclock_s,
                    grad_norm=float(grad_norm),
                )
                bar.set_postfix(
                    loss=f"{train_loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_sec:,.0f}", refresh=False
                )
                interval_start, interval_steps = time.perf_counter(), 0
                if reason is not None:
                    final_state = "diverged"
                    bar.write(f"[{out_dir.name}] diverged: {reason}")
                    break
    except (RunInterrupted, KeyboardInterrupt) as err:
        if isinstance(err, RunInterrupted) and state.step > 0:
            # Stopped at a step boundary: save with the partial loss sums, so resuming is exact. (A second
            # Ctrl-C may land mid-update, so then the last periodic checkpoint stands.)
            state.wallclock_s = time.perf_counter() - clock_start
            state.loss_sum = float(loss_sum.item())
            writer.submit(checkpoint_obj("latest"), latest, background=False)
        tracker.set_status(
            "interrupted", reason="stopped by the user; re-run the same command to resume", step=state.step
        )
        raise KeyboardInterrupt from None
    except BaseException as err:
        tracker.set_status("failed", reason=f"{type(err).__name__}: {err}", step=state.step)
        raise
    finally:
        bar.close()
        loader.close()
        writer.wait()

    if final_state == "finished":
        state.loss_sum = 0.0
        writer.submit(checkpoint_obj("final"), out_dir / "checkpoints" / "final.pt", background=False)
    summary = tracker.finish(
        train_loss,
        val_loss,
        notes="",
        state=final_state,
        reason=reason,
        extra={
            "eval_s": state.eval_s,
            "checkpoint_s": state.checkpoint_s,
            "initial_loss": state.initial_loss,
            "runtime": runtime.as_dict(),
        },
    )
    if progress:
        tracker.print_summary()
    return summary
