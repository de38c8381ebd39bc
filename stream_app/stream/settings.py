"""Typed, frozen settings read from the environment in one place and validated once, at start-up.

Two groups: `KafkaSettings` (how to reach the brokers, the conventional `KAFKA_*` names plus
`MW_BROKER_KIND`) and `WorkerSettings` (what the stream worker does, all `MW_*`). Every field
declares its environment variable next to its default, so the table of variables cannot drift
from the code. Values are stripped; an empty value means "use the default".

Typo protection: any `MW_*` variable that no field declares is a `ConfigError` that lists the
valid names (a misspelt `MW_BACH_SIZE` would otherwise silently run with the default). Only the
runtime's own settings are valid: a program that embeds these settings and owns more `MW_*`
variables (the test suite: tests/conftest.py) declares them with `register_variables`, for its
own process only.

Credentials are wrapped in `Secret`, whose repr/str is a mask, so printing or logging a settings
object never shows them; only `confluent_config()` / `faust_kwargs()` reveal them, to the client.

librdkafka pass-through (docs/KAFKA_CONNECT.md): any librdkafka property from a Java-style
properties file (`KAFKA_CONFIG_FILE`) or a `KAFKA_CONFIG_<NAME>` variable (NAME upper-case, `_`
for `.`; librdkafka's one string property with `_`, log_level, is KAFKA_CONFIG_LOG_LEVEL).
The more specific source wins: `KAFKA_<SETTING>` over `KAFKA_CONFIG_<NAME>` over the file. The
properties a `KAFKA_*` setting owns (bootstrap.servers, security.protocol, sasl.*, ssl.*.location,
client.id) fill that setting, so the Faust worker (aiokafka, which knows no librdkafka property)
connects the same way; the others reach the confluent-kafka clients only. librdkafka checks every
name and value once, at start (`ConfigError`), not at the first connection.

Broker kinds: the Tansu workarounds (see `faust_kwargs`) are applied only when `MW_BROKER_KIND`
says "tansu" — a production Kafka never gets them by accident.

Longer than most modules (~650 lines) on purpose: every variable the runtime reads, its
default, parsing and validation stay in this one file (the librdkafka pass-through too), so
the table cannot drift.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from stream_app.core.errors import ConfigError
from stream_app.models import default_bundle

MASK = "**********"
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
BROKER_KINDS = ("tansu", "kafka", "unknown")
PROCESSING_GUARANTEES = ("at_least_once", "exactly_once")
STORE_SCHEMES = ("memory://", "rocksdb://")
_REGISTERED: set[str] = set()  # MW_ variables owned by the embedding program (register_variables)
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
_WEB_HOST = re.compile(r"[A-Za-z0-9.:_-]{1,253}")  # a name, IPv4 or IPv6 (no brackets)
MIN_WEB_TOKEN = 16  # a guessable token protects nothing
_WEB_TOKEN = re.compile(rf"[!-~]{{{MIN_WEB_TOKEN},512}}")
# librdkafka settings as confluent_kafka's clients take them: str/int/float/bool values, and the
# `logger` (a logging.Logger) that confluent_kafka takes out of the dict itself
ConfluentConfig = dict[str, Any]
PROPERTY_PREFIX = "KAFKA_CONFIG_"
PROPERTY_FILE = "KAFKA_CONFIG_FILE"
_PROPERTY_NAME = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)*")
# librdkafka names with `_` (the rest are dotted): a KAFKA_CONFIG_<NAME> maps to them as spelt
_UNDERSCORED = {"log.level": "log_level"}
# librdkafka properties a KAFKA_* setting owns; from the pass-through they fill that setting
CONNECTION_PROPERTIES = {
    "bootstrap.servers": "bootstrap_servers",
    "security.protocol": "security_protocol",
    "sasl.mechanisms": "sasl_mechanism",
    "sasl.mechanism": "sasl_mechanism",  # librdkafka's alias
    "sasl.username": "sasl_username",
    "sasl.password": "sasl_password",
    "ssl.ca.location": "ssl_cafile",
    "ssl.certificate.location": "ssl_certfile",
    "ssl.key.location": "ssl_keyfile",
    "ssl.key.password": "ssl_key_password",
    "client.id": "client_id",
}
# a pass-through property whose name has one of these is a Secret (masked in every printout)
_SECRET_WORDS = ("password", "secret", "passphrase", "key.pem", "private.key", "oauthbearer.config")
# OAUTHBEARER: librdkafka's OIDC client-credentials grant, which the Faust worker's token
# provider (oauth.py) performs from the same properties
OIDC_REQUIRED = ("sasl.oauthbearer.client.id", "sasl.oauthbearer.client.secret",
                 "sasl.oauthbearer.token.endpoint.url")
# librdkafka's syslog levels: 4 is warning, so only warnings and errors reach Python logging
KAFKA_LOG_LEVEL = 4
KAFKA_LOGGER = "meterwatch.kafka"


class Secret:
    """A string that never shows itself in repr/str/format; `reveal()` hands it to a client."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return MASK

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _env(name: str, parse: Callable[[str], object] = str) -> dict:
    """Field metadata: the field's environment variable and how to parse its text."""
    return {"env": name, "parse": parse}


