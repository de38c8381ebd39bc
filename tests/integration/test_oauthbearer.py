"""SASL/OAUTHBEARER against a real broker, for both client libraries, from one set of variables.

Our own Apache Kafka with a SASL_PLAINTEXT listener and Kafka's unsecured token validator, and a
token endpoint on loopback that answers the client-credentials grant with unsigned tokens. The
confluent-kafka clients fetch their tokens inside librdkafka (sasl.oauthbearer.method=oidc); the
aiokafka producer and consumer, as Faust makes them, use meterwatch's token provider.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import time

import pytest
from factories import token_endpoint as serve_tokens

from stream_app.devtools.kafka_broker import ApacheKafkaBroker
from stream_app.stream.settings import KafkaSettings
from stream_app.stream.topics import create_topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _unsigned_token(subject: str, lifetime_s: int) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    now = int(time.time())
    return f"{part({'alg': 'none'})}.{part({'sub': subject, 'iat': now, 'exp': now + lifetime_s})}."


@pytest.fixture(scope="module")
def broker():
    if not (shutil.which("java") and shutil.which("mvn")):
        pytest.skip("no java or mvn for our own Apache Kafka")
    started = ApacheKafkaBroker(heap="384m", oauthbearer=True)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def token_endpoint():
    with serve_tokens("/token", lambda n: (_unsigned_token("meterwatch-svc", 600), 600)) as (
            url, grants, _):
        yield url, grants


def test_both_client_libraries_authenticate_with_oidc_tokens(broker, token_endpoint, unique_name):
    url, grants = token_endpoint
    settings = KafkaSettings.from_env({
        "KAFKA_BOOTSTRAP_SERVERS": broker.sasl_bootstrap,
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "OAUTHBEARER",
        "KAFKA_CONFIG_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL": url,
        "KAFKA_CONFIG_SASL_OAUTHBEARER_CLIENT_ID": "meterwatch-svc",
        "KAFKA_CONFIG_SASL_OAUTHBEARER_CLIENT_SECRET": "not-checked-here",
    })
    topic = unique_name("oauth")
    create_topics(settings.confluent_config(), [topic], 1)  # librdkafka's own OIDC grant
    librdkafka_grants = len(grants)
    assert librdkafka_grants >= 1

    from confluent_kafka import Producer

    producer = Producer(settings.confluent_config())
    producer.produce(topic, key=b"k", value=b"from librdkafka")
    assert producer.flush(30) == 0

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    auth = credentials_to_aiokafka_auth(settings.faust_kwargs()["broker_credentials"])

    async def through_aiokafka() -> list[bytes]:
        sender = AIOKafkaProducer(bootstrap_servers=broker.sasl_bootstrap, **auth)
        await sender.start()
        try:
            await sender.send_and_wait(topic, b"from aiokafka", key=b"k")
        finally:
            await sender.stop()
        reader = AIOKafkaConsumer(topic, bootstrap_servers=broker.sasl_bootstrap,
                                  auto_offset_reset="earliest", enable_auto_commit=False,
                                  group_id=None, **auth)
        await reader.start()
        try:
            got: list[bytes] = []
            while len(got) < 2:
                batch = await asyncio.wait_for(reader.getmany(timeout_ms=1000), 30)
                got += [msg.value for msgs in batch.values() for msg in msgs]
            return got
        finally:
            await reader.stop()

    assert asyncio.run(through_aiokafka()) == [b"from librdkafka", b"from aiokafka"]
    assert len(grants) > librdkafka_grants  # the worker's provider asked the endpoint too
    assert all("grant_type=client_credentials" in grant["body"] for grant in grants)
