"""CSV reading: the steel-plant quirks, the LEAD and generic layouts, repairs and user errors."""

from __future__ import annotations

import numpy as np
import pytest
from factories import START, steel_csv, write_text

from stream_app.core.errors import InputError
from stream_app.core.series import MeterSeries
from stream_app.core.timestamps import format_timestamp
from stream_app.io.series_io import (
    read_meter_csv,
    write_rows_csv,
)

STEEL_HEADER = ("date,Usage_kWh,Lagging_Current_Reactive.Power_kVarh,"
                "Leading_Current_Reactive_Power_kVarh,CO2(tCO2),Lagging_Current_Power_Factor,"
                "Leading_Current_Power_Factor,NSM,WeekStatus,Day_of_week,Load_Type")


def _steel_lines(days: int = 2) -> tuple[list[str], list[float]]:
    """Steel layout: each day 00:15 .. 23:45, then 00:00 dated the same day (= its 24:00)."""
    lines, values = [STEEL_HEADER], []
    for d in range(days):
        date = f"{d + 1:02d}/01/2018"
        for k in range(1, 97):
            minutes = (k * 15) % 1440
            value = round(3.0 + (d * 96 + k) * 0.01, 2)
            values.append(value)
            lines.append(f"{date} {minutes // 60:02d}:{minutes % 60:02d},{value},0,0,0,70,100,"
                         f"{minutes * 60},Weekday,Monday,Light_Load")
    return lines, values


def _generic(tmp_path, rows: list[str], header: str = "timestamp,value"):
    return write_text(tmp_path / "m.csv", [header, *rows])


def _iso(i: int) -> str:
    return format_timestamp(START + 900 * i)


def test_steel_sample_bom_crlf_and_midnight_rule(tmp_path):
    lines, values = _steel_lines(2)
    path = write_text(tmp_path / "steel.csv", lines, bom=True, crlf=True)
    [s] = read_meter_csv(path)
    assert (s.meter_id, s.category, s.interval_s, s.labels, s.repairs) == (
        "steel", "industrial", 900, None, [])
    assert len(s) == 192
    assert format_timestamp(s.timestamps[0]) == "2018-01-01T00:15:00+00:00"
    assert format_timestamp(s.timestamps[95]) == "2018-01-02T00:00:00+00:00"
    assert format_timestamp(s.timestamps[-1]) == "2018-01-03T00:00:00+00:00"
    assert np.all(np.diff(s.timestamps) == 900)
    np.testing.assert_array_equal(s.values, values)  # file order already is time order


def test_steel_real_file_is_a_full_regular_grid():
    [s] = read_meter_csv(steel_csv())
    assert len(s) == 35040 and s.repairs == []
    assert format_timestamp(s.timestamps[0]) == "2018-01-01T00:15:00+00:00"
    assert format_timestamp(s.timestamps[-1]) == "2019-01-01T00:00:00+00:00"
    assert np.all(np.diff(s.timestamps) == 900)
    # The all-zero row dated 07/11/2018 00:00 is the end of 7 Nov: real data, kept as 0.
    zero_row = s.timestamps == 1541635200  # 2018-11-08T00:00:00+00:00
    assert s.values[zero_row].tolist() == [0.0]
    assert s.values.max() == pytest.approx(157.18)
    assert s.values.mean() == pytest.approx(27.39, abs=0.01)


def test_lead_layout_autodetected(tmp_path):
    rows = [f"2016-01-01 {h:02d}:00:00,{b},{100 + h + b},{int(h == 2)}"
            for h in range(5) for b in (118, 121)]
    path = _generic(tmp_path, rows, "timestamp,building_id,meter_reading,anomaly")
    series = read_meter_csv(path)
    assert [s.meter_id for s in series] == ["118", "121"]
    s = series[0]
    assert s.interval_s == 3600 and s.category == "industrial"
    assert s.values.tolist() == [218.0, 219.0, 220.0, 221.0, 222.0]
    assert s.labels.tolist() == [0, 0, 1, 0, 0]
    assert format_timestamp(s.timestamps[0]) == "2016-01-01T00:00:00+00:00"


