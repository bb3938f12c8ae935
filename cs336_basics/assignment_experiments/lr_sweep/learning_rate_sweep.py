"""Sweep the learning rate: train the same model at several learning rates, resumably, and bracket the optimum.

    uv run python -m cs336_basics.assignment_experiments.lr_sweep.learning_rate_sweep --preset demo
    lr-sweep --low-resource --learning-rates 1e-3 3e-3 1e-2
    lr-sweep --summary                      # the results table of runs/lr_sweep, live or finished

Re-running the same command resumes: finished points are skipped, interrupted ones continue from their last
checkpoint, pending (and previously failed) ones start. See README.md beside this file.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from cs336_basics.assignment_experiments.lr_sweep.bracketing import PointOutcome, next_extension
from cs336_basics.assignment_experiments.lr_sweep.executors import (
    InProcessExecutor,
    SubmititExecutor,
    SubprocessExecutor,
    slurm_parameters,
)
from cs336_basics.assignment_experiments.lr_sweep.naming import lr_dir_name, parse_learning_rates
from cs336_basics.assignment_experiments.lr_sweep.sweep_lock import SweepLock
from cs336_basics.assignment_experiments.lr_sweep.sweep_reader import (
    DEFAULT_SWEEP_DIR,
    SWEEP_FILE,
    format_table,
    load_sweep,
)
from cs336_basics.atomic import atomic_write_json
from cs336_basics.basics.config import (
    PRESETS,
    ExperimentConfig,
    add_config_arguments,
    config_overrides,
    create_experiment_config,
)
from cs336_basics.basics.run_experiment import default_preset, move_aside
from cs336_basics.basics.trainer import load_run_data
from cs336_basics.errors import UserError, cli_entry
from cs336_basics.experiment_log.reader import read_json_dict

DEFAULT_LEARNING_RATES = [1e-4, 3e-4, 6e-4, 1e-3, 3e-3, 6e-3, 1e-2]
# The demo model (small, short runs) wants larger rates; its grid still ends below the edge, so bracketing shows.
PRESET_LEARNING_RATES = {"demo": [3e-3, 1e-2, 3e-2]}
DONE = ("finished", "diverged")
# Fields that may differ between invocations of the same sweep (they don't change results).
_FREE_FIELDS = {
    "device",
    "dtype",
    "compile",
    "tf32",
    "extra",
    "max_lr",
    "data_dir",
    "train_data",
    "val_data",
    "tokenizer_path",
}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def prepare_sweep_data(config: ExperimentConfig) -> ExperimentConfig:
    """Prepare (download, tokenize) the data once for all points; return the config pointing at the files."""
    cfg = dataclasses.replace(config)
    if cfg.train_data is None or cfg.val_data is None:
        from cs336_basics.data import prepare_dataset

        prepared = prepare_dataset(cfg.dataset, cfg.data_dir, vocab_size=cfg.vocab_size)
        cfg.train_data = cfg.train_data or str(Path(prepared.train_tokens).resolve())
        cfg.val_data = cfg.val_data or str(Path(prepared.valid_tokens).resolve())
        cfg.tokenizer_path = cfg.tokenizer_path or str(Path(prepared.tokenizer_path).resolve())
    load_run_data(cfg.resolved())  # validates the files (vocab, length) once, before any point starts
    return cfg


class SweepRecord:
    """sweep.json: the sweep's config, grid and per-point state. Only the sweep process writes it (atomically)."""

    def __init__(self, sweep_dir: Path, meta: dict):
        self.sweep_dir, self.meta = sweep_dir, meta

    @classmethod
    def open(
        cls,
        sweep_dir: Path,
        config: ExperimentConfig,
        grid: list[float],
        extend: bool,
        max_extra_points: int,
        executor: str,
    ) -> SweepRecord:
        meta = read_json_dict(sweep_dir / SWEEP_FILE)
        new_config = config.to_dict()
        if meta is None:
            meta = {
                "version": 1,
                "created_at": _now(),
                "preset": config.preset,
                "config": new_config,
                "learning_rates": [],
                "points": [],
            }
        else:
            old = meta.get("config") or {}
            diffs = [
                f"{k}: {old.get(k)!r} -> {v!r}"
                for k, v in new_config.items()
                if k not in _FREE_FIELDS and k in old and old[k] != v
            ]
            if diffs:
                raise UserError(
                    f"{sweep_dir} holds a sweep with a different config ({'; '.join(diffs[:4])}); "
                    f"re-run with the same settings to resume, or use --fresh / --out DIR"
                )
            meta["config"] = {**old, **{k: new_config[k] for k in _FREE_FIELDS if k in new_config}}
        meta.update(
            extend=extend,
            max_extra_points=max_extra_points,
            executor=executor,
            state="running",
            target_val_loss=config.target_val_loss,
            finished_at=None,
        )
        meta["learning_rates"] = sorted(set(meta.get("learning_rates", [])) | set(grid))
        record = cls(sweep_dir, meta)
        for lr in grid:
            record.add_point(lr, "grid")
        for point in meta["points"]:
            if point.get("state") == "failed":  # a crash may be transient (OOM, preemption): retry on re-run
                point.update(state="pending", error=None)
        record.save()
        return record

    def add_point(self, lr: float, added_by: str, why: str | None = None) -> None:
        if any(p["lr"] == lr for p in self.meta["points"]):
            return
        self.meta["points"].append(
            {
                "lr": lr,
                "name": lr_dir_name(lr),
                "added_by": added_by,
                "why": why,
                "state": "pending",
                "reason": None,
                "error": None,
            }
        )
        self.meta["points"].sort(key=lambda p: p["lr"])

    def update_point(self, lr: float, **values) -> None:
        for point in self.meta["points"]:
            if point["lr"] == lr:
                point.update(values)
        self.save()

    def save(self) -> None:
        self.meta["updated_at"] = _now()
        atomic_write_json(self.sweep_dir / SWEEP_FILE, self.meta)


