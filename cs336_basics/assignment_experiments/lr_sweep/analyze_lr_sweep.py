"""Explain a finished (or partly finished) learning-rate sweep: figures, an analysis, an experiment log.

    python -m cs336_basics.assignment_experiments.lr_sweep.analyze_lr_sweep [SWEEP_DIR] [--out DIR]

Writes into the sweep dir (or ``--out``): ``lr_sweep_comparison.png``, ``lr_vs_final_loss.png``,
``lr_sweep_analysis.md`` (results, best LR, target, edge of stability, a reading of the curves, the search
strategy and a sample from the best checkpoint) and ``EXPERIMENT_LOG.md`` (one entry per run).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cs336_basics.assignment_experiments.lr_sweep.report import analysis_markdown, experiment_log_markdown
from cs336_basics.assignment_experiments.lr_sweep.sweep_plots import (
    COMPARISON_FILE,
    LR_LOSS_FILE,
    plot_lr_vs_loss,
    plot_sweep_comparison,
)
from cs336_basics.assignment_experiments.lr_sweep.sweep_reader import (
    DEFAULT_SWEEP_DIR,
    SWEEP_FILE,
    SweepPoint,
    SweepView,
    format_table,
    load_sweep,
)
from cs336_basics.atomic import atomic_write_text
from cs336_basics.errors import UserError, cli_entry

ANALYSIS_FILE = "lr_sweep_analysis.md"
LOG_FILE = "EXPERIMENT_LOG.md"
CLEARLY_WORSE = 0.02  # nats: smaller gaps to the best are within run-to-run noise


@dataclass
class SweepFindings:
    """Sentences about the whole sweep, computed from its points."""

    missing: list[str] = field(default_factory=list)
    best_text: str = ""
    target_text: str = ""
    edge: list[str] = field(default_factory=list)
    reading: list[str] = field(default_factory=list)
    strategy: list[str] = field(default_factory=list)
    threshold_ratio: float | None = None  # best lr / smallest diverging lr


def missing_parts(view: SweepView) -> list[str]:
    """What a partial sweep still lacks, one line each."""
    out = []
    if not view.meta:
        out.append(f"{SWEEP_FILE} is missing or unreadable: grid, extensions and errors are unknown")
    if not view.points:
        out.append("no learning rate has a run directory or a sweep.json record yet")
    for p in view.points:
        if p.state == "pending":
            out.append(f"lr {p.lr:.3g}: not started")
        elif p.state in ("running", "interrupted"):
            out.append(
                f"lr {p.lr:.3g}: {p.state} at step {p.step or 0}/{p.max_steps or '?'} (numbers so far)"
            )
        elif p.state == "failed":
            out.append(f"lr {p.lr:.3g}: failed ({p.reason or 'no error recorded'})")
        if p.log is not None and p.state not in ("pending", "failed") and p.final_val_loss is None:
            out.append(f"lr {p.lr:.3g}: no validation loss yet")
    if view.meta and view.meta.get("state") not in (None, "finished"):
        out.append(f"the sweep itself is `{view.meta.get('state')}`: more points may still be added")
    return out


def best_text(view: SweepView) -> str:
    best = view.best_point
    if best is None:
        return "No learning rate has finished yet, so there is no best one."
    return (
        f"The best learning rate is **{best.lr:.3g}**: final validation loss {best.final_val_loss:.4f} "
        f"(best {best.best_val_loss:.4f}) after {best.step} steps."
    )


def target_text(view: SweepView) -> str:
    target, best = view.target_val_loss, view.best_point
    preset = f"the `{view.preset}` preset's" if view.preset else "the"
    if target is None:
        return f"There is no target validation loss for {preset} budget."
    if best is None:
        return f"Target: {preset} validation loss {target:g}: not known yet (no finished run)."
    met = best.final_val_loss <= target
    return (
        f"Target: {preset} validation loss {target:g} was **{'met' if met else 'not met'}** "
        f"(best final {best.final_val_loss:.4f}, {best.final_val_loss - target:+.3f} nats)."
    )


def stability_edge(view: SweepView) -> tuple[list[str], float | None]:
    """Largest converged LR, smallest diverged LR, the best LR's ratio to the divergence threshold."""
    conv, div, best = view.largest_converged, view.smallest_diverged, view.best_point
    out: list[str] = []
    if conv is not None:
        out.append(
            f"largest learning rate that converged: {conv.lr:.3g} (final val {conv.final_val_loss:.4f})"
        )
    else:
        out.append("no learning rate has converged yet")
    if div is None:
        top = max((p.lr for p in view.points), default=None)
        out.append(
            "no learning rate diverged"
            + (f": the edge of stability lies above {top:.3g}, the sweep does not bracket it" if top else "")
        )
        return out, None
    out.append(
        f"smallest learning rate that diverged: {div.lr:.3g} (at step {div.step}: {div.reason or '?'})"
    )
    if conv is not None and conv.lr < div.lr:
        out.append(
            f"the edge of stability lies between {conv.lr:.3g} and {div.lr:.3g} (a factor {div.lr / conv.lr:.2g})"
        )
    elif conv is not None:
        out.append(
            f"lr {conv.lr:.3g} converged although the smaller {div.lr:.3g} diverged: the edge is noisy here "
            "(seed-dependent); treat the threshold as approximate"
        )
    ratio = best.lr / div.lr if best is not None else None
    if ratio is not None:
        out.append(
            f"the best learning rate is {ratio:.2g}x the divergence threshold (a factor {1 / ratio:.2g} below "
            "the smallest diverging lr)"
        )
    return out, ratio


