"""Shared pytest fixtures.

Kafka: the session fixture `kafka_broker` starts (lazily: only when a test asks for it) the
best broker this machine offers, in this order:
1. KAFKA_BOOTSTRAP_SERVERS when set (kind from MW_BROKER_KIND, default "kafka"; security
   settings from the usual KAFKA_* variables) — never stopped by us;
2. Kafka in Docker through testcontainers, when a Docker engine answers;
3. Apache Kafka from Maven jars, when `java` and `mvn` are on PATH (the CI path);
4. the embedded Tansu broker (memory-only, some Kafka semantics missing — see
   `requires_real_kafka`).
MW_TEST_BROKER=tansu|kafka|docker skips the search and insists on one kind. The terminal
summary says which broker ran.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid

import pytest

from stream_app.devtools.brokers import (
    Broker,
    BrokerUnavailable,
    ExternalBroker,
    TansuBroker,
    TestcontainersBroker,
    wait_until_ready,
)
from stream_app.stream.settings import KafkaSettings, register_variables

_BROKER_LINE = pytest.StashKey[str]()
# The suite's own MW_ variables: settings read in this process accept them; a worker never does.
register_variables(("MW_SHARED_DATA", "MW_TEST_BROKER", "MW_SOAK_S", "MW_SOAK_REPORT"))


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "real_kafka(reason): skip on Tansu, which lacks the Kafka semantics named"
    )


def pytest_report_header(config):
    return (
        "kafka broker: started on first use "
        "(KAFKA_BOOTSTRAP_SERVERS > Docker > java+mvn Apache Kafka > Tansu)"
    )


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    line = config.stash.get(_BROKER_LINE, None)
    if line is not None:
        terminalreporter.write_line(line)


def _external() -> Broker:
    settings = KafkaSettings.from_env()
    kind = settings.broker_kind if settings.broker_kind != "unknown" else "kafka"
    broker = ExternalBroker(settings.bootstrap_servers, kind, settings.confluent_config())
    wait_until_ready(broker.client_config, None, timeout=30.0)
    return broker


def _apache_kafka() -> Broker:
    if shutil.which("java") is None or shutil.which("mvn") is None:
        raise BrokerUnavailable("java or mvn not on PATH")
    from stream_app.devtools.kafka_broker import ApacheKafkaBroker

    return ApacheKafkaBroker()


_STARTERS = {"docker": TestcontainersBroker, "kafka": _apache_kafka, "tansu": TansuBroker}


def _start_session_broker() -> tuple[Broker, list[str]]:
    """The first broker that starts, and why the ones before it did not."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip():
        return _external(), []
    forced = os.environ.get("MW_TEST_BROKER", "").strip().lower()
    if forced:
        if forced not in _STARTERS:
            raise pytest.UsageError(f"MW_TEST_BROKER={forced!r}; one of {sorted(_STARTERS)}")
        return _STARTERS[forced](), []
    skipped = []
    for name in ("docker", "kafka"):
        try:
            return _STARTERS[name](), skipped
        except BrokerUnavailable as exc:
            skipped.append(f"{name}: {str(exc).splitlines()[0]}")
    return TansuBroker(), skipped


@pytest.fixture(scope="session")
def kafka_broker(pytestconfig):
    """A running Kafka-protocol broker: `.bootstrap`, `.kind`, `.client_config`."""
    broker, skipped = _start_session_broker()
    line = f"kafka broker: {broker.kind} at {broker.bootstrap}"
    if getattr(broker, "start_seconds", None) is not None:
        line += f" (ready in {broker.start_seconds:.1f} s)"
    if skipped:
        line += f"; not used: {'; '.join(skipped)}"
    pytestconfig.stash[_BROKER_LINE] = line
    try:
        yield broker
    finally:
        broker.stop()


def requires_real_kafka(broker, reason: str) -> None:
    """Skip the calling test on Tansu, saying which Kafka behaviour it needs."""
    if broker.kind == "tansu":
        pytest.skip(f"needs real Kafka semantics: {reason}; the broker is Tansu")


@pytest.fixture(autouse=True)
def _real_kafka_marker(request):
    """`@pytest.mark.real_kafka("transactions")` = requires_real_kafka on the session broker."""
    marker = request.node.get_closest_marker("real_kafka")
    if marker is not None:
        reason = marker.args[0] if marker.args else "Kafka behaviour Tansu lacks"
        requires_real_kafka(request.getfixturevalue("kafka_broker"), reason)


@pytest.fixture
def unique_name(request):
    """`unique_name("readings")` -> a topic/group name no other test (or run) uses."""
    test = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:40].strip("-")

    def make(prefix: str) -> str:
        return f"{prefix}-{test}-{uuid.uuid4().hex[:8]}"

    return make


# --- model bundles -------------------------------------------------------------------------

def _shared_data_dir():
    from pathlib import Path

    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    return Path(os.environ.get("MW_SHARED_DATA", default))


@pytest.fixture(scope="session")
def shared_data():
    """The real data sets (steel plant, LEAD), or a skip saying where they were looked for."""
    path = _shared_data_dir()
    if not (path / "steel_industry_energy" / "Steel_industry_data.csv").is_file():
        pytest.skip(f"real data not found under {path} (set MW_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def sim_series():
    """Four simulated metal meters (all four categories), 21 days, labelled anomalies."""
    from stream_app.devtools.simulator import simulate_with_events

    return simulate_with_events("metal", 4, 21, seed=3, anomalies_per_meter=1.0)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, sim_series):
    """A small bundle trained in seconds: both models, windows 24 and 16."""
    pytest.importorskip("torch")
    from stream_app.core.profiles import load_profile
    from training.pipeline import TrainOptions, train_bundle
    from training.train import TrainConfig

    out = tmp_path_factory.mktemp("bundle") / "tiny"
    options = TrainOptions(window_sizes=(24, 16), name="tiny", version="1",
                           train=TrainConfig(epochs=2, max_train_windows=1500), n_estimators=50)
    return train_bundle(sim_series[0], out, load_profile("metal"), options)
