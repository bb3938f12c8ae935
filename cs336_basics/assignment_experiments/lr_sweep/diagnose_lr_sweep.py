"""How is a learning-rate sweep doing, and is it as fast as this machine allows?

    python -m cs336_basics.assignment_experiments.lr_sweep.diagnose_lr_sweep [SWEEP_DIR] [--watch [SECONDS]] [--json]

Per learning rate: state (a ``running`` run with no status update for ``--stale-after`` seconds is
``stalled``; one whose process is gone from this host is ``interrupted``: re-run the sweep to resume it), progress, latest losses, recent tokens/s and ETA; for the
sweep: points done and the total ETA. Then the device (NVML, nvidia-smi, MPS or CPU) and a speed verdict:
expected vs measured tokens/s and, when far below, the likely causes. Safe while runs are writing.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from cs336_basics.assignment_experiments.lr_sweep.gpu_probe import (
    DeviceInfo,
    GpuInfo,
    format_device,
    probe_device,
)
from cs336_basics.assignment_experiments.lr_sweep.naming import DEFAULT_SWEEP_DIR
from cs336_basics.assignment_experiments.lr_sweep.speed import (
    RunFacts,
    SpeedVerdict,
    format_verdict,
    gpu_for_run,
    speed_verdict,
)
from cs336_basics.assignment_experiments.sweep.record import SWEEP_FILE
from cs336_basics.assignment_experiments.sweep.view import SweepPoint, SweepView, load_sweep
from cs336_basics.errors import ArgumentParser, UserError, cli_entry, command_parser
from cs336_basics.experiment_log.reader import (
    DONE_STATES,
    RECENT_ROWS,
    median,
    parse_time,
    utc_timestamp,
)
from cs336_basics.formatting import duration, fmt

DEFAULT_STALE_AFTER_S = 120.0
DEFAULT_WATCH_S = 10.0
CLEAR_SCREEN = "\x1b[2J\x1b[H"


def recent_rates(metrics: pd.DataFrame) -> tuple[float | None, float | None]:
    """(tokens/s, steps/s) over the last logged intervals: tokens/s is the training-only median of the
    last ``RECENT_ROWS`` rows; steps/s is wallclock-based (evaluation and checkpoints included), for ETAs."""
    m = metrics[metrics["wallclock_s"].notna()]
    tokens = median(metrics, "tokens_per_sec", last=RECENT_ROWS)
    if len(m) >= 2:
        tail = m.tail(RECENT_ROWS + 1)
        d_step = float(tail["step"].iloc[-1] - tail["step"].iloc[0])
        d_wall = float(tail["wallclock_s"].iloc[-1] - tail["wallclock_s"].iloc[0])
        if d_step > 0 and d_wall > 0:
            return tokens, d_step / d_wall
    if len(m) == 1 and m["wallclock_s"].iloc[0] > 0:
        return tokens, float(m["step"].iloc[0]) / float(m["wallclock_s"].iloc[0])
    return tokens, None


@dataclass
class PointStatus:
    """One learning rate as the diagnosis reports it."""

    lr: float
    name: str
    state: str  # pending | running | stalled | finished | diverged | failed | interrupted
    added_by: str
    step: int | None
    resume_step: int | None  # where the next step comes from: an interrupted run resumes at its checkpoint
    max_steps: int | None
    percent: float | None
    train_loss: float | None
    val_loss: float | None
    tokens_per_sec: float | None
    steps_per_sec: float | None
    eta_s: float | None
    updated_s_ago: float | None
    host: str | None
    pid: int | None
    live: bool  # running on this host right now
    note: str | None


def point_status(p: SweepPoint, *, now: datetime, stale_after: float, host: str) -> PointStatus:
    """The point's state (with stall detection), progress, last losses, rate and ETA."""
    log = p.log
    status = (log.status if log else None) or {}
    state, note = p.state, p.reason
    updated = parse_time(status.get("updated_at"))
    age = (now - updated).total_seconds() if updated else None
    run_host, pid = status.get("host"), status.get("pid")
    if state == "running" and age is not None and age > stale_after:  # a dead process here reads interrupted
        state, note = "stalled", f"no status update for {duration(age)} (--stale-after {stale_after:g} s)"
    tokens_ps, steps_ps = recent_rates(log.metrics) if log is not None else (None, None)
    step, max_steps = p.step, p.max_steps
    resume = log.resume_step if state == "interrupted" and log is not None else None
    resume_step = step if resume is None else resume
    pct = 100.0 * step / max_steps if step is not None and max_steps else None
    eta = None
    if state in DONE_STATES:
        eta = 0.0
    elif resume_step is not None and max_steps and steps_ps:
        eta = max(max_steps - resume_step, 0) / steps_ps
    return PointStatus(
        lr=p.value,
        name=p.name,
        state=state,
        added_by=p.added_by,
        step=step,
        resume_step=resume_step,
        max_steps=max_steps,
        percent=pct,
        train_loss=p.final_train_loss,  # summary.json's for a finished run, else the last logged
        val_loss=p.final_val_loss,
        tokens_per_sec=tokens_ps,
        steps_per_sec=steps_ps,
        eta_s=eta,
        updated_s_ago=age,
        host=run_host,
        pid=pid if isinstance(pid, int) else None,
        live=state == "running" and run_host == host,
        note=note if state != "finished" else None,
    )