def curve_reading(view: SweepView) -> list[str]:
    """What too low and too high learning rates did, in numbers."""
    best = view.best_point
    out: list[str] = []
    for p in view.points:
        out.append(_point_reading(p, best))
    if best is None:
        return out
    finished = [p for p in view.points if p.converged]
    low = [p for p in finished if p.lr < best.lr and p.final_val_loss - best.final_val_loss > CLEARLY_WORSE]
    high = [p for p in finished if p.lr > best.lr and p.final_val_loss - best.final_val_loss > CLEARLY_WORSE]
    if low:
        p = low[0]
        out.append(
            f"too low: lr {p.lr:.3g} ended {p.final_val_loss - best.final_val_loss:.2f} nats above the best: "
            "it learns too slowly for this step budget"
        )
    if high:
        p = high[-1]
        out.append(
            f"too high (but stable): lr {p.lr:.3g} ended "
            f"{p.final_val_loss - best.final_val_loss:.2f} nats above the best"
        )
    diverged = [p for p in view.points if p.state == "diverged"]
    if diverged:
        first = min(diverged, key=lambda p: p.lr)
        out.append(f"too high: from lr {first.lr:.3g} on, training diverged (first at step {first.step})")
    near = [
        p for p in finished if abs(p.final_val_loss - best.final_val_loss) <= CLEARLY_WORSE and p is not best
    ]
    if near:
        lrs = ", ".join(f"{p.lr:.3g}" for p in near)
        out.append(f"within {CLEARLY_WORSE} nats of the best: lr {lrs} — the optimum is broad")
    if finished and best.lr == min(p.lr for p in finished):
        out.append("the best is the smallest finished learning rate: smaller ones might do better")
    if finished and best.lr == max(p.lr for p in finished) and not diverged:
        out.append(
            "the best is the largest learning rate tried and nothing diverged: larger ones might do better"
        )
    return out


def _point_reading(p: SweepPoint, best: SweepPoint | None) -> str:
    name = f"lr {p.lr:.3g}"
    if p.state == "diverged":
        return f"{name} diverged at step {p.step}: {p.reason or 'no reason recorded'}"
    if p.state == "failed":
        return f"{name} failed: {p.reason or 'no error recorded'}"
    if p.state == "pending":
        return f"{name} has not started"
    if p.state != "finished":
        progress = f"{p.step or 0}/{p.max_steps or '?'}"
        return f"{name} is {p.state} at step {progress} (latest val {_f(p.final_val_loss)})"
    if p.final_val_loss is None:
        return f"{name} finished without a validation loss"
    if p is best:
        return f"{name} is the best: final val {p.final_val_loss:.4f}"
    if best is None:
        return f"{name}: final val {p.final_val_loss:.4f}"
    gap = p.final_val_loss - best.final_val_loss
    return f"{name} ended {gap:.2f} nats above the best (final val {p.final_val_loss:.4f})"


def search_strategy(view: SweepView) -> list[str]:
    """The grid, its spacing and which points bracketing added (and why)."""
    meta = view.meta
    grid = sorted(float(x) for x in meta.get("learning_rates") or [] if _finite(x))
    out = []
    if grid:
        spacing = (grid[-1] / grid[0]) ** (1 / (len(grid) - 1)) if len(grid) > 1 else None
        out.append(
            f"log-spaced grid of {len(grid)} learning rate(s) from {grid[0]:.3g} to {grid[-1]:.3g}"
            + (f" (about x{spacing:.2g} apart)" if spacing else "")
        )
    else:
        out.append(
            "the grid is not recorded (sweep.json missing): points were found from the run directories"
        )
    if meta.get("extend"):
        out.append(
            "bracketing was on: after the grid, points are added one at a time on the 1-3-10 ladder until the "
            "best lr has a neighbour on each side and some lr diverged "
            f"(at most {meta.get('max_extra_points', '?')} extra)"
        )
    elif meta:
        out.append("bracketing was off: only the grid was run")
    added = [p for p in view.points if p.is_extension]
    for p in added:
        out.append(f"added lr {p.lr:.3g}: {p.record.get('why') or 'by bracketing'} -> {p.state}")
    if meta.get("extend") and not added:
        out.append("no point was added: the grid already bracketed the best lr (or the sweep is not done)")
    if meta.get("executor"):
        out.append(f"executor: {meta['executor']}")
    return out


