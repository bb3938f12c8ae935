"""Explain a finished (or partly finished) learning-rate sweep: figures, an analysis, an experiment log.

    python -m cs336_basics.assignment_experiments.lr_sweep.analyze_lr_sweep [SWEEP_DIR] [--out DIR]

Writes into the sweep dir (or ``--out``): ``lr_sweep_comparison.png``, ``lr_vs_final_loss.png`` (with the
fitted optimum), ``lr_sweep_sharpness.png`` (sharpness / its stability threshold against step),
``lr_sweep_signals.png`` (the instability signals against step), ``lr_sweep_analysis.md`` (results, best LR
and the fitted optimum, target, where you stand against public results, edge of stability: bracketed and
measured, a reading of the curves, the search strategy and a sample from the best checkpoint) and
``EXPERIMENT_LOG.md`` (one entry per run).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from cs336_basics.assignment_experiments.lr_sweep.bracketing import next_point
from cs336_basics.assignment_experiments.lr_sweep.naming import DEFAULT_SWEEP_DIR
from cs336_basics.assignment_experiments.lr_sweep.report import analysis_markdown, experiment_log_markdown
from cs336_basics.assignment_experiments.lr_sweep.stability import (
    EDGE_FRACTION,
    StabilityFindings,
    stability_findings,
)
from cs336_basics.assignment_experiments.sweep.plots import (
    COMPARISON_FILE,
    LR_LOSS_FILE,
    SHARPNESS_PLOT_FILE,
    SIGNALS_PLOT_FILE,
    plot_lr_vs_loss,
    plot_sharpness,
    plot_signals,
    plot_sweep_comparison,
)
from cs336_basics.assignment_experiments.sweep.record import SWEEP_FILE
from cs336_basics.assignment_experiments.sweep.view import (
    SweepView,
    ValueGroup,
    format_table,
    load_sweep,
    require_sweep,
)
from cs336_basics.atomic import atomic_write_text
from cs336_basics.errors import UserError, cli_entry, command_parser
from cs336_basics.experiment_log.reader import CHECKPOINT_DIR
from cs336_basics.formatting import fmt

ANALYSIS_FILE = "lr_sweep_analysis.md"
LOG_FILE = "EXPERIMENT_LOG.md"
SAMPLING = dict(temperature=0.8, top_p=0.9)  # of the report's sample
CLEARLY_WORSE = 0.02  # nats: smaller gaps to the best are within run-to-run noise


@dataclass
class SweepFindings:
    """Sentences about the whole sweep, computed from its points."""

    missing: list[str]
    best_text: str
    target_text: str
    edge: list[str]
    reading: list[str]
    strategy: list[str]
    stability: StabilityFindings  # measured: sharpness, signals, sensitivity, fitted optimum


def missing_parts(view: SweepView) -> list[str]:
    """What a partial sweep still lacks, one line each."""
    out = [] if view.meta else [f"{SWEEP_FILE} is missing: grid, extensions and errors are unknown"]
    for p in view.points:
        if p.state == "pending":
            out.append(f"{p.name}: not started")
        elif p.state in ("running", "interrupted"):
            out.append(f"{p.name}: {p.state} at step {p.step or 0}/{p.max_steps or '?'} (numbers so far)")
        elif p.state == "failed":
            out.append(f"{p.name}: failed ({p.reason or 'no error recorded'})")
        if (
            p.log is not None
            and p.state not in ("pending", "failed", "diverged")
            and p.final_val_loss is None
        ):
            out.append(f"{p.name}: no validation loss yet")
    if view.state != "finished":
        out.append(f"the sweep itself is `{view.state}`: more points may still be added")
    return out


def best_text(view: SweepView) -> str:
    best = view.best
    if best is None:
        return "No learning rate has finished yet, so there is no best one."
    seeds = f" (mean ± std over {len(best.points)} seeds)" if len(best.points) > 1 else ""
    return (f"The best learning rate is **{best.lr:.3g}**: final validation loss "
            f"{fmt(best.final_val_loss, '.4f')}{seeds}, best {fmt(best.best_val_loss, '.4f')}, after {best.step} steps.")  # fmt: skip


def target_text(view: SweepView) -> str:
    target, best = view.target_val_loss, view.best
    preset = f"the `{view.preset}` preset's" if view.preset else "the"
    if target is None:
        return f"There is no target validation loss for {preset} budget."
    if best is None:
        return f"Target: {preset} validation loss {target:g}: not known yet (no finished run)."
    return (f"Target: {preset} validation loss {target:g} was **{'met' if view.target_met else 'not met'}** "
            f"(best final {best.final_val_loss:.4f}, {best.final_val_loss - target:+.3f} nats).")  # fmt: skip


def stability_edge(view: SweepView) -> list[str]:
    """Where training diverges (the divergence threshold), bracketed from above: the largest converged lr, the
    smallest lr above the best that diverged, the best lr's ratio to it; a divergence only below the best is
    named as such. Whether the best lr trains at the edge of stability in the sharpness sense is
    ``stability.at_edge_text``'s answer: the two wordings are kept apart so they never read as one claim."""
    conv, best = view.largest_converged, view.best
    diverged = [g for g in view.groups if g.state == "diverged"]
    above = [g for g in diverged if best is None or g.lr > best.lr]
    out = [f"largest learning rate that converged: {conv.lr:.3g} (final val {conv.final_val_loss:.4f})"
           if conv else "no learning rate has converged yet"]  # fmt: skip
    below = [g for g in diverged if g not in above]
    if below:
        out.append(f"lr {_lrs(below)} diverged below the best lr: a crash-like point, "
                   "not the divergence threshold" + ("" if above else "; nothing above the best diverged, so the "
                   "divergence threshold above it is not bracketed"))  # fmt: skip
    if not above:
        if not below:  # the threshold lies above the largest lr that converged (unfinished ones say nothing)
            out.append("no learning rate diverged" + (f": the divergence threshold lies above {conv.lr:.3g}, "
                                                      "the sweep does not bracket it" if conv else " yet"))  # fmt: skip
        return out
    div = above[0]
    out.append(f"smallest learning rate above the best that diverged: {div.lr:.3g} ({div.reason or '?'})")
    if conv is not None and conv.lr < div.lr:
        out.append(
            f"the divergence threshold lies between {conv.lr:.3g} and {div.lr:.3g} (a factor {div.lr / conv.lr:.2g})"
        )
    elif conv is not None:
        out.append(f"lr {conv.lr:.3g} converged although the smaller {div.lr:.3g} diverged: the edge is noisy here "
                   "(seed-dependent); treat the divergence threshold as approximate")  # fmt: skip
    if best is not None:
        out.append(f"the best learning rate {best.lr:.3g} is a factor {div.lr / best.lr:.2g} below the smallest "
                   f"diverging lr above it, {div.lr:.3g}")  # fmt: skip
    return out


