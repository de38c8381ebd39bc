"""TLS on a real broker: Apache Kafka with an SSL listener signed by a throw-away CA.

The worker, given only KAFKA_SECURITY_PROTOCOL=SSL and KAFKA_SSL_CAFILE, reads readings and
writes alerts over TLS (Faust/aiokafka, its admin client and producers); clients that do not
trust the CA, or speak PLAINTEXT to the SSL port, get no metadata. Figures print with -s.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from test_worker_kafka import expected_alerts, metric, wait_for

from stream_app.core.records import encode_reading
from stream_app.devtools.brokers import BrokerUnavailable, free_port, stop_process
from stream_app.devtools.demo import start_worker, wait_for_worker
from stream_app.stream.settings import KafkaSettings
from stream_app.stream.topics import create_topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture(scope="module")
def tls_broker():
    """Our own Apache Kafka with `tls=True` (the session broker is PLAINTEXT), stopped after."""
    for tool in ("java", "mvn", "openssl"):
        if shutil.which(tool) is None:
            pytest.skip(f"Apache Kafka with TLS needs `{tool}` on PATH")
    from stream_app.devtools.kafka_broker import ApacheKafkaBroker, kafka_classpath

    try:
        kafka_classpath()
    except BrokerUnavailable as exc:  # offline, first use: no jars to run
        pytest.skip(str(exc).splitlines()[0])
    started = time.monotonic()
    broker = ApacheKafkaBroker(heap="384m", tls=True)
    print(f"\nTLS broker: certificates + start {time.monotonic() - started:.1f} s "
          f"(JVM to first metadata {broker.start_seconds:.1f} s), SSL at {broker.tls_bootstrap}")
    try:
        yield broker
    finally:
        started = time.monotonic()
        broker.stop()
        print(f"TLS broker: stopped in {time.monotonic() - started:.1f} s")


def consume(config: dict, topic: str, until, timeout: float = 30.0) -> list[dict]:
    consumer = Consumer({**config, "group.id": topic, "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        got, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline and not until(got):
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                got.append(json.loads(msg.value()))
        return got
    finally:
        consumer.close()


def test_the_worker_reads_and_alerts_over_tls(tls_broker, tiny_bundle, sim_series, tmp_path,
                                              unique_name):
    tls = tls_broker.tls_client_config
    name = unique_name("tls").replace("_", "-")
    series = sim_series[0][:4]
    topics = {s.meter_id: f"meter.{name}.{s.meter_id}" for s in series}
    create_topics(tls, list(topics.values()), 4)
    env = {"MW_INPUT_PATTERN": rf"meter\.{name}\..+", "MW_ALERTS_TOPIC": f"{name}-alerts",
           "MW_DLQ_TOPIC": f"{name}-dlq", "MW_READINGS_TOPIC": f"{name}-readings",
           "MW_FEEDBACK_TOPIC": f"{name}-feedback", "MW_PARTITIONS": "4",
           "KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": str(tls_broker.ca_file)}
    port, log = free_port(), tmp_path / "worker.log"
    started = time.monotonic()
    proc = start_worker(tls_broker.tls_bootstrap, "kafka", tiny_bundle.path, name, port, log, env)
    try:
        wait_for_worker(proc, port, log, timeout=60)
        ready = time.monotonic() - started
        started = time.monotonic()
        producer = Producer({**tls, "linger.ms": 5})
        produced = 0
        for i in range(len(series[0].values)):
            for s in series:
                key, value = encode_reading(s.meter_id, int(s.timestamps[i]) * 1000,
                                            float(s.values[i]), s.category)
                producer.produce(topics[s.meter_id], key=key, value=value)
                producer.poll(0)
                produced += 1
        assert producer.flush(30) == 0
        wait_for(lambda: metric(port, "meterwatch_readings_outcome_total") >= produced, 60,
                 "every reading to be processed")
        scored = time.monotonic() - started
        expected = expected_alerts(tiny_bundle, series)
        assert expected, "the injected anomalies should raise at least one alert"
        alerts = consume(tls, env["MW_ALERTS_TOPIC"],
                         lambda got: expected <= {(a["alert_id"], a["status"]) for a in got})
        assert {(a["alert_id"], a["status"]) for a in alerts if a["status"] != "update"} == expected
        assert metric(port, "meterwatch_readings_in_total") == produced
        assert metric(port, "meterwatch_readings_outcome_total") == produced
        assert metric(port, "meterwatch_readings_invalid_total") == 0
        print(f"worker over TLS: assigned {ready:.1f} s after start; {produced} readings "
              f"produced and all given an outcome in {scored:.1f} s; {len(alerts)} alerts read "
              f"back over TLS ({len(expected)} open/resolved, as `score` gives)")
    finally:
        stop_process(proc, timeout=15)


def _metadata_errors(config: dict) -> list[str]:
    """Errors a client reports while failing to get metadata (it must fail)."""
    errors = []
    admin = AdminClient({**config, "error_cb": lambda err: errors.append(str(err))})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=3)
    admin.poll(0.5)  # error_cb is served by poll
    return errors


def test_clients_that_do_not_trust_the_ca_get_nothing(tls_broker):
    started = time.monotonic()
    untrusted = _metadata_errors({"bootstrap.servers": tls_broker.tls_bootstrap,
                                  "security.protocol": "SSL"})
    assert any("certificate verify failed" in e for e in untrusted), untrusted
    _metadata_errors({"bootstrap.servers": tls_broker.tls_bootstrap})  # PLAINTEXT to SSL port
    refused = time.monotonic() - started
    # The Python side (Faust/aiokafka): the settings' context trusts the CA and checks the
    # name dialled; the system's trust store alone does not know the CA.
    trusting = KafkaSettings.from_env({
        "KAFKA_BOOTSTRAP_SERVERS": tls_broker.tls_bootstrap, "KAFKA_SECURITY_PROTOCOL": "SSL",
        "KAFKA_SSL_CAFILE": str(tls_broker.ca_file)}).ssl_context()
    address = ("127.0.0.1", tls_broker.tls_port)
    with (socket.create_connection(address, 5) as sock,
          trusting.wrap_socket(sock, server_hostname="127.0.0.1") as conn):
        assert conn.version() in ("TLSv1.2", "TLSv1.3")
    with (socket.create_connection(address, 5) as sock,
          pytest.raises(ssl.SSLCertVerificationError)):
        ssl.create_default_context().wrap_socket(sock, server_hostname="127.0.0.1")
    print(f"refused: untrusted SSL and PLAINTEXT clients, {refused:.1f} s for both (3 s "
          f"metadata timeout each); Python ssl without the CA fails the handshake")
