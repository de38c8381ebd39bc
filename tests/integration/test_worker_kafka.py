"""The stream worker against a real broker: alerts, same flags as `score`, dead letters, groups."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from reference.offline_alerts import expected_alerts

from stream_app.core.records import encode_reading
from stream_app.devtools.brokers import free_port, stop_process
from stream_app.devtools.demo import metric_total, start_worker, wait_for_worker, worker_metrics
from stream_app.stream.topics import create_topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


class Run:
    """One test's topics, and the workers it started (stopped by PID at the end)."""

    def __init__(self, broker, bundle_path: Path, tmp_path: Path, name: str):
        self.broker, self.bundle_path, self.tmp = broker, bundle_path, tmp_path
        self.prefix = f"meter.{name}"
        self.env = {"MW_INPUT_PATTERN": rf"meter\.{name}\..+", "MW_ALERTS_TOPIC": f"{name}-alerts",
                    "MW_DLQ_TOPIC": f"{name}-dlq", "MW_READINGS_TOPIC": f"{name}-readings",
                    "MW_FEEDBACK_TOPIC": f"{name}-feedback", "MW_PARTITIONS": "4",
                    "MW_DATA_DIR": str(tmp_path / "faust-data")}
        self.app_id = name
        self.workers: list[tuple] = []

    def use_single_topic(self, topic: str) -> None:
        """Read one keyed input topic instead of the per-meter pattern."""
        self.env.pop("MW_INPUT_PATTERN")
        self.env["MW_INPUT_TOPIC"] = topic

    def topic(self, meter_id: str) -> str:
        return f"{self.prefix}.{meter_id}"

    def start_worker(self):
        port = free_port()
        log = self.tmp / f"worker-{len(self.workers)}.log"
        proc = start_worker(self.broker.bootstrap, self.broker.kind, self.bundle_path,
                            self.app_id, port, log, self.env)
        self.workers.append((proc, port, log))
        wait_for_worker(proc, port, log, timeout=120)
        return proc, port

    def start_faust_worker(self):
        """The same worker through Faust's own command line (`faust -A ... worker`)."""
        port = free_port()
        log = self.tmp / f"faust-worker-{len(self.workers)}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MW_", "KAFKA_"))}
        env.update({"KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap,
                    "MW_BROKER_KIND": self.broker.kind, "MW_MODEL_DIR": str(self.bundle_path),
                    "MW_APP_ID": self.app_id, "MW_WEB_PORT": str(port),
                    "MW_SESSION_TIMEOUT_S": "3", "MW_BATCH_MAX_WAIT_S": "0.05", **self.env})
        faust = Path(sys.executable).with_name("faust")
        with open(log, "ab") as out:
            proc = subprocess.Popen([str(faust), "-A", "stream_app.stream.app", "worker", "-l",
                                     "info"], env=env, cwd=self.tmp, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.workers.append((proc, port, log))
        wait_for_worker(proc, port, log, timeout=120)
        return proc, port

    def produce(self, messages, rate: float | None = None):
        """Send (topic, key, value) messages; at `rate` messages/s when given."""
        producer = Producer({"bootstrap.servers": self.broker.bootstrap, "linger.ms": 5})
        started = time.monotonic()
        for n, (topic, key, value) in enumerate(messages):
            producer.produce(topic, key=key, value=value)
            producer.poll(0)
            if rate and (ahead := n / rate - (time.monotonic() - started)) > 0:
                time.sleep(ahead)
        assert producer.flush(30) == 0

    def consume(self, topic: str, until, timeout: float = 90.0) -> list[dict]:
        consumer = Consumer({"bootstrap.servers": self.broker.bootstrap, "group.id": topic,
                             "enable.auto.commit": False})
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        got, deadline = [], time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and not until(got):
                msg = consumer.poll(0.2)
                if msg is not None and not msg.error():
                    got.append(json.loads(msg.value()))
        finally:
            consumer.close()
        return got

    def stop(self):
        for proc, _, _ in self.workers:
            stop_process(proc, timeout=15)


def metric(port: int, name: str) -> float:
    return metric_total(worker_metrics(port), name)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def run(kafka_broker, tiny_bundle, tmp_path, unique_name):
    r = Run(kafka_broker, tiny_bundle.path, tmp_path, unique_name("mw").replace("_", "-"))
    yield r
    r.stop()


def test_stream_gives_the_same_alerts_as_score(run, sim_series, tiny_bundle):
    series = sim_series[0][:4]
    create_topics(run.broker.bootstrap, [run.topic(s.meter_id) for s in series], 4)
    _, port = run.start_worker()
    messages = []
    for ts_index in range(len(series[0].values)):
        for s in series:
            key, value = encode_reading(s.meter_id, int(s.timestamps[ts_index]) * 1000,
                                        float(s.values[ts_index]), s.category)
            messages.append((run.topic(s.meter_id), key, value))
    run.produce(messages)
    wait_for(lambda: metric(port, "meterwatch_readings_outcome_total") >= len(messages), 180,
             "every reading to be processed")
    expected = expected_alerts(tiny_bundle, series)
    assert expected, "the injected anomalies should raise at least one alert"
    alerts = run.consume(run.env["MW_ALERTS_TOPIC"],
                         lambda got: expected <= {(a["alert_id"], a["status"]) for a in got})
    got = {(a["alert_id"], a["status"]) for a in alerts if a["status"] != "update"}
    print(f"\nstream alerts: {len(alerts)} messages; expected open/resolved: {len(expected)}")
    assert got == expected
    opened = [a for a in alerts if a["status"] == "open"]
    for a in opened:
        assert a["meter_id"] in {s.meter_id for s in series}
        assert a["zscore"] > a["threshold"] and a["window_size"] in (24, 16)
        assert len(a["expected"]) == len(a["actual"]) == a["window_size"]
        assert a["bundle_version"] == tiny_bundle.version and a["severity"]
    assert metric(port, "meterwatch_readings_invalid_total") == 0


def test_faust_command_line_runs_the_worker(run, sim_series):
    """`faust -A stream_app.stream.app worker`, settings from the environment: the same worker
    (its app built on first use, after the start-up checks), every reading given a fate."""
    good = sim_series[0][0]
    topic = run.topic(good.meter_id)
    create_topics(run.broker.bootstrap, [topic], 4)
    _, port = run.start_faust_worker()
    messages = [(topic, *encode_reading(good.meter_id, int(good.timestamps[i]) * 1000,
                                        float(good.values[i]), good.category))
                for i in range(100)]
    run.produce(messages + [(topic, good.meter_id.encode(), b"{not json")])
    wait_for(lambda: metric(port, "meterwatch_readings_outcome_total") >= len(messages), 90,
             "the readings through the faust-started worker")
    assert metric(port, "meterwatch_readings_in_total") == len(messages) + 1
    assert metric(port, "meterwatch_readings_invalid_total") == 1
    # what the start waited for, on stdout past Faust's redirection of it into its log
    said = run.workers[-1][2].read_text()
    assert f"waiting for the broker at {run.broker.bootstrap} (up to " in said, said
    assert f"waiting for partition assignment of group {run.app_id} on topics " in said, said
    ready = re.findall(r"^ready: consuming (\d+) partitions$", said, re.MULTILINE)
    assert ready and int(ready[-1]) > 0, said
    # Faust's data directory is MW_DATA_DIR/<app id>, not <app id>-data in the working directory
    assert (Path(run.env["MW_DATA_DIR"]) / run.app_id).is_dir()
    assert not (run.tmp / f"{run.app_id}-data").exists()


def test_bad_events_go_to_the_dead_letter_topic_and_the_worker_goes_on(run, sim_series):
    good = sim_series[0][0]
    topic = run.topic(good.meter_id)
    create_topics(run.broker.bootstrap, [topic], 4)
    _, port = run.start_worker()
    key = good.meter_id.encode()
    bad = [
        (b"{not json", "malformed_json"),
        (json.dumps({"meter_id": good.meter_id, "timestamp": 1736000000000,
                    "category": "industrial"}).encode(), "missing_field"),
        (b'{"meter_id":"%s","timestamp":1736000000000,"value":NaN,"category":"industrial"}'
         % key, "not_finite"),
        (json.dumps({"meter_id": good.meter_id, "timestamp": 1736000000000, "value": 1.0,
                     "category": "brewery"}).encode(), "unknown_category"),
        (b"\xff\xfe", "not_utf8"),
    ]
    valid = []
    for i in range(50):
        _, value = encode_reading(good.meter_id, int(good.timestamps[i]) * 1000,
                                  float(good.values[i]), good.category)
        valid.append((topic, key, value))
    run.produce([(topic, key, raw) for raw, _ in bad] + valid)
    letters = run.consume(run.env["MW_DLQ_TOPIC"], lambda got: len(got) >= len(bad))
    reasons = sorted(d["reason"].split(":")[0] for d in letters)
    assert reasons == sorted(r for _, r in bad)
    assert all(d["source"]["topic"] == topic for d in letters), letters[0]
    wait_for(lambda: metric(port, "meterwatch_readings_outcome_total") >= len(valid), 60,
             "the valid readings after the bad ones")
    assert metric(port, "meterwatch_readings_in_total") == len(bad) + len(valid)


def _messages(run, series, rows):
    out = []
    for i in rows:
        for s in series:
            key, value = encode_reading(s.meter_id, int(s.timestamps[i]) * 1000,
                                        float(s.values[i]), s.category)
            out.append((run.topic(s.meter_id), key, value))
    return out


def test_killed_workers_partitions_move_with_their_state(run, sim_series, tiny_bundle):
    """Two workers split the partitions; one is SIGKILLed; the survivor takes its partitions,
    restores the meters' history from the changelog and raises every alert `score` raises
    (at-least-once: a repeat carries the same alert_id)."""
    series = sim_series[0][:4]
    create_topics(run.broker.bootstrap, [run.topic(s.meter_id) for s in series], 4)
    run.env["MW_SESSION_TIMEOUT_S"] = "6"
    proc_a, port_a = run.start_worker()
    _, port_b = run.start_worker()

    def assigned(port):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            return {tp for tp in json.loads(resp.read())["assigned"]
                    if tp.startswith(run.env["MW_READINGS_TOPIC"] + ":")}

    wait_for(lambda: assigned(port_a) and assigned(port_b)
             and len(assigned(port_a) | assigned(port_b)) == 4, 90, "a 2-worker assignment")
    assert not assigned(port_a) & assigned(port_b)
    n = len(series[0].values)
    first = _messages(run, series, range(n // 2))
    run.produce(first)
    def processed():
        return (metric(port_a, "meterwatch_readings_outcome_total")
                + metric(port_b, "meterwatch_readings_outcome_total"))
    wait_for(lambda: processed() >= len(first), 120, "the first half to be processed")
    time.sleep(4)  # let offsets and changelog writes be committed
    os.kill(proc_a.pid, signal.SIGKILL)
    proc_a.wait()
    started = time.monotonic()
    wait_for(lambda: len(assigned(port_b)) == 4, 90, "the survivor to take every partition")
    print(f"\ntakeover after SIGKILL: {time.monotonic() - started:.1f} s")
    second = _messages(run, series, range(n // 2, n))
    run.produce(second)
    expected = expected_alerts(tiny_bundle, series)
    alerts = run.consume(run.env["MW_ALERTS_TOPIC"],
                         lambda got: expected <= {(a["alert_id"], a["status"]) for a in got},
                         timeout=150)
    got = {(a["alert_id"], a["status"]) for a in alerts if a["status"] != "update"}
    for a in alerts:
        if (a["alert_id"], a["status"]) in got - expected:
            print("unexpected:", a["kind"], a["status"], a["meter_id"], a["window_end"], a["reason"])
    assert got == expected


def test_a_session_timeout_the_broker_refuses_stops_the_worker_at_start(kafka_broker):
    """JoinGroup would fail forever; the worker refuses at start with the broker's limits."""
    import dataclasses

    from stream_app.core.errors import ConfigError
    from stream_app.stream.settings import KafkaSettings, WorkerSettings
    from stream_app.stream.worker import check_session_timeout

    kafka = KafkaSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap,
                                    "MW_BROKER_KIND": kafka_broker.kind})
    worker = WorkerSettings.from_env({})
    check_session_timeout(kafka, worker)  # 10 s: inside every broker's limits
    if kafka_broker.kind == "tansu":
        pytest.skip("Tansu does not describe its group limits")
    too_short = dataclasses.replace(worker)
    object.__setattr__(too_short, "session_timeout_s", 0.5)  # below the settings' own floor too
    with pytest.raises(ConfigError, match=r"MW_SESSION_TIMEOUT_S=0.5 is outside .* \(1 to 1800 s\)"):
        check_session_timeout(kafka, too_short)
