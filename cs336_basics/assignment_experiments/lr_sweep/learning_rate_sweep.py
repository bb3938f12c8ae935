"""Sweep the learning rate: train the same model at several learning rates, resumably, and bracket the optimum
and the edge of stability.

    uv run python -m cs336_basics.assignment_experiments.lr_sweep.learning_rate_sweep --preset demo
    lr-sweep --low-resource --learning-rates 1e-3 3e-3 1e-2 --seeds 2
    lr-sweep --summary                      # the results table of runs/lr_sweep, live or finished
    lr-sweep --plan                         # what it will run, how long it takes here, the disk it needs

Every sweep prints that plan before it prepares data or trains, and stops there if the disk is too small.
Re-running the same command resumes: finished points are skipped, interrupted ones continue from their last
checkpoint, pending (and previously failed) ones start. ``--wandb PROJECT`` makes each point a W&B run
(grouped by sweep). See README.md beside this file.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from cs336_basics.assignment_experiments.lr_sweep.bracketing import next_point
from cs336_basics.assignment_experiments.lr_sweep.naming import (
    DEFAULT_SWEEP_DIR,
    LR_PREFIX,
    parse_learning_rates,
)
from cs336_basics.assignment_experiments.lr_sweep.plan import Plan, format_plan, make_plan
from cs336_basics.assignment_experiments.sweep.engine import SweepSpec, check_sweep, run_sweep
from cs336_basics.assignment_experiments.sweep.executors import add_executor_arguments, choose_executor
from cs336_basics.assignment_experiments.sweep.view import SweepView, format_table, load_sweep, require_sweep
from cs336_basics.basics.config import (
    ExperimentConfig,
    add_config_arguments,
    config_from_args,
    create_experiment_config,
)
from cs336_basics.errors import ArgumentParser, UserError, cli_entry, command_parser
from cs336_basics.experiment_log.wandb_sink import add_wandb_arguments, wandb_options
from cs336_basics.formatting import size

DEFAULT_LEARNING_RATES = [1e-4, 3e-4, 6e-4, 1e-3, 3e-3, 6e-3, 1e-2]
# The demo model (small, short runs) wants larger rates; its grid still ends below the edge, so bracketing shows.
PRESET_LEARNING_RATES = {"demo": [3e-3, 1e-2, 3e-2]}


def lr_spec(config: ExperimentConfig, learning_rates=None, seeds: int = 1) -> SweepSpec:
    """The sweep over ``max_lr``: the given learning rates, else the preset's grid, at ``seeds`` seeds."""
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    grid = parse_learning_rates(
        learning_rates or PRESET_LEARNING_RATES.get(config.preset, DEFAULT_LEARNING_RATES)
    )
    return SweepSpec("max_lr", LR_PREFIX, grid, seeds=seeds, reference=True)


def bracketing_on(config: ExperimentConfig, extend: bool, max_extra_points: int) -> bool:
    """Whether bracketing adds points: not with --no-extend, nor on quick-test (a handful of steps says
    nothing about stability)."""
    if max_extra_points < 0:
        raise UserError(f"--max-extra-points must be >= 0, got {max_extra_points}")
    return extend and config.preset != "quick-test"


def learning_rate_sweep(config: ExperimentConfig, learning_rates=None, out_dir=DEFAULT_SWEEP_DIR, *, seeds: int = 1,
                        extend: bool = True, max_extra_points: int = 3, executor=None, restart=(), fresh=False,
                        wandb: dict | None = None):  # fmt: skip
    """Run (or resume) the sweep in ``out_dir``, after printing its plan (refused when the disk is too small);
    ``wandb``: ``wandb_options`` (each point a W&B run). Returns (the final ``SweepView``, lines about
    unfinished points)."""
    from cs336_basics.assignment_experiments.sweep.executors import InProcessExecutor

    spec = lr_spec(config, learning_rates, seeds)
    extend = bracketing_on(config, extend, max_extra_points)
    executor = executor or InProcessExecutor()

    def show_plan(points, done) -> None:
        plan = sweep_plan(points, done, out_dir, max_extra_points if extend else 0, executor)
        print(format_plan(plan), flush=True)
        short = next((c for c in plan.disk_checks if not c.fits), None)
        if short is not None:
            raise UserError(f"not enough disk space under {short.mount} for this sweep: {size(short.needed)} "
                            f"needed, {size(short.free)} free (see the plan above); free some space or choose "
                            "another --out / --data-dir")  # fmt: skip

    return run_sweep(spec, config, out_dir, executor, propose=next_point if extend else None,
                     max_extra_points=max_extra_points, restart=tuple(parse_learning_rates(restart, "--restart")) if restart else (),
                     fresh=fresh,
                     settings={"extend": extend, "max_extra_points": max_extra_points}, plan=show_plan, wandb=wandb)  # fmt: skip


