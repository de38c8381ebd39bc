"""Meter series in and out of CSV files: the edge where user data is validated.

Layouts recognised from the header (case-insensitive), unless columns are named explicitly:

- steel plant (UCI 851): `date` (dd/mm/yyyy HH:MM) and `Usage_kWh`. Each day's `00:00` row
  carries that day's date but closes the day (24:00), so it is moved to the next day; the file
  then forms a gap-free 15-min grid. Meter id "steel" unless `default_meter_id` is given.
- LEAD: `timestamp, building_id, meter_reading, anomaly` (meter, value, 0/1 label).
- meterwatch simulator: `timestamp, meter_id, category, value, label, anomaly_kind`.
- generic: a timestamp column (`timestamp`, `time`, `datetime`) and a value column (`value`,
  `kwh`, `usage_kwh`, `meter_reading`, `reading`); optional `meter_id`, `category`, `label`.

Timestamps: ISO-8601 with an offset, or without one, which is read as UTC (meters report in
local time often enough, but guessing a zone would silently shift every window; say the offset
in the file); or epoch numbers: seconds, or milliseconds when >= 1e11 (1e11 s is year 5138).

A meter's interval is its most frequent timestamp step (the smallest on ties); every step must
be a multiple of it.

Repairs, each reported in `MeterSeries.repairs`: an empty or NaN value is a missing reading; up
to `max_gap` consecutive missing readings (absent rows or empty values) are linearly
interpolated (absent rows get label 0), missing readings at either end are dropped; a repeated
timestamp with the identical value and label is dropped. Everything else that is wrong (inf or
negative energy, conflicting duplicates, longer gaps, an unknown category...) is an InputError
naming the file line (header = line 1), never a traceback.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from stream_app.errors import InputError
from stream_app.thresholds import CATEGORIES

EPOCH_MS_THRESHOLD = 1e11
FIRST_EPOCH_S = -62_135_596_800  # 0001-01-01T00:00:00Z
LAST_EPOCH_S = 253_402_300_799  # 9999-12-31T23:59:59Z
MAX_GRID = 5_000_000  # readings one meter of a file may span (143 years at 15 minutes)
_TS_NAMES = ("timestamp", "time", "datetime")
_VALUE_NAMES = ("value", "kwh", "usage_kwh", "meter_reading", "reading")
_METER_NAMES = ("meter_id", "building_id", "meter")
_CATEGORY_NAMES = ("category",)
_LABEL_NAMES = ("label", "anomaly")
_STEEL_DATE = re.compile(r"^(\d{2})/(\d{2})/(\d{4}) (\d{2}):(\d{2})$")
_MISSING = ("", "nan", "na", "null", "none")


@dataclass
class MeterSeries:
    """One meter's readings on a regular grid, in time order."""

    meter_id: str
    category: str
    timestamps: np.ndarray  # int64 epoch seconds, UTC
    values: np.ndarray  # float64 energy per interval (kWh), never negative
    interval_s: int
    labels: np.ndarray | None = None  # int8 0/1, 1 = anomalous reading
    repairs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.timestamps = np.ascontiguousarray(self.timestamps, dtype=np.int64)
        self.values = np.ascontiguousarray(self.values, dtype=np.float64)
        if self.labels is not None:
            self.labels = np.ascontiguousarray(self.labels, dtype=np.int8)
        n = len(self.timestamps)
        if len(self.values) != n or (self.labels is not None and len(self.labels) != n):
            raise ValueError("timestamps, values and labels must have the same length")

    def __len__(self) -> int:
        return len(self.values)


def format_timestamp(epoch_s: int) -> str:
    """ISO-8601 in UTC with an explicit +00:00 offset."""
    return datetime.fromtimestamp(int(epoch_s), tz=UTC).isoformat()


def write_rows_csv(path: str | Path, header: list[str], rows: Iterable[Sequence]) -> None:
    """Plain CSV (LF line ends); floats are written in their shortest exact form."""
    try:
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}") from None


