"""Apache Kafka itself (KRaft, broker+controller, one node) on loopback, from Maven jars.

No Docker needed: `java` (17+) and `mvn` on PATH. `kafka_classpath()` fetches
org.apache.kafka:kafka_2.13 with its runtime dependencies (see `kafka_pom.xml`, ~43 MB) once per
machine into `$XDG_CACHE_HOME/meterwatch/kafka-4.4.0/` (default `~/.cache/...`), under a file
lock so parallel test workers download once. `ApacheKafkaBroker` formats a KRaft log directory
once (static single-voter quorum, so the ports may change between runs) and runs `kafka.Kafka`.

Measured on 2 cores (Java 17): the first use downloads ~43 MB in ~5 s from Maven Central (a
fresh local Maven repository) plus ~2 s to copy them into the cache; afterwards a start takes
3-3.5 s from the constructor call to a metadata answer (~0.8 s format on first use of a log
dir, 2-3 s JVM start + KRaft election); `restart()` with the log on disk 2.6-3.6 s; SIGTERM
shutdown 0.3-2.5 s; RSS ~315-375 MiB at the default 512 MiB heap.
"""

from __future__ import annotations

import base64
import fcntl
import importlib.resources
import logging
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from stream_app.devtools.brokers import BrokerUnavailable, ProcessBroker, free_port, stop_process

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.4.0"


def kafka_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "meterwatch" / f"kafka-{KAFKA_VERSION}"


def kafka_classpath() -> str:
    """Classpath of the Kafka broker jars, fetched with Maven once per machine (file-locked)."""
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            raise BrokerUnavailable(f"Apache Kafka from Maven jars needs `{tool}` on PATH")
    cache = kafka_cache_dir()
    libs = cache / "libs"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test workers download once
        if not (cache / "complete").exists():
            _fetch_jars(cache, libs)
    return str(libs / "*")


def _fetch_jars(cache: Path, libs: Path) -> None:
    pom = cache / "pom.xml"
    pom.write_bytes(importlib.resources.files("stream_app.devtools").joinpath("kafka_pom.xml").read_bytes())
    staging = cache / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    t0 = time.monotonic()
    log.info("fetching Apache Kafka %s jars with Maven into %s (once)", KAFKA_VERSION, cache)
    done = subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ],
        cwd=cache,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BrokerUnavailable(f"mvn could not fetch Kafka jars:\n{done.stdout[-2000:]}")
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    (cache / "complete").write_text(f"{time.monotonic() - t0:.1f} s\n")


