"""Silent meters: the wall-clock rule, one alert per silence, resolved by the next reading."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from reference.json_schema import schema_errors

from stream_app.core.alerts import Alert, alert_id
from stream_app.core.errors import ConfigError
from stream_app.stream.silence import DUE_PER_CHECK, SilenceTracker, silence_alert

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


# --- many at once: grouped alerts --------------------------------------------------------------

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "schemas"
                     / "alert.schema.json").read_text())


def site_meters(tracker, site: str, n: int, *, at: float = T0, interval: float = 900,
                company: str | None = "acme", prefix: str | None = None) -> list[str]:
    meters = [f"{prefix or site}-{i:05d}" for i in range(n)]
    for k, meter in enumerate(meters):
        tracker.seen(meter, at, interval, ts_ms=TS + k, category="general" if k % 3 else
                     "industrial", site=site, company=company)
    return meters


def test_a_site_going_dark_is_one_grouped_alert_that_counts_and_names_its_meters():
    tracker = SilenceTracker(factor=4, group_min=10)
    meters = site_meters(tracker, "ulsan", 25)
    site_meters(tracker, "busan", 3)  # too few at once at another site: alerted one by one
    events = tracker.check(T0 + 3601)
    alone = [(m, e.status) for m, e in events if e.__class__.__name__ == "SilenceEvent"]
    (group, opened), = [(m, e) for m, e in events if e.__class__.__name__ == "GroupEvent"]
    assert sorted(m for m, _ in alone) == ["busan-00000", "busan-00001", "busan-00002"]
    assert group == "site:acme:ulsan" and opened.status == "open"
    assert (opened.silent, opened.peak, opened.back, opened.site) == (25, 25, 0, "ulsan")
    assert opened.sample == tuple(meters[:20]) and opened.category == "general"
    assert tracker.silent_count == 28 and len(tracker.silent_meters()) == 28
    assert tracker.check(T0 + 3700) == []  # nothing new: no message
    # no per-meter resolved for a grouped meter; the group is told at the next check
    for meter in meters[:13]:
        assert tracker.seen(meter, T0 + 3800, 900, ts_ms=TS + 900_000, site="ulsan",
                            company="acme") is None
    (_, update), = tracker.check(T0 + 3801)
    assert (update.status, update.silent, update.back) == ("update", 12, 13)  # halved: 25 -> 12
    for meter in meters[13:]:
        tracker.seen(meter, T0 + 3900, 900, ts_ms=TS + 900_000, site="ulsan", company="acme")
    (_, resolved), = tracker.check(T0 + 3901)
    assert (resolved.status, resolved.silent, resolved.peak, resolved.back) == ("resolved", 0, 25,
                                                                                25)
    alerts = [silence_alert(group, e, bundle_version="b1", produced_ms=TS)
              for e in (opened, update, resolved)]
    assert len({a.alert_id for a in alerts}) == 1
    assert alerts[0].alert_id == alert_id("b1", "site:acme:ulsan", TS, 0, kind="meters_silent")
    assert [a.kind for a in alerts] == ["meters_silent"] * 3
    assert len({a.last_seen for a in alerts}) == 3  # (alert_id, status, last_seen) tells them apart
    assert alerts[0].meters == {"silent": 25, "peak": 25, "back": 0, "expired": 0, "moved": 0,
                                "sample": meters[:20]}
    assert alerts[0].severity == "critical" and alerts[0].zscore == 25.0  # 2.5 x the minimum
    assert "25 meters (site 'ulsan' of 'acme')" in alerts[0].reason
    for alert in alerts:
        data = json.loads(alert.to_json())
        assert schema_errors(data, SCHEMA) == [], data
        assert Alert.from_dict(data).meter_id == "site:acme:ulsan"


def check_ticks(tracker, now: float) -> list:
    """Ticks a second apart until every deadline due is decided (DUE_PER_CHECK a tick)."""
    events = []
    while True:
        events += tracker.check(now)
        if tracker.examined < DUE_PER_CHECK:
            return events
        now += 1


def test_twenty_thousand_meters_silent_at_once_raise_one_alert_and_grow_by_doubling():
    tracker = SilenceTracker(factor=4, group_min=10)
    first = site_meters(tracker, "plant", 20_000, company=None)
    events = check_ticks(tracker, T0 + 3601)  # 10,000 decided a tick
    assert [(m, e.status, e.silent) for m, e in events] == [("site:-:plant", "open", 10_000),
                                                           ("site:-:plant", "update", 20_000)]
    # while it is open, later silences at the site join it: an update each time it doubles
    later = site_meters(tracker, "plant", 30_000, company=None, prefix="late", at=T0 + 100)
    events = check_ticks(tracker, T0 + 3701)
    assert [(e.status, e.silent) for _, e in events] == [("update", 40_000)]
    assert (tracker.silent_count, events[0][1].peak) == (50_000, 40_000)
    group = tracker.check(T0 + 3800)  # nothing due: the 50,000 are told when it next changes
    assert group == [] and len(set(first) | set(later)) == tracker.silent_count


def test_fewer_than_the_minimum_are_alerted_alone_until_the_window_fills():
    tracker = SilenceTracker(factor=1, group_min=5)
    site_meters(tracker, "s", 3, interval=60)
    assert [e.status for _, e in tracker.check(T0 + 61)] == ["open"] * 3
    site_meters(tracker, "s", 1, interval=60, prefix="t", at=T0 + 20)
    assert [e.status for _, e in tracker.check(T0 + 81)] == ["open"]  # 4 within the window
    site_meters(tracker, "s", 1, interval=60, prefix="u", at=T0 + 40)
    (group, event), = tracker.check(T0 + 101)  # the fifth: the group opens with the newcomer
    assert (group, event.status, event.silent) == ("site:acme:s", "open", 1)
    # an interval or two later the window is empty again: one more is alone
    site_meters(tracker, "z", 1, interval=60, at=T0 + 400)
    assert [e.__class__.__name__ for _, e in tracker.check(T0 + 461)] == ["SilenceEvent"]


def test_silences_spread_over_made_up_sites_go_to_the_worker_group():
    tracker = SilenceTracker(factor=4, group_min=10)
    for k in range(5_000):  # one meter per site: no site reaches the minimum
        tracker.seen(f"m{k}", T0, 900, ts_ms=TS, site=f"fake-{k}")
    (group, event), = tracker.check(T0 + 3601)
    assert (group, event.status, event.silent, event.site) == ("site:-:-", "open", 5_000, None)


def test_group_ids_stay_in_the_meter_id_alphabet():
    from stream_app.stream.silence import group_id

    assert group_id("acme", "gwangyang") == "site:acme:gwangyang"
    assert group_id(None, None) == "site:-:-"
    odd = group_id("Acme Power Co.", "Plant #7 / Line 2" + "x" * 300)
    assert odd.startswith("site:Acme_Power_Co..") and len(odd) <= 128
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", odd)
    assert group_id(None, "-") != group_id(None, None)  # a site named "-" is not "no site"
    assert group_id("a:b", "c") != group_id("a", "b:c")


# --- cost: only what is due now ----------------------------------------------------------------

def test_a_check_costs_what_is_due_not_the_silent_meters_already_alerted():
    """The per-tick work counted in heap entries looked at: 50,000 meters silent and alerted
    cost a tick nothing; 10,000 reporting every 900 s cost a handful a tick."""
    tracker = SilenceTracker(factor=4, group_min=10)
    site_meters(tracker, "dark", 50_000)
    costs = []
    for tick in range(300):
        tracker.check(T0 + 3601 + tick)
        costs.append(tracker.examined)
    assert costs[:6] == [10_000] * 5 + [0]  # deciding them: each once, DUE_PER_CHECK a tick
    costs = costs[5:]
    assert costs == [0] * 295  # silent and alerted: no deadline queued, nothing looked at
    assert tracker.heap_sizes()[0] == 0
    # 10,000 live meters, phases spread over the interval, each reporting every 900 s
    live = [f"live-{i}" for i in range(10_000)]
    start = T0 + 4000
    for i, meter in enumerate(live):
        tracker.seen(meter, start + i * 0.09, 900, ts_ms=TS)
    costs = []
    for tick in range(1, 7201):  # two hours, ticking each second
        now = start + tick
        for i in range(int((tick - 1) / 0.09), min(len(live) * 8, int(tick / 0.09))):
            meter = live[i % len(live)]
            tracker.seen(meter, now, 900, ts_ms=TS + tick * 1000)
        tracker.check(now)
        costs.append(tracker.examined)
    assert tracker.silent_count == 50_000  # none of the live ones was taken for silent
    # a deadline comes due once an hour (4 x 900 s) and is queued again: ~1 entry a meter an
    # hour, a dozen a tick (measured: 12 at most, 10,799 in all)
    assert max(costs) <= 20 and sum(costs) <= 2 * len(live)
    assert tracker.heap_sizes()[0] == len(live)  # one deadline per timed meter


# --- expiry: the TTL in stream time ------------------------------------------------------------

DAY_MS = 86_400_000


def test_a_meter_silent_longer_than_the_ttl_is_forgotten_and_its_alert_closed():
    tracker = SilenceTracker(factor=4, group_min=10, ttl_s=30 * 86_400)
    tracker.seen("dead", T0, 900, ts_ms=TS, site="a")
    tracker.seen("backfill", T0, 900, ts_ms=TS, site="b")
    tracker.check(T0 + 3601)  # both silent, alone
    tracker.seen("backfill", T0 + 3700, 900, ts_ms=TS + 900_000, site="b")  # reports again
    tracker.seen("clock", T0 + 3700, 900, ts_ms=TS + 30 * DAY_MS, site="c")
    assert tracker.expire(T0 + 3701) == []  # exactly 30 days behind is not "longer than"
    tracker.seen("clock", T0 + 3800, 900, ts_ms=TS + 30 * DAY_MS + 1, site="c")
    (meter, event), = tracker.expire(T0 + 3801)
    assert (meter, event.status, event.expired, event.last_ts_ms) == ("dead", "resolved", True, TS)
    # "backfill" is as far behind stream time but reports: it is not silent, so it stays
    assert "dead" not in tracker and "backfill" in tracker and tracker.silent_count == 0
    alert = silence_alert(meter, event, bundle_version="b1", produced_ms=TS)
    assert alert.alert_id == alert_id("b1", "dead", TS, 0, kind="meter_silent")
    assert alert.status == "resolved" and "no longer watched" in alert.reason
    assert schema_errors(json.loads(alert.to_json()), SCHEMA) == []


def test_twenty_thousand_made_up_meters_leave_nothing_behind_after_the_ttl():
    tracker = SilenceTracker(factor=4, group_min=10, ttl_s=30 * 86_400)
    made_up = site_meters(tracker, "fake", 20_000, company=None)
    tracker.seen("clock", T0, 900, ts_ms=TS, site="real")
    opened = [e for m, e in check_ticks(tracker, T0 + 3601) if m == "site:-:fake"][-1]
    assert opened.silent == 20_000
    tracker.seen("clock", T0 + 3700, 900, ts_ms=TS + 31 * DAY_MS, site="real")
    gone = []
    while batch := tracker.expire(T0 + 3701, most=5_000):  # the worker: 5,000 a tick
        gone.extend(batch)
    assert sorted(m for m, _ in gone) == made_up and all(e is None for _, e in gone)
    (_, resolved), = [(m, e) for m, e in tracker.check(T0 + 3702) if m == "site:-:fake"]
    assert (resolved.status, resolved.expired, resolved.peak) == ("resolved", 20_000, 20_000)
    tracker.check(T0 + 3702 + 2 * 3600)  # the group's window has passed: its counter goes too
    assert len(tracker) == 1 and "clock" in tracker
    # the clock's one entry (it is silent by now, so in the expiry heap); its silence just now
    # is counted at its site and at the worker; the made-up site's group is gone
    assert sum(tracker.heap_sizes()) == 1 and tracker.group_count() == 2


def test_forgotten_meters_leave_their_group_and_leftover_entries_are_compacted():
    tracker = SilenceTracker(factor=4, group_min=10)
    moved = site_meters(tracker, "x", 9_000)
    tracker.check(T0 + 3601)
    for meter in moved[:3_000]:
        tracker.seen(meter, T0 + 3700, 900, ts_ms=TS + 900_000, site="x", company="acme")
    assert tracker.heap_sizes() == (3_000, 9_000)
    tracker.forget(moved)
    (_, event), = tracker.check(T0 + 3701)
    assert (event.status, event.back, event.moved) == ("resolved", 3_000, 6_000)
    assert len(tracker) == 0 and tracker.silent_count == 0
    assert tracker.heap_sizes() == (0, 0)  # leftovers over half the heap: rebuilt
