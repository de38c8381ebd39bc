"""The worker's timers: silent meters, new input topics, bundle reload, lag — none can stop it.

Every timer runs inside a `TaskGuard` (guard.py): a failed run is counted, logged in one line
and retried at the next tick.

Each timer is a module-level function over a `WorkerContext` and what it reads of Faust (the
consumer's assignment, high-water marks), so tests call it with plain values.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from stream_app.stream.context import WorkerContext
from stream_app.stream.guard import TaskGuard
from stream_app.stream.patches import subscribe_new_topics
from stream_app.stream.retention import EVICT_PER_TICK
from stream_app.stream.settings import KafkaSettings, WorkerSettings

log = logging.getLogger("meterwatch.worker")

SILENCE_CHECK_S = 1.0  # how often silent meters are looked for
TOPIC_REFRESH_S = 10.0  # how soon a new per-meter topic is picked up
RELOAD_S = 2.0  # how often the bundle folder is checked for a new bundle
LAG_S = 5.0  # how often consumer lag and the meters gauge are refreshed
GROUP_OFFSETS_TIMEOUT_S = 4.0  # the group's committed offsets; within one LAG_S tick
LIST_TOPICS_TIMEOUT_S = 10.0  # one metadata request; the next tick retries


# --- the timers ------------------------------------------------------------------------------

async def check_silence(ctx: WorkerContext, assigned: set[tuple[str, int]], now: float, *,
                        settling: bool = False) -> None:
    """Meters of this worker's partitions that stopped reporting (silence.py), and the state of
    those silent longer than MW_METER_TTL_S evicted (retention.py). An empty assignment is a
    rebalance in progress: judge nothing until it settles; while Faust recovers or rebalances
    (`settling`) nothing is evicted. The cost is that of the meters due now, never of all."""
    if not assigned:
        return
    started = time.perf_counter()
    ctx.silence.forget(ctx.meter_partition.lose(assigned))
    if not settling:
        expired = ctx.silence.expire(now, EVICT_PER_TICK)
        for meter, _ in expired:  # all at once: no reading may slip in between
            ctx.retention.evict(meter)
        for meter, event in expired:
            if event is not None:
                await ctx.send_silence(meter, event)
    for name, silence in ctx.silence.check(now):
        await ctx.send_silence(name, silence)
    if not settling:
        ctx.retention.sweep(assigned, EVICT_PER_TICK - len(expired))
    ctx.metrics.silent_meters.set(ctx.silence.silent_count)
    ctx.metrics.silence_check_seconds.observe(time.perf_counter() - started)


def matching_topics(kafka: KafkaSettings, worker: WorkerSettings, admin=None) -> list[str]:
    """Input topics that exist now: the single input topic, or those matching the pattern.
    Raises confluent_kafka.KafkaException when the brokers do not answer in time."""
    if worker.input_topic:
        return [worker.input_topic]
    if admin is None:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(kafka.confluent_config())
    try:
        names = admin.list_topics(timeout=LIST_TOPICS_TIMEOUT_S).topics
    finally:
        admin.poll(0)  # hands librdkafka's queued warnings to the logger
    return sorted(n for n in names if worker.input_regex.fullmatch(n))


def new_topics(ctx: WorkerContext, found: Iterable[str]) -> list[str]:
    """Topics found that the input topic does not read yet."""
    return [name for name in found if name not in ctx.source.topics]


async def reload_bundle(ctx: WorkerContext, run_blocking) -> None:
    """A new verified bundle (or registry version) is switched to between two batches.
    `run_blocking(f)` runs f off the event loop (verifying a bundle takes a while)."""
    if ctx.registry is not None:
        switched = await run_blocking(ctx.registry.refresh)
        if switched:
            ctx.metrics.bundle_reloads.inc(len(switched))
            ctx.report_bundles()
        return
    assert ctx.watcher is not None  # WorkerContext.__post_init__ sets it
    fresh = await run_blocking(ctx.watcher.poll)
    if fresh is not None:
        ctx.scorer.switch(fresh)
        ctx.metrics.bundle_reloads.inc()
        ctx.report_bundles()


def consumed_topics(ctx: WorkerContext) -> set[str]:
    """The topics the agents read: the input topics (more as they are discovered), the internal
    topic and the feedback topic. Not the table's changelog, read only to recover."""
    return {*ctx.source.topics, ctx.worker.readings_topic, ctx.worker.feedback_topic}


