"""Markdown reports written from the data: the sweep's analysis and EXPERIMENT_LOG.md (one entry per run).

Every sentence is computed from the run directories (plateau, loss spikes, divergence, overhead share), so
nobody fills a template by hand. Functions take a ``SweepView`` (and, for the analysis, the findings that
analyze_lr_sweep computed) and return text; writing the files is the caller's job.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from cs336_basics.assignment_experiments.lr_sweep.public_results import where_you_stand
from cs336_basics.assignment_experiments.lr_sweep.stability import (
    EDGE_FRACTION,
    EdgeRow,
    moved_rule_text,
    steps_text,
)
from cs336_basics.assignment_experiments.sweep.view import SweepPoint, SweepView
from cs336_basics.experiment_log import ExperimentLog
from cs336_basics.experiment_log.reader import TRAIN_RATE, TRAIN_RATE_NOTE, smoothed
from cs336_basics.formatting import count, duration, fmt, loss_text, md_table, plural

PLATEAU_GAIN = 0.01  # < 1% smoothed-loss improvement per 10% of training counts as a plateau
SPIKE_FACTOR = 1.3  # a logged loss above 1.3x the smoothed loss before it is a spike
OVERHEAD_WARN = 0.2  # evaluation + checkpointing above 20% of wallclock is worth a remark


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


# ---- one run's training curve -------------------------------------------------------------------------


def train_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """Rows with a finite, positive train loss."""
    m = metrics[metrics["train_loss"].notna()]
    return m[np.isfinite(m["train_loss"]) & (m["train_loss"] > 0)]


def centered_smooth(losses: pd.Series) -> np.ndarray:
    """A centred rolling mean over ~10% of the points: smooth, without the lag of an EMA."""
    half = max(1, len(losses) // 20)
    return losses.rolling(2 * half + 1, center=True, min_periods=1).mean().to_numpy(dtype=float)


def plateau(metrics: pd.DataFrame) -> dict | None:
    """When the smoothed train loss stopped improving: the first tenth of training after which every later
    tenth improved it by < 1%. ``{"step": step or None (still improving), "last_gain": fraction gained in the
    last tenth}``; None with fewer than 5 logged losses."""
    m = train_rows(metrics)
    if len(m) < 5:
        return None
    steps = m["step"].to_numpy(dtype=float)
    grid = np.linspace(steps[0], steps[-1], 11)
    level = np.interp(grid, steps, centered_smooth(m["train_loss"].reset_index(drop=True)))
    gains = (level[:-1] - level[1:]) / level[:-1]
    start = 10
    while start > 0 and gains[start - 1] < PLATEAU_GAIN:
        start -= 1
    return {"step": int(round(grid[start])) if start < 10 else None, "last_gain": float(gains[-1])}


def loss_spikes(metrics: pd.DataFrame) -> list[tuple[int, float, float]]:
    """(step, loss, smoothed loss before it) for each logged train loss above ``SPIKE_FACTOR`` x that smoothed
    loss."""
    m = train_rows(metrics)
    before = [None, *smoothed(m["train_loss"])[:-1]]
    return [(int(s), float(loss), float(prev)) for s, loss, prev in zip(m["step"], m["train_loss"], before)
            if prev is not None and loss > SPIKE_FACTOR * prev]  # fmt: skip


def target_reached_at(log: ExperimentLog, target: float) -> int | None:
    """The first evaluated step whose val loss is at or below ``target``."""
    hit = log.eval_rows[log.eval_rows["val_loss"] <= target]
    return int(hit["step"].iloc[0]) if len(hit) else None


def run_observations(point: SweepPoint, target: float | None = None) -> list[str]:
    """Plain sentences about one run with a run directory, computed from its files."""
    log = point.log
    out: list[str] = []
    m, trained = log.metrics, train_rows(log.metrics)
    if not len(trained):
        out.append("no train loss logged yet")
    p = plateau(m)
    if p is not None:
        last = _change(p["last_gain"])
        if p["step"] is not None and p["step"] <= int(trained["step"].iloc[0]):
            out.append(
                "barely learned: the smoothed train loss never improved by 1% or more per 10% of training "
                f"(last 10%: {last})"
            )
        elif p["step"] is None:
            out.append(
                f"still improving at the end: in the last 10% of training the smoothed train loss {last} "
                "(a longer run would likely help)"
            )
        else:
            out.append(
                f"plateaued from about step {p['step']}: after it the smoothed train loss improved < 1% per 10% "
                f"of training (last 10%: {last})"
            )
    spikes = loss_spikes(m)
    if spikes:
        shown = "; ".join(f"step {s} ({loss:.3f} vs smoothed {prev:.3f})" for s, loss, prev in spikes[:5])
        more = f" and {len(spikes) - 5} more" if len(spikes) > 5 else ""
        out.append(f"{len(spikes)} loss spike(s) above {SPIKE_FACTOR}x the smoothed loss: {shown}{more}")
    elif len(trained) >= 2:
        out.append(f"no loss spikes (no logged train loss above {SPIKE_FACTOR}x the smoothed loss before it)")
    if not len(log.eval_rows):
        out.append("no validation loss logged yet")
    elif point.state == "finished" and None not in (point.final_val_loss, point.final_train_loss):
        gap = point.final_val_loss - point.final_train_loss
        side = "above" if gap >= 0 else "below"
        out.append(f"final val loss is {abs(gap):.3f} nats {side} the final train loss")
    if target is not None and len(log.eval_rows):
        hit = target_reached_at(log, target)
        out.append(
            f"reached the target val loss {target:g} at step {hit}"
            if hit is not None
            else f"did not reach the target val loss {target:g}"
        )
    if point.state == "diverged":
        out.append(f"diverged at step {point.step}: {point.reason or 'no reason recorded'}")
    elif point.state in ("failed", "interrupted"):
        out.append(f"{point.state}: {point.reason or 'no reason recorded'}")
    oh = log.overhead_share()
    if oh is not None:
        if oh["estimated"]:
            text = (
                f"evaluation + checkpointing ≈ {100 * oh['total']:.0f}% of the {duration(oh['wallclock_s'])} "
                "wallclock (estimated from metrics)"
            )
        else:
            shares = [
                f"evaluation took {100 * oh['eval']:.1f}%",
                f"checkpointing {100 * oh['checkpoint']:.1f}%",
            ]
            if oh["measure"]:  # capped by --sharpness-share (sharpness) and --no-signals
                shares.append(f"the stability measurements {100 * oh['measure']:.1f}%")
            text = f"{', '.join(shares[:-1])} and {shares[-1]} of the {duration(oh['wallclock_s'])} wallclock"
        if oh["total"] > OVERHEAD_WARN:
            text += " — a large share: raise --eval-interval / --checkpoint-interval or lower --eval-batches"
        out.append(text)
    # How the run ran: the auto choices, a compile fallback, a resume on another CPU thread count.
    out += [f"runtime: {note}" for note in (log.config.get("runtime") or {}).get("notes") or []]
    return out


def _change(gain: float) -> str:
    return f"fell {100 * gain:.1f}%" if gain >= 0 else f"rose {100 * -gain:.1f}%"


def key_metrics(m: pd.DataFrame, n: int = 6) -> pd.DataFrame:
    """About ``n`` metrics rows spread over the run (evaluation rows preferred), plus the last row."""
    if not len(m):
        return m
    ev = m[m["val_loss"].notna()]
    pool = ev if len(ev) >= min(n, 4) else m
    idx = sorted(set(np.linspace(0, len(pool) - 1, min(n, len(pool))).round().astype(int)))
    rows = pool.iloc[idx]
    if m.index[-1] not in rows.index:
        rows = pd.concat([rows, m.iloc[[-1]]])
    return rows


KEY_METRIC_CELLS = {  # the "Over training" table: header -> the cell of a metrics row
    "step": lambda r: str(int(r.step)),
    "tokens": lambda r: count(r.tokens),
    "wallclock": lambda r: duration(r.wallclock_s),
    "train loss": lambda r: fmt(r.train_loss),
    "val loss": lambda r: fmt(r.val_loss),
    "lr": lambda r: fmt(r.lr, ".2e"),
    "grad norm": lambda r: fmt(r.grad_norm, ".2f"),
    "tokens/s": lambda r: fmt(r.tokens_per_sec, ",.0f"),
}


def key_metrics_markdown(metrics: pd.DataFrame) -> str:
    rows = key_metrics(metrics)
    if not len(rows):
        return "_no metrics logged yet_"
    body = [[cell(r) for cell in KEY_METRIC_CELLS.values()] for r in rows.itertuples()]
    return md_table(list(KEY_METRIC_CELLS), body)


# ---- EXPERIMENT_LOG.md ----------------------------------------------------------------------------------


def config_line(config: dict) -> str:
    """The key configuration fields of a run's config.json, in one paragraph."""
    c = config
    if not c:
        return "_config.json not written yet_"
    rt = c.get("runtime") or {}
    threads = (
        f", {plural(rt['threads'], 'thread')}" if rt.get("device") == "cpu" and rt.get("threads") else ""
    )
    params = c.get("non_embedding_parameters")
    tokens_step = (c.get("batch_size") or 0) * (c.get("context_length") or 0)
    parts = [
        f"preset `{c.get('preset', '?')}`",
        f"model d_model {c.get('d_model')}, {c.get('num_layers')} layers, {c.get('num_heads')} heads, d_ff "
        f"{c.get('d_ff')}, context {c.get('context_length')}, vocab {c.get('vocab_size')}"
        + (f" ({count(params)} non-embedding parameters)" if params else ""),
        f"batch {c.get('batch_size')} x {c.get('context_length')} = {count(tokens_step)} tokens/step, "
        f"{c.get('max_steps')} steps ({count(tokens_step * (c.get('max_steps') or 0))} tokens)",
        f"lr {fmt(c.get('max_lr'), 'g')} -> {fmt(c.get('min_lr'), 'g')} cosine, "
        f"warmup {c.get('warmup_steps')} steps",
        f"AdamW betas ({c.get('beta1')}, {c.get('beta2')}), weight decay {c.get('weight_decay')}, "
        f"grad clip {c.get('grad_clip')}",
        f"device {rt.get('device', c.get('device'))} ({rt.get('device_name', '?')}{threads}), "
        f"{rt.get('dtype', c.get('dtype'))}, "
        f"compile {'on' if rt.get('compile') else 'off'}" + (", tf32" if rt.get("tf32") else ""),
        f"seed {c.get('seed')}",
    ]
    return "; ".join(parts) + "."


