"""Green Button "Download My Data" files in, `MeterSeries` out (kWh per interval, UTC).

Green Button is how North American utilities hand customers their interval data, in two forms:

**ESPI XML** (NAESB REQ.21): an Atom feed whose `entry/content` holds ESPI resources (namespace
`http://naesb.org/espi`): UsagePoint -> MeterReading -> ReadingType + IntervalBlocks, plus
LocalTimeParameters. Entries are linked the way the standard describes: a UsagePoint's `related`
hrefs name its MeterReading collection, which is each MeterReading's `up` href; a MeterReading's
`related` hrefs name its IntervalBlock collection (each block's `up`) and its ReadingType (that
entry's `self`). Feeds without links fall back to document order, but only when that cannot be
ambiguous: the file holds at most one UsagePoint, one MeterReading and exactly one ReadingType.
- Units: only uom 72 (Wh, real energy) is accepted; a value is `value * 10**powerOfTenMultiplier`
  Wh, divided by 1000 for kWh (computed in decimal, so the float is the correctly rounded kWh).
  Power (38, W), reactive/apparent energy (73 VArh, 71 VAh), gas or water volumes (42 m3,
  119 ft3, 169 therm) are refused: the detector models real energy per interval.
- accumulationBehaviour must be absent, 0 or 4 (deltaData: energy of each interval); cumulative
  register readings (1 bulkQuantity, 3 cumulative, ...) are refused rather than misread.
- Times are epoch seconds UTC in ESPI; LocalTimeParameters only describes the customer's clock
  and is validated, not applied. A reading's timestamp is the **end** of its timePeriod, like
  every meterwatch event.
- Meter id: `meter_id` if given, else the UsagePoint's Atom title (else its id's last segment)
  with characters outside `[A-Za-z0-9._:-]` turned into `-`. A UsagePoint with several
  MeterReadings gets `.reverse` / `.net` suffixes by flowDirection (19 / 4), and any remaining
  clash a `.2`, `.3`...
- Untrusted XML is parsed with defusedxml only, with DTDs forbidden: an entity bomb or external
  entity is refused, never expanded.

**CSV export**: a few preamble lines (`Name,...`, `Address,...`, `Account Number,...`), then a
header like `TYPE,DATE,START TIME,END TIME,USAGE,UNITS,COST,NOTES`. Units kWh or Wh (kWh when the
file states none). DATE + START TIME are local wall-clock time: `tz_offset` is a fixed offset
(`+09:00`, `-0500`, `Z`; default UTC) or an IANA zone name (`America/Los_Angeles`), which also
resolves the repeated hour when DST ends (its second pass is the later one). END TIME may be
inclusive (`00:00,00:14` is a 15-minute interval) or exclusive (`00:00,00:15`).

Both forms: gaps of up to `max_gap` readings are interpolated (reported in `repairs`), longer
ones split the series (the gap is left out and reported, as in stream_app.core.grid); every
problem is an InputError naming the entry/element or CSV line.
`meterwatch import-greenbutton` (`import_params`, `run_import`) is at the end.

Over 300 lines: two file formats (ESPI XML, the CSV export) with their own error messages.
"""

from __future__ import annotations

import csv
import io
import math
import re
from datetime import UTC, datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal, overload

import click
import numpy as np

from stream_app.core.errors import InputError
from stream_app.core.grid import MAX_GRID
from stream_app.core.series import MeterSeries
from stream_app.core.thresholds import CATEGORIES
from stream_app.core.timestamps import LAST_EPOCH_S, parse_tz

ATOM = "{http://www.w3.org/2005/Atom}"
ESPI = "{http://naesb.org/espi}"
UOM_WH = 72
UOM_NAMES = {38: "W", 42: "m3", 61: "VA", 63: "VAr", 71: "VAh", 72: "Wh", 73: "VArh",
             119: "ft3", 169: "therm"}
DELTA_ACCUMULATION = (0, 4)  # unspecified, deltaData
FLOW_SUFFIX = {1: "", 19: ".reverse", 4: ".net"}
MAX_DURATION_S = 366 * 86400  # the longest interval accepted (a year)
LAST_START_S = LAST_EPOCH_S - MAX_DURATION_S  # an interval must end before the year 10000
MAX_FILE_BYTES = 256 * 1024 * 1024  # a decade of 15-min ESPI readings is ~100 MB
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._:-]+")
_METER_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_CSV_UNITS = {"kwh": Decimal(1), "wh": Decimal("0.001")}