def sweep_progress(view: SweepView, points: list[PointStatus]) -> dict:
    """Points done and the total ETA: remaining steps of unfinished points (an interrupted one's from its
    checkpoint) / the step rate (of the running points together; with none running, the median of the points'
    last rates, one point at a time), and never before the slowest unfinished point's own ETA."""
    default_max = (view.meta.get("config") or {}).get("max_steps")
    unfinished = [s for s in points if s.state not in (*DONE_STATES, "failed")]
    remaining = 0
    for s in unfinished:
        total = s.max_steps or default_max
        if total:
            remaining += max(int(total) - (s.resume_step or 0), 0)
    running = [s.steps_per_sec for s in points if s.state == "running" and s.steps_per_sec]
    known = [s.steps_per_sec for s in points if s.steps_per_sec]
    rate = sum(running) if running else (float(pd.Series(known).median()) if known else None)
    rate_from = "running points" if running else "the points' last rates, none running" if known else None
    point_etas = [s.eta_s for s in unfinished if s.eta_s is not None]
    counts = {
        k: sum(s.state == k for s in points)
        for k in ("finished", "diverged", "running", "stalled", "failed", "pending", "interrupted")
    }
    return {
        "path": str(view.path),
        "state": view.state,
        "may_extend": view.state == "running" and view.meta.get("extend", True),  # False: --no-extend
        "preset": view.preset or next((p.log.config.get("preset") for p in view.points if p.log), None),
        "points_total": len(points),
        "points_done": counts["finished"] + counts["diverged"],
        "counts": counts,
        "remaining_steps": remaining,
        "steps_per_sec": rate,
        "rate_from": rate_from,
        "eta_s": 0.0 if remaining == 0 else (max([remaining / rate, *point_etas]) if rate else None),
        "target_val_loss": view.target_val_loss,
        "best_lr": view.best.value if view.best else None,
    }


def focus_point(view: SweepView, points: list[PointStatus]) -> SweepPoint | None:
    """The run the speed verdict is about: a live one, else the most recently updated one with data, finished
    runs first (a diverged run stopped after a few steps says little about speed)."""
    by_name = {p.name: p for p in view.points}
    live = [s for s in points if s.live]
    if live:
        return by_name[live[0].name]
    with_data = [s for s in points if s.tokens_per_sec is not None]
    if not with_data:
        return None
    newest = min(with_data, key=lambda s: (s.state != "finished",
                                           s.updated_s_ago if s.updated_s_ago is not None else math.inf))  # fmt: skip
    return by_name[newest.name]


@dataclass
class Diagnosis:
    generated_at: str
    host: str
    sweep: dict
    points: list[PointStatus]
    device: DeviceInfo
    speed: SpeedVerdict | None
    gpu: GpuInfo | None = None  # the focus run's GPU (else this machine's cuda:0)

    def as_dict(self) -> dict:
        """JSON-ready (NaN/inf -> None); the focus run's GPU is in ``device`` already."""
        return _clean({k: v for k, v in asdict(self).items() if k != "gpu"})


def diagnose(
    sweep_dir: str | os.PathLike = DEFAULT_SWEEP_DIR,
    *,
    stale_after: float = DEFAULT_STALE_AFTER_S,
    device: DeviceInfo | None = None,
    now: datetime | None = None,
) -> Diagnosis:
    """Read the sweep and probe the device (unless ``device`` is given); never raises on partial files."""
    view = load_sweep(sweep_dir, "max_lr")
    now = now or datetime.now(UTC)
    host = socket.gethostname()
    points = [point_status(p, now=now, stale_after=stale_after, host=host) for p in view.points]
    device = device or probe_device()
    focus = focus_point(view, points)
    verdict, gpu = None, device.gpu(0)
    if focus is not None and focus.log is not None:
        live = any(s.live and s.name == focus.name for s in points)
        facts = RunFacts.from_log(focus.log, live=live)
        if facts is not None:
            verdict, gpu = speed_verdict(facts, device), gpu_for_run(facts, device) or gpu
    return Diagnosis(
        generated_at=utc_timestamp(now),
        host=host,
        sweep=sweep_progress(view, points),
        points=points,
        device=device,
        speed=verdict,
        gpu=gpu,
    )


