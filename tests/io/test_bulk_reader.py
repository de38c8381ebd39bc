"""The column reader against the per-row reader: same series, same errors, on many files.

read_meter_csv reads a file column by column with numpy and leaves to the per-row reader (the
csv module, `bulk=False`) whatever it would not read exactly alike. Every file here is read both
ways and must give identical MeterSeries (values, timestamps, labels, repairs, and the source
rows with their notes), or the identical error with the same row; the files the column reader
is meant to take must not fall back to the per-row reader. The bulk kernels are checked cell by
cell against float() and the per-row timestamp parser, and the grid's shortcuts against the
np.unique / np.lexsort they stand in for.
"""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from factories import START, write_text

from stream_app.core import grid
from stream_app.core.errors import InputError
from stream_app.core.timestamps import (
    LAST_EPOCH_S,
    TimestampParser,
    format_timestamp,
    pack_cells,
    parse_decimals,
)
from stream_app.io import series_io
from stream_app.io.series_io import read_meter_csv

AMSTERDAM = ZoneInfo("Europe/Amsterdam")


# ---- files: each is read both ways -------------------------------------------------------


def _value(rng: random.Random) -> str:
    return f"{rng.uniform(0, 50):.{rng.randint(0, 4)}f}"


def _fleet(rng: random.Random, meters: int, n: int, stamp, *, category=False, label=False,
           repairs=True) -> list[list[str]]:
    """Rows [time, meter, (category), value, (label)] of meters interleaved, with the repairs a
    real file asks for: empty values, identical and conflicting duplicates, late readings."""
    rows = []
    for k in range(n):
        for m in range(meters):
            t = START + 900 * k + (60 if repairs and k % 97 == 13 else 0)
            row = [stamp(t), f"m{m}"]
            if category:
                row.append(("industrial", "general", "late_night")[m % 3])
            row.append("" if repairs and k % 53 == 7 else _value(rng))
            if label:
                row.append(str(int(k % 41 == 5)))
            rows.append(row)
    if repairs:
        rows.insert(len(rows) // 2, list(rows[len(rows) // 3]))  # identical duplicate
        conflict = list(rows[len(rows) // 4])
        conflict[-2 if label else -1] = "9.5"
        rows.insert(len(rows) // 4 + 7, conflict)
    return rows


def _iso_z(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _naive(t: int, zone=UTC, sep: str = " ") -> str:
    return datetime.fromtimestamp(t, zone).strftime(f"%Y-%m-%d{sep}%H:%M:%S")


def _offset(t: int) -> str:
    return datetime.fromtimestamp(t, AMSTERDAM).isoformat()


def _lines(rows, sep: str = ",") -> list[str]:
    return [sep.join(r) for r in rows]


def _cases():
    """(name, header, lines, read_meter_csv options, the column reader takes it)."""
    rng = random.Random(12)
    fleet = _fleet(rng, 3, 300, _iso_z, category=True, label=True)
    yield "iso_z_fleet", "timestamp,meter_id,category,value,label", _lines(fleet), {}, True
    yield ("offsets_across_dst", "timestamp,meter_id,value",
           _lines(_fleet(rng, 2, 200, lambda t: _offset(t + 86400 * 293))), {}, True)
    mixed = [[(_iso_z if k % 3 else lambda t: format_timestamp(t))(START + 900 * k), "7.5"]
             for k in range(200)]
    yield "z_and_plus_zero_mixed", "timestamp,value", _lines(mixed), {}, True
    yield ("naive_space_utc", "timestamp,meter_id,value",
           _lines(_fleet(rng, 2, 200, _naive)), {}, True)
    yield ("naive_t_fixed_offset", "timestamp,meter_id,value",
           _lines(_fleet(rng, 2, 200, lambda t: _naive(t, sep="T"))), {"tz": "-08:00"}, True)
    fall = START + 86400 * 293 - 4 * 3600  # 2025-10-25T20:00Z: the night of the fall-back
    yield ("naive_amsterdam_fall_back", "timestamp,meter_id,value",
           _lines(_fleet(rng, 2, 48, lambda t: _naive(t + fall - START, AMSTERDAM), repairs=False)),
           {"tz": "Europe/Amsterdam"}, True)
    spring = START + 86400 * 83 - 3 * 3600  # 2025-03-29T21:00Z: the night of spring-forward
    yield ("naive_amsterdam_spring_forward", "timestamp,value",
           [f"{_naive(START + 900 * k + spring - START, AMSTERDAM)},{k}" for k in range(40)],
           {"tz": "Europe/Amsterdam"}, True)
    yield ("epoch_seconds", "timestamp,meter_id,value",
           _lines(_fleet(rng, 2, 200, str)), {}, True)
    yield ("epoch_milliseconds_and_points", "timestamp,value",
           [f"{(START + 900 * k) * 1000}{'.0' if k % 2 else ''},{k % 7}" for k in range(200)],
           {}, True)
    yield ("minutes_and_zero_fractions", "timestamp,value",
           [f"{_iso_z(START + 900 * k)[:16]}Z,1" if k % 2 else
            f"{_iso_z(START + 900 * k)[:19]}.000Z,2" for k in range(100)], {}, True)
    yield ("nonzero_fractions_row_by_row", "timestamp,value",
           [f"{_iso_z(START + 900 * k)[:19]}.{k % 1000:03d}Z,1" for k in range(100)], {}, True)
    yield ("daily_dates", "timestamp,value",
           [f"{_naive(START + 86400 * k)[:10]},{k}" for k in range(60)], {}, True)
    rows = _fleet(rng, 2, 150, _iso_z)
    for r in rows:
        r[-1] = r[-1].replace(".", ",")
    yield "semicolons_decimal_commas", "timestamp;meter_id;value", _lines(rows, ";"), {}, True
    yield "tabs", "timestamp\tvalue", [f"{_iso_z(START + 900 * k)}\t{k}.5" for k in range(50)], \
        {}, True
    odd = [f"{_iso_z(START + 900 * k)},{v}" for k, v in enumerate(
        ["1", "NA", "null", " 2.5 ", "nan", "", "1e-3", "+2.5", "2.5E2", "0.30000000000000004",
         "7.", ".5", "NaN", "None", "1_0", "\u00a03\u00a0"] * 4)]
    yield "value_forms_row_by_row", "timestamp,value", odd, {}, True
    extra = [f"{_iso_z(START + 900 * k)},{k}" + (",x" if k % 5 == 0 else "") for k in range(60)]
    yield "extra_fields", "timestamp,value", extra, {}, True
    shuffled = _lines(_fleet(rng, 3, 100, _iso_z))
    rng.shuffle(shuffled)
    yield "unsorted", "timestamp,meter_id,value", shuffled, {}, True
    yield ("jittered_five_minutes", "timestamp,value",
           [f"{_iso_z(START + 300 * k + rng.randint(-80, 80))},{_value(rng)}"
            for k in range(300)], {}, True)
    yield ("non_ascii_and_spaced_meter_ids", "timestamp,meter_id,value",
           [f"{_iso_z(START + 900 * k)},{m},{k}" for k in range(50)
            for m in ("z\u00e4hler-1", " z\u00e4hler-1", "\u0441\u0447\u0451\u0442\u0447\u0438\u043a")],
           {"duplicates": "mean"}, True)
    yield ("lead_layout", "timestamp,building_id,meter_reading,anomaly",
           [f"{_naive(START + 3600 * k)},{b},{100 + k % 9},{int(k == 5)}"
            for k in range(60) for b in (118, 121)], {}, True)
    yield ("watt_hours", "timestamp,value", [f"{_iso_z(START + 900 * k)},{k * 250}"
                                             for k in range(60)], {"unit": "Wh"}, True)
    yield ("kilowatts", "timestamp,value", [f"{_iso_z(START + 300 * k)},{k % 4}"
                                            for k in range(60)],
           {"unit": "kW", "interval": "15min"}, True)
    register = [f"{_iso_z(START + 900 * k)},{1000 + 3 * k - (900 if k > 40 else 0)}"
                for k in range(80) if k != 20]
    yield "register_rollover", "timestamp,value", register, {"cumulative": True}, True
    yield ("quoted_cells", "timestamp,value",
           [f'"{_iso_z(START + 900 * k)}","{k}"' for k in range(20)], {}, False)
    yield ("timestamp_format", "timestamp,value",
           [f"{datetime.fromtimestamp(START + 900 * k, UTC):%d.%m.%Y %H:%M},{k}"
            for k in range(20)], {"timestamp_format": "%d.%m.%Y %H:%M"}, False)
    yield ("steel_layout", "date,Usage_kWh",
           [f"{(k // 96) + 1:02d}/01/2018 {(k * 15) % 1440 // 60:02d}:{k * 15 % 60:02d},{k}"
            for k in range(1, 192)], {}, False)
    yield ("long_meter_id", "timestamp,meter_id,value",
           [f"{_iso_z(START + 900 * k)},{'m' * 80},{k}" for k in range(20)], {}, False)


CASES = list(_cases())


def _same_series(a: list, b: list) -> None:
    assert [(s.meter_id, s.category, s.interval_s, s.repairs) for s in a] == \
        [(s.meter_id, s.category, s.interval_s, s.repairs) for s in b]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.timestamps, y.timestamps)
        np.testing.assert_array_equal(x.values, y.values)
        assert (x.labels is None) == (y.labels is None)
        if x.labels is not None:
            np.testing.assert_array_equal(x.labels, y.labels)
        for name in ("lines", "timestamps", "values", "index"):
            np.testing.assert_array_equal(getattr(x.source, name), getattr(y.source, name))
        assert x.source.notes == y.source.notes


@pytest.fixture
def per_row_calls(monkeypatch):
    """How many times read_meter_csv fell back on the per-row reader."""
    calls = []
    original = series_io._read_rows

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(series_io, "_read_rows", counting)
    return calls


@pytest.mark.parametrize(("name", "header", "lines", "options", "bulk"), CASES,
                         ids=[c[0] for c in CASES])
@pytest.mark.parametrize("layout", ["lf", "bom_crlf"])
def test_both_readers_give_the_same_series(tmp_path, per_row_calls, name, header, lines,
                                           options, bulk, layout):
    path = write_text(tmp_path / f"{name}.csv", [header, *lines], bom=layout == "bom_crlf",
                      crlf=layout == "bom_crlf")
    fast = read_meter_csv(path, **options)
    assert len(per_row_calls) == (0 if bulk else 1)
    _same_series(fast, read_meter_csv(path, bulk=False, **options))


def test_blank_lines_and_no_final_line_end(tmp_path, per_row_calls):
    lines = [f"{_iso_z(START + 900 * k)},{k}" for k in range(30)]
    text = "timestamp,value\n" + "\n".join(lines[:10]) + "\n\n   \n" + "\n".join(lines[10:])
    path = tmp_path / "blank.csv"
    path.write_bytes(text.encode())
    fast = read_meter_csv(path)
    assert not per_row_calls
    _same_series(fast, read_meter_csv(path, bulk=False))
    assert fast[0].source.lines.tolist() == list(range(2, 12)) + list(range(14, 34))


def test_header_only_and_a_lone_carriage_return(tmp_path):
    empty = write_text(tmp_path / "empty.csv", ["timestamp,value"])
    for bulk in (True, False):
        with pytest.raises(InputError, match="has a header but no data rows"):
            read_meter_csv(empty, bulk=bulk)
    lone = tmp_path / "lone.csv"
    lone.write_bytes(b"timestamp,value\n" + b"\r".join(
        f"{_iso_z(START + 900 * k)},{k}".encode() for k in range(10)) + b"\n")
    _same_series(read_meter_csv(lone), read_meter_csv(lone, bulk=False))


GOOD = [f"{_iso_z(START + 900 * k)},{k}" for k in range(12)]  # rows 2 to 13
OTHER_COLUMNS = {"timestamp,value": lambda t, v: f"{t},{v}",
                 "timestamp,value,category": lambda t, v: f"{t},{v},industrial",
                 "timestamp,value,label": lambda t, v: f"{t},{v},0",
                 "timestamp,meter_id,value": lambda t, v: f"{t},m,{v}",
                 "timestamp,meter_id,category,value": lambda t, v: f"{t},m,industrial,{v}"}


@pytest.mark.parametrize(("header", "bad", "row"), [
    ("timestamp,value", f"{_iso_z(START + 900 * 12)},inf", 14),
    ("timestamp,value", f"{_iso_z(START + 900 * 12)},1e999", 14),
    ("timestamp,value", f"{_iso_z(START + 900 * 12)},x", 14),
    ("timestamp,value", "yesterday,2", 14),
    ("timestamp,value", "2025-02-30T00:00:00Z,2", 14),
    ("timestamp,value", "2025-01-06T24:00:00Z,2", 14),
    ("timestamp,value", "2025-01-06T00:60:00Z,2", 14),
    ("timestamp,value", "2025-01-06T00:15:00+24:00,2", 14),
    ("timestamp,value", "9999-12-31T23:59:59Z,2", None),
    ("timestamp,value", "1e30,2", 14),
    ("timestamp,value", f"{_iso_z(START + 900 * 12)}", 14),
    ("timestamp,value,category", f"{_iso_z(START + 900 * 12)},1,steelworks", 14),
    ("timestamp,value,label", f"{_iso_z(START + 900 * 12)},1,2", 14),
    ("timestamp,meter_id,value", f"{_iso_z(START + 900 * 12)},,4", 14),
    ("timestamp,meter_id,category,value", f"{_iso_z(START + 900 * 12)},m,general,4", 14),
])
def test_both_readers_refuse_alike(tmp_path, header, bad, row):
    """The same error, worded the same and naming the same row (None: whichever row, as long
    as both agree), whichever reader met it."""
    good = [OTHER_COLUMNS[header](*line.split(",")) for line in GOOD]
    path = write_text(tmp_path / "bad.csv", [header, *good, bad])
    errors = []
    for bulk in (True, False):
        with pytest.raises(InputError) as info:
            read_meter_csv(path, bulk=bulk)
        errors.append((str(info.value), info.value.row))
    assert errors[0] == errors[1]
    if row is not None:
        assert errors[0][1] == row


@pytest.mark.parametrize("far", [f"{_iso_z(START + 900 * 40)},4",
                                 f"{LAST_EPOCH_S + 1},2"])  # milliseconds: 1978
def test_both_readers_split_a_long_gap_alike(tmp_path, far):
    path = write_text(tmp_path / "gap.csv", ["timestamp,value", *GOOD, far])
    fast, slow = (read_meter_csv(path, bulk=bulk)[0] for bulk in (True, False))
    assert fast.timestamps.tolist() == slow.timestamps.tolist()
    assert fast.values.tolist() == slow.values.tolist() and fast.repairs == slow.repairs
    assert len(fast.segments()) == 2 and any("split there" in r for r in fast.repairs)


def test_duplicates_error_policy_alike(tmp_path):
    path = write_text(tmp_path / "dup.csv", ["timestamp,value", *GOOD, GOOD[3][:-1] + "9"])
    errors = []
    for bulk in (True, False):
        with pytest.raises(InputError) as info:
            read_meter_csv(path, duplicates="error", bulk=bulk)
        errors.append((str(info.value), info.value.row))
    assert errors[0] == errors[1] and errors[0][1] == 14


# ---- the bulk kernels, cell by cell ------------------------------------------------------


DECIMALS = ["0", "7", "00.", ".5", "5.", "2.751", "0.000000000000001", "123456789012345",
            "1234567890123456", "99999999.9999999", "9999999999999999", "12345678.1234567",
            "1.2.3", ".", "", "-1", "+1", "1e5", "1,5", " 1", "1 ", "1_0", "0x10", "nan",
            "inf", "\u00bd", "3.14159265358979", "0.1", "0.2", "0.3"]


def _decimal_texts() -> list[str]:
    rng = random.Random(3)
    texts = list(DECIMALS)
    for _ in range(3000):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 17)))
        if rng.random() < 0.7:
            k = rng.randint(0, len(digits))
            digits = digits[:k] + "." + digits[k:]
        texts.append(digits)
    return texts


def test_decimals_are_exactly_what_float_reads():
    texts = _decimal_texts()
    values, read = parse_decimals(*pack_cells([t.encode() for t in texts]))
    for text, value, was_read in zip(texts, values, read):
        plain = re.fullmatch(r"\d*\.?\d*", text) is not None
        digits = sum(c.isdigit() for c in text)
        assert was_read == (plain and 1 <= digits <= 15 and len(text) <= 16), text
        if was_read:
            assert value == float(text), text
        else:
            assert np.isnan(value)


def _timestamp_texts() -> list[str]:
    rng = random.Random(5)
    texts = ["2025-01-06T00:15:00Z", "2025-01-06 00:15:00Z", "2025-01-06T00:15:00",
             "2025-01-06 00:15:00", "2025-01-06T00:15", "2025-01-06T00:15Z", "2025-01-06",
             "2025-01-06T00:15:00+01:00", "2025-01-06T00:15:00-08:00", "2025-01-06T00:15+05:30",
             "2025-01-06T00:15:00.000Z", "2025-01-06T00:15:00.000000+02:00",
             "2025-01-06T00:15:00.500Z", "2025-01-06T00:15:00.123456", "2025-01-06T00:15:00z",
             "2025-01-06x00:15:00", "2025-1-6T00:15:00", "2024-02-29T00:00:00Z",
             "2025-02-29T00:00:00Z", "2025-13-01T00:00:00Z", "2025-00-10T00:00:00Z",
             "2025-01-00T00:00:00Z", "2025-01-32T00:00:00Z", "2025-01-06T24:00:00Z",
             "2025-01-06T23:60:00Z", "2025-01-06T23:59:60Z", "2025-01-06T00:00:00+23:59",
             "2025-01-06T00:00:00+24:00", "2025-01-06T00:00:00-00:00", "0001-01-01T00:00:00Z",
             "0002-01-01T00:00:00Z", "9998-12-31T23:59:59Z", "9999-12-31T23:59:59+01:00",
             "2025-01-06T00:15:00+0100", "2025-10-26 02:30:00", "2025-03-30 02:30:00",
             "1736122500", "1736122500000", "1736122500.5", "1736122500.4", "99999999999",
             "100000000000", "1e9", "-5", str(LAST_EPOCH_S), str(LAST_EPOCH_S + 1),
             "2025-01-06T0a:15:00Z", "20250106T001500Z", "", "2025-01-0:T00:15:00Z",
             "2025-01-06T0?:15:00Z", "2025-01-06T00:1;:00Z", "202>-01-06T00:15:00Z",
             "2025-01-06T00:15:0=Z", "2025-01-06T00:15:00+0<:00"]
    for _ in range(2000):  # valid and nearly valid stamps of every form
        t = START + rng.randint(-10**9, 10**9)
        text = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        text = text[:rng.choice((10, 16, 19))] + rng.choice(("", "Z", "+01:00", "-09:30"))
        if rng.random() < 0.2:
            k = rng.randrange(len(text))
            text = text[:k] + rng.choice("0123456789:-T Z+") + text[k + 1:]
        texts.append(text)
    return texts


@pytest.mark.parametrize("tz", [None, "+05:30", "Europe/Amsterdam"])
def test_timestamp_cells_are_what_the_per_row_parser_reads(tz):
    texts = _timestamp_texts()
    seconds, read = TimestampParser(tz).parse_cells(*pack_cells([t.encode() for t in texts]))
    clock = TimestampParser(tz)
    for text, got, was_read in zip(texts, seconds, read):
        if was_read:
            assert got == clock(text, "m", "timestamp", 2), text
    must = ["2025-01-06T00:15:00Z", "2025-01-06T00:15:00+01:00", "2025-01-06T00:15Z",
            "2025-01-06T00:15:00.000Z", "1736122500", "1736122500000"]
    if tz != "Europe/Amsterdam":  # times without an offset in a zone with DST: row by row
        must += ["2025-01-06 00:15:00", "2025-01-06T00:15", "2025-01-06"]
    assert all(read[texts.index(t)] for t in must)
    never = ("2025-01-06T00:15:00.500Z", "0001-01-01T00:00:00Z", "2025-02-29T00:00:00Z", "1e9",
             "-5", "2025-01-0:T00:15:00Z", "2025-01-06T0?:15:00Z", "202>-01-06T00:15:00Z")
    assert not any(read[texts.index(t)] for t in never)


def test_pack_cells_layout():
    cells, lengths = pack_cells([b"ab", b"0123456789"])
    assert cells.shape == (2, 2) and lengths.tolist() == [2, 10]
    assert cells[0, 0] == ord("a") + (ord("b") << 8) and cells[1, 0] == 0
    assert cells[1, 1] == ord("8") + (ord("9") << 8)


# ---- the grid's shortcuts against what they stand in for ---------------------------------


def _reference_mode(x):
    uniq, counts = np.unique(x, return_counts=True)
    return uniq[np.argmax(counts)]


def _reference_slot_order(slot, lines):
    order = np.lexsort((lines, slot))
    ordered = slot[order]
    return order, np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])


