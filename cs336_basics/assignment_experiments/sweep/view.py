"""The one reader of a sweep directory, shared by every client's summary, diagnose and report.

A point's state, losses and timing come from its run directory alone; sweep.json adds the grid, who added
the point and why, and launch errors. A launch error shows only when the run dir is neither live nor done
(a duplicate launch that lost the run lock must not hide a point that trains or finished). Points at several
seeds of one value form a ``ValueGroup``: mean ± std of the losses, converged when every seed converged.
Nothing here raises on a partial sweep.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from cs336_basics.assignment_experiments.sweep.record import (
    LOCK_FILE,
    read_sweep_json,
    seed_of,
    sweep_json_over,
)
from cs336_basics.basics.divergence import stability_threshold
from cs336_basics.errors import UserError
from cs336_basics.experiment_log import ExperimentLog, load_experiment_log
from cs336_basics.experiment_log.reader import (
    CONFIG_FILE,
    DONE_STATES,
    MOVED_ASIDE,
    TRAIN_RATE,
    TRAIN_RATE_NOTE,
    finite_or_none,
    process_gone,
    read_json_dict,
)
from cs336_basics.formatting import count, duration, fmt, loss_text


@dataclass
class SweepPoint:
    """One run of the sweep: a value of the swept field at one seed."""

    value: float
    seed: int
    name: str
    record: dict = field(default_factory=dict)
    log: ExperimentLog | None = None
    launch_error: dict | None = None  # of the latest attempt

    @property
    def added_by(self) -> str:
        return self.record.get("added_by", "grid")

    @property
    def is_extension(self) -> bool:
        return self.added_by == "bracketing"

    @property
    def why(self) -> str | None:
        return self.record.get("why")

    @property
    def state(self) -> str:
        """pending | running | finished | diverged | failed | interrupted."""
        log_state = self.log.state if self.log is not None else "pending"
        if log_state in (*DONE_STATES, "running") or self.launch_error is None:
            return log_state
        return "failed"

    @property
    def reason(self) -> str | None:
        if self.launch_error is not None and self.state == "failed":
            # the sweep's account of the latest attempt, with its advice
            return self.launch_error.get("error")
        return self.log.reason if self.log is not None else None

    def _log(self, name: str):
        return getattr(self.log, name) if self.log is not None else None

    final_train_loss = property(lambda self: self._log("final_train_loss"))
    final_val_loss = property(lambda self: self._log("final_val_loss"))
    best_val_loss = property(lambda self: self._log("best_val_loss"))
    step = property(lambda self: self._log("last_step"))
    max_steps = property(lambda self: self._log("max_steps"))
    tokens = property(lambda self: self._log("tokens"))
    wallclock_s = property(lambda self: self._log("wallclock_s"))
    tokens_per_sec = property(lambda self: self._log("tokens_per_sec"))
    initial_loss = property(lambda self: self._log("initial_loss"))
    val_loss_sem = property(lambda self: self._log("val_loss_sem"))

    @property
    def converged(self) -> bool:
        return self.state == "finished" and self.final_val_loss is not None


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    xs = [x for x in values if x is not None]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


@dataclass
class ValueGroup:
    """Every seed of one value: what tables, bracketing and the value-vs-loss plot show."""

    value: float
    points: list[SweepPoint]

    @property
    def lr(self) -> float:
        return self.value

    @property
    def state(self) -> str:
        states = [p.state for p in self.points]
        if all(s in DONE_STATES for s in states):
            return "diverged" if "diverged" in states else "finished"
        for s in ("running", "failed", "interrupted", "pending"):
            if s in states:
                return s
        return states[0]

    @property
    def converged(self) -> bool:
        return all(p.converged for p in self.points)

    @property
    def is_extension(self) -> bool:
        return any(p.is_extension for p in self.points)

    @property
    def reason(self) -> str | None:
        return next((p.reason for p in self.points if p.reason and p.state == self.state), None)

    def mean_std(self, name: str) -> tuple[float | None, float | None]:
        """Mean and std over the seeds that have gone furthest: while a sweep runs its seeds may be at
        different steps, and a loss at step 30 does not average with one at step 60."""
        furthest = max((p.step or 0 for p in self.points), default=0)
        return _mean_std([getattr(p, name) for p in self.points if (p.step or 0) == furthest])

    final_val_loss = property(lambda self: self.mean_std("final_val_loss")[0])
    final_val_std = property(lambda self: self.mean_std("final_val_loss")[1])
    best_val_loss = property(lambda self: self.mean_std("best_val_loss")[0])
    final_train_loss = property(lambda self: self.mean_std("final_train_loss")[0])
    tokens = property(lambda self: self.mean_std("tokens")[0])
    wallclock_s = property(lambda self: self.mean_std("wallclock_s")[0])
    tokens_per_sec = property(lambda self: self.mean_std("tokens_per_sec")[0])
    step = property(lambda self: min((p.step or 0 for p in self.points), default=None))
    max_steps = property(lambda self: max((p.max_steps or 0 for p in self.points), default=None) or None)

    @property
    def best_run(self) -> SweepPoint:
        """The seed with the lowest final validation loss (for samples and checkpoints)."""
        done = [p for p in self.points if p.final_val_loss is not None]
        return min(done, key=lambda p: p.final_val_loss) if done else self.points[0]


@dataclass
class SweepView:
    path: Path
    meta: dict
    points: list[SweepPoint]

    @property
    def field(self) -> str:
        return self.meta.get("field", "max_lr")

    @property
    def config(self) -> dict:
        return self.meta.get("config") or {}

    @property
    def target_val_loss(self) -> float | None:
        return finite_or_none(self.config.get("target_val_loss"))

    @property
    def preset(self) -> str | None:
        return self.meta.get("preset") or self.config.get("preset")

    @property
    def state(self) -> str:
        """The sweep's own state; ``running`` whose lock holder is gone on this host reads ``interrupted``."""
        state = self.meta.get("state") if self.meta else None
        if state == "running" and process_gone(read_json_dict(self.path / LOCK_FILE)):
            return "interrupted"
        return state or "unknown (no sweep.json)"

    @property
    def groups(self) -> list[ValueGroup]:
        values = sorted({p.value for p in self.points})
        return [ValueGroup(v, [p for p in self.points if p.value == v]) for v in values]

    def group(self, value) -> ValueGroup | None:
        return next((g for g in self.groups if g.value == value), None)

    def point(self, value, seed: int = 0) -> SweepPoint | None:
        return next((p for p in self.points if p.value == value and p.seed == seed), None)

    @property
    def best(self) -> ValueGroup | None:
        """The converged value with the lowest mean final validation loss."""
        done = [g for g in self.groups if g.converged]
        return min(done, key=lambda g: g.final_val_loss) if done else None

    @property
    def largest_converged(self) -> ValueGroup | None:
        return max((g for g in self.groups if g.converged), key=lambda g: g.value, default=None)

    @property
    def smallest_diverged(self) -> ValueGroup | None:
        return min((g for g in self.groups if g.state == "diverged"), key=lambda g: g.value, default=None)

    @property
    def target_met(self) -> bool | None:
        best, target = self.best, self.target_val_loss
        return None if target is None or best is None else best.final_val_loss <= target

    @property
    def threshold_text(self) -> str:
        """Adam's stability threshold in words, from the sweep's beta1: ``38/η`` at beta1 = 0.9."""
        beta1 = finite_or_none(self.config.get("beta1"))
        return f"{stability_threshold(1.0, 0.9 if beta1 is None else beta1):.3g}/η"