def read_meter_csv(
    path: str | Path,
    *,
    timestamp_col: str | None = None,
    value_col: str | None = None,
    meter_col: str | None = None,
    category_col: str | None = None,
    label_col: str | None = None,
    default_meter_id: str | None = None,
    default_category: str = "industrial",
    max_gap: int = 4,
) -> list[MeterSeries]:
    """All meters of a CSV file, each sorted, de-duplicated and on a gap-free grid."""
    if default_category not in CATEGORIES:
        raise InputError(f"unknown category {default_category!r}; known: {', '.join(CATEGORIES)}")
    if not isinstance(max_gap, int) or max_gap < 0:
        raise InputError(f"max gap must be an integer >= 0, got {max_gap!r}")
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None or not any(h.strip() for h in header):
                raise InputError(f"{path.name} is empty: expected a header line", row=1)
            cols = _resolve_columns([h.strip() for h in header], timestamp_col, value_col,
                                    meter_col, category_col, label_col)
            if default_meter_id is None:
                default_meter_id = "steel" if cols["steel"] else path.stem
            raw = _read_rows(reader, cols, default_meter_id, default_category)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path.name} is not UTF-8 text") from None
    except csv.Error as exc:
        raise InputError(f"{path.name} is not valid CSV: {exc}") from None
    if not raw:
        raise InputError(f"{path.name} has a header but no data rows", row=2)
    has_labels = cols["label"] is not None
    return [_build_series(m, cat, rows, has_labels, max_gap) for (m, cat), rows in raw.items()]


def _find(header: list[str], explicit: str | None, names: tuple[str, ...], what: str):
    lower = {h.lower(): i for i, h in enumerate(header)}
    if explicit is not None:
        if explicit.lower() not in lower:
            raise InputError(f"{what} column {explicit!r} not found; available columns: "
                             f"{', '.join(header)}", row=1)
        return lower[explicit.lower()]
    return next((lower[n] for n in names if n in lower), None)


def _resolve_columns(header, timestamp_col, value_col, meter_col, category_col, label_col):
    lower = {h.lower() for h in header}
    steel = "date" in lower and "usage_kwh" in lower and timestamp_col in (None, "date")
    ts_names = ("date",) if steel else _TS_NAMES
    cols = {
        "steel": steel,
        "ts": _find(header, timestamp_col, ts_names, "timestamp"),
        "value": _find(header, value_col, _VALUE_NAMES, "value"),
        "meter": _find(header, meter_col, _METER_NAMES, "meter"),
        "category": _find(header, category_col, _CATEGORY_NAMES, "category"),
        "label": _find(header, label_col, _LABEL_NAMES, "label"),
        "header": header,
    }
    for key, names, option in (("ts", ts_names, "--timestamp-col"),
                               ("value", _VALUE_NAMES, "--value-col")):
        if cols[key] is None:
            raise InputError(f"no {'timestamp' if key == 'ts' else 'value'} column (looked for "
                             f"{', '.join(names)}; name it with {option}); available columns: "
                             f"{', '.join(header)}", row=1)
    return cols


def _read_rows(reader, cols, default_meter_id: str, default_category: str) -> dict:
    """{(meter, category): [(timestamp, value, label, line), ...]} in file order."""
    header = cols["header"]
    needed = max(i for k, i in cols.items() if k not in ("steel", "header") and i is not None)
    out: dict[tuple[str, str], list] = {}
    categories: dict[str, tuple[str, int]] = {}
    for fields in reader:
        line = reader.line_num
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # blank line, e.g. a trailing one
        if len(fields) <= needed:
            raise InputError(f"{len(fields)} fields, but the header has {len(header)}", row=line)
        ts = _parse_timestamp(fields[cols["ts"]].strip(), cols["steel"], header[cols["ts"]], line)
        value = _parse_value(fields[cols["value"]].strip(), header[cols["value"]], line)
        meter = fields[cols["meter"]].strip() if cols["meter"] is not None else default_meter_id
        if not meter:
            raise InputError(f"empty meter id in column {header[cols['meter']]!r}", row=line)
        category = default_category
        if cols["category"] is not None:
            category = fields[cols["category"]].strip() or default_category
            if category not in CATEGORIES:
                raise InputError(f"unknown category {category!r}; known: "
                                 f"{', '.join(CATEGORIES)}", row=line)
        first = categories.setdefault(meter, (category, line))
        if first[0] != category:
            raise InputError(f"meter {meter!r} has category {category!r} here but "
                             f"{first[0]!r} at row {first[1]}", row=line)
        label = 0
        if cols["label"] is not None:
            label = _parse_label(fields[cols["label"]].strip(), header[cols["label"]], line)
        out.setdefault((meter, category), []).append((ts, value, label, line))
    return out