def curve_reading(view: SweepView) -> list[str]:
    """What too low and too high learning rates did, in numbers."""
    best = view.best
    out = [_reading(g, best) for g in view.groups]
    if best is None:
        return out
    finished = [g for g in view.groups if g.converged]
    gap = {g.lr: g.final_val_loss - best.final_val_loss for g in finished}
    low = [g for g in finished if g.lr < best.lr and gap[g.lr] > CLEARLY_WORSE]
    high = [g for g in finished if g.lr > best.lr and gap[g.lr] > CLEARLY_WORSE]
    # The per-point lines above give each gap: these name the lrs that are clearly worse, and why.
    if low:
        out.append(
            f"too low: lr {_lrs(low)} learn(s) too slowly for this step budget (over {CLEARLY_WORSE} nats worse)"
        )
    if high:
        out.append(
            f"too high (but stable): lr {_lrs(high)} converged over {CLEARLY_WORSE} nats worse than the best"
        )
    diverged = [g for g in view.groups if g.state == "diverged" and g.lr > best.lr]
    if diverged:
        out.append(f"too high: from lr {diverged[0].lr:.3g} on, training diverged")
    near = [g for g in finished if abs(gap[g.lr]) <= CLEARLY_WORSE and g.lr != best.lr]
    if near:
        out.append(f"within {CLEARLY_WORSE} nats of the best: lr {_lrs(near)} — the optimum is broad")
    if best.lr == min(gap):
        out.append("the best is the smallest finished learning rate: smaller ones might do better")
    if best.lr == max(gap) and not diverged:
        out.append(
            "the best is the largest learning rate tried and nothing above it diverged: larger ones might do better"
        )
    return out


def _lrs(groups: list[ValueGroup]) -> str:
    """``1e-03, 0.003``: the learning rates a sentence names."""
    return ", ".join(f"{g.lr:.3g}" for g in groups)


