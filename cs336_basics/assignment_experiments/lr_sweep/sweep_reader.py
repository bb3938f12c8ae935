"""The one reader of a sweep directory, shared by the sweep's summary, diagnose_lr_sweep and analyze_lr_sweep.

A sweep dir holds ``sweep.json`` (written by the sweep) and one run dir per learning rate (``lr_*``, written by
the trainer). The run dirs are the source of truth for each point's progress; ``sweep.json`` adds the grid,
which points were added by bracketing, and errors of points that failed before writing anything.
Every file may be missing or mid-write: nothing here raises on a partial sweep.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cs336_basics.assignment_experiments.lr_sweep.naming import lr_dir_name, lr_from_dir_name
from cs336_basics.errors import UserError
from cs336_basics.experiment_log import ExperimentLog, load_experiment_log
from cs336_basics.experiment_log.reader import finite_or_none as _num
from cs336_basics.experiment_log.reader import read_json_dict

SWEEP_FILE = "sweep.json"
DEFAULT_SWEEP_DIR = Path("runs/lr_sweep")


@dataclass
class SweepPoint:
    """One learning rate: its sweep.json record and its run directory (None until it has started)."""

    lr: float
    name: str
    record: dict = field(default_factory=dict)
    log: ExperimentLog | None = None

    @property
    def added_by(self) -> str:
        return self.record.get("added_by", "grid")

    @property
    def is_extension(self) -> bool:
        return self.added_by == "extension"

    @property
    def state(self) -> str:
        """pending | running | finished | diverged | failed | interrupted (run dir first, then sweep.json)."""
        if self.record.get("state") == "failed":
            return "failed"
        if self.log is not None and self.log.state != "pending":
            return self.log.state
        return self.record.get("state", "pending")

    @property
    def reason(self) -> str | None:
        for src in (
            self.log.summary if self.log else None,
            self.log.status if self.log else None,
            self.record,
        ):
            if src and src.get("reason"):
                return str(src["reason"])
        return self.record.get("error")

    def _summary(self, key: str) -> float | None:
        return _num(self.log.summary.get(key)) if self.log and self.log.summary else None

    @property
    def final_train_loss(self) -> float | None:
        return self.log.final_train_loss if self.log else None

    @property
    def final_val_loss(self) -> float | None:
        return self.log.final_val_loss if self.log else None

    @property
    def best_val_loss(self) -> float | None:
        return self.log.best_val_loss if self.log else None

    @property
    def step(self) -> int | None:
        return self.log.last_step if self.log else None

    @property
    def max_steps(self) -> int | None:
        if self.log is None:
            return None
        v = _num((self.log.status or {}).get("max_steps")) or _num(self.log.config.get("max_steps"))
        return int(v) if v else None

    @property
    def tokens(self) -> float | None:
        v = self._summary("tokens")
        if v is None and self.log is not None and len(self.log.metrics):
            v = _num(self.log.metrics["tokens"].iloc[-1])
        return v

    @property
    def wallclock_s(self) -> float | None:
        v = self._summary("wallclock_s")
        if v is None and self.log is not None and len(self.log.metrics):
            v = _num(self.log.metrics["wallclock_s"].iloc[-1])
        return v

    @property
    def tokens_per_sec(self) -> float | None:
        """Training throughput: the median over logged intervals (evaluation excluded)."""
        if self.log is not None and len(self.log.metrics):
            return _num(self.log.metrics["tokens_per_sec"].median())
        return None

    @property
    def converged(self) -> bool:
        return self.state == "finished" and self.final_val_loss is not None


@dataclass
class SweepView:
    path: Path
    meta: dict
    points: list[SweepPoint]

    @property
    def target_val_loss(self) -> float | None:
        v = _num(self.meta.get("target_val_loss"))
        if v is None:
            v = _num((self.meta.get("config") or {}).get("target_val_loss"))
        return v

    @property
    def preset(self) -> str | None:
        return self.meta.get("preset") or (self.meta.get("config") or {}).get("preset")

    @property
    def best_point(self) -> SweepPoint | None:
        """The finished point with the lowest final validation loss."""
        done = [p for p in self.points if p.converged]
        return min(done, key=lambda p: p.final_val_loss) if done else None

    @property
    def largest_converged(self) -> SweepPoint | None:
        done = [p for p in self.points if p.converged]
        return max(done, key=lambda p: p.lr) if done else None

    @property
    def smallest_diverged(self) -> SweepPoint | None:
        bad = [p for p in self.points if p.state == "diverged"]
        return min(bad, key=lambda p: p.lr) if bad else None

    @property
    def target_met(self) -> bool | None:
        best, target = self.best_point, self.target_val_loss
        if target is None or best is None:
            return None
        return best.final_val_loss <= target

    def point(self, lr: float) -> SweepPoint | None:
        return next((p for p in self.points if p.lr == lr), None)

    def table(self) -> pd.DataFrame:
        """One row per learning rate: the numbers the summary, the diagnosis and the report print."""
        rows = [
            {
                "lr": p.lr,
                "name": p.name,
                "added": p.is_extension,
                "status": p.state,
                "step": p.step,
                "max_steps": p.max_steps,
                "final_train_loss": p.final_train_loss,
                "best_val_loss": p.best_val_loss,
                "final_val_loss": p.final_val_loss,
                "tokens": p.tokens,
                "wallclock_s": p.wallclock_s,
                "tokens_per_sec": p.tokens_per_sec,
                "reason": p.reason,
            }
            for p in self.points
        ]
        return pd.DataFrame(
            rows,
            columns=[
                "lr",
                "name",
                "added",
                "status",
                "step",
                "max_steps",
                "final_train_loss",
                "best_val_loss",
                "final_val_loss",
                "tokens",
                "wallclock_s",
                "tokens_per_sec",
                "reason",
            ],
        )


def load_sweep(path: str | Path = DEFAULT_SWEEP_DIR) -> SweepView:
    """Read a sweep directory: sweep.json (if any) and every ``lr_*`` run dir, sorted by learning rate."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(
            f"no sweep directory at {path}; run the sweep first (lr-sweep --out {path}) "
            f"or pass the right directory"
        )
    meta = read_json_dict(path / SWEEP_FILE) or {}
    records = {}
    for rec in meta.get("points") or []:
        lr = _num(rec.get("lr")) if isinstance(rec, dict) else None
        if lr is not None:
            records[lr] = rec
    for child in path.iterdir():
        lr = lr_from_dir_name(child.name) if child.is_dir() else None
        if lr is not None and lr not in records:
            records[lr] = {"lr": lr, "name": child.name}
    points = []
    for lr in sorted(records):
        rec = records[lr]
        name = rec.get("name") or lr_dir_name(lr)
        run_dir = path / name
        points.append(SweepPoint(lr, name, rec, load_experiment_log(run_dir) if run_dir.is_dir() else None))
    return SweepView(path, meta, points)


