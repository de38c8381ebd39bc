"""docker-compose.yml and the Dockerfile stay consistent with the code (no Docker engine needed)."""

import shlex
from pathlib import Path

import pytest

from stream_app.cli import parse_args
from stream_app.stream.settings import KafkaSettings, WorkerSettings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose():
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_runs_kraft_kafka_workers_and_a_producer(compose):
    services = compose["services"]
    assert {"kafka", "worker-1", "worker-2", "worker-3", "producer"} <= set(services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "zookeeper" not in str(compose).lower()
    assert "container_name" not in services["worker-1"]  # tests/stream/test_compose.py: the rest


def test_worker_environment_is_valid_settings(compose):
    env = {k: str(v) for k, v in compose["services"]["worker-1"]["environment"].items()}
    KafkaSettings.from_env(env)
    WorkerSettings.from_env(env)


def test_producer_commands_exist(compose):
    script = compose["services"]["producer"]["command"][0]
    for command in script.split("&&"):
        argv = shlex.split(command)
        assert argv[0] == "meterwatch"
        parse_args(argv[1:])  # click.UsageError on an unknown command or option


def test_image_is_runtime_only():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "install.sh cpu,rocksdb" in dockerfile  # no torch (deploy/image/install.sh)
    assert 'ENTRYPOINT ["meterwatch"]' in dockerfile
