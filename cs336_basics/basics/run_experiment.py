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
import time
from pathlib import Path

from cs336_basics.basics.config import (
    PRESETS,
    ExperimentConfig,
    add_config_arguments,
    config_overrides,
    create_experiment_config,
)
from cs336_basics.basics.trainer import run_experiment as _run_experiment
from cs336_basics.errors import cli_entry
from cs336_basics.experiment_log.wandb_sink import add_wandb_arguments, wandb_options

run_experiment = _run_experiment  # the public name: cs336_basics.basics.run_experiment.run_experiment


def move_aside(path: Path) -> Path | None:
    """Rename an existing run dir to ``<name>.old-<timestamp>`` so results are never silently deleted."""
    if not path.exists():
        return None
    target = path.with_name(f"{path.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.old-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
        n += 1
    path.rename(target)
    return target


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cs336-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--preset",
        default=None,
        choices=list(PRESETS),
        help="starting configuration (default: full on CUDA, low-resource elsewhere)",
    )
    parser.add_argument(
        "--config", type=Path, default=None, help="a config.json to start from (flags override it)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="run directory (default: runs/<preset>_lr_<lr>)"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="require a checkpoint to continue from")
    mode.add_argument("--fresh", action="store_true", help="move any existing run dir aside and start over")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. in batch jobs)")
    add_config_arguments(parser)
    add_wandb_arguments(parser)
    return parser


def default_preset() -> str:
    import torch

    return "full" if torch.cuda.is_available() else "low-resource"


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = config_overrides(args)
    if args.config is not None:
        base = ExperimentConfig.load(args.config)
        if args.preset:
            base.preset = args.preset
        config = ExperimentConfig.from_dict({**base.to_dict(), **overrides})
    else:
        config = create_experiment_config(args.preset or default_preset(), **overrides)
    out = args.out or Path("runs") / f"{config.preset}_lr_{config.max_lr:g}"
    if args.fresh:
        moved = move_aside(out)
        if moved:
            print(f"moved the previous {out} to {moved}")
    summary = run_experiment(
        config,
        out_dir=out,
        resume="must" if args.resume else "auto",
        progress=not args.no_progress,
        wandb=wandb_options(args, tags=[f"lr={config.max_lr:g}"]),
    )
    print(
        json.dumps({k: summary.get(k) for k in ("status", "final_val_loss", "best_val_loss", "target_met")})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
