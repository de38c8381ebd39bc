"""MeterHistory: the per-meter rules shared by `score` and the worker."""

import numpy as np
import pytest

from stream_app.core.meter_window import MeterHistory
from stream_app.core.preprocessing import Normaliser

IV = 900


def history(**kw) -> MeterHistory:
    kw.setdefault("normaliser", Normaliser(0.0, 1.0))
    return MeterHistory(max_window=4, interval_s=IV, **kw)


def feed(h: MeterHistory, values, start=0):
    return [h.push(start + i * IV, v) for i, v in enumerate(values)]


def test_ready_after_max_window_readings():
    h = history()
    feed(h, [1.0, 2.0, 3.0])
    assert not h.ready
    feed(h, [4.0], start=3 * IV)
    assert h.ready
    np.testing.assert_array_equal(h.normalised_window(), np.arange(1, 5, dtype=np.float32))


def test_keeps_only_max_window_plus_one_values():
    h = history()
    feed(h, np.arange(20.0))
    assert h.values == [16.0, 17.0, 18.0, 19.0]


def test_duplicate_dropped_conflicting_rejected():
    h = history()
    feed(h, [1.0, 2.0])
    assert h.push(IV, 2.0).status == "duplicate"
    result = h.push(IV, 3.0)
    assert result.status == "rejected" and result.reason.startswith("conflicting_duplicate")
    assert h.values == [1.0, 2.0]


def test_short_gap_interpolated_and_late_reading_replaces_fill():
    h = history()
    feed(h, [0.0])
    result = h.push(4 * IV, 4.0)  # readings at 1, 2 and 3 intervals missing
    assert result.status == "ok" and result.gap_readings == 3
    assert h.values == [1.0, 2.0, 3.0, 4.0]
    assert h.filled == [True, True, True, False]
    late = h.push(2 * IV, 2.5)
    assert late.status == "late_applied"
    assert h.values[1] == 2.5 and not h.filled[1]


def test_late_beyond_tolerance_rejected():
    h = history(late_tolerance=1)
    feed(h, [0.0, 1.0, 2.0, 3.0])
    result = h.push(0, 0.0)
    assert result.status == "rejected" and result.reason.startswith("out_of_order")


def test_long_gap_restarts_history():
    h = history(max_gap=2)
    feed(h, [0.0, 1.0, 2.0, 3.0, 4.0])
    result = h.push(10 * IV, 9.0)
    assert result.restarted and result.gap_readings == 5
    assert h.values == [9.0] and not h.ready and h.last_ts == 10 * IV


def test_max_gap_zero_restarts_history_at_any_step_left_out():
    """score's replay: its reader interpolated what it may, so a step left in the series (a
    register's drop) is a split, however short; no window spans it."""
    h = history(max_gap=0)
    feed(h, [0.0, 1.0, 2.0, 3.0, 4.0])
    result = h.push(6 * IV, 9.0)
    assert result.restarted and result.gap_readings == 1
    assert h.values == [9.0] and not h.ready
    assert not h.push(7 * IV, 9.5).restarted  # no step left out: nothing to split


def test_off_grid_rejected_small_jitter_snapped():
    h = history()
    feed(h, [0.0])
    assert h.push(IV + 50, 1.0).status == "ok"  # 50 s late: within 10 % of the interval
    assert h.last_ts == IV
    assert h.push(IV + IV // 2, 1.0).status == "rejected"


def test_unknown_meter_warms_up_then_fits_normaliser():
    h = MeterHistory(max_window=4, interval_s=IV, normaliser=None, warmup=10)
    rng = np.random.default_rng(0)
    values = 10 + rng.normal(0, 1, 12)
    feed(h, values)
    assert h.normaliser is not None
    expected = Normaliser.fit(values[:10])
    assert h.normaliser == expected
    assert h.ready


def test_state_round_trip_keeps_behaviour():
    h = history()
    feed(h, [1.0, 2.0, 4.0])
    clone = MeterHistory.from_dict(h.to_dict(), max_window=4, interval_s=IV)
    assert clone.to_dict() == h.to_dict()
    for x in (h, clone):
        feed(x, [5.0, 7.0], start=3 * IV)
    np.testing.assert_array_equal(h.normalised_window(), clone.normalised_window())


@pytest.mark.parametrize("bad", [-IV * 10])
def test_far_past_rejected(bad):
    h = history()
    feed(h, [1.0, 2.0])
    assert h.push(bad, 1.0).status == "rejected"


def test_the_state_names_the_interpolated_values_and_reads_the_first_layout_too():
    h = history()
    feed(h, [0.0, 1.0])
    h.push(4 * IV, 4.0)  # two interpolated
    data = h.to_dict()
    assert data["filled_at"] == [1, 2] and "filled" not in data  # of the last max_window 4
    again = MeterHistory.from_dict(data, max_window=4, interval_s=IV)
    assert again.filled == h.filled == [False, True, True, False]
    first = {**data, "filled": [0, 1, 1, 0]}
    del first["filled_at"]
    assert MeterHistory.from_dict(first, max_window=4, interval_s=IV).filled == h.filled