def _reading(g: ValueGroup, best: ValueGroup | None) -> str:
    name = f"lr {g.lr:.3g}"
    if g.state in ("diverged", "failed"):
        return f"{name} {g.state}: {g.reason or 'no reason recorded'}"
    if g.state != "finished":
        return f"{name} is {g.state} at step {g.step or 0}/{g.max_steps or '?'} (latest val {fmt(g.final_val_loss, '.4f')})"
    if g.final_val_loss is None:
        return f"{name} finished without a validation loss"
    if best is None or g.lr == best.lr:
        return f"{name}{' is the best' if best else ''}: final val {g.final_val_loss:.4f}"
    return f"{name} ended {g.final_val_loss - best.final_val_loss:.2f} nats above the best (final val {g.final_val_loss:.4f})"


def search_strategy(view: SweepView) -> list[str]:
    """The grid, its spacing, which points bracketing added (and why), and whether it is bracketed."""
    meta, grid = view.meta, sorted(view.meta.get("values") or [])
    if grid:
        spacing = (grid[-1] / grid[0]) ** (1 / (len(grid) - 1)) if len(grid) > 1 else None
        out = [f"log-spaced grid of {len(grid)} learning rate(s) from {grid[0]:.3g} to {grid[-1]:.3g}"
               + (f" (about x{spacing:.2g} apart)" if spacing else "")]  # fmt: skip
    else:
        out = ["the grid is not recorded (sweep.json missing): points were found from the run directories"]
    if meta.get("seeds", 1) > 1:
        out.append(
            f"{meta['seeds']} seeds per learning rate (the seed changes initialisation and data order)"
        )
    if meta.get("extend"):
        out.append("bracketing was on: after the grid, points are added one at a time on the 1-3-10 ladder until the "
                   "best lr has a neighbour on each side and a point above it diverged "
                   f"(at most {meta.get('max_extra_points', '?')} extra)")  # fmt: skip
    elif meta:
        out.append("bracketing was off: only the grid was run")
    for g in view.groups:
        if g.is_extension:
            out.append(f"added lr {g.lr:.3g}: {g.points[0].why or 'by bracketing'} -> {g.state}")
    still = next_point(view)
    if still is None:
        out.append("bracketed: the best lr has a neighbour on each side and a point above it diverged")
    elif meta.get("extend", True):
        out.append(f"not bracketed yet: {still[1]}; the sweep adds {still[0]:g} next")
    else:  # --no-extend: nothing will be tried
        out.append(f"not bracketed: {still[1]}; without --no-extend the sweep would add {still[0]:g}")
    if meta.get("executor"):
        out.append(f"executor: {meta['executor']}")
    return out


def findings(view: SweepView) -> SweepFindings:
    return SweepFindings(missing_parts(view), best_text(view), target_text(view), stability_edge(view),
                         curve_reading(view), search_strategy(view), stability_findings(view))  # fmt: skip


# ---- sample from the best checkpoint -------------------------------------------------------------------


def best_checkpoint(view: SweepView) -> Path | None:
    """The best point's ``checkpoints/best.pt`` (else final.pt), if it exists."""
    best = view.best.best_run if view.best else None
    if best is None or best.log is None:
        return None
    for name in ("best.pt", "final.pt"):
        path = best.log.path / CHECKPOINT_DIR / name
        if path.is_file():
            return path
    return None


def sample_section(view: SweepView, prompt: str, max_tokens: int, seed: int, device: str) -> list[str]:
    """Markdown lines: a sample from the best checkpoint, or a note saying why there is none."""
    ckpt = best_checkpoint(view)
    if ckpt is None:
        why = "no finished run yet" if view.best is None else "the best run has no best.pt / final.pt"
        return [f"_Skipped: {why}._"]
    from cs336_basics.basics.generate import sample_from_checkpoint

    try:
        s = sample_from_checkpoint(
            ckpt, prompt, max_new_tokens=max_tokens, seed=seed, device=device, **SAMPLING
        )
    except UserError as err:
        return [f"_Skipped: {err}._"]
    end = "`<|endoftext|>`" if s.stopped_at_eot else f"the {max_tokens}-token limit"
    return [
        f"From `{ckpt}` (step {s.iteration}), temperature {SAMPLING['temperature']}, top-p {SAMPLING['top_p']}, "
        f"seed {seed}; {s.new_tokens} tokens, "
        f"stopped at {end}. Reproduce with `cs336-generate --checkpoint {ckpt} --prompt {prompt!r} "
        f"--max-tokens {max_tokens} --temperature {SAMPLING['temperature']} --top-p {SAMPLING['top_p']} "
        f"--seed {seed}`.",
        "",
        "```text",
        (s.prompt + s.text).replace("```", "``\u200b`"),
        "```",
    ]


