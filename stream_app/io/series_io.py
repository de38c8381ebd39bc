"""Meter series in and out of CSV files: the edge where user data is validated.

Layouts recognised from the header (case-insensitive), unless columns are named explicitly:

- steel plant (UCI 851): `date` (dd/mm/yyyy HH:MM) and `Usage_kWh`. Each day's `00:00` row
  carries that day's date but closes the day (24:00), so it is moved to the next day; the file
  then forms a gap-free 15-min grid. Meter id "steel" unless `default_meter_id` is given.
- LEAD: `timestamp, building_id, meter_reading, anomaly` (meter, value, 0/1 label).
- meterwatch simulator: `timestamp, meter_id, category, value, label, anomaly_kind`.
- generic: a timestamp column (`timestamp`, `time`, `datetime`) and a value column (`value`,
  `kwh`, `usage_kwh`, `meter_reading`, `reading`); optional `meter_id`, `category`, `label`.

Separator: `,`, `;` or a tab, whichever the header line holds most of. With `;` or tab, a `,` in
a value is a decimal comma (`1.234,5` = 1234.5: dots before a decimal comma group thousands).

Timestamps (stream_app/core/timestamps.py): ISO-8601 with or without an offset (without one: wall
time in `tz`, default UTC), epoch seconds or milliseconds, or `timestamp_format` (strptime).

The grid (stream_app/core/grid.py): interval inferred or given, readings snapped or summed into
their slot, duplicates resolved by policy, short gaps interpolated, each repair reported in
`MeterSeries.repairs`; `MeterSeries.source` says where each file row went. Everything that
cannot be meant (inf or negative energy, longer gaps, an unknown category...) is an InputError
naming the file line (header = line 1), never a traceback.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from stream_app.core.errors import InputError
from stream_app.core.grid import DUPLICATE_POLICIES, build_grid
from stream_app.core.series import MeterSeries
from stream_app.core.thresholds import CATEGORIES
from stream_app.core.timestamps import (
    TimestampParser,
    parse_duration,
    parse_tz,
)

__all__ = ["add_reader_arguments", "read_meter_csv", "reader_options", "write_rows_csv"]
_TS_NAMES = ("timestamp", "time", "datetime")
_VALUE_NAMES = ("value", "kwh", "usage_kwh", "meter_reading", "reading")
_METER_NAMES = ("meter_id", "building_id", "meter")
_CATEGORY_NAMES = ("category",)
_LABEL_NAMES = ("label", "anomaly")
_MISSING = ("", "nan", "na", "null", "none")


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
    interval=None,
    grid_tolerance=None,
    duplicates: str = "last",
    tz=None,
    timestamp_format: str | None = None,
) -> list[MeterSeries]:
    """All meters of a CSV file, each on a regular grid with its repairs; see the docstring.

    `interval` / `grid_tolerance`: seconds or text like `15min` (default: inferred / a third of
    the interval); `duplicates`: last|mean|sum|error; `tz`: zone of times without an offset."""
    if default_category not in CATEGORIES:
        raise InputError(f"unknown category {default_category!r}; known: {', '.join(CATEGORIES)}")
    if not isinstance(max_gap, int) or max_gap < 0:
        raise InputError(f"max gap must be an integer >= 0, got {max_gap!r}")
    if duplicates not in DUPLICATE_POLICIES:
        raise InputError(f"duplicates policy {duplicates!r}: choose one of "
                         f"{', '.join(DUPLICATE_POLICIES)}")
    grid = {"interval_s": None if interval is None else parse_duration(interval),
            "tolerance_s": None if grid_tolerance is None else parse_duration(
                grid_tolerance, "grid tolerance", allow_zero=True),
            "duplicates": duplicates, "max_gap": max_gap}
    zone = parse_tz(tz)
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            first = fh.readline()
            delimiter = max((",", ";", "\t"), key=first.count) if first.strip() else ","
            fh.seek(0)
            reader = csv.reader(fh, delimiter=delimiter)
            header = next(reader, None)
            if header is None or not any(h.strip() for h in header):
                raise InputError(f"{path.name} is empty: expected a header line", row=1)
            cols = _resolve_columns([h.strip() for h in header], timestamp_col, value_col,
                                    meter_col, category_col, label_col)
            if default_meter_id is None:
                default_meter_id = "steel" if cols["steel"] else path.stem
            cols["decimal_comma"] = delimiter != ","
            clock = TimestampParser(zone, timestamp_format, steel=cols["steel"])
            raw = _read_rows(reader, cols, clock, default_meter_id, default_category)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path.name} is not UTF-8 text") from None
    except csv.Error as exc:
        raise InputError(f"{path.name} is not valid CSV: {exc}") from None
    if not raw:
        raise InputError(f"{path.name} has a header but no data rows", row=2)
    has_labels = cols["label"] is not None
    series = []
    for (meter, category), rows in raw.items():
        ts, values, labels, lines = zip(*rows)
        g = build_grid(meter, ts, values, labels, lines, **grid)
        series.append(MeterSeries(meter, category, g.timestamps, g.values, g.interval_s,
                                  g.labels if has_labels else None, g.repairs, g.source))
    return series


def add_reader_arguments(p: argparse.ArgumentParser) -> None:
    """The clock, grid and duplicate options every command that reads a meter CSV takes."""
    p.add_argument("--interval", type=_duration_arg,
                   help="reading interval: 300, 5min, 15min, 1h (default: inferred per meter)")
    p.add_argument("--grid-tolerance", type=_tolerance_arg,
                   help="readings closer than this to a grid point are snapped to it, others "
                   "are summed into their slot (default: a third of the interval)")
    p.add_argument("--duplicates", choices=DUPLICATE_POLICIES, default="last",
                   help="readings with different values in one slot (default: last)")
    p.add_argument("--tz", "--tz-offset", dest="tz",
                   help="zone of timestamps without an offset: Europe/Amsterdam or -08:00 "
                   "(default: UTC)")
    p.add_argument("--timestamp-format",
                   help="strptime format for timestamps that are not ISO-8601 or epoch numbers")


def reader_options(args) -> dict:
    """read_meter_csv keyword arguments from the options of add_reader_arguments."""
    return {"interval": args.interval, "grid_tolerance": args.grid_tolerance,
            "duplicates": args.duplicates, "tz": args.tz,
            "timestamp_format": args.timestamp_format}


def _duration_arg(text: str) -> int:
    try:
        return parse_duration(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _tolerance_arg(text: str) -> int:
    try:
        return parse_duration(text, "grid tolerance", allow_zero=True)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


def _read_rows(reader, cols, clock, default_meter_id: str, default_category: str) -> dict:
    """{(meter, category): [(timestamp, value, label, line), ...]} in file order."""
    header = cols["header"]
    needed = max(i for k, i in cols.items()
                 if k not in ("steel", "header", "decimal_comma") and i is not None)
    out: dict[tuple[str, str], list] = {}
    categories: dict[str, tuple[str, int]] = {}
    for fields in reader:
        line = reader.line_num
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # blank line, e.g. a trailing one
        if len(fields) <= needed:
            raise InputError(f"{len(fields)} fields, but the header has {len(header)}", row=line)
        meter = fields[cols["meter"]].strip() if cols["meter"] is not None else default_meter_id
        if not meter:
            raise InputError(f"empty meter id in column {header[cols['meter']]!r}", row=line)
        ts = clock(fields[cols["ts"]].strip(), meter, header[cols["ts"]], line)
        value = _parse_value(fields[cols["value"]].strip(), header[cols["value"]], line,
                             cols["decimal_comma"])
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


def _parse_value(text: str, column: str, line: int, decimal_comma: bool = False) -> float:
    if text.lower() in _MISSING:
        return math.nan
    number = text.replace(".", "").replace(",", ".") if decimal_comma and "," in text else text
    try:
        value = float(number)
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
