"""Brokers: a real round trip through the session broker, clean start/stop by PID, restart
durability of Apache Kafka, the `meterwatch broker` foreground runner, and client configs that
librdkafka accepts."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from stream_app.devtools.brokers import BrokerUnavailable, TansuBroker, free_port
from stream_app.stream.settings import KafkaSettings
from stream_app.stream.topics import create_topics

pytestmark = pytest.mark.kafka


def _pid_gone(pid: int) -> bool:
    """True when no process (not even a zombie) has this PID."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as stat:  # a zombie still answers kill(0)
        return stat.read().split()[2] == "Z"


def _consume_all(config: dict, topic: str, partitions: int, expected: int) -> list:
    consumer = Consumer({**config, "group.id": f"{topic}-reader", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])  # offset 0
    messages, deadline = [], time.monotonic() + 20
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                messages.append(msg)
    finally:
        consumer.close()
    return messages


def _produce(config: dict, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({**config, "linger.ms": 5})
    for key, value in records:
        producer.produce(topic, value, key=key)
    assert producer.flush(20) == 0, "records still queued after 20 s"


def test_round_trip_keeps_values_keys_and_key_order(kafka_broker, unique_name):
    topic = unique_name("readings")
    create_topics(kafka_broker.client_config, [topic], partitions=3)
    records = [(f"meter-{i % 5}".encode(), f"{i}".encode()) for i in range(50)]
    _produce(kafka_broker.client_config, topic, records)

    messages = _consume_all(kafka_broker.client_config, topic, 3, expected=50)
    assert sorted((m.key(), m.value()) for m in messages) == sorted(records)
    partition_of = {}
    for msg in messages:  # one key, one partition, in produce order
        assert partition_of.setdefault(msg.key(), msg.partition()) == msg.partition()
    for key in {k for k, _ in records}:
        got = [int(m.value()) for m in messages if m.key() == key]
        assert got == sorted(got)


def test_create_topics_sets_partitions_and_tolerates_existing(kafka_broker, unique_name):
    topic = unique_name("source")
    create_topics(kafka_broker.client_config, [topic], partitions=3)
    create_topics(kafka_broker.client_config, [topic], partitions=3)  # already there: no error
    metadata = AdminClient(kafka_broker.client_config).list_topics(topic, timeout=10)
    assert len(metadata.topics[topic].partitions) == 3


def test_tansu_stops_by_pid_leaving_no_process():
    with TansuBroker() as broker:
        pid, workdir = broker.pid, broker.workdir
        assert broker.is_alive() and not _pid_gone(pid)
        assert AdminClient(broker.client_config).list_topics(timeout=5).brokers
    assert _pid_gone(pid)
    assert not workdir.exists()


def test_tansu_on_a_taken_port_fails_clearly():
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable, match="exited"):
            TansuBroker(port)
        assert time.monotonic() - started < 10


@pytest.mark.slow
def test_apache_kafka_restart_keeps_a_produced_record(tmp_path, unique_name):
    if shutil.which("java") is None or shutil.which("mvn") is None:
        pytest.skip("Apache Kafka from Maven jars needs java and mvn")
    from stream_app.devtools.kafka_broker import ApacheKafkaBroker

    topic = unique_name("durable")
    with ApacheKafkaBroker(data_dir=tmp_path / "kafka", heap="384m") as broker:
        create_topics(broker.client_config, [topic], partitions=1)
        _produce({**broker.client_config, "acks": "all"}, topic, [(b"m1", b"kept")])
        first_pid = broker.pid
        broker.restart()
        assert _pid_gone(first_pid) and broker.pid != first_pid
        messages = _consume_all(broker.client_config, topic, 1, expected=1)
        assert [(m.key(), m.value()) for m in messages] == [(b"m1", b"kept")]
        pid = broker.pid
    assert _pid_gone(pid)
    assert (tmp_path / "kafka" / "log" / "meta.properties").exists()  # given dir is kept


def test_broker_cli_prints_exports_and_stops_on_sigterm():
    port = free_port()
    code = ("from stream_app.devtools.brokers import main_broker_cli; "
            f"raise SystemExit(main_broker_cli('tansu', {port}))")
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    try:
        lines = [proc.stdout.readline().strip() for _ in range(3)]
        assert lines[1:] == [
            f"export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{port}",
            "export MW_BROKER_KIND=tansu",
        ]
        broker_pid = int(lines[0].rsplit("pid ", 1)[1].rstrip(")"))
        assert (
            AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=5).brokers
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert "broker stopped" in proc.stdout.read()
        assert _pid_gone(broker_pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A self-signed certificate and a password-protected key, made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(folder / "key.pem"),
            "-out",
            str(folder / "cert.pem"),
            "-passout",
            "pass:key-pass",
        ],
        check=True,
        capture_output=True,
    )
    return folder / "cert.pem", folder / "key.pem"


def test_sasl_ssl_config_is_accepted_by_librdkafka_and_faust(tls_files):
    cert, key = tls_files
    settings = KafkaSettings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
            "KAFKA_SASL_USERNAME": "meter-svc",
            "KAFKA_SASL_PASSWORD": "pw",
            "KAFKA_SSL_CAFILE": str(cert),
            "KAFKA_SSL_CERTFILE": str(cert),
            "KAFKA_SSL_KEYFILE": str(key),
            "KAFKA_SSL_KEY_PASSWORD": "key-pass",
        }
    )
    config = settings.confluent_config()
    assert config["sasl.mechanisms"] == "SCRAM-SHA-256"
    assert (config["sasl.username"], config["sasl.password"]) == ("meter-svc", "pw")
    assert config["ssl.ca.location"] == str(cert)
    assert config["ssl.certificate.location"] == str(cert)
    assert (config["ssl.key.location"], config["ssl.key.password"]) == (str(key), "key-pass")
    # librdkafka validates key names and loads the TLS files here: a wrong key or a key it
    # cannot decrypt raises KafkaException.
    Producer(config).flush(0)
    # Faust side: the TLS context loads the encrypted key with the same password.
    assert settings.faust_kwargs()["broker_credentials"].ssl_context is not None
