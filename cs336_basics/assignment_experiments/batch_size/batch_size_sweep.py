"""Batch-size experiment: the same model and token budget at batch sizes from 1 up to the largest that fits.

    python -m cs336_basics.assignment_experiments.batch_size.batch_size_sweep --preset demo
    ... --batch-sizes 8 32 128 --lr 3e-3 --lr-scaling sqrt     # explicit sizes, the LR scaled from --batch-size

Every point trains ``--tokens`` tokens (default: the preset's budget), so steps = tokens / (batch x context).
The learning rate is ``--lr`` (default: the preset's) at the config's batch size, scaled to each batch size by
``--lr-scaling`` (none, sqrt, linear). Without ``--batch-sizes`` the powers of two from 1 up to the largest
batch that fits on the device (probed with a real training step) are swept. Writes run dirs ``bs_<N>``,
``batch_size_curves.png`` (loss against steps, tokens seen and wallclock), ``batch_size_vs_loss.png`` and
``batch_size_report.md``; resumes like lr-sweep.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from cs336_basics.assignment_experiments.lr_sweep.learning_rate_sweep import finish, split_values
from cs336_basics.assignment_experiments.sweep.engine import SweepSpec, run_sweep
from cs336_basics.assignment_experiments.sweep.executors import add_executor_arguments, choose_executor
from cs336_basics.assignment_experiments.sweep.plots import plot_lr_vs_loss, plot_sweep_comparison
from cs336_basics.assignment_experiments.sweep.view import SweepView, format_table, load_sweep, require_sweep
from cs336_basics.atomic import atomic_write_text
from cs336_basics.basics.config import (
    ExperimentConfig,
    add_config_arguments,
    config_from_args,
)
from cs336_basics.errors import ArgumentParser, UserError, cli_entry, command_parser
from cs336_basics.experiment_log.reader import TRAIN_RATE, TRAIN_RATE_NOTE
from cs336_basics.experiment_log.wandb_sink import add_wandb_arguments, wandb_options
from cs336_basics.formatting import count, duration, fmt, loss_text, md_table

MIN_STEPS = 10  # a batch so large that the budget gives fewer steps says nothing about training
SCALINGS = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}  # lr ∝ (batch / reference batch) ** exponent


def fits(cfg: ExperimentConfig) -> bool:
    """Whether one real training step at ``cfg.batch_size`` fits in the device's memory."""
    import torch

    from cs336_basics.basics.device import setup_runtime
    from cs336_basics.basics.step import TrainStep

    cfg = dataclasses.replace(cfg, compile="off").resolved()
    runtime = setup_runtime(cfg.device, cfg.dtype, "off", cfg.tf32, run_tokens=cfg.total_tokens)
    try:
        x = torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.context_length), device=runtime.device)
        loss, _, _ = TrainStep(cfg, runtime)(0, x, x)
        loss.item()
        return True
    except torch.OutOfMemoryError:  # CUDA
        return False
    except RuntimeError as err:  # the CPU allocator ("can't allocate memory") and MPS ("out of memory")
        if "allocate memory" in str(err) or "out of memory" in str(err):
            return False
        raise
    finally:
        if runtime.device.type == "cuda":
            torch.cuda.empty_cache()


def probe_batch_sizes(cfg: ExperimentConfig, tokens: int) -> list[int]:
    """1, 2, 4, ... up to the largest batch that fits and still leaves MIN_STEPS steps of the budget."""
    if tokens // cfg.context_length < MIN_STEPS:
        raise UserError(f"--tokens {tokens} is fewer than {MIN_STEPS} steps of batch size 1 ({MIN_STEPS} x "
                        f"{cfg.context_length} tokens); give at least {MIN_STEPS * cfg.context_length}")  # fmt: skip
    sizes, b = [], 1
    while tokens // (b * cfg.context_length) >= MIN_STEPS and fits(dataclasses.replace(cfg, batch_size=b)):
        sizes.append(b)
        b *= 2
    if not sizes:
        raise UserError(f"not even batch size 1 fits in the memory of {cfg.device}; use a smaller model")
    print(f"batch sizes: {' '.join(map(str, sizes))} (the largest that fits and keeps >= {MIN_STEPS} steps)")
    return sizes


def spec_for(
    sizes: list[int], tokens: int, lr: float, reference_batch: int, scaling: str, seeds: int
) -> SweepSpec:
    def configure(base: ExperimentConfig, b: int) -> ExperimentConfig:
        steps = tokens // (b * base.context_length)
        if steps < 1:
            raise UserError(f"--tokens {tokens:,} is less than one step of batch size {b} "
                            f"({b * base.context_length:,} tokens); give at least that")  # fmt: skip
        scaled = lr * (b / reference_batch) ** SCALINGS[scaling]
        return dataclasses.replace(base, batch_size=b, max_steps=steps, max_lr=scaled, min_lr=None,
                                   warmup_steps=None, cosine_cycle_steps=None)  # fmt: skip

    return SweepSpec("batch_size", "bs", sizes, seeds=seeds, configure=configure)


