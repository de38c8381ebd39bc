"""Meter series in and out of CSV files: the edge where user data is validated.

Layouts recognised from the header (case-insensitive), unless columns are named explicitly:

- steel plant (UCI 851): `date` (dd/mm/yyyy HH:MM) and `Usage_kWh`. Each day's `00:00` row
  carries that day's date but closes the day (24:00), so it is moved to the next day; the file
  then forms a gap-free 15-min grid. Meter id "steel" unless `default_meter_id` is given.
- LEAD: `timestamp, building_id, meter_reading, anomaly` (meter, value, 0/1 label).
- meterwatch simulator: `timestamp, meter_id, category, value, label, anomaly_kind`.
- generic: a timestamp column (`timestamp`, `time`, `datetime`) and a value column (`value`,
  `kwh`, `usage_kwh`, `meter_reading`, `reading`); optional `meter_id`, `category`, `label`.

Parquet: a file with Parquet's magic bytes is read as the CSV of its table
(stream_app/io/parquet.py), by the per-row reader.

Separator: `,`, `;` or a tab, whichever the header line holds most of. With `;` or tab, a `,` in
a value is a decimal comma (`1.234,5` = 1234.5: dots before a decimal comma group thousands).

Units (`unit`, default kWh): energy per interval in kWh, Wh or MWh is scaled to kWh; power in kW
or W is averaged into its grid slot and becomes the interval's energy (kW x interval in hours).
A cumulative register (`cumulative=True`) becomes interval energy: each reading minus the one
before it, a step over several intervals shared evenly by them (the gap's other slots are then
interpolated from it); the first reading is the baseline, and a drop (rollover or meter reset)
leaves that interval's energy unknown and splits the series there (reported), never a negative
consumption. A value column that never decreases over many readings is reported as a likely
register.

Timestamps (stream_app/core/timestamps.py): ISO-8601 with or without an offset (without one: wall
time in `tz`, default UTC), epoch seconds or milliseconds, or `timestamp_format` (strptime).

The grid (stream_app/core/grid.py): interval inferred or given, readings snapped or summed into
their slot, duplicates resolved by policy, short gaps interpolated, each repair reported in
`MeterSeries.repairs`; `MeterSeries.source` says where each file row went. A negative reading
(energy or power, or a register's reading) is a data fault of the meter, not an unreadable row:
it is kept as one (`source.faults`, kind `negative_reading`), never scored, and its slot counts
as missing. Everything that cannot be meant (inf, an unknown category, an absurd span...) is an
InputError naming the file line (header = line 1), never a traceback.

Two readers, one result: the column reader (`_read_columns`) splits the file's bytes with numpy
and parses whole columns at once (ISO times, epoch numbers, plain decimals, meter ids by their
runs); a cell it cannot read in bulk is read by the per-row functions, and a file it cannot read
exactly as the per-row reader would (quotes, a steel date, --timestamp-format, a bad row...) is
left to the per-row reader (`_read_rows`, the csv module), which also words every error.

Over 300 lines: both readers of the one format stay side by side, so that they read alike.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import click
import numpy as np

from stream_app.core.errors import InputError
from stream_app.core.grid import (
    DUPLICATE_POLICIES,
    Grid,
    build_grid,
    describe_rows,
    infer_interval,
)
from stream_app.core.series import MeterSeries
from stream_app.core.thresholds import CATEGORIES
from stream_app.core.timestamps import (
    TimestampParser,
    parse_decimals,
    parse_duration,
    parse_tz,
)
from stream_app.io.parquet import ParquetRows, is_parquet

__all__ = ["UNITS", "Duration", "csv_params", "names_meters", "read_meter_csv", "reader_options",
           "reader_params", "write_rows_csv"]
# unit -> (factor to kWh or kW, is power)
UNITS = {"kWh": (1.0, False), "Wh": (1e-3, False), "MWh": (1e3, False),
         "kW": (1.0, True), "W": (1e-3, True)}
REGISTER_HINT_MIN = 672  # readings that never decrease (a week at 15 min) before a register is suspected
_TS_NAMES = ("timestamp", "time", "datetime")
_VALUE_NAMES = ("value", "kwh", "usage_kwh", "meter_reading", "reading")
_METER_NAMES = ("meter_id", "building_id", "meter")
_CATEGORY_NAMES = ("category",)
_LABEL_NAMES = ("label", "anomaly")
_MISSING = ("", "nan", "na", "null", "none")
NEGATIVE_NOTE = "negative reading: a data fault of a consumption meter, not scored"
_FIELD_LIMIT = 131072  # csv's default field_size_limit: longer lines are left to csv to judge
_CELL_WIDTH = 64  # bytes; a longer cell (no meter id, time or number is) leaves the file to csv
_BLOCK = 1 << 20  # bytes of whole lines split and parsed at once
_CHUNK = 65536  # rows of a column parsed at once
_Field = Callable[[int], tuple[np.ndarray, np.ndarray]]  # column -> (cell starts, cell lengths)
# [j][length]: the bytes of word j that lie in a cell of that length
_WORD_MASKS = np.array([[(1 << 8 * min(8, max(0, n - 8 * j))) - 1 for n in range(_CELL_WIDTH + 1)]
                        for j in range(_CELL_WIDTH // 8)], np.uint64)


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
    unit: str = "kWh",
    cumulative: bool = False,
    bulk: bool = True,
) -> list[MeterSeries]:
    """All meters of a CSV file, each on a regular grid with its repairs; see the docstring.

    `interval` / `grid_tolerance`: seconds or text like `15min` (default: inferred / a third of
    the interval); `duplicates`: last|mean|sum|error; `tz`: zone of times without an offset;
    `unit`: one of UNITS; `cumulative`: the values are a register's readings; `bulk=False`:
    read row by row only (the reference the column reader is checked against: same result)."""
    if unit not in UNITS:
        raise InputError(f"unknown unit {unit!r}; known: {', '.join(UNITS)}")
    if default_category not in CATEGORIES:
        raise InputError(f"unknown category {default_category!r}; known: {', '.join(CATEGORIES)}")
    if not isinstance(max_gap, int) or max_gap < 0:
        raise InputError(f"max gap must be an integer >= 0, got {max_gap!r}")
    if duplicates not in DUPLICATE_POLICIES:
        raise InputError(f"duplicates policy {duplicates!r}: choose one of "
                         f"{', '.join(DUPLICATE_POLICIES)}")
    interval_s = None if interval is None else parse_duration(interval)
    tolerance_s = None if grid_tolerance is None else parse_duration(
        grid_tolerance, "grid tolerance", allow_zero=True)
    factor, power = UNITS[unit]
    aggregate = "mean" if power else "sum"
    zone = parse_tz(tz)
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader, delimiter, header = _header(fh, path)
            parquet = isinstance(reader, ParquetRows)
            cols = _resolve_columns(header, timestamp_col, value_col, meter_col, category_col,
                                    label_col)
            if default_meter_id is None:
                default_meter_id = "steel" if cols["steel"] else path.stem
            cols["decimal_comma"] = delimiter != ","
            raw = None
            if bulk and not parquet:
                raw = _read_columns(path, delimiter, cols,
                                    TimestampParser(zone, timestamp_format, steel=cols["steel"]),
                                    default_meter_id, default_category)
            if raw is None:  # a fresh clock: the column reader's has seen the fall-back's hours
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
    for (meter, category), (ts, values, labels, lines) in raw.items():
        values = values.astype(np.float64) * factor
        negative = values < 0  # a data fault of a consumption meter: kept, never scored
        read = values
        if negative.any():
            values = np.where(negative, np.nan, values)
        notes: list[str] = []
        shared: list[tuple[int, int, float]] = []
        breaks = None
        if cumulative:
            values, breaks = _register_deltas(meter, ts, values, lines, interval_s, notes,
                                              shared)
        elif not power:
            notes += _register_hint(meter, ts, values)
        g = build_grid(meter, ts, values, labels, lines, interval_s=interval_s,
                       tolerance_s=tolerance_s, duplicates=duplicates, max_gap=max_gap,
                       aggregate=aggregate, breaks=breaks)
        grid_values = g.values * (g.interval_s / 3600.0) if power else g.values
        for end, span, share in shared:  # the slots a register step spans get its share
            want = end - g.interval_s * np.arange(1, span)
            slots = np.minimum(np.searchsorted(g.timestamps, want), len(g.timestamps) - 1)
            grid_values[slots[g.timestamps[slots] == want]] = share
        if power:
            notes.append(f"{meter}: {unit} readings turned into kWh per {g.interval_s} s interval")
        if negative.any():
            notes.append(_negative_faults(meter, g, negative, read))
        series.append(MeterSeries(meter, category, g.timestamps, grid_values, g.interval_s,
                                  g.labels if has_labels else None, notes + g.repairs, g.source))
    return series


def _negative_faults(meter: str, g: Grid, negative: np.ndarray, read: np.ndarray) -> str:
    """Negative readings were read as missing (their slots interpolated in a short gap, else
    the series split there); each one's row is written back as it was, as a data fault of kind
    `negative_reading`, unscored. Returns the repair line."""
    src = g.source
    rows = np.flatnonzero(negative)
    src.values[rows] = read[rows]
    src.index[rows] = -1
    for r in rows.tolist():
        src.notes[r] = NEGATIVE_NOTE
        src.faults[r] = "negative_reading"
    return (f"{meter}: {len(rows)} negative readings ({describe_rows(src.lines[rows])}) kept as "
            "data faults (kind negative_reading, not scored): a consumption meter cannot use "
            "negative energy, so their slots count as missing")


def names_meters(path: str | Path, meter_col: str | None = None) -> bool:
    """Whether a meter CSV that read_meter_csv has read says which meter each row is (a meter
    column, named by `meter_col` or found by its name), rather than holding one unnamed meter."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as fh:
        header = _header(fh, path)[2]
    return _find(header, meter_col, _METER_NAMES, "meter") is not None