def parse_espi_xml(source, *, meter_id: str | None = None, category: str = "general",
                   max_gap: int = 4) -> list[MeterSeries]:
    """One MeterSeries per MeterReading of an ESPI feed; `source` is a path or the bytes."""
    _check_options(meter_id, category)
    root = _parse_xml(source if isinstance(source, bytes | bytearray) else _read_bytes(source))
    if root.tag == f"{ATOM}entry":
        entries = [root]
    elif root.tag == f"{ATOM}feed":
        entries = root.findall(f"{ATOM}entry")
    else:
        raise InputError(f"not a Green Button (ESPI Atom) feed: the root element is {root.tag}")
    res = [_Entry(n, e) for n, e in enumerate(entries, 1)]
    by_kind = {kind: [e for e in res if e.kind == kind] for kind in
               ("UsagePoint", "MeterReading", "ReadingType", "IntervalBlock",
                "LocalTimeParameters")}
    if not by_kind["IntervalBlock"]:
        raise InputError(f"no IntervalBlock in the feed ({len(res)} entries): it holds no readings")
    if not by_kind["ReadingType"]:
        raise InputError("missing ReadingType: the feed does not say the unit of its readings")
    for ltp in by_kind["LocalTimeParameters"]:
        for name in ("tzOffset", "dstOffset"):
            _int(ltp.content, name, ltp.where, required=False)
    groups = _link(by_kind)
    series: list[MeterSeries] = []
    used: set[str] = set()
    for point, _mr, rtype, blocks in groups:
        scale, flow = _reading_type(rtype)
        meter = _unique(_base_id(meter_id, point) + FLOW_SUFFIX.get(flow, f".flow{flow}"),
                        used)
        rows = [row for block in blocks for row in _block_rows(block, scale, rtype)]
        series.append(_to_series(meter, category, rows, max_gap))
    return series


class _Entry:
    """One Atom entry: its links and the ESPI resource in its content."""

    def __init__(self, n: int, entry):
        self.n = n
        self.title = (entry.findtext(f"{ATOM}title") or "").strip()
        self.atom_id = (entry.findtext(f"{ATOM}id") or "").strip()
        links = entry.findall(f"{ATOM}link")
        self.self_href = next((ln.get("href") for ln in links if ln.get("rel") == "self"), None)
        self.up_href = next((ln.get("href") for ln in links if ln.get("rel") == "up"), None)
        self.related = {ln.get("href") for ln in links if ln.get("rel") == "related"}
        content = entry.find(f"{ATOM}content")
        # The ESPI element (defusedxml has no type hints); None only in an entry of no kind.
        self.content: Any = None if content is None else next(
            (c for c in content if c.tag.startswith(ESPI)), None)
        self.kind = None if self.content is None else self.content.tag[len(ESPI):]
        named = f", {self.title!r}" if self.title else ""
        self.where = f"{self.kind or 'entry'} (entry {n}{named})"

    def links_to(self, other: _Entry) -> bool:
        """`other` is in one of my related collections, or is related to me directly."""
        return bool((other.up_href and other.up_href in self.related)
                    or (other.self_href and other.self_href in self.related))


def _link(by_kind) -> list[list[Any]]:
    """(UsagePoint or None, MeterReading or None, ReadingType, [IntervalBlock]) per reading."""
    points, readings = by_kind["UsagePoint"], by_kind["MeterReading"]
    types, blocks = by_kind["ReadingType"], by_kind["IntervalBlock"]
    unambiguous = len(points) <= 1 and len(readings) <= 1 and len(types) == 1
    groups: list[list[Any]] = []
    claimed: set[int] = set()
    for mr in readings:
        rtype = next((t for t in types if mr.links_to(t)), None)
        if rtype is None:
            if not unambiguous:
                raise InputError(f"{mr.where} links no ReadingType, and the feed holds "
                                 f"{len(types)} ReadingTypes")
            rtype = types[0]
        mine = [b for b in blocks if mr.links_to(b)]
        claimed.update(id(b) for b in mine)
        point = next((p for p in points if p.links_to(mr)), None)
        if point is None and len(points) == 1:
            point = points[0]
        groups.append([point, mr, rtype, mine])
    orphans = [b for b in blocks if id(b) not in claimed]
    if orphans:
        if not unambiguous:
            raise InputError(f"{orphans[0].where} is linked to no MeterReading, and the feed is "
                             "too large to pair entries by document order")
        if groups:
            groups[0][3].extend(orphans)
        else:
            groups.append([points[0] if points else None, None, types[0], orphans])
    groups = [g for g in groups if g[3]]  # a MeterReading without blocks holds no readings
    if not groups:
        raise InputError("no IntervalBlock belongs to a MeterReading: the feed holds no readings")
    return groups


