"""Green Button import: ESPI XML and CSV exports to kWh series, errors, CLI, produce to Kafka.

The files under tests/data/greenbutton/ were written for these tests following the public ESPI
schema; the expected values below are computed by hand from how they were written.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from stream_app.cli import main
from stream_app.core.errors import InputError
from stream_app.core.records import Reading, decode_reading
from stream_app.io.greenbutton import (
    load_greenbutton,
    parse_espi_xml,
    parse_greenbutton_csv,
    parse_tz,
)
from stream_app.io.series_io import read_meter_csv

DATA = Path(__file__).parents[1] / "data" / "greenbutton"
T0 = 1_704_067_200  # 2024-01-01T00:00:00Z, the first interval start of both XML feeds


def _mwh(k: int) -> int:
    """The 15-min feed's k-th IntervalReading value: milli-Wh (powerOfTenMultiplier -3)."""
    return 250_000 + (k * 7919) % 500_000


def test_espi_15min_values_timestamps_and_interval():
    [s] = parse_espi_xml(DATA / "espi_15min.xml")
    assert (s.meter_id, s.category, s.interval_s, len(s)) == ("Plant-7-Main-Meter", "general",
                                                              900, 192)
    # value * 10**-3 Wh = value * 1e-6 kWh
    assert s.values[:3].tolist() == [0.25, 0.257919, 0.265838]
    assert s.values.tolist() == [_mwh(k) / 1_000_000 for k in range(192)]
    # timestamps are interval ends: the first 00:00-00:15 reading is stamped 00:15 UTC
    assert s.timestamps[0] == T0 + 900
    assert s.timestamps[-1] == T0 + 2 * 86_400
    assert (np.diff(s.timestamps) == 900).all()
    assert s.repairs == []


def test_espi_60min_without_links_pairs_by_document_order():
    [s] = parse_espi_xml((DATA / "espi_60min.xml").read_bytes(), category="agricultural")
    assert (s.meter_id, s.category, s.interval_s, len(s)) == ("Farm-pump-north", "agricultural",
                                                              3600, 48)
    assert s.values.tolist() == [(1000 + k * 37 % 2000) / 1000 for k in range(48)]  # Wh -> kWh
    assert s.timestamps.tolist() == [T0 + 3600 * (k + 1) for k in range(48)]


def test_meter_id_option_and_loader_dispatch():
    [s] = load_greenbutton(DATA / "espi_15min.xml", meter_id="plant7:main")
    assert s.meter_id == "plant7:main"
    [c] = load_greenbutton(DATA / "export_15min.csv")
    assert c.meter_id == "1234567890"  # from the "Account Number" preamble line
    with pytest.raises(InputError, match="meter id"):
        parse_espi_xml(DATA / "espi_15min.xml", meter_id="no spaces please")


def test_linked_feed_keeps_each_meter_reading_apart():
    """Two MeterReadings (delivered and received energy) of one UsagePoint, linked by hrefs."""
    xml = (DATA / "espi_15min.xml").read_text()
    entries = re.findall(r"  <entry>.*?</entry>\n", xml, re.DOTALL)
    linked = [e for e in entries if "MeterReading/01" in e or "ReadingType/07" in e]
    assert len(linked) == 4  # MeterReading, ReadingType, 2 IntervalBlocks
    second = "".join(e.replace("MeterReading/01", "MeterReading/02")
                     .replace("ReadingType/07", "ReadingType/08")
                     .replace("<flowDirection>1<", "<flowDirection>19<")
                     .replace("<value>", "<value>1")  # distinct values: a 1 prepended
                     for e in linked)
    series = parse_espi_xml(xml.replace("</feed>", second + "</feed>").encode())
    ids = sorted(s.meter_id for s in series)
    assert ids == ["Plant-7-Main-Meter", "Plant-7-Main-Meter.reverse"]
    by_id = {s.meter_id: s for s in series}
    assert by_id["Plant-7-Main-Meter"].values[0] == 0.25
    assert by_id["Plant-7-Main-Meter.reverse"].values[0] == 1.25  # "1250000" mWh


def test_csv_export_with_local_time_offset():
    [s] = parse_greenbutton_csv(DATA / "export_15min.csv", meter_id="home", category="general",
                                tz_offset="-08:00")
    assert (s.meter_id, s.interval_s, len(s)) == ("home", 900, 96)
    # 2024-01-01 00:00-00:14 local at UTC-8 ends 08:15 UTC
    assert s.timestamps[0] == T0 + 8 * 3600 + 900
    assert s.timestamps[-1] == T0 + 32 * 3600
    assert s.values[:3].tolist() == [0.10, 0.23, 0.36]
    assert s.values.tolist() == [float(f"{0.1 + (j * 13 % 40) / 100:.2f}") for j in range(96)]
    [utc] = parse_greenbutton_csv(DATA / "export_15min.csv", meter_id="home")
    assert (s.timestamps - utc.timestamps == 8 * 3600).all()


