"""Settings: environment parsing, defaults, validation, secrets kept out of every printout."""

from __future__ import annotations

import logging
import re
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from stream_app.core.errors import ConfigError
from stream_app.models import default_bundle
from stream_app.stream.settings import (
    MASK,
    KafkaSettings,
    Secret,
    WorkerSettings,
    check_broker_support,
    runtime_variables,
)

PASSWORD = "s3cr3t-Pa55"  # distinctive, so a leak is easy to find in any text
KEY_PASSWORD = "k3y-Pa55"
SASL_ENV = {
    "KAFKA_BOOTSTRAP_SERVERS": " broker1:9093,broker2:9093 ",
    "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
    "KAFKA_SASL_MECHANISM": "scram-sha-512",
    "KAFKA_SASL_USERNAME": "meter-svc",
    "KAFKA_SASL_PASSWORD": PASSWORD,
}


@pytest.fixture
def cafile():
    path = Path(ssl.get_default_verify_paths().cafile or "")
    if not path.is_file():
        pytest.skip("no system CA bundle to build a TLS context from")
    return path


def test_kafka_defaults_are_local_plaintext():
    settings = KafkaSettings.from_env({})
    assert settings.bootstrap_servers == "127.0.0.1:9092"
    assert settings.security_protocol == "PLAINTEXT"
    assert settings.broker_kind == "unknown"
    assert settings.confluent_config() == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "PLAINTEXT",
        "client.id": "meterwatch",
        "log_level": 4,  # librdkafka's warnings and errors only ...
        "logger": logging.getLogger("meterwatch.kafka"),  # ... through Python logging
    }


def test_sasl_ssl_maps_to_librdkafka_keys(cafile):
    settings = KafkaSettings.from_env({**SASL_ENV, "KAFKA_SSL_CAFILE": str(cafile)})
    assert settings.confluent_config() == {
        "bootstrap.servers": "broker1:9093,broker2:9093",  # stripped
        "security.protocol": "SASL_SSL",  # case-normalised
        "client.id": "meterwatch",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "meter-svc",
        "sasl.password": PASSWORD,
        "ssl.ca.location": str(cafile),
        "log_level": 4,
        "logger": logging.getLogger("meterwatch.kafka"),
    }


def test_sasl_mechanism_defaults_to_plain():
    env = {k: v for k, v in SASL_ENV.items() if k != "KAFKA_SASL_MECHANISM"}
    settings = KafkaSettings.from_env({**env, "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"})
    assert settings.confluent_config()["sasl.mechanisms"] == "PLAIN"


def test_faust_kwargs_build_credentials(cafile):
    import faust

    kwargs = KafkaSettings.from_env({**SASL_ENV, "KAFKA_SSL_CAFILE": str(cafile)}).faust_kwargs()
    assert kwargs["broker"] == "kafka://broker1:9093;kafka://broker2:9093"
    creds = kwargs["broker_credentials"]
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol.value == "SASL_SSL"  # an ssl_context switches SASL onto TLS
    assert creds.mechanism.value == "SCRAM-SHA-512"
    assert (creds.username, creds.password) == ("meter-svc", PASSWORD)
    assert isinstance(creds.ssl_context, ssl.SSLContext)

    tls_only = KafkaSettings(security_protocol="SSL", ssl_cafile=cafile).faust_kwargs()
    assert isinstance(tls_only["broker_credentials"], faust.SSLCredentials)
    assert "broker_credentials" not in KafkaSettings().faust_kwargs()