def _reading_type(rtype: _Entry) -> tuple[int, int]:
    """(power of ten from the file's values to kWh, flowDirection)."""
    uom = _int(rtype.content, "uom", rtype.where)
    if uom != UOM_WH:
        name = UOM_NAMES.get(uom, "unknown")
        raise InputError(f"{rtype.where}: unknown or unsupported uom {uom} ({name}); only "
                         f"{UOM_WH} (Wh, real energy) is accepted")
    power = _int(rtype.content, "powerOfTenMultiplier", rtype.where, required=False) or 0
    if not -12 <= power <= 12:
        raise InputError(f"{rtype.where}: powerOfTenMultiplier {power} is outside -12..12")
    accumulation = _int(rtype.content, "accumulationBehaviour", rtype.where, required=False)
    if accumulation not in (None, *DELTA_ACCUMULATION):
        raise InputError(f"{rtype.where}: accumulationBehaviour {accumulation} is not per-interval "
                         "energy (4, deltaData); cumulative register readings are not accepted")
    flow = _int(rtype.content, "flowDirection", rtype.where, required=False)
    return power - 3, 1 if flow is None else flow


def _block_rows(block: _Entry, scale: int, rtype: _Entry) -> list[tuple]:
    """(end ts, kWh, where) for every IntervalReading of a block."""
    rows = []
    length = _int(rtype.content, "intervalLength", rtype.where, required=False)
    interval = block.content.find(f"{ESPI}interval")
    start = None if interval is None else _int(interval, "start", block.where, required=False)
    for j, reading in enumerate(block.content.findall(f"{ESPI}IntervalReading"), 1):
        where = f"{block.where}, IntervalReading {j}"
        period = reading.find(f"{ESPI}timePeriod")
        if period is not None:
            begin, duration = _int(period, "start", where), _int(period, "duration", where)
        elif start is not None and length:  # no timePeriod: consecutive from the block start
            begin, duration = start + (j - 1) * length, length
        else:
            raise InputError(f"{where}: no timePeriod, and no interval start + intervalLength")
        if not 0 < duration <= MAX_DURATION_S:
            raise InputError(f"{where}: timePeriod duration {duration} must be 1..{MAX_DURATION_S}"
                             " seconds")
        if not 0 <= begin <= LAST_START_S:
            raise InputError(f"{where}: timePeriod start {begin} is not epoch seconds before "
                             "the year 9999")
        text = (reading.findtext(f"{ESPI}value") or "").strip()
        rows.append((begin + duration, _kwh(text, scale, f"{where}, value"), duration, where))
    return rows


def _kwh(text: str, scale: int, where: str) -> float:
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise InputError(f"{where}: non-numeric value {text[:40]!r}") from None
    try:
        kwh = float(number.scaleb(scale)) if number.is_finite() else math.inf
    except ArithmeticError:  # an exponent beyond Decimal's range: decimal.Overflow
        kwh = math.inf
    if not math.isfinite(kwh) or kwh < 0:
        raise InputError(f"{where}: value {text[:40]!r} must be a finite number >= 0")
    return kwh


@overload
def _int(parent: Any, name: str, where: str, *, required: Literal[True] = True) -> int: ...
@overload
def _int(parent: Any, name: str, where: str, *, required: bool) -> int | None: ...
def _int(parent: Any, name: str, where: str, *, required: bool = True) -> int | None:
    text = parent.findtext(f"{ESPI}{name}")
    if text is None or not text.strip():
        if required:
            raise InputError(f"{where}: missing {name}")
        return None
    try:
        return int(text.strip())
    except ValueError:
        raise InputError(f"{where}: {name} {text.strip()[:40]!r} is not an integer") from None


