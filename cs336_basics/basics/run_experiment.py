"""Train one run from the shell.

    python -m cs336_basics.basics.run_experiment --preset demo --lr 3e-3 --out runs/demo

Any ExperimentConfig field is a flag (``--batch-size 16``, ``--device cpu``, ...). An existing run dir with an
unfinished checkpoint is resumed; a finished one is not retrained; ``--fresh`` starts over (the old dir is
moved aside, not deleted).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cs336_basics.basics.config import (
    ExperimentConfig,
    add_config_arguments,
    config_from_args,
)
from cs336_basics.errors import StartOver, Stopped, UserError, cli_entry, command_parser, one_line
from cs336_basics.experiment_log import load_experiment_log
from cs336_basics.experiment_log.reader import (
    DONE_STATES,
    LATEST_CHECKPOINT,
    RUN_LOCK_FILE,
    make_dirs,
    move_aside,
    refuse_sweep_dir,
    removed_if_refused,
    resume_text,
    run_dir_lock,
)
from cs336_basics.experiment_log.tracker import print_summary
from cs336_basics.experiment_log.wandb_sink import add_wandb_arguments, wandb_options

if TYPE_CHECKING:
    from cs336_basics.basics.trainer import Trainer


def run_experiment(
    config: ExperimentConfig,
    train_data=None,
    val_data=None,
    out_dir: str | Path = "runs/experiment",
    *,
    resume: str = "auto",
    progress: bool = True,
    reference_loss: Callable[[int], float | None] | None = None,
    wandb: dict | None = None,
) -> dict:
    """Train one run into ``out_dir`` and return its summary (as in summary.json).

    ``train_data``/``val_data``: token arrays or token-file paths (default: the config's, else the prepared
    dataset). ``resume``: "auto" continues from ``checkpoints/latest.pt`` if there is one (a finished or
    diverged run is not retrained), "never" starts over, "must" fails without a checkpoint.
    ``reference_loss(step)``: the best smoothed train loss of smaller learning rates at ``step`` (sweeps).
    ``wandb``: ``WandbSink.open`` arguments (project, entity, mode, group, tags) to mirror the run to W&B.
    """
    # torch comes in here, not at import: --help and a usage mistake answer without it
    from cs336_basics.basics.checkpoint import clean_stale_temp_files
    from cs336_basics.basics.device import setup_runtime
    from cs336_basics.basics.trainer import Trainer, check_compatible
    from cs336_basics.data.run_data import load_run_data

    if resume not in ("auto", "never", "must"):
        raise ValueError(f"resume must be auto, never or must, not {resume!r}")
    cfg, out_dir = config.resolved(), Path(out_dir)
    refuse_sweep_dir(out_dir)
    derived = config.underived()
    created = make_dirs(out_dir)
    with run_dir_lock(out_dir), removed_if_refused(created, RUN_LOCK_FILE):
        latest = out_dir / LATEST_CHECKPOINT
        if resume != "never":
            log = load_experiment_log(out_dir)
            done = log.summary and log.summary.get("status") in DONE_STATES
            if log.config and (done or latest.exists()):  # another config: said before any data is prepared
                check_compatible(log.config, cfg, out_dir / "config.json")
            if done:
                print(f"{out_dir}: already {log.summary['status']}, not retrained (use --fresh to retrain)")
                return log.summary
        if resume == "must" and not latest.exists():  # before any data is prepared; the new dir goes again
            raise UserError(
                f"--resume given but there is no checkpoint at {latest}; leave out --resume to start"
            )
        clean_stale_temp_files(out_dir)
        # The device first: a missing GPU is refused before any data is downloaded or tokenized.
        runtime = setup_runtime(cfg.device, cfg.dtype, cfg.compile, cfg.tf32, cfg.total_tokens)
        data = load_run_data(cfg, train_data, val_data)
        options = dict(progress=progress, reference_loss=reference_loss, derived_fields=derived)
        trainer = Trainer(cfg, out_dir, runtime, data, **options)
        if wandb:
            from cs336_basics.experiment_log.wandb_sink import WandbSink

            trainer.tracker.sink = WandbSink.open(
                out_dir, name=out_dir.name, config=trainer.run_info, **wandb
            )
        # From here on the run dir says how the run ended (a checkpoint that cannot continue: "failed").
        try:
            resumed = resume != "never" and trainer.resume()
            _print_banner(trainer, resumed)
            trainer.tracker.start(resume_step=trainer.state.step if resumed else None)
            summary = trainer.run()
        except KeyboardInterrupt as err:  # Stopped (at a step boundary, checkpoint saved) or a second Ctrl-C
            stopped = Stopped.of(err)
            step = trainer.writer.written_step.get("latest", 0)  # a second Ctrl-C stops without a new one
            resume = f"re-run the same command to resume it{resume_text(step)}"
            _record_end(trainer, "interrupted", f"stopped {stopped.by}; {resume}")
            raise stopped from None
        except BaseException as err:
            if isinstance(err, OSError):  # a full disk: the checkpoint that filled it says what and where
                err = trainer.writer.failure() or err
            reason = one_line(err)
            _record_end(trainer, "failed", reason)
            if isinstance(err, StartOver):  # a sweep tells its own way to start the point over
                raise
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


def _record_end(trainer: Trainer, state: str, reason: str) -> None:
    """status.json says how the run ended (written once its logs are closed)."""
    trainer.tracker.close()
    checkpoint_step = trainer.writer.written_step.get("latest")
    trainer.tracker.set_status(state, step=trainer.state.step, checkpoint_step=checkpoint_step, reason=reason,
                               background=False)  # fmt: skip


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


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("cs336-train", __doc__)
    parser.add_argument(
        "--config",
        type=Path,
        help="a config JSON to start from: its fields, the rest from the "
        "preset it names (else --preset, else the default); flags override it",
    )
    parser.add_argument("--out", type=Path, help="run directory (default: runs/<preset>_lr_<lr>)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="require a checkpoint to continue from")
    mode.add_argument("--fresh", action="store_true", help="move any existing run dir aside and start over")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. in batch jobs)")
    add_config_arguments(parser)
    add_wandb_arguments(parser)
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    out = args.out or Path("runs") / f"{config.preset}_lr_{config.max_lr:g}"
    refuse_sweep_dir(out)  # before --fresh would move a whole sweep aside
    if args.fresh and out.exists():
        with run_dir_lock(out):  # refuses while another process trains it: nothing moves from under it
            print(f"moved the previous {out} to {move_aside(out)}")
    summary = run_experiment(
        config,
        out_dir=out,
        resume="must" if args.resume else "auto",
        progress=not args.no_progress,
        wandb=wandb_options(args, tags=[f"lr={config.max_lr:g}"]),
    )
    keys = ("status", "final_val_loss", "best_val_loss", "target_met")
    print(json.dumps({k: summary.get(k) for k in keys}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
