"""A command whose reader goes away (`meterwatch alerts --json | head -1`) stops quietly.

The alert topic holds more JSON than a pipe buffers, so the command is still writing when `head`
exits: it must end with exit code 141 (128 + SIGPIPE) and nothing on stderr, not a
BrokenPipeError traceback nor "Exception ignored ... BrokenPipeError" at interpreter exit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from confluent_kafka import Producer

from stream_app.cli import EXIT_STDOUT_CLOSED
from stream_app.stream.topics import create_topics

pytestmark = [pytest.mark.kafka]

ALERTS = 2_000  # x ~300 bytes: several times a 64 KiB pipe buffer


@pytest.fixture
def full_alert_topic(kafka_broker, unique_name):
    topic = unique_name("alerts-pipe")
    create_topics(kafka_broker.bootstrap, [topic], 1)
    producer = Producer(kafka_broker.client_config)
    for n in range(ALERTS):
        alert = {"alert_id": f"a{n}", "status": "open", "kind": "anomaly", "severity": "high",
                 "meter_id": f"press-{n % 7}", "category": "industrial",
                 "window_start": "2025-01-04T10:30:00Z", "window_end": "2025-01-04T14:15:00Z",
                 "zscore": 5.0, "threshold": 3.0, "reason": "x" * 120}
        producer.produce(topic, key=alert["meter_id"].encode(), value=json.dumps(alert))
    assert producer.flush(30) == 0
    return topic


def test_alerts_into_head_ends_quietly(kafka_broker, full_alert_topic):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MW_", "KAFKA_"))}
    env.update({"KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap,
                "MW_BROKER_KIND": kafka_broker.kind})
    alerts = subprocess.Popen(
        [sys.executable, "-m", "stream_app.cli", "alerts", "--json", "--from-beginning",
         "--topic", full_alert_topic], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    head = subprocess.Popen(["head", "-1"], stdin=alerts.stdout, stdout=subprocess.PIPE)
    alerts.stdout.close()  # head holds the only read end: when it exits, the pipe breaks
    first, _ = head.communicate(timeout=60)
    _, stderr = alerts.communicate(timeout=60)
    assert json.loads(first)["alert_id"] == "a0"
    assert stderr.decode() == ""
    assert alerts.returncode == EXIT_STDOUT_CLOSED