def test_csv_zone_name_resolves_the_repeated_dst_hour(tmp_path):
    # 2024-11-03 in Los Angeles: 01:00-01:59 happens twice (PDT, then PST).
    rows = ["TYPE,DATE,START TIME,END TIME,USAGE,UNITS"]
    for start, end, usage in (("00:00", "00:59", "1.0"), ("01:00", "01:59", "2.0"),
                              ("01:00", "01:59", "3.0"), ("02:00", "02:59", "4.0")):
        rows.append(f"Electric usage,11/3/2024,{start},{end},{usage},kWh")
    path = tmp_path / "dst.csv"
    path.write_text("\n".join(rows) + "\n")
    [s] = parse_greenbutton_csv(path, meter_id="la", tz_offset="America/Los_Angeles")
    # 00:00 PDT = 07:00 UTC; four consecutive UTC hours
    start = 1_730_617_200  # 2024-11-03T07:00:00Z
    assert s.timestamps.tolist() == [start + 3600 * (k + 1) for k in range(4)]
    assert s.values.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_tz_offset_parsing():
    assert parse_tz(None).utcoffset(None).total_seconds() == 0
    assert parse_tz("+09:00").utcoffset(None).total_seconds() == 9 * 3600
    assert parse_tz("-0530").utcoffset(None).total_seconds() == -5.5 * 3600
    with pytest.raises(InputError, match="offset"):
        parse_tz("+15:00")
    with pytest.raises(InputError, match="zone"):
        parse_tz("Mars/Olympus")


@pytest.mark.parametrize("name, message", [
    ("espi_truncated.xml", "not well-formed XML"),
    ("espi_billion_laughs.xml", "refused: XML entities/DTD are not allowed"),
    ("espi_missing_readingtype.xml", "missing ReadingType"),
    ("espi_bad_value.xml", (r"IntervalBlock \(entry 5, 'Interval block 1'\), "
                            r"IntervalReading 6, value: non-numeric value '12a4'")),
])
def test_malformed_files_are_clear_errors(name, message):
    with pytest.raises(InputError, match=message):
        parse_espi_xml(DATA / name)


def test_defusedxml_refuses_the_bomb_quickly():
    started = time.perf_counter()
    with pytest.raises(InputError, match="refused"):
        load_greenbutton(DATA / "espi_billion_laughs.xml")
    assert time.perf_counter() - started < 1.0  # not expanded (10**9 "lol"s would take ages)


def _variant(old: str, new: str) -> bytes:
    xml = (DATA / "espi_15min.xml").read_text()
    assert old in xml
    return xml.replace(old, new).encode()


@pytest.mark.parametrize("old, new, message", [
    ("<uom>72</uom>", "<uom>38</uom>", r"uom 38 \(W\); only 72"),
    ("<uom>72</uom>", "<uom>169</uom>", "uom 169"),
    ("<accumulationBehaviour>4<", "<accumulationBehaviour>1<", "cumulative"),
    ("<powerOfTenMultiplier>-3<", "<powerOfTenMultiplier>x<", "powerOfTenMultiplier 'x'"),
    ("<value>250000</value>", "<value>-5</value>", ">= 0"),
    ("<duration>900</duration><start>1704067200</start>",
     "<duration>900</duration><start>1704067201</start>", "grid"),
])
def test_bad_reading_types_and_values(old, new, message):
    with pytest.raises(InputError, match=message):
        parse_espi_xml(_variant(old, new))


def test_empty_and_foreign_documents():
    with pytest.raises(InputError, match="no IntervalBlock"):
        parse_espi_xml(b'<feed xmlns="http://www.w3.org/2005/Atom"><title>x</title></feed>')
    with pytest.raises(InputError, match="root element"):
        parse_espi_xml(b"<html><body/></html>")
    with pytest.raises(InputError, match="not well-formed"):
        parse_espi_xml(b"Name,Jane\n")


def test_csv_errors_name_the_line(tmp_path):
    lines = (DATA / "export_15min.csv").read_text().splitlines()
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines[:8] + [lines[8].replace(",0.36,", ",lots,")] + lines[9:]))
    with pytest.raises(InputError, match="row 9: non-numeric USAGE 'lots'"):
        parse_greenbutton_csv(path, meter_id="m")
    path.write_text("\n".join(lines[:8] + [lines[8].replace(",kWh,", ",therms,")]))
    with pytest.raises(InputError, match="row 9: units 'therms'"):
        parse_greenbutton_csv(path, meter_id="m")
    path.write_text("Name,Jane\nfoo,bar\n")
    with pytest.raises(InputError, match="no header line"):
        parse_greenbutton_csv(path, meter_id="m")