async def report_lag(ctx: WorkerContext, assignment: Iterable, highwater: Callable,
                     committed: Callable[[list[tuple[str, int]]], Awaitable[dict]]) -> None:
    """Records behind the end of every assigned partition of the consumed topics, and the
    meters gauge: the partition's high-water mark minus the next offset to process, which is
    one past the last offset an agent took or, for a partition no agent has taken from since
    it was assigned, `await committed([(topic, partition), ...])` (the group's committed offset,
    `group_offsets`). A partition whose high-water mark is not known yet (not fetched since it
    was assigned) gets no value rather than a wrong one; one no longer assigned loses its."""
    topics = consumed_topics(ctx)
    assigned = {(tp.topic, tp.partition): tp for tp in assignment if tp.topic in topics}
    for key in [k for k in ctx.last_offsets if k not in assigned]:
        del ctx.last_offsets[key]  # moved to another worker: what it took here is stale
    lags: dict[tuple[str, int], int] = {}
    untaken: dict[tuple[str, int], int] = {}
    for key, tp in assigned.items():
        high = highwater(tp)
        if high is None:
            continue
        taken = ctx.last_offsets.get(key)
        if taken is not None:
            lags[key] = max(0, high - taken - 1)
        elif high == 0:
            lags[key] = 0  # nothing was ever written to it
        else:
            untaken[key] = high
    try:
        if untaken:
            start = await committed(sorted(untaken))
            lags.update({key: max(0, high - start[key])
                         for key, high in untaken.items() if key in start})
    finally:  # the broker not answering costs the untaken partitions' figures only
        ctx.metrics.set_lag(lags)
        ctx.metrics.meters.set(len(ctx.table))


def group_offsets(admin, group: str, keys: list[tuple[str, int]],
                  timeout_s: float = GROUP_OFFSETS_TIMEOUT_S) -> dict[tuple[str, int], int]:
    """Where consumer group `group` reads next in each partition: its committed offset, or the
    log start where it has none (the worker resets to the earliest offset). Blocking (two
    admin requests at most); a partition the broker answers with an error is left out.
    Raises confluent_kafka.KafkaException when the brokers do not answer in time."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import OffsetSpec

    request = ConsumerGroupTopicPartitions(group, [TopicPartition(t, p) for t, p in keys])
    [future] = admin.list_consumer_group_offsets([request], request_timeout=timeout_s).values()
    found, never = {}, []
    for tp in future.result(timeout=timeout_s).topic_partitions:
        if tp.error is not None:
            continue
        if tp.offset >= 0:
            found[(tp.topic, tp.partition)] = tp.offset
        else:  # OFFSET_INVALID: the group never committed here
            never.append(TopicPartition(tp.topic, tp.partition))
    if never:
        earliest = admin.list_offsets({tp: OffsetSpec.earliest() for tp in never},
                                      request_timeout=timeout_s)
        for tp, result in earliest.items():
            found[(tp.topic, tp.partition)] = result.result(timeout=timeout_s).offset
    return found


# --- binding them to an app ------------------------------------------------------------------

@dataclass
class Timer:
    """One registered timer: Faust calls `run_once` every `interval_s` (so can a test)."""

    name: str
    interval_s: float
    tick: Callable[[], Awaitable[None]]
    guard: TaskGuard

    async def run_once(self) -> bool:
        """One guarded tick; True when it succeeded."""
        return await self.guard.run(self.tick)


def register(app, ctx: WorkerContext) -> dict[str, Timer]:
    """Start the timers with `app`; returns them by name."""
    timers: dict[str, Timer] = {}
    admin: list = []  # one AdminClient for topic discovery and lag, made on first use

    def every(interval_s: float, name: str, tick: Callable[[], Awaitable[None]]) -> None:
        timer = timers[name] = Timer(name, interval_s, tick,
                                     TaskGuard(name, ctx.metrics.task_failures, interval_s))

        async def run():
            await timer.run_once()

        app.timer(interval=interval_s, name=f"meterwatch.{name}")(run)

    def assigned() -> set[tuple[str, int]]:
        return {(tp.topic, tp.partition) for tp in app.consumer.assignment()}

    def run_blocking(fun):
        return asyncio.get_running_loop().run_in_executor(None, fun)

    def admin_client():
        if not admin:
            from confluent_kafka.admin import AdminClient

            admin.append(AdminClient(ctx.kafka.confluent_config()))
        return admin[0]

    def poll_admin() -> None:
        if admin:
            admin[0].poll(0)  # hands librdkafka's queued log lines to the logger

    def list_inputs() -> list[str]:
        try:
            return matching_topics(ctx.kafka, ctx.worker, admin_client())
        finally:
            poll_admin()

    async def silence_tick():
        await check_silence(ctx, assigned(), time.time(),
                            settling=bool(app.in_recovery or app.rebalancing))

    async def discover_tick():
        if ctx.worker.input_topic:
            return
        new = new_topics(ctx, await run_blocking(list_inputs))
        if new:
            log.info("new input topics: %s", new)
            subscribe_new_topics(app, ctx.source, new)

    async def reload_tick():
        await reload_bundle(ctx, run_blocking)

    def committed(keys: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        try:
            return group_offsets(admin_client(), app.conf.id, keys)
        finally:
            poll_admin()

    async def lag_tick():
        await report_lag(ctx, app.consumer.assignment(), app.consumer.highwater,
                         lambda keys: run_blocking(lambda: committed(keys)))

    every(SILENCE_CHECK_S, "check_silence", silence_tick)
    every(TOPIC_REFRESH_S, "discover_topics", discover_tick)
    every(RELOAD_S, "reload_bundle", reload_tick)
    every(LAG_S, "report_lag", lag_tick)
    return timers