def _header(fh, path: Path):
    """(csv reader past the header line, delimiter, header cells stripped) of an open file; a
    Parquet file's rows as that reader's would be (stream_app.io.parquet)."""
    if is_parquet(path):
        rows = ParquetRows(path)
        return rows, ",", rows.header
    first = fh.readline()
    delimiter = max((",", ";", "\t"), key=first.count) if first.strip() else ","
    fh.seek(0)
    reader = csv.reader(fh, delimiter=delimiter)
    header = next(reader, None)
    if header is None or not any(h.strip() for h in header):
        raise InputError(f"{path.name} is empty: expected a header line", row=1)
    return reader, delimiter, [h.strip() for h in header]


def _register_deltas(meter: str, ts: np.ndarray, values: np.ndarray, lines: np.ndarray,
                     interval_s: int | None, notes: list[str],
                     shared: list[tuple[int, int, float]]) -> tuple[np.ndarray, np.ndarray]:
    """A register's readings (file order) -> (energy of the interval each one closes, True
    where the register dropped: the series is split there); a step over several intervals
    appends (its end, intervals, share) to `shared`."""
    order = np.lexsort((lines, ts))
    t, v = ts[order], values[order]
    known = ~np.isnan(v)
    out = np.full(len(v), np.nan)
    idx = np.flatnonzero(known)
    if len(idx) < 2:
        raise InputError(f"meter {meter!r}: a register needs at least 2 readings with a value")
    step = interval_s or infer_interval(np.unique(t[idx]))[0]
    prev, cur = idx[:-1], idx[1:]
    delta = v[cur] - v[prev]
    spans = np.maximum(1, np.rint((t[cur] - t[prev]) / step)).astype(np.int64)
    same_time = t[cur] == t[prev]
    delta = np.where(same_time, np.nan, delta / spans)
    drops = np.flatnonzero(delta < 0)
    out[cur] = np.where(delta < 0, np.nan, delta)
    notes.append(f"{meter}: register readings turned into interval energy (the first, at row "
                 f"{int(lines[order[idx[0]]])}, is the baseline)")
    if drops.size:
        rows = ", ".join(str(int(lines[order[cur[k]]])) for k in drops[:5])
        notes.append(f"{meter}: the register dropped {drops.size} times (rollover or reset; rows "
                     f"{rows}{', ...' if drops.size > 5 else ''}): those intervals' energy is "
                     "unknown, the series is split there (no window spans it)")
    for k in np.flatnonzero((spans > 1) & (delta >= 0)):
        shared.append((int(t[cur[k]]), int(spans[k]), float(delta[k])))
    if np.any(spans > 1):
        notes.append(f"{meter}: {int(np.count_nonzero(spans > 1))} register steps over several "
                     "intervals shared evenly by them")
    result, dropped = np.empty(len(v)), np.zeros(len(v), dtype=bool)
    result[order] = out
    dropped[order[cur[drops]]] = True
    return result, dropped