def sweep_plan(points, done: set[str], out_dir: Path, extra: int, executor) -> Plan:
    """``make_plan`` for the points as ``executor`` runs them: one point per device at once (``--concurrent``
    on one device shares it), and not timed here when they run as SLURM jobs on other machines. Bracketing
    adds nothing to a sweep whose points are all done and already bracket the best lr and the edge."""
    if extra and done >= {name for name, _ in points} and next_point(load_sweep(out_dir, "max_lr")) is None:
        extra = 0
    slots = len(set(getattr(executor, "slots", [None])))
    unmeasured = None
    if executor.elsewhere:
        unmeasured = "the points run as SLURM jobs on other machines (lr-sweep --plan in a job times them)"
    return make_plan(points, out_dir, done=done, extra_points=extra, slots=slots, unmeasured=unmeasured)


def build_parser() -> ArgumentParser:
    p = command_parser("lr-sweep", __doc__)
    low = create_experiment_config("low-resource")
    p.add_argument("--low-resource", dest="preset", action="store_const", const="low-resource",
                   help=f"= --preset low-resource: {low.total_tokens / 1e6:.2f}M tokens, "
                   f"target val loss {low.target_val_loss:.2f}")  # fmt: skip
    p.add_argument("--quick-test", dest="preset", action="store_const", const="quick-test",
                   help="= --preset quick-test: every lr for a handful of steps, to check a set-up")  # fmt: skip
    p.add_argument("--learning-rates", nargs="*", default=None, metavar="LR",
                   help=f"learning rates to sweep (default {' '.join(f'{x:g}' for x in DEFAULT_LEARNING_RATES)}; "
                   f"demo: {' '.join(f'{x:g}' for x in PRESET_LEARNING_RATES['demo'])})")  # fmt: skip
    p.add_argument(
        "--seeds", type=int, default=1, help="seeds per learning rate (seed changes init and data order)"
    )
    p.add_argument(
        "--out", type=Path, default=DEFAULT_SWEEP_DIR, help="sweep directory (default runs/lr_sweep)"
    )
    p.add_argument("--no-extend", dest="extend", action="store_false",
                   help="don't add points beyond the grid to bracket the optimum and the divergence edge")  # fmt: skip
    p.add_argument(
        "--max-extra-points", type=int, default=3, help="most points bracketing may add (default 3)"
    )
    p.add_argument("--restart", action="append", default=[], metavar="LR",
                   help="retrain this point from scratch (its old run dir is moved aside); repeatable")  # fmt: skip
    p.add_argument("--fresh", action="store_true", help="move the whole sweep dir aside and start over")
    p.add_argument("--summary", action="store_true", help="print the results table of --out and exit")
    p.add_argument("--plan", action="store_true",
                   help="print the plan (points, device, measured tokens/s, time, disk) and exit; creates nothing")  # fmt: skip
    add_executor_arguments(p)
    add_wandb_arguments(p)
    add_config_arguments(p, skip=("max_lr",))
    return p


def split_values(argv: list[str], flag: str) -> tuple[list[str], list[str] | None]:
    """Take ``flag``'s values out of argv ourselves, so that a mistyped negative value such as ``-1e-3``
    reaches our validation (and its clear message) instead of being read by argparse as a flag."""
    if flag not in argv:
        return argv, None
    i = j = argv.index(flag)
    while j + 1 < len(argv) and not (
        argv[j + 1].startswith("--") or argv[j + 1][:1] == "-" and argv[j + 1][1:2].isalpha()
    ):
        j += 1
    return argv[:i] + argv[j + 1 :], argv[i + 1 : j + 1]


def finish(view: SweepView, problems: list[str], out: Path, label: str = "lr") -> int:
    """The closing table, then one line per point that did not finish; non-zero when there is one."""
    print()
    print(format_table(view, label))
    for line in problems:
        print(f"not done: {line}", file=sys.stderr)
    return 1 if problems else 0


@cli_entry
def main(argv: list[str] | None = None) -> int:
    argv, rates = split_values(list(sys.argv[1:] if argv is None else argv), "--learning-rates")
    args = build_parser().parse_args(argv)
    if args.summary:
        print(
            format_table(require_sweep(load_sweep(args.out, "max_lr"), "nothing to summarise: check --out"))
        )
        return 0
    if rates is not None:
        rates = parse_learning_rates(rates)  # an empty --learning-rates is refused, not the preset's grid
    config = config_from_args(args)
    wandb = wandb_options(args)  # not installed: the one line now, before any work
    executor = choose_executor(args)
    if args.plan:  # what the run would refuse, refused the same; nothing written
        restart = tuple(parse_learning_rates(args.restart, "--restart")) if args.restart else ()
        points, done = check_sweep(lr_spec(config, rates, args.seeds), config, args.out, restart=restart,
                                   fresh=args.fresh, device_check=not executor.elsewhere)  # fmt: skip
        extra = args.max_extra_points if bracketing_on(config, args.extend, args.max_extra_points) else 0
        print(format_plan(sweep_plan(points, done, args.out, extra, executor)))
        return 0
    view, problems = learning_rate_sweep(config, rates, args.out, seeds=args.seeds, extend=args.extend,
                                         max_extra_points=args.max_extra_points, executor=executor,
                                         restart=tuple(args.restart), fresh=args.fresh, wandb=wandb)  # fmt: skip
    code = finish(view, problems, args.out)
    out = shlex.quote(str(args.out))  # pastes into a shell as it is, spaces and all
    print(f"\nnext: lr-diagnose {out}   |   lr-analyze {out}  (plots + report)")
    return code


if __name__ == "__main__":
    sys.exit(main())
