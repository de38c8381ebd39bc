"""The input contract: every reason code, timestamp conversions, round trips, dead letters, and the
JSON Schemas + examples in docs/ (checked by the small validator in tests/reference/json_schema.py;
`jsonschema` is not a dependency)."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from reference.json_schema import schema_errors

from stream_app.core.alerts import AlertTracker, Detection
from stream_app.core.errors import InputError
from stream_app.core.records import (
    MAX_VALUE_KWH,
    REASON_CODES,
    Reading,
    Rejected,
    decode_reading,
    encode_reading,
    ms_to_iso,
)
from stream_app.stream.dead_letters import DeadLetter, dead_letter_bytes

DOCS = Path(__file__).resolve().parents[2] / "docs"
NOW_MS = 1_736_121_600_000  # 2025-01-06T00:00:00Z, the consumer's clock in these tests
T_MS = 1_736_090_100_000  # 2025-01-05T15:15:00Z == 2025-01-06T00:15:00+09:00


def event(**fields) -> bytes:
    base = {"meter_id": "m-1", "timestamp": T_MS, "value": 1.5, "category": "industrial"}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


def decode(raw, **kw):
    kw.setdefault("now_ms", NOW_MS)
    return decode_reading(raw, **kw)


# --- valid events and timestamps ------------------------------------------------------------

def test_valid_event_gives_typed_reading():
    raw = event(timestamp="2025-01-06T00:15:00+09:00", value=12.75, site="Ulsan", company="ACME",
                profile="metal", interval_s=300)
    assert decode(raw, key=b"m-1") == Reading("m-1", T_MS, 12.75, "industrial", "Ulsan", "ACME",
                                              "metal", 300)


@pytest.mark.parametrize(("stamp", "expected_ms"), [
    ("2025-01-06T00:15:00+09:00", T_MS),
    ("2025-01-05T15:15:00Z", T_MS),
    ("2025-01-05T15:15:00+00:00", T_MS),
    ("2025-01-05T10:15:00-05:00", T_MS),
    ("2025-01-05T20:45:00+05:30", T_MS),
    ("2025-01-05T15:15:00.123Z", T_MS + 123),
    ("2025-01-05T15:15:00.1239Z", T_MS + 123),  # sub-millisecond digits are floored
    (T_MS, T_MS),
    (T_MS + 7, T_MS + 7),
])
def test_timestamps_convert_to_utc_epoch_ms(stamp, expected_ms):
    reading = decode(event(timestamp=stamp))
    assert isinstance(reading, Reading)
    assert reading.ts == expected_ms
    assert reading.ts_s == expected_ms // 1000
    # hand check against datetime arithmetic, independent of the decoder's own route
    assert datetime(2025, 1, 5, 15, 15, tzinfo=UTC).timestamp() * 1000 == T_MS


def test_int_value_becomes_float_and_defaults_apply():
    reading = decode(event(value=3))
    assert reading.value == 3.0 and type(reading.value) is float
    assert reading.interval_s == 900 and reading.site is None and reading.profile is None


def test_unknown_fields_are_ignored_and_null_optionals_are_absent():
    reading = decode(event(firmware="2.1", extra={"a": [1]}, site=None, interval_s=None))
    assert reading == Reading("m-1", T_MS, 1.5, "industrial")


def test_key_equal_or_absent_or_empty_is_accepted():
    for key in (b"m-1", None, b""):
        assert isinstance(decode(event(), key=key), Reading)


def test_categories_are_configurable():
    raw = event(category="cold_storage")
    assert decode(raw).reason == "unknown_category"
    assert decode(raw, categories={"cold_storage"}).category == "cold_storage"


def test_clock_checks_can_be_switched_off_for_replays():
    old = event(timestamp="1999-12-31T23:45:00Z")
    assert decode(old).reason == "past_timestamp"
    assert decode(old, min_year=None).ts == 946_683_900_000
    ahead = event(timestamp=NOW_MS + 86_400_000 + 1)
    assert decode(ahead).reason == "future_timestamp"
    assert decode(ahead, max_future_s=None).ts == NOW_MS + 86_400_001


def test_a_reading_may_be_a_few_intervals_ahead_not_more():
    """4 intervals ahead of now (at least 5 minutes): one reading 20 h ahead would otherwise lock
    its meter's correct readings out as out_of_order until the clock caught up."""
    hour = event(timestamp=NOW_MS + 3_600_000)  # 4 x 900 s: the bound, inclusive
    assert isinstance(decode(hour), Reading)
    late_zone = decode(event(timestamp=NOW_MS + 3_600_001))
    assert late_zone.reason == "future_timestamp" and "3600 s max" in late_zone.detail
    assert decode(event(timestamp=NOW_MS + 20 * 3_600_000)).reason == "future_timestamp"
    fast = event(timestamp=NOW_MS + 300_000, interval_s=2)  # small intervals: 5 min of skew
    assert isinstance(decode(fast), Reading)
    assert decode(event(timestamp=NOW_MS + 300_001, interval_s=2)).reason == "future_timestamp"
    hourly = event(timestamp=NOW_MS + 4 * 3_600_000, interval_s=3600)
    assert isinstance(decode(hourly), Reading)
    daily = event(timestamp=NOW_MS + 86_400_001, interval_s=86_400)  # capped at a day
    assert decode(daily).reason == "future_timestamp"