def _register_hint(meter: str, ts: np.ndarray, values: np.ndarray) -> list[str]:
    """A warning when the values look like a cumulative register rather than interval energy."""
    v = values[np.argsort(ts, kind="stable")]
    v = v[~np.isnan(v)]
    if len(v) < REGISTER_HINT_MIN:
        return []
    steps = np.diff(v)
    if np.all(steps >= 0) and np.count_nonzero(steps > 0) > 0.9 * len(steps):
        return [f"{meter}: warning: the values never decrease over {len(v)} readings, like a "
                "cumulative register; if they are, pass --cumulative"]
    return []


def csv_params() -> list[click.Option]:
    """The column and grid options of every command that reads a meter CSV (train, score,
    sweep, evaluate, replay)."""
    return [
        click.Option(["--timestamp-col"], help="timestamp column (default: autodetect)"),
        click.Option(["--value-col"], help="value column, kWh per interval (default: autodetect)"),
        click.Option(["--meter-col"], help="meter id column (default: autodetect, else one meter)"),
        click.Option(["--category-col"], help="usage category column"),
        click.Option(["--meter-id"], help="meter id when the file holds one meter"),
        click.Option(["--category"], default="industrial",
                     help="usage category when there is no category column"),
        click.Option(["--max-gap"], type=int, default=4,
                     help="missing readings in a row filled by interpolation"),
        *reader_params(),
    ]