# ---- the command ----------------------------------------------------------------------------------------


@dataclass
class AnalysisOutputs:
    view: SweepView
    out_dir: Path
    written: list[Path]  # the four figures, lr_sweep_analysis.md, EXPERIMENT_LOG.md
    findings: SweepFindings


def analyze(
    sweep_dir: str | os.PathLike = DEFAULT_SWEEP_DIR,
    out_dir: str | os.PathLike | None = None,
    *,
    sample: bool = True,
    prompt: str = "Once upon a time",
    max_tokens: int = 256,
    seed: int = 0,
    device: str = "auto",
) -> AnalysisOutputs:
    """Write the two figures and the two markdown files; return their paths and the findings."""
    view = require_sweep(load_sweep(sweep_dir, "max_lr"), "nothing written")
    if sample:  # flags the user typed are refused now; a checkpoint that can't sample is a note of the report
        from cs336_basics.basics.device import resolve_device
        from cs336_basics.basics.generate import check_sampling_args

        check_sampling_args(max_tokens, **SAMPLING)
        resolve_device(device)
    out = Path(out_dir) if out_dir is not None else view.path
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"cannot create output directory {out} ({err.strerror}); pass a writable --out"
        ) from None
    found = findings(view)
    comparison = plot_sweep_comparison(view, out / COMPARISON_FILE)
    lr_loss = plot_lr_vs_loss(view, out / LR_LOSS_FILE, fit=found.stability.fit)
    sharpness = plot_sharpness(view, out / SHARPNESS_PLOT_FILE, edge_fraction=EDGE_FRACTION)
    signals = plot_signals(view, out / SIGNALS_PLOT_FILE)
    sample_lines = (
        sample_section(view, prompt, max_tokens, seed, device) if sample else ["_Skipped (--no-sample)._"]
    )
    figures = {
        "train and validation loss of every learning rate": os.path.relpath(comparison, out),
        "final validation loss against learning rate, with the fitted optimum": os.path.relpath(lr_loss, out),
        "preconditioned sharpness against its stability threshold": os.path.relpath(sharpness, out),
        "instability signals against step": os.path.relpath(signals, out),
    }
    analysis_path, log_path = out / ANALYSIS_FILE, out / LOG_FILE
    atomic_write_text(analysis_path, analysis_markdown(view, found, figures, sample_lines))
    atomic_write_text(log_path, experiment_log_markdown(view))
    written = [comparison, lr_loss, sharpness, signals, analysis_path, log_path]
    return AnalysisOutputs(view, out, written, found)


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("lr-analyze", __doc__)
    p.add_argument("sweep_dir", nargs="?", type=Path, default=DEFAULT_SWEEP_DIR, help="default: %(default)s")
    p.add_argument("--out", type=Path, default=None, help="where to write (default: the sweep dir)")
    p.add_argument("--no-sample", action="store_true", help="skip the text sample from the best checkpoint")
    p.add_argument("--prompt", default="Once upon a time", help="sample prompt (default: %(default)r)")
    p.add_argument("--max-tokens", type=int, default=256, help="sample length (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    p.add_argument("--device", default="auto", help="device for sampling (default: auto)")
    from cs336_basics.experiment_log.wandb_sink import add_wandb_arguments

    add_wandb_arguments(p)  # --wandb PROJECT: the plots, report and table to a run in the sweep's W&B group
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    from cs336_basics.experiment_log.wandb_sink import log_sweep_analysis, wandb_options

    args = build_parser().parse_args(argv)
    wandb = wandb_options(args)  # asked for but not installed: the one line now, before any work
    result = analyze(
        args.sweep_dir,
        args.out,
        sample=not args.no_sample,
        prompt=args.prompt,
        max_tokens=args.max_tokens,
        seed=args.seed,
        device=args.device,
    )
    print(format_table(result.view))
    for line in result.findings.edge + result.findings.stability.sentences():
        print(line.replace("**", ""))
    for line in result.findings.missing:
        print(f"missing: {line}")
    for path in result.written:
        print(f"wrote {path}")
    log_sweep_analysis(result, wandb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
