"""Train one prepared point of a sweep from its run dir's config.json: in-process, as a worker process or
as a submitit job. Its W&B options come from the sweep's sweep.json (``point_wandb``), so every executor
launches a run dir and nothing else.

    python -m cs336_basics.assignment_experiments.sweep.point --run-dir runs/lr_sweep/lr_3e_03
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

from cs336_basics.assignment_experiments.sweep.launcher import die_with_parent
from cs336_basics.assignment_experiments.sweep.record import read_sweep_json, sweep_id
from cs336_basics.basics.config import ExperimentConfig
from cs336_basics.errors import ArgumentParser, StartOver, UserError, cli_entry, one_line
from cs336_basics.experiment_log.reader import CONFIG_FILE


def run_point(run_dir: str | Path, *, reference: bool = False, progress: bool = True) -> dict:
    """Train (resume, or skip if done) the run dir's config; return {"state", "reason", "error"}, and
    ``"start_over": True`` when the run dir can't be continued (``StartOver``).

    ``reference``: the stall rule compares against the smaller learning rates beside it (learning-rate
    sweeps). An exception becomes state "failed" with its error in one line; Ctrl-C propagates after the
    trainer saved a checkpoint.
    """
    from cs336_basics.assignment_experiments.lr_sweep.reference import ReferenceCurves
    from cs336_basics.basics.run_experiment import run_experiment

    run_dir = Path(run_dir)
    try:
        cfg = ExperimentConfig.load(run_dir / CONFIG_FILE)
        ref = ReferenceCurves(run_dir.parent, cfg.max_lr) if reference else None
        summary = run_experiment(
            cfg, out_dir=run_dir, progress=progress, reference_loss=ref, wandb=point_wandb(run_dir)
        )
    except KeyboardInterrupt:
        raise
    except StartOver as err:  # the sweep says how: its own --restart, not --fresh
        return {**failed(err.what), "start_over": True}
    except Exception as err:  # a failed point must not stop the sweep
        if not isinstance(err, UserError | OSError):
            traceback.print_exc()
        return failed(one_line(err))
    return {"state": summary.get("status", "finished"), "reason": summary.get("reason"), "error": None}


def failed(error: str) -> dict:
    """A point's result when it failed before or without a summary: ``error`` in one line."""
    return {"state": "failed", "reason": None, "error": " ".join(error.split())}


def point_wandb(run_dir: Path) -> dict | None:
    """The point's ``WandbSink.open`` options, or None when its sweep runs without --wandb: the sweep's
    project, entity and mode (sweep.json's ``wandb``), grouped by the sweep's id, tagged with the swept value
    (``lr=0.01``) and, with several seeds, the seed (``seed=1``). The run is named like the run dir."""
    meta = read_sweep_json(run_dir.parent)
    point = next((p for p in meta.get("points", []) if p["name"] == run_dir.name), None)
    if not meta.get("wandb") or point is None:
        return None
    tags = [f"{meta.get('prefix', meta['field'])}={point['value']:g}"]
    if meta.get("seeds", 1) > 1:
        tags.append(f"seed={point['seed']}")
    return {**meta["wandb"], "group": sweep_id(meta, run_dir.parent), "tags": tags}


class PointJob:
    """A picklable submitit callable. On preemption/timeout submitit calls ``checkpoint``, which requeues the
    same job: it resumes from the run's last checkpoint. ``threads``: the job's share of the CPU's cores when
    jobs run at once on one machine (submitit's local executor; ``launcher.child_threads``)."""

    def __init__(self, run_dir: str | Path, reference: bool, threads: str | None = None):
        self.run_dir, self.reference, self.threads = str(run_dir), reference, threads

    def __call__(self) -> dict:
        if self.threads is not None:
            import torch

            torch.set_num_threads(int(self.threads))
        return run_point(self.run_dir, reference=self.reference, progress=False)

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(PointJob(self.run_dir, self.reference, self.threads))


@cli_entry
def main(argv: list[str] | None = None) -> int:
    die_with_parent()
    parser = ArgumentParser(description="Train one prepared point of a sweep.")
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--reference", action="store_true", help="stall rule against smaller learning rates")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    result = run_point(args.run_dir, reference=args.reference, progress=not args.no_progress)
    print(json.dumps(result))
    return 0 if result["state"] != "failed" else 1


if __name__ == "__main__":
    sys.exit(main())