def test_epoch_seconds_and_milliseconds_agree(tmp_path):
    sec = _generic(tmp_path, [f"{START + 900 * i},{i}" for i in range(4)])
    [a] = read_meter_csv(sec)
    ms = write_text(tmp_path / "ms.csv", ["timestamp,value"]
                    + [f"{(START + 900 * i) * 1000},{i}" for i in range(4)])
    [b] = read_meter_csv(ms)
    np.testing.assert_array_equal(a.timestamps, START + 900 * np.arange(4))
    np.testing.assert_array_equal(a.timestamps, b.timestamps)


def test_iso_offsets_are_converted_and_naive_is_utc(tmp_path):
    rows = ["2025-01-06T01:00:00+01:00,1", "2025-01-06T00:15:00,2", "2025-01-06T00:30:00Z,3"]
    [s] = read_meter_csv(_generic(tmp_path, rows))
    np.testing.assert_array_equal(s.timestamps, START + 900 * np.arange(3))
    assert s.values.tolist() == [1.0, 2.0, 3.0]


def test_unsorted_rows_are_sorted_per_meter(tmp_path):
    rows = [f"{_iso(i)},{i}" for i in (3, 0, 2, 1)]
    [s] = read_meter_csv(_generic(tmp_path, rows))
    assert s.values.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_short_gap_is_interpolated_and_reported(tmp_path):
    rows = [f"{_iso(i)},{10.0 * i}" for i in (0, 1, 4, 5)] + [f"{_iso(6)},"]
    rows.append(f"{_iso(7)},70")
    path = _generic(tmp_path, rows + [f"{_iso(8)},80"], "timestamp,value")
    [s] = read_meter_csv(path)
    np.testing.assert_allclose(s.values, 10.0 * np.arange(9))
    assert s.repairs == ["m: interpolated 2 missing readings between rows 3 and 4",
                         "m: interpolated 1 missing readings at row 6"]


def test_interpolated_points_get_label_zero(tmp_path):
    rows = [f"{_iso(0)},1,1", f"{_iso(1)},2,1", f"{_iso(3)},4,1", f"{_iso(4)},5,0"]
    [s] = read_meter_csv(_generic(tmp_path, rows, "timestamp,value,label"))
    assert s.labels.tolist() == [1, 1, 0, 1, 0]
    assert s.values.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_missing_ends_are_dropped(tmp_path):
    rows = [f"{_iso(0)},nan", f"{_iso(1)},1", f"{_iso(2)},2", f"{_iso(3)},"]
    [s] = read_meter_csv(_generic(tmp_path, rows))
    assert s.values.tolist() == [1.0, 2.0] and s.timestamps[0] == START + 900
    assert len(s.repairs) == 2


def test_identical_duplicate_is_dropped(tmp_path):
    rows = [f"{_iso(0)},1", f"{_iso(1)},2", f"{_iso(1)},2", f"{_iso(2)},3"]
    [s] = read_meter_csv(_generic(tmp_path, rows))
    assert s.values.tolist() == [1.0, 2.0, 3.0]
    assert s.repairs == ["m: dropped 1 identical duplicate readings (row 4)"]
    assert s.source.index.tolist() == [0, 1, -1, 2]
    assert s.source.notes[2] == "identical duplicate of row 3, dropped"