def reader_params() -> list[click.Option]:
    """The clock, grid and duplicate options every command that reads a meter CSV takes."""
    return [
        click.Option(["--interval"], type=Duration("interval"),
                     help="reading interval: 300, 5min, 15min, 1h (default: inferred per meter)"),
        click.Option(["--grid-tolerance"], type=Duration("grid tolerance", allow_zero=True),
                     help="readings closer than this to a grid point are snapped to it, others "
                     "are summed into their slot (default: a third of the interval)"),
        click.Option(["--duplicates"], type=click.Choice(DUPLICATE_POLICIES), default="last",
                     help="readings with different values in one slot"),
        click.Option(["--tz", "--tz-offset", "tz"],
                     help="zone of timestamps without an offset: Europe/Amsterdam or -08:00 "
                     "(default: UTC)"),
        click.Option(["--timestamp-format"],
                     help="strptime format for timestamps that are not ISO-8601 or epoch numbers"),
        click.Option(["--unit"], type=click.Choice(tuple(UNITS)), default="kWh",
                     help="what a value is: energy per interval (kWh, Wh, MWh) or power (kW, W), "
                     "turned into kWh per interval"),
        click.Option(["--cumulative"], is_flag=True,
                     help="values are a register's readings (they only grow): use the differences"),
    ]


def reader_options(args) -> dict:
    """read_meter_csv keyword arguments from the options of reader_params."""
    return {"interval": args.interval, "grid_tolerance": args.grid_tolerance,
            "duplicates": args.duplicates, "tz": args.tz,
            "timestamp_format": args.timestamp_format, "unit": args.unit,
            "cumulative": args.cumulative}


class Duration(click.ParamType):
    """A duration option (300, 5min, 1h) in seconds, refused in parse_duration's own words."""

    name = "duration"

    def __init__(self, what: str, allow_zero: bool = False):
        self.what, self.allow_zero = what, allow_zero

    def convert(self, value, param, ctx) -> int:
        try:
            return parse_duration(value, self.what, allow_zero=self.allow_zero)
        except InputError as exc:
            self.fail(str(exc), param, ctx)


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


def _needed(cols) -> int:
    """The highest column index a row must have."""
    return max(i for k, i in cols.items()
               if k not in ("steel", "header", "decimal_comma") and i is not None)