def _parse_timestamp(text: str, steel: bool, column: str, line: int) -> int:
    if steel:
        m = _STEEL_DATE.match(text)
        if m is None:
            raise InputError(f"cannot parse timestamp {text!r} in column {column!r} "
                             "(expected dd/mm/yyyy HH:MM)", row=line)
        day, month, year, hour, minute = map(int, m.groups())
        try:
            epoch = int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp())
        except ValueError:
            raise InputError(f"invalid date {text!r} in column {column!r}", row=line) from None
        # 00:00 closes the day it is dated with: it is 24:00, the next day's midnight.
        return epoch + 86400 if hour == 0 and minute == 0 else epoch
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
        raise InputError(f"cannot parse timestamp {text!r} in column {column!r} (expected "
                         "ISO-8601 like 2025-01-06T00:15:00+00:00, or epoch seconds or "
                         "milliseconds)", row=line) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _parse_value(text: str, column: str, line: int) -> float:
    if text.lower() in _MISSING:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"non-numeric value {text!r} in column {column!r}", row=line) from None
    if math.isinf(value):
        raise InputError(f"infinite value {text!r} in column {column!r}", row=line)
    if value < 0:
        raise InputError(f"negative value {text} in column {column!r}: energy per interval "
                         "cannot be negative", row=line)
    return value


def _parse_label(text: str, column: str, line: int) -> int:
    lowered = text.lower()
    if lowered in ("0", "0.0", "false"):
        return 0
    if lowered in ("1", "1.0", "true"):
        return 1
    raise InputError(f"label {text!r} in column {column!r} must be 0 or 1", row=line)