def format_table(view: SweepView) -> str:
    """The human table: LR, status, final train loss, best and final val loss, tokens, wallclock, tokens/s."""

    def f(x, fmt):
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)

    header = f"{'lr':>10} {'status':<12} {'train':>7} {'best val':>8} {'final val':>9} {'tokens':>9} {'time':>8} {'tok/s':>9}"
    lines = [header, "-" * len(header)]
    best = view.best_point
    for p in view.points:
        mark = "*" if best is not None and p is best else " "
        status = p.state + (" (+)" if p.is_extension else "")
        tokens = f"{p.tokens / 1e6:.1f}M" if p.tokens else "-"
        wall = f"{p.wallclock_s / 60:.1f}m" if p.wallclock_s else "-"
        lines.append(
            f"{mark}{p.lr:>9.3g} {status:<12} {f(p.final_train_loss, '.3f'):>7} {f(p.best_val_loss, '.3f'):>8} "
            f"{f(p.final_val_loss, '.3f'):>9} {tokens:>9} {wall:>8} {f(p.tokens_per_sec, ',.0f'):>9}"
        )
    lines.append("(+) added beyond the grid by bracketing; * best learning rate")
    if best is not None:
        lines.append(f"best lr: {best.lr:g} (final val loss {best.final_val_loss:.4f})")
    else:
        lines.append("best lr: none yet (no point has finished)")
    target = view.target_val_loss
    if target is not None:
        met = view.target_met
        lines.append(
            f"target val loss {target:g} ({view.preset or 'preset'}): "
            + ("met" if met else "not met" if met is not None else "not known yet")
        )
    return "\n".join(lines)
