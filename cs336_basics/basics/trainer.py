"""The training loop of one run: ``Trainer.run`` reads in one sitting; ``step``, ``evaluate``, ``checkpoint``
and ``log`` are its parts (the benchmark times the same parts).

The hot loop reads nothing back from the device except at log steps (one transfer: mean loss and grad
norm); batches are gathered one step ahead on a worker thread; checkpoints are snapshotted without a
blocking copy and written on a background thread, status.json too. ``TrainState`` is the one source of the
step, the wallclock and the best validation loss, and a checkpoint carries it, so together with batches that
are a pure function of (seed, step) a resumed run logs exactly what an uninterrupted one does (on CPU).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from cs336_basics.basics.batching import BatchLoader, eval_batches, load_run_data
from cs336_basics.basics.checkpoint import (
    CheckpointWriter,
    clean_stale_temp_files,
    read_checkpoint,
    run_dir_lock,
)
from cs336_basics.basics.config import DERIVED_FIELDS, ExperimentConfig, resume_differences
from cs336_basics.basics.device import Runtime, setup_runtime
from cs336_basics.basics.divergence import DivergenceRule, divergence_reason, smooth
from cs336_basics.basics.hardware import flops_per_token, peak_flops, peak_precision
from cs336_basics.basics.kernels import loss_function
from cs336_basics.basics.model import TransformerLM
from cs336_basics.basics.optim import AdamW, get_lr_cosine_schedule, gradient_clipping
from cs336_basics.basics.provenance import provenance
from cs336_basics.basics.sharpness import (
    measurement_model,
    preconditioned_sharpness,
    sharpness_due,
    stability_threshold,
)
from cs336_basics.basics.signals import instability_signals, update_rms_ratio
from cs336_basics.errors import UserError, describe_os_error
from cs336_basics.experiment_log import ExperimentTracker, load_experiment_log
from cs336_basics.experiment_log.reader import DONE_STATES
from cs336_basics.experiment_log.tracker import print_summary

PROBE_WINDOWS = 8  # windows of the probe batch


def signal_columns(num_layers: int) -> tuple[str, ...]:
    """metrics.csv columns of the instability signals (see signals.py)."""
    per_layer = tuple(f"max_attn_logit_l{i}" for i in range(num_layers))
    return (*per_layer, "attn_entropy_min", "logz_mean", "logz_sq_mean", "update_rms_ratio")


@dataclass
class TrainState:
    """Loop state beyond model and optimizer; a checkpoint carries it for an exact resume."""

    step: int = 0
    wallclock_s: float = 0.0  # training wallclock, resumed runs included
    loss_sum: float = 0.0  # train losses since the last log step (logged value = their mean)
    loss_count: int = 0
    smoothed_loss: float | None = None
    min_smoothed_loss: float | None = None
    initial_loss: float | None = None
    val_loss: float | None = None  # the last evaluation
    best_val_loss: float | None = None
    best_step: int | None = None
    train_loss: float | None = None  # the last logged train loss
    eval_s: float = 0.0  # time spent evaluating and logging
    checkpoint_s: float = 0.0  # time the loop spent handing checkpoints to the writer
    measure_s: float = 0.0  # time spent measuring sharpness and instability signals


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
        self.model = TransformerLM.from_config(cfg, device=runtime.device)
        self.optimizer = AdamW(
            self.model.parameters(),
            lr=cfg.max_lr,
            betas=(cfg.beta1, cfg.beta2),
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
        )
        model, loss = self.model, loss_function(cfg.kernels)

        def eager_loss(x, y):  # model and loss compiled together: the loss fuses with the LM head
            return loss(model(x), y)

        self.eager_loss = eager_loss
        self.loss_fn = (
            torch.compile(self.eager_loss, backend=runtime.compile_backend)
            if runtime.compile
            else self.eager_loss
        )
        self._first_step = runtime.compile

    def __call__(self, it: int, x: torch.Tensor, y: torch.Tensor):
        cfg = self.cfg
        lr = get_lr_cosine_schedule(it, cfg.max_lr, cfg.min_lr, cfg.warmup_steps, cfg.cosine_cycle_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss = self._first_forward_backward(x, y) if self._first_step else self._forward_backward(x, y)
        grad_norm = gradient_clipping(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, grad_norm, lr

    def _forward_backward(self, x, y) -> torch.Tensor:
        with self.runtime.autocast():
            loss = self.loss_fn(x, y)
        loss.backward()
        return loss

    def _first_forward_backward(self, x, y) -> torch.Tensor:
        """The first step compiles forward and backward; if compiling fails, fall back to eager and say so
        (the note lands in config.json's runtime, where lr-diagnose looks for it)."""
        self._first_step = False
        try:
            return self._forward_backward(x, y)
        except torch.OutOfMemoryError:
            raise
        except Exception as err:  # inductor/dynamo failures: missing compiler, unsupported op, ...
            first_line = (str(err).strip().splitlines() or [""])[0][:200]
            note = f"compile failed ({type(err).__name__}: {first_line}); fell back to eager"
            warnings.warn(note, stacklevel=2)
            self.runtime.notes.append(note)
            self.runtime.compile = False
            self.loss_fn = self.eager_loss
            self.optimizer.zero_grad(set_to_none=True)  # a half-done backward may have left grads
            return self._forward_backward(x, y)


class Progress:
    """A progress bar on a terminal; elsewhere (SLURM logs, nohup, CI) one plain line per log step."""

    def __init__(self, name: str, state: TrainState, max_steps: int, bar: bool):
        self.name, self.max_steps = name, max_steps
        self.bar = (
            tqdm(total=max_steps, initial=state.step, desc=name, dynamic_ncols=True, unit="step")
            if (bar and sys.stdout.isatty())
            else None
        )

    def update(self, n: int, row: dict) -> None:
        mfu = f" | mfu {100 * row['mfu']:.1f}%" if row.get("mfu") is not None else ""
        steps_left = self.max_steps - row["step"]
        eta = steps_left * row["ms_per_step"] / 1e3
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(
                loss=f"{row['train_loss']:.3f}", lr=f"{row['lr']:.2e}", tok_s=f"{row['tokens_per_sec']:,.0f}"
            )
            return
        print(
            f"[{self.name}] step {row['step']}/{self.max_steps} | loss {row['train_loss']:.4f} | lr {row['lr']:.2e} | "
            f"{row['tokens_per_sec'] / 1e3:,.1f}k tok/s{mfu} | eta {_duration(eta)}",
            flush=True,
        )

    def write(self, text: str) -> None:
        (self.bar.write if self.bar is not None else print)(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    return (
        f"{seconds / 3600:.1f}h"
        if seconds >= 5400
        else f"{seconds / 60:.0f}m"
        if seconds >= 90
        else f"{seconds:.0f}s"
    )


@dataclass
class Interval:
    """The training time between two log steps (evaluation, checkpoints and logging fall outside)."""

    start: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0
    steps: int = 0
    data_wait_s: float = 0.0  # time the loop waited for its batch: a data stall if it is a large share

    def wait_for(self, get_batch, it: int):
        start = time.perf_counter()
        batch = get_batch(it)
        self.data_wait_s += time.perf_counter() - start
        return batch

    def end(self) -> float:
        now = time.perf_counter()
        self.seconds = now - self.start
        return now


class Trainer:
    """One run: built from a resolved config and a run directory; ``run()`` trains (or resumes) it."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        out_dir: Path,
        runtime: Runtime,
        data: tuple,
        *,
        progress: bool = True,
        reference_loss: Callable[[int], float | None] | None = None,
        sink=None,
        derived_fields: tuple[str, ...] = (),
    ):
        self.cfg, self.out_dir, self.runtime = cfg, out_dir, runtime
        train, val, self.tokenizer_path = data
        self.step_fn = TrainStep(cfg, runtime)
        self.model, self.optimizer = self.step_fn.model, self.step_fn.optimizer
        self.state = TrainState()
        self._evaluated_at: int | None = None  # the step of the last evaluation: its row carries val_loss
        self.latest = out_dir / "checkpoints" / "latest.pt"
        self.reference_loss = reference_loss
        self.rule = DivergenceRule.from_config(cfg)
        self.val_set = eval_batches(val, cfg.batch_size, cfg.context_length, cfg.eval_batches, runtime.device)
        self.loader = BatchLoader(train, cfg.batch_size, cfg.context_length, cfg.seed, runtime.device)
        self.writer = CheckpointWriter()
        shape = {
            k: getattr(cfg, k) for k in ("vocab_size", "context_length", "d_model", "num_layers", "d_ff")
        }
        self.flops_per_token = flops_per_token(**shape)
        # None where the device has no known peak (CPUs): the mfu column then stays empty.
        self.peak_flops = peak_flops(runtime.device_name(), peak_precision(runtime.dtype, runtime.tf32))
        # config.json: the config (with the tokenizer actually used) plus facts about the run.
        self.run_info = replace(cfg, tokenizer_path=self.tokenizer_path).run_info(
            runtime=runtime.as_dict(),
            provenance=provenance(
                runtime.device,
                cfg.train_data or _path_of(train),
                cfg.val_data or _path_of(val),
                self.tokenizer_path,
            ),
            train_tokens=len(train),
            val_tokens=len(val),
            parameters=self.model.num_parameters(exclude_embeddings=False),
            non_embedding_parameters=self.model.num_parameters(),
            derived_fields=list(derived_fields),
        )
        # One small fixed probe batch, the same windows for every learning rate and step: sharpness and signals.
        self.probe = tuple(t[:PROBE_WINDOWS] for t in self.val_set[0])
        self.signal_columns = signal_columns(cfg.num_layers) if cfg.signals else ()
        columns = ("mfu", "data_wait_ms", *self.signal_columns)
        self.tracker = ExperimentTracker(self.run_info, out_dir, columns=columns, sink=sink)
        self.progress = Progress(out_dir.name, self.state, cfg.max_steps, progress)

    # ---- the parts ----------------------------------------------------------------------------------
    def resume(self) -> bool:
        """Load ``checkpoints/latest.pt`` if there is one; True when resumed."""
        if not self.latest.exists():
            return False
        try:
            ckpt = read_checkpoint(self.latest)
        except Exception as err:
            detail = " ".join(f"{type(err).__name__}: {err}".split())[:200]
            raise UserError(
                f"cannot read checkpoint {self.latest} ({detail}); delete it to restart this run from scratch"
            ) from None
        _check_compatible(ckpt.get("config", {}), self.cfg, self.latest)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.state = TrainState(**ckpt["train_state"])
        return True

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean loss over the fixed validation windows (one device-to-host transfer)."""
        self.model.eval()
        total = torch.zeros((), device=self.runtime.device)
        for x, y in self.val_set:
            with self.runtime.autocast():
                total += self.step_fn.loss_fn(x, y).float()
        self.model.train()
        return (total / len(self.val_set)).item()

    def checkpoint(self, kind: str, background: bool = True) -> None:
        """Hand a snapshot to the writer: latest (resume), best (lowest val loss) or final."""
        obj = {
            "model": self.model.state_dict(),
            "iteration": self.state.step,
            "config": self.cfg.to_dict(),
            "tokenizer_path": self.tokenizer_path,
            "train_state": asdict(self.state),
            "kind": kind,
        }
        if kind != "best":
            obj["optimizer"] = self.optimizer.state_dict()
        self.writer.submit(obj, self.out_dir / "checkpoints" / f"{kind}.pt", background=background)

    def log(
        self, step: int, train_loss: float, grad_norm: float, lr: float, interval: Interval, signals=None
    ) -> dict:
        """One metrics row: written to metrics.csv (and the sink), shown on the progress line."""
        cfg, state = self.cfg, self.state
        steps, interval_s = interval.steps, max(interval.seconds, 1e-9)
        tokens_per_sec = steps * cfg.tokens_per_step / interval_s
        row = {
            "step": step,
            "tokens": step * cfg.tokens_per_step,
            "wallclock_s": state.wallclock_s,
            "train_loss": train_loss,
            "val_loss": state.val_loss if self._evaluated_at == step else None,
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens_per_sec": tokens_per_sec,
            "ms_per_step": 1e3 * interval_s / steps,
            "mfu": tokens_per_sec * self.flops_per_token / self.peak_flops if self.peak_flops else None,
            "data_wait_ms": 1e3 * interval.data_wait_s / steps,
            **(signals or {}),
        }
        self.tracker.log(row)
        self.tracker.set_status("running", step=step)
        self.progress.update(steps, row)
        return row

    def measure(self, step: int, lr: float, weights_before) -> dict:
        """Instability signals (every log step) and the preconditioned sharpness (while its share of the
        wallclock stays under ``sharpness_share``) on the probe batch. Neither touches the model, the
        optimizer or any random state of training, so the trajectory is the same with them on or off."""
        cfg, state = self.cfg, self.state
        start = time.perf_counter()
        signals = {}
        if self.signal_columns:
            with torch.no_grad():
                signals = instability_signals(self.model, self.probe[0])
            signals["update_rms_ratio"] = update_rms_ratio(weights_before, self._weights())
        if sharpness_due(state.measure_s, state.wallclock_s, cfg.sharpness_share):
            twin = measurement_model(self.model)
            sharpness = preconditioned_sharpness(
                twin,
                self.optimizer,
                *self.probe,
                loss_fn=loss_function("reference"),
                iters=cfg.sharpness_iters,
            )
            threshold = stability_threshold(lr, cfg.beta1)
            self.tracker.log_sharpness(
                {
                    "step": step,
                    "lr": lr,
                    "sharpness": sharpness,
                    "threshold": threshold,
                    "ratio": sharpness / threshold,
                }
            )
        state.measure_s += time.perf_counter() - start
        return signals

    def _weights(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.model.parameters()]

    def _is_log_step(self, step: int) -> bool:
        cfg = self.cfg
        return (
            step % cfg.log_interval == 0
            or step % cfg.eval_interval == 0
            or step % cfg.checkpoint_interval == 0
            or step == cfg.max_steps
        )

    # ---- the loop -----------------------------------------------------------------------------------
    def run(self) -> dict:
        cfg, state = self.cfg, self.state
        self._evaluated_at = None
        loss_sum = torch.tensor(state.loss_sum, device=self.runtime.device)
        clock_start = time.perf_counter() - state.wallclock_s
        interval, final_state, reason = Interval(), "finished", None
        with StopRequest() as stop:
            for it in range(state.step, cfg.max_steps):
                if stop.requested:
                    state.wallclock_s, state.loss_sum = (
                        time.perf_counter() - clock_start,
                        float(loss_sum.item()),
                    )
                    self.checkpoint("latest", background=False)  # partial loss sums included: resume is exact
                    raise RunInterrupted
                self.writer.raise_if_failed()  # a failed background write stops the run at the next step
                batch = interval.wait_for(self.loader.get, it)
                before = self._weights() if self.signal_columns and self._is_log_step(it + 1) else None
                loss, grad_norm, lr = self.step_fn(it, *batch)
                loss_sum += loss.detach().float()
                state.step, state.loss_count, interval.steps = (
                    it + 1,
                    state.loss_count + 1,
                    interval.steps + 1,
                )
                if state.initial_loss is None:
                    state.initial_loss = loss.item()  # one sync, on the first step only
                    self._note_compile_fallback()
                step = state.step
                if not self._is_log_step(step):
                    continue
                is_eval = step % cfg.eval_interval == 0 or step == cfg.max_steps
                is_ckpt = step % cfg.checkpoint_interval == 0 and step < cfg.max_steps
                # ---- log step: the only place the loop waits for the device; one transfer ----
                loss_total, grad_norm = torch.stack([loss_sum, grad_norm.float()]).tolist()
                now = interval.end()  # after the sync, so the interval covers the device's work
                train_loss = state.train_loss = loss_total / state.loss_count
                loss_sum.zero_()
                state.loss_count = 0
                reason = self._divergence(step, train_loss)
                measured_before = state.measure_s
                signals = self.measure(step, lr, before) if reason is None else {}
                if is_eval and reason is None:
                    self._evaluate_and_keep_best(step)
                checkpoint_start = time.perf_counter()
                state.eval_s += checkpoint_start - now - (state.measure_s - measured_before)
                if is_ckpt and reason is None:
                    state.wallclock_s, state.loss_sum = checkpoint_start - clock_start, 0.0
                    self.checkpoint("latest")
                state.checkpoint_s += time.perf_counter() - checkpoint_start
                state.wallclock_s = time.perf_counter() - clock_start
                self.log(step, train_loss, grad_norm, lr, interval, signals)
                interval = Interval()
                if reason is not None:
                    final_state = "diverged"
                    self.progress.write(f"[{self.out_dir.name}] diverged: {reason}")
                    break
        self.writer.wait()
        if final_state == "finished":
            state.loss_sum = 0.0
            self.checkpoint("final", background=False)
        return self._summary(final_state, reason)

    # ---- helpers of the loop ------------------------------------------------------------------------
    def _divergence(self, step: int, train_loss: float) -> str | None:
        state = self.state
        state.smoothed_loss = smooth(state.smoothed_loss, train_loss)
        reason = divergence_reason(
            self.rule,
            step=step,
            max_steps=self.cfg.max_steps,
            loss=train_loss,
            smoothed_loss=state.smoothed_loss,
            initial_loss=state.initial_loss,
            min_smoothed_loss=state.min_smoothed_loss,
            reference_loss=self.reference_loss(step) if self.reference_loss else None,
        )
        if state.min_smoothed_loss is None or state.smoothed_loss < state.min_smoothed_loss:
            state.min_smoothed_loss = state.smoothed_loss
        return reason

    def _evaluate_and_keep_best(self, step: int) -> None:
        state = self.state
        state.val_loss, self._evaluated_at = self.evaluate(), step
        if state.best_val_loss is None or state.val_loss < state.best_val_loss:
            state.best_val_loss, state.best_step = state.val_loss, step
            self.checkpoint("best")

    def _note_compile_fallback(self) -> None:
        if self.run_info["runtime"]["compile"] and not self.runtime.compile:
            self.run_info["runtime"] = self.runtime.as_dict()
            self.tracker.update_info(self.run_info)

    def _summary(self, final_state: str, reason: str | None) -> dict:
        cfg, state = self.cfg, self.state
        tokens = state.step * cfg.tokens_per_step
        final_val = state.val_loss
        target = cfg.target_val_loss
        summary = {
            "status": final_state,
            "final_train_loss": state.train_loss,
            "final_val_loss": final_val,
            "best_val_loss": state.best_val_loss,
            "best_step": state.best_step,
            "tokens": tokens,
            "wallclock_s": state.wallclock_s,
            "tokens_per_sec": tokens / state.wallclock_s if state.wallclock_s else None,
            "target_val_loss": target,
            "target_met": None if target is None else (final_val is not None and final_val <= target),
            "reason": reason,
            "steps": state.step,
            "eval_s": state.eval_s,
            "checkpoint_s": state.checkpoint_s,
            "measure_s": state.measure_s,  # sharpness + signals, inside wallclock_s
            "initial_loss": state.initial_loss,
            "runtime": self.runtime.as_dict(),
        }
        return self.tracker.finish(summary)

    def close(self) -> None:
        self.progress.close()
        self.loader.close()


def _path_of(data) -> str | None:
    return getattr(data, "filename", None)


def _check_compatible(saved: dict, cfg: ExperimentConfig, path: Path) -> None:
    """A checkpoint continues only the run it came from: every field that shapes the result must match."""
    diffs = resume_differences(saved, cfg)
    if diffs:
        raise UserError(
            f"{path} is from a different config ({'; '.join(diffs[:4])}); "
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
    wandb: dict | None = None,
) -> dict:
    """Train one run into ``out_dir`` and return its summary (as in summary.json).

    ``train_data``/``val_data``: token arrays or token-file paths (default: the config's, else the prepared
    dataset). ``resume``: "auto" continues from ``checkpoints/latest.pt`` if there is one (a finished or
    diverged run is not retrained), "never" starts over, "must" fails without a checkpoint.
    ``reference_loss(step)``: the best smoothed train loss of smaller learning rates at ``step`` (sweeps).
    ``wandb``: ``WandbSink.open`` arguments (project, entity, mode, group, tags) to mirror the run to W&B.
    """
    if resume not in ("auto", "never", "must"):
        raise ValueError(f"resume must be auto, never or must, not {resume!r}")
    cfg, out_dir = config.resolved(), Path(out_dir)
    derived = [
        k for k in DERIVED_FIELDS if getattr(config, k) is None
    ]  # re-derived when config.json is reused
    out_dir.mkdir(parents=True, exist_ok=True)
    with run_dir_lock(out_dir):
        if resume != "never":
            log = load_experiment_log(out_dir)
            if log.summary and log.summary.get("status") in DONE_STATES:
                _check_compatible(log.config, cfg, out_dir / "config.json")
                print(f"{out_dir}: already {log.summary['status']}, not retrained (use --fresh to retrain)")
                return log.summary
        clean_stale_temp_files(out_dir)
        data = load_run_data(cfg, train_data, val_data)
        runtime = runtime or setup_runtime(
            cfg.device, cfg.dtype, cfg.compile, cfg.tf32, run_tokens=cfg.total_tokens
        )
        trainer = Trainer(
            cfg,
            out_dir,
            runtime,
            data,
            progress=progress,
            reference_loss=reference_loss,
            derived_fields=derived,
        )
        if wandb:
            from cs336_basics.experiment_log.wandb_sink import WandbSink

            trainer.tracker.sink = WandbSink.open(
                out_dir, name=out_dir.name, config=trainer.run_info, **wandb
            )
        resumed = resume != "never" and trainer.resume()
        if resume == "must" and not resumed:
            raise UserError(f"--resume given but there is no checkpoint at {trainer.latest}")
        _print_banner(trainer, resumed)
        trainer.tracker.start(resume_step=trainer.state.step if resumed else None)
        try:
            summary = trainer.run()
        except (RunInterrupted, KeyboardInterrupt):
            trainer.tracker.close()
            trainer.tracker.set_status(
                "interrupted",
                step=trainer.state.step,
                reason="stopped by the user; re-run the same command to resume",
                background=False,
            )
            raise KeyboardInterrupt from None
        except BaseException as err:
            reason = _failure_reason(err, trainer)
            trainer.tracker.close()
            trainer.tracker.set_status("failed", step=trainer.state.step, reason=reason, background=False)
            if isinstance(err, (OSError, UserError)):
                raise UserError(reason) from None
            raise
        finally:
            trainer.close()
            trainer.writer.wait(raise_error=False)
            if trainer.tracker.sink is not None:
                trainer.tracker.sink.finish()
        if progress:
            print_summary(summary, out_dir)
        return summary


def _failure_reason(err: BaseException, trainer: Trainer) -> str:
    if isinstance(err, UserError):
        return str(err)
    if isinstance(err, OSError):
        return describe_os_error(err)
    return f"{type(err).__name__}: {err}"


def _print_banner(trainer: Trainer, resumed: bool) -> None:
    cfg, name = trainer.cfg, trainer.out_dir.name
    print(f"[{name}] {trainer.runtime.banner()}")
    for note in trainer.runtime.notes:
        print(f"[{name}]   {note}")
    print(
        f"[{name}] {trainer.run_info['non_embedding_parameters'] / 1e6:.2f}M non-embedding parameters | "
        f"lr {cfg.max_lr:g} | {cfg.max_steps} steps x {cfg.tokens_per_step} tokens = {cfg.total_tokens / 1e6:.2f}M tokens"
        + (f" | resuming at step {trainer.state.step}" if resumed else ""),
        flush=True,
    )