def results_markdown(point: SweepPoint) -> str:
    s = point.log.summary or {}
    best_step = s.get("best_step")
    rows = [
        ["state", point.state + (f" ({point.reason})" if point.reason and point.state != "finished" else "")],
        ["steps", f"{fmt(point.step, 'd')} / {fmt(point.max_steps, 'd')}"],
        ["best val loss", fmt(point.best_val_loss, ".4f") + (f" (step {best_step})" if best_step else "")],
        ["final val loss", fmt(point.final_val_loss, ".4f")],
        ["final train loss", fmt(point.final_train_loss, ".4f")],
        ["tokens/s (median of log intervals, training only)", fmt(point.tokens_per_sec, ",.0f")],
        ["tokens seen", count(point.tokens)],
        ["total time", duration(point.wallclock_s)],
    ]
    return md_table(["result", "value"], rows)


def experiment_log_markdown(view: SweepView) -> str:
    """EXPERIMENT_LOG.md: one entry per learning rate: configuration, results, metrics over training and
    observations computed from the data."""
    target = view.target_val_loss
    best = view.best.best_run if view.best else None
    lines = [
        "# Experiment log",
        "",
        f"Sweep `{view.path}`, generated by `lr-analyze` on {_now()} from the run directories "
        "(regenerate it rather than editing it).",
        "",
    ]
    if not view.points:
        lines.append("_No runs in this sweep yet._")
    for p in view.points:
        mark = " — best" if best is not None and p is best else ""
        seed = f", seed {p.seed}" if p.seed else ""
        lines += [f"## {view.field} {p.value:.3g}{seed} (`{p.name}`): {p.state}{mark}", ""]
        if p.is_extension:
            lines += [f"Added beyond the grid by bracketing: {p.why or 'no reason recorded'}.", ""]
        if p.log is None:
            why = f"the point {p.state}: {p.reason}" if p.reason else f"the point is {p.state}"
            lines += [f"No run directory ({why}).", ""]
            continue
        lines += ["**Configuration.** " + config_line(p.log.config), ""]
        lines += ["**Results.**", "", results_markdown(p), ""]
        lines += ["**Over training.**", "", key_metrics_markdown(p.log.metrics), ""]
        lines += ["**Observations.**", ""] + [f"- {o}" for o in run_observations(p, target)] + [""]
    return "\n".join(lines)


