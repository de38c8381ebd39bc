"""The librdkafka pass-through (KAFKA_CONFIG_<NAME>, KAFKA_CONFIG_FILE), its checks at start,
secrets kept out of printouts, librdkafka's log routed to Python logging, and OAUTHBEARER."""

from __future__ import annotations

import asyncio
import base64
import logging
import re

import pytest
from factories import token_endpoint

from stream_app.core.errors import ConfigError
from stream_app.stream.oauth import OidcTokenProvider, TokenError
from stream_app.stream.settings import KAFKA_LOGGER, MASK, KafkaSettings, Secret

SECRET = "0auth-S3cret-xyz"  # distinctive, so a leak is easy to find
OIDC_ENV = {
    "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "KAFKA_SASL_MECHANISM": "oauthbearer",
    "KAFKA_CONFIG_SASL_OAUTHBEARER_CLIENT_ID": "meterwatch-svc",
    "KAFKA_CONFIG_SASL_OAUTHBEARER_CLIENT_SECRET": SECRET,
    "KAFKA_CONFIG_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL": "http://127.0.0.1:9/token",
    "KAFKA_CONFIG_SASL_OAUTHBEARER_SCOPE": "kafka",
}


def test_kafka_config_variables_map_to_librdkafka_names():
    settings = KafkaSettings.from_env({
        "KAFKA_CONFIG_SOCKET_KEEPALIVE_ENABLE": "true",
        "KAFKA_CONFIG_CLIENT_DNS_LOOKUP": " use_all_dns_ips ",
        "KAFKA_CONFIG_LOG_LEVEL": "6",  # librdkafka's one name with `_`
        "KAFKA_CONFIG_MESSAGE_MAX_BYTES": "",  # blank = unset
    })
    assert settings.properties == {"socket.keepalive.enable": "true",
                                   "client.dns.lookup": "use_all_dns_ips", "log_level": "6"}
    config = settings.confluent_config()
    assert config["socket.keepalive.enable"] == "true"
    assert config["log_level"] == "6"  # the pass-through over the default warning level
    assert "message.max.bytes" not in config


def test_properties_file_is_read_verbatim_and_variables_win(tmp_path):
    path = tmp_path / "client.properties"
    path.write_text("# Confluent Cloud style\n! also a comment\n\n"
                    "bootstrap.servers = pkc-1.example.com:9092\n"
                    "security.protocol=SASL_SSL\nsasl.mechanisms=PLAIN\n"
                    "sasl.username=KEY\nsasl.password=pa=ss=word\n"
                    "session.timeout.ms=45000\nacks=all\nlinger.ms=5\n")
    settings = KafkaSettings.from_env({"KAFKA_CONFIG_FILE": str(path),
                                       "KAFKA_CONFIG_LINGER_MS": "50",
                                       "KAFKA_SASL_USERNAME": "OTHER"})
    # connection properties fill the KAFKA_* settings, which the Faust worker reads too
    assert settings.bootstrap_servers == "pkc-1.example.com:9092"
    assert (settings.security_protocol, settings.sasl_mechanism) == ("SASL_SSL", "PLAIN")
    assert settings.sasl_username == "OTHER"  # KAFKA_SASL_USERNAME over the file
    assert isinstance(settings.sasl_password, Secret)
    assert settings.sasl_password.reveal() == "pa=ss=word"  # split at the first `=`
    assert settings.properties == {"session.timeout.ms": "45000", "acks": "all",
                                   "linger.ms": "50"}  # KAFKA_CONFIG_LINGER_MS over the file
    kwargs = settings.faust_kwargs()
    assert kwargs["broker"] == "kafka://pkc-1.example.com:9092"
    assert kwargs["broker_credentials"].username == "OTHER"


def test_a_bad_properties_file_names_the_line_not_its_text(tmp_path):
    path = tmp_path / "client.properties"
    path.write_text("acks=all\nsasl.password " + SECRET + "\n")
    with pytest.raises(ConfigError, match="line 2: not a `name=value` line") as info:
        KafkaSettings.from_env({"KAFKA_CONFIG_FILE": str(path)})
    assert SECRET not in str(info.value)
    with pytest.raises(ConfigError, match="cannot be read"):
        KafkaSettings.from_env({"KAFKA_CONFIG_FILE": str(tmp_path / "none.properties")})