def test_short_gaps_are_interpolated_and_reported():
    xml = (DATA / "espi_15min.xml").read_text()
    cut = xml.index("<IntervalReading>", xml.index(f"<value>{_mwh(9)}</value>") - 400)
    end = xml.index("</IntervalReading>", cut) + len("</IntervalReading>")
    [s] = parse_espi_xml((xml[:cut] + xml[end:]).encode())  # reading 9 removed
    assert len(s) == 192
    assert s.values[9] == pytest.approx((_mwh(8) + _mwh(10)) / 2e6)
    assert any("interpolated 1" in r for r in s.repairs)


@pytest.mark.parametrize("name", ["espi_15min.xml", "espi_60min.xml", "export_15min.csv"])
def test_cli_csv_output_reads_back_equal(tmp_path, capsys, name):
    out = tmp_path / "out.csv"
    assert main(["import-greenbutton", str(DATA / name), "--csv", str(out),
                 "--category", "industrial"]) == 0
    summary = capsys.readouterr().out
    original = load_greenbutton(DATA / name, category="industrial")
    total = sum(float(s.values.sum()) for s in original)
    assert f"{len(original[0])} readings" in summary and f"total {total:.3f} kWh" in summary
    back = read_meter_csv(out)
    assert len(back) == len(original)
    for a, b in zip(sorted(original, key=lambda s: s.meter_id),
                    sorted(back, key=lambda s: s.meter_id), strict=True):
        assert (a.meter_id, a.category, a.interval_s) == (b.meter_id, b.category, b.interval_s)
        assert a.timestamps.tolist() == b.timestamps.tolist()
        assert a.values.tolist() == b.values.tolist()


def test_cli_bad_file_exits_2(capsys):
    assert main(["import-greenbutton", str(DATA / "espi_billion_laughs.xml")]) == 2
    assert "refused: XML entities/DTD are not allowed" in capsys.readouterr().err


@pytest.mark.kafka
def test_cli_produce_arrives_decodable(kafka_broker, unique_name, monkeypatch, capsys):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_broker.bootstrap)
    monkeypatch.setenv("MW_BROKER_KIND", kafka_broker.kind)
    topic = unique_name("gb")
    assert main(["import-greenbutton", str(DATA / "espi_15min.xml"), "--produce",
                 "--topic", topic, "--meter-id", "plant7"]) == 0
    assert "produced 192 readings" in capsys.readouterr().out
    consumer = Consumer({"bootstrap.servers": kafka_broker.bootstrap, "group.id": topic})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    readings = []
    deadline = time.monotonic() + 30
    try:
        while len(readings) < 192 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                readings.append(decode_reading(msg.value(), key=msg.key(), max_future_s=None))
    finally:
        consumer.close()
    assert all(isinstance(r, Reading) for r in readings)
    assert [r.ts for r in readings] == [(T0 + 900 * (k + 1)) * 1000 for k in range(192)]
    assert [r.value for r in readings] == [_mwh(k) / 1_000_000 for k in range(192)]
    assert {(r.meter_id, r.category) for r in readings} == {("plant7", "general")}


@pytest.mark.parametrize(("old", "new", "needle"), [
    (b"<value>392542</value>", b"<value>1e400</value>", "must be a finite number >= 0"),
    (b"<value>392542</value>", b"<value>1e40099999999999999</value>",
     "must be a finite number >= 0"),
    (b"<start>1704078900</start>", b"<start>99999999999999999999</start>",
     "before the year 9999"),
    (b"<duration>900</duration><start>1704078900</start>",
     b"<duration>99999999999</duration><start>1704078900</start>", "must be 1..31622400"),
])
def test_absurd_espi_numbers_are_refused(old, new, needle):
    """Found by tests/test_csv_fuzz.py: 1e400 kWh became inf, and a 20-digit start overflowed."""
    xml = (DATA / "espi_15min.xml").read_bytes()
    assert old in xml
    with pytest.raises(InputError, match=needle):
        parse_espi_xml(xml.replace(old, new, 1))


def test_an_unknown_xml_encoding_is_refused():
    """Found by tests/test_csv_fuzz.py: a declaration cut to encoding="TF-8" raised LookupError."""
    xml = (DATA / "espi_15min.xml").read_bytes()
    assert b'encoding="UTF-8"' in xml
    with pytest.raises(InputError, match="unknown encoding"):
        parse_espi_xml(xml.replace(b'encoding="UTF-8"', b'encoding="TF-8"', 1))


def test_a_long_gap_splits_the_series():
    xml = (DATA / "espi_15min.xml").read_text()
    cut = xml.rindex("<IntervalReading>", 0, xml.index(f"<value>{_mwh(9)}</value>"))
    end = cut
    for _ in range(6):  # readings 9 to 14 removed: longer than --max-gap 4
        end = xml.index("</IntervalReading>", end) + len("</IntervalReading>")
    [s] = parse_espi_xml((xml[:cut] + xml[end:]).encode())
    assert len(s) == 186 and s.segments() == [(0, 9), (9, 186)]
    assert s.values[9] == pytest.approx(_mwh(15) / 1e6)
    assert any("gap of 6 missing readings" in r and "split there" in r for r in s.repairs)
