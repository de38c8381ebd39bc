"""`meterwatch worker`: check everything at start-up, then run the Faust worker until stopped.

Config and model errors fail here, before the first event is read: settings are validated, the
bundle is verified (a tampered or incompatible bundle refuses to start with one message), the
ONNX sessions are created, and the topics the worker writes to exist. N workers started with the
same MW_APP_ID form one consumer group and share the partitions.

What the start waits for (the broker, input topics, the partition assignment) it says on
stdout, one line each, before Faust's own log begins and whatever its log level: a worker that
sits waiting says for what.
"""

from __future__ import annotations

import logging
import sys
import time

import faust

from stream_app.core.errors import ConfigError
from stream_app.core.model_bundle import Bundle
from stream_app.core.scoring import Detector
from stream_app.stream.app import create_app
from stream_app.stream.registry import Registry
from stream_app.stream.settings import KafkaSettings, WorkerSettings, check_broker_support
from stream_app.stream.timers import consumed_topics, matching_topics
from stream_app.stream.topics import create_topics

log = logging.getLogger("meterwatch.worker")


def build(kafka: KafkaSettings, worker: WorkerSettings) -> faust.App:
    """Every start-up check, then the app: settings, bundle, brokers reachable, topics."""
    check_broker_support(kafka, worker)
    registry = None
    if worker.model_root is not None:
        registry = Registry(worker.model_root, providers=worker.onnx_providers)
        detector = registry.detectors[registry.default]
        log.info("model registry %s: %s", worker.model_root, registry.versions())
    else:
        detector = Detector(Bundle.load(worker.model_dir), providers=worker.onnx_providers)
    bundle = detector.bundle
    topics = [worker.readings_topic, worker.alerts_topic, worker.dlq_topic, worker.feedback_topic]
    if worker.input_topic:
        topics.append(worker.input_topic)
    say(f"waiting for the broker at {kafka.bootstrap_servers} (up to {worker.broker_wait_s:g} s)")
    check_brokers_reachable(kafka, worker.broker_wait_s)
    check_session_timeout(kafka, worker)
    create_topics(kafka.confluent_config(), topics, worker.partitions)
    log.info("kafka %s", kafka.redacted())
    if kafka.properties:
        log.info("librdkafka properties, for the confluent-kafka clients only (not Faust's "
                 "consumer and producer): %s", ", ".join(sorted(kafka.properties)))
    log.info("bundle %s, windows %s, models %s, provider %s", bundle.version,
             bundle.window_sizes, bundle.models, detector.reconstructor.active_provider)
    inputs = matching_topics(kafka, worker)
    if not inputs:
        say(f"waiting for input topics matching {worker.input_pattern!r} (looked for every 5 s)")
    while not inputs:
        time.sleep(5)
        inputs = matching_topics(kafka, worker)
    log.info("input topics: %d (%s%s)", len(inputs), ", ".join(inputs[:5]),
             " ..." if len(inputs) > 5 else "")
    app = create_app(kafka, worker, detector, inputs, registry=registry)
    pattern = worker.input_topic or f"matching {worker.input_pattern!r}"
    say(f"waiting for partition assignment of group {worker.app_id} on topics {pattern} "
        f"({len(inputs)} now)")
    announce_ready(app)
    return app


def say(line: str) -> None:
    """One line on the process's own stdout: Faust's worker redirects sys.stdout into its log
    once it runs, where a line would come out at its level or not at all."""
    print(line, file=sys.__stdout__ or sys.stdout, flush=True)


def announce_ready(app: faust.App) -> None:
    """`ready: consuming N partitions` after each rebalance, once the tables are recovered:
    N counts the assigned partitions of the topics the agents read (timers.consumed_topics)."""
    async def ready(sender: object, /, *args: object, signal: object, **kwargs: object) -> None:
        topics = consumed_topics(app.meterwatch)  # type: ignore[attr-defined]  # create_app sets it
        count = sum(1 for tp in app.consumer.assignment() if tp.topic in topics)
        say(f"ready: consuming {count} partitions")

    app.on_rebalance_complete.connect(ready)


def check_brokers_reachable(kafka: KafkaSettings, wait_s: float) -> None:
    """Brokers that do not answer within `wait_s` stop the start with one line (librdkafka
    would otherwise retry with a line per attempt, and Faust end in a traceback)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    # log_level 0, whatever KAFKA_CONFIG_LOG_LEVEL says: the one line below says it all, not
    # one line per refused connection
    admin = AdminClient({**kafka.confluent_config(), "log_level": 0})
    try:
        admin.list_topics(timeout=wait_s)
    except KafkaException as exc:
        error = exc.args[0]
        cause = error.str() if hasattr(error, "str") else str(error)
        raise ConfigError(f"no Kafka broker answered at {kafka.bootstrap_servers} within "
                          f"{wait_s:g} s (MW_BROKER_WAIT_S; security protocol "
                          f"{kafka.security_protocol}): {cause}") from None


def check_session_timeout(kafka: KafkaSettings, worker: WorkerSettings) -> None:
    """A session timeout outside the broker's group limits makes every JoinGroup fail, and the
    consumer would retry forever: refuse it at start with one line. A broker that does not
    describe its configs (Tansu) is not checked."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

    admin = AdminClient(kafka.confluent_config())
    try:
        broker = next(iter(admin.list_topics(timeout=10).brokers))
        done = admin.describe_configs([ConfigResource(ResourceType.BROKER, str(broker))])
        configs = next(iter(done.values())).result(timeout=10)
        low, high = (int(configs[f"group.{end}.session.timeout.ms"].value) / 1000
                     for end in ("min", "max"))
    # not described: the broker decides at join time
    except (KafkaException, KeyError, StopIteration, ValueError) as exc:
        log.debug("broker group limits not described: %r", exc)
        return
    finally:
        admin.poll(0)  # hands librdkafka's queued warnings to the logger
    if not low <= worker.session_timeout_s <= high:
        raise ConfigError(f"MW_SESSION_TIMEOUT_S={worker.session_timeout_s:g} is outside the "
                          f"broker's group.min/max.session.timeout.ms ({low:g} to {high:g} s)")


def run_worker(loglevel: str = "info", web: bool = True) -> int:
    kafka, worker = KafkaSettings.from_env(), WorkerSettings.from_env()
    app = build(kafka, worker)
    faust.Worker(app, loglevel=loglevel).execute_from_commandline()
    return 0
