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

`TimestampParser.parse_cells` and `parse_decimals` read a whole column of cells at once (numpy
over the file's bytes) for the forms whose every cell is read the same way whatever its row: a
cell they do not read is left for the per-row parser, which gives every cell its answer.

Over 300 lines: the per-row parser and the bulk parsers of the same forms stay side by side.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone, tzinfo

import numpy as np

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
# A decimal of at most 15 digits is an integer below 2**53 over a power of ten up to 10**15, both
# exact doubles, and one IEEE division rounds their quotient correctly: exactly float(text).
EXACT_DIGITS = 15
_POW10_INT = 10 ** np.arange(17, dtype=np.int64)
_POW10 = _POW10_INT.astype(np.float64)  # exact: 10**16 = 2**16 * 5**16, with 5**16 < 2**53
_NINES = 9 * _POW10_INT // 10  # 10**(k+1) - 10**k = 9 * 10**k, at k + 1
_U64 = np.uint64
_LANES = (_U64(0x00FF00FF00FF00FF), _U64(0x0000FFFF0000FFFF), _U64(0xFFFFFFFF))
# ISO 8601 forms read in bulk, one per length: `d` a digit, `T` the date-time separator (T or a
# space), `s` an offset's sign; a fraction only when it is zero (`0`): a nonzero one is truncated
# towards zero by datetime.timestamp, which the per-row parser does.
_ISO_DATES = ("dddd-dd-dd", "dddd-dd-ddTdd:dd", "dddd-dd-ddTdd:dd:dd", "dddd-dd-ddTdd:dd:dd.000",
              "dddd-dd-ddTdd:dd:dd.000000")
_ISO_FORMS = {len(f): f for date in _ISO_DATES
              for f in ((date,) if len(date) == 10 else (date, date + "Z", date + "sdd:dd"))}
# Day number (since 1970) of the first of each month of the years 1-9999, and each month's days.
_MONTH_START = np.arange("0001-01", "10000-02", dtype="datetime64[M]").astype(
    "datetime64[D]").astype(np.int64)
_MONTH_DAYS = np.diff(_MONTH_START)
_MONTH_START = _MONTH_START[:-1]


def format_timestamp(epoch_s: int) -> str:
    """ISO-8601 in UTC with an explicit +00:00 offset."""
    return datetime.fromtimestamp(int(epoch_s), tz=UTC).isoformat()


def parse_duration(text: str | float, what: str = "interval", *, allow_zero: bool = False) -> int:
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


def parse_tz(value: str | tzinfo | timedelta | None) -> tzinfo:
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


def pack_cells(texts: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Cell texts (bytes) -> (cells, lengths) in the layout of the bulk parsers: cells[j] holds
    bytes 8j..8j+7 of every cell as one little-endian uint64 (its first byte the lowest), zero
    past the cell's length. The file reader gathers the same layout straight from the file."""
    lengths = np.array([len(t) for t in texts], np.int64)
    width = 8 * max(1, -(-int(lengths.max(initial=0)) // 8))
    flat = np.zeros((len(texts), width), np.uint8)
    for i, t in enumerate(texts):
        flat[i, :len(t)] = np.frombuffer(t, np.uint8)
    return np.ascontiguousarray(flat.view(_U64).T), lengths


def _eight_digits(x: np.ndarray) -> np.ndarray:
    """Words of eight digit values (0-9, one a byte, the first digit in the lowest byte) ->
    their 8-digit numbers, with three multiply-adds over the word's lanes: pairs, fours, eight.
    No lane overflows into the next: 9*10+9, 99*100+99 and 9999*10000+9999 all fit."""
    x = (x * _U64(10) + (x >> _U64(8))) & _LANES[0]
    x = (x * _U64(100) + (x >> _U64(16))) & _LANES[1]
    return ((x * _U64(10000) + (x >> _U64(32))) & _LANES[2]).astype(np.int64)


def _bytes_set(flags: np.ndarray) -> np.ndarray:
    """Per cell, how many of its bytes are set, from its words of 0/1 bytes (words x n)."""
    counts = np.bitwise_count(flags)
    return np.asarray(counts[0] if len(counts) == 1 else counts.sum(axis=0, dtype=np.int64))


def _byte_index(flags: np.ndarray) -> np.ndarray:
    """Per cell, the index of its one set byte, from its words of 0/1 bytes (0 when none): in
    a word times 0x0001020304050607, the top byte gathers each byte k of the word times the
    multiplier's byte 7 - k, which holds k (no byte of the sum carries: 7 * 1 < 256)."""
    index: np.ndarray = ((flags[0] * _U64(0x0001020304050607)) >> _U64(56)).astype(np.int64)
    for j, w in enumerate(flags[1:], 1):
        index += ((w * _U64(0x0001020304050607)) >> _U64(56)).astype(np.int64)
        index += 8 * j * np.bitwise_count(w).astype(np.int64)
    return index


def parse_decimals(cells: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plain decimals in bulk: cells (see pack_cells) -> (float64 values, read). A cell is read
    when it is digits with at most one point, at most EXACT_DIGITS digits and 16 bytes (`2.751`,
    `17`, `.5`, `3.`), and then its value is exactly float(text); any other cell (empty, a sign,
    an exponent, a comma, blanks, more digits) is not read (read False, value NaN): it is for
    float() and the caller's rules."""
    cells = np.ascontiguousarray(cells[:2])  # 16 bytes at most
    width = 8 * len(cells)
    data = cells.view(np.uint8)  # byte by byte: the same words, every op elementwise
    digits = data - np.uint8(ord("0"))  # anything but a digit wraps to >= 10
    digit = digits < 10
    point = (data == ord(".")).view(_U64)
    points = _bytes_set(point)  # 0 or 1 in a read cell
    count = lengths - points
    read = ((_bytes_set(digit.view(_U64) | point) == lengths) & (points <= 1) & (count >= 1)
            & (count <= EXACT_DIGITS))
    words = (digits * digit).view(_U64)  # the point and the padding count as 0
    whole = _eight_digits(words[0])
    if len(words) > 1:
        whole = whole * 100_000_000 + _eight_digits(words[1])
    # whole: the cell's characters as digits (its point a 0), then zeros up to the width
    whole //= _POW10_INT[width - np.minimum(lengths, width)]
    decimals = np.minimum(np.maximum((lengths - 1 - _byte_index(point)) * points, 0),
                          EXACT_DIGITS)
    # drop the point's 0: whole = head * 10**(d+1) + tail, the number head * 10**d + tail; a
    # cell without a point divides by 10**16, more than any whole, so that head is 0
    split = np.where(points > 0, decimals + 1, 16)
    head = whole // _POW10_INT[split]
    mantissa = whole - head * _NINES[split]
    return np.where(read, mantissa / _POW10[decimals], np.nan), read


def _fixed_bits(form: str, count: int) -> list[tuple[int, int, int]]:
    """Per 8-byte word of a form: (mask, value) of its fixed bits (a literal's byte, a digit's
    high nibble 3) and the mask of its digits' low nibbles."""
    out = [[0, 0, 0] for _ in range(count)]
    for k, c in enumerate(form[:8 * count]):
        word, shift = out[k // 8], 8 * (k % 8)
        if c == "d":
            word[0] |= 0xF0 << shift
            word[1] |= 0x30 << shift
            word[2] |= 0x0F << shift
        elif c not in "Ts":
            word[0] |= 0xFF << shift
            word[1] |= ord(c) << shift
    return [(w[0], w[1], w[2]) for w in out]


def _matches(words: np.ndarray, nibbles: np.ndarray, fixed: tuple[int, int, int]) -> np.ndarray:
    """Whether words have a form's fixed bits and digits (`nibbles`: their low nibbles, see
    _fixed_bits): a low nibble over 9 plus 0x76 sets bit 7, which the fixed bits of a digit
    (0x3_) want clear, so one comparison checks both."""
    mask, value, low = fixed
    over = ((nibbles + _U64(low // 15 * 0x76)) & _U64(low // 15 * 0x80))  # bytes: 0x76, 0x80
    result: np.ndarray = ((words & _U64(mask)) | over) == _U64(value)
    return result


def _iso_cells(cells: np.ndarray, form: str,
               naive_offset: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Cells of one ISO form (see _ISO_FORMS) -> (epoch s, read); `naive_offset`: the offset in
    seconds of a time without one, None when such times are not read here. The date (the first
    10 bytes) is read once per run of rows that share it."""
    n = cells.shape[1]
    zone = "offset" if form.endswith("sdd:dd") else "Z" if form.endswith("Z") else None
    if zone is None and naive_offset is None:
        return np.zeros(n, np.int64), np.zeros(n, bool)
    words = list(cells[:-(-len(form) // 8)])
    digits = []  # each word's digit values, 0 elsewhere
    ok = np.ones(n, bool)
    fixed = _fixed_bits(form, len(words))
    for j, w in enumerate(words):
        digits.append(w & _U64(fixed[j][2]))
        if j:  # the date's word is checked once per run, below
            ok &= _matches(w, digits[j], fixed[j])
    pairs: dict[int, np.ndarray] = {}  # word -> its bytes as 10 * digit + next digit

    def number(a: int, at: np.ndarray | None = None) -> np.ndarray:  # the two digits at byte a
        j, k = divmod(a, 8)
        out: np.ndarray
        if k == 7:  # across two words
            x, y = (d if at is None else d[at] for d in (digits[j], digits[j + 1]))
            out = (x >> _U64(56)) * _U64(10) + (y & _U64(0xFF))
        elif at is None:
            if j not in pairs:
                pairs[j] = digits[j] * _U64(10) + (digits[j] >> _U64(8))
            out = (pairs[j] >> _U64(8 * k)) & _U64(0xFF)
        else:
            x = digits[j][at]
            out = ((x * _U64(10) + (x >> _U64(8))) >> _U64(8 * k)) & _U64(0xFF)
        return out

    new = np.ones(n, bool)  # a row whose date differs from the row before
    day_bytes = words[1] & _U64(0xFFFF)
    new[1:] = (words[0][1:] != words[0][:-1]) | (day_bytes[1:] != day_bytes[:-1])
    heads = np.flatnonzero(new)
    head_ok = _matches(words[0][heads], digits[0][heads], fixed[0])
    year = (number(0, heads) * _U64(100) + number(2, heads)).astype(np.int64)
    month, day = number(5, heads).astype(np.int64), number(8, heads).astype(np.int64)
    head_ok &= (year >= 2) & (year <= 9998) & (month >= 1) & (month <= 12) & (day >= 1)
    index = np.minimum(np.maximum((year - 1) * 12 + month - 1, 0), len(_MONTH_START) - 1)
    head_ok &= day <= _MONTH_DAYS[index]
    runs = np.append(heads[1:], n) - heads
    ok &= np.repeat(head_ok, runs)
    seconds = np.repeat((_MONTH_START[index] + day - 1) * 86400, runs)
    if len(form) > 10:
        separator = (words[1] >> _U64(16)) & _U64(0xFF)
        ok &= (separator == ord("T")) | (separator == ord(" "))
        hour, minute = number(11), number(14)
        ok &= (hour <= _U64(23)) & (minute <= _U64(59))
        clock = hour * _U64(3600) + minute * _U64(60)
        if len(form) > 16 and form[16] == ":":
            second = number(17)
            ok &= second <= _U64(59)
            clock += second
        seconds += clock.astype(np.int64)
    if zone == "offset":
        at = len(form) - 6
        sign = (words[at // 8] >> _U64(8 * (at % 8))) & _U64(0xFF)
        ok &= (sign == ord("+")) | (sign == ord("-"))
        hours, minutes = number(at + 1).astype(np.int64), number(at + 4).astype(np.int64)
        ok &= (hours <= 23) & (minutes <= 59)
        seconds -= np.where(sign == ord("-"), -1, 1) * (hours * 3600 + minutes * 60)
    elif zone is None:
        seconds -= naive_offset
    return seconds, ok


class TimestampParser:
    """One file's timestamp cells -> epoch seconds; remembers the wall times seen per meter to
    place the repeated hour of a DST fall-back."""

    def __init__(self, tz: str | tzinfo | timedelta | None = None, timestamp_format: str | None = None,
                 steel: bool = False) -> None:
        self.zone = parse_tz(tz)
        self.format = timestamp_format
        self.steel = steel
        self._seen: dict[str, set[datetime]] = {}

    def __call__(self, text: str, meter: str, column: str, line: int) -> int:
        try:
            return self._parse(text, meter, column, line)
        except (OverflowError, ValueError):
            raise InputError(f"timestamp {text[:40]!r} in column {column!r} is outside the "
                             "years 1-9999", row=line) from None

    def parse_cells(self, cells: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A column's cells at once (see pack_cells) -> (epoch s, read). A read cell gets
        exactly what __call__ gives its text; the others are for __call__, in file order. Read:
        epoch numbers that parse_decimals reads, and the ISO forms of _ISO_FORMS
        (`2025-01-06T00:15:00Z`, `2025-01-06 00:15:00+01:00`, `2025-01-06T00:15`...), those
        without an offset only in UTC or a fixed offset (in a zone with DST the file's order
        places the repeated hour, row by row). Nothing with a format or the steel dates."""
        n = cells.shape[1]
        seconds = np.zeros(n, np.int64)
        read = np.zeros(n, bool)
        if self.steel or self.format is not None or not n:
            return seconds, read
        naive = None
        if self.zone is UTC or isinstance(self.zone, timezone):
            delta = self.zone.utcoffset(None)
            naive = int(delta.total_seconds()) if delta % timedelta(seconds=1) == timedelta(0) \
                else None
        width = 8 * len(cells)
        present = np.bincount(np.minimum(lengths, width + 1), minlength=width + 2)
        for length in np.flatnonzero(present[:width + 1]):
            form = _ISO_FORMS.get(int(length))
            if form is None:
                continue
            if present[length] == n:  # one form throughout, as files mostly are
                seconds, read = _iso_cells(cells, form, naive)
                break
            rows = np.flatnonzero(lengths == length)
            got, ok = _iso_cells(cells[:, rows], form, naive)
            seconds[rows[ok]] = got[ok]
            read[rows[ok]] = True
        rest = np.flatnonzero(~read)
        if len(rest):  # epoch numbers
            number, numeric = parse_decimals(cells[:, rest], lengths[rest])
            number = np.where(number >= EPOCH_MS_THRESHOLD, number / 1000.0, number)
            numeric &= number <= LAST_EPOCH_S  # farther is an error, the per-row parser's
            seconds[rest[numeric]] = np.rint(number[numeric]).astype(np.int64)
            read[rest[numeric]] = True
        return seconds, read

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
        early_offset, late_offset = early.utcoffset(), late.utcoffset()
        assert early_offset is not None and late_offset is not None  # a zone (ZoneInfo) always has an offset
        if early_offset > late_offset:  # the repeated hour of a fall-back
            seen = self._seen.setdefault(meter, set())
            if moment in seen:
                return int(late.timestamp())
            seen.add(moment)
        return int(early.timestamp())