def _base_id(meter_id, point: _Entry | None) -> str:
    if meter_id is not None:
        return meter_id
    if point is not None:
        for text in (point.title, re.split(r"[:/]", point.atom_id)[-1]):
            if _sanitise(text):
                return _sanitise(text)
    return "greenbutton"


def _sanitise(text: str) -> str:
    return _UNSAFE_ID.sub("-", text).strip("-.")[:128].strip("-.")


def _unique(candidate: str, used: set) -> str:
    name, n = candidate, 1
    while name in used:
        n += 1
        name = f"{candidate}.{n}"
    used.add(name)
    return name


def _parse_xml(data: bytes | bytearray):
    import defusedxml.ElementTree as SafeET
    from defusedxml import DefusedXmlException

    try:
        return SafeET.fromstring(bytes(data), forbid_dtd=True)
    except DefusedXmlException as exc:
        raise InputError(f"refused: XML entities/DTD are not allowed ({type(exc).__name__})") \
            from None
    except SafeET.ParseError as exc:
        raise InputError(f"not well-formed XML: {exc}") from None  # names line and column
    except LookupError as exc:  # the XML declaration names an encoding Python does not know
        raise InputError(f"not readable XML: {exc}") from None


def _read_bytes(path) -> bytes:
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InputError(f"{path.name} is {size} bytes; more than the {MAX_FILE_BYTES} read")
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None


def _check_options(meter_id, category) -> None:
    if category not in CATEGORIES:
        raise InputError(f"unknown category {category!r}; known: {', '.join(CATEGORIES)}")
    if meter_id is not None and _METER_ID.fullmatch(meter_id) is None:
        raise InputError(f"meter id {meter_id!r}: 1..128 characters from [A-Za-z0-9._:-]")


def _to_series(meter: str, category: str, rows: list[tuple], max_gap: int) -> MeterSeries:
    """Rows (end ts, kWh or NaN, duration, where) -> a grid, a long gap left out (segments),
    repairs reported."""
    rows.sort(key=lambda r: r[0])
    repairs, kept = [], [rows[0]]
    for row in rows[1:]:
        if row[0] != kept[-1][0]:
            kept.append(row)
        elif row[1] == kept[-1][1] or (math.isnan(row[1]) and math.isnan(kept[-1][1])):
            repairs.append(f"{meter}: dropped a repeated reading at {row[3]}")
        else:
            raise InputError(f"{row[3]}: a different value for the time of {kept[-1][3]}")
    durations = {r[2] for r in kept}
    if len(durations) > 1:
        raise InputError(f"meter {meter!r} mixes interval lengths {sorted(durations)} s")
    interval = durations.pop()
    ts = np.array([r[0] for r in kept], dtype=np.int64)
    for i in np.flatnonzero(np.diff(ts) % interval):
        raise InputError(f"{kept[i + 1][3]}: not on the {interval} s grid of {kept[i][3]}")
    pos = (ts - ts[0]) // interval
    if pos[-1] >= MAX_GRID:
        raise InputError(f"meter {meter!r} spans {int(pos[-1]) + 1:,} readings of {interval} s "
                         f"({kept[0][3]} to {kept[-1][3]}), more than {MAX_GRID:,}: check the "
                         "times or split the file")
    values = np.full(int(pos[-1]) + 1, np.nan)
    values[pos] = [r[1] for r in kept]
    missing = np.isnan(values)
    if missing.all():
        raise InputError(f"meter {meter!r} has no readings, only missing values")
    lo, hi = int(np.argmax(~missing)), len(values) - int(np.argmax(~missing[::-1]))
    edges = np.diff(np.concatenate(([0], missing[lo:hi].astype(np.int8), [0])))
    for a, b in zip(np.flatnonzero(edges == 1) + lo, np.flatnonzero(edges == -1) + lo):
        when = datetime.fromtimestamp(int(ts[0] + a * interval), UTC).isoformat()
        if b - a > max_gap:  # left out: the series is split there (stream_app.core.grid)
            repairs.append(f"{meter}: gap of {b - a} missing readings from {when}, longer than "
                           f"--max-gap {max_gap}: the series is split there (no window spans "
                           "it)")
            continue
        values[a:b] = np.interp(np.arange(a, b), [a - 1, b], [values[a - 1], values[b]])
        repairs.append(f"{meter}: interpolated {b - a} missing readings from {when}")
    grid = ts[0] + interval * np.arange(len(values), dtype=np.int64)
    present = ~np.isnan(values)
    return MeterSeries(meter, category, grid[present], values[present], int(interval), None,
                       repairs)