def findings(view: SweepView) -> SweepFindings:
    edge, ratio = stability_edge(view)
    return SweepFindings(
        missing=missing_parts(view),
        best_text=best_text(view),
        target_text=target_text(view),
        edge=edge,
        reading=curve_reading(view),
        strategy=search_strategy(view),
        threshold_ratio=ratio,
    )


# ---- sample from the best checkpoint -------------------------------------------------------------------


def best_checkpoint(view: SweepView) -> Path | None:
    """The best point's ``checkpoints/best.pt`` (else final.pt), if it exists."""
    best = view.best_point
    if best is None or best.log is None:
        return None
    for name in ("best.pt", "final.pt"):
        path = best.log.path / "checkpoints" / name
        if path.is_file():
            return path
    return None


def sample_section(view: SweepView, prompt: str, max_tokens: int, seed: int, device: str) -> list[str]:
    """Markdown lines: a sample from the best checkpoint, or a note saying why there is none."""
    ckpt = best_checkpoint(view)
    if ckpt is None:
        why = "no finished run yet" if view.best_point is None else "the best run has no best.pt / final.pt"
        return [f"_Skipped: {why}._"]
    from cs336_basics.basics.generate import sample_from_checkpoint

    try:
        s = sample_from_checkpoint(
            ckpt, prompt, max_new_tokens=max_tokens, temperature=0.8, top_p=0.9, seed=seed, device=device
        )
    except UserError as err:
        return [f"_Skipped: {err}._"]
    end = "`<|endoftext|>`" if s.stopped_at_eot else f"the {max_tokens}-token limit"
    return [
        f"From `{ckpt}` (step {s.iteration}), temperature 0.8, top-p 0.9, seed {seed}; {s.new_tokens} tokens, "
        f"stopped at {end}. Reproduce with `cs336-generate --checkpoint {ckpt} --prompt {prompt!r} "
        f"--max-tokens {max_tokens} --seed {seed}`.",
        "",
        "```text",
        (s.prompt + s.text).replace("```", "``\u200b`"),
        "```",
    ]


# ---- the command ----------------------------------------------------------------------------------------


@dataclass
class AnalysisOutputs:
    view: SweepView
    comparison_png: Path
    lr_loss_png: Path
    analysis_md: Path
    experiment_log_md: Path
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
    view = load_sweep(sweep_dir)
    out = Path(out_dir) if out_dir is not None else view.path
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"cannot create output directory {out} ({err.strerror}); pass a writable --out"
        ) from None
    comparison = plot_sweep_comparison(view, out / COMPARISON_FILE)
    lr_loss = plot_lr_vs_loss(view, out / LR_LOSS_FILE)
    found = findings(view)
    sample_lines = (
        sample_section(view, prompt, max_tokens, seed, device) if sample else ["_Skipped (--no-sample)._"]
    )
    figures = {
        "train and validation loss of every learning rate": os.path.relpath(comparison, out),
        "final validation loss against learning rate": os.path.relpath(lr_loss, out),
    }
    analysis_path, log_path = out / ANALYSIS_FILE, out / LOG_FILE
    atomic_write_text(analysis_path, analysis_markdown(view, found, figures, sample_lines))
    atomic_write_text(log_path, experiment_log_markdown(view))
    return AnalysisOutputs(view, comparison, lr_loss, analysis_path, log_path, found)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lr-analyze", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("sweep_dir", nargs="?", type=Path, default=DEFAULT_SWEEP_DIR, help="default: %(default)s")
    p.add_argument("--out", type=Path, default=None, help="where to write (default: the sweep dir)")
    p.add_argument("--no-sample", action="store_true", help="skip the text sample from the best checkpoint")
    p.add_argument("--prompt", default="Once upon a time", help="sample prompt (default: %(default)r)")
    p.add_argument("--max-tokens", type=int, default=256, help="sample length (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    p.add_argument("--device", default="auto", help="device for sampling (default: auto)")
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
    for line in result.findings.edge + [f"missing: {m}" for m in result.findings.missing]:
        print(line)
    for path in (result.comparison_png, result.lr_loss_png, result.analysis_md, result.experiment_log_md):
        print(f"wrote {path}")
    return 0


def _finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _f(x) -> str:
    return "–" if x is None else f"{x:.4f}"


if __name__ == "__main__":
    sys.exit(main())