@pytest.mark.parametrize(
    ("rows", "header", "row", "needle"),
    [
        ([f"{_iso(0)},1", f"{_iso(1)},x"], "timestamp,value", 3, "non-numeric value 'x'"),
        ([f"{_iso(0)},1", f"{_iso(1)},inf"], "timestamp,value", 3, "infinite value"),
        ([f"{_iso(0)},1", "yesterday,2"], "timestamp,value", 3, "cannot parse timestamp"),
        ([f"{_iso(0)},1,steelworks"], "timestamp,value,category", 2,
         "unknown category 'steelworks'; known: industrial, general"),
        ([f"{_iso(0)},1,2"], "timestamp,value,label", 2, "must be 0 or 1"),
        ([f"{_iso(0)}"], "timestamp,value", 2, "1 fields, but the header has 2"),
        ([f"{_iso(0)},1"], "timestamp,value", 2, "need at least 2"),
        ([], "timestamp,value", 2, "no data rows"),
        ([f"{_iso(0)},1"], "time_of_reading,kwh_used", 1,
         ("no timestamp column (looked for timestamp, time, datetime; name it with "
         "--timestamp-col); available columns: time_of_reading, kwh_used")),
    ],
)
def test_user_errors_name_the_row(tmp_path, rows, header, row, needle):
    with pytest.raises(InputError) as info:
        read_meter_csv(_generic(tmp_path, rows, header))
    assert info.value.row == row
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_a_gap_longer_than_max_gap_splits_the_series(tmp_path):
    path = _generic(tmp_path, [f"{_iso(0)},1", f"{_iso(1)},2", f"{_iso(7)},8", f"{_iso(8)},"
                               , f"{_iso(9)},9", f"{_iso(100)},5", f"{_iso(101)},6"])
    [s] = read_meter_csv(path)
    # the 5 missing readings and the 90 are left out; the one empty value is interpolated
    assert s.values.tolist() == [1.0, 2.0, 8.0, 8.5, 9.0, 5.0, 6.0]
    assert s.segments() == [(0, 2), (2, 5), (5, 7)]
    assert s.repairs[0] == ("m: gap of 5 missing readings between rows 3 and 4 "
                            "(2025-01-06T00:30:00+00:00 to 2025-01-06T01:30:00+00:00), longer "
                            "than --max-gap 4: the series is split there (no window spans it)")
    assert sum("split there" in r for r in s.repairs) == 2
    assert s.source.index.tolist() == [0, 1, 2, 3, 4, 5, 6]
    [s] = read_meter_csv(path, max_gap=5)  # the first gap filled, the second still splits
    assert s.values[:8].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert len(s.segments()) == 2


def test_an_empty_value_inside_a_long_gap_is_dropped_and_said(tmp_path):
    rows = [f"{_iso(0)},1", f"{_iso(1)},2"] + [f"{_iso(k)}," for k in range(2, 9)] + [
        f"{_iso(9)},3", f"{_iso(10)},4"]
    [s] = read_meter_csv(_generic(tmp_path, rows))
    assert s.values.tolist() == [1.0, 2.0, 3.0, 4.0] and s.segments() == [(0, 2), (2, 4)]
    assert s.source.index.tolist() == [0, 1] + [-1] * 7 + [2, 3]
    assert s.source.notes[2] == "empty value in a gap longer than --max-gap 4, dropped"