def _read_columns(path: Path, delimiter: str, cols, clock, default_meter_id: str,
                  default_category: str) -> dict | None:
    """What _read_rows returns, read column by column with numpy over the file's bytes, in
    blocks of whole lines of about _BLOCK bytes (a block's arrays stay in the CPU's cache).

    None (and _read_rows reads the file) when the file holds anything read here otherwise than
    _read_rows would: a steel date or --timestamp-format, quotes, a lone CR, NUL, invalid
    UTF-8, a cell longer than _CELL_WIDTH, a line longer than csv's field limit, a row with too
    few fields, and any cell that is an error (so that _read_rows names the first bad row, as
    it always has). Cells the bulk parsers do not read (another timestamp form, a zone with
    DST, a decimal comma, `NA`, blanks around a value) are read one at a time in file order by
    the per-row functions."""
    if cols["steel"] or clock.format is not None:
        return None
    data, size = _padded_bytes(path)
    if data is None or data.find(b'"', 0, size) >= 0 or data.find(b"\0", 0, size) >= 0:
        return None
    crlf = data.find(b"\r", 0, size) >= 0
    if crlf and data.count(b"\r", 0, size) != data.count(b"\r\n", 0, size):
        return None
    if not data.isascii():  # (the padding is)
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return None
    body = data.find(b"\n", 0, size) + 1  # the first data line (the header is line 1)
    if not body:
        return {}
    padded = np.frombuffer(data, np.uint8)
    names = {} if cols["meter"] is not None else {default_meter_id: 0}  # name -> code
    kinds = {default_category: 0}  # category -> code
    width, needed = len(cols["header"]) - 1, _needed(cols)
    rows = int(np.count_nonzero(padded[body:size + 1] == ord("\n")))  # at most
    columns = tuple(np.empty(rows, dtype) for dtype in (np.int64, np.int64, np.int64, np.float64,
                                                        np.int64, np.int64))
    done, line = 0, 2
    try:
        for a, b in _blocks(data, size, body):
            split = _split_fields(padded, a, b, line, delimiter, width, needed, crlf)
            if split is None:
                return None
            lines, field, line = split
            block = _read_block(data, padded, lines, field, cols, clock, names, kinds,
                                default_category)
            for column, part in zip(columns, block):
                column[done:done + len(lines)] = part
            done += len(lines)
    except (InputError, _Decline):
        return None
    if not done:
        return {}
    meter, category, ts, values, labels, lines = (column[:done] for column in columns)
    meters, categories = list(names), list(kinds)
    out = {}
    for rows in _groups(meter):  # meters in order of first appearance
        found = category[rows]
        if np.any(found != found[0]):
            return None  # a meter with two categories: an error
        key = (meters[meter[rows][0]], categories[found[0]])
        out[key] = (ts[rows], values[rows], labels[rows], lines[rows])
    return out


def _read_block(data: bytearray, padded: np.ndarray, lines: np.ndarray, field: _Field, cols, clock,
                names: dict[str, int], kinds: dict[str, int], default_category: str) -> tuple:
    """(meter codes, category codes, timestamps, values, labels, lines) of one block's rows;
    `names` and `kinds` give the meters and categories their codes across blocks. Raises
    InputError or _Decline when the file is for _read_rows."""
    header = cols["header"]

    def texts(i: int, rows) -> list[str]:
        start, length = field(i)
        return [data[start[r]:start[r] + length[r]].decode().strip() for r in rows]

    def codes(i: int, clean, book: dict[str, int]) -> np.ndarray:
        index, found = _distinct(padded, *field(i), clean)
        return np.array([book.setdefault(name, len(book)) for name in found], np.int64)[index]

    meter, category = np.zeros(len(lines), np.int64), np.zeros(len(lines), np.int64)
    if cols["meter"] is not None:
        meter = codes(cols["meter"], str.strip, names)
        if "" in names:
            raise _Decline  # an empty meter id: an error
    if cols["category"] is not None:
        category = codes(cols["category"], lambda t: t.strip() or default_category, kinds)
        if not set(kinds) <= set(CATEGORIES):
            raise _Decline  # an unknown category: an error
    labels = np.zeros(len(lines), np.int64)
    if cols["label"] is not None:
        index, found = _distinct(padded, *field(cols["label"]), str.strip)
        labels = np.array([_parse_label(t, "", 0) for t in found], np.int64)[index]
    ts, read = _bulk(clock.parse_cells, padded, *field(cols["ts"]), np.int64)
    rest = np.flatnonzero(~read)
    if len(rest):
        meters, column = list(names), header[cols["ts"]]
        for r, text in zip(rest, texts(cols["ts"], rest)):
            ts[r] = clock(text, meters[meter[r]], column, int(lines[r]))
    starts, lengths = field(cols["value"])
    values, read = _bulk(parse_decimals, padded, starts, lengths, np.float64)
    rest = np.flatnonzero(~read & (lengths > 0))  # an empty cell is a missing value (NaN)
    if len(rest):
        column = header[cols["value"]]
        for r, text in zip(rest, texts(cols["value"], rest)):
            values[r] = _parse_value(text, column, int(lines[r]), cols["decimal_comma"])
    return meter, category, ts, values, labels, lines


