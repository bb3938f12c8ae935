"""The fitted optimum, its bootstrap interval, LR sensitivity and the seed-noise comparison, on known cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cs336_basics.assignment_experiments.lr_sweep.optimum import beats_neighbours, fit_optimum, lr_sensitivity

GRID = [-3.0, -2.5, -2.0, -1.5, -1.0]  # log10(lr)


def bowl(u, u0=-2.3, curvature=0.5):
    return 1.0 + curvature * (np.asarray(u) - u0) ** 2


def test_parabola_vertex_recovered_exactly():
    fit = fit_optimum([10**u for u in GRID], bowl(GRID).tolist(), [0.0] * 5)
    assert fit.fit == "quadratic" and not fit.on_edge
    assert math.log10(fit.lr) == pytest.approx(-2.3, abs=1e-9)
    assert fit.loss == pytest.approx(1.0)
    assert fit.fit_lrs == pytest.approx([1e-3, 10**-2.5, 1e-2])  # the best point (10^-2.5) and its neighbours
    assert fit.low == pytest.approx(fit.lr) and fit.high == pytest.approx(fit.lr)  # no noise, no width


def test_interval_covers_truth_about_68_percent_of_the_time():
    rng = np.random.default_rng(0)
    sigma, hits, trials = 0.02, 0, 300
    for t in range(trials):
        losses = bowl(GRID) + sigma * rng.standard_normal(len(GRID))
        fit = fit_optimum([10**u for u in GRID], losses.tolist(), [sigma] * 5, n_boot=400, seed=t)
        hits += fit.low <= 10**-2.3 <= fit.high
    assert 0.58 <= hits / trials <= 0.80  # binomial sd at 0.68 is 0.027


def test_noise_from_seeds_when_several():
    rng = np.random.default_rng(1)
    lrs = [10**u for u in GRID for _ in range(3)]
    losses = [bowl(math.log10(lr)) + 0.02 * rng.standard_normal() for lr in lrs]
    fit = fit_optimum(lrs, losses, sigmas=[1e-9] * len(lrs))  # the tiny caller sigma is ignored
    assert fit.noise == "std of seeds"
    assert fit.high / fit.low > 1.001  # the seed spread gives the interval a width
    assert fit.low <= 10**-2.3 * 10**0.2 and fit.high >= 10**-2.3 / 10**0.2


def test_edge_warning_and_diverged_points():
    # Loss still falling at the largest converged lr; the next one diverged: the optimum is at the edge.
    lrs = [1e-3, 3e-3, 1e-2, 3e-2]
    fit = fit_optimum(lrs, [3.0, 2.5, 2.2, None], [0.01] * 4)
    assert fit.on_edge and fit.lr == pytest.approx(1e-2)  # clamped to the last fitted point
    assert fit.fit_lrs == pytest.approx([1e-3, 3e-3, 1e-2])
    interior = fit_optimum(lrs, [3.0, 2.0, 2.2, None], [0.01] * 4)
    assert not interior.on_edge and 3e-3 < interior.lr < 1e-2 and interior.fit == "quadratic"
    two = fit_optimum([1e-3, 1e-2, 1e-1], [2.0, 1.9, float("nan")], [0.01] * 3)
    assert two.fit == "best point" and two.on_edge and two.lr == 1e-2
    assert fit_optimum([1e-2], [None], [0.1]) is None


def test_lr_sensitivity_by_hand():
    # l0 = 5: values min(l, l0) -> [2.0, 1.5, 5 (diverged), 5 (9 capped)]; l* = 1.5 -> mean of [0.5, 0, 3.5, 3.5]
    assert lr_sensitivity([1e-3, 1e-2, 1e-1, 1.0], [2.0, 1.5, None, 9.0], 5.0) == pytest.approx(1.875)
    # seeds of one lr are averaged first: lr 1e-2 -> (1.4 + 1.6) / 2
    assert lr_sensitivity([1e-3, 1e-2, 1e-2], [2.0, 1.4, 1.6], 5.0) == pytest.approx(0.25)
    assert lr_sensitivity([1e-2], [None], 5.0) is None


def test_beats_neighbours_by_more_than_the_noise():
    lrs = [1e-3] * 2 + [3e-3] * 2 + [1e-2] * 2 + [3e-2] * 2
    # 3e-2 diverged at one seed: not converged, so not the best despite its 1.4.
    losses = [2.0, 2.1, 1.50, 1.52, 1.52, 1.56, None, 1.4]
    below, above = beats_neighbours(lrs, losses)
    assert below.lr == 1e-3 and below.beats and below.margin == pytest.approx(2.05 - 1.51)
    # 1.51 +- 0.014 vs 1.54 +- 0.028: margin 0.03 < noise 0.042
    assert above.lr == 1e-2 and above.beats is False
    assert above.margin == pytest.approx(0.03) and above.noise == pytest.approx(
        0.02 * 2**-0.5 + 0.04 * 2**-0.5
    )
    single = beats_neighbours([1e-3, 3e-3, 1e-2], [2.0, 1.5, None])
    assert single[0].beats is None and single[1].beats is True and single[1].margin == math.inf


def test_unknown_noise_gives_no_interval():
    # One seed per lr and no sigma: the vertex is still exact, but there is no noise to bootstrap.
    fit = fit_optimum([10**u for u in GRID], bowl(GRID).tolist(), [None] * 5)
    assert fit.noise == "unknown" and math.isnan(fit.low) and math.isnan(fit.high)
    assert math.log10(fit.lr) == pytest.approx(-2.3, abs=1e-9)
    assert fit.fit_text == "fit: quadratic in log10 lr through 0.001, 0.00316, 0.01"
    two = fit_optimum([1e-3, 1e-2], [2.0, 1.9])  # no sigmas at all, too few points for a parabola
    assert two.fit_text == "fit: best point (fewer than 3 converged lrs: no parabola)" and math.isnan(two.low)