def test_tansu_workarounds_only_for_tansu():
    tansu = KafkaSettings.from_env({"MW_BROKER_KIND": " Tansu "}).faust_kwargs()
    assert tansu["producer_max_batch_size"] == 1
    assert tansu["recovery_consistency_check"] is False
    for kind in ("kafka", "unknown"):
        kwargs = KafkaSettings(broker_kind=kind).faust_kwargs()
        assert "producer_max_batch_size" not in kwargs
        assert "recovery_consistency_check" not in kwargs


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
        ({**SASL_ENV, "KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs KAFKA_SASL_USERNAME"),
        ({**SASL_ENV, "KAFKA_SASL_PASSWORD": "   "}, "needs KAFKA_SASL_USERNAME"),
        ({"KAFKA_SASL_USERNAME": "u"}, "use SASL_PLAINTEXT or SASL_SSL"),
        ({"KAFKA_SSL_CAFILE": "/ca.pem"}, "use SSL or SASL_SSL"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/nowhere.pem"}, "not a readable"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "kafka://h:9092"}, "not host:port"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "h:9092,h2"}, "not host:port"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "h:70000"}, "not host:port"),
        ({"MW_BROKER_KIND": "redpanda"}, "MW_BROKER_KIND"),
    ],
)
def test_invalid_kafka_settings_raise(env, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        KafkaSettings.from_env(env)


def test_secrets_never_printed(caplog, cafile):
    settings = KafkaSettings.from_env(
        {**SASL_ENV, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SSL_CAFILE": str(cafile)}
    )
    settings = KafkaSettings(**{**settings.__dict__, "ssl_key_password": KEY_PASSWORD})
    assert isinstance(settings.ssl_key_password, Secret)  # plain str wrapped on construction
    log = logging.getLogger("meterwatch.test")
    with caplog.at_level(logging.INFO):
        log.info("settings %s", settings)
        log.info("settings %r", settings)
        log.info("redacted %s", settings.redacted())
        log.info(
            "password %s / %r / %s",
            settings.sasl_password,
            settings.sasl_password,
            f"{settings.sasl_password}",
        )
    texts = [caplog.text, repr(settings), str(settings), str(settings.redacted())]
    for text in texts:
        assert PASSWORD not in text and KEY_PASSWORD not in text
    assert MASK in caplog.text
    assert settings.redacted()["sasl_password"] == MASK
    assert settings.redacted()["sasl_username"] == "meter-svc"  # not a secret
    assert settings.sasl_password.reveal() == PASSWORD


def test_worker_defaults():
    worker = WorkerSettings.from_env({})
    assert worker.input_regex.fullmatch("meter.plant-7")
    assert not worker.input_regex.fullmatch("meterwatch-readings")  # our own topic never matches
    assert worker.input_topic is None
    assert (worker.readings_topic, worker.alerts_topic) == ("meterwatch-readings", "meter-alerts")
    assert (worker.dlq_topic, worker.feedback_topic) == (
        "meter-readings-dlq",
        "meter-alert-feedback",
    )
    assert (worker.app_id, worker.partitions, worker.batch_size) == ("meterwatch", 4, 256)
    assert worker.batch_max_wait_s == 0.2
    assert (worker.store, worker.web_port, worker.processing_guarantee) == (
        "memory://",
        6066,
        "at_least_once",
    )
    assert worker.model_dir == default_bundle()  # the shipped bundle, found in the package
    assert worker.onnx_providers is None  # auto
    assert worker.max_message_bytes == 1024 * 1024
    assert worker.broker_wait_s == 30.0
    assert (worker.web_host, worker.web_token) == ("127.0.0.1", None)


def test_worker_parses_environment():
    worker = WorkerSettings.from_env(
        {
            "MW_PARTITIONS": " 8 ",
            "MW_BATCH_SIZE": "32",
            "MW_BATCH_MAX_WAIT_S": "0.05",
            "MW_STORE": "rocksdb://",
            "MW_PROCESSING_GUARANTEE": "AT_LEAST_ONCE",
            "MW_ONNX_PROVIDERS": "CUDAExecutionProvider, CPUExecutionProvider",
            "MW_MODEL_DIR": "models/x",
            "MW_INPUT_TOPIC": "meter.plant-1",
            "MW_WEB_PORT": "",  # blank = default
        }
    )
    assert (worker.partitions, worker.batch_size, worker.batch_max_wait_s) == (8, 32, 0.05)
    assert worker.store == "rocksdb://"
    assert worker.processing_guarantee == "at_least_once"
    assert worker.onnx_providers == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert worker.model_dir == Path("models/x")
    assert worker.input_topic == "meter.plant-1"
    assert worker.web_port == 6066
    assert WorkerSettings.from_env({"MW_ONNX_PROVIDERS": "auto"}).onnx_providers is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MW_PARTITIONS": "four"}, "MW_PARTITIONS='four' is not valid"),
        ({"MW_PARTITIONS": "0"}, "MW_PARTITIONS=0 must be >= 1"),
        ({"MW_BATCH_SIZE": "-1"}, "MW_BATCH_SIZE"),
        ({"MW_BATCH_MAX_WAIT_S": "0"}, "MW_BATCH_MAX_WAIT_S"),
        ({"MW_STORE": "redis://"}, "MW_STORE"),
        ({"MW_BROKER_WAIT_S": "0"}, "MW_BROKER_WAIT_S"),
        ({"MW_WEB_PORT": "70000"}, "MW_WEB_PORT"),
        ({"MW_PROCESSING_GUARANTEE": "at_most_once"}, "MW_PROCESSING_GUARANTEE"),
        ({"MW_INPUT_PATTERN": "meter\\.(+"}, "MW_INPUT_PATTERN"),
        ({"MW_ALERTS_TOPIC": "bad topic"}, "MW_ALERTS_TOPIC"),
        ({"MW_MAX_MESSAGE_BYTES": "10"}, "MW_MAX_MESSAGE_BYTES"),
    ],
)
def test_invalid_worker_settings_raise(env, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        WorkerSettings.from_env(env)


def test_unknown_mw_variable_is_an_error_listing_valid_ones():
    with pytest.raises(ConfigError) as info:
        WorkerSettings.from_env({"MW_BACH_SIZE": "10", "MW_PARTITIONS": "2"})
    message = str(info.value)
    assert "MW_BACH_SIZE (did you mean MW_BATCH_SIZE?)" in message
    assert "MW_PARTITIONS" in message and "MW_BROKER_KIND" in message  # the valid list
    with pytest.raises(ConfigError, match="MW_BROKR_KIND"):
        KafkaSettings.from_env({"MW_BROKR_KIND": "tansu"})
    # Variables of other programs are none of our business.
    assert KafkaSettings.from_env({"KAFKA_HEAP_OPTS": "-Xmx1g", "PATH": "/bin"}).client_id


def test_the_runtime_knows_only_its_own_variables():
    """Test harness variables are accepted only where the suite registered them (conftest);
    the tolerances that were parsed but never used are gone: setting one is a typo now."""
    assert not {"MW_SHARED_DATA", "MW_TEST_BROKER", "MW_SOAK_S", "MW_SOAK_REPORT"} & (
        runtime_variables())
    for gone in ("MW_OUT_OF_ORDER_TOLERANCE_S", "MW_GAP_TOLERANCE_S"):
        with pytest.raises(ConfigError, match=gone):
            WorkerSettings.from_env({gone: "3600"})
    probe = ("from stream_app.core.errors import ConfigError\n"
             "from stream_app.stream.settings import WorkerSettings\n"
             "try:\n    WorkerSettings.from_env({'MW_TEST_BROKER': 'kafka'})\n"
             "except ConfigError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=True)
    assert "unknown environment variable(s) MW_TEST_BROKER" in done.stdout


def test_data_dir_is_outside_the_working_directory_unless_set(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    worker = WorkerSettings.from_env({})
    assert worker.data_dir == tmp_path / "state" / "meterwatch"
    assert worker.app_data_dir == tmp_path / "state" / "meterwatch" / "meterwatch"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert WorkerSettings().data_dir == Path.home() / ".local" / "state" / "meterwatch"
    worker = WorkerSettings.from_env({"MW_DATA_DIR": str(tmp_path / "d"), "MW_APP_ID": "mw-2"})
    assert worker.app_data_dir == tmp_path / "d" / "mw-2"


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        WorkerSettings().partitions = 2  # type: ignore[misc]


def test_exactly_once_refuses_a_local_rocksdb():
    """A RocksDB store keeps the table writes of a transaction a crash aborts: a restart on it
    lost 3 of 52 alert messages in 6 kills (tests/integration/test_faults.py)."""
    assert WorkerSettings.from_env({"MW_PROCESSING_GUARANTEE": "exactly_once"}).store == "memory://"
    with pytest.raises(ConfigError, match="exactly_once needs MW_STORE=memory://"):
        WorkerSettings.from_env({"MW_PROCESSING_GUARANTEE": "exactly_once",
                                 "MW_STORE": "rocksdb://"})


def test_exactly_once_refused_on_tansu():
    eos = WorkerSettings(processing_guarantee="exactly_once")
    with pytest.raises(ConfigError, match="Tansu"):
        check_broker_support(KafkaSettings(broker_kind="tansu"), eos)
    check_broker_support(KafkaSettings(broker_kind="kafka"), eos)
    check_broker_support(KafkaSettings(broker_kind="tansu"), WorkerSettings())