def _grid_inputs(seed: int):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 400))
    ts = START + 900 * np.arange(n)
    ts += rng.choice([0, 0, 0, 60, -120, 400], n) * (rng.random(n) < rng.choice([0, 0.1, 0.6]))
    values = rng.uniform(0, 5, n).round(2)
    values[rng.random(n) < 0.03] = np.nan
    labels = (rng.random(n) < 0.1).astype(np.int64)
    if rng.random() < 0.5:  # duplicates, identical or not
        k = rng.integers(0, n, 5)
        ts, labels = np.r_[ts, ts[k]], np.r_[labels, labels[k]]
        values = np.r_[values, np.where(rng.random(5) < 0.5, values[k], 9.0)]
    order = np.argsort(ts, kind="stable") if rng.random() < 0.5 else rng.permutation(len(ts))
    return ts[order], values[order], labels[order], np.arange(2, len(ts) + 2)


@pytest.mark.parametrize("policy", ["last", "mean", "sum"])
def test_grid_shortcuts_change_nothing(monkeypatch, policy):
    def built(seed):
        try:
            g = grid.build_grid("m", *_grid_inputs(seed), duplicates=policy, max_gap=8)
        except InputError as exc:
            return str(exc), exc.row
        return (g.timestamps.tolist(), g.values.tolist(), g.labels.tolist(), g.interval_s,
                g.repairs, g.source.index.tolist(), g.source.notes)

    fast = [built(seed) for seed in range(150)]
    monkeypatch.setattr(grid, "_mode", _reference_mode)
    monkeypatch.setattr(grid, "_unique", np.unique)
    monkeypatch.setattr(grid, "_slot_order", _reference_slot_order)
    assert [built(seed) for seed in range(150)] == fast


def test_mode_is_the_smallest_most_frequent_value():
    rng = np.random.default_rng(1)
    for _ in range(300):
        x = rng.integers(0, rng.integers(1, 6), rng.integers(1, 12))
        assert grid._mode(x) == _reference_mode(x)
