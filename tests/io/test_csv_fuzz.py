"""Property-based fuzzing of the file readers: meter CSV, Green Button CSV and ESPI XML.

Whatever the file holds, a reader either returns series that keep its promises (sorted, unique,
evenly spaced timestamps; finite non-negative kWh; labels 0/1) or raises InputError with a
message; never another exception. Rows mix valid cells with NaN/inf, negative and absurd
values, far-past/far-future and malformed timestamps, duplicates, out-of-order rows, unknown
categories, missing and extra fields.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_app.core.errors import InputError
from stream_app.io.greenbutton import parse_espi_xml, parse_greenbutton_csv
from stream_app.io.series_io import read_meter_csv

ESPI = (Path(__file__).parents[1] / "data" / "greenbutton" / "espi_15min.xml").read_bytes()

pytestmark = pytest.mark.fuzz

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                HealthCheck.function_scoped_fixture], database=None)
T0 = 1_704_067_200  # 2024-01-01T00:00:00Z

good_timestamps = st.one_of(
    st.integers(0, 40).map(lambda k: str(T0 + 900 * k)),  # epoch s on a 15-minute grid
    st.integers(0, 40).map(lambda k: str((T0 + 900 * k) * 1000)),  # epoch ms
    st.integers(0, 40).map(lambda k: f"2024-01-01T{k // 4 % 24:02d}:{k % 4 * 15:02d}:00Z"),
)
bad_timestamps = st.one_of(
    st.sampled_from(["", "yesterday", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z",
                     "1e30", "-5", "2024-02-30T00:00:00Z", "2024-01-01T25:00:00", "nan"]),
    st.text(max_size=12),
)
good_values = st.floats(0, 500).map(lambda v: f"{v:.3f}")
bad_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "NaN", "inf", "-inf", "-1", "1e308", "1e999", "abc", "0x10", "1,5"]),
    st.text(max_size=8),
)
CELLS = {  # column -> (valid cells, junk cells)
    "timestamp": (good_timestamps, bad_timestamps),
    "value": (good_values, bad_values),
    "meter_id": (st.sampled_from(["m1", "m2"]), st.sampled_from(["", " m1 ", "m\u00e9ter"])),
    "category": (st.sampled_from(["industrial", "general", "late_night", "agricultural"]),
                 st.sampled_from(["", "residential", "INDUSTRIAL"])),
    "label": (st.sampled_from(["0", "1"]), st.sampled_from(["", "2", "-1", "yes", "0.5"])),
}


@st.composite
def meter_csv(draw) -> str:
    """Clean files, files with a rare junk cell and files full of junk, in equal parts."""
    columns = ["timestamp", "value"] + draw(st.lists(
        st.sampled_from(["meter_id", "category", "label"]), unique=True, max_size=3))
    junk_rate = draw(st.sampled_from([0.0, 0.02, 0.3]))
    rows = []
    for _ in range(draw(st.integers(0, 30))):
        row = []
        for c in columns:
            good, bad = CELLS[c]
            row.append(draw(bad if draw(st.floats(0, 1)) < junk_rate else good))
        if junk_rate and draw(st.integers(0, 19)) == 0:  # a missing or an extra field
            row = row[:-1] if draw(st.booleans()) else row + ["extra"]
        rows.append(row)
    if rows and draw(st.booleans()):
        rows += draw(st.lists(st.sampled_from(rows), max_size=5))  # duplicates, out of order
    def quote(cell):
        return '"' + cell.replace('"', '""') + '"'

    return "\n".join(",".join(quote(c) for c in row) for row in [columns, *rows])


def assert_sound_or_refused(read, least: int = 2) -> None:
    """`read()` gives series that keep the readers' promises, or raises InputError with a
    message. `least`: a meter CSV needs 2 readings to know the interval; an ESPI or Green Button
    reading states its own."""
    try:
        series_list = read()
    except InputError as exc:
        assert str(exc)
        return
    for s in series_list:
        assert len(s) >= least and s.meter_id
        steps = np.diff(s.timestamps)
        # on the grid; a gap longer than max_gap is a longer step (segments)
        assert s.interval_s > 0 and (steps >= s.interval_s).all()
        assert (steps % s.interval_s == 0).all()
        assert np.isfinite(s.values).all() and (s.values >= 0).all()
        if s.labels is not None:
            assert set(np.unique(s.labels)) <= {0, 1}


@settings(FUZZ, max_examples=600)
@given(text=meter_csv())
def test_meter_csv_returns_sound_series_or_a_clear_error(tmp_path, text):
    path = tmp_path / "meters.csv"
    path.write_text(text, encoding="utf-8")
    assert_sound_or_refused(lambda: read_meter_csv(path))


@settings(FUZZ, max_examples=300)
@given(raw=st.binary(max_size=400))
def test_arbitrary_bytes_as_meter_csv(tmp_path, raw):
    path = tmp_path / "raw.csv"
    path.write_bytes(raw)
    assert_sound_or_refused(lambda: read_meter_csv(path))


@st.composite
def greenbutton_csv(draw) -> str:
    lines = ["Name,JANE DOE", "Account Number,1234567890", "",
             "TYPE,DATE,START TIME,END TIME,USAGE,UNITS,COST,NOTES"]
    for k in range(draw(st.integers(0, 30))):
        date = draw(st.one_of(st.just("2024-01-01"), st.sampled_from(
            ["", "2024-13-01", "31/12/2024", "0001-01-01", "9999-12-31"]), st.text(max_size=10)))
        start = draw(st.one_of(st.just(f"{k // 4:02d}:{k % 4 * 15:02d}"),
                               st.sampled_from(["", "24:00", "7pm", "00:07"])))
        end = f"{k // 4:02d}:{k % 4 * 15 + 14:02d}"
        usage = draw(st.one_of(good_values, good_values, bad_values))
        unit = draw(st.sampled_from(["kWh", "kWh", "Wh", "therms", ""]))
        lines.append(",".join(['"Electric usage"', date, start, end, f'"{usage}"', unit,
                               "$0.02", ""]))
    if len(lines) > 4 and draw(st.booleans()):
        lines += draw(st.lists(st.sampled_from(lines[4:]), max_size=5))
    return "\n".join(lines)


@settings(FUZZ, max_examples=400)
@given(text=greenbutton_csv())
def test_greenbutton_csv_returns_sound_series_or_a_clear_error(tmp_path, text):
    path = tmp_path / "export.csv"
    path.write_text(text, encoding="utf-8")
    assert_sound_or_refused(lambda: parse_greenbutton_csv(path, meter_id="home"), least=1)


TEXTS = [m.span(1) for m in re.finditer(rb">([^<]+)<", ESPI)]  # every element's text


@settings(FUZZ, max_examples=300)
@given(picks=st.lists(st.tuples(st.integers(0, len(TEXTS) - 1), st.sampled_from(
    [b"", b"-1", b"abc", b"1e400", b"99999999999999999999", b"NaN", b"0", b"-900", b"&amp;"])),
    min_size=1, max_size=4))
def test_espi_xml_with_junk_element_text_returns_sound_series_or_a_clear_error(picks):
    """Values, times, durations, multipliers and units replaced by junk, the XML kept valid."""
    data = ESPI
    for index, junk in sorted(set(picks), reverse=True):  # from the end: spans stay valid
        start, end = TEXTS[index]
        data = data[:start] + junk + data[end:]
    assert_sound_or_refused(lambda: parse_espi_xml(data, meter_id="feed"), least=1)


@settings(FUZZ, max_examples=300)
@given(cuts=st.lists(st.tuples(st.integers(0, len(ESPI)), st.integers(0, 40),
                               st.binary(max_size=12)), min_size=1, max_size=4))
def test_mutated_espi_xml_returns_sound_series_or_a_clear_error(cuts):
    """The real sample feed with slices deleted or replaced by junk (tags, values, bytes)."""
    data = ESPI
    for start, length, junk in cuts:
        data = data[:start] + junk + data[start + length:]
    assert_sound_or_refused(lambda: parse_espi_xml(data, meter_id="feed"), least=1)
