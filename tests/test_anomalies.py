"""Anomaly injection: each kind stays inside its event, labels exactly it, and is seeded."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
from factories import daily_series, steel_csv

from stream_app.anomalies import ANOMALY_KINDS, inject, inject_one, robust_scale
from stream_app.errors import InputError
from stream_app.series_io import read_meter_csv


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


def test_dropout_is_zero_and_stuck_is_constant():
    series = daily_series(days=3)
    rng = np.random.default_rng(0)
    dropped, _ = inject_one(series, "dropout", 100, 12, rng)
    assert np.all(dropped.values[100:112] == 0.0)
    stuck, _ = inject_one(series, "stuck", 100, 12, rng)
    assert np.all(stuck.values[100:112] == series.values[99])


def test_spike_size_is_relative_to_the_robust_scale():
    series = daily_series(days=3)
    scale = robust_scale(series.values)
    out, _ = inject_one(series, "spike", 50, 3, np.random.default_rng(1))
    rise = out.values[50:53] - series.values[50:53]
    assert np.all(rise >= 3.0 * scale) and np.all(rise <= 6.0 * scale)
    big, _ = inject_one(series, "spike", 50, 3, np.random.default_rng(1), magnitude=2.0)
    np.testing.assert_allclose(big.values[50:53] - series.values[50:53], 2 * rise)


def test_robust_scale_fallbacks():
    assert robust_scale(np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(1.5 / 1.349)
    assert robust_scale(np.full(10, 4.0)) == 4.0  # flat: the mean
    assert robust_scale(np.zeros(10)) == 1.0


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


def test_inject_on_real_steel_slice():
    [steel] = read_meter_csv(steel_csv())
    week = 96 * 7
    part = replace(steel, timestamps=steel.timestamps[:6 * week],
                   values=steel.values[:6 * week].copy())
    out, events = inject(part, count=len(ANOMALY_KINDS), kinds=ANOMALY_KINDS, seed=2)
    assert len(events) == 8 and out.labels.sum() == sum(e.end - e.start for e in events)
    assert out.values.min() >= 0.0
    assert not np.any((out.values != part.values) & (out.labels == 0))
    for e in events:
        if e.kind == "dropout":
            assert np.all(out.values[e.start:e.end] == 0.0)