def _as_int(raw: str) -> int:
    return int(raw)


def _as_float(raw: str) -> float:
    return float(raw)


def _as_providers(raw: str) -> tuple[str, ...] | None:
    names = tuple(part.strip() for part in raw.split(",") if part.strip())
    return None if names in ((), ("auto",)) else names


def runtime_variables() -> set[str]:
    """The MW_ variables the runtime itself reads: one per settings field."""
    declared = {f.metadata.get("env", "") for cls in (KafkaSettings, WorkerSettings)
                for f in fields(cls)}
    return {name for name in declared if name.startswith("MW_")}


def register_variables(names) -> None:
    """Declare MW_ variables the embedding program owns (never read by the runtime), so that
    settings read in this process accept them. A worker process started apart stays strict."""
    _REGISTERED.update(names)


def _check_mw_names(environ: Mapping[str, str]) -> None:
    """Unknown MW_* variables are errors: a typo must not silently fall back to a default."""
    known = runtime_variables() | _REGISTERED
    unknown = sorted(name for name in environ if name.startswith("MW_") and name not in known)
    if unknown:
        hints = [
            f"{name} (did you mean {close[0]}?)" if close else name
            for name in unknown
            for close in [difflib.get_close_matches(name, known, n=1)]
        ]
        raise ConfigError(
            f"unknown environment variable(s) {', '.join(hints)}; "
            f"valid MW_ variables: {', '.join(sorted(known))}"
        )


def _read_env(cls, environ: Mapping[str, str]) -> dict:
    """Parse every declared variable that is set (and not blank) into constructor kwargs."""
    _check_mw_names(environ)
    kwargs = {}
    for f in fields(cls):
        if "env" not in f.metadata:  # read apart (KafkaSettings.properties)
            continue
        raw = environ.get(f.metadata["env"])
        if raw is None or not raw.strip():
            continue
        raw = raw.strip()
        try:
            kwargs[f.name] = f.metadata["parse"](raw)
        except ValueError as exc:
            raise ConfigError(f"{f.metadata['env']}={raw!r} is not valid: {exc}") from None
    return kwargs


def default_data_dir() -> Path:
    """$XDG_STATE_HOME/meterwatch (default ~/.local/state/meterwatch): state outside the
    working directory, which may be a checkout or read-only."""
    state = os.environ.get("XDG_STATE_HOME", "").strip()
    return (Path(state) if state else Path.home() / ".local" / "state") / "meterwatch"


