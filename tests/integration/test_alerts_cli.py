"""`meterwatch alerts` against the session broker: filters, table and JSON output, --follow."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest
from confluent_kafka import Producer

from stream_app.cli import main
from stream_app.core.alerts import Alert, alert_id
from stream_app.io.alerts_cli import alert_filter, table_line
from stream_app.stream.topics import create_topics

pytestmark = [pytest.mark.kafka]


def make_alert(meter: str, status: str, severity: str, category: str = "industrial",
               zscore: float = 4.0, kind: str = "anomaly") -> Alert:
    return Alert(
        alert_id=alert_id("b1", meter, 1_736_000_000_000, 16, kind=kind), status=status,
        kind=kind, meter_id=meter, category=category, site=None, company=None,
        window_start="2025-01-04T10:30:00Z", window_end="2025-01-04T14:15:00Z", window_size=16,
        model="cnn_gru+lstm", bundle_version="b1", dtw_error={"lstm@16": 1.5}, if_score=0.7,
        zscore=zscore, threshold=3.0, severity=severity, expected=(1.0, 2.0), actual=(1.5, 9.0),
        reason=f"reason of {meter}", first_seen="2025-01-04T14:15:00Z",
        last_seen="2025-01-04T14:15:00Z", readings_flagged=1, produced_at="2025-01-04T14:15:02Z")


ALERTS = [
    make_alert("m1", "open", "low", zscore=3.3),
    make_alert("m2", "open", "high", category="general", zscore=6.5),
    make_alert("m1", "update", "critical", zscore=9.0),
    make_alert("m3", "open", "medium", category="late_night", zscore=4.2),
]


@pytest.fixture
def alert_topic(kafka_broker, unique_name, monkeypatch):
    """A 2-partition topic holding ALERTS (keyed by meter) and one message that is not JSON."""
    topic = unique_name("alerts")
    create_topics(kafka_broker.bootstrap, [topic], 2)
    producer = Producer(kafka_broker.client_config)
    for alert in ALERTS:
        producer.produce(topic, key=alert.meter_id.encode(), value=alert.to_json())
    producer.produce(topic, key=b"m9", value=b"not an alert")
    assert producer.flush(30) == 0
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_broker.bootstrap)
    monkeypatch.setenv("MW_BROKER_KIND", kafka_broker.kind)
    return topic


def run_cli(capsys, *args) -> list[str]:
    assert main(["alerts", *args]) == 0
    return capsys.readouterr().out.splitlines()


def json_ids(lines) -> list[tuple[str, str, str]]:
    return sorted((d["meter_id"], d["status"], d["severity"]) for d in map(json.loads, lines))


def test_the_broker_address_from_a_properties_file(alert_topic, kafka_broker, capsys,
                                                  monkeypatch, tmp_path):
    """KAFKA_CONFIG_FILE alone says where the broker is (no KAFKA_BOOTSTRAP_SERVERS), and
    KAFKA_CONFIG_* properties reach the consumer librdkafka makes: the alerts are read."""
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS")
    path = tmp_path / "client.properties"
    path.write_text(f"# librdkafka client\nbootstrap.servers={kafka_broker.bootstrap}\n"
                    "socket.keepalive.enable=true\n")
    monkeypatch.setenv("KAFKA_CONFIG_FILE", str(path))
    monkeypatch.setenv("KAFKA_CONFIG_CLIENT_ID", "alerts-probe")
    monkeypatch.setenv("KAFKA_CONFIG_TOPIC_METADATA_REFRESH_INTERVAL_MS", "60000")
    lines = run_cli(capsys, "--topic", alert_topic, "--from-beginning", "--json")
    assert json_ids(lines) == sorted((a.meter_id, a.status, a.severity) for a in ALERTS)


def test_an_unknown_property_stops_the_command_with_one_line(monkeypatch, capsys):
    monkeypatch.setenv("KAFKA_CONFIG_SOCKET_KEEPALIVE_ENABLED", "true")
    assert main(["alerts", "--topic", "meter-alerts"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'No such configuration property: "socket.keepalive.enabled"' in err[0]


def test_json_lines_with_each_filter(alert_topic, capsys):
    every = json_ids(run_cli(capsys, "--topic", alert_topic, "--from-beginning", "--json"))
    assert every == sorted((a.meter_id, a.status, a.severity) for a in ALERTS)
    lines = run_cli(capsys, "--topic", alert_topic, "--from-beginning", "--json",
                    "--severity", "high")
    assert json_ids(lines) == [("m1", "update", "critical"), ("m2", "open", "high")]
    lines = run_cli(capsys, "--topic", alert_topic, "--from-beginning", "--json", "--meter", "m1")
    assert json_ids(lines) == [("m1", "open", "low"), ("m1", "update", "critical")]
    lines = run_cli(capsys, "--topic", alert_topic, "--from-beginning", "--json",
                    "--category", "late_night", "--severity", "medium")
    assert json_ids(lines) == [("m3", "open", "medium")]
    assert Alert.from_dict(json.loads(lines[0])) == ALERTS[3]  # the whole alert, unchanged


def test_table_and_default_start_at_the_end(alert_topic, capsys):
    lines = run_cli(capsys, "--topic", alert_topic, "--from-beginning", "--meter", "m2")
    assert lines[0].split()[:3] == ["time", "status", "severity"]
    assert len(lines) == 2
    row = lines[1]
    for text in ("2025-01-04 14:15:02", "open", "high", "m2", "general",
                 "2025-01-04 10:30:00..2025-01-04 14:15:00", "6.50/3.00", "reason of m2"):
        assert text in row, (text, row)
    assert run_cli(capsys, "--topic", alert_topic) == [lines[0]]  # new alerts only: none


def test_missing_topic_is_a_user_error(alert_topic, capsys):
    assert main(["alerts", "--topic", alert_topic + "-absent"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_filter_and_table_line_without_kafka():
    keep = alert_filter(severity="medium", category="industrial")
    assert [keep(a.to_dict()) for a in ALERTS] == [False, False, True, False]
    assert table_line({"status": "open"}).split()[:2] == ["-", "open"]


def _read_line(proc, timeout: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "no output in time"
    return proc.stdout.readline()


def test_follow_prints_new_alerts_and_ctrl_c_exits_0(alert_topic, kafka_broker):
    env = {**os.environ}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream_app.cli", "alerts", "--follow", "--json",
         "--from-beginning", "--topic", alert_topic, "--meter", "m4"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        late = make_alert("m4", "open", "high", zscore=7.0)
        time.sleep(1.0)
        producer = Producer(kafka_broker.client_config)
        producer.produce(alert_topic, key=b"m4", value=late.to_json())
        assert producer.flush(30) == 0
        got = json.loads(_read_line(proc, 30))
        assert (got["alert_id"], got["meter_id"]) == (late.alert_id, "m4")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
