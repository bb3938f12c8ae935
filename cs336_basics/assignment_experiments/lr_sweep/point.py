"""Run one point of a sweep: the same function in-process, in a per-GPU subprocess, or as a submitit job.

python -m cs336_basics.assignment_experiments.lr_sweep.point --sweep-dir runs/lr_sweep --lr 3e-3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import traceback
from pathlib import Path

from cs336_basics.assignment_experiments.lr_sweep.naming import lr_dir_name
from cs336_basics.assignment_experiments.lr_sweep.reference import ReferenceCurves
from cs336_basics.assignment_experiments.lr_sweep.sweep_reader import SWEEP_FILE
from cs336_basics.basics.config import ExperimentConfig
from cs336_basics.basics.trainer import run_experiment
from cs336_basics.errors import UserError, cli_entry
from cs336_basics.experiment_log.reader import read_json_dict


def point_config(sweep_dir: Path, lr: float) -> ExperimentConfig:
    """The sweep's base config (from sweep.json) at learning rate ``lr``."""
    meta = read_json_dict(Path(sweep_dir) / SWEEP_FILE)
    if not meta or not isinstance(meta.get("config"), dict):
        raise UserError(
            f"{Path(sweep_dir) / SWEEP_FILE} is missing or unreadable; run lr-sweep on that directory"
        )
    base = ExperimentConfig.from_dict(meta["config"])
    return dataclasses.replace(base, max_lr=lr, extra={**base.extra, "sweep_dir": str(sweep_dir)})


def run_point(sweep_dir: str | Path, lr: float, progress: bool = True) -> dict:
    """Train (or resume, or skip if done) the point ``lr``; return {"state", "reason", "error"}.

    An exception (including out-of-memory) becomes state "failed" with its error; Ctrl-C propagates after the
    trainer has saved a checkpoint.
    """
    sweep_dir = Path(sweep_dir)
    try:
        summary = run_experiment(
            point_config(sweep_dir, lr),
            out_dir=sweep_dir / lr_dir_name(lr),
            progress=progress,
            reference_loss=ReferenceCurves(sweep_dir, lr),
        )
    except KeyboardInterrupt:
        raise
    except Exception as err:  # a failed point must not stop the sweep
        detail = "".join(traceback.format_exception_only(type(err), err)).strip()
        if not isinstance(err, UserError):
            traceback.print_exc()
        return {"state": "failed", "reason": None, "error": detail}
    return {"state": summary.get("status", "finished"), "reason": summary.get("reason"), "error": None}


class PointJob:
    """A picklable submitit callable. On preemption/timeout submitit calls ``checkpoint``, which requeues the
    same job: it resumes from the run's last checkpoint (run_experiment resumes automatically)."""

    def __init__(self, sweep_dir: str | Path, lr: float):
        self.sweep_dir, self.lr = str(sweep_dir), lr

    def __call__(self) -> dict:
        return run_point(self.sweep_dir, self.lr, progress=False)

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(PointJob(self.sweep_dir, self.lr))


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run one learning-rate point of an existing sweep directory."
    )
    parser.add_argument("--sweep-dir", type=Path, required=True)
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    result = run_point(args.sweep_dir, args.lr, progress=not args.no_progress)
    print(json.dumps(result))
    return 0 if result["state"] != "failed" else 1


if __name__ == "__main__":
    sys.exit(main())
