"""The edge-of-stability report on synthetic sweeps with known answers, written through the real tracker:
peak ratio and the share of measured steps above 0.9 of the threshold, the yes/no rule, which signal moved
first, the LR sensitivity, the fitted optimum on an exact parabola, seeds, public results, and lr-analyze."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from cs336_basics.assignment_experiments.lr_sweep import stability
from cs336_basics.assignment_experiments.lr_sweep.analyze_lr_sweep import main as analyze_main
from cs336_basics.assignment_experiments.lr_sweep.naming import lr_dir_name
from cs336_basics.assignment_experiments.lr_sweep.public_results import where_you_stand
from cs336_basics.assignment_experiments.sweep.view import load_sweep
from cs336_basics.experiment_log.reader import signal_columns
from cs336_basics.experiment_log.tracker import ExperimentTracker

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STEADY = {"attn": 10.0, "entropy": 2.0, "logz": 7.0, "logz_sq": 50.0, "update": 0.01}


def signal_row(attn=10.0, entropy=2.0, logz=7.0, logz_sq=50.0, update=0.01) -> dict:
    """One log step's signals for a 2-layer model: layer 1's attention logit is the larger one."""
    return dict(zip(signal_columns(2), (attn / 2, attn, entropy, logz, logz_sq, update)))


def write_run(
    sweep: Path,
    lr: float,
    *,
    final_val: float | None,
    steps: int = 100,
    seed: int = 0,
    ratios: dict[int, float] | None = None,
    signals: dict[int, dict] | None = None,
    reason: str | None = None,
    initial_loss: float = 5.0,
    val_loss_sem: float | None = None,
) -> None:
    """A run dir as the trainer leaves it: config.json, metrics.csv (log every 10 steps, signals), sharpness.csv,
    status.json and summary.json. ``final_val`` None means the run diverged at ``steps``."""
    config = {"max_lr": lr, "seed": seed, "max_steps": 100, "beta1": 0.9, "preset": "demo"}
    tracker = ExperimentTracker(config, sweep / lr_dir_name(lr, seed), columns=signal_columns(2))
    tracker.start()
    signals = signals or {}
    for step in range(10, steps + 1, 10):
        row = {"step": step, "tokens": 64 * step, "wallclock_s": 0.1 * step, "train_loss": 3.0, "lr": lr}
        if step == steps and final_val is not None:
            row["val_loss"] = final_val
        tracker.log({**row, **signal_row(**signals.get(step, {}))})
    for step, ratio in (ratios or {}).items():
        threshold = 38 / lr
        tracker.log_sharpness(
            {"step": step, "lr": lr, "sharpness": ratio * threshold, "threshold": threshold, "ratio": ratio}
        )
    tracker.finish({
        "status": "finished" if final_val is not None else "diverged", "steps": steps,
        "final_val_loss": final_val, "best_val_loss": final_val, "final_train_loss": 3.0,
        "initial_loss": initial_loss, "val_loss_sem": val_loss_sem, "reason": reason,
    })  # fmt: skip


def write_sweep_json(sweep: Path, preset: str, config: dict | None = None) -> None:
    """sweep.json for the run dirs already in ``sweep`` (their config.json names value and seed)."""
    points = []
    for d in sorted(sweep.iterdir()):
        if d.is_dir():
            cfg = json.loads((d / "config.json").read_text())
            points.append({"value": cfg["max_lr"], "seed": cfg["seed"], "name": d.name, "added_by": "grid"})
    meta = {"version": 2, "state": "finished", "preset": preset, "field": "max_lr", "points": points,
            "values": sorted({p["value"] for p in points}), "config": {"preset": preset, **(config or {})}}  # fmt: skip
    (sweep / "sweep.json").write_text(json.dumps(meta))


def row(view, lr):
    return next(r for r in stability.edge_rows(view) if r.lr == lr)


def test_peak_and_share_of_measured_steps(tmp_path):
    # lr 1e-2: ratios cross 0.9 at steps 20, 30 and 50: peak 1.3 at step 30, 3 of 5 measured steps above.
    write_run(tmp_path, 1e-2, final_val=1.5, ratios={10: 0.5, 20: 0.95, 30: 1.3, 40: 0.8, 50: 0.92})
    write_run(tmp_path, 1e-3, final_val=2.0, ratios={10: 0.1, 50: 0.2})
    view = load_sweep(tmp_path)
    best = row(view, 1e-2)
    assert (best.peak, best.peak_steps, best.above, best.measured) == (1.3, (30,), 3, 5)
    assert best.share == pytest.approx(0.6)
    assert row(view, 1e-3).above == 0 and row(view, 1e-3).peak == 0.2
    text = stability.at_edge_text(view, stability.edge_rows(view))
    assert text.startswith("**Yes**: the best learning rate 0.01 trains at the edge of stability")
    assert "above 0.9 x the threshold 38/η at 3 of its 5 measured steps (60%)" in text
    assert "peaked at 1.30 x the threshold (step 30)" in text


def test_best_lr_below_the_rule_is_a_no(tmp_path):
    # 1 of 6 measured steps above 0.9 (17%) is under the 20% rule, although the peak crossed the threshold.
    write_run(tmp_path, 1e-2, final_val=1.5, ratios={10: 1.1, 20: 0.5, 30: 0.5, 40: 0.5, 50: 0.5, 60: 0.5})
    view = load_sweep(tmp_path)
    text = stability.at_edge_text(view, stability.edge_rows(view))
    assert text.startswith("**No**: the best learning rate 0.01 does not train at the edge")
    assert "at 1 of its 6 measured steps (17%)" in text


def test_log_z_moved_first(tmp_path):
    # Diverged at step 100: the early band is steps 10 and 20 (<= 25% of 100). (log Z)^2 jumps x3 at step 40,
    # the attention logit x3 at step 60; the others stay put.
    signals = {s: {"logz_sq": 150.0} for s in range(40, 101, 10)}
    for s in range(60, 101, 10):
        signals[s]["attn"] = 30.0
    write_run(tmp_path, 1e-2, final_val=1.5)
    write_run(tmp_path, 1e-1, final_val=None, signals=signals, reason="exploded: test")
    view = load_sweep(tmp_path)
    moves = {m.signal: m for m in stability.signal_moves(view.point(1e-1))}
    assert moves["logz_sq_mean"].step == 40 and moves["logz_sq_mean"].band == (50.0, 50.0)
    assert moves["max_attn_logit"].step == 60 and moves["max_attn_logit"].value == 30.0
    assert moves["attn_entropy_min"].step is None and moves["update_rms_ratio"].step is None
    (text,) = stability.moved_first_text(view)
    assert text.startswith(
        "lr 0.1 diverged at step 100 (exploded: test): **mean (log Z)²** moved first, at step 40 (60 steps before"
    )
    assert "max attention logit at step 60 (30, above 2 x 10)" in text
    assert "min attention entropy did not move" in text


def test_attention_entropy_collapse_counts_downwards(tmp_path):
    # The entropy halves and more (2.0 -> 0.9) at step 30; a logit *drop* never counts as moving.
    signals = {s: {"entropy": 0.9, "attn": 4.0} for s in range(30, 51, 10)}
    write_run(tmp_path, 1e-1, final_val=None, steps=50, signals=signals, reason="non-finite")
    (text,) = stability.moved_first_text(load_sweep(tmp_path))
    assert "**min attention entropy** moved first, at step 30 (20 steps before the divergence)" in text
    assert "max attention logit did not move" in text


def test_lr_sensitivity_from_the_initial_loss(tmp_path):
    # l0 = 5 from summary.json: per lr min(loss, l0) = [2.0, 1.5, 5 (diverged)]; l* = 1.5 -> mean(0.5, 0, 3.5)
    write_run(tmp_path, 1e-3, final_val=2.0)
    write_run(tmp_path, 1e-2, final_val=1.5)
    write_run(tmp_path, 1e-1, final_val=None, steps=30, reason="exploded")
    text = stability.sensitivity_text(load_sweep(tmp_path))
    assert text.startswith("LR sensitivity (Wortsman et al. 2023): **1.333 nats**, the mean over the 3")
    assert "ℓ₀ = 5.000" in text and "ℓ* = 1.5000" in text


def test_a_learning_rate_with_a_seed_not_done_is_left_out_as_the_best_leaves_it_out(tmp_path):
    """seed 1 of 3e-2 never finished: its seed 0 (1.40, lower than any mean) must not be the l* the
    sensitivity measures from while the report names 1e-2 the best. By hand: l0 = 5, per lr
    min(loss, l0) - l* = [2.0 - 1.5, 1.5 - 1.5], mean 0.25 over 2 learning rates."""
    for lr, loss in ((1e-3, 2.0), (1e-2, 1.5)):
        for seed in (0, 1):
            write_run(tmp_path, lr, final_val=loss, seed=seed)
    write_run(tmp_path, 3e-2, final_val=1.40, seed=0)
    ExperimentTracker({"max_lr": 3e-2, "seed": 1, "max_steps": 100}, tmp_path / lr_dir_name(3e-2, 1)).start()
    view = load_sweep(tmp_path)
    assert view.best.value == 1e-2 and view.group(3e-2).state != "finished"
    text = stability.sensitivity_text(view)
    assert "**0.250 nats**, the mean over the 2 learning rates" in text and "ℓ* = 1.5000" in text


def bowl(lr: float) -> float:
    return 1.0 + 0.5 * (math.log10(lr) + 2.3) ** 2  # minimum at lr = 10^-2.3 = 0.00501


@pytest.mark.parametrize("sem", [0.0, None])
def test_fitted_optimum_on_an_exact_parabola(tmp_path, sem):
    for u in (-3.0, -2.5, -2.0, -1.5):
        write_run(tmp_path, 10**u, final_val=bowl(10**u), val_loss_sem=sem)
    view = load_sweep(tmp_path)
    fit = stability.optimum_fit(view)
    assert math.log10(fit.lr) == pytest.approx(-2.3, abs=1e-9)
    first, *rest = stability.optimum_text(view, fit)
    through = "fit: quadratic in log10 lr through 0.001, 0.00316, 0.01"
    if sem is None:  # one seed and no val_loss_sem: the noise, so the interval, is unknown
        assert first.startswith(
            f"Fitted optimum: lr **0.00501** (68% interval unknown, {through}, noise unknown"
        )
    else:
        assert first.startswith(f"Fitted optimum: lr **0.00501** (the same lr under every noise draw, {through}, "
                                "noise from the spread of the final evaluation's per-batch validation losses")  # fmt: skip
    assert not any(r.startswith("Warning") for r in rest)


def test_optimum_on_the_edge_is_warned(tmp_path):
    for lr, loss in ((1e-3, 3.0), (3e-3, 2.5), (1e-2, 2.2)):
        write_run(tmp_path, lr, final_val=loss, val_loss_sem=0.01)
    write_run(tmp_path, 3e-2, final_val=None, steps=30, reason="exploded")
    view = load_sweep(tmp_path)
    text = stability.optimum_text(view, stability.optimum_fit(view))
    assert "Fitted optimum: lr **0.01**" in text[0]
    assert text[1].startswith("Warning: the optimum sits on the upper edge of the converged points")


def test_seeds_mean_peak_and_beats_neighbours(tmp_path):
    losses = {1e-3: (2.0, 2.1), 1e-2: (1.50, 1.52), 1e-1: (1.52, 1.56)}
    peaks = {0: 1.2, 1: 1.6}
    for lr, by_seed in losses.items():
        for seed, loss in enumerate(by_seed):
            write_run(tmp_path, lr, final_val=loss, seed=seed, ratios={10: 0.5, 20 + 10 * seed: peaks[seed]})
    view = load_sweep(tmp_path)
    best = row(view, 1e-2)
    assert best.peak == pytest.approx(1.4) and best.peak_std == pytest.approx(0.4 / math.sqrt(2))
    assert best.peak_steps == (20, 30) and (best.above, best.measured) == (2, 4)
    below, above = stability.neighbour_text(view)
    # 1e-3: margin 2.05 - 1.51 = 0.54 > noise 0.0707 + 0.0141; 1e-1: margin 0.03 < noise 0.0141 + 0.0283
    assert below.startswith("lr 0.01 vs its neighbour 0.001: beats it by more than the noise (margin +0.5400")
    assert above.startswith(
        "lr 0.01 vs its neighbour 0.1: does not beat it by more than the noise (margin +0.0300"
    )
    assert "noise 0.0424" in above
    fit = stability.optimum_fit(view)
    assert fit.noise == "std of seeds" and fit.high > fit.low


def test_where_you_stand_shows_the_presets_rows_and_the_users_best(tmp_path):
    write_run(tmp_path, 3e-3, final_val=1.7)
    write_sweep_json(tmp_path, "low-resource", {"batch_size": 32, "context_length": 256, "max_steps": 5000})
    text, rows = where_you_stand(load_sweep(tmp_path))
    assert "`low-resource` budget (40.96M tokens)" in text[0] and len(text) == 1
    assert {r.preset for r in rows} == {"low-resource"}
    assert {"≤ 2.00", "1.80", "1.61"} <= {r.val_loss for r in rows}  # target, staff reference, a solution
    assert rows[-1].val_loss == "1.7000" and rows[-1].lr == "0.003" and "this sweep" in rows[-1].what
    write_sweep_json(tmp_path, "low-resource", {"batch_size": 16, "context_length": 256, "max_steps": 5000})
    assert (
        "trains 20.48M tokens per point, not the preset's 40.96M"
        in where_you_stand(load_sweep(tmp_path))[0][1]
    )
    write_sweep_json(tmp_path, "demo")
    text, rows = where_you_stand(load_sweep(tmp_path))
    assert "real budgets only" in text[0] and {r.preset for r in rows} == {"full", "low-resource"}


def test_lr_analyze_writes_and_prints_the_edge_of_stability(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    write_run(sweep, 1e-3, final_val=2.0, ratios={10: 0.2, 50: 0.3})
    write_run(sweep, 1e-2, final_val=1.5, ratios={10: 0.5, 20: 0.95, 30: 1.3, 40: 0.8, 50: 0.92})
    write_run(sweep, 3e-2, final_val=1.7, ratios={10: 2.0, 50: 3.0}, val_loss_sem=0.01)
    write_run(sweep, 1e-1, final_val=None, steps=50, ratios={10: 9.0}, reason="exploded: test",
              signals={s: {"logz_sq": 150.0} for s in (30, 40, 50)})  # fmt: skip
    write_sweep_json(sweep, "demo")
    assert analyze_main([str(sweep), "--no-sample"]) == 0
    out = capsys.readouterr().out
    for name in ("lr_sweep_sharpness.png", "lr_sweep_signals.png", "lr_vs_final_loss.png"):
        assert (sweep / name).read_bytes().startswith(PNG_MAGIC)
        assert f"wrote {sweep / name}" in out
    assert "Yes: the best learning rate 0.01 trains at the edge" in out  # no markdown bold on the terminal
    assert "mean (log Z)² moved first, at step 30" in out and "LR sensitivity" in out
    md = (sweep / "lr_sweep_analysis.md").read_text()
    edge = md[md.index("## Edge of stability") : md.index("## Reading the curves")]
    assert (
        "smallest learning rate above the best that diverged: 0.1 (exploded: test)" in edge
    )  # bracketing kept
    assert "| 0.01 | finished | 1 | 5 | 1.30 | 30 | 60% (3 of 5) |" in edge
    assert "share counts measured steps, not all training steps" in edge
    assert "## Where you stand" in md and "Fitted optimum: lr **" in md
    assert "![preconditioned sharpness against its stability threshold](lr_sweep_sharpness.png)" in md


def test_seeds_of_one_learning_rate_are_told_apart_in_the_comparison_plot(tmp_path, monkeypatch):
    """Same colour for one lr, another line style per seed, in the curves and in the legend."""
    from cs336_basics.assignment_experiments.sweep import plots

    for seed in (0, 1):
        write_run(tmp_path, 1e-2, final_val=2.0 + seed / 10, seed=seed)
    write_run(tmp_path, 3e-3, final_val=2.5)
    write_sweep_json(tmp_path, "demo")
    figures = []
    real_save = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.append(fig) or real_save(fig, path))
    plots.plot_sweep_comparison(load_sweep(tmp_path), tmp_path / "comparison.png")
    (fig,) = figures
    for ax in fig.axes:
        curves = ax.get_lines()  # one per run (the val row: one point each); no target line in this sweep
        assert len(curves) == 3
        styles = {(tuple(map(float, line.get_color())), line.get_linestyle()) for line in curves}
        assert len(styles) == 3 and len({color for color, _ in styles}) == 2
    legend = {
        t.get_text(): h.get_linestyle()
        for t, h in zip(fig.legends[0].get_texts(), fig.legends[0].legend_handles)
    }
    assert legend["lr 0.01"] != legend["lr 0.01, seed 1"]


def test_a_ratio_far_above_the_threshold_is_unclear_not_yes(tmp_path):
    # 1 of 1 measured steps above 0.9, at 73.8 x the threshold, in a run that converged: not "at" the edge.
    write_run(tmp_path, 3e-2, final_val=2.5, ratios={20: 73.81})
    text = stability.at_edge_text(load_sweep(tmp_path), stability.edge_rows(load_sweep(tmp_path)))
    assert text.startswith("**Unclear**: the best learning rate 0.03 may train at the edge of stability")
    assert (
        "peaked at 73.81 x the threshold" in text and "hovers near 1" in text and "Only 1 measurement" in text
    )


def test_a_fitted_minimum_far_below_every_measured_loss_is_flagged(tmp_path):
    # A coarse, uneven grid (3e-3, 3e-2, 1e-1 at 3.6, 2.9, 3.6): the parabola through them bottoms out in the
    # wider untried gap (a decade, between 3e-3 and 3e-2), below every measured loss.
    points = {3e-3: 3.6, 3e-2: 2.9, 1e-1: 3.6}
    for lr, loss in points.items():
        write_run(tmp_path, lr, final_val=loss, val_loss_sem=0.01)
    view = load_sweep(tmp_path)
    fit = stability.optimum_fit(view)
    u, y = np.log10(list(points)), np.array(list(points.values()))
    a, b, c = np.polyfit(u, y, 2)  # an independent fit of the same three points
    expected_gap = 2.9 - (c - b * b / (4 * a))
    assert fit.loss == pytest.approx(c - b * b / (4 * a)) and expected_gap > stability.INTERPOLATION_GAP
    text = stability.optimum_text(view, fit)
    assert any(t.startswith(f"Warning: the parabola's minimum lies {expected_gap:.2f} nats below the best measured "
                            "loss, between 0.003 and 0.03") for t in text), text  # fmt: skip


def test_a_run_with_one_logged_row_is_a_dot_in_its_colour(tmp_path, monkeypatch):
    """A single point draws no line segment: without a marker a run that diverged at its first log step would
    show only the red X, and its colour (which lr) would be lost."""
    from cs336_basics.assignment_experiments.sweep import plots

    write_run(tmp_path, 1e-2, final_val=2.0)
    write_run(tmp_path, 1e-1, final_val=None, steps=10, reason="exploded: test")
    write_sweep_json(tmp_path, "demo")
    figures = []
    real_save = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.append(fig) or real_save(fig, path))
    plots.plot_sweep_comparison(load_sweep(tmp_path), tmp_path / "comparison.png")
    train_vs_steps = figures[0].axes[0]
    [single] = [
        line for line in train_vs_steps.get_lines() if len(line.get_xdata()) == 1 and line.get_marker() != "X"
    ]
    assert single.get_marker() == "o" and list(single.get_xdata()) == [10]


def test_seeds_at_different_steps_do_not_average():
    """While a sweep runs, seed 0 may have finished (step 60) and seed 1 be at step 30: the group's losses are
    those of the seeds that have gone furthest, not a mean of a step-60 and a step-30 loss."""
    from types import SimpleNamespace

    from cs336_basics.assignment_experiments.sweep.view import ValueGroup

    done = SimpleNamespace(step=60, final_train_loss=2.153, final_val_loss=2.096)
    behind = SimpleNamespace(step=30, final_train_loss=2.934, final_val_loss=None)
    group = ValueGroup(1e-2, [done, behind])
    assert group.final_train_loss == 2.153 and group.mean_std("final_val_loss") == (2.096, None)
    level = SimpleNamespace(step=60, final_train_loss=2.353, final_val_loss=2.196)
    mean, std = ValueGroup(1e-2, [done, level]).mean_std("final_train_loss")
    assert mean == pytest.approx((2.153 + 2.353) / 2) and std == pytest.approx(0.2 / 2**0.5)


def test_the_two_senses_of_the_edge_of_stability_never_read_as_one_claim(tmp_path, capsys):
    """The best lr's sharpness sits at the threshold (the edge of stability in Cohen et al.'s sense) while
    nothing above it diverged (the divergence threshold is not bracketed): the output says both without
    calling the second "the edge of stability" too, which read as a contradiction."""
    sweep = tmp_path / "sweep"
    write_run(sweep, 1e-3, final_val=2.0, ratios={10: 0.2, 50: 0.3})
    write_run(sweep, 1e-2, final_val=1.5, ratios={10: 0.5, 20: 0.95, 30: 1.3, 40: 0.8, 50: 0.92})
    write_run(sweep, 3e-2, final_val=1.7, ratios={10: 2.0, 50: 3.0})
    write_sweep_json(sweep, "demo")
    assert analyze_main([str(sweep), "--no-sample"]) == 0
    out = capsys.readouterr().out
    assert "Yes: the best learning rate 0.01 trains at the edge of stability" in out
    assert (
        "no learning rate diverged: the divergence threshold lies above 0.03, the sweep does not bracket it"
        in out
    )
    assert out.count("edge of stability") == 1
    md = (sweep / "lr_sweep_analysis.md").read_text()
    edge = md[md.index("## Edge of stability") : md.index("## Reading the curves")]
    assert edge.index("Where training diverges") < edge.index("the divergence threshold lies above 0.03")
    assert edge.index("the divergence threshold lies above") < edge.index(
        "Whether the best lr trains at the edge"
    )


def test_a_running_or_unbracketed_sweep_never_claims_more_than_it_knows(tmp_path, capsys):
    """Nothing finished yet: no "threshold lies above" claim (it took the largest lr *tried*, running or not).
    With --no-extend, an unbracketed sweep says why and what bracketing would add, not that it is "trying"."""
    sweep = tmp_path / "sweep"
    write_run(sweep, 1e-3, final_val=2.0, ratios={10: 0.2})
    write_run(sweep, 1e-2, final_val=1.5, ratios={10: 0.5})
    write_sweep_json(sweep, "demo")
    meta = json.loads((sweep / "sweep.json").read_text())
    (sweep / "sweep.json").write_text(json.dumps({**meta, "extend": False}))
    assert analyze_main([str(sweep), "--no-sample"]) == 0
    md = (sweep / "lr_sweep_analysis.md").read_text()
    assert (
        "not bracketed: best lr 0.01 is the largest tried; without --no-extend the sweep would add 0.03" in md
    )
    assert "trying above" not in md
    assert md.count("nats above the best") == 1  # the per-point line; the "too low" line names, not repeats
    assert "too low: lr 0.001 learn(s) too slowly for this step budget (over 0.02 nats worse)" in md
    capsys.readouterr()
    status = json.loads((sweep / "lr_1e_02" / "status.json").read_text())
    (sweep / "lr_1e_02" / "summary.json").unlink()  # 1e-2 still running, 1e-3 not started: nothing converged
    (sweep / "lr_1e_02" / "status.json").write_text(
        json.dumps({**status, "state": "running", "host": "elsewhere"})
    )
    for name in ("summary.json", "status.json", "metrics.csv"):
        (sweep / "lr_1e_03" / name).unlink()
    assert analyze_main([str(sweep), "--no-sample"]) == 0
    out = capsys.readouterr().out
    assert "no learning rate has converged yet" in out and "no learning rate diverged yet" in out
    assert "lies above" not in out