def learning_rate_sweep(
    config: ExperimentConfig,
    learning_rates: list[float] | None = None,
    out_dir: str | Path = DEFAULT_SWEEP_DIR,
    *,
    extend: bool = True,
    max_extra_points: int = 3,
    executor=None,
    restart: tuple[float, ...] = (),
    fresh: bool = False,
):
    """Run (or resume) the sweep in ``out_dir``; returns the final ``SweepView`` (see sweep_reader)."""
    out_dir = Path(out_dir)
    extend = extend and config.preset != "quick-test"  # a handful of steps says nothing about stability
    grid = parse_learning_rates(
        learning_rates or PRESET_LEARNING_RATES.get(config.preset, DEFAULT_LEARNING_RATES)
    )
    if max_extra_points < 0:
        raise UserError(f"--max-extra-points must be >= 0, got {max_extra_points}")
    if fresh and out_dir.exists():
        with SweepLock(out_dir):
            pass  # refuse to move a sweep that another process is running
        print(f"moved the previous sweep {out_dir} to {move_aside(out_dir)}")
    config.resolved()  # validate before any work
    executor = executor or InProcessExecutor()
    out_dir.mkdir(parents=True, exist_ok=True)
    with SweepLock(out_dir):
        config = prepare_sweep_data(config)
        record = SweepRecord.open(out_dir, config, grid, extend, max_extra_points, executor.name)
        for lr in parse_learning_rates(list(restart)) if restart else []:
            if lr not in [p["lr"] for p in record.meta["points"]]:
                raise UserError(
                    f"--restart {lr:g}: not a point of this sweep; points: "
                    + ", ".join(f"{p['lr']:g}" for p in record.meta["points"])
                )
            moved = move_aside(out_dir / lr_dir_name(lr))
            record.update_point(lr, state="pending", reason=None, error=None)
            print(f"restarting lr {lr:g}" + (f" (previous run moved to {moved})" if moved else ""))

        def on_start(lr: float) -> None:
            record.update_point(lr, state="running", started_at=_now())
            print(f"\n=== lr {lr:g} ({lr_dir_name(lr)}) ===", flush=True)

        def on_done(lr: float, result: dict) -> None:
            record.update_point(
                lr,
                state=result["state"],
                reason=result.get("reason"),
                error=result.get("error"),
                finished_at=_now(),
            )
            if result["state"] == "failed":
                print(f"lr {lr:g} failed: {result.get('error')} (the sweep goes on)", file=sys.stderr)

        attempted: set[float] = set()
        bracketing = "off (--no-extend)"
        try:
            while True:
                view = load_sweep(out_dir)
                todo = [p.lr for p in view.points if p.state not in DONE and p.lr not in attempted]
                if todo:
                    attempted.update(todo)
                    executor.run(out_dir, todo, on_start, on_done)
                    continue
                if not extend:
                    break
                outcomes = [PointOutcome(p.lr, p.state, p.final_val_loss) for p in view.points]
                proposal = next_extension(outcomes)
                n_extra = sum(p.is_extension for p in view.points)
                if proposal is None:
                    bracketing = f"bracketed ({n_extra} point(s) added beyond the grid)"
                    break
                lr, why = proposal
                if view.point(lr) is not None:
                    bracketing = (
                        f"not bracketed: {why}, but lr {lr:g} is already a point ({view.point(lr).state})"
                    )
                    break
                if n_extra >= max_extra_points:
                    bracketing = (
                        f"not bracketed: stopped after {n_extra} extra point(s) "
                        f"(--max-extra-points {max_extra_points}); still open: {why}"
                    )
                    break
                print(f"\nbracketing: {why}: adding lr {lr:g}")
                record.add_point(lr, "extension", why)
                record.save()
        except KeyboardInterrupt:
            record.meta["state"] = "interrupted"
            record.save()
            raise
        view = load_sweep(out_dir)
        best = view.best_point
        record.meta.update(
            state="finished",
            finished_at=_now(),
            best_lr=best.lr if best else None,
            target_met=view.target_met,
        )
        record.meta["bracketing"] = bracketing
        record.save()
    return load_sweep(out_dir)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lr-sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        default=None,
        help="full (default on CUDA), low-resource (default elsewhere), quick-test, demo",
    )
    p.add_argument(
        "--low-resource",
        dest="preset",
        action="store_const",
        const="low-resource",
        help="= --preset low-resource: 40.96M tokens, target val loss 2.00",
    )
    p.add_argument(
        "--quick-test",
        dest="preset",
        action="store_const",
        const="quick-test",
        help="= --preset quick-test: every lr for a handful of steps, to check a set-up",
    )
    p.add_argument(
        "--learning-rates",
        nargs="+",
        default=None,
        metavar="LR",
        help=f"learning rates to sweep (default {' '.join(f'{x:g}' for x in DEFAULT_LEARNING_RATES)}; "
        f"demo: {' '.join(f'{x:g}' for x in PRESET_LEARNING_RATES['demo'])})",
    )
    p.add_argument(
        "--out", type=Path, default=DEFAULT_SWEEP_DIR, help="sweep directory (default runs/lr_sweep)"
    )
    p.add_argument(
        "--no-extend",
        dest="extend",
        action="store_false",
        help="don't add points beyond the grid to bracket the optimum and the divergence edge",
    )
    p.add_argument(
        "--max-extra-points", type=int, default=3, help="most points bracketing may add (default 3)"
    )
    p.add_argument(
        "--restart",
        type=float,
        action="append",
        default=[],
        metavar="LR",
        help="retrain this point from scratch (its old run dir is moved aside); repeatable",
    )
    p.add_argument("--fresh", action="store_true", help="move the whole sweep dir aside and start over")
    p.add_argument("--summary", action="store_true", help="print the results table of --out and exit")
    g = p.add_argument_group("where points run")
    g.add_argument(
        "--executor",
        choices=["auto", "local", "slurm"],
        default="auto",
        help="auto: this machine (one point at a time, or one per GPU with several GPUs); "
        "local / slurm: each point a submitit job on this machine / a SLURM cluster",
    )
    g.add_argument(
        "--gpus",
        default=None,
        help="GPU ids for one point per GPU at a time, e.g. 0,1,2,3 (default: all visible GPUs)",
    )
    g.add_argument("--concurrent", type=int, default=1, help="points at once per device (default 1)")
    g.add_argument("--partition", default=None, help="SLURM partition")
    g.add_argument("--time", default=None, help="SLURM time limit per point: minutes or HH:MM:SS")
    g.add_argument("--gpus-per-job", type=int, default=1, help="GPUs per SLURM job (default 1)")
    g.add_argument("--account", default=None, help="SLURM account")
    g.add_argument(
        "--slurm-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other sbatch option, e.g. --slurm-option qos=high; repeatable",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_arguments(p, skip=("max_lr",))
    return p


def _minutes(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        if ":" in text:
            parts = [int(x) for x in text.split(":")]
            while len(parts) < 3:
                parts.insert(0, 0)
            h, m, s = parts
            return max(1, h * 60 + m + (1 if s else 0))
        return int(text)
    except ValueError:
        raise UserError(f"--time {text!r}: give minutes (90) or HH:MM:SS (01:30:00)") from None


def choose_executor(args) -> object:
    if args.concurrent < 1:
        raise UserError(f"--concurrent must be >= 1, got {args.concurrent}")
    if args.executor in ("local", "slurm"):
        params = (
            slurm_parameters(
                args.partition, _minutes(args.time), args.gpus_per_job, args.account, args.slurm_option
            )
            if args.executor == "slurm"
            else {}
        )
        if args.executor == "local" and args.time:
            params["timeout_min"] = _minutes(args.time)
        return SubmititExecutor(cluster=args.executor, parameters=params)
    gpus = None
    if args.gpus is not None:
        gpus = [g.strip() for g in args.gpus.split(",") if g.strip()]
        if not all(g.isdigit() for g in gpus):
            raise UserError(f"--gpus {args.gpus!r}: give GPU ids separated by commas, e.g. 0,1,2,3")
    else:
        import torch

        if torch.cuda.device_count() > 1:
            gpus = [str(i) for i in range(torch.cuda.device_count())]
    if gpus:
        return SubprocessExecutor([g for g in gpus for _ in range(args.concurrent)])
    if args.concurrent > 1:
        return SubprocessExecutor([None] * args.concurrent)
    return InProcessExecutor(progress=not args.no_progress)


def _split_learning_rates(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """Take the values of --learning-rates out of argv ourselves, so that a mistyped negative value such as
    ``-1e-3`` reaches our validation (and its clear message) instead of being read by argparse as a flag."""
    if "--learning-rates" not in argv:
        return argv, None
    i = argv.index("--learning-rates")
    j = i + 1
    while j < len(argv) and not (
        argv[j].startswith("--") or (argv[j].startswith("-") and argv[j][1:2].isalpha())
    ):
        j += 1
    return argv[:i] + argv[j:], argv[i + 1 : j]


@cli_entry
def main(argv: list[str] | None = None) -> int:
    argv, rates_given = _split_learning_rates(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    if rates_given is not None:
        args.learning_rates = rates_given
    if args.summary:
        print(format_table(load_sweep(args.out)))
        return 0
    config = create_experiment_config(args.preset or default_preset(), **config_overrides(args))
    rates = parse_learning_rates(args.learning_rates) if args.learning_rates else None
    executor = choose_executor(args)
    view = learning_rate_sweep(
        config,
        rates,
        args.out,
        extend=args.extend,
        max_extra_points=args.max_extra_points,
        executor=executor,
        restart=tuple(args.restart),
        fresh=args.fresh,
    )
    print()
    print(format_table(view))
    print(f"\nnext: lr-diagnose {args.out}   |   lr-analyze {args.out}  (plots + report)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
