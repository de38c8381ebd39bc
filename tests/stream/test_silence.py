"""Silent meters: the wall-clock rule, one alert per silence, resolved by the next reading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from reference.json_schema import schema_errors

from stream_app.core.alerts import Alert, alert_id
from stream_app.core.errors import ConfigError
from stream_app.stream.silence import SilenceTracker, silence_alert

T0 = 1_000_000.0  # a fake wall clock, seconds
TS = 1_736_000_000_000  # the readings' stream time, ms


def test_silence_after_factor_times_the_interval_then_resolved_once():
    tracker = SilenceTracker(factor=4)
    assert tracker.seen("m1", T0, 2, ts_ms=TS, category="general") is None
    assert tracker.check(T0 + 8.0) == []  # exactly 4 x 2 s is not yet "more than"
    events = tracker.check(T0 + 8.5)
    assert [(m, e.status) for m, e in events] == [("m1", "open")]
    event = events[0][1]
    assert (event.last_ts_ms, event.interval_s, event.silent_s) == (TS, 2.0, 8.5)
    assert event.category == "general"
    assert tracker.check(T0 + 30) == []  # reported once per silence
    assert tracker.silent_meters() == ["m1"]
    resolved = tracker.seen("m1", T0 + 31, 2, ts_ms=TS + 2000)
    assert resolved.status == "resolved" and resolved.last_ts_ms == TS
    assert resolved.silent_s == pytest.approx(31.0)
    assert tracker.silent_meters() == []
    assert tracker.check(T0 + 38.9) == []  # timing restarts at the new arrival
    assert [e.status for _, e in tracker.check(T0 + 39.5)] == ["open"]


def test_each_meter_has_its_own_interval_and_regular_readings_never_alert():
    tracker = SilenceTracker(factor=4)
    for k in range(100):  # m-fast reports every 2 s; m-slow every 900 s, once
        tracker.seen("m-fast", T0 + 2 * k, 2, ts_ms=TS + 2000 * k)
        if k == 0:
            tracker.seen("m-slow", T0, 900, ts_ms=TS)
        assert tracker.check(T0 + 2 * k + 1.9) == []
    assert [m for m, _ in tracker.check(T0 + 3601)] == ["m-fast", "m-slow"]


def test_forgotten_meters_are_not_timed_and_bad_settings_are_refused():
    tracker = SilenceTracker(factor=2)
    tracker.seen("a", T0, 10)
    tracker.seen("b", T0, 10)
    tracker.forget(["a", "unknown"])
    assert len(tracker) == 1
    assert [m for m, _ in tracker.check(T0 + 21)] == ["b"]
    with pytest.raises(ConfigError):
        SilenceTracker(factor=0.5)
    with pytest.raises(ValueError):
        tracker.seen("c", T0, 0)


def test_silence_alerts_share_one_stable_id_and_follow_the_alert_schema():
    tracker = SilenceTracker()
    tracker.seen("plant-1.feeder-2", T0, 900, ts_ms=TS, category="industrial", site="Ulsan")
    (meter, opened), = tracker.check(T0 + 4000)
    resolved = tracker.seen(meter, T0 + 5000, 900, ts_ms=TS + 900_000)
    a = silence_alert(meter, opened, bundle_version="b1", produced_ms=TS + 4_000_000)
    r = silence_alert(meter, resolved, bundle_version="b1", produced_ms=TS + 5_000_000)
    assert a.alert_id == r.alert_id == alert_id("b1", meter, TS, 0, kind="meter_silent")
    assert (a.status, r.status, a.kind) == ("open", "resolved", "meter_silent")
    assert a.window_size == 4 and a.zscore == pytest.approx(4000 / 900, abs=1e-3)
    assert a.threshold == 4.0 and a.site == "Ulsan" and "4.4 x the 900 s" in a.reason
    assert a.window_start == "2025-01-04T14:13:20Z"
    schema = json.loads((Path(__file__).resolve().parents[2] / "docs" / "schemas"
                         / "alert.schema.json").read_text())
    for alert in (a, r):
        data = json.loads(alert.to_json())
        assert schema_errors(data, schema) == []
        assert Alert.from_dict(data) == alert