def _build_series(meter: str, category: str, rows: list, has_labels: bool,
                  max_gap: int) -> MeterSeries:
    rows.sort(key=lambda r: r[0])  # stable: equal timestamps keep file order
    repairs: list[str] = []
    kept = [rows[0]]
    for row in rows[1:]:
        prev = kept[-1]
        if row[0] != prev[0]:
            kept.append(row)
            continue
        same = (row[1] == prev[1] or (math.isnan(row[1]) and math.isnan(prev[1]))) \
            and row[2] == prev[2]
        if not same:
            raise InputError(f"duplicate timestamp {format_timestamp(row[0])} for meter "
                             f"{meter!r} at rows {prev[3]} and {row[3]} with different values",
                             row=row[3])
        repairs.append(f"{meter}: dropped duplicate reading at row {row[3]} "
                       f"(same as row {prev[3]})")
    if len(kept) < 2:
        raise InputError(f"meter {meter!r} has {len(kept)} reading; need at least 2 to know "
                         "its interval", row=kept[0][3])
    ts = np.array([r[0] for r in kept], dtype=np.int64)
    steps = np.diff(ts)
    # The most frequent step, the smallest on ties: the median misreads short files with gaps.
    uniq, counts = np.unique(steps, return_counts=True)
    interval = int(uniq[np.argmax(counts)])
    for i in np.flatnonzero(steps % interval):
        raise InputError(f"meter {meter!r}: rows {kept[i][3]} and {kept[i + 1][3]} are "
                         f"{steps[i]} s apart, not a multiple of its {interval} s interval",
                         row=kept[i + 1][3])
    finite = np.flatnonzero([not math.isnan(r[1]) for r in kept])
    if len(finite):  # a gap between two readings too long to fill: say so before the grid
        for i in np.flatnonzero(steps // interval - 1 > max_gap):
            if finite[0] <= i < finite[-1]:
                raise _gap_error(meter, steps[i] // interval - 1,
                                 f"between rows {kept[i][3]} and {kept[i + 1][3]}",
                                 ts[i] + interval, ts[i + 1] - interval, max_gap, kept[i + 1][3])
    n = int((ts[-1] - ts[0]) // interval) + 1
    if n > MAX_GRID:
        raise InputError(f"meter {meter!r} spans {n:,} readings of {interval} s (rows "
                         f"{kept[0][3]} to {kept[-1][3]}), more than {MAX_GRID:,}: check its "
                         "timestamps or split the file", row=kept[-1][3])
    pos = ((ts - ts[0]) // interval).astype(np.int64)
    values = np.full(n, np.nan)
    values[pos] = [r[1] for r in kept]
    labels = np.zeros(n, dtype=np.int8)
    labels[pos] = [r[2] for r in kept]
    lines = np.zeros(n, dtype=np.int64)  # 0 = no row in the file
    lines[pos] = [r[3] for r in kept]
    grid = ts[0] + interval * np.arange(n, dtype=np.int64)
    lo, hi = _fill_missing(meter, grid, values, lines, max_gap, repairs)
    if hi - lo < 2:
        raise InputError(f"meter {meter!r} has 1 reading with a value; need at least 2 to know "
                         "its interval", row=int(lines[lo]))
    return MeterSeries(meter, category, grid[lo:hi], values[lo:hi], interval,
                       labels[lo:hi] if has_labels else None, repairs)


def _describe(lines: np.ndarray, a: int, b: int) -> str:
    present = lines[a:b][lines[a:b] > 0]
    if len(present) == 0:
        before = lines[a - 1] if a > 0 else 0
        after = lines[b] if b < len(lines) else 0
        return f"between rows {before} and {after}"
    return f"at row {present[0]}" if len(present) == 1 else f"at rows {present[0]}-{present[-1]}"


def _gap_error(meter: str, n: int, where: str, first: int, last: int, max_gap: int,
               row: int) -> InputError:
    return InputError(f"meter {meter!r}: gap of {n} missing readings {where} "
                      f"({format_timestamp(first)} to {format_timestamp(last)}), more than the "
                      f"{max_gap} that are interpolated; raise the limit with --max-gap", row=row)


def _fill_missing(meter: str, grid: np.ndarray, values: np.ndarray, lines: np.ndarray,
                  max_gap: int, repairs: list[str]) -> tuple[int, int]:
    """Interpolate short interior runs of NaN in place; return the slice without NaN ends."""
    missing = np.isnan(values)
    if missing.all():
        raise InputError(f"meter {meter!r} has no readings, only missing values",
                         row=int(lines[lines > 0][0]))
    lo = int(np.argmax(~missing))
    hi = len(values) - int(np.argmax(~missing[::-1]))
    if lo > 0:
        repairs.append(f"{meter}: dropped {lo} missing readings at the start "
                       f"({_describe(lines, 0, lo)})")
    if hi < len(values):
        repairs.append(f"{meter}: dropped {len(values) - hi} missing readings at the end "
                       f"({_describe(lines, hi, len(values))})")
    edges = np.diff(np.concatenate(([0], missing[lo:hi].astype(np.int8), [0])))
    for a, b in zip(np.flatnonzero(edges == 1) + lo, np.flatnonzero(edges == -1) + lo):
        where = _describe(lines, a, b)
        if b - a > max_gap:
            raise _gap_error(meter, b - a, where, grid[a], grid[b - 1], max_gap, int(lines[b]))
        values[a:b] = np.interp(np.arange(a, b), [a - 1, b], [values[a - 1], values[b]])
        repairs.append(f"{meter}: interpolated {b - a} missing readings {where}")
    return lo, hi