# --- the CSV export ---------------------------------------------------------------------------

def parse_greenbutton_csv(path, *, meter_id: str | None = None, category: str = "general",
                          tz_offset=None, max_gap: int = 4) -> list[MeterSeries]:
    """The utility's CSV export as one MeterSeries; see the module docstring for the layout."""
    _check_options(meter_id, category)
    zone = parse_tz(tz_offset)
    path = Path(path)
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")  # Excel-saved exports
    reader = csv.reader(io.StringIO(text, newline=""))
    preamble: dict[str, str] = {}
    cols: dict[str, Any] | None = None
    rows: list[tuple[int, float, int, str]] = []
    seen: set[datetime] = set()
    try:
        for fields in reader:
            line = reader.line_num
            cells = [f.strip() for f in fields]
            if not any(cells):
                continue
            if cols is None:
                cols = _header(cells)
                if cols is None and len(cells) >= 2:
                    preamble[cells[0].lower()] = cells[1]
                continue
            rows.append(_csv_row(cells, cols, zone, seen, line))
    except csv.Error as exc:
        raise InputError(f"{path.name} is not valid CSV: {exc}", row=reader.line_num) from None
    if cols is None:
        raise InputError(f"{path.name} is not a Green Button CSV export: no header line with "
                         "DATE, START TIME and USAGE columns")
    if not rows:
        raise InputError(f"{path.name} has a header but no readings")
    meter = meter_id or _sanitise(preamble.get("account number", "")) \
        or _sanitise(path.stem) or "greenbutton"
    return [_to_series(meter, category, rows, max_gap)]


def _header(cells: list[str]) -> dict | None:
    upper = [c.upper() for c in cells]
    usage = next((i for i, c in enumerate(upper) if c == "USAGE" or c.startswith("USAGE (")), None)
    if "DATE" not in upper or "START TIME" not in upper or usage is None:
        return None
    unit = re.search(r"\((K?WH)\)", upper[usage])
    return {"date": upper.index("DATE"), "start": upper.index("START TIME"),
            "end": upper.index("END TIME") if "END TIME" in upper else None, "usage": usage,
            "units": upper.index("UNITS") if "UNITS" in upper else None,
            "unit": unit.group(1).lower() if unit else "kwh", "width": len(cells)}


def _csv_row(cells, cols, zone, seen: set, line: int) -> tuple:
    needed = max(v for k, v in cols.items() if k not in ("unit", "width") and v is not None)
    if len(cells) <= needed:
        raise InputError(f"{len(cells)} fields, but the header has {cols['width']}", row=line)
    day = _date(cells[cols["date"]], line)
    start = _clock(cells[cols["start"]], line)
    local = datetime.combine(day, start)
    if local in seen and not isinstance(zone, timezone):
        local = local.replace(fold=1)  # the repeated hour when DST ends: its second pass
    seen.add(local)
    begin = int(local.replace(tzinfo=zone).timestamp())
    duration = None
    if cols["end"] is not None and cells[cols["end"]]:
        end = _clock(cells[cols["end"]], line)
        duration = (datetime.combine(day, end) - datetime.combine(day, start)).seconds
        if (duration + 60) % 300 == 0 and duration % 300:  # 00:00-00:14: the last minute
            duration += 60
        elif (duration + 1) % 300 == 0:  # 00:00:00-00:14:59: the last second
            duration += 1
    if not duration:
        raise InputError("no END TIME: the interval length is unknown", row=line)
    unit = cells[cols["units"]].lower() if cols["units"] is not None else cols["unit"]
    if unit not in _CSV_UNITS:
        raise InputError(f"units {unit!r} are not energy in kWh or Wh", row=line)
    text = cells[cols["usage"]]
    if not text:
        value = math.nan
    else:
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise InputError(f"non-numeric USAGE {text[:40]!r}", row=line) from None
        if not number.is_finite() or number < 0:
            raise InputError(f"USAGE {text[:40]!r} must be a finite number >= 0", row=line)
        value = float(number * _CSV_UNITS[unit])
    return begin + duration, value, duration, f"line {line}"


