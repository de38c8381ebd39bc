"""The evidence beside the reconstruction: time-of-week profile branch and data-fault rules."""

from __future__ import annotations

import numpy as np
import pytest

from stream_app.core.evidence import (
    MIN_STUCK_READINGS,
    SLOTS,
    MeterProfile,
    ProfileTable,
    assess,
    hour_of_week,
    profile_span,
)

INTERVAL = 900
MONDAY = 1_704_067_200  # 2024-01-01 00:00 UTC, a Monday


def factory(weeks: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A plant that runs 08-18 on weekdays (about 100 kWh) and idles otherwise (about 5)."""
    rng = np.random.default_rng(seed)
    ts = MONDAY + np.arange(weeks * 7 * 96) * INTERVAL
    hour = (ts // 3600) % 24
    weekday = ((ts - MONDAY) // 86400) % 7 < 5
    base = np.where(weekday & (hour >= 8) & (hour < 18), 100.0, 5.0)
    return base * rng.uniform(0.9, 1.1, len(ts)), ts


@pytest.fixture(scope="module")
def profile() -> MeterProfile:
    values, ts = factory()
    return MeterProfile.fit(values, ts)


def judge(rows: np.ndarray, end_ts: np.ndarray, profile: MeterProfile | None):
    """assess() for rows of one meter, with the profile (or none) a bundle would hold."""
    table = ProfileTable({} if profile is None else {"m": profile})
    return assess(rows, end_ts, INTERVAL, table, ["m"] * len(rows), bundle_limit=4.0)


def rows_at(values: np.ndarray, ts: np.ndarray, ends: list[int], length: int = 96):
    rows = np.stack([values[e - length + 1:e + 1] for e in ends])
    return rows, ts[np.asarray(ends)]


def test_hour_of_week_starts_on_monday_midnight_utc():
    assert hour_of_week(np.array([MONDAY, MONDAY + 3599, MONDAY + 3600, MONDAY - 1])).tolist() \
        == [0, 0, 1, SLOTS - 1]


def test_the_profile_learns_the_week_and_round_trips(profile):
    monday_10 = 10
    sunday_10 = 6 * 24 + 10
    assert 90 < profile.median[monday_10] < 110 and 4 < profile.median[sunday_10] < 6
    assert profile.lower[monday_10] < profile.median[monday_10] < profile.upper[monday_10]
    again = MeterProfile.from_dict(profile.to_dict())
    np.testing.assert_allclose(again.median, profile.median, rtol=1e-6)
    assert again.ratio_limit == pytest.approx(profile.ratio_limit, rel=1e-6)
    bad = profile.to_dict() | {"median": [float("nan")] * SLOTS}
    with pytest.raises(ValueError):
        MeterProfile.from_dict(bad)


def test_normal_rows_raise_no_fault_and_stay_under_the_meters_limit(profile):
    values, ts = factory(weeks=2, seed=7)
    ends = list(range(200, len(values), 37))
    ev = judge(*rows_at(values, ts, ends), profile)
    assert ev.fault == [""] * len(ends)
    assert (ev.profile_score <= max(profile.ratio_limit, 4.0)).mean() > 0.97


def test_a_weekday_that_looks_like_a_sunday_is_far_from_the_profile(profile):
    values, ts = factory(weeks=2, seed=3)
    tuesday = 8 * 96  # the second week's Tuesday (day 8)
    values[tuesday:tuesday + 96] = values[tuesday - 2 * 96:tuesday - 96]  # Sunday's readings
    at_noon = tuesday + 12 * 4
    ev = judge(*rows_at(values, ts, [at_noon]), profile)
    assert ev.profile_score[0] > 2 * max(profile.ratio_limit, 4.0)
    assert ev.expected[0] == pytest.approx(profile.median[hour_of_week(ts[at_noon:at_noon + 1])[0]])


def test_stuck_dropout_and_out_of_range_are_their_own_kinds(profile):
    values, ts = factory(weeks=1, seed=5)
    noon = 2 * 96 + 12 * 4  # Wednesday noon: the plant runs
    stuck = values.copy()
    stuck[noon - 10:noon + 1] = stuck[noon - 10]
    dropout = values.copy()
    dropout[noon] = 0.0
    surge = values.copy()
    surge[noon] = 10 * profile.max_value
    rows = np.stack([r[noon - 95:noon + 1] for r in (stuck, dropout, surge, values)])
    ev = judge(rows, np.full(4, ts[noon]), profile)
    assert ev.fault == ["stuck", "dropout", "out_of_range", ""]
    # each fault reports its measure above the bound it crossed (an alert's z over its limit)
    assert (ev.fault_score[:3] > ev.fault_limit[:3]).all() and ev.fault_score[0] == 11
    assert "11 identical readings" in ev.fault_reason[0]


def test_short_flat_runs_and_zero_at_idle_hours_are_normal():
    values, ts = factory(weeks=2)
    values[(ts // 3600) % 24 < 4] = 0.0  # the plant switches off every night
    profile = MeterProfile.fit(values, ts)
    night = 7 * 96 + 2 * 4
    flat = values.copy()
    flat[night - MIN_STUCK_READINGS:night + 1] = 0.0
    ev = judge(*rows_at(flat, ts, [night]), profile)
    assert ev.fault == [""]  # zero runs at night are the meter's normal, not a stuck value


def test_a_meter_without_profile_gets_no_evidence():
    values, ts = factory(weeks=1)
    ev = judge(*rows_at(values, ts, [500]), None)
    assert np.isnan(ev.profile_score[0]) and ev.fault == [""]


def test_the_span_is_three_hours_of_readings():
    assert profile_span(900) == 12 and profile_span(3600) == 3 and profile_span(86400) == 1
