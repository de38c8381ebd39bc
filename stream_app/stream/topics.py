"""Topic creation: the worker's internal topics at start-up, and `replay --create-topics`."""

from __future__ import annotations

import time

from stream_app.core.errors import MeterwatchError


def create_topics(
    bootstrap: str | dict,
    names,
    partitions: int,
    config: dict | None = None,
    *,
    timeout: float = 30.0,
) -> None:
    """Create topics (one replica) and wait until the broker serves them with leaders.

    Existing topics are left as they are. `bootstrap` is a host:port list or a full
    confluent_kafka config (for SASL/SSL clusters). Waiting for metadata matters on Kafka:
    CreateTopics returns once the controller commits, a moment before the broker knows.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    client = {"bootstrap.servers": bootstrap} if isinstance(bootstrap, str) else dict(bootstrap)
    admin = AdminClient(client)
    futures = admin.create_topics(
        [NewTopic(name, partitions, 1, config=dict(config or {})) for name in names],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    for name, future in futures.items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise MeterwatchError(f"cannot create topic {name}: {exc}") from None
    try:
        _wait_served(admin, set(futures), timeout)
    finally:
        admin.poll(0)  # hands librdkafka's queued warnings to the logger, if it has one


def _wait_served(admin, pending: set[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while pending:
        topics = admin.list_topics(timeout=max(0.1, deadline - time.monotonic())).topics
        pending = {name for name in pending if not _served(topics.get(name))}
        if pending and time.monotonic() > deadline:
            raise MeterwatchError(f"topics {sorted(pending)} have no leaders after {timeout} s")
        if pending:
            time.sleep(0.05)


def _served(topic) -> bool:
    if topic is None or topic.error is not None or not topic.partitions:
        return False
    return all(p.leader >= 0 and p.error is None for p in topic.partitions.values())
