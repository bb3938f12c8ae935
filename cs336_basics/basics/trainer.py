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
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from cs336_basics.basics.batching import BatchLoader, eval_batches
from cs336_basics.basics.checkpoint import CheckpointWriter, checkpoint_dict, read_checkpoint, unreadable_text
from cs336_basics.basics.config import ExperimentConfig, resume_differences
from cs336_basics.basics.device import Runtime
from cs336_basics.basics.divergence import DivergenceRule, divergence_reason, smooth
from cs336_basics.basics.hardware import throughput_row
from cs336_basics.basics.probe import Probe, sharpness_interval
from cs336_basics.basics.progress import Interval, Progress
from cs336_basics.basics.provenance import run_info
from cs336_basics.basics.step import TrainStep
from cs336_basics.errors import StartOver, Stopped
from cs336_basics.experiment_log import ExperimentTracker
from cs336_basics.experiment_log.reader import CHECKPOINT_DIR, CONFIG_FILE, LATEST_CHECKPOINT, read_json_dict


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
    eval_s: float = 0.0  # log steps' divergence checks and evaluations (writing the row is not counted)
    checkpoint_s: float = 0.0  # time the loop spent handing checkpoints to the writer
    measure_s: float = 0.0  # time spent measuring sharpness and instability signals
    sharpness_every: int = 0  # steps between sharpness measurements (0: at the next log step); see probe.py
    sharpness_s: float = 0.0  # time the sharpness measurements took, all together
    sharpness_count: int = 0
    val_loss_sem: float | None = None  # standard error of the last evaluation's mean (per-batch spread)


