"""Property-based fuzzing of the event decoder: it never raises, every refusal has a known code,
valid readings round-trip, and value/timestamp decisions match plain reference rules.

Example counts total 2,900 and the file runs in about 6 s on one core; raise them with
a hypothesis settings profile for longer runs.
"""

from __future__ import annotations

import calendar
import json
import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_app.core.records import (
    MAX_VALUE_KWH,
    REASON_CODES,
    Reading,
    Rejected,
    decode_reading,
    encode_reading,
)
from stream_app.core.thresholds import CATEGORIES

pytestmark = pytest.mark.fuzz

NOW_MS = 1_736_121_600_000  # 2025-01-06T00:00:00Z
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)

meter_ids = st.text("ABCxyz0189._:-", min_size=1, max_size=128)
names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)
offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
moments = st.datetimes(datetime(2000, 1, 2), datetime(2025, 1, 5), timezones=offsets)
stamps = st.one_of(moments.map(lambda d: d.isoformat()),
                   moments.map(lambda d: d.isoformat().replace("+00:00", "Z")),
                   st.integers(946_771_200_000, NOW_MS))
values = st.floats(0, MAX_VALUE_KWH, allow_nan=False) | st.integers(0, 10_000_000)
valid_events = st.fixed_dictionaries(
    {"meter_id": meter_ids, "timestamp": stamps, "value": values,
     "category": st.sampled_from(CATEGORIES)},
    optional={"site": names, "company": names, "profile": names,
              "interval_s": st.integers(1, 86_400), "firmware": st.text(max_size=10)},
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=4),
    max_leaves=20,
)
bad_values = st.one_of(
    st.sampled_from([float("nan"), float("inf"), -float("inf"), -1e-9, -1, 1e7 + 1, 1e308,
                     10**30, -(10**30), True, False, None, "12.5", [1.0], {"kWh": 1}]),
    json_values,
)
bad_stamps = st.one_of(
    st.sampled_from(["2025-01-06T00:15:00", "2025-01-06", "yesterday", "", "2099-01-01T00:00Z",
                     "1969-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00", 1.7e12, -5, 10**20,
                     1_736_090_100, True, None]),
    st.datetimes(timezones=st.none() | offsets).map(lambda d: d.isoformat()),
    st.integers(), json_values,
)


def check(result) -> None:
    assert isinstance(result, Reading | Rejected)
    if isinstance(result, Rejected):
        assert result.code in REASON_CODES, result
        assert isinstance(result.detail, str)


@settings(FUZZ, max_examples=700)
@given(raw=st.binary(max_size=300), key=st.none() | st.binary(max_size=10))
def test_arbitrary_bytes_never_raise(raw, key):
    check(decode_reading(raw, key=key, now_ms=NOW_MS))


@settings(FUZZ, max_examples=500)
@given(value=json_values)
def test_arbitrary_json_never_raises(value):
    raw = json.dumps(value).encode()
    result = decode_reading(raw, now_ms=NOW_MS)
    check(result)
    if not isinstance(value, dict):
        assert result.reason == "not_an_object"


@settings(FUZZ, max_examples=600)
@given(
    base=valid_events,
    field=st.sampled_from(["meter_id", "timestamp", "value", "category", "site", "interval_s"]),
    action=st.sampled_from(["delete", "value_junk", "stamp_junk", "category", "oversize",
                            "key_mismatch"]),
    junk=bad_values, stamp=bad_stamps, data=st.data(),
)
def test_mutated_events_never_raise_and_say_why(base, field, action, junk, stamp, data):
    event, key, max_bytes = dict(base), base["meter_id"].encode(), 1_048_576
    expected = None
    if action == "delete":
        event.pop(field, None)
        if field in ("meter_id", "timestamp", "value", "category"):
            expected = f"missing_field:{field}"
    elif action == "value_junk":
        event["value"] = junk
    elif action == "stamp_junk":
        event["timestamp"] = stamp
    elif action == "category":
        event["category"] = data.draw(st.text(max_size=12).filter(lambda c: c not in CATEGORIES))
        expected = "unknown_category"
    elif action == "oversize":
        event["padding"] = "x" * data.draw(st.integers(200, 5000))
        max_bytes, expected = 150, "too_large"
    else:
        key = data.draw(st.binary(min_size=1, max_size=12).filter(lambda k: k != key))
        expected = "key_mismatch"
    raw = json.dumps(event).encode()
    result = decode_reading(raw, key=key, now_ms=NOW_MS, max_bytes=max_bytes)
    check(result)
    if expected is not None:
        assert result.reason == expected


@settings(FUZZ, max_examples=500)
@given(event=valid_events, ascii_only=st.booleans())
def test_valid_events_decode_and_round_trip(event, ascii_only):
    raw = json.dumps(event, ensure_ascii=ascii_only).encode()
    reading = decode_reading(raw, key=event["meter_id"].encode(), now_ms=NOW_MS)
    assert isinstance(reading, Reading), reading
    assert reading.value == float(event["value"])
    assert Reading.from_json(reading.to_json()) == reading
    optional = {k: getattr(reading, k) for k in ("site", "company", "profile", "interval_s")}
    key, again = encode_reading(reading.meter_id, reading.ts, reading.value, reading.category,
                                **optional)
    assert key == reading.meter_id.encode()
    assert decode_reading(again, now_ms=NOW_MS) == reading


@settings(FUZZ, max_examples=300)
@given(value=st.floats() | st.integers(-(10**20), 10**20))
def test_value_rule_matches_reference(value):
    result = decode_reading(json.dumps({"meter_id": "m", "timestamp": NOW_MS, "value": value,
                                        "category": "general"}).encode(), now_ms=NOW_MS)
    ok = math.isfinite(value) and 0 <= value <= MAX_VALUE_KWH
    assert isinstance(result, Reading) == ok
    if ok:
        assert result.value == float(value)


@settings(FUZZ, max_examples=300)
@given(moment=moments)
def test_iso_timestamps_match_calendar_reference(moment):
    result = decode_reading(json.dumps({"meter_id": "m", "timestamp": moment.isoformat(),
                                        "value": 1, "category": "general"}).encode(),
                            now_ms=NOW_MS)
    utc = moment.astimezone(UTC)
    expected = calendar.timegm(utc.timetuple()) * 1000 + utc.microsecond // 1000
    assert result.ts == expected
