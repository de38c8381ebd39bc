"""Category Z-score limits: calibration formula and the per-reading decision."""

from __future__ import annotations

import math

import numpy as np
import pytest
from reference import naive

from stream_app.core.errors import ConfigError
from stream_app.core.thresholds import (
    CATEGORIES,
    LIMIT_BOUNDS,
    METAL_LIMITS,
    CategoryLimits,
    calibrate_limits,
)


def test_calibrate_hand_computed():
    # shares 0.75 / 0.25 -> r_bar = 0.75^2 + 0.25^2 = 0.625; gamma 1: base * share / r_bar.
    limits = calibrate_limits(3.0, {"industrial": 3.0, "general": 1.0}, gamma=1.0)
    assert limits == pytest.approx({"industrial": 3.6, "general": 1.2}, rel=1e-12)
    # gamma 0.5: base * sqrt(share / r_bar).
    limits = calibrate_limits(3.0, {"industrial": 0.75, "general": 0.25}, gamma=0.5)
    assert limits == pytest.approx(
        {"industrial": 3.0 * math.sqrt(1.2), "general": 3.0 * math.sqrt(0.4)}, rel=1e-12
    )


def test_calibrate_matches_naive_formula_on_four_categories():
    ratios = {"industrial": 0.7, "general": 0.2, "late_night": 0.08, "agricultural": 0.02}
    got = calibrate_limits(3.0, ratios)  # default gamma 0.1
    assert got == pytest.approx(naive.zscore_limit(3.0, ratios, 0.1, *LIMIT_BOUNDS), rel=1e-12)
    # The dominant category keeps a limit above base, the tiny one gets the lowest limit.
    assert got["industrial"] > 3.0 > got["general"] > got["late_night"] > got["agricultural"]


def test_equal_shares_give_base():
    limits = calibrate_limits(2.5, dict.fromkeys(CATEGORIES, 1.0), gamma=0.7)
    assert limits == pytest.approx(dict.fromkeys(CATEGORIES, 2.5), rel=1e-12)


def test_limits_are_clipped_to_bounds():
    high = calibrate_limits(10.0, {"industrial": 3.0, "general": 1.0}, gamma=1.0)
    assert high == pytest.approx({"industrial": 6.0, "general": 4.0})  # 12 -> upper bound 6
    low = calibrate_limits(2.0, {"industrial": 3.0, "general": 1.0}, gamma=1.0)
    assert low == pytest.approx({"industrial": 2.4, "general": 1.0})  # 0.8 -> lower bound 1
    custom = calibrate_limits(2.0, {"industrial": 3.0, "general": 1.0}, 1.0, bounds=(2.0, 2.2))
    assert custom == pytest.approx({"industrial": 2.2, "general": 2.0})


@pytest.mark.parametrize(
    "ratios", [{}, {"industrial": 0.0}, {"industrial": -0.5, "general": 1.5},
               {"industrial": float("nan")}, {"industrial": float("inf")}],
)
def test_bad_ratios_are_config_errors(ratios):
    with pytest.raises(ConfigError):
        calibrate_limits(3.0, ratios)


def test_decide_hand_computed():
    limits = CategoryLimits(METAL_LIMITS, score_mean=0.5, score_std=0.05)
    scores = np.array([0.66, 0.66, 0.61, 0.59, 0.64])
    categories = ["industrial", "general", "late_night", "agricultural", "general"]
    z, lim, flags = limits.decide(scores, categories)
    np.testing.assert_allclose(z, [3.2, 3.2, 2.2, 1.8, 2.8], rtol=1e-12)
    np.testing.assert_array_equal(lim, [3.0, 3.1, 2.3, 1.7, 3.1])
    np.testing.assert_array_equal(flags, [True, True, False, True, False])


def test_metal_limits_are_the_study_values():
    assert dict(METAL_LIMITS) == {
        "industrial": 3.0, "general": 3.1, "late_night": 2.3, "agricultural": 1.7}
    assert set(METAL_LIMITS) == set(CATEGORIES)


def test_unknown_category_is_a_config_error():
    limits = CategoryLimits(METAL_LIMITS, score_mean=0.5, score_std=0.05)
    with pytest.raises(ConfigError, match="residential"):
        limits.decide(np.array([0.6]), ["residential"])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limits": {}, "score_mean": 0.5, "score_std": 0.1},
        {"limits": {"industrial": -1.0}, "score_mean": 0.5, "score_std": 0.1},
        {"limits": {"industrial": float("nan")}, "score_mean": 0.5, "score_std": 0.1},
        {"limits": {"industrial": 3.0}, "score_mean": 0.5, "score_std": 0.0},
    ],
)
def test_invalid_limits_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        CategoryLimits(**kwargs)


def test_category_stats_give_each_category_its_own_normal():
    from stream_app.core.thresholds import CategoryLimits

    limits = CategoryLimits({"industrial": 3.0, "agricultural": 1.7}, 0.5, 0.1,
                            {"agricultural": (0.7, 0.05)})
    z, lim, flags = limits.decide(np.array([0.79, 0.8]), ["industrial", "agricultural"])
    np.testing.assert_allclose(z, [2.9, 2.0])  # (0.79-0.5)/0.1 and (0.8-0.7)/0.05
    np.testing.assert_array_equal(lim, [3.0, 1.7])
    np.testing.assert_array_equal(flags, [False, True])
    np.testing.assert_allclose(limits.zscores(np.array([0.8])), [3.0])  # no category: pooled