def require_sweep(view: SweepView, consequence: str) -> SweepView:
    """``view`` if it is a sweep (a sweep.json or run directories), else one line saying so and ``consequence``."""
    if not view.meta and not view.points:
        raise UserError(f"{view.path} is not a sweep (no sweep.json and no run directories); {consequence}")
    return view


def load_sweep(path: str | Path, field: str | None = None) -> SweepView:
    """Read a sweep directory: sweep.json (if any) and every point's run dir, sorted by value then seed. With
    ``field``, a sweep over another field is refused (one line)."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"no sweep directory at {path}; run the sweep first or pass the right directory")
    meta = sweep_json_over(path, field) if field else read_sweep_json(path)
    records = {p["name"]: p for p in meta.get("points", [])}
    key = meta.get("field", field or "max_lr")
    for child in sorted(path.iterdir()):  # run dirs sweep.json doesn't know of (it may be lost)
        config = (
            read_json_dict(child / CONFIG_FILE) if child.is_dir() and MOVED_ASIDE not in child.name else None
        )
        if config and child.name not in records and finite_or_none(config.get(key)) is not None:
            records[child.name] = {"value": config[key], "seed": seed_of(child.name), "name": child.name}
    errors: dict[str, dict] = {}
    for err in meta.get("launch_errors", []):
        rec = records.get(err.get("name")) if isinstance(err, dict) else None
        if rec is not None and err.get("attempt", 0) >= rec.get("attempts", 0):
            errors[err["name"]] = err
    points = []
    for name, rec in records.items():
        run_dir = path / name
        log = load_experiment_log(run_dir) if run_dir.is_dir() else None
        points.append(SweepPoint(rec["value"], int(rec.get("seed") or 0), name, rec, log, errors.get(name)))
    return SweepView(path, meta, sorted(points, key=lambda p: (p.value, p.seed)))


def format_table(view: SweepView, label: str = "lr", value_spec: str = ".3g") -> str:
    """The human table: one row per value (mean ± std over seeds), the best marked."""
    seeds = max((len(g.points) for g in view.groups), default=1)
    header = (f"{label:>10} {'status':<12} {'train':>7} {'best val':>8} {'final val':>{9 + 8 * (seeds > 1)}} "
              f"{'tokens':>9} {'time':>8} {TRAIN_RATE:>11}")  # fmt: skip
    lines = [header, "-" * len(header)]
    best = view.best
    for g in view.groups:
        mark = "*" if best is not None and g.value == best.value else " "
        status = g.state + (" (+)" if g.is_extension else "")
        tokens = count(g.tokens) if g.tokens else "-"
        wall = duration(g.wallclock_s) if g.wallclock_s else "-"
        lines.append(
            f"{mark}{g.value:>9{value_spec}} {status:<12} {fmt(g.final_train_loss):>7} {fmt(g.best_val_loss):>8} "
            f"{loss_text(g.final_val_loss, g.final_val_std):>{9 + 8 * (seeds > 1)}} {tokens:>9} {wall:>8} "
            f"{fmt(g.tokens_per_sec, ',.0f'):>11}"
        )
    notes = ["(+) added beyond the grid by bracketing"] if any(g.is_extension for g in view.groups) else []
    notes += [f"* best {label}"] if best is not None else []
    notes += [f"losses are mean ± std over {seeds} seeds"] if seeds > 1 else []
    lines += ["; ".join(notes)] if notes else []
    lines.append(TRAIN_RATE_NOTE)
    if best is not None:
        lines.append(
            f"best {label}: {best.value:g} (final val loss {loss_text(best.final_val_loss, best.final_val_std, '.4f')})"
        )
    else:
        lines.append(f"best {label}: none yet (no point has finished)")
    if view.target_val_loss is not None:
        met = view.target_met
        lines.append(f"target val loss {view.target_val_loss:g} ({view.preset or 'preset'}): "
                     + ("met" if met else "not met" if met is not None else "not known yet"))  # fmt: skip
    return "\n".join(lines)