def write_tls_files(folder: Path) -> None:
    """A throw-away CA (`ca.pem`) and, signed by it, a certificate for 127.0.0.1 and localhost
    with its unencrypted key (`broker.pem`), made with the openssl CLI (~0.1 s)."""
    if shutil.which("openssl") is None:
        raise BrokerUnavailable("a TLS listener needs the `openssl` CLI to make its certificate")
    folder.mkdir(parents=True, exist_ok=True)
    key = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7"
    ca = "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign"
    sign = "-CA ca.pem -CAkey ca.key -CAcreateserial -days 7"
    steps = [
        f"req -x509 {key} {ca} -keyout ca.key -out ca.pem -subj /CN=meterwatch-test-CA",
        f"req {key} -keyout broker.key -out broker.csr -subj /CN=localhost",
        f"x509 -req -in broker.csr {sign} -out broker.crt -extfile san.ext",
    ]
    # Clients check the name they dialled (librdkafka and Python's ssl both do by default).
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for step in steps:
        done = subprocess.run(
            ["openssl", *step.split()], cwd=folder, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise BrokerUnavailable(f"openssl {step.split()[0]} failed:\n{done.stderr[-2000:]}")
    pem = (folder / "broker.key").read_text() + (folder / "broker.crt").read_text()
    (folder / "broker.pem").write_text(pem)


_SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners={listeners},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners={listeners}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={log_dir}
num.partitions=4
# One node: every internal topic has a single replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests join groups constantly; the default 3 s delay would dominate them.
group.initial.rebalance.delay.ms=0
# fast failover in tests and the demo: workers may ask for session timeouts down to 1 s
group.min.session.timeout.ms=1000
# Topics are created on purpose (source topics with the app's partition count); a typo in a
# topic name should fail loudly rather than create an empty topic.
auto.create.topics.enable=false
"""

# The SSL listener's key and certificate chain, one PEM file (Kafka reads PEM since 2.7); no
# client certificates are asked for, so no truststore.
_TLS_PROPERTIES = """\
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
"""

# SASL/OAUTHBEARER with Kafka's unsecured validator: any unsigned token (`alg: none`) with a
# `sub` and an unexpired `exp` is accepted; for testing the clients' token handling only.
_OAUTHBEARER_PROPERTIES = """\
sasl.enabled.mechanisms=OAUTHBEARER
listener.name.sasl_plaintext.oauthbearer.sasl.jaas.config=\
org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;
"""

_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
"""


class ApacheKafkaBroker(ProcessBroker):
    """Apache Kafka (KRaft broker+controller, one node) on 127.0.0.1 from the cached jars.

    `data_dir` keeps the log across `restart()` and across instances; without it a temporary
    directory is used and removed by `stop()`. `tls=True` adds an SSL listener (`tls_bootstrap`)
    whose certificate is signed by a throw-away CA (`ca_file`, made in `workdir/tls` once);
    clients reach it with `tls_client_config`. `oauthbearer=True` adds a SASL_PLAINTEXT
    listener (`sasl_bootstrap`) taking OAUTHBEARER tokens that Kafka's unsecured validator
    accepts (unsigned). PLAINTEXT (`bootstrap`) stays as it is.
    """

    kind = "kafka"

    def __init__(
        self,
        port: int | None = None,
        data_dir: str | Path | None = None,
        heap: str = "512m",
        *,
        startup_timeout: float = 90.0,
        tls: bool = False,
        oauthbearer: bool = False,
    ):
        self.classpath = kafka_classpath()
        self.port = port or free_port()
        self.controller_port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.tls_port = free_port() if tls else None
        self.tls_bootstrap = f"127.0.0.1:{self.tls_port}" if tls else None
        self.sasl_port = free_port() if oauthbearer else None
        self.sasl_bootstrap = f"127.0.0.1:{self.sasl_port}" if oauthbearer else None
        self.heap = heap
        self.startup_timeout = startup_timeout
        self._owns_dir = data_dir is None
        self.workdir = Path(data_dir or tempfile.mkdtemp(prefix="meterwatch-kafka-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "broker.log"
        self.ca_file = self.workdir / "tls" / "ca.pem" if tls else None
        try:
            self._configure()
            self._start(
                self._java("kafka.Kafka", str(self.workdir / "server.properties")), startup_timeout
            )
        except BaseException:
            self.stop()  # an owned temp dir too; the error already carries the log's tail
            raise

    def _java(self, main: str, *args: str, heap: str | None = None) -> list[str]:
        return [
            "java",
            f"-Xmx{heap or self.heap}",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp",
            self.classpath,
            main,
            *args,
        ]

    @property
    def tls_client_config(self) -> dict:
        """confluent_kafka settings that reach the SSL listener and trust its CA."""
        if self.tls_bootstrap is None:
            raise BrokerUnavailable("this broker was started without tls=True")
        return {
            "bootstrap.servers": self.tls_bootstrap,
            "security.protocol": "SSL",
            "ssl.ca.location": str(self.ca_file),
        }

    def _configure(self) -> None:
        """Write server.properties (ports may change per instance) and format the log once."""
        log_dir = self.workdir / "log"
        listeners = f"PLAINTEXT://127.0.0.1:{self.port}"
        properties = ""
        if self.ca_file is not None:
            if not (self.ca_file.parent / "broker.pem").exists():
                write_tls_files(self.ca_file.parent)
            listeners += f",SSL://127.0.0.1:{self.tls_port}"
            properties = _TLS_PROPERTIES.format(keystore=self.ca_file.parent / "broker.pem")
        if self.sasl_port is not None:
            listeners += f",SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}"
            properties += _OAUTHBEARER_PROPERTIES
        (self.workdir / "server.properties").write_text(
            _SERVER_PROPERTIES.format(
                listeners=listeners, controller_port=self.controller_port, log_dir=log_dir
            )
            + properties
        )
        (self.workdir / "log4j2.properties").write_text(_LOG4J2)
        if (log_dir / "meta.properties").exists():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        done = subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(self.workdir / "server.properties"),
                heap="256m",
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr)[-2000:]
            raise BrokerUnavailable(f"formatting the KRaft log failed:\n{output}")

    def restart(self, down_s: float = 0.0) -> None:
        """Stop cleanly, stay down `down_s` seconds (an outage), and start again on the same
        ports with the same log."""
        if self._proc is not None:
            stop_process(self._proc)
        time.sleep(down_s)
        self._start(
            self._java("kafka.Kafka", str(self.workdir / "server.properties")), self.startup_timeout
        )

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
        if self._owns_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)
