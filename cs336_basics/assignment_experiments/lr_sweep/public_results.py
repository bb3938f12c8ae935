"""Publicly reported results for this exact model and budget: context for a sweep's best loss, not a guarantee.

One table (data), one row per reported number, with its source. Implementations differ in tokenizer
training, data order, schedule details and how many validation batches they average, so a gap of a few
hundredths of a nat to a public number says little; a gap of tenths says something is off.
"""

from __future__ import annotations

from dataclasses import dataclass

from cs336_basics.assignment_experiments.sweep.view import SweepView
from cs336_basics.basics.config import PRESETS, create_experiment_config
from cs336_basics.formatting import fmt

HANDOUT = (
    "CS336 assignment 1 handout (Spring 2025), problem `learning_rate`: "
    "https://github.com/stanford-cs336/assignment1-basics (cs336_spring2025_assignment1_basics.pdf)"
)
NOTE_XIAMI = "https://github.com/xiamishaonian111/cs336 (assignment1-basics/experiments_note/note.md)"
NO_SOURCE = "reported; no public source located"


@dataclass(frozen=True)
class PublicResult:
    preset: str  # the budget it applies to: a preset name of basics.config.PRESETS
    what: str
    val_loss: str  # as reported ("about 1.30-1.31", "<= 1.45")
    lr: str
    source: str


def _target(preset: str) -> str:
    return f"≤ {PRESETS[preset]['target_val_loss']:.2f}"  # the preset's target is the course's


PUBLIC_RESULTS: tuple[PublicResult, ...] = (
    PublicResult("full", "course target", _target("full"), "-", HANDOUT),
    PublicResult("full", "best final validation loss of tuned sweeps", "about 1.30-1.31", "8e-3 to 1e-2",
                 NO_SOURCE),
    PublicResult("low-resource", "course target", _target("low-resource"), "-", HANDOUT),
    PublicResult("low-resource", "course staff's solution, tuned lr, 32 x 5000 x 256 tokens, at step 5000",
                 "1.80", "tuned (value not given)", HANDOUT),
    PublicResult("low-resource", "a public solution's best of a 1e-4 ... 1 sweep, batch 32", "1.61", "3e-3",
                 NOTE_XIAMI),
    PublicResult("low-resource", "the same solution's edge of stability", "-",
                 "3e-2 stable, 1e-1 not", NOTE_XIAMI),
)  # fmt: skip


def budget_tokens(preset: str) -> int:
    """The token budget of a preset (batch x steps x context)."""
    return create_experiment_config(preset).total_tokens


def where_you_stand(view: SweepView) -> tuple[list[str], list[PublicResult]]:
    """Sentences and the public rows to show for the sweep's preset, the user's best last (``lr`` "this sweep").

    A preset without public results (demo, quick-test) gets every row, with a sentence saying they apply to
    the real budgets only.
    """
    preset = view.preset
    rows = [r for r in PUBLIC_RESULTS if r.preset == preset]
    budgets = ", ".join(f"`{p}` {budget_tokens(p) / 1e6:.2f}M tokens" for p in dict.fromkeys(
        r.preset for r in PUBLIC_RESULTS))  # fmt: skip
    if not rows:
        return [
            f"These are public reports for the real budgets only ({budgets}); the `{preset or '?'}` preset "
            "trains a different model or budget, so its losses are not comparable to them."
        ], list(PUBLIC_RESULTS)
    text = [
        f"Publicly reported results for this model at the `{preset}` budget "
        f"({budget_tokens(preset) / 1e6:.2f}M tokens), as context, not guarantees: implementations differ in "
        "tokenizer, data order, schedule and evaluation batches."
    ]
    tokens = _sweep_tokens(view)
    if preset in PRESETS and tokens is not None and tokens != budget_tokens(preset):
        text.append(f"This sweep trains {tokens / 1e6:.2f}M tokens per point, not the preset's "
                    f"{budget_tokens(preset) / 1e6:.2f}M: compare loosely.")  # fmt: skip
    best = view.best
    mine = PublicResult(
        preset,
        "**this sweep's best** (final validation loss)",
        fmt(best.final_val_loss, ".4f") if best else "none finished yet",
        f"{best.lr:.3g}" if best else "-",
        f"`{view.path}`",
    )
    return text, [*rows, mine]


def _sweep_tokens(view: SweepView) -> int | None:
    c = view.config
    try:
        return int(c["batch_size"]) * int(c["context_length"]) * int(c["max_steps"])
    except (KeyError, TypeError, ValueError):
        return None