def _groups(meter: np.ndarray) -> list:
    """Each meter's rows in file order (slices when it is one run, as files of one meter after
    another hold them), meters in order of first appearance."""
    heads = np.flatnonzero(np.r_[True, meter[1:] != meter[:-1]])
    if len(np.unique(meter[heads])) == len(heads):
        return [slice(a, b) for a, b in zip(heads, np.r_[heads[1:], len(meter)])]
    order = np.argsort(meter, kind="stable")
    bounds = np.flatnonzero(np.r_[True, meter[order][1:] != meter[order][:-1], True])
    return sorted((order[a:b] for a, b in zip(bounds[:-1], bounds[1:])), key=lambda g: g[0])


class _Decline(Exception):
    """The file is for _read_rows (a cell longer than _CELL_WIDTH, an empty meter id...)."""


def _padded_bytes(path: Path) -> tuple[bytearray | None, int]:
    """(the file's bytes, a line end for a last line without one and room to gather any cell
    (_CELL_WIDTH zeros), the file's size), read into place; None when the file changed size
    while read."""
    size = path.stat().st_size
    data = bytearray(size + 1 + _CELL_WIDTH)
    with open(path, "rb") as fh:
        if fh.readinto(memoryview(data)[:size]) != size or fh.read(1):
            return None, 0
    data[size] = ord("\n")
    return data, size


def _blocks(data: bytearray, size: int, body: int) -> list[tuple[int, int]]:
    """Byte ranges [a, b) of whole lines, each about _BLOCK bytes, from `body` to the end; the
    last one ends with the padding's line end when the file does not end with one."""
    end = size + (data[size - 1] != ord("\n"))
    out, a = [], body
    while a < end:
        b = data.find(b"\n", a + _BLOCK, size) + 1 or end
        out.append((a, b))
        a = b
    return out


def _split_fields(padded: np.ndarray, a: int, b: int, line: int, delimiter: str, width: int,
                  needed: int, crlf: bool):
    """(file line of each row, field(i) -> (cell starts, cell lengths), the next block's first
    line) of the whole lines in bytes [a, b) that start at file line `line`, split at the
    delimiter as csv splits unquoted lines; None when a line is longer than csv's field limit
    or has too few fields. `width`: the header's delimiters; `crlf`: the lines may end with CR
    LF. Most files have the header's fields on every line: one scan for both separators then
    gives every line's fields; others are split line by line."""
    data = padded[a:b]
    breaks = data == ord("\n")
    seps = np.flatnonzero(breaks | (data == ord(delimiter))) + a
    rows = int(np.count_nonzero(breaks))
    if width >= needed and len(seps) == rows * (width + 1):
        table = seps.reshape(rows, width + 1)
        # every (width + 1)th separator a line end, and no other: each line has width delimiters
        if (padded[table[:, -1]] == ord("\n")).all():
            ends = table[:, -1]
            starts = np.concatenate(([a], ends[:-1] + 1))
            if crlf:
                ends = ends - (padded[np.maximum(ends - 1, 0)] == ord("\r"))
            lengths = ends - starts  # a line with a delimiter is never empty
            if rows and ((width == 0 and int(lengths.min()) <= 0)
                         or int(lengths.max()) > _FIELD_LIMIT):
                return _split_lines(padded, a, b, line, delimiter, needed)

            def same(i: int) -> tuple[np.ndarray, np.ndarray]:
                begin = starts if i == 0 else table[:, i - 1] + 1
                end = table[:, i] if i < width else ends
                return begin, end - begin

            return line + np.arange(rows, dtype=np.int64), same, line + rows
    return _split_lines(padded, a, b, line, delimiter, needed)


