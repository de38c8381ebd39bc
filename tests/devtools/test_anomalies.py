"""Anomaly injection: each kind stays inside its event, labels exactly it, and is seeded."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
from factories import daily_series, steel_csv

from stream_app.core.errors import InputError
from stream_app.core.series import MeterSeries
from stream_app.devtools.anomalies import (
    ANOMALY_KINDS,
    FLOOR_SHARE,
    INJECTABLE_KINDS,
    inject,
    inject_one,
    injection_unit,
    reading_units,
    with_slow_drift,
)
from stream_app.io.series_io import read_meter_csv

START = 1736121600  # 2025-01-06T00:00:00+00:00, a Monday (as in factories)
PER_DAY = 96


def steel_like(weeks: int = 8, seed: int = 0) -> MeterSeries:
    """Like the steel plant: idle ~3 kWh at night and at weekends, 40-90 kWh in the weekday
    shifts (06:00-22:00), so the median reading is idle and the spread is bimodal."""
    rng = np.random.default_rng(seed)
    n = weeks * 7 * PER_DAY
    ts = START + 900 * np.arange(n)
    hour = (ts % 86400) / 3600
    weekday = (ts // 86400 + 3) % 7
    busy = (weekday < 5) & (hour >= 6) & (hour < 22)
    values = np.where(busy, rng.uniform(40, 90, n), 3.0) * rng.lognormal(0.0, 0.1, n)
    return MeterSeries("plant", "industrial", ts, values, 900, None, [])


@pytest.mark.parametrize("kind", ANOMALY_KINDS)
def test_each_kind_changes_only_its_event_and_labels_it(kind):
    series = daily_series(days=10)
    before = series.values.copy()
    start, length = 96 * 5 + 7, 40
    out, event = inject_one(series, kind, start, length, np.random.default_rng(3))
    inside = np.zeros(len(series), bool)
    inside[start:start + length] = True
    np.testing.assert_array_equal(series.values, before)  # the input is untouched
    assert series.labels is None
    np.testing.assert_array_equal(out.values[~inside], before[~inside])
    assert np.any(out.values[inside] != before[inside])
    np.testing.assert_array_equal(out.labels, inside.astype(np.int8))
    assert (event.kind, event.start, event.end, event.meter_id) == (kind, start, start + 40, "m1")
    assert event.start_ts == series.timestamps[start]
    assert event.end_ts == series.timestamps[start + length - 1] + 900
    assert out.values.min() >= 0.0
    if kind != "dropout":
        assert np.all(out.values > 0.0)  # daily_series is positive: no reading becomes a zero


def test_dropout_is_zero_and_stuck_is_constant():
    series = daily_series(days=3)
    rng = np.random.default_rng(0)
    dropped, _ = inject_one(series, "dropout", 100, 12, rng)
    assert np.all(dropped.values[100:112] == 0.0)
    stuck, _ = inject_one(series, "stuck", 100, 12, rng)
    assert np.all(stuck.values[100:112] == series.values[99])


def test_spike_size_is_relative_to_the_injection_unit():
    series = daily_series(days=3)
    unit = injection_unit(series, 50, 3)
    out, _ = inject_one(series, "spike", 50, 3, np.random.default_rng(1))
    rise = out.values[50:53] - series.values[50:53]
    assert np.all(rise >= 3.0 * unit) and np.all(rise <= 6.0 * unit)
    big, _ = inject_one(series, "spike", 50, 3, np.random.default_rng(1), magnitude=2.0)
    np.testing.assert_allclose(big.values[50:53] - series.values[50:53], 2 * rise)


def _with(values, interval_s=900) -> MeterSeries:
    values = np.asarray(values, dtype=float)
    return MeterSeries("m", "general", START + interval_s * np.arange(len(values)), values,
                       interval_s, None, [])


def _local_spread(series: MeterSeries, i: int) -> tuple[float, float]:
    """(1.4826 * MAD, median) of the readings at the time of day of reading i."""
    same = series.values[series.timestamps % 86400 == series.timestamps[i] % 86400]
    median = float(np.median(same))
    return 1.4826 * float(np.median(np.abs(same - median))), median


def test_injection_unit_is_the_spread_of_the_slots_the_event_covers():
    rng = np.random.default_rng(0)
    day = 50 + 30 * np.sin(2 * np.pi * np.arange(PER_DAY) / PER_DAY)
    # noise of std 4 around a daily cycle: the unit is that spread, not the cycle's range
    noisy = _with(np.tile(day, 30) + rng.normal(0, 4, 30 * PER_DAY))
    assert injection_unit(noisy) == pytest.approx(4.0, rel=0.1)
    assert injection_unit(noisy, 10, 4) == pytest.approx(4.0, rel=0.2)
    # the same cycle with a tiny spread: 5 % of the slot's median, at least 5 % of the level
    tiny = _with(np.tile(day, 30) + rng.normal(0, 0.01, 30 * PER_DAY))
    for k in (0, 24, 72):
        assert injection_unit(tiny, 5 * PER_DAY + k, 1) == pytest.approx(
            0.05 * max(day[k], 50.0), rel=0.01)
    assert injection_unit(_with(np.full(500, 4.0))) == pytest.approx(0.2)  # flat: 5 % of 4
    # readings all over the place: their spread, with no cap relative to the median reading
    wild = _with(rng.uniform(1, 100, 30 * PER_DAY))
    assert injection_unit(wild) > 0.5 * np.median(wild.values)
    assert injection_unit(wild) == pytest.approx(1.4826 * 99 / 4, rel=0.15)
    assert injection_unit(_with(np.zeros(10))) == 1.0
    # a meter idle at 0 most of the time: 5 % of the median positive reading where idle
    pump = np.zeros(30 * PER_DAY)
    pump[::4] = rng.uniform(9, 11, len(pump[::4]))
    units = reading_units(_with(pump))
    assert units[1] == pytest.approx(0.05 * np.median(pump[pump > 0]))
    assert 0.05 * 9 <= units[0] <= 1.5  # its running slots: the spread of 9-11 kWh


def test_a_production_hour_spike_stands_out_from_its_slot_and_a_night_one_is_small():
    series = steel_like()
    slot = (series.timestamps % 86400) // 900
    former_unit = 0.5 * np.median(series.values)  # what the one-unit-per-meter rule gave here
    # a typical Wednesday 14:00 reading: the one at or above the slot's median, closest to it
    spread, median = _local_spread(series, 2 * PER_DAY + 56)
    same = np.flatnonzero((slot == 56) & (series.values >= median))
    start = int(same[np.argmin(series.values[same] - median)])
    assert spread > 5 * former_unit  # production hours vary far more than the old unit
    for seed in range(5):
        out, _ = inject_one(series, "spike", start, 1, np.random.default_rng(seed))
        assert out.values[start] - median >= 3 * spread
    # placed by inject: every spike rises by 3-6 of the local spreads of the slots it covers
    out, events = inject(series, count=20, kinds=("spike",), seed=3, min_gap=8)
    busy = 0
    for e in events:
        local = np.mean([max(_local_spread(series, i)[0], 0.05 * _local_spread(series, i)[1],
                             0.05 * np.median(series.values)) for i in range(e.start, e.end)])
        rise = out.values[e.start:e.end] - series.values[e.start:e.end]
        assert np.all(rise >= 3 * local * (1 - 1e-9)) and np.all(rise <= 6 * local * (1 + 1e-9))
        busy += bool(np.all((slot[e.start:e.end] >= 28) & (slot[e.start:e.end] < 84)))
    assert busy >= 5
    # a spike at 03:00 is sized by the night's spread (~0.3 kWh), not the production hours'
    night = 7 * PER_DAY + 12
    out, _ = inject_one(series, "spike", night, 1, np.random.default_rng(0))
    assert out.values[night] - series.values[night] <= 6 * max(
        _local_spread(series, night)[0], 0.05 * np.median(series.values))
    assert out.values[night] - series.values[night] < spread


def test_steel_like_series_gets_no_exact_zero_except_in_dropouts():
    series = steel_like()
    assert np.median(series.values) < 0.2 * series.values.max()  # bimodal like the plant
    seen: set[str] = set()
    for seed, magnitude in itertools.product((1, 2, 3), (1.0, 3.0)):
        out, events = inject(series, count=10, kinds=INJECTABLE_KINDS, seed=seed,
                             magnitude=magnitude)
        dropout, additive = np.zeros(len(series), bool), np.zeros(len(series), bool)
        for e in events:
            dropout[e.start:e.end] = e.kind == "dropout"
            additive[e.start:e.end] = e.kind in ("spike", "dip", "level_shift", "noise_burst",
                                                 "drift")
        seen |= {e.kind for e in events}
        assert np.all(out.values[dropout] == 0.0)
        assert np.all(out.values[~dropout] > 0.0), (seed, magnitude)
        # the floor: an added-to or scaled reading keeps at least 5 % of its value (stuck,
        # time_shift and the swap show real readings of another time, which may be lower)
        floor = FLOOR_SHARE * series.values[additive]
        assert np.all(out.values[additive] >= floor * (1 - 1e-12))
    assert seen == set(INJECTABLE_KINDS)


def test_a_deep_dip_or_negative_shift_stops_at_the_floor_not_at_zero():
    series = steel_like(weeks=2)
    start = 7 * PER_DAY + 5 * PER_DAY  # a Saturday: idle ~3 kWh
    out, _ = inject_one(series, "dip", start, 4, np.random.default_rng(0), magnitude=5.0)
    np.testing.assert_allclose(out.values[start:start + 4],
                               FLOOR_SHARE * series.values[start:start + 4])
    rng = np.random.default_rng(0)
    out, _ = inject_one(series, "level_shift", start, PER_DAY, rng, magnitude=10.0)
    changed = out.values[start:start + PER_DAY]
    assert np.all(changed > 0.0) and not np.allclose(changed, series.values[start:start + PER_DAY])


def test_weekday_as_sunday_copies_the_preceding_sunday():
    series = steel_like(weeks=3)
    wednesday = 2 * 7 * PER_DAY + 2 * PER_DAY  # third week, Wednesday 00:00
    sunday = wednesday - 3 * PER_DAY
    assert (series.timestamps[sunday] // 86400 + 3) % 7 == 6
    out, event = inject_one(series, "weekday_as_sunday", wednesday, PER_DAY,
                            np.random.default_rng(0))
    np.testing.assert_array_equal(out.values[wednesday:wednesday + PER_DAY],
                                  series.values[sunday:sunday + PER_DAY])
    assert series.values[wednesday:wednesday + PER_DAY].max() > 40  # a working day before
    assert (event.kind, event.end - event.start) == ("weekday_as_sunday", PER_DAY)
    np.testing.assert_array_equal(out.values[:wednesday], series.values[:wednesday])
    np.testing.assert_array_equal(out.values[wednesday + PER_DAY:],
                                  series.values[wednesday + PER_DAY:])
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="one weekday"):  # a Sunday is not a weekday
        inject_one(series, "weekday_as_sunday", sunday, PER_DAY, rng)
    with pytest.raises(InputError, match="one weekday"):  # Wednesday into Thursday
        inject_one(series, "weekday_as_sunday", wednesday + 10, PER_DAY, rng)
    with pytest.raises(InputError, match="preceding Sunday"):  # the first Monday has none
        inject_one(series, "weekday_as_sunday", 0, PER_DAY, rng)


def test_inject_places_swaps_on_whole_weekdays_with_their_sunday():
    series = steel_like(weeks=10)
    out, events = inject(series, count=6, kinds=("weekday_as_sunday",), seed=4)
    assert len(events) == 6
    for e in events:
        ts = series.timestamps[e.start]
        weekday = (ts // 86400 + 3) % 7
        assert ts % 86400 == 0 and weekday <= 4 and e.end - e.start == PER_DAY
        src = e.start - (weekday + 1) * PER_DAY
        np.testing.assert_array_equal(out.values[e.start:e.end], series.values[src:src + PER_DAY])
    assert out.labels.sum() == 6 * PER_DAY
    with pytest.raises(InputError, match="cannot place"):  # 2 weeks hold only 5 such weekdays
        inject(steel_like(weeks=2), count=6, kinds=("weekday_as_sunday",), seed=1, warmup=0,
               min_gap=0)


def test_the_default_rotation_is_unchanged():
    assert ANOMALY_KINDS == ("spike", "dip", "level_shift", "stuck", "dropout", "time_shift",
                             "noise_burst", "drift")
    assert INJECTABLE_KINDS == ANOMALY_KINDS + ("weekday_as_sunday",)
    _, events = inject(steel_like(weeks=52), count=40, seed=1)
    assert {e.kind for e in events} <= set(ANOMALY_KINDS)


def test_slow_drift_reaches_plus_30_percent_and_labels_nothing():
    series = daily_series(days=60, labels=True)
    before = series.values.copy()
    start = 14 * PER_DAY
    drifted = with_slow_drift(series, start=start)
    np.testing.assert_array_equal(series.values, before)  # the input is untouched
    ratio = drifted.values / series.values
    np.testing.assert_array_equal(ratio[:start], 1.0)
    assert ratio[-1] == pytest.approx(1.30)
    assert np.all(np.diff(ratio[start:]) > 0)  # rises steadily
    assert ratio[(start + len(series)) // 2] == pytest.approx(1.15, abs=1e-3)
    np.testing.assert_array_equal(drifted.labels, series.labels)  # normal change, not an event
    assert drifted.labels is not series.labels
    whole = with_slow_drift(series, share=0.3)
    assert whole.values[0] == series.values[0] and whole.values[-1] == pytest.approx(
        1.3 * series.values[-1])
    for bad in ({"share": -1.0}, {"share": float("nan")}, {"start": len(series)}):
        with pytest.raises(InputError):
            with_slow_drift(series, **bad)


def test_inject_places_separated_events_after_warmup_deterministically():
    series = daily_series(days=60, labels=True)
    a, events = inject(series, count=12, seed=7)
    b, again = inject(series, count=12, seed=7)
    _c, other = inject(series, count=12, seed=8)
    assert events == again and np.array_equal(a.values, b.values)
    assert events != other
    assert series.labels.sum() == 0  # the input is untouched
    assert len(events) == 12
    starts = [e.start for e in events]
    assert starts == sorted(starts) and starts[0] >= 96 * 7
    for prev, nxt in itertools.pairwise(events):
        assert nxt.start - prev.end >= 96 * 2
    expected = np.zeros(len(series), np.int8)
    for e in events:
        expected[e.start:e.end] = 1
    np.testing.assert_array_equal(a.labels, expected)
    changed = a.values != series.values
    assert not np.any(changed & (expected == 0))
    assert a.values.min() >= 0.0


def test_inject_respects_kinds_and_refuses_impossible_counts():
    series = daily_series(days=30)
    _, events = inject(series, count=5, kinds=("spike", "dropout"), seed=1)
    assert {e.kind for e in events} <= {"spike", "dropout"}
    with pytest.raises(InputError, match="cannot place 40 anomalies"):
        inject(series, count=40, kinds=("level_shift",), seed=1)
    with pytest.raises(InputError, match="anomaly kinds must be among"):
        inject(series, count=1, kinds=("meteor",), seed=1)
    with pytest.raises(InputError, match="unknown anomaly kind"):
        inject_one(series, "meteor", 0, 1, np.random.default_rng(0))


def test_inject_on_real_steel_slice():
    [steel] = read_meter_csv(steel_csv())
    week = 96 * 7
    part = replace(steel, timestamps=steel.timestamps[:6 * week],
                   values=steel.values[:6 * week].copy())
    out, events = inject(part, count=len(ANOMALY_KINDS), kinds=ANOMALY_KINDS, seed=2)
    assert len(events) == 8 and out.labels.sum() == sum(e.end - e.start for e in events)
    assert out.values.min() >= 0.0
    assert not np.any((out.values != part.values) & (out.labels == 0))
    new_zeros = (out.values == 0.0) & (part.values != 0.0)
    for e in events:
        if e.kind == "dropout":
            assert np.all(out.values[e.start:e.end] == 0.0)
        else:
            assert not new_zeros[e.start:e.end].any(), e.kind
    # the plant's units: the spread of each time of day, 0.37 kWh at 04:15 (idle) to 52.7 kWh at
    # 19:45 (production); the former one unit per meter was 2.29 kWh everywhere
    slot = (steel.timestamps % 86400) // 900
    assert injection_unit(steel, int(np.argmax(slot == 17)), 1) == pytest.approx(0.37, abs=0.01)
    assert injection_unit(steel, int(np.argmax(slot == 79)), 1) == pytest.approx(52.7, abs=0.1)