# ---- lr_sweep_analysis.md -------------------------------------------------------------------------------


def results_table_markdown(view: SweepView) -> str:
    """One row per value; losses are mean ± std over seeds when there are several."""
    best = view.best
    rows = []
    for g in view.groups:
        value = f"{g.value:.3g}"
        rows.append([
            f"**{value}**" if best is not None and g.value == best.value else value,
            g.state + (" (added)" if g.is_extension else ""), str(len(g.points)),
            f"{fmt(g.step, 'd')}/{fmt(g.max_steps, 'd')}", fmt(g.final_train_loss), fmt(g.best_val_loss),
            loss_text(g.final_val_loss, g.final_val_std), count(g.tokens), duration(g.wallclock_s),
            fmt(g.tokens_per_sec, ",.0f"),
        ])  # fmt: skip
    headers = ["lr", "state", "seeds", "steps", "final train", "best val", "final val", "tokens", "time",
               TRAIN_RATE]  # fmt: skip
    return md_table(headers, rows) + f"\n\n{TRAIN_RATE_NOTE}." if rows else "_No points yet._"


def edge_table_markdown(rows: list[EdgeRow]) -> str:
    """stability.py's per-lr sharpness rows: peak ratio (mean ± std over seeds), its step, the share above
    the edge fraction of the measured steps."""
    body = [
        [f"{r.lr:.3g}", r.state, str(r.seeds), str(r.measured), loss_text(r.peak, r.peak_std, ".2f"),
         steps_text(r.peak_steps),
         f"{r.share:.0%} ({r.above} of {r.measured})" if r.share is not None else "-"]
        for r in rows
    ]  # fmt: skip
    headers = ["lr", "state", "seeds", "measurements", "peak ratio", "step of peak",
               f"measured steps above {EDGE_FRACTION:g} x threshold"]  # fmt: skip
    return md_table(headers, body) if body else "_No points yet._"