def _split_lines(padded: np.ndarray, a: int, b: int, line: int, delimiter: str, needed: int):
    """_split_fields for lines that differ: blank lines, more or fewer fields."""
    data = padded[a:b]
    ends = np.flatnonzero(data == ord("\n")) + a
    starts = np.concatenate(([a], ends[:-1] + 1))
    ends -= (ends > starts) & (padded[np.maximum(ends - 1, 0)] == ord("\r"))
    if len(starts) and int((ends - starts).max()) > _FIELD_LIMIT:
        return None
    lines = line + np.arange(len(starts), dtype=np.int64)
    filled = ends > starts  # csv skips empty lines
    starts, ends, lines = starts[filled], ends[filled], lines[filled]
    at = np.flatnonzero(data == ord(delimiter)) + a
    first = np.searchsorted(at, starts)
    count = np.searchsorted(at, ends) - first
    keep = np.ones(len(starts), bool)
    for r in np.flatnonzero(count < needed):
        if count[r] or padded[starts[r]:ends[r]].tobytes().decode().strip():
            return None  # too few fields: an error
        keep[r] = False  # a line of blanks, which csv reads as one empty field: skipped
    starts, ends, first, count, lines = (x[keep] for x in (starts, ends, first, count, lines))
    last = max(len(at) - 1, 0)

    def field(i: int) -> tuple[np.ndarray, np.ndarray]:
        begin = starts if i == 0 else at[np.minimum(first + i - 1, last)] + 1
        end = np.where(count > i, at[np.minimum(first + i, last)], ends) if len(at) else ends
        return begin, end - begin

    return lines, field, line + len(filled)


def _bulk(parse, padded: np.ndarray, starts: np.ndarray, lengths: np.ndarray, dtype):
    """(parsed, read) of a column: `parse(cells, lengths)` of a bulk parser over its cells,
    _CHUNK rows at a time (the temporaries of a chunk stay in the CPU's cache: twice as fast as
    whole columns)."""
    out = np.empty(len(starts), dtype)
    read = np.empty(len(starts), bool)
    for a in range(0, len(starts), _CHUNK):
        b = a + _CHUNK
        out[a:b], read[a:b] = parse(*_cells(padded, starts[a:b], lengths[a:b]))
    return out, read


def _cells(padded: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray,
                                                                                  np.ndarray]:
    """The cells in the bulk parsers' layout (timestamps.pack_cells), gathered in one go
    through a sliding view of the file (`padded`: its bytes, then _CELL_WIDTH more), zeroed past
    each cell's length."""
    count = -(-max(int(lengths.max(initial=0)), 1) // 8)  # words a cell
    if 8 * count > _CELL_WIDTH:
        raise _Decline
    width = np.dtype((np.void, 8 * count))
    window = np.ndarray((len(padded) - 8 * count + 1,), width, padded, 0, (1,))
    cells = window[starts].view(np.uint64).reshape(len(starts), count)
    cells = np.ascontiguousarray(cells.T) if count > 1 else cells.reshape(1, -1)
    shortest = int(lengths.min(initial=0))
    for j in range(shortest // 8, count):  # the words that hold some cell's end
        cells[j] &= _WORD_MASKS[j][lengths]
    return cells, lengths


def _distinct(padded: np.ndarray, starts: np.ndarray, lengths: np.ndarray, clean):
    """(each cell's index into `names`, names): the distinct cell texts, cleaned by `clean`
    (several texts may clean to one name). Found from the runs of equal cells, as a file of one
    meter after another holds them, so only each run's first cell is sorted."""
    cells, _ = _cells(padded, starts, lengths)
    n = cells.shape[1]
    new = np.zeros(n, bool)  # a cell unlike the one before
    new[:1] = True
    for w in cells:
        new[1:] |= w[1:] != w[:-1]
    heads = np.flatnonzero(new)
    keys = np.ascontiguousarray(cells[:, heads].T).view(f"S{8 * len(cells)}").ravel()
    uniq, inverse = np.unique(keys, return_inverse=True)
    index: dict[str, int] = {}
    code = np.array([index.setdefault(clean(u.decode()), len(index)) for u in uniq], np.int64)
    names = list(index)
    return np.repeat(code[inverse.ravel()], np.append(heads[1:], n) - heads), names


def _read_rows(reader, cols, clock, default_meter_id: str, default_category: str) -> dict:
    """{(meter, category): (timestamps, values, labels, lines)} (arrays in file order)."""
    header = cols["header"]
    needed = _needed(cols)
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
    return {key: tuple(np.asarray(c) for c in zip(*rows)) for key, rows in out.items()}


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
    return value


def _parse_label(text: str, column: str, line: int) -> int:
    lowered = text.lower()
    if lowered in ("0", "0.0", "false"):
        return 0
    if lowered in ("1", "1.0", "true"):
        return 1
    raise InputError(f"label {text!r} in column {column!r} must be 0 or 1", row=line)