def test_future_check_uses_wall_clock_by_default():
    soon = datetime.now(UTC) + timedelta(minutes=30)
    later = datetime.now(UTC) + timedelta(days=2)
    assert isinstance(decode_reading(event(timestamp=soon.isoformat())), Reading)
    assert decode_reading(event(timestamp=later.isoformat())).reason == "future_timestamp"


def test_epoch_seconds_by_mistake_is_past_with_a_hint():
    rejected = decode(event(timestamp=T_MS // 1000))
    assert rejected.reason == "past_timestamp" and "epoch seconds" in rejected.detail


# --- every reason code ----------------------------------------------------------------------

REJECTIONS = [
    ("empty", None, None),
    ("empty", b"", None),
    ("too_large", event(site="x" * 200), None),
    ("not_utf8", b'{"meter_id": "m-1\xff"}', None),
    ("malformed_json", b'{"meter_id": ', None),
    ("malformed_json", b"[" * 100_000, None),  # deep nesting: RecursionError, not a crash
    ("not_an_object", b"[1, 2]", None),
    ("not_an_object", b'"text"', None),
    ("missing_field:meter_id", event(meter_id=...), None),
    ("missing_field:timestamp", event(timestamp=...), None),
    ("missing_field:value", event(value=...), None),
    ("missing_field:category", event(category=...), None),
    ("wrong_type:meter_id", event(meter_id=17), None),
    ("wrong_type:timestamp", event(timestamp=1.7e12), None),
    ("wrong_type:timestamp", event(timestamp=True), None),
    ("wrong_type:value", event(value="1.5"), None),
    ("wrong_type:value", event(value=True), None),
    ("wrong_type:category", event(category=["industrial"]), None),
    ("wrong_type:site", event(site=5), None),
    ("wrong_type:interval_s", event(interval_s=900.0), None),
    ("bad_field:interval_s", event(interval_s=0), None),
    ("bad_field:company", event(company=""), None),
    ("bad_field:profile", event(profile="p" * 257), None),
    ("bad_field:site", (b'{"meter_id":"m-1","timestamp":1736090100000,"value":1,'
                        b'"category":"general","site":"\\ud800"}'), None),
    ("not_finite", event(value=float("nan")), None),
    ("not_finite", event(value=float("inf")), None),
    ("not_finite", event(value=float("-inf")), None),
    ("negative_value", event(value=-0.5), None),
    ("negative_value", event(value=-(10**400)), None),
    ("absurd_value", event(value=MAX_VALUE_KWH * 1.0001), None),
    ("absurd_value", event(value=10**400), None),
    ("unknown_category", event(category="residential"), None),
    ("bad_timestamp", event(timestamp="yesterday"), None),
    ("bad_timestamp", event(timestamp="2025-13-01T00:00:00Z"), None),
    ("bad_timestamp", event(timestamp="2025-01-05T15:15:00Z" + " " * 60), None),
    ("bad_timestamp", event(timestamp=-1), None),
    ("bad_timestamp", event(timestamp=10**30), None),
    ("naive_timestamp", event(timestamp="2025-01-06T00:15:00"), None),
    ("naive_timestamp", event(timestamp="2025-01-06"), None),
    ("future_timestamp", event(timestamp="2026-01-01T00:00:00Z"), None),
    ("past_timestamp", event(timestamp="1999-12-31T23:59:59+00:00"), None),
    ("bad_meter_id", event(meter_id=""), None),
    ("bad_meter_id", event(meter_id="m 1"), None),
    ("bad_meter_id", event(meter_id="m/1"), None),
    ("bad_meter_id", event(meter_id="m\u00e91"), None),
    ("bad_meter_id", event(meter_id="m1\n"), None),
    ("bad_meter_id", event(meter_id="m" * 129), None),
    ("key_mismatch", event(), b"m-2"),
    ("key_mismatch", event(), b"\xffm-1"),
]


@pytest.mark.parametrize(("reason", "raw", "key"), REJECTIONS)
def test_rejections_carry_their_reason(reason, raw, key):
    result = decode(raw, key=key, max_bytes=256 if reason == "too_large" else 1_048_576)
    assert isinstance(result, Rejected)
    assert result.reason == reason
    assert result.code in REASON_CODES and result.detail


def test_every_reason_code_has_a_test():
    assert {r.partition(":")[0] for r, _, _ in REJECTIONS} == REASON_CODES


def test_non_bytes_payload_is_rejected_not_raised():
    assert decode("text").reason == "wrong_type:payload"
    assert isinstance(decode(bytearray(event())), Reading)
    assert isinstance(decode(memoryview(event())), Reading)


def test_meter_id_limits_are_inclusive():
    assert decode(event(meter_id="a" * 128)).meter_id == "a" * 128
    assert decode(event(meter_id="A.z_0:9-")).meter_id == "A.z_0:9-"
    assert decode(event(value=MAX_VALUE_KWH)).value == MAX_VALUE_KWH
    assert decode(event(value=0)).value == 0.0


# --- round trips and the producer helper ----------------------------------------------------

def test_reading_round_trips_through_compact_json():
    reading = Reading("plant:7.m-1", T_MS + 1, 0.1 + 0.2, "late_night", "사업장", None, "metal", 60)
    raw = reading.to_json()
    assert b" " not in raw and b"company" not in raw
    assert Reading.from_json(raw, key=b"plant:7.m-1") == reading


def test_from_json_skips_clock_checks_but_raises_on_junk():
    old = Reading("m-1", 0, 1.0, "general")
    assert Reading.from_json(old.to_json()) == old
    with pytest.raises(InputError, match="malformed_json"):
        Reading.from_json(b"{")


def test_encode_reading_gives_key_and_decodable_value():
    key, raw = encode_reading("m-9", "2025-01-06T00:15:00+09:00", 4.25, "agricultural",
                              site="farm", interval_s=1800)
    assert key == b"m-9"
    assert decode(raw, key=key) == Reading("m-9", T_MS, 4.25, "agricultural", "farm",
                                           interval_s=1800)
    kst = timezone(timedelta(hours=9))
    _, raw_dt = encode_reading("m-9", datetime(2025, 1, 6, 0, 15, tzinfo=kst), 1, "general")
    _, raw_ms = encode_reading("m-9", T_MS, 1, "general")
    assert decode(raw_dt).ts == decode(raw_ms).ts == T_MS


@pytest.mark.parametrize(("args", "opt", "match"), [
    (("m-1", T_MS, 1.0, "general"), {"colour": "red"}, "unknown reading field"),
    (("m-1", T_MS, float("nan"), "general"), {}, "not_finite"),
    (("m 1", T_MS, 1.0, "general"), {}, "bad_meter_id"),
    (("m-1", datetime(2025, 1, 6), 1.0, "general"), {}, "naive_timestamp"),
    (("m-1", T_MS, object(), "general"), {}, "cannot encode"),
])
def test_encode_reading_refuses_what_the_consumer_would_reject(args, opt, match):
    with pytest.raises(InputError, match=match):
        encode_reading(*args, **opt)


def test_ms_to_iso():
    assert ms_to_iso(T_MS) == "2025-01-05T15:15:00Z"
    assert ms_to_iso(T_MS + 5) == "2025-01-05T15:15:00.005Z"
    assert ms_to_iso(0) == "1970-01-01T00:00:00Z"


# --- dead letters -----------------------------------------------------------------------------

def test_dead_letter_keeps_original_bytes_key_and_position():
    raw = b'{"meter_id": "m-1\xff\x00"}'
    rejected = decode(raw, key=b"\x00k")
    letter = DeadLetter.from_json(dead_letter_bytes(raw, rejected, "meter.m-1", 2, 991, b"\x00k",
                                                    rejected_at_ms=T_MS + 42))
    assert letter.original_value() == raw and letter.original_key() == b"\x00k"
    assert (letter.topic, letter.partition, letter.offset) == ("meter.m-1", 2, 991)
    assert letter.reason == "not_utf8" and letter.detail == rejected.detail
    assert letter.rejected_at == "2025-01-05T15:15:00.042Z"
    assert letter.original_sha256 == hashlib.sha256(raw).hexdigest() and not letter.truncated


def test_dead_letter_of_tombstone_and_window_reason():
    data = json.loads(dead_letter_bytes(None, "out_of_order: 9 intervals older", "t", 0, 1, None))
    assert data["reason"] == data["code"] == "out_of_order"
    assert data["detail"] == "9 intervals older"
    assert data["value_b64"] is None and data["key_b64"] is None and data["original_size"] == 0


def test_dead_letter_of_oversize_event_is_cut_but_identified():
    raw = bytes(range(256)) * 4096  # 1 MiB, not UTF-8
    out = dead_letter_bytes(raw, Rejected("too_large", "1 MiB"), "t", 0, 5, b"k", max_original=1000)
    letter = DeadLetter.from_json(out)
    assert letter.truncated and letter.original_value() == raw[:1000]
    assert letter.original_size == len(raw)
    assert letter.original_sha256 == hashlib.sha256(raw).hexdigest()
    assert len(out) < 2000


def test_dead_letter_from_json_refuses_other_messages():
    with pytest.raises(InputError, match="dead letter"):
        DeadLetter.from_json(b'{"reason": "x"}')


# --- contract documents: JSON Schemas and examples ------------------------------------------

def load(relative: str):
    return json.loads((DOCS / relative).read_text(encoding="utf-8"))


@pytest.mark.parametrize(("schema", "example"), [
    ("meter-reading.schema.json", "reading.json"),
    ("alert.schema.json", "alert.json"),
    ("dead-letter.schema.json", "dead-letter.json"),
])
def test_examples_validate_against_their_schemas(schema, example):
    document = load(f"schemas/{schema}")
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema_errors(load(f"examples/{example}"), document) == []


def test_validator_catches_broken_documents():
    schema = load("schemas/meter-reading.schema.json")
    good = load("examples/reading.json")
    for broken in ({**good, "value": -1}, {**good, "timestamp": "2025-01-06T00:15:00"},
                   {**good, "category": "x"}, {k: v for k, v in good.items() if k != "value"},
                   {**good, "meter_id": "a b"}, {**good, "interval_s": True}):
        assert schema_errors(broken, schema), broken


def test_examples_agree_with_the_code():
    raw = (DOCS / "examples/reading.json").read_bytes()
    assert isinstance(decode(raw, key=b"plant-7.feeder-2"), Reading)
    letter = DeadLetter.from_json((DOCS / "examples/dead-letter.json").read_bytes())
    assert decode(letter.original_value()).reason == letter.reason
    assert base64.b64decode(load("examples/dead-letter.json")["key_b64"]) == b"plant-7.feeder-2"


@pytest.mark.parametrize(("reason", "raw", "key"), REJECTIONS[::3])
def test_generated_dead_letters_validate(reason, raw, key):
    rejected = decode(raw, key=key, max_bytes=256 if reason == "too_large" else 1_048_576)
    out = dead_letter_bytes(raw, rejected, "meter.m-1", 0, 7, key)
    assert schema_errors(json.loads(out), load("schemas/dead-letter.schema.json")) == []


def test_dead_letter_for_a_window_reason_validates():
    out = dead_letter_bytes(event(), "conflicting_duplicate: same timestamp, another value",
                            "meter.m-1", 0, 7, b"m-1")
    assert schema_errors(json.loads(out), load("schemas/dead-letter.schema.json")) == []


def test_generated_alerts_of_every_status_validate():
    tracker = AlertTracker(bundle_version="b1", update_every=1, cooldown=1)
    detection = Detection("general", 24, "cnn_gru", 9.0, 3.1, 0.8, {"cnn_gru@24": 0.4},
                          (1.0,) * 24, (2.0,) * 24)
    alerts = [tracker.observe("m-1", T_MS, True, detection),
              tracker.observe("m-1", T_MS + 900_000, True, detection),
              tracker.observe("m-1", T_MS + 1_800_000, False)]
    assert [a.status for a in alerts] == ["open", "update", "resolved"]
    schema = load("schemas/alert.schema.json")
    for alert in alerts:
        assert schema_errors(json.loads(alert.to_json()), schema) == []
