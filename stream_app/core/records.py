"""The edge of the stream: raw Kafka bytes in, a typed `Reading` or a `Rejected` reason out.

`decode_reading` never raises on bad input. A bad event is one producer's mistake; raising inside
a Faust agent would ack and drop it silently (agents are never retried), so every problem becomes
a `Rejected(reason, detail)` that the worker turns into a dead letter (`dead_letter_bytes`) with
the original bytes, key and topic/partition/offset, and counts by reason.

Contract (docs/EVENTS.md, docs/schemas/meter-reading.schema.json): a UTF-8 JSON object with
`meter_id`, `timestamp` (ISO-8601 with an offset, or integer epoch milliseconds), `value` (kWh for
the interval), `category`, optional `site`, `company`, `profile`, `interval_s`. Unknown fields are
ignored, so producers can add fields without breaking running workers. Inside meterwatch a
reading's time is integer epoch **milliseconds**, UTC (`Reading.ts`; `Reading.ts_s` for seconds).

Reason codes are short and stable (they label metrics and dead letters); the detail is for people.

Over 300 lines: the whole event contract (every field, every refusal) reads best in one place.
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import final

import orjson

from stream_app.core.errors import InputError
from stream_app.core.thresholds import CATEGORIES

# Kafka's default message.max.bytes is ~1 MB; a reading is ~200 bytes, anything near 1 MB is junk.
MAX_EVENT_BYTES = 1_048_576
# 1e7 kWh in 15 minutes is a 40 GW draw, beyond any single meter on earth: a unit or parser bug.
MAX_VALUE_KWH = 1e7
DEFAULT_INTERVAL_S = 900
MAX_INTERVAL_S = 86_400  # daily readings are the coarsest series the detector is meant for
MAX_TEXT_CHARS = 256  # site / company / profile: names, not documents
MAX_FUTURE_S = 86_400  # the longest allowance ahead of now, whatever the interval
# A reading may be ahead of now by FUTURE_INTERVALS of its intervals (at least CLOCK_SKEW_S):
# a reading further ahead would become the meter's newest and lock its correct readings out as
# out_of_order until the clock caught up (and fake a gap), so it is refused instead.
FUTURE_INTERVALS = 4
CLOCK_SKEW_S = 300
MIN_YEAR = 2000
# datetime cannot represent year 10000; later timestamps could not be written back as ISO-8601.
_MAX_TS_MS = 253_402_300_800_000  # 10000-01-01T00:00:00Z
_MAX_TIMESTAMP_CHARS = 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# One C call; cheaper than a Python loop over a set, and exact about ASCII.
_METER_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# Every reason code decode_reading can return; "missing_field" / "wrong_type" / "bad_field" carry
# the field name after a colon (e.g. "missing_field:value"): `Rejected.code` strips it.
REASON_CODES: frozenset[str] = frozenset({
    "empty", "too_large", "not_utf8", "malformed_json", "not_an_object",
    "missing_field", "wrong_type", "bad_field", "not_finite", "negative_value", "absurd_value",
    "unknown_category", "bad_timestamp", "naive_timestamp", "future_timestamp", "past_timestamp",
    "bad_meter_id", "key_mismatch",
})
_OPTIONAL_TEXT = ("site", "company", "profile")


@dataclass(frozen=True, slots=True)
class Reading:
    """One validated meter reading. `ts` is epoch milliseconds UTC; `value` is kWh, finite, >= 0."""

    meter_id: str
    ts: int
    value: float
    category: str
    site: str | None = None
    company: str | None = None
    profile: str | None = None
    interval_s: int = DEFAULT_INTERVAL_S

    @property
    def ts_s(self) -> int:
        """Epoch seconds (floor), the unit of `MeterSeries` and `MeterHistory`."""
        return self.ts // 1000

    def to_json(self) -> bytes:
        """Compact event bytes (epoch-ms timestamp, absent optionals left out); decodes back equal."""
        event: dict[str, object] = {"meter_id": self.meter_id, "timestamp": self.ts,
                                    "value": self.value, "category": self.category}
        for name in _OPTIONAL_TEXT:
            text = getattr(self, name)
            if text is not None:
                event[name] = text
        if self.interval_s != DEFAULT_INTERVAL_S:
            event["interval_s"] = self.interval_s
        return orjson.dumps(event)  # compact UTF-8, like json.dumps(separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes, *, key: bytes | None = None,
                  categories: Collection[str] = CATEGORIES) -> Reading:
        """Decode bytes already validated once (the internal re-keyed topic): no clock checks.

        Bytes in `to_json`'s exact shape are trusted (the worker validated them at ingest; no
        second validation on the hot path); anything else is validated in full. Raises
        InputError with the reason, since bad bytes here mean a bug, not a bad producer.
        """
        try:
            event = orjson.loads(raw)
            reading = cls(event.pop("meter_id"), event.pop("timestamp"), event.pop("value"),
                          event.pop("category"), **event)
        except (ValueError, TypeError, KeyError, AttributeError):
            reading = None
        if (reading is not None and type(reading.ts) is int and type(reading.value) is float
                and (key is None or key.decode("utf-8", "replace") == reading.meter_id)
                and reading.category in categories):
            return reading
        result = decode_reading(raw, key=key, categories=categories, max_future_s=None,
                                min_year=None)
        if isinstance(result, Rejected):
            raise InputError(f"{result.reason}: {result.detail}")
        return result


# final: decode_reading tells a Rejected from a value with `type(x) is Rejected`, which mypy
# narrows in both branches only for a class that cannot be subclassed.
@final
@dataclass(frozen=True, slots=True)
class Rejected:
    """Why an event was refused: `reason` is a stable code (maybe `code:field`), `detail` prose."""

    reason: str
    detail: str = ""

    @property
    def code(self) -> str:
        return self.reason.partition(":")[0]


def decode_reading(
    raw: bytes | None,
    *,
    key: bytes | None = None,
    categories: Collection[str] = CATEGORIES,
    max_bytes: int = MAX_EVENT_BYTES,
    now_ms: int | None = None,
    max_future_s: int | None = MAX_FUTURE_S,
    min_year: int | None = MIN_YEAR,
) -> Reading | Rejected:
    """Validate one event. Never raises on bad input: returns `Reading` or `Rejected`.

    `key` (the Kafka key) must equal meter_id when present; an empty key counts as absent.
    `now_ms` defaults to the wall clock. A reading may be ahead of it by FUTURE_INTERVALS of its
    intervals (at least CLOCK_SKEW_S, at most `max_future_s`); `max_future_s=None` /
    `min_year=None` switch those checks off (replaying history). JSON `NaN`/`Infinity` literals
    parse, then fail as `not_finite`. Duplicate JSON keys: the last one wins (Python's json,
    documented in docs/EVENTS.md).
    """
    if raw is None or raw == b"":
        return Rejected("empty", "no payload (null value or tombstone)")
    if type(raw) is not bytes:
        if not isinstance(raw, bytearray | memoryview):
            return Rejected("wrong_type:payload", f"expected bytes, got {type(raw).__name__}")
        raw = bytes(raw)
    if len(raw) > max_bytes:
        return Rejected("too_large", f"{len(raw)} bytes > {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected("not_utf8", f"byte {exc.start}: {exc.reason}")
    try:
        event = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        return Rejected("malformed_json", str(exc)[:200])
    if type(event) is not dict:
        return Rejected("not_an_object", f"top-level JSON {type(event).__name__}")

    meter_id = event.get("meter_id")
    if meter_id is None:
        return Rejected("missing_field:meter_id", "meter_id is required")
    if type(meter_id) is not str:
        return Rejected("wrong_type:meter_id", f"expected string, got {_json_type(meter_id)}")
    if _METER_ID.fullmatch(meter_id) is None:
        return Rejected("bad_meter_id", "1..128 characters from [A-Za-z0-9._:-] required, got "
                        f"{meter_id[:40]!r}")
    if key and key != meter_id.encode("utf-8"):
        return Rejected("key_mismatch", f"key {key[:40]!r} != meter_id {meter_id!r}")

    ts = _timestamp_ms(event.get("timestamp"))
    if type(ts) is Rejected:
        return ts
    if min_year is not None and ts < _year_start_ms(min_year):
        hint = " (epoch seconds? milliseconds are expected)" if 0 < ts < 10**10 else ""
        return Rejected("past_timestamp", f"{ts} ms is before {min_year}{hint}")
    value = _value(event.get("value"))
    if type(value) is Rejected:
        return value

    category = event.get("category")
    if category is None:
        return Rejected("missing_field:category", "category is required")
    if type(category) is not str:
        return Rejected("wrong_type:category", f"expected string, got {_json_type(category)}")
    if category not in categories:
        return Rejected("unknown_category", f"{category[:40]!r} not in {sorted(categories)}")

    optional = {}
    for name in _OPTIONAL_TEXT:
        text_value = event.get(name)
        if text_value is not None:
            problem = _text_problem(name, text_value)
            if problem is not None:
                return problem
            optional[name] = text_value
    interval_s = event.get("interval_s")
    if interval_s is None:
        interval_s = DEFAULT_INTERVAL_S
    elif type(interval_s) is not int:
        return Rejected("wrong_type:interval_s", f"expected integer, got {_json_type(interval_s)}")
    elif not 1 <= interval_s <= MAX_INTERVAL_S:
        return Rejected("bad_field:interval_s", f"{interval_s} outside 1..{MAX_INTERVAL_S}")
    if max_future_s is not None:
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        allowed = min(max_future_s, max(FUTURE_INTERVALS * interval_s, CLOCK_SKEW_S))
        if ts > now + allowed * 1000:
            return Rejected("future_timestamp", f"{ts - now} ms ahead of now ({allowed} s max: "
                            f"{FUTURE_INTERVALS} intervals of {interval_s} s, at least "
                            f"{CLOCK_SKEW_S} s)")
    return Reading(meter_id, ts, value, category, interval_s=interval_s, **optional)


def encode_reading(meter_id: str, ts: int | datetime | str, value: float, category: str,
                   **opt: str | int | None) -> tuple[bytes, bytes]:
    """(key, value) bytes for a producer. `ts`: epoch ms int, aware datetime or ISO-8601 string.

    `opt`: site, company, profile, interval_s; anything else raises InputError, and so does an
    event the consumer would reject (clock checks aside): a producer cannot emit a dead letter.
    """
    unknown = set(opt) - {*_OPTIONAL_TEXT, "interval_s"}
    if unknown:
        raise InputError(f"unknown reading field(s): {', '.join(sorted(unknown))}")
    timestamp = ts.isoformat() if isinstance(ts, datetime) else ts
    event: dict[str, object] = {"meter_id": meter_id, "timestamp": timestamp, "value": value,
                                "category": category}
    event.update({k: v for k, v in opt.items() if v is not None})
    try:
        payload = json.dumps(event, separators=(",", ":"), ensure_ascii=False,
                             allow_nan=True).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        raise InputError(f"cannot encode reading: {exc}") from None
    checked = decode_reading(payload, max_future_s=None, categories=(category,))
    if isinstance(checked, Rejected):
        raise InputError(f"invalid reading ({checked.reason}): {checked.detail}")
    return meter_id.encode("utf-8"), payload


def ms_to_iso(ts_ms: int) -> str:
    """Epoch ms -> ISO-8601 UTC with a Z ('2025-01-05T15:15:00Z'; milliseconds only when set)."""
    dt = _EPOCH + ts_ms * _MS
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    millis = ts_ms % 1000
    return f"{text}.{millis:03d}Z" if millis else f"{text}Z"


def _timestamp_ms(stamp: object) -> int | Rejected:
    if type(stamp) is int:
        if not 0 <= stamp < _MAX_TS_MS:
            return Rejected("bad_timestamp", f"epoch ms {stamp} outside year 1970..9999")
        return stamp
    if type(stamp) is str:
        if len(stamp) > _MAX_TIMESTAMP_CHARS:
            return Rejected("bad_timestamp", f"{len(stamp)} characters is no ISO-8601 timestamp")
        try:
            dt = datetime.fromisoformat(stamp)
        except ValueError:
            return Rejected("bad_timestamp", f"not ISO-8601: {stamp!r}")
        if dt.tzinfo is None or dt.utcoffset() is None:
            return Rejected("naive_timestamp", f"{stamp!r} has no UTC offset (add Z or +hh:mm)")
        ms = (dt - _EPOCH) // _MS
        if not 0 <= ms < _MAX_TS_MS:
            return Rejected("bad_timestamp", f"{stamp!r} outside year 1970..9999 in UTC")
        return ms
    if stamp is None:
        return Rejected("missing_field:timestamp", "timestamp is required")
    return Rejected("wrong_type:timestamp",
                    f"expected ISO-8601 string or integer epoch ms, got {_json_type(stamp)}")


def _value(value: object) -> float | Rejected:
    if type(value) is float:
        number = value
    elif type(value) is int:
        if abs(value) > MAX_VALUE_KWH:  # before float(): a 400-digit int would overflow it
            digits = len(str(abs(value)))
            return Rejected("negative_value" if value < 0 else "absurd_value",
                            f"integer of {digits} digits, {MAX_VALUE_KWH:.0e} kWh max")
        number = float(value)
    elif value is None:
        return Rejected("missing_field:value", "value is required")
    else:
        return Rejected("wrong_type:value", f"expected number, got {_json_type(value)}")
    if not math.isfinite(number):
        return Rejected("not_finite", f"value is {number}")
    if number < 0:
        return Rejected("negative_value", f"{number} kWh")
    if number > MAX_VALUE_KWH:
        return Rejected("absurd_value", f"{number:.3e} kWh > {MAX_VALUE_KWH:.0e}")
    return number


def _text_problem(name: str, text: object) -> Rejected | None:
    if type(text) is not str:
        return Rejected(f"wrong_type:{name}", f"expected string, got {_json_type(text)}")
    if not 1 <= len(text) <= MAX_TEXT_CHARS:
        return Rejected(f"bad_field:{name}", f"length {len(text)} outside 1..{MAX_TEXT_CHARS}")
    if not text.isascii():
        try:
            text.encode("utf-8")  # lone surrogates (JSON "\ud800") cannot be written back
        except UnicodeEncodeError:
            return Rejected(f"bad_field:{name}", "contains an unpaired surrogate")
    return None


@functools.cache
def _year_start_ms(year: int) -> int:
    return (datetime(year, 1, 1, tzinfo=UTC) - _EPOCH) // _MS


def _json_type(value: object) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
             dict: "object", type(None): "null"}
    return names.get(type(value), type(value).__name__)