def test_empty_file_and_unknown_explicit_column(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty") as info:
        read_meter_csv(empty)
    assert info.value.row == 1
    path = _generic(tmp_path, [f"{_iso(0)},1", f"{_iso(1)},2"])
    with pytest.raises(InputError, match="column 'kwh' not found; available columns: "
                                         "timestamp, value"):
        read_meter_csv(path, value_col="kwh")


def test_explicit_columns_and_defaults(tmp_path):
    rows = [f"{START + 3600 * i},{i},x" for i in range(3)]
    path = _generic(tmp_path, rows, "ts,energy,comment")
    [s] = read_meter_csv(path, timestamp_col="ts", value_col="energy",
                         default_meter_id="pump-7", default_category="agricultural")
    assert (s.meter_id, s.category, s.interval_s) == ("pump-7", "agricultural", 3600)


def test_write_then_read_round_trip(tmp_path):
    values = [0.1, 2.0 / 3.0, 1e-7, 12345.678]
    rows = [(_iso(i), "a", "general", v, 0) for i, v in enumerate(values)]
    path = tmp_path / "out.csv"
    write_rows_csv(path, ["timestamp", "meter_id", "category", "value", "label"], rows)
    [s] = read_meter_csv(path)
    assert (s.meter_id, s.category) == ("a", "general")
    assert s.values.tolist() == values  # shortest repr round-trips exactly
    assert isinstance(s, MeterSeries) and s.labels.dtype == np.int8


@pytest.mark.parametrize(("rows", "needle"), [
    (["1e30,1", "1704067200,1"], "outside the years 1-9999"),
    (["0,1", "900,1", "99999999900,1"], "spans 111,111,112 readings of 900 s"),
    (["0,nan", "99999999000,1", "99999999900,1"], "more than 5,000,000"),
])
def test_absurd_timestamps_are_refused_before_any_grid_is_built(tmp_path, rows, needle):
    """Found by tests/test_csv_fuzz.py: 1e30 overflowed, and a 3-row file with a far-future
    timestamp allocated a grid of 111 million readings (3.6 GB) before saying no."""
    with pytest.raises(InputError, match=needle):
        read_meter_csv(_generic(tmp_path, rows, "timestamp,value"))


def test_one_reading_left_after_missing_ends_are_dropped_is_refused(tmp_path):
    """Found by tests/test_csv_fuzz.py: two rows, the first without a value, gave a series of
    one reading."""
    with pytest.raises(InputError, match="need at least 2"):
        read_meter_csv(_generic(tmp_path, [f"{_iso(0)},", f"{_iso(1)},2"], "timestamp,value"))


# --- clocks and grids (issue 12, section 1) ------------------------------------------------

def _at(epoch: int) -> str:
    return format_timestamp(epoch)


def test_jittered_ten_minute_clock_is_snapped_to_its_grid(tmp_path):
    rng = np.random.default_rng(1)
    jitter = rng.integers(-180, 181, 200)  # up to 3 minutes either way
    jitter[5] = 180
    rows = [f"{_at(START + 600 * i + int(j))},{i}" for i, j in enumerate(jitter)]
    [s] = read_meter_csv(_generic(tmp_path, rows))
    assert s.interval_s == 600
    np.testing.assert_array_equal(s.timestamps, START + 600 * np.arange(200))
    np.testing.assert_array_equal(s.values, np.arange(200.0))
    assert "m: irregular clock, interval 600 s from the median step" in s.repairs
    assert ("m: snapped 199 readings up to 180 s off the 600 s grid to the nearest grid point"
            in s.repairs)
    assert s.source.index.tolist() == list(range(200))


def test_interval_is_the_dominant_step_not_the_first(tmp_path):
    times = [START, START + 300] + [START + 900 * k for k in range(1, 12)]
    [s] = read_meter_csv(_generic(tmp_path, [f"{_at(t)},1" for t in times]))
    assert s.interval_s == 900
    np.testing.assert_array_equal(s.timestamps, START + 900 * np.arange(12))
    # 00:05 is 300 s off the grid, not less than 900/3: energy of the slot ending 00:15
    assert s.values.tolist() == [1.0, 2.0] + [1.0] * 10


def test_off_grid_reading_is_summed_into_the_slot_it_ends_in(tmp_path):
    rows = [f"{_iso(i)},{i + 1}" for i in range(6)]
    rows.insert(2, f"{_at(START + 900 + 420)},0.5")  # 00:22, 7 min past 00:15, line 4
    [s] = read_meter_csv(_generic(tmp_path, rows))
    assert s.interval_s == 900 and len(s) == 6
    assert s.values.tolist() == [1.0, 2.0, 3.5, 4.0, 5.0, 6.0]  # 00:30 = 3 + 0.5
    assert "m: summed 1 readings more than 300 s off the grid into the slot they end in (row 4)" \
        in s.repairs
    # each file row: the 00:30 reading (line 5) stands for the slot, line 4 merged into it
    assert s.source.index.tolist() == [0, 1, -1, 2, 3, 4, 5]
    assert s.source.notes[2] == "merged into row 5"


@pytest.mark.parametrize(("policy", "expected"), [("last", 7.0), ("mean", 5.0), ("sum", 15.0)])
def test_conflicting_duplicates_follow_the_policy(tmp_path, policy, expected):
    rows = [f"{_iso(0)},1", f"{_iso(1)},2", f"{_iso(1)},6", f"{_iso(1)},2", f"{_iso(1)},7",
            f"{_iso(2)},3"]
    [s] = read_meter_csv(_generic(tmp_path, rows), duplicates=policy)
    assert s.values.tolist() == [1.0, expected, 3.0]
    assert "m: dropped 1 identical duplicate readings (row 5)" in s.repairs
    assert (f"m: 1 slots with conflicting duplicates resolved by --duplicates {policy} (row 6)"
            in s.repairs)
    assert s.source.index.tolist() == [0, -1, -1, -1, 1, 2]
    if policy == "last":
        assert s.source.notes[1] == "replaced by row 6 (--duplicates last)"
    else:
        assert s.source.notes[1] == "merged into row 6"


def test_duplicates_error_policy_names_both_rows(tmp_path):
    rows = [f"{_iso(0)},1", f"{_iso(1)},2", f"{_iso(1)},3", f"{_iso(2)},3"]
    with pytest.raises(InputError, match="duplicate timestamp 2025-01-06T00:15:00.00:00 for "
                                         "meter 'm' at rows 3 and 4 with different values") as e:
        read_meter_csv(_generic(tmp_path, rows), duplicates="error")
    assert e.value.row == 4
    with pytest.raises(InputError, match="duplicates policy 'first'"):
        read_meter_csv(_generic(tmp_path, rows), duplicates="first")


def _local_day(day: str, hours: list[str]) -> list[str]:
    return [f"{day}T{h}:{m:02d}:00" for h in hours for m in (0, 15, 30, 45)]


def test_dst_fall_back_repeated_hour_in_europe_amsterdam(tmp_path):
    # 2024-10-27: 03:00 CEST becomes 02:00 CET, so 02:00-02:45 come twice (00:00Z-00:45Z, then
    # 01:00Z-01:45Z)
    hours = ["00", "01", "02", "02", "03", "04"]
    stamps = _local_day("2024-10-27", hours)
    rows = [f"{t},{i}" for i, t in enumerate(stamps)]
    [s] = read_meter_csv(_generic(tmp_path, rows), tz="Europe/Amsterdam")
    assert len(s) == 24 and s.repairs == []
    assert format_timestamp(s.timestamps[0]) == "2024-10-26T22:00:00+00:00"  # 00:00 CEST
    assert format_timestamp(s.timestamps[-1]) == "2024-10-27T03:45:00+00:00"  # 04:45 CET
    assert np.all(np.diff(s.timestamps) == 900)
    np.testing.assert_array_equal(s.values, np.arange(24.0))  # no row lost, none invented


def test_dst_spring_forward_missing_hour_in_europe_amsterdam(tmp_path):
    # 2024-03-31: 02:00 CET becomes 03:00 CEST; the meter's clock never shows 02:xx
    stamps = _local_day("2024-03-31", ["00", "01", "03", "04"])
    [s] = read_meter_csv(_generic(tmp_path, [f"{t},{i}" for i, t in enumerate(stamps)]),
                         tz="Europe/Amsterdam")
    assert len(s) == 16 and s.repairs == []  # nothing interpolated
    assert format_timestamp(s.timestamps[7]) == "2024-03-31T00:45:00+00:00"  # 01:45 CET
    assert format_timestamp(s.timestamps[8]) == "2024-03-31T01:00:00+00:00"  # 03:00 CEST
    assert np.all(np.diff(s.timestamps) == 900)


def test_dst_per_meter_and_offsets_in_the_file_win(tmp_path):
    stamps = _local_day("2024-10-27", ["01", "02", "02", "03"])
    rows = [f"{t},{meter},1" for t in stamps for meter in ("a", "b")]
    rows.append("2024-10-27T04:00:00+01:00,a,1")  # an explicit offset is not the zone's guess
    series = read_meter_csv(_generic(tmp_path, rows, "timestamp,meter_id,value"),
                            tz="Europe/Amsterdam")
    assert [len(s) for s in series] == [17, 16]
    assert all(np.all(np.diff(s.timestamps) == 900) for s in series)


def test_fixed_offset_and_timestamp_format(tmp_path):
    rows = [f"06.01.2025 {h:02d}:{m:02d},{h}" for h in range(2) for m in (0, 15, 30, 45)]
    [s] = read_meter_csv(_generic(tmp_path, rows), tz="-08:00",
                         timestamp_format="%d.%m.%Y %H:%M")
    assert format_timestamp(s.timestamps[0]) == "2025-01-06T08:00:00+00:00"
    assert s.interval_s == 900 and len(s) == 8
    with pytest.raises(InputError, match="does not match --timestamp-format") as e:
        read_meter_csv(_generic(tmp_path, rows + ["2025-01-06 02:00,1"]),
                       timestamp_format="%d.%m.%Y %H:%M")
    assert e.value.row == 10


def test_epoch_seconds_and_milliseconds_by_magnitude_on_a_jittered_clock(tmp_path):
    sec = [f"{START + 300 * i + (7 if i % 2 else -5)},{i}" for i in range(10)]
    ms = [f"{(START + 300 * i) * 1000 + (7000 if i % 3 else 0)},{i}" for i in range(10)]
    [a] = read_meter_csv(_generic(tmp_path, sec))
    [b] = read_meter_csv(write_text(tmp_path / "ms.csv", ["timestamp,value", *ms]))
    for s in (a, b):
        assert s.interval_s == 300
        np.testing.assert_array_equal(s.timestamps, START + 300 * np.arange(10))


def test_semicolons_and_decimal_commas(tmp_path):
    rows = [f"{_iso(0)};1,5", f"{_iso(1)};0,25", f"{_iso(2)};1.234,5", f"{_iso(3)};2"]
    [s] = read_meter_csv(_generic(tmp_path, rows, "timestamp;value"))
    assert s.values.tolist() == [1.5, 0.25, 1234.5, 2.0]
    with pytest.raises(InputError, match="non-numeric value '1,5'"):  # a comma file: no guess
        read_meter_csv(_generic(tmp_path, [f'{_iso(0)},"1,5"', f"{_iso(1)},2"]))


def test_given_interval_sums_finer_readings_into_its_slots(tmp_path):
    rows = [f"{_at(START + 300 * k)},1" for k in range(1, 13)]  # 5-min readings 00:05..01:00
    [s] = read_meter_csv(_generic(tmp_path, rows), interval="15min")
    assert s.interval_s == 900
    np.testing.assert_array_equal(s.timestamps, START + 900 * np.arange(1, 5))
    assert s.values.tolist() == [3.0, 3.0, 3.0, 3.0]  # each 15 minutes' energy
    [t] = read_meter_csv(_generic(tmp_path, rows), interval=900, grid_tolerance=0)
    assert t.values.tolist() == [3.0, 3.0, 3.0, 3.0]


def test_grid_tolerance_decides_snap_or_sum(tmp_path):
    rows = [f"{_iso(0)},1", f"{_at(START + 900 + 120)},2", f"{_iso(2)},3", f"{_iso(3)},4"]
    [snap] = read_meter_csv(_generic(tmp_path, rows), interval="15min")
    assert snap.values.tolist() == [1.0, 2.0, 3.0, 4.0]
    [summed] = read_meter_csv(_generic(tmp_path, rows), interval="15min", grid_tolerance="1min")
    # 00:17 belongs to the slot ending 00:30; the empty 00:15 slot is interpolated
    assert summed.values.tolist() == [1.0, 3.0, 5.0, 4.0]
    assert "m: interpolated 1 missing readings between rows 2 and 4" in summed.repairs
    with pytest.raises(InputError, match="between 0 and half the 900 s interval"):
        read_meter_csv(_generic(tmp_path, rows), interval="15min", grid_tolerance="10min")


@pytest.mark.parametrize(("text", "seconds"), [
    ("300", 300), (300, 300), ("5min", 300), ("15min", 900), ("15m", 900), ("1h", 3600),
    ("1.5h", 5400), ("90s", 90), ("1 day", 86400)])
def test_interval_forms(tmp_path, text, seconds):
    from stream_app.core.timestamps import parse_duration

    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0", "abc", "-5min", "1.5s", "15 fortnights"])
def test_bad_interval_is_a_clear_error(tmp_path, text):
    with pytest.raises(InputError, match="not a duration like 300, 5min, 15min or 1h"):
        read_meter_csv(_generic(tmp_path, [f"{_iso(0)},1", f"{_iso(1)},2"]), interval=text)


def test_each_file_row_is_accounted_for(tmp_path):
    """Interpolated readings have no row; empty ends, duplicates and merged rows do."""
    rows = [f"{_iso(0)},", f"{_iso(1)},1", f"{_iso(1)},1", f"{_iso(4)},4", f"{_iso(5)},"]
    [s] = read_meter_csv(_generic(tmp_path, rows))
    assert len(s) == 4  # 00:15 .. 01:00 with 00:30 and 00:45 interpolated
    assert s.source.lines.tolist() == [2, 3, 4, 5, 6]
    assert s.source.index.tolist() == [-1, 0, -1, 3, -1]
    assert s.source.notes[0] == s.source.notes[4] == ("empty value at an end of the series, "
                                                      "dropped")


@pytest.mark.parametrize(("unit", "factor"), [("kWh", 1.0), ("Wh", 1e-3), ("MWh", 1e3)])
def test_energy_units_are_scaled_to_kwh(tmp_path, unit, factor):
    rows = [f"{_iso(i)},{(i + 1) * 100}" for i in range(6)]
    [s] = read_meter_csv(_generic(tmp_path, rows), unit=unit)
    np.testing.assert_allclose(s.values, [(i + 1) * 100 * factor for i in range(6)])


def test_power_is_averaged_into_its_slot_and_becomes_interval_energy(tmp_path):
    rows = [f"{_iso(i)},{4.0 * (i + 1)}" for i in range(6)]  # 4, 8, ... kW at 15 min
    rows.insert(2, f"{_at(START + 900 + 420)},20")  # 00:22: off the grid, averaged into 00:30
    [s] = read_meter_csv(_generic(tmp_path, rows), unit="kW")
    # kWh = kW x 0.25 h; 00:30 holds the mean of 12 kW and 20 kW
    assert s.values.tolist() == [1.0, 2.0, 4.0, 4.0, 5.0, 6.0]
    assert "m: averaged 1 readings more than 300 s off the grid into the slot they end in " \
        "(row 4)" in s.repairs
    assert "m: kW readings turned into kWh per 900 s interval" in s.repairs


def test_a_register_becomes_interval_energy_and_its_first_reading_the_baseline(tmp_path):
    readings = [1000.0, 1001.0, 1003.0, 1003.5, 1006.0, 1010.0]
    rows = [f"{_iso(i)},{v}" for i, v in enumerate(readings)]
    [s] = read_meter_csv(_generic(tmp_path, rows), cumulative=True)
    assert s.values.tolist() == [1.0, 2.0, 0.5, 2.5, 4.0]
    assert s.source.index.tolist() == [-1, 0, 1, 2, 3, 4]  # every row accounted for
    assert any("register readings turned into interval energy" in r for r in s.repairs)


def test_a_register_rollover_splits_the_series_never_a_negative_energy(tmp_path):
    readings = [9997.0, 9998.0, 9999.5, 1.0, 2.0, 4.0, 5.0]
    rows = [f"{_iso(i)},{v}" for i, v in enumerate(readings)]
    [s] = read_meter_csv(_generic(tmp_path, rows), cumulative=True)
    # the drop's interval is unknown and left out, not interpolated: a new segment starts
    assert s.values.tolist() == [1.0, 1.5, 1.0, 2.0, 1.0]
    assert s.segments() == [(0, 2), (2, 5)]
    assert "m: the register dropped 1 times (rollover or reset; rows 5): those intervals' energy " \
        "is unknown, the series is split there (no window spans it)" in s.repairs
    assert not any("interpolated" in r for r in s.repairs)
    assert s.source.index.tolist() == [-1, 0, 1, -1, 2, 3, 4]  # every row accounted for
    assert s.source.notes[3] == "unknown energy (the register dropped), the series is split here"


def test_a_register_drop_after_missing_readings_is_one_split(tmp_path):
    """A drop across absent slots: the whole run is left out, however short, once reported."""
    rows = [f"{_iso(i)},{v}" for i, v in ((0, 100), (1, 101), (2, 103), (4, 1), (5, 2), (6, 4))]
    [s] = read_meter_csv(_generic(tmp_path, rows), cumulative=True, interval="15min")
    assert s.values.tolist() == [1.0, 2.0, 1.0, 2.0]
    assert s.segments() == [(0, 2), (2, 4)]
    assert not any("interpolated" in r or "gap of" in r for r in s.repairs)


def test_a_register_step_over_a_gap_is_shared_by_its_intervals(tmp_path):
    rows = [f"{_iso(0)},100", f"{_iso(1)},101", f"{_iso(4)},107", f"{_iso(5)},108"]
    [s] = read_meter_csv(_generic(tmp_path, rows), cumulative=True, interval="15min")
    assert s.values.tolist() == [1.0, 2.0, 2.0, 2.0, 1.0]  # 6 kWh over 3 intervals


def test_values_that_never_decrease_are_reported_as_a_likely_register(tmp_path):
    rows = [f"{_iso(i)},{500 + 0.5 * i}" for i in range(700)]
    [s] = read_meter_csv(_generic(tmp_path, rows))
    assert any("like a cumulative register; if they are, pass --cumulative" in r
               for r in s.repairs)
    [c] = read_meter_csv(_generic(tmp_path, rows), cumulative=True)
    assert not any("like a cumulative register" in r for r in c.repairs)
    assert np.allclose(c.values, 0.5)


def test_unknown_unit_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="unknown unit 'kWh/h'; known: kWh, Wh, MWh, kW, W"):
        read_meter_csv(_generic(tmp_path, [f"{_iso(0)},1", f"{_iso(1)},2"]), unit="kWh/h")