def report_markdown(view: SweepView, tokens: int, scaling: str, figures: list[str]) -> str:
    best = view.best
    rows = [[str(g.value), g.state, fmt(g.max_steps, "d"), fmt(g.points[0].log.learning_rate if g.points[0].log else None, ".3g"),
             loss_text(g.final_val_loss, g.final_val_std), fmt(g.best_val_loss), duration(g.wallclock_s),
             fmt(g.tokens_per_sec, ",.0f")] for g in view.groups]  # fmt: skip
    lines = ["# Batch-size experiment", "",
             f"Sweep `{view.path}` (preset `{view.preset}`): every batch size trains {count(tokens)} tokens; the learning "
             f"rate scales as `{scaling}` with the batch size.", "",
             md_table(["batch", "state", "steps", "lr", "final val", "best val", "time", TRAIN_RATE], rows), "",
             f"{TRAIN_RATE_NOTE}.", ""]  # fmt: skip
    done = [g for g in view.groups if g.converged]
    if best is not None:
        fastest = min(done, key=lambda g: g.wallclock_s or float("inf"))
        lines += [f"- lowest final validation loss: batch size **{best.value}** ({best.final_val_loss:.4f})",
                  f"- shortest wallclock for the budget: batch size {fastest.value} ({duration(fastest.wallclock_s)})"]  # fmt: skip
    bad = [g for g in view.groups if g.state != "finished"]
    lines += [f"- batch size {g.value}: {g.state} ({g.reason or 'no reason recorded'})" for g in bad]
    return "\n".join([*lines, "", *[f"![{f}]({f})" for f in figures], ""])


DEFAULT_OUT = Path("runs/batch_size")


def build_parser() -> ArgumentParser:
    p = command_parser("batch-size-sweep", __doc__)
    p.add_argument("--batch-sizes", nargs="*", default=None, metavar="BATCH",
                   help="batch sizes to sweep (default: 1, 2, 4, ... up to the largest that fits)")  # fmt: skip
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"sweep directory (default {DEFAULT_OUT})")
    p.add_argument("--tokens", type=int, default=None, help="tokens per point (default: the preset's budget)")
    p.add_argument("--lr-scaling", choices=list(SCALINGS), default="none",
                   help="lr at batch B = --lr x (B / --batch-size)^k with k = 0 (none, the default), "
                   "0.5 (sqrt) or 1 (linear)")  # fmt: skip
    p.add_argument(
        "--seeds", type=int, default=1, help="seeds per batch size (seed changes init and data order)"
    )
    p.add_argument("--restart", action="append", default=[], type=int, metavar="BATCH",
                   help="retrain this point from scratch (its old run dir is moved aside); repeatable")  # fmt: skip
    p.add_argument("--fresh", action="store_true", help="move the whole sweep dir aside and start over")
    p.add_argument("--summary", action="store_true", help="print the results table of --out and exit")
    add_executor_arguments(p)
    add_wandb_arguments(p)
    add_config_arguments(p)
    return p


def batch_sizes(values: list[str] | None) -> list[int] | None:
    """--batch-sizes as sorted distinct positive integers (None: not given)."""
    if values is None:
        return None
    try:
        sizes = sorted({int(s) for s in values})
    except ValueError:
        raise UserError(f"--batch-sizes: give positive integers, got {' '.join(values)}") from None
    if not sizes:
        raise UserError("--batch-sizes: give at least one positive integer, e.g. --batch-sizes 8 32")
    if sizes[0] < 1:
        raise UserError(f"--batch-sizes: {sizes[0]} is not a positive batch size; leave it out")
    return sizes


@cli_entry
def main(argv: list[str] | None = None) -> int:
    argv, values = split_values(list(sys.argv[1:] if argv is None else argv), "--batch-sizes")
    args = build_parser().parse_args(argv)
    if args.summary:
        view = require_sweep(load_sweep(args.out, "batch_size"), "nothing to summarise: check --out")
        print(format_table(view, "batch", "d"))
        return 0
    sizes = batch_sizes(values)
    if args.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {args.seeds}")
    if args.tokens is not None and args.tokens < 1:
        raise UserError(f"--tokens must be a positive number of tokens, got {args.tokens}")
    base = config_from_args(args)
    wandb = wandb_options(args)  # not installed: the one line now, before any work
    executor = choose_executor(args)
    tokens = args.tokens or base.total_tokens
    source = "--tokens" if args.tokens else (f"--batch-size {base.batch_size} x --max-steps {base.max_steps} x "
                                              f"--context-length {base.context_length}")  # fmt: skip
    budget = "" if args.tokens else ", so --max-steps sets the budget, not every point's steps"
    print(f"token budget per point: {tokens:,} tokens ({source}); each batch size B runs "
          f"{tokens:,} / (B x {base.context_length}) steps{budget}")  # fmt: skip
    sizes = sizes or probe_batch_sizes(base, tokens)
    spec = spec_for(sizes, tokens, base.max_lr, base.batch_size, args.lr_scaling, args.seeds)
    view, problems = run_sweep(spec, base, args.out, executor, restart=tuple(args.restart), fresh=args.fresh,
                               settings={"tokens": tokens, "lr_scaling": args.lr_scaling}, wandb=wandb)  # fmt: skip
    figures = ["batch_size_curves.png", "batch_size_vs_loss.png"]
    plot_sweep_comparison(view, args.out / figures[0], label="batch", by_tokens=True)
    plot_lr_vs_loss(view, args.out / figures[1], label="batch size")
    atomic_write_text(
        args.out / "batch_size_report.md", report_markdown(view, tokens, args.lr_scaling, figures)
    )
    return finish(view, problems, args.out, label="batch")


if __name__ == "__main__":
    sys.exit(main())
