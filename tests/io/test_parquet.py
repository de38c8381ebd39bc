"""Parquet input: a table reads as the CSV of the same table, by the same rules and lines."""

from __future__ import annotations

import csv
import sys
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from factories import START, write_text

from stream_app.cli import main
from stream_app.core.errors import InputError
from stream_app.core.timestamps import format_timestamp
from stream_app.io.series_io import read_meter_csv

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

AMSTERDAM = ZoneInfo("Europe/Amsterdam")


def _instants(n: int) -> list[datetime]:
    return [datetime.fromtimestamp(START + 900 * (i + 1), UTC) for i in range(n)]


def _same(a, b) -> None:
    assert (a.meter_id, a.category, a.interval_s) == (b.meter_id, b.category, b.interval_s)
    np.testing.assert_array_equal(a.timestamps, b.timestamps)
    np.testing.assert_array_equal(a.values, b.values)
    assert a.repairs == b.repairs
    np.testing.assert_array_equal(a.source.index, b.source.index)
    assert a.source.notes == b.source.notes and a.source.faults == b.source.faults


def test_a_table_reads_as_the_csv_of_the_same_table(tmp_path):
    times = _instants(300)
    values: list[float | None] = [round(10 + 5 * np.sin(i / 8), 3) for i in range(300)]
    values[40], values[41], values[90] = None, None, -2.0  # a short gap and a data fault
    meters = ["a" if i % 3 else "b" for i in range(300)]
    times[120] = times[119]  # one conflicting duplicate (meter a: rows 121 and 122)
    meters[120] = meters[119]
    table = pa.table({"timestamp": pa.array(times, pa.timestamp("ns", "UTC")),
                      "meter_id": meters, "value": pa.array(values, pa.float64()),
                      "category": ["general"] * 300})
    pq.write_table(table, tmp_path / "m.parquet")
    write_text(tmp_path / "m.csv", ["timestamp,meter_id,value,category"] + [
        f"{format_timestamp(int(t.timestamp()))},{m},{'' if v is None else v},general"
        for t, m, v in zip(times, meters, values)])
    from_parquet = read_meter_csv(tmp_path / "m.parquet")
    from_csv = read_meter_csv(tmp_path / "m.csv")
    assert [s.meter_id for s in from_parquet] == ["b", "a"]
    for a, b in zip(from_parquet, from_csv, strict=True):
        _same(a, b)
    assert any("conflicting duplicates" in r for r in from_parquet[1].repairs)
    assert any("negative readings" in r for s in from_parquet for r in s.repairs)


def test_wall_times_without_a_zone_are_read_in_tz_across_the_fall_back(tmp_path):
    # 2024-10-27: 03:00 CEST -> 02:00 CET in Amsterdam, 02:00-02:45 twice in wall time
    utc = [datetime(2024, 10, 26, 22, 0, tzinfo=UTC) + timedelta(minutes=15 * i)
           for i in range(16)]
    wall = [t.astimezone(AMSTERDAM).replace(tzinfo=None) for t in utc]
    assert len(set(wall)) == 12  # four wall times repeated
    values = [float(i + 1) for i in range(16)]
    pq.write_table(pa.table({"time": pa.array(wall, pa.timestamp("us")), "kwh": values}),
                   tmp_path / "dst.parquet")
    [s] = read_meter_csv(tmp_path / "dst.parquet", tz="Europe/Amsterdam")
    assert s.timestamps.tolist() == [int(t.timestamp()) for t in utc]
    assert s.values.tolist() == values and s.repairs == []


def test_float32_numbers_read_as_written_and_bad_cells_name_their_row(tmp_path):
    times = pa.array(_instants(4), pa.timestamp("s", "UTC"))
    pq.write_table(pa.table({"timestamp": times, "value": pa.array([1.1, 2.2, 3.3, 4.4],
                                                                   pa.float32())}),
                   tmp_path / "f32.parquet")
    [s] = read_meter_csv(tmp_path / "f32.parquet")
    assert s.values.tolist() == [1.1, 2.2, 3.3, 4.4]
    pq.write_table(pa.table({"timestamp": times, "value": [1.0, 2.0, float("inf"), 4.0]}),
                   tmp_path / "inf.parquet")
    with pytest.raises(InputError) as info:
        read_meter_csv(tmp_path / "inf.parquet")
    assert info.value.row == 4 and "infinite value 'inf' in column 'value'" in str(info.value)
    pq.write_table(pa.table({"when": times, "value": [1.0] * 4}), tmp_path / "cols.parquet")
    with pytest.raises(InputError, match="no timestamp column .* available columns: when, value"):
        read_meter_csv(tmp_path / "cols.parquet")


def test_a_broken_parquet_file_or_no_pyarrow_is_one_line(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"PAR1 and then nothing a Parquet reader could use")
    assert main(["score", "--input", str(bad), "--output", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("meterwatch score: error: broken.parquet is not a readable Parquet "
                          "file: ") and "\n" not in err
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as if pyarrow were missing
    assert main(["score", "--input", str(bad), "--output", str(tmp_path / "o.csv")]) == 2
    assert capsys.readouterr().err.strip() == (
        "meterwatch score: error: broken.parquet is a Parquet file: reading it needs pyarrow "
        "(pip install 'meterwatch[parquet]')")


def test_score_writes_what_it_writes_for_the_csv_of_the_table(tmp_path, capsys):
    n = 4 * 96
    values = np.round(40 + 20 * np.sin(2 * np.pi * np.arange(n) / 96), 3)
    times = _instants(n)
    pq.write_table(pa.table({"timestamp": pa.array(times, pa.timestamp("ms", "UTC")),
                             "value": values}), tmp_path / "site.parquet")
    write_text(tmp_path / "site.csv", ["timestamp,value"] + [
        f"{format_timestamp(int(t.timestamp()))},{v}" for t, v in zip(times, values)])
    outputs = []
    for name in ("site.parquet", "site.csv"):
        out = tmp_path / f"{name}.scores.csv"
        assert main(["score", "--input", str(tmp_path / name), "--output", str(out)]) == 0
        outputs.append(out.read_text())
        assert f"scored 193 of {n} readings of 1 meter(s)" in capsys.readouterr().out
    assert outputs[0] == outputs[1]
    rows = list(csv.DictReader(outputs[0].splitlines()))
    assert len(rows) == n and [float(r["value"]) for r in rows] == values.tolist()