def test_a_negative_reading_is_a_data_fault_kept_as_its_row_not_a_refusal(tmp_path):
    rows = [f"{_iso(i)},{v}" for i, v in enumerate([1, 2, -2.5, 4, 5])]
    [s] = read_meter_csv(_generic(tmp_path, rows))
    assert s.values.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]  # its slot interpolated
    assert s.source.index.tolist() == [0, 1, -1, 3, 4]
    assert s.source.values[2] == -2.5 and s.source.faults == {2: "negative_reading"}
    assert s.source.notes[2] == "negative reading: a data fault of a consumption meter, not scored"
    assert s.repairs[0] == ("m: 1 negative readings (row 4) kept as data faults (kind "
                            "negative_reading, not scored): a consumption meter cannot use "
                            "negative energy, so their slots count as missing")


def test_negative_readings_read_alike_by_both_readers(tmp_path):
    rows = [f"{_iso(i)},{v}" for i, v in enumerate([1, -2, 3, -4.25, 5, 6])]
    path = _generic(tmp_path, rows)
    [bulk], [plain] = read_meter_csv(path), read_meter_csv(path, bulk=False)
    assert bulk.values.tolist() == plain.values.tolist()
    assert bulk.source.faults == plain.source.faults == {1: "negative_reading",
                                                         3: "negative_reading"}
    assert bulk.repairs == plain.repairs
