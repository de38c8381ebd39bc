"""Alert lifecycle: open / update / resolved, stable ids, severity bands, state round trips.

Expectations are written out by hand for small flag sequences; the replay tests compare whole
alert streams, which is what at-least-once consumers rely on.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import replace

import pytest

from stream_app.core.alerts import Alert, AlertTracker, Detection, alert_id, severity
from stream_app.core.errors import ConfigError

T0 = 1_736_089_200_000  # 2025-01-05T15:00:00Z
STEP = 900_000  # 15 minutes in ms


def det(z: float = 3.3, limit: float = 3.0, window: int = 96) -> Detection:
    return Detection("industrial", window, "lstm", z, limit, 0.7, {"lstm@96": 1.2},
                     (1.0, 2.0), (1.5, 2.5), site="s1", company="c1")


def run(tracker: AlertTracker, zs: list[float | None], meter: str = "m-1", limit: float = 3.0):
    """Feed one reading per entry (None = unflagged); return [(index, status, alert)]."""
    out = []
    for i, z in enumerate(zs):
        alert = tracker.observe(meter, T0 + i * STEP, z is not None,
                                det(z, limit) if z is not None else None)
        if alert is not None:
            out.append((i, alert.status, alert))
    return out


@pytest.mark.parametrize(("z", "expected"), [
    (2.0, "low"), (2.49, "low"), (2.5, "medium"), (3.19, "medium"), (3.2, "high"),
    (4.99, "high"), (5.0, "critical"), (100.0, "critical"), (float("nan"), "critical"),
])
def test_severity_bands_of_z_over_limit(z, expected):
    assert severity(z, 2.0) == expected  # limit 2: the band edges 2.5 / 3.2 / 5.0 are exact


def test_alert_id_is_the_documented_hash():
    text = "b1|anomaly|m-1|1736089200000|96"
    assert alert_id("b1", "m-1", T0, 96) == hashlib.sha256(text.encode()).hexdigest()[:24]
    assert alert_id("b2", "m-1", T0, 96) != alert_id("b1", "m-1", T0, 96)
    assert alert_id("b1", "m-1", T0, 24) != alert_id("b1", "m-1", T0, 96)


def test_unflagged_readings_make_no_alerts():
    assert run(AlertTracker(bundle_version="b1"), [None] * 20) == []


def test_first_flag_opens_with_window_and_times():
    [(i, status, alert)] = run(AlertTracker(bundle_version="b1"), [None, 3.3])
    assert (i, status) == (1, "open")
    assert alert.alert_id == alert_id("b1", "m-1", T0 + STEP, 96)
    assert alert.window_end == "2025-01-05T15:15:00Z"
    assert alert.window_start == "2025-01-04T15:30:00Z"  # 95 intervals before the end
    assert alert.first_seen == alert.last_seen == alert.window_end
    assert alert.produced_at == alert.window_end  # no wall clock given: the reading time
    assert (alert.severity, alert.readings_flagged, alert.model) == ("low", 1, "cnn_gru+lstm")
    assert (alert.site, alert.company, alert.expected, alert.actual) == ("s1", "c1", (1.0, 2.0),
                                                                         (1.5, 2.5))
    assert alert.reason == "window 96 (lstm): z 3.30 over the industrial limit 3.00"


def test_updates_every_n_flags_and_on_severity_rise():
    tracker = AlertTracker(bundle_version="b1", update_every=3, cooldown=2)
    events = run(tracker, [3.3, 3.3, 3.3, 3.3, 5.0, 5.0, 3.3, 3.3, 9.0, 3.3])
    assert [(i, s) for i, s, _ in events] == [
        (0, "open"),
        (3, "update"),  # third flag since the open
        (4, "update"),  # low -> high
        (7, "update"),  # three more flags, severity not above high
        (8, "update"),  # high -> critical
    ]
    assert [a.readings_flagged for _, _, a in events] == [1, 4, 5, 8, 9]
    assert len({a.alert_id for _, _, a in events}) == 1


def test_resolves_after_cooldown_with_peak_and_same_id():
    tracker = AlertTracker(bundle_version="b1", cooldown=3)
    events = run(tracker, [3.3, 6.0, 3.3, None, None, None, None])
    assert [(i, s) for i, s, _ in events] == [(0, "open"), (1, "update"), (5, "resolved")]
    resolved = events[-1][2]
    assert resolved.alert_id == events[0][2].alert_id
    assert (resolved.zscore, resolved.severity, resolved.readings_flagged) == (6.0, "high", 3)
    assert resolved.window_end == "2025-01-05T15:15:00Z"  # the peak's window
    assert resolved.last_seen == "2025-01-05T15:30:00Z"  # the last flagged reading
    assert resolved.expected == () and resolved.reason.startswith("resolved after 3 unflagged")
    assert tracker.open_alerts() == {}


def test_flag_within_cooldown_continues_the_same_alert():
    tracker = AlertTracker(bundle_version="b1", cooldown=4)
    events = run(tracker, [3.3, None, None, None, 3.3, None, None, None, None, 3.3])
    assert [(i, s) for i, s, _ in events] == [(0, "open"), (8, "resolved"), (9, "open")]
    first, resolved, second = (a for _, _, a in events)
    assert resolved.alert_id == first.alert_id and resolved.readings_flagged == 2
    assert second.alert_id != first.alert_id


def test_meters_are_independent():
    tracker = AlertTracker(bundle_version="b1", cooldown=1)
    a = tracker.observe("a", T0, True, det())
    assert tracker.observe("b", T0, False) is None
    b = tracker.observe("b", T0 + STEP, True, det())
    assert a.alert_id != b.alert_id and set(tracker.open_alerts()) == {"a", "b"}
    assert tracker.observe("a", T0 + STEP, False).status == "resolved"
    assert set(tracker.open_alerts()) == {"b"}


def test_redelivered_or_older_readings_are_ignored():
    tracker = AlertTracker(bundle_version="b1", cooldown=1)
    assert tracker.observe("m", T0, True, det()).status == "open"
    assert tracker.observe("m", T0, True, det(9.0)) is None  # same reading again
    assert tracker.observe("m", T0 - STEP, False) is None
    assert tracker.observe("m", T0 + STEP, False).status == "resolved"


def random_series(seed: int, n: int = 400) -> list[float | None]:
    rng = random.Random(seed)
    zs: list[float | None] = []
    while len(zs) < n:  # bursts of flags separated by quiet stretches
        zs += [None] * rng.randint(0, 12)
        zs += [round(3.0 + rng.expovariate(0.5), 3) for _ in range(rng.randint(0, 20))]
    return zs[:n]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_replay_gives_identical_alerts(seed):
    zs = random_series(seed)
    first = run(AlertTracker(bundle_version="b1"), zs)
    second = run(AlertTracker(bundle_version="b1"), zs)
    assert first == second and any(s == "resolved" for _, s, _ in first)


@pytest.mark.parametrize("cut", [37, 150, 311])
def test_state_round_trip_mid_series_changes_nothing(cut):
    """Restore from the dict (a Faust table after a rebalance) halfway: same alert stream."""
    zs = random_series(7)
    whole = run(AlertTracker(bundle_version="b1", update_every=5), zs)
    tracker = AlertTracker(bundle_version="b1", update_every=5)
    head = run(tracker, zs[:cut])
    restored = AlertTracker.from_dict(json.loads(json.dumps(tracker.to_dict())))
    per_meter = AlertTracker(bundle_version="b1", update_every=5)
    per_meter.load_state("m-1", json.loads(json.dumps(tracker.state("m-1"))))
    tails = []
    for t in (restored, per_meter):
        tail = []
        for i, z in enumerate(zs[cut:], start=cut):
            alert = t.observe("m-1", T0 + i * STEP, z is not None, det(z) if z else None)
            if alert is not None:
                tail.append((i, alert.status, alert))
        tails.append(tail)
    assert head + tails[0] == whole == head + tails[1]


def test_every_alert_opens_before_updates_and_resolves_once():
    events = run(AlertTracker(bundle_version="b1", update_every=4, cooldown=3), random_series(3))
    statuses: dict[str, list[str]] = {}
    for _, status, alert in events:
        statuses.setdefault(alert.alert_id, []).append(status)
    for sequence in statuses.values():
        assert sequence[0] == "open" and set(sequence[1:-1]) <= {"update"}
        assert sequence.count("resolved") <= 1 and "resolved" not in sequence[:-1]


def test_alert_json_round_trips_and_tolerates_new_fields():
    [(_, _, alert)] = run(AlertTracker(bundle_version="b1"), [4.0])
    alert = replace(alert, latency_ms=12.5)
    data = json.loads(alert.to_json())
    assert data["schema"] == "meterwatch.alert/1" and data["expected"] == [1.0, 2.0]
    assert Alert.from_dict({**data, "future_field": 1}) == alert


def test_flag_without_details_is_a_bug():
    with pytest.raises(ValueError, match="Detection"):
        AlertTracker(bundle_version="b1").observe("m", T0, True)


@pytest.mark.parametrize("kwargs", [
    {"bundle_version": ""}, {"bundle_version": "b", "cooldown": 0},
    {"bundle_version": "b", "update_every": 0}, {"bundle_version": "b", "update_every": 2.5},
])
def test_bad_settings_fail_at_start(kwargs):
    with pytest.raises(ConfigError):
        AlertTracker(**kwargs)


def test_state_dict_refuses_unknown_keys_and_versions():
    state = AlertTracker(bundle_version="b1").to_dict()
    with pytest.raises(ConfigError, match="unknown"):
        AlertTracker.from_dict({**state, "colour": "red"})
    with pytest.raises(ConfigError, match="version"):
        AlertTracker.from_dict({**state, "version": 99})
