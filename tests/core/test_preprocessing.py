"""Differencing, FFT window selection, sliding windows and the normaliser."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from stream_app.core.errors import ConfigError, InputError
from stream_app.core.preprocessing import Normaliser, difference, dominant_periods, sliding_windows

DAY_S = 86_400
SHARED_DATA = Path(
    os.environ.get("MW_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
)
STEEL_CSV = SHARED_DATA / "steel_industry_energy" / "Steel_industry_data.csv"


def _sines(periods, interval_s, days=20, noise=0.1, seed=0, amplitudes=None):
    """Sum of sines with the given periods (in samples), decreasing amplitudes, random phases."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * DAY_S // interval_s)
    amplitudes = amplitudes or [2.0 - 0.4 * k for k in range(len(periods))]
    x = sum(
        a * np.sin(2 * np.pi * t / p + rng.uniform(0, 2 * np.pi))
        for a, p in zip(amplitudes, periods, strict=True)
    )
    return 50.0 + x + noise * rng.normal(size=len(t))


# ---- difference -----------------------------------------------------------------------------


def test_difference_is_first_order():
    out = difference([1, 4, 4, 2.5])
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [3.0, 0.0, -1.5])


@pytest.mark.parametrize("bad", [[1.0, np.nan, 2.0], [np.inf, 1.0], [[1.0, 2.0], [3.0, 4.0]]])
def test_difference_rejects_non_finite_and_2d(bad):
    with pytest.raises(InputError):
        difference(np.array(bad))


# ---- dominant_periods -----------------------------------------------------------------------


def test_steel_plant_series_gives_the_study_windows():
    if not STEEL_CSV.exists():
        pytest.skip(f"steel data not found under {SHARED_DATA} (set MW_SHARED_DATA)")
    # File order is time order (each day's 00:00 row closes that day), so the column is enough.
    with STEEL_CSV.open(encoding="utf-8-sig", newline="") as f:
        usage = np.array([float(row["Usage_kWh"]) for row in csv.DictReader(f)])
    assert len(usage) == 35_040
    assert dominant_periods(usage, interval_s=900) == (96, 24, 16)


@pytest.mark.parametrize(
    "periods, interval_s",
    [
        ((288, 72), 300),  # 5-minute data: the day and six hours
        ((288,), 300),
        ((24, 8), 3600),  # hourly data: the day and eight hours
        ((24, 12, 6), 3600),
        ((96, 32), 900),
    ],
)
def test_sine_mixtures_give_their_periods(periods, interval_s):
    x = _sines(periods, interval_s)
    assert dominant_periods(x, interval_s=interval_s, min_period=4) == periods


def test_sine_mixture_without_interval():
    assert dominant_periods(_sines((288, 72), 300)) == (288, 72)


def test_off_divisor_peak_snaps_to_a_divisor_of_the_cycle():
    # 100 samples is no divisor of 288: the window becomes 96, which tiles the day.
    x = _sines((288, 100), 300, amplitudes=[3.0, 0.3])
    assert dominant_periods(x, interval_s=300) == (288, 96)


def test_max_periods_keeps_the_strongest():
    x = _sines((24, 12, 6), 3600)  # amplitudes 2.0, 1.6, 1.2
    # Ranked by power of the DIFFERENCED series, which scales a sine's power by
    # 4 sin^2(pi / period): 1.2^2 * 1.0 for period 6 beats 1.6^2 * 0.27 for period 12.
    assert dominant_periods(x, interval_s=3600, min_period=4, max_periods=2) == (24, 6)
    assert dominant_periods(x, interval_s=3600, min_period=4, max_periods=1) == (24,)


@pytest.mark.parametrize("interval_s, day", [(300, 288), (900, 96), (3600, 24), (None, 24)])
def test_white_noise_falls_back_to_one_day(interval_s, day):
    noise = np.random.default_rng(5).normal(size=4000)
    assert dominant_periods(noise, interval_s=interval_s) == (day,)


def test_constant_and_random_walk_fall_back():
    assert dominant_periods(np.full(3000, 7.0), interval_s=900) == (96,)
    walk = np.cumsum(np.random.default_rng(2).normal(size=3000))
    assert dominant_periods(walk) == (24,)
    # Without an interval and with a short series the fallback is n // 8.
    assert dominant_periods(np.full(101, 1.0)) == (12,)


def test_too_short_series_and_bad_options():
    with pytest.raises(InputError, match="at least"):
        dominant_periods(np.arange(20.0))
    with pytest.raises(ConfigError):
        dominant_periods(np.arange(200.0), max_periods=0)


# ---- sliding_windows ------------------------------------------------------------------------


def _naive_windows(series, size, hop):
    starts = range(len(series) - size, -1, -hop)
    return np.array([series[s : s + size] for s in sorted(starts)])


@pytest.mark.parametrize("n, size, hop", [(10, 3, 1), (10, 3, 4), (10, 10, 1), (17, 4, 3)])
def test_windows_are_end_aligned(n, size, hop):
    x = np.arange(n, dtype=np.float64)
    w = sliding_windows(x, size, hop)
    np.testing.assert_array_equal(w, _naive_windows(x, size, hop))
    assert w[-1, -1] == x[-1]
    assert w.flags.c_contiguous
    w[0, 0] = -1.0  # a copy, not a view of the series
    assert x[0] == 0.0


def test_windows_errors():
    with pytest.raises(InputError):
        sliding_windows(np.arange(3.0), 4)
    with pytest.raises(ConfigError):
        sliding_windows(np.arange(8.0), 4, hop=0)
    with pytest.raises(InputError):
        sliding_windows(np.zeros((2, 8)), 4)


# ---- Normaliser -----------------------------------------------------------------------------


def test_normaliser_fit_apply_invert():
    d = np.array([1.0, 2.0, 3.0, np.nan, 6.0])
    norm = Normaliser.fit(d)
    assert norm.mean == pytest.approx(3.0)
    assert norm.std == pytest.approx(np.sqrt(3.5))
    z = norm.apply([3.0, 3.0 + np.sqrt(3.5)])
    assert z.dtype == np.float32
    np.testing.assert_allclose(z, [0.0, 1.0], atol=1e-6)
    back = norm.invert(np.array([0.0, 1.0]))
    assert back.dtype == np.float64
    np.testing.assert_allclose(back, [3.0, 3.0 + np.sqrt(3.5)])


def test_flat_meter_does_not_divide_by_zero():
    norm = Normaliser.fit(np.full(50, 2.0))
    assert norm.std == pytest.approx(2e-3)  # STD_FLOOR x mean |d|
    assert Normaliser.fit(np.zeros(50)).std > 0
    assert np.isfinite(norm.apply(np.full(3, 2.0))).all()


def test_normaliser_dict_round_trip_and_strict_keys():
    norm = Normaliser(1.5, 0.25)
    assert Normaliser.from_dict(norm.to_dict()) == norm
    with pytest.raises(ConfigError):
        Normaliser.from_dict({"mean": 1.0, "std": 1.0, "scale": 2.0})
    with pytest.raises(ConfigError):
        Normaliser.from_dict({"mean": 1.0})
    with pytest.raises(ConfigError):
        Normaliser(0.0, 0.0)
    with pytest.raises(InputError):
        Normaliser.fit(np.array([np.nan, np.inf]))
