"""Timestamp cells to epoch seconds (UTC), durations and time zones for the file readers.

Forms: epoch seconds, or milliseconds when >= 1e11 (1e11 s is year 5138); ISO 8601 with or
without an offset; or anything `strptime` reads with an explicit format. A time without an
offset is wall-clock time in `tz` (an IANA zone such as Europe/Amsterdam, a fixed offset such as
-08:00, default UTC). In a zone with daylight saving time:

- fall back: the repeated hour's wall times occur twice; per meter, the first occurrence is the
  earlier instant (summer time), the second the later one (standard time);
- spring forward: the skipped hour is simply absent from the meter's clock, and its readings
  map to consecutive UTC instants; a wall time inside the skipped hour (which no clock shows)
  is read with the offset in force before the change.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo

from stream_app.core.errors import InputError

EPOCH_MS_THRESHOLD = 1e11
FIRST_EPOCH_S = -62_135_596_800  # 0001-01-01T00:00:00Z
LAST_EPOCH_S = 253_402_300_799  # 9999-12-31T23:59:59Z
_OFFSET = re.compile(r"^([+-])(\d{1,2})(?::?(\d{2}))?$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([a-z]*)$")
_UNITS = {"": 1, "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
          "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
          "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
          "d": 86400, "day": 86400, "days": 86400}
_STEEL_DATE = re.compile(r"^(\d{2})/(\d{2})/(\d{4}) (\d{2}):(\d{2})$")


def format_timestamp(epoch_s: int) -> str:
    """ISO-8601 in UTC with an explicit +00:00 offset."""
    return datetime.fromtimestamp(int(epoch_s), tz=UTC).isoformat()


def parse_duration(text, what: str = "interval", *, allow_zero: bool = False) -> int:
    """`300`, `300s`, `5min`, `15m`, `1h`, `1.5h`, `1d` -> whole seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        text = str(text)
    m = _DURATION.match(str(text).strip().lower())
    seconds = float(m.group(1)) * _UNITS[m.group(2)] if m and m.group(2) in _UNITS else None
    if seconds is None or seconds != round(seconds) or (seconds == 0 and not allow_zero) \
            or seconds > 366 * 86400:
        raise InputError(f"{what} {text!r} is not a duration like 300, 5min, 15min or 1h "
                         f"(whole seconds, {'0' if allow_zero else '1'} s to 366 days)")
    return int(seconds)


def parse_tz(value) -> tzinfo:
    """None/'Z'/'UTC' -> UTC; '+09:00', '-0500', '+9' -> a fixed offset; else an IANA zone."""
    if value is None or isinstance(value, tzinfo):
        return value or UTC
    if isinstance(value, timedelta):
        return timezone(value)
    text = str(value).strip()
    if text.upper() in ("Z", "UTC", ""):
        return UTC
    m = _OFFSET.match(text)
    if m:
        sign, hours, minutes = m.group(1), int(m.group(2)), int(m.group(3) or 0)
        if hours > 14 or minutes >= 60:
            raise InputError(f"time zone offset {text!r} is outside -14:00..+14:00")
        delta = timedelta(hours=hours, minutes=minutes)
        return timezone(-delta if sign == "-" else delta)
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(f"time zone {text!r} is neither an offset like +09:00 nor a known zone "
                         "name like America/Los_Angeles") from None


class TimestampParser:
    """One file's timestamp cells -> epoch seconds; remembers the wall times seen per meter to
    place the repeated hour of a DST fall-back."""

    def __init__(self, tz=None, timestamp_format: str | None = None, steel: bool = False):
        self.zone = parse_tz(tz)
        self.format = timestamp_format
        self.steel = steel
        self._seen: dict[str, set] = {}

    def __call__(self, text: str, meter: str, column: str, line: int) -> int:
        try:
            return self._parse(text, meter, column, line)
        except (OverflowError, ValueError):
            raise InputError(f"timestamp {text[:40]!r} in column {column!r} is outside the "
                             "years 1-9999", row=line) from None

    def _parse(self, text: str, meter: str, column: str, line: int) -> int:
        if self.steel:
            return self._steel(text, meter, column, line)
        if self.format is not None:
            try:
                moment = datetime.strptime(text, self.format)
            except ValueError:
                raise InputError(f"timestamp {text[:40]!r} in column {column!r} does not match "
                                 f"--timestamp-format {self.format!r}", row=line) from None
            return self._epoch(moment, meter)
        try:
            number = float(text)
        except ValueError:
            number = None
        if number is not None and math.isfinite(number):
            seconds = number / 1000.0 if abs(number) >= EPOCH_MS_THRESHOLD else number
            if not FIRST_EPOCH_S <= seconds <= LAST_EPOCH_S:
                raise InputError(f"timestamp {text!r} in column {column!r} is outside the years "
                                 "1-9999 (as epoch seconds or milliseconds)", row=line)
            return round(seconds)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise InputError(f"cannot parse timestamp {text[:40]!r} in column {column!r} "
                             "(expected ISO-8601 like 2025-01-06T00:15:00+00:00, epoch seconds "
                             "or milliseconds, or give --timestamp-format)", row=line) from None
        return self._epoch(moment, meter)

    def _steel(self, text: str, meter: str, column: str, line: int) -> int:
        m = _STEEL_DATE.match(text)
        if m is None:
            raise InputError(f"cannot parse timestamp {text!r} in column {column!r} "
                             "(expected dd/mm/yyyy HH:MM)", row=line)
        day, month, year, hour, minute = map(int, m.groups())
        try:
            moment = datetime(year, month, day, hour, minute)
        except ValueError:
            raise InputError(f"invalid date {text!r} in column {column!r}", row=line) from None
        # 00:00 closes the day it is dated with: it is 24:00, the next day's midnight.
        return self._epoch(moment + timedelta(days=1) if hour == minute == 0 else moment, meter)

    def _epoch(self, moment: datetime, meter: str) -> int:
        if moment.tzinfo is not None:
            return int(moment.timestamp())
        early = moment.replace(tzinfo=self.zone)
        if self.zone is UTC or isinstance(self.zone, timezone):
            return int(early.timestamp())
        late = moment.replace(tzinfo=self.zone, fold=1)
        if early.utcoffset() > late.utcoffset():  # the repeated hour of a fall-back
            seen = self._seen.setdefault(meter, set())
            if moment in seen:
                return int(late.timestamp())
            seen.add(moment)
        return int(early.timestamp())