def edge_section(view: SweepView, findings) -> list[str]:
    """The "Edge of stability" section, in its two senses: where training diverges (the bracketing sentences),
    then whether the best lr's sharpness sits at the stability threshold (the measured answer)."""
    st = findings.stability
    lines = [
        "## Edge of stability",
        "",
        "Where training diverges (the divergence threshold the sweep brackets):",
        "",
    ]
    lines += [f"- {e}" for e in findings.edge] + [""]
    seeds = max((r.seeds for r in st.rows), default=1) > 1
    lines += [f"Whether the best lr trains at the edge of stability (its sharpness at the threshold "
              f"{view.threshold_text}, as in Cohen et al.):", "", st.at_edge, ""]  # fmt: skip
    lines += [
        f"Preconditioned sharpness λ_max(P⁻¹H) (P = Adam's diag(√v̂ + ε)) on one fixed probe batch, as a ratio to "
        f"the stability threshold {view.threshold_text} at each measured step's scheduled lr (sharpness.csv); the "
        "share counts measured steps, not all training steps"
        + ("; with seeds, the peak ratio is the mean ± std over seeds, the step of the peak is given per seed "
           "and the counts are pooled over seeds." if seeds else "."),
        "",
        edge_table_markdown(st.rows),
        "",
    ]  # fmt: skip
    if st.moved_first:
        lines += ["Which instability signal moved first in the runs that diverged. " + moved_rule_text(), ""]
        lines += [f"- {m}" for m in st.moved_first] + [""]
    lines += [st.sensitivity, ""]
    return lines


def where_you_stand_section(view: SweepView) -> list[str]:
    text, rows = where_you_stand(view)
    body = [[r.preset, r.what, r.val_loss, r.lr, r.source] for r in rows]
    table = md_table(["budget", "result", "val loss", "lr", "source"], body)
    return ["## Where you stand", "", *text, "", table, ""]


def analysis_markdown(view: SweepView, findings, figures: dict[str, str], sample_text: list[str]) -> str:
    """lr_sweep_analysis.md. ``findings`` has ``missing, best_text, target_text, edge, reading, strategy``
    (lists of sentences / one sentence) and ``stability`` (stability.StabilityFindings); ``figures``
    maps captions to relative paths; ``sample_text`` is the sample section's lines."""
    lines = [
        "# Learning-rate sweep analysis",
        "",
        f"Sweep `{view.path}` (preset `{view.preset or '?'}`, sweep state `{view.state}`), "
        f"generated by `lr-analyze` on {_now()}.",
        "",
    ]
    if findings.missing:
        lines += ["## What is missing", ""] + [f"- {m}" for m in findings.missing] + [""]
    lines += ["## Results", "", results_table_markdown(view), ""]
    lines += ["## Best learning rate", "", findings.best_text, "", findings.target_text, ""]
    lines += [f"- {o}" for o in findings.stability.optimum] + [""]
    lines += where_you_stand_section(view)
    lines += edge_section(view, findings)
    lines += ["## Reading the curves", ""] + [f"- {r}" for r in findings.reading] + [""]
    lines += ["## Search strategy", ""] + [f"- {s}" for s in findings.strategy] + [""]
    if figures:
        lines += ["## Figures", ""]
        for caption, rel in figures.items():
            lines += [f"![{caption}]({rel})", ""]
    lines += ["## Sample from the best checkpoint", ""] + sample_text + [""]
    return "\n".join(lines)
