"""The across-sizes fits against known curves: rows generated from power laws with noise give back the crossover
(computed here on a fine grid, independently of the code) within its interval; curves that never meet say so;
three sizes take the log-linear form and recover its coefficients exactly."""

import numpy as np
import pytest

from suite.scaling import LOGLINEAR, POWER, analyse, describe, fit_curve

SIZES = {"a": 1e5, "b": 3e5, "c": 1e6, "d": 3e6, "e": 1e7}


def ntp_loss(n):
    return 2.0 + 5.0 * (n / 1e5) ** -0.3


def mtp_loss(n):  # worse at the smallest size, better at large ones (lower is better)
    return 1.6 + 8.0 * (n / 1e5) ** -0.35


def seeded(curve, seeds=5, noise=0.01, rng=None):
    rng = rng or np.random.default_rng(0)
    return {size: {seed: float(curve(n) + rng.normal(0, noise)) for seed in range(seeds)}
            for size, n in SIZES.items()}


def test_a_crossing_of_two_power_laws_is_found_within_its_interval():
    grid = np.geomspace(1e5, 1e9, 2_000_000)  # the truth, by brute force
    truth = grid[np.argmax(mtp_loss(grid) < ntp_loss(grid))]
    rng = np.random.default_rng(1)
    result = analyse(SIZES, seeded(ntp_loss, rng=rng), seeded(mtp_loss, rng=rng), higher_is_better=False,
                     resamples=199)
    assert result["form"] == POWER and result["better_beyond"] is True
    low, high = result["interval"]
    assert low <= truth <= high
    assert abs(np.log10(result["crossover"]) - np.log10(truth)) < 0.15
    assert result["reference_fit"].exponent == pytest.approx(0.3, abs=0.05)
    assert "crosses NTP at N = " in describe(result, "N") and "better than NTP beyond" in describe(result, "N")


def test_curves_that_never_meet_say_so():
    worse = lambda n: ntp_loss(n) + 0.5  # noqa: E731
    result = analyse(SIZES, seeded(ntp_loss), seeded(worse, rng=np.random.default_rng(3)), higher_is_better=False,
                     resamples=99)
    assert result["crossover"] is None
    assert describe(result, "N").startswith("does not cross NTP up to 1000x the largest size measured")
    assert all(d > 0.4 for d in result["difference"])  # worse everywhere it was drawn


def test_three_sizes_take_the_log_linear_form_exactly():
    x = np.array([1e5, 1e6, 1e7])
    fit = fit_curve(x, 0.3 + 0.1 * np.log10(x / 1e5))
    assert fit.form == LOGLINEAR and fit.params == pytest.approx((0.3, 0.1), abs=1e-12)


def test_a_crossing_far_past_the_sizes_is_flagged_as_an_extrapolation():
    three = {"a": 1e5, "b": 1e6, "c": 1e7}
    ntp = {s: {k: 0.50 + 0.10 * np.log10(n / 1e5) + 0.001 * k for k in range(3)} for s, n in three.items()}
    mtp = {s: {k: 0.30 + 0.12 * np.log10(n / 1e5) + 0.001 * k for k in range(3)} for s, n in three.items()}
    result = analyse(three, ntp, mtp, higher_is_better=True, resamples=99)  # equal at 10 decades: 1e15 > 1e10
    assert result["crossover"] is None  # beyond the 1000x searched
    mtp = {s: {k: 0.45 + 0.12 * np.log10(n / 1e5) + 0.001 * k for k in range(3)} for s, n in three.items()}
    result = analyse(three, ntp, mtp, higher_is_better=True, resamples=99)  # equal at 2.5 decades: 3.2e7
    assert result["crossover"] == pytest.approx(10 ** 7.5, rel=1e-6)
    assert result["extrapolated"] and not result["beyond_limit"] and result["better_beyond"]
    mtp = {s: {k: 0.42 + 0.12 * np.log10(n / 1e5) + 0.001 * k for k in range(3)} for s, n in three.items()}
    result = analyse(three, ntp, mtp, higher_is_better=True, resamples=99)  # equal at 4 decades: 1e9, 100x
    assert result["beyond_limit"] and "not supported by the data" in describe(result, "N")


def test_too_few_sizes_are_not_fitted():
    two = {"a": 1e5, "b": 1e6}
    result = analyse(two, {"a": {0: 1.0}, "b": {0: 0.9}}, {"a": {0: 1.1}, "b": {0: 0.8}}, higher_is_better=False)
    assert result["fitted"] is False and describe(result, "N").startswith("not fitted: 2 sizes")