class StopRequest:
    """Ctrl-C / SIGTERM ask the loop to stop at the next step boundary (a checkpoint is saved there, then
    ``Stopped`` is raised with the signal); a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self.signum = signal.SIGINT
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            # Inside a submitit job, SIGTERM belongs to submitit (preemption -> checkpoint -> requeue).
            submitit = os.environ.get("SUBMITIT_EXECUTOR")
            for sig in (signal.SIGINT,) if submitit else (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


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
        derived_fields: tuple[str, ...] = (),
    ):
        self.cfg, self.out_dir, self.runtime = cfg, out_dir, runtime
        train, val, self.tokenizer_path = data
        self.step_fn = TrainStep(cfg, runtime)
        self.model, self.optimizer = self.step_fn.model, self.step_fn.optimizer
        self.state = TrainState()
        self._evaluated_at: int | None = None  # the step of the last evaluation: its row carries val_loss
        self.latest = out_dir / LATEST_CHECKPOINT
        self.reference_loss = reference_loss
        self.rule = DivergenceRule.from_config(cfg)
        self.val_set = eval_batches(val, cfg.batch_size, cfg.context_length, cfg.eval_batches, runtime.device)
        self.loader = BatchLoader(train, cfg.batch_size, cfg.context_length, cfg.seed, runtime.device)
        self.writer = CheckpointWriter()
        self.run_info = run_info(cfg, runtime, self.model, train, val, self.tokenizer_path, derived_fields)
        # One small fixed probe batch, the same windows for every learning rate and step: sharpness and signals.
        self.probe = Probe(cfg, self.model, self.optimizer, self.val_set[0])
        columns = ("mfu", "data_wait_ms", *self.probe.columns)
        self.tracker = ExperimentTracker(self.run_info, out_dir, columns=columns)
        self.show_progress, self.progress = progress, None  # the bar starts in run(), after any resume

    # ---- the parts ----------------------------------------------------------------------------------
    def resume(self) -> bool:
        """Load ``checkpoints/latest.pt`` if there is one; True when resumed."""
        if not self.latest.exists():
            return False
        try:
            ckpt = read_checkpoint(self.latest)
        except Exception as err:
            raise StartOver(unreadable_text(self.latest, err)) from None
        if not isinstance(ckpt, dict) or not {"config", "model", "optimizer", "train_state"} <= set(ckpt):
            raise StartOver(f"{self.latest} is not a training checkpoint of this project (no config, weights "
                            "and train state inside)")  # fmt: skip
        check_compatible(ckpt["config"], self.cfg, self.latest)
        self._note_other_threads()
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.state = TrainState(**ckpt["train_state"])
        self.writer.written_step["latest"] = self.state.step
        return True

    def _note_other_threads(self) -> None:
        """A CPU run resumed on another thread count than it ran on says so: its numbers from here on differ
        slightly from an uninterrupted run's (``--concurrent`` splits the cores, so this happens)."""
        before = ((read_json_dict(self.out_dir / CONFIG_FILE) or {}).get("runtime") or {}).get("threads")
        now = self.runtime.threads
        if self.runtime.device.type == "cpu" and before not in (None, now):
            self.runtime.notes.append(f"resumed on {now} CPU thread(s), {before} before: sums split over other "
                                      "threads round differently, so the numbers differ slightly from an "
                                      "uninterrupted run's")  # fmt: skip
            self.run_info["runtime"] = self.runtime.as_dict()

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float | None]:
        """Mean loss over the fixed validation batches and its standard error (std of the per-batch losses /
        sqrt(batches); None with one batch): one device-to-host transfer."""
        self.model.eval()
        losses = []
        for x, y in self.val_set:
            with self.runtime.autocast():
                losses.append(self.step_fn.loss_fn(x, y).float())
        self.model.train()
        per_batch = torch.stack(losses).double()
        if len(losses) == 1:
            return per_batch.item(), None
        mean, std = torch.stack([per_batch.mean(), per_batch.std()]).tolist()
        return mean, std / len(losses) ** 0.5

    def checkpoint(self, kind: str, background: bool = True) -> None:
        """Hand a snapshot to the writer: latest (resume), best (lowest val loss) or final."""
        optimizer = None if kind == "best" else self.optimizer
        extra = dict(
            config=self.cfg.to_dict(), tokenizer_path=self.tokenizer_path, train_state=asdict(self.state)
        )
        obj = checkpoint_dict(self.model, optimizer, self.state.step, **extra, kind=kind)
        self.writer.submit(obj, self.out_dir / CHECKPOINT_DIR / f"{kind}.pt", background=background)

    def log(
        self, step: int, train_loss: float, grad_norm: float, lr: float, interval: Interval, signals=None
    ) -> dict:
        """One metrics row: written to metrics.csv (and the sink), shown on the progress line."""
        cfg, state = self.cfg, self.state
        steps, interval_s = interval.steps, max(interval.seconds, 1e-9)
        row = {
            "step": step,
            "tokens": step * cfg.tokens_per_step,
            "wallclock_s": state.wallclock_s,
            "train_loss": train_loss,
            "val_loss": state.val_loss if self._evaluated_at == step else None,
            "lr": lr,
            "grad_norm": grad_norm,
            **throughput_row(cfg, self.runtime, steps, interval_s),  # tokens_per_sec, ms_per_step, mfu
            "data_wait_ms": 1e3 * interval.data_wait_s / steps,
            **(signals or {}),
        }
        self.tracker.log(row)
        self.tracker.set_status("running", step=step, checkpoint_step=self.writer.written_step.get("latest"))
        if self.progress is not None:
            self.progress.update(steps, row)
        return row

    def measure(self, step: int, lr: float, weights_before) -> dict:
        """The instability signals (every log step) and, when due, the preconditioned sharpness, on the probe
        batch; after each sharpness measurement the next one is scheduled to keep their cost near
        ``sharpness_share`` of the wallclock."""
        cfg, state = self.cfg, self.state
        start = time.perf_counter()
        signals = self.probe.signals(weights_before)
        if cfg.sharpness_share > 0 and step % max(state.sharpness_every, 1) == 0:
            sharpness_start = time.perf_counter()
            self.tracker.log_sharpness(self.probe.sharpness(step, lr))
            state.sharpness_s += time.perf_counter() - sharpness_start
            state.sharpness_count += 1
            # Their mean cost (one cheap measurement on a busy machine is not the next one's cost), against the
            # seconds per training step (measurements, evaluations and checkpoints left out).
            cost = state.sharpness_s / state.sharpness_count
            step_s = (state.wallclock_s - state.measure_s - state.eval_s - state.checkpoint_s) / step
            state.sharpness_every = sharpness_interval(cost, step_s, cfg.sharpness_share, cfg.log_interval)
        state.measure_s += time.perf_counter() - start
        return signals

    def _is_log_step(self, step: int) -> bool:
        cfg = self.cfg
        intervals = (cfg.log_interval, cfg.eval_interval, cfg.checkpoint_interval)
        return step == cfg.max_steps or any(step % k == 0 for k in intervals)

    # ---- the loop -----------------------------------------------------------------------------------
    def run(self) -> dict:
        cfg, state = self.cfg, self.state
        self._evaluated_at = None
        self.progress = Progress(self.out_dir.name, state.step, cfg.max_steps, self.show_progress)
        loss_sum = torch.tensor(state.loss_sum, device=self.runtime.device)
        clock_start = time.perf_counter() - state.wallclock_s
        interval, final_state, reason = Interval(), "finished", None
        with StopRequest() as stop:
            for it in range(state.step, cfg.max_steps):
                if stop.requested:
                    state.wallclock_s = time.perf_counter() - clock_start
                    state.loss_sum = float(loss_sum.item())
                    self.checkpoint("latest", background=False)  # partial loss sums included: resume is exact
                    raise Stopped(stop.signum)
                self.writer.raise_if_failed()  # a failed background write stops the run at the next step
                batch = interval.wait_for(self.loader.get, it)
                is_log = self._is_log_step(it + 1)
                before = self.probe.weights() if is_log else None
                loss, grad_norm, lr = self.step_fn(it, *batch)
                loss_sum += loss.detach().float()
                state.step = step = it + 1
                state.loss_count += 1
                interval.steps += 1
                if state.initial_loss is None:
                    state.initial_loss = loss.item()  # one sync, on the first step only
                    self._note_compile_fallback()
                if not is_log:
                    continue
                is_eval = cfg.evaluates_at(step)
                is_ckpt = step % cfg.checkpoint_interval == 0 and step < cfg.max_steps
                # ---- log step: the only place the loop waits for the device; one transfer ----
                loss_total, grad_norm = torch.stack([loss_sum, grad_norm.float()]).tolist()
                now = interval.end()  # after the sync, so the interval covers the device's work
                state.wallclock_s = now - clock_start
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
        (state.val_loss, state.val_loss_sem), self._evaluated_at = self.evaluate(), step
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
        final_val, target = state.val_loss, cfg.target_val_loss
        summary = {
            "status": final_state,
            "final_train_loss": state.train_loss,
            "final_val_loss": final_val,
            "val_loss_sem": state.val_loss_sem,  # of final_val_loss: the evaluation's own noise
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
        if self.progress is not None:
            self.progress.close()
        self.loader.close()


def check_compatible(saved: dict, cfg: ExperimentConfig, path: Path) -> None:
    """A checkpoint continues only the run it came from: every field that shapes the result must match."""
    diffs = resume_differences(saved, cfg, saved_as="checkpoint" if path.suffix == ".pt" else path.name)
    if diffs:
        raise StartOver(f"{path} is from a different config ({'; '.join(diffs[:4])})")