def format_diagnosis(d: Diagnosis) -> str:
    """The human report: sweep progress, one line per learning rate, the device, the speed verdict."""
    s = d.sweep
    eta = duration(s["eta_s"]) if s["eta_s"] is not None else "unknown"
    rate = f" at {s['steps_per_sec']:.2f} steps/s ({s['rate_from']})" if s["steps_per_sec"] else ""
    counts = ", ".join(f"{n} {k}" for k, n in s["counts"].items() if n)
    left = "no steps left"
    if s["remaining_steps"]:
        left = f"remaining {s['remaining_steps']:,} steps, ETA {eta}{rate}"
    extend = " (bracketing may still add points)" if s["may_extend"] else ""
    lines = [
        f"sweep {s['path']}  (preset {s['preset'] or '?'}, sweep state {s['state'] or '?'})  {d.generated_at}",
        f"points done {s['points_done']}/{s['points_total']} ({counts}); {left}{extend}",
        "",
    ]
    if not d.points:
        lines.append("no learning rate has started yet (no sweep.json points and no lr_* run dirs)")
    else:
        header = (
            f"{'lr':>9} {'state':<11} {'step':>13} {'%':>5} "
            f"{'train':>7} {'val':>7} {'tok/s now':>9} "
            f"{'ETA':>9}  note"
        )
        lines += [header, "-" * len(header)]
        for p in d.points:
            steps = f"{fmt(p.step, 'd')}/{fmt(p.max_steps, 'd')}"
            added = "+" if p.added_by == "bracketing" else " "
            eta_p = "done" if p.state in DONE_STATES else duration(p.eta_s) if p.eta_s is not None else "-"
            lines.append(
                f"{p.lr:>8.3g}{added} {p.state:<11} {steps:>13} {fmt(p.percent, '.0f'):>5} "
                f"{fmt(p.train_loss, '.3f'):>7} {fmt(p.val_loss, '.3f'):>7} {fmt(p.tokens_per_sec, ',.0f'):>9} "
                f"{eta_p:>9}  {p.note or ''}"
            )
        lines.append(
            f"(+ = added by bracketing; tok/s now = median of the last {RECENT_ROWS} log intervals, training only)"
        )
    best = s["best_lr"]
    lines += ["", f"best lr so far: {best:g}" if best is not None else "best lr so far: none finished", ""]
    lines += format_device(d.device, d.gpu)
    lines.append("")
    lines += format_verdict(d.speed) if d.speed is not None else ["speed: no run has logged throughput yet"]
    return "\n".join(lines)


def _clean(x):
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def _watch_argv(argv: list[str]) -> list[str]:
    """``--watch`` takes an optional number: insert the default when the next word is not one, so
    ``--watch runs/x`` means watch runs/x every DEFAULT_WATCH_S seconds."""
    out = list(argv)
    for i, word in enumerate(out):
        if word == "--watch":
            nxt = out[i + 1] if i + 1 < len(out) else None
            try:
                float(nxt)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                out.insert(i + 1, str(DEFAULT_WATCH_S))
            break
    return out


def build_parser() -> ArgumentParser:
    p = command_parser("lr-diagnose", __doc__)
    p.add_argument("sweep_dir", nargs="?", type=Path, default=DEFAULT_SWEEP_DIR, help="default: %(default)s")
    p.add_argument(
        "--watch",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"redraw every SECONDS (default {DEFAULT_WATCH_S:g}) until Ctrl-C",
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON (one object per redraw)")
    p.add_argument(
        "--stale-after",
        type=float,
        default=DEFAULT_STALE_AFTER_S,
        metavar="SECONDS",
        help="a running run with no status update for this long is 'stalled' (default: %(default)s)",
    )
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(_watch_argv(sys.argv[1:] if argv is None else argv))
    if args.watch is not None and not args.watch > 0:
        raise UserError(f"--watch needs a positive number of seconds, got {args.watch:g}")
    if not args.stale_after > 0:
        raise UserError(f"--stale-after needs a positive number of seconds, got {args.stale_after:g}")
    try:
        while True:
            d = diagnose(args.sweep_dir, stale_after=args.stale_after)
            started = (Path(args.sweep_dir) / SWEEP_FILE).exists()  # a sweep that has only just started
            if not d.points and not started:
                print(f"nothing here yet: {args.sweep_dir} has no sweep.json and no run directories "
                      "(not a sweep, or one that has not started)", file=sys.stderr)  # fmt: skip
                return 1
            if args.json:
                text = json.dumps(d.as_dict(), indent=None if args.watch is not None else 2)
            else:  # a redraw clears the screen first
                text = (CLEAR_SCREEN if args.watch is not None else "") + format_diagnosis(d)
            print(text, flush=True)
            if args.watch is None:
                return 0
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0  # Ctrl-C ends --watch; that is the normal way out
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (silence the flush at exit)
        return 0


if __name__ == "__main__":
    sys.exit(main())
