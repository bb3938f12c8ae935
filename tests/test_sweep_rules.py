"""Pure parts of the sweep: LR names, LR lists, bracketing, and the divergence rule on realistic curves."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cs336_basics.assignment_experiments.lr_sweep.bracketing import (
    PointOutcome,
    ladder_above,
    ladder_below,
    next_extension,
)
from cs336_basics.assignment_experiments.lr_sweep.naming import lr_dir_name, parse_learning_rates
from cs336_basics.basics.config import ExperimentConfig
from cs336_basics.basics.divergence import DivergenceRule, divergence_reason, smooth
from cs336_basics.errors import UserError
from cs336_basics.experiment_log.reader import smoothed


def test_names_are_readable():
    assert [lr_dir_name(x) for x in (1e-4, 3e-4, 6e-4, 1e-2)] == [
        "lr_1e_04",
        "lr_3e_04",
        "lr_6e_04",
        "lr_1e_02",
    ]
    assert lr_dir_name(2.5e-4) == "lr_2p5e_04"
    assert len({lr_dir_name(x) for x in (2e-4, 2.5e-4, 3e-4)}) == 3


@given(st.floats(min_value=1e-12, max_value=1e3, allow_nan=False, allow_infinity=False))
def test_names_round_trip_exactly(lr):
    text = lr_dir_name(lr)[3:].replace("p", ".").replace("e_", "e-")  # an independent inverse
    assert float(text) == lr and lr_dir_name(lr, seed=2) == lr_dir_name(lr) + "_s2"


def test_parse_learning_rates():
    assert parse_learning_rates(["3e-4", "1e-4", "3e-4"]) == [1e-4, 3e-4]
    for bad in (["-1"], ["0"], ["x"], ["nan"], ["inf"], []):
        with pytest.raises(UserError):
            parse_learning_rates(bad)


def test_ladder():
    assert ladder_above(6e-3) == 1e-2 and ladder_above(1e-2) == 3e-2 and ladder_above(3e-2) == 1e-1
    assert ladder_below(1e-4) == 3e-5 and ladder_below(3e-5) == 1e-5


def _grid(results):
    return [PointOutcome(lr, state, loss) for lr, state, loss in results]


def test_bracketing_follows_the_published_picture():
    # Full budget: best at the grid's top edge (1e-2), nothing diverged -> go up.
    grid = [
        (1e-4, "finished", 2.0),
        (3e-4, "finished", 1.6),
        (1e-3, "finished", 1.4),
        (1e-2, "finished", 1.31),
    ]
    assert next_extension(_grid(grid))[0] == 3e-2
    # 3e-2 diverged: best is inside, the edge is found -> done.
    assert next_extension(_grid([*grid, (3e-2, "diverged", None)])) is None
    # 3e-2 converged but worse: optimum inside, no divergence yet -> keep going up.
    assert next_extension(_grid([*grid, (3e-2, "finished", 1.35)]))[0] == 1e-1
    # Best at the bottom edge with a divergence above -> go down.
    low = [(1e-3, "finished", 1.2), (3e-3, "finished", 1.3), (1e-2, "diverged", None)]
    assert next_extension(_grid(low))[0] == 3e-4
    # Everything diverged -> go down; failed points carry no information.
    assert next_extension(_grid([(1e-2, "diverged", None), (3e-2, "failed", None)]))[0] == 3e-3
    assert next_extension([]) is None


def test_bracketing_needs_a_divergence_above_the_best():
    # 1e-5 diverged (a crash-like point far below), 3e-4 best inside: the edge above is not bracketed.
    grid = [
        (1e-5, "diverged", None),
        (1e-4, "finished", 1.6),
        (3e-4, "finished", 1.4),
        (1e-3, "finished", 1.5),
    ]
    lr, why = next_extension(_grid(grid))
    assert lr == 3e-3 and "above the best" in why
    assert next_extension(_grid([*grid, (3e-3, "diverged", None)])) is None


def test_smoothing_skips_a_nan_row_instead_of_resetting():
    assert smooth(4.0, float("nan")) == 4.0 and smooth(None, float("nan")) is None
    assert smoothed([4.0, float("nan"), 2.0]) == [4.0, 4.0, pytest.approx(0.8 * 4.0 + 0.2 * 2.0)]


RULE = DivergenceRule.from_config(ExperimentConfig())  # the defaults


def _first_reason(curve, reference=None, max_steps=10_000, every=50):
    smoothed = lowest = None
    initial = curve[0]
    for i, loss in enumerate(curve):
        step = (i + 1) * every
        smoothed = smooth(smoothed, loss)
        reason = divergence_reason(
            RULE,
            step=step,
            max_steps=max_steps,
            loss=loss,
            smoothed_loss=smoothed,
            initial_loss=initial,
            min_smoothed_loss=lowest,
            reference_loss=reference(step) if reference else None,
        )
        if reason:
            return step, reason
        lowest = smoothed if lowest is None else min(lowest, smoothed)
    return None


def _healthy(step):  # a typical good run of the TinyStories model: 9.3 -> ~1.4
    return 1.35 + 7.9 * math.exp(-step / 300)


def test_rule_on_healthy_and_too_low_curves():
    assert _first_reason([_healthy((i + 1) * 50) for i in range(200)], reference=_healthy) is None
    slow = [2.6 + 6.7 * math.exp(-(i + 1) * 50 / 3000) for i in range(200)]  # lr too low: slow, steady
    assert _first_reason(slow) is None  # no smaller lr to compare with: never "diverged"


def test_rule_catches_a_high_lr_stall_without_nan():
    # Clipped, too-high lr: drops to ~4.7 and sits there for thousands of steps, while smaller lrs are at ~1.6.
    stall = [9.3 - 4.6 * min(1, (i + 1) / 20) + 0.1 * math.sin(i) for i in range(200)]
    step, reason = _first_reason(stall, reference=_healthy)
    assert step == 2500 and "smaller learning rate" in reason  # first log step after 25% of 10k steps
    assert f"(last logged {stall[49]:.3f}) at step 2500" in reason  # the raw loss beside the smoothed one


def test_a_stall_against_the_initial_loss_shows_the_bound_it_crossed():
    # Falls from 10 to 9.5 only: still above 0.9 x 10 = 9 once the check starts.
    step, reason = _first_reason([10.0 - 0.5 * min(1, i / 10) for i in range(200)])
    assert step == 2500 and reason.endswith("is still above 0.9 x the initial loss 10.000 = 9.000")
    assert "(last logged 9.500)" in reason


def test_a_stall_called_by_a_hair_shows_the_digits_that_differ():
    # The demo sweep's lr 0.3: smoothed 6.89226 against 0.9 x 7.65757 = 6.891813 read "6.892 ... = 6.892".
    rule = DivergenceRule(check_after=0.25, explode_factor=1.5, rebound_margin=1.0, stall_fraction=0.9, stall_margin=1.0,
                          min_steps=50)  # fmt: skip
    reason = divergence_reason(
        rule, step=50, max_steps=200, loss=5.371, smoothed_loss=6.89226, initial_loss=7.65757
    )
    assert "smoothed train loss 6.8923 (last logged 5.371)" in reason and reason.endswith("= 6.8918")


def test_rule_catches_nan_explosion_and_rebound():
    assert "non-finite" in _first_reason([9.3, 7.0, float("nan")])[1]
    assert "exploded" in _first_reason([9.3, 8.0, 15.0])[1]
    rebound = [9.3, 6.0, 4.0, 3.0] + [2.4] * 20 + [3.5, 4.5, 5.0, 5.5, 5.5, 5.5, 5.5]
    assert "rebounded" in _first_reason(rebound)[1]