def _date(text: str, line: int):
    for fmt in ("%Y-%m-%d", "%m/%d/%Y", "%m/%d/%y"):
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise InputError(f"cannot parse DATE {text[:40]!r} (expected 2024-01-31 or 1/31/2024)",
                     row=line)


def _clock(text: str, line: int):
    for fmt in ("%H:%M", "%H:%M:%S", "%I:%M %p", "%I:%M:%S %p"):
        try:
            return datetime.strptime(text.upper(), fmt).time()
        except ValueError:
            continue
    raise InputError(f"cannot parse time {text[:40]!r} (expected HH:MM)", row=line)


def load_greenbutton(path, *, meter_id: str | None = None, category: str = "general",
                     tz_offset=None, max_gap: int = 4) -> list[MeterSeries]:
    """ESPI XML or the CSV export, told apart by the first non-blank character ('<' = XML)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    if head.startswith(b"<"):
        return parse_espi_xml(path, meter_id=meter_id, category=category, max_gap=max_gap)
    return parse_greenbutton_csv(path, meter_id=meter_id, category=category,
                                 tz_offset=tz_offset, max_gap=max_gap)


# --- command line -----------------------------------------------------------------------------

def import_params() -> list[click.Parameter]:
    """Options of `meterwatch import-greenbutton`; --produce and --csv exclude each other."""
    from stream_app.io.replay import topic_params

    return [
        click.Argument(["file"], type=click.Path(path_type=Path)),
        click.Option(["--produce"], is_flag=True,
                     help="send the readings to Kafka (backfill; settings from KAFKA_* vars)"),
        click.Option(["--csv"], type=click.Path(path_type=Path),
                     help="write timestamp,meter_id,category,value"),
        click.Option(["--meter-id"], help="meter id (default: from the file)"),
        click.Option(["--category"], default="general", type=click.Choice(CATEGORIES),
                     help="usage category"),
        click.Option(["--tz", "--tz-offset", "tz"], help="CSV export's local time: a zone name "
                     "like America/Los_Angeles or an offset like -08:00 (default: UTC)"),
        click.Option(["--max-gap"], type=int, default=4,
                     help="missing readings in a row filled by interpolation"),
        *topic_params("per-meter topic with --produce"),
    ]


def uses_kafka(args) -> bool:
    """Whether `meterwatch import-greenbutton` talks to Kafka (--produce), after the checks of
    its options: a wrong option is told at once, before the CLI waits for a broker."""
    _check_outputs(args)
    return bool(args.produce)


def _check_outputs(args) -> None:
    from stream_app.io.replay import topics_of

    if args.produce and args.csv is not None:
        raise InputError("--produce and --csv exclude each other")
    topics_of(args)


def run_import(args) -> int:
    """Parse, summarise each meter in one line, then write a CSV or produce (or neither)."""
    from stream_app.core.timestamps import format_timestamp
    from stream_app.io.replay import topics_of
    from stream_app.io.series_io import write_rows_csv

    _check_outputs(args)  # before the file is read
    series = load_greenbutton(args.file, meter_id=args.meter_id, category=args.category,
                              tz_offset=args.tz, max_gap=args.max_gap)
    for s in series:
        for repair in s.repairs:
            print(f"repaired {repair}")
        print(f"{s.meter_id}: {len(s)} readings, {format_timestamp(s.timestamps[0])} .. "
              f"{format_timestamp(s.timestamps[-1])}, interval {s.interval_s} s, "
              f"total {float(s.values.sum()):.3f} kWh")
    if args.csv is not None:
        rows = ([format_timestamp(t), s.meter_id, s.category, v]
                for s in series for t, v in zip(s.timestamps.tolist(), s.values.tolist()))
        write_rows_csv(args.csv, ["timestamp", "meter_id", "category", "value"], rows)
        print(f"wrote {sum(len(s) for s in series)} readings to {args.csv}")
    if args.produce:
        from stream_app.io.replay import replay
        from stream_app.stream.settings import KafkaSettings

        template, topic = topics_of(args)
        stats = replay(series, kafka=KafkaSettings.from_env(), topic_template=template,
                       single_topic=topic, backfill=True)
        print(f"produced {stats.sent} readings in {stats.seconds:.1f} s")
        if stats.interrupted:
            return 130
    return 0