@pytest.mark.parametrize(("env", "message"), [
    ({"KAFKA_CONFIG_SOCKET_KEEPALIVE_ENABLED": "true"},
     'No such configuration property: "socket.keepalive.enabled"'),
    ({"KAFKA_CONFIG_SOCKET_KEEPALIVE_ENABLE": "maybe"},
     'Expected bool value for "socket.keepalive.enable"'),
    ({"KAFKA_CONFIG_": "x"}, "not a librdkafka property name"),
    ({"KAFKA_CONFIG_SOCKET__TIMEOUT_MS": "1"}, "not a librdkafka property name"),
])
def test_what_librdkafka_refuses_is_one_line_at_start(env, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        KafkaSettings.from_env(env)
    assert "\n" not in str(info.value)


def test_a_refused_secret_value_is_masked_in_the_error():
    """librdkafka quotes a refused enum value: were it a secret pasted in the wrong place,
    the error shows the mask."""
    with pytest.raises(ConfigError, match="compression.codec") as info:
        KafkaSettings(properties={"sasl.oauthbearer.client.secret": SECRET,
                                  "compression.codec": SECRET})
    assert SECRET not in str(info.value) and MASK in str(info.value)


def test_a_connection_property_given_in_code_is_refused():
    with pytest.raises(ConfigError, match="security.protocol is KAFKA_SECURITY_PROTOCOL's"):
        KafkaSettings(properties={"security.protocol": "SSL"})


def test_pass_through_secrets_never_printed(caplog):
    settings = KafkaSettings.from_env({**OIDC_ENV, "KAFKA_CONFIG_SSL_KEYSTORE_PASSWORD": SECRET})
    assert isinstance(settings.properties["sasl.oauthbearer.client.secret"], Secret)
    assert isinstance(settings.properties["ssl.keystore.password"], Secret)
    with caplog.at_level(logging.INFO):
        logging.getLogger("meterwatch.test").info("settings %s %r", settings, settings.redacted())
    for text in (caplog.text, repr(settings), str(settings.redacted()),
                 repr(settings.faust_kwargs()["broker_credentials"].oauth_cb)):
        assert SECRET not in text
    assert settings.redacted()["properties"]["sasl.oauthbearer.client.secret"] == MASK
    assert settings.confluent_config()["sasl.oauthbearer.client.secret"] == SECRET  # the client


def test_client_layers_tuning_pass_through_fixed(caplog):
    settings = KafkaSettings.from_env({"KAFKA_CONFIG_LINGER_MS": "5",
                                       "KAFKA_CONFIG_GROUP_ID": "shared"})
    with caplog.at_level(logging.WARNING, logger=KAFKA_LOGGER):
        config = settings.confluent_config(tuning={"linger.ms": 20, "acks": "all"},
                                           fixed={"group.id": "reader-1"})
    assert config["linger.ms"] == "5"  # the operator's value over the client's default
    assert config["acks"] == "all"
    assert config["group.id"] == "reader-1"  # what the client relies on stays
    assert "Kafka property group.id not applied" in caplog.text


def test_librdkafka_logs_through_python_logging_at_warning(caplog):
    """A client made from the config logs into `meterwatch.kafka`, warnings and above only:
    a producer property on a consumer is a CONFWARN, at WARNING; no info lines."""
    from confluent_kafka import Consumer

    config = KafkaSettings.from_env({"KAFKA_CONFIG_LINGER_MS": "5"}).confluent_config(
        fixed={"group.id": "probe"})
    assert config["log_level"] == 4 and config["logger"] is logging.getLogger(KAFKA_LOGGER)
    with caplog.at_level(logging.DEBUG, logger=KAFKA_LOGGER):
        consumer = Consumer(config)
        consumer.poll(0.5)  # serves the log queue
        consumer.close()
    records = [r for r in caplog.records if r.name == KAFKA_LOGGER]
    assert any("queue.buffering.max.ms is a producer property" in r.getMessage()
               for r in records), records  # linger.ms is its alias
    assert all(r.levelno >= logging.WARNING for r in records)


def test_oauthbearer_maps_to_librdkafka_oidc_and_a_faust_token_provider():
    import faust

    settings = KafkaSettings.from_env(OIDC_ENV)
    config = settings.confluent_config()
    assert config["sasl.mechanisms"] == "OAUTHBEARER"
    assert config["sasl.oauthbearer.method"] == "oidc"  # defaulted
    assert config["sasl.oauthbearer.token.endpoint.url"] == "http://127.0.0.1:9/token"
    assert "sasl.username" not in config and "sasl.password" not in config
    creds = settings.faust_kwargs()["broker_credentials"]
    assert isinstance(creds, faust.OAuthCredentials)
    assert creds.protocol.value == "SASL_PLAINTEXT"
    provider = creds.oauth_cb
    assert isinstance(provider, OidcTokenProvider)
    assert (provider.endpoint, provider.client_id, provider.scope) == (
        "http://127.0.0.1:9/token", "meterwatch-svc", "kafka")


@pytest.mark.parametrize(("env", "message"), [
    ({k: v for k, v in OIDC_ENV.items() if "CLIENT_SECRET" not in k},
     "OAUTHBEARER needs KAFKA_CONFIG_SASL_OAUTHBEARER_CLIENT_SECRET"),
    ({**OIDC_ENV, "KAFKA_CONFIG_SASL_OAUTHBEARER_METHOD": "default"}, "only 'oidc'"),
    ({**OIDC_ENV, "KAFKA_SASL_PASSWORD": "p"}, "not used with OAUTHBEARER"),
    ({**OIDC_ENV, "KAFKA_CONFIG_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL": "file:///etc/passwd"},
     "an http(s) URL"),
])
def test_oauthbearer_refusals(env, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        KafkaSettings.from_env(env)
    assert SECRET not in str(info.value)


@pytest.fixture
def token_server():
    """A token endpoint on loopback: answers the client-credentials grant, records requests."""
    with token_endpoint("/oauth2/token", lambda n: (f"token-{n}", 100)) as served:
        yield served


def test_token_provider_fetches_and_caches_until_due(token_server):
    url, seen, _ = token_server
    now = [1000.0]
    provider = OidcTokenProvider(url, "meterwatch-svc", Secret(SECRET), scope="kafka",
                                 extensions={"logicalCluster": "lkc-1"}, clock=lambda: now[0])

    async def tokens():
        first = await asyncio.gather(*(provider.token() for _ in range(5)))  # one fetch
        now[0] += 79.0  # before 80 % of the 100 s lifetime
        cached = await provider.token()
        now[0] += 2.0
        return first, cached, await provider.token()

    first, cached, renewed = asyncio.run(tokens())
    assert first == ["token-1"] * 5 and cached == "token-1" and renewed == "token-2"
    assert len(seen) == 2
    assert seen[0]["form"] == {"grant_type": ["client_credentials"], "scope": ["kafka"]}
    user, _, password = base64.b64decode(seen[0]["auth"].removeprefix("Basic ")).decode(
        ).partition(":")
    assert (user, password) == ("meterwatch-svc", SECRET)
    assert provider.extensions() == {"logicalCluster": "lkc-1"}


def test_token_provider_errors_name_the_endpoint_not_the_secret(token_server):
    url, _, answers = token_server
    answers["status"] = 401
    provider = OidcTokenProvider(url, "meterwatch-svc", Secret(SECRET))
    with pytest.raises(TokenError, match="answered HTTP 401") as info:
        asyncio.run(provider.token())
    assert SECRET not in str(info.value)
    with pytest.raises(TokenError, match="not reached"):
        OidcTokenProvider("http://127.0.0.1:9/token", "c", Secret(SECRET)).fetch()


class _Made(Exception):
    """Raised by the recording client class: the command stops once its client is made."""


@pytest.fixture
def made(monkeypatch):
    """The configs the commands give confluent_kafka's Producer and Consumer (recorded, then
    the command stops: no broker is involved, only the building of the config)."""
    import confluent_kafka

    configs: dict[str, dict] = {}

    def recorder(kind):
        def make(config):
            configs[kind] = config
            raise _Made
        return make

    for name in ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAFKA_CONFIG_CLIENT_ID", "plant-7-replay")
    monkeypatch.setenv("KAFKA_CONFIG_SOCKET_KEEPALIVE_ENABLE", "true")
    monkeypatch.setenv("KAFKA_CONFIG_LINGER_MS", "50")
    kafka = KafkaSettings.from_env()  # checked by librdkafka: before the recorders
    monkeypatch.setattr(confluent_kafka, "Producer", recorder("producer"))
    monkeypatch.setattr(confluent_kafka, "Consumer", recorder("consumer"))
    return kafka, configs


def test_replay_and_alerts_clients_get_the_pass_through(made):
    import numpy as np

    from stream_app.core.series import MeterSeries
    from stream_app.io.alerts_cli import read_alerts
    from stream_app.io.replay import replay

    kafka, configs = made
    series = [MeterSeries("m-1", "industrial", 1_735_689_600 + 900 * np.arange(3),
                          np.ones(3), 900)]
    with pytest.raises(_Made):
        replay(series, kafka=kafka, backfill=True, progress=False, create=False)
    with pytest.raises(_Made):
        read_alerts(kafka, "meter-alerts", follow=False, from_beginning=True, emit=print)
    producer, consumer = configs["producer"], configs["consumer"]
    for config in (producer, consumer):
        assert config["client.id"] == "plant-7-replay"
        assert config["socket.keepalive.enable"] == "true"
        assert config["logger"] is logging.getLogger(KAFKA_LOGGER)
    assert producer["linger.ms"] == "50"  # over the replay's own 20
    assert producer["enable.idempotence"] is True  # the replay's tuning where none is given
    assert consumer["enable.partition.eof"] is True  # the reader stops at the end by it