def read_properties_file(path: Path) -> dict[str, str]:
    """A Java-style properties file as librdkafka names it: `name=value` lines (the first `=`
    splits; blanks around both are dropped), blank lines and `#` or `!` comments skipped. No
    line continuations or escapes: librdkafka values need none. Errors name the line, never
    its text (it may hold a password)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{PROPERTY_FILE}={str(path)!r} cannot be read: {exc}") from None
    properties = {}
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith(("#", "!")):
            continue
        name, equals, value = text.partition("=")
        if not equals or not _PROPERTY_NAME.fullmatch(name.strip()):
            raise ConfigError(f"{PROPERTY_FILE} {path} line {number}: not a `name=value` line "
                              "with a librdkafka property name (lower-case, dotted)")
        if value.strip():
            properties[name.strip()] = value.strip()
    return properties


def read_properties(environ: Mapping[str, str]) -> dict[str, str]:
    """The pass-through properties: those of KAFKA_CONFIG_FILE, then KAFKA_CONFIG_<NAME> over
    them (`KAFKA_CONFIG_SOCKET_KEEPALIVE_ENABLE` sets socket.keepalive.enable). Blank values
    are unset, as everywhere."""
    path = environ.get(PROPERTY_FILE, "").strip()
    properties = read_properties_file(Path(path)) if path else {}
    for variable, raw in sorted(environ.items()):
        if not variable.startswith(PROPERTY_PREFIX) or variable == PROPERTY_FILE:
            continue
        name = variable[len(PROPERTY_PREFIX):].lower().replace("_", ".")
        name = _UNDERSCORED.get(name, name)
        if not _PROPERTY_NAME.fullmatch(name) or name.startswith("."):
            raise ConfigError(f"{variable}: not a librdkafka property name after "
                              f"{PROPERTY_PREFIX} (upper-case, `_` for `.`)")
        if raw.strip():
            properties[name] = raw.strip()
    return properties


def _env_name(attr: str) -> str:
    """The variable of a KafkaSettings field."""
    return next(f.metadata["env"] for f in fields(KafkaSettings) if f.name == attr)


def _is_secret(name: str) -> bool:
    return any(word in name for word in _SECRET_WORDS)


def _check_bootstrap(servers: str) -> None:
    for entry in servers.split(","):
        host, _, port = entry.strip().rpartition(":")
        if not host or "/" in entry or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"KAFKA_BOOTSTRAP_SERVERS entry {entry.strip()!r} is not host:port "
                "(comma-separated, no scheme)"
            )


@dataclass(frozen=True)
class KafkaSettings:
    """Where the brokers are and how to authenticate; validated on construction."""

    bootstrap_servers: str = field(
        default="127.0.0.1:9092", metadata=_env("KAFKA_BOOTSTRAP_SERVERS")
    )
    security_protocol: str = field(
        default="PLAINTEXT", metadata=_env("KAFKA_SECURITY_PROTOCOL", str.upper)
    )
    sasl_mechanism: str | None = field(
        default=None, metadata=_env("KAFKA_SASL_MECHANISM", str.upper)
    )
    sasl_username: str | None = field(default=None, metadata=_env("KAFKA_SASL_USERNAME"))
    sasl_password: Secret | None = field(default=None, metadata=_env("KAFKA_SASL_PASSWORD", Secret))
    ssl_cafile: Path | None = field(default=None, metadata=_env("KAFKA_SSL_CAFILE", Path))
    ssl_certfile: Path | None = field(default=None, metadata=_env("KAFKA_SSL_CERTFILE", Path))
    ssl_keyfile: Path | None = field(default=None, metadata=_env("KAFKA_SSL_KEYFILE", Path))
    ssl_key_password: Secret | None = field(
        default=None, metadata=_env("KAFKA_SSL_KEY_PASSWORD", Secret)
    )
    client_id: str = field(default="meterwatch", metadata=_env("KAFKA_CLIENT_ID"))
    broker_kind: str = field(default="unknown", metadata=_env("MW_BROKER_KIND", str.lower))
    # The pass-through (KAFKA_CONFIG_FILE, KAFKA_CONFIG_<NAME>) less the properties a setting
    # above owns; secrets as Secret. For the confluent-kafka clients; the worker reads the
    # OAUTHBEARER ones too.
    properties: dict[str, str | Secret] = field(default_factory=dict, hash=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> KafkaSettings:
        """The KAFKA_* settings; a connection property of the pass-through fills the setting
        that owns it unless that setting's own variable is set (the more specific wins)."""
        kwargs = _read_env(cls, environ)
        properties: dict[str, str | Secret] = {**read_properties(environ)}
        by_name = {f.name: f for f in fields(cls)}
        for name, attr in CONNECTION_PROPERTIES.items():
            if name in properties:
                raw = properties.pop(name)
                if attr not in kwargs:
                    kwargs[attr] = by_name[attr].metadata["parse"](raw)
        return cls(**kwargs, properties=properties)

    def __post_init__(self) -> None:
        for name in ("sasl_password", "ssl_key_password"):  # plain strings given in code
            if isinstance(getattr(self, name), str):
                object.__setattr__(self, name, Secret(getattr(self, name)))
        self._check_properties()
        _check_bootstrap(self.bootstrap_servers)
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(
                f"KAFKA_SECURITY_PROTOCOL={self.security_protocol!r}; one of {SECURITY_PROTOCOLS}"
            )
        if self.broker_kind not in BROKER_KINDS:
            raise ConfigError(f"MW_BROKER_KIND={self.broker_kind!r}; one of {BROKER_KINDS}")
        sasl_fields = (self.sasl_mechanism, self.sasl_username, self.sasl_password)
        if self.uses_sasl:
            if self.sasl_mechanism is None:  # librdkafka would pick GSSAPI, which we do not ship
                object.__setattr__(self, "sasl_mechanism", "PLAIN")
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise ConfigError(
                    f"KAFKA_SASL_MECHANISM={self.sasl_mechanism!r}; one of {SASL_MECHANISMS}"
                )
            if self.uses_oauthbearer:
                self._check_oauthbearer()
            elif not self.sasl_username or self.sasl_password is None:
                raise ConfigError(
                    f"{self.security_protocol} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
                )
        elif any(value is not None for value in sasl_fields):
            raise ConfigError(
                f"KAFKA_SASL_* is set but KAFKA_SECURITY_PROTOCOL={self.security_protocol}; "
                "use SASL_PLAINTEXT or SASL_SSL"
            )
        ssl_files = {
            "KAFKA_SSL_CAFILE": self.ssl_cafile,
            "KAFKA_SSL_CERTFILE": self.ssl_certfile,
            "KAFKA_SSL_KEYFILE": self.ssl_keyfile,
        }
        if not self.uses_ssl and any(v is not None for v in ssl_files.values()):
            raise ConfigError(
                f"KAFKA_SSL_* is set but KAFKA_SECURITY_PROTOCOL={self.security_protocol}; "
                "use SSL or SASL_SSL"
            )
        for name, path in ssl_files.items():
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{name}={str(path)!r} is not a readable file")
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ConfigError("KAFKA_SSL_KEYFILE needs KAFKA_SSL_CERTFILE")
        if self.properties or self.uses_oauthbearer:
            self._check_with_librdkafka()

    def _check_properties(self) -> None:
        """Names librdkafka could have, none a setting owns; secrets wrapped."""
        for name in self.properties:
            if not _PROPERTY_NAME.fullmatch(name):
                raise ConfigError(f"Kafka property {name!r}: librdkafka's property names are "
                                  "lower-case and dotted")
            if name in CONNECTION_PROPERTIES:
                variable = _env_name(CONNECTION_PROPERTIES[name])
                raise ConfigError(f"Kafka property {name} is {variable}'s: set it there")
        object.__setattr__(self, "properties", {
            name: Secret(value) if isinstance(value, str) and _is_secret(name) else value
            for name, value in self.properties.items()})

    def _check_oauthbearer(self) -> None:
        """OAUTHBEARER by OIDC client credentials, the one kind both the confluent-kafka
        clients (librdkafka itself) and the Faust worker (oauth.py) can fetch tokens for."""
        if self.sasl_username is not None or self.sasl_password is not None:
            raise ConfigError("KAFKA_SASL_USERNAME/KAFKA_SASL_PASSWORD are not used with "
                              "OAUTHBEARER: unset them (the OIDC client id and secret are "
                              "KAFKA_CONFIG_SASL_OAUTHBEARER_CLIENT_ID/_CLIENT_SECRET)")
        method = self.properties.get("sasl.oauthbearer.method", "oidc")
        if method != "oidc":
            raise ConfigError(f"sasl.oauthbearer.method={method!r}: only 'oidc' is supported "
                              "(the Faust worker fetches OIDC client-credentials tokens)")
        self.properties.setdefault("sasl.oauthbearer.method", "oidc")
        missing = [name for name in OIDC_REQUIRED if not self.properties.get(name)]
        if missing:
            raise ConfigError("KAFKA_SASL_MECHANISM=OAUTHBEARER needs " + ", ".join(
                PROPERTY_PREFIX + name.upper().replace(".", "_") for name in missing))
        url = str(self.properties["sasl.oauthbearer.token.endpoint.url"])
        if not url.startswith(("https://", "http://")):
            raise ConfigError(f"sasl.oauthbearer.token.endpoint.url={url!r}: an http(s) URL")

    def _check_with_librdkafka(self) -> None:
        """librdkafka checks every property name and value when a client is made: make one
        (no connection is needed for that) so a typo stops the start, not the first send."""
        from confluent_kafka import KafkaException, Producer

        try:
            Producer({**self.confluent_config(), "log_level": 0})  # silent: it never connects
        except (KafkaException, TypeError, ValueError) as exc:  # TypeError: a callback's name
            error = exc.args[0]
            cause = error.str() if hasattr(error, "str") else str(error)
            for value in (self.sasl_password, self.ssl_key_password, *self.properties.values()):
                if isinstance(value, Secret) and value.reveal():
                    cause = cause.replace(value.reveal(), MASK)
            raise ConfigError(f"Kafka client settings refused by librdkafka: {cause} (from "
                              f"{PROPERTY_PREFIX}<NAME> variables or {PROPERTY_FILE}; see "
                              "docs/KAFKA_CONNECT.md)") from None

    @property
    def uses_oauthbearer(self) -> bool:
        return self.uses_sasl and self.sasl_mechanism == "OAUTHBEARER"

    def revealed_properties(self) -> dict[str, str]:
        """The pass-through properties with their secrets revealed, for a client."""
        return {name: value.reveal() if isinstance(value, Secret) else value
                for name, value in self.properties.items()}

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def is_tansu(self) -> bool:
        return self.broker_kind == "tansu"

    def confluent_config(self, tuning: Mapping[str, object] | None = None,
                         fixed: Mapping[str, object] | None = None) -> ConfluentConfig:
        """The configuration of every confluent_kafka client (Producer, Consumer, AdminClient);
        reveals secrets. Later layers win: the KAFKA_* settings and librdkafka's log at warning
        and above; the client's `tuning` (its defaults, which an operator may change); the
        pass-through properties; the client's `fixed` settings (what its code relies on, such
        as a reader's unique group.id) and the logger that hands librdkafka's log lines to
        Python logging. A pass-through property a fixed setting overrides is logged."""
        config: ConfluentConfig = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "client.id": self.client_id,
            "log_level": KAFKA_LOG_LEVEL,
        }
        if self.uses_sasl:
            assert self.sasl_mechanism is not None  # __post_init__ defaults it to PLAIN
            config["sasl.mechanisms"] = self.sasl_mechanism
        if self.uses_sasl and not self.uses_oauthbearer:
            _, username, password = self._sasl()
            config["sasl.username"] = username
            config["sasl.password"] = password
        optional = {
            "ssl.ca.location": self.ssl_cafile,
            "ssl.certificate.location": self.ssl_certfile,
            "ssl.key.location": self.ssl_keyfile,
            "ssl.key.password": self.ssl_key_password.reveal() if self.ssl_key_password else None,
        }
        config.update({key: str(value) for key, value in optional.items() if value is not None})
        config.update(tuning or {})
        passed = self.revealed_properties()
        config.update(passed)
        for name in sorted(set(passed) & set(fixed or {})):
            logging.getLogger(KAFKA_LOGGER).warning(
                "Kafka property %s not applied to this client: it needs its own value", name)
        config.update(fixed or {})
        config["logger"] = logging.getLogger(KAFKA_LOGGER)
        return config

    def _sasl(self) -> tuple[str, str, str]:
        """(mechanism, username, password) of a SASL protocol, the password revealed."""
        # __post_init__ refuses a SASL protocol without them (the mechanism defaults to PLAIN)
        assert self.sasl_mechanism is not None and self.sasl_username is not None
        assert self.sasl_password is not None
        return self.sasl_mechanism, self.sasl_username, self.sasl_password.reveal()

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context Faust (aiokafka) needs, or None without TLS."""
        if not self.uses_ssl:
            return None
        try:
            context = ssl.create_default_context(
                cafile=str(self.ssl_cafile) if self.ssl_cafile else None
            )
            if self.ssl_certfile is not None:
                context.load_cert_chain(
                    str(self.ssl_certfile),
                    str(self.ssl_keyfile) if self.ssl_keyfile else None,
                    self.ssl_key_password.reveal() if self.ssl_key_password else None,
                )
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"cannot load the Kafka TLS files: {exc}") from None
        return context

    def faust_kwargs(self) -> dict:
        """Keyword arguments for `faust.App`: broker URLs, credentials, Tansu workarounds.

        On Tansu only: `producer_max_batch_size=1` and `recovery_consistency_check=False`,
        because Tansu reports wrong end offsets after a multi-record batch and table recovery
        would otherwise lose the last updates (or crash a rocksdb store).
        """
        import faust  # deferred: settings stay importable without the stream runtime

        hosts = [entry.strip() for entry in self.bootstrap_servers.split(",")]
        kwargs: dict = {
            "broker": ";".join(f"kafka://{host}" for host in hosts),
            "broker_client_id": self.client_id,
        }
        context = self.ssl_context()
        if self.uses_oauthbearer:
            from stream_app.stream.oauth import OidcTokenProvider

            kwargs["broker_credentials"] = faust.OAuthCredentials(
                oauth_cb=OidcTokenProvider.from_properties(self.properties),
                ssl_context=context)
        elif self.uses_sasl:
            mechanism, username, password = self._sasl()
            kwargs["broker_credentials"] = faust.SASLCredentials(
                username=username,
                password=password,
                mechanism=mechanism,
                ssl_context=context,
            )
        elif context is not None:
            kwargs["broker_credentials"] = faust.SSLCredentials(context)
        if self.is_tansu:
            kwargs["producer_max_batch_size"] = 1
            kwargs["recovery_consistency_check"] = False
        return kwargs

    def redacted(self) -> dict[str, object]:
        """Every field, secrets masked: what start-up logs print."""
        return {
            f.name: (MASK if isinstance(value, Secret) else
                     {k: MASK if isinstance(v, Secret) else v for k, v in value.items()}
                     if isinstance(value, dict) else value)
            for f in fields(self)
            for value in [getattr(self, f.name)]
        }


@dataclass(frozen=True)
class WorkerSettings:
    """What the stream worker consumes, produces and how it batches; all from MW_* variables."""

    # Regex over source topics.
    input_pattern: str = field(default=r"meter\..+", metadata=_env("MW_INPUT_PATTERN"))
    # When set, replaces the pattern.
    input_topic: str | None = field(default=None, metadata=_env("MW_INPUT_TOPIC"))
    # Re-keyed by meter.
    readings_topic: str = field(default="meterwatch-readings", metadata=_env("MW_READINGS_TOPIC"))
    alerts_topic: str = field(default="meter-alerts", metadata=_env("MW_ALERTS_TOPIC"))
    dlq_topic: str = field(default="meter-readings-dlq", metadata=_env("MW_DLQ_TOPIC"))
    feedback_topic: str = field(default="meter-alert-feedback", metadata=_env("MW_FEEDBACK_TOPIC"))
    # Faust app id = consumer group.
    app_id: str = field(default="meterwatch", metadata=_env("MW_APP_ID"))
    partitions: int = field(default=4, metadata=_env("MW_PARTITIONS", _as_int))
    batch_size: int = field(default=256, metadata=_env("MW_BATCH_SIZE", _as_int))
    # A batch waits at most this long: bounds alert latency at low traffic.
    batch_max_wait_s: float = field(default=0.2, metadata=_env("MW_BATCH_MAX_WAIT_S", _as_float))
    store: str = field(default="memory://", metadata=_env("MW_STORE"))
    # Faust's data directory (tables of a rocksdb:// store); the app uses <data_dir>/<app_id>.
    data_dir: Path = field(default_factory=default_data_dir, metadata=_env("MW_DATA_DIR", Path))
    # How long the worker waits at start for a broker to answer before it exits (code 2).
    broker_wait_s: float = field(default=30.0, metadata=_env("MW_BROKER_WAIT_S", _as_float))
    # A dead worker's partitions move after this long; heartbeats go every sixth of it.
    session_timeout_s: float = field(default=10.0, metadata=_env("MW_SESSION_TIMEOUT_S", _as_float))
    web_port: int = field(default=6066, metadata=_env("MW_WEB_PORT", _as_int))
    # Loopback unless asked: a container sets 0.0.0.0 inside its own network (docker-compose.yml).
    web_host: str = field(default="127.0.0.1", metadata=_env("MW_WEB_HOST"))
    # When set, every page but /health needs it as a bearer token (stream_app/stream/pages.py).
    web_token: Secret | None = field(default=None, metadata=_env("MW_WEB_TOKEN", Secret))
    processing_guarantee: str = field(
        default="at_least_once", metadata=_env("MW_PROCESSING_GUARANTEE", str.lower)
    )
    # Default: the bundle shipped in the package (stream_app.models).
    model_dir: Path = field(default_factory=default_bundle, metadata=_env("MW_MODEL_DIR", Path))
    # When set: a registry of bundles per company / profile (stream_app.stream.registry); else model_dir.
    model_root: Path | None = field(default=None, metadata=_env("MW_MODEL_ROOT", Path))
    onnx_providers: tuple[str, ...] | None = field(
        default=None, metadata=_env("MW_ONNX_PROVIDERS", _as_providers)
    )
    # Kafka's default.
    max_message_bytes: int = field(default=1 << 20, metadata=_env("MW_MAX_MESSAGE_BYTES", _as_int))
    # A meter is silent after this many of its intervals without a reading (wall clock).
    silence_factor: float = field(default=4.0, metadata=_env("MW_SILENCE_FACTOR", _as_float))
    # This many meters of one site going silent within about one reporting interval raise one
    # grouped `meters_silent` alert instead of one alert each (docs/ALERTS.md).
    silence_group_min: int = field(default=10, metadata=_env("MW_SILENCE_GROUP_MIN", _as_int))
    # A meter silent longer than this in stream time (30 days) loses its state: the table key is
    # deleted (a changelog tombstone) and every in-memory map forgets it (retention.py).
    meter_ttl_s: float = field(default=2_592_000.0, metadata=_env("MW_METER_TTL_S", _as_float))
    # Meters with state per worker; readings of a new meter beyond it are dead-lettered
    # (`meter_cap`). 200,000 x the 3.1 KiB measured per meter (docs/BENCHMARKS.md) ~ 600 MiB.
    max_meters: int = field(default=200_000, metadata=_env("MW_MAX_METERS", _as_int))
    # `meterwatch recalibrate` moves a limit only on verdicts of this many distinct judges ...
    feedback_min_judges: int = field(default=2, metadata=_env("MW_FEEDBACK_MIN_JUDGES", _as_int))
    # ... and by at most this factor either way per run (reasons: stream_app/stream/feedback.py).
    feedback_max_step: float = field(default=1.25, metadata=_env("MW_FEEDBACK_MAX_STEP", _as_float))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> WorkerSettings:
        return cls(**_read_env(cls, environ))

    def __post_init__(self) -> None:
        if isinstance(self.web_token, str):  # a plain string given in code
            object.__setattr__(self, "web_token", Secret(self.web_token))
        try:
            re.compile(self.input_pattern)
        except re.error as exc:
            raise ConfigError(f"MW_INPUT_PATTERN={self.input_pattern!r}: {exc}") from None
        for f in fields(self):
            name = f.metadata["env"]
            value = getattr(self, f.name)
            if f.name.endswith("_topic") and value is not None and not _TOPIC_NAME.fullmatch(value):
                raise ConfigError(f"{name}={value!r} is not a valid Kafka topic name")
        if not _TOPIC_NAME.fullmatch(self.app_id):
            raise ConfigError(f"MW_APP_ID={self.app_id!r}: letters, digits, '.', '_', '-'")
        minimums = {
            "partitions": 1,
            "batch_size": 1,
            "max_message_bytes": 1024,
            "silence_factor": 1,
            "silence_group_min": 2,  # a group of one is the meter's own alert
            "max_meters": 1,
            "feedback_min_judges": 1,
        }
        for attr, low in minimums.items():
            if getattr(self, attr) < low:
                raise ConfigError(f"MW_{attr.upper()}={getattr(self, attr)} must be >= {low}")
        if not 1.0 <= self.session_timeout_s <= 300.0:
            raise ConfigError(f"MW_SESSION_TIMEOUT_S={self.session_timeout_s}: 1 to 300 seconds")
        if not 0 < self.broker_wait_s <= 3600:
            raise ConfigError(f"MW_BROKER_WAIT_S={self.broker_wait_s}: more than 0, at most 3600")
        if not 1.0 < self.feedback_max_step <= 6.0:  # 6: the whole of LIMIT_BOUNDS in one run
            raise ConfigError(f"MW_FEEDBACK_MAX_STEP={self.feedback_max_step}: more than 1, at most 6")
        if not 60.0 <= self.meter_ttl_s <= 31_622_400.0:  # a minute (tests) to a leap year
            raise ConfigError(f"MW_METER_TTL_S={self.meter_ttl_s}: 60 to 31622400 seconds")
        if not self.batch_max_wait_s > 0:
            raise ConfigError(f"MW_BATCH_MAX_WAIT_S={self.batch_max_wait_s} must be > 0")
        if not 0 < self.web_port < 65536:
            raise ConfigError(f"MW_WEB_PORT={self.web_port} is not a TCP port")
        if not _WEB_HOST.fullmatch(self.web_host):
            raise ConfigError(f"MW_WEB_HOST={self.web_host!r} is not a host name or IP address")
        if self.web_token is not None and not _WEB_TOKEN.fullmatch(self.web_token.reveal()):
            raise ConfigError(f"MW_WEB_TOKEN must be {MIN_WEB_TOKEN} to 512 printable ASCII "
                              "characters without spaces (e.g. `openssl rand -hex 32`)")
        if not self.store.startswith(STORE_SCHEMES):
            raise ConfigError(f"MW_STORE={self.store!r}; starts with one of {STORE_SCHEMES}")
        if self.processing_guarantee not in PROCESSING_GUARANTEES:
            raise ConfigError(
                f"MW_PROCESSING_GUARANTEE={self.processing_guarantee!r}; "
                f"one of {PROCESSING_GUARANTEES}"
            )
        if self.processing_guarantee == "exactly_once" and self.store != "memory://":
            # RocksDB keeps a transaction's table writes when a crash aborts the transaction: a
            # restart on it counts the re-read readings as duplicates, and their alerts are lost
            raise ConfigError("MW_PROCESSING_GUARANTEE=exactly_once needs MW_STORE=memory:// "
                              "(a local RocksDB outlives the transactions a crash aborts)")

    @property
    def input_regex(self) -> re.Pattern[str]:
        return re.compile(self.input_pattern)

    @property
    def app_data_dir(self) -> Path:
        """Faust's `datadir` for this app: one folder per MW_APP_ID under MW_DATA_DIR."""
        return self.data_dir / self.app_id


def check_broker_support(kafka: KafkaSettings, worker: WorkerSettings) -> None:
    """Refuse at start-up what the broker cannot do (Tansu has no transactions)."""
    if kafka.is_tansu and worker.processing_guarantee == "exactly_once":
        raise ConfigError(
            "MW_PROCESSING_GUARANTEE=exactly_once needs transactions, which Tansu lacks; "
            "use at_least_once or a real Kafka"
        )
