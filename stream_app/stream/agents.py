"""The worker's three agents: thin loops over a `WorkerContext` (context.py).

    input topics -> ingest: decode + validate each event; a bad one -> dead-letter topic with
                    the reason; the rest re-keyed onto the internal topic, one message per
                    internal partition per batch, with each reading's source position, key
                    and original bytes (rekey.py)
    internal topic -> score: batches (size and time bound) -> StreamScorer -> alerts and dead
                    letters, acknowledged by the broker -> table
    feedback topic -> record_feedback: operators' verdicts counted (recalibrated offline)

Faust acks an event whose agent raised, so no exception may escape an agent: a batch that fails
is retried reading by reading, and a reading that still fails goes to the dead-letter topic with
`internal_error` as its reason. Nothing is dropped silently.

A batch's new meter states are written only once the broker has acknowledged the alerts and
dead letters they imply. A state records the source offsets it applied, so after a crash a
reading read again counts as a duplicate: had the state outlived an alert lost with the worker,
nothing would ever send that alert (docs/RELIABILITY.md, "No alert is lost on a crash").

Each agent is a module-level function `(ctx, stream)`; `register` binds them to an app's
topics. Tests run them with Faust's `agent.test_context()` and in-memory outputs
(tests/stream/test_agents.py).
"""

from __future__ import annotations

import asyncio
import logging
import time

from stream_app.core.errors import InputError
from stream_app.core.records import Reading, Rejected, decode_reading
from stream_app.stream.context import WorkerContext
from stream_app.stream.dead_letters import dead_letter_bytes
from stream_app.stream.feedback import decode_feedback
from stream_app.stream.patches import current_event
from stream_app.stream.rekey import Group, Item, internal_partition
from stream_app.stream.rekey import items as items_of

log = logging.getLogger("meterwatch.worker")


async def ingest(ctx: WorkerContext, stream) -> None:
    """Validate input events and re-key the valid readings by meter."""
    worker, metrics = ctx.worker, ctx.metrics
    async for events in stream.take_events(worker.batch_size, within=worker.batch_max_wait_s):
        groups: dict[int, Group] = {}  # internal partition -> its readings
        for event in events:
            message = event.message
            ctx.last_offsets[(message.topic, message.partition)] = message.offset
            metrics.readings_in.inc()
            try:
                result = decode_reading(event.value, key=message.key,
                                        max_bytes=worker.max_message_bytes)
            except Exception as exc:  # noqa: BLE001 (a decoder bug must not lose the event)
                result = Rejected("internal_error", repr(exc))
            if isinstance(result, Rejected):
                await ctx.dead_letter(event.value, result, message)
                continue
            partition = internal_partition(result.meter_id, worker.partitions)
            group = groups.setdefault(partition, Group())
            group.add(result, message, event.value)
            if group.full:
                await rekeyed(ctx, partition, groups.pop(partition))
        for partition, group in groups.items():
            await rekeyed(ctx, partition, group)


async def rekeyed(ctx: WorkerContext, partition: int, group: Group) -> None:
    await ctx.outputs.readings.send(key=None, partition=partition, value=group.value(),
                                    timestamp=group.timestamp(), headers=group.headers())


async def score(ctx: WorkerContext, stream) -> None:
    """Score the re-keyed readings in batches of at most MW_BATCH_SIZE."""
    batch_size = ctx.worker.batch_size
    async for events in stream.take_events(batch_size, within=ctx.worker.batch_max_wait_s):
        items, batch = [], []
        for event in events:
            ctx.last_offsets[(event.message.topic, event.message.partition)] = event.message.offset
            for item in items_of(event):
                try:
                    batch.append(Reading.from_json(item.raw))
                except InputError as exc:  # only our own bytes come here: a bug, not a loss
                    await ctx.dead_letter(item.original, f"internal_error:{exc}"[:200],
                                          item.source)
                    continue
                items.append(item)
        for start in range(0, len(batch), batch_size):
            end = start + batch_size
            await score_chunk(ctx, items[start:end], batch[start:end])


async def score_chunk(ctx: WorkerContext, items: list[Item], batch: list[Reading]) -> None:
    """One batch; when it fails, each reading alone (a reading that fails alone is dead-lettered)."""
    ctx.metrics.batch_size.observe(len(batch))
    await observe_arrivals(ctx, items, batch)
    try:
        await apply(ctx, items, batch)
    except Exception:
        log.exception("batch of %d failed; retrying reading by reading", len(batch))
        for item, reading in zip(items, batch, strict=True):
            try:
                await apply(ctx, [item], [reading])
            except Exception as exc:  # noqa: BLE001 (one bad reading must not stop the batch)
                await ctx.dead_letter(item.original, f"internal_error:{exc!r}"[:200], item.source)


async def apply(ctx: WorkerContext, items: list[Item], batch: list[Reading]) -> None:
    """Score a batch against the meters' states; send the refusals and alerts, and once the
    broker has acknowledged them, write the states (module docstring)."""
    metrics, table, scorer = ctx.metrics, ctx.table, ctx.scorer
    meters = {r.meter_id for r in batch}
    states = {m: table.get(m.encode()) for m in meters}
    items, batch = await ctx.refuse_beyond_cap(items, batch, states)  # MW_MAX_METERS
    result = scorer.process(batch, states, positions=[i.position for i in items])
    sent = [await ctx.dead_letter(items[index].original, reason, items[index].source)
            for index, reason in result.refused]
    now = time.time()
    for item in items:
        metrics.reading_to_scored.observe(max(0.0, now - item.arrived))
    for alert, index in zip(result.alerts, result.raised_by, strict=True):
        sent.append(await ctx.send_alert(alert))
        metrics.reading_to_alert.observe(max(0.0, time.time() - items[index].arrived))
    await asyncio.gather(*sent)  # acknowledged, or raised: then no state is written
    last_event = {r.meter_id: i.event for r, i in zip(batch, items, strict=True)}
    for meter, state in result.states.items():
        with current_event(last_event[meter]):
            table[meter.encode()] = state
    for outcome, count in result.outcomes.items():
        metrics.outcomes.labels(outcome).inc(count)
    metrics.score_seconds.observe(result.score_seconds)
    if result.outcomes.get("scored"):
        metrics.inference_seconds.observe(scorer.timings["inference"])
        metrics.dtw_seconds.observe(scorer.timings["dtw"])


async def observe_arrivals(ctx: WorkerContext, items: list[Item], batch: list[Reading]) -> None:
    """Arrival times and partitions for silent meters; never stops scoring (a failure is
    counted as the `silence_bookkeeping` task's, guard.py)."""

    async def observe():
        now = time.time()
        for item, r in zip(items, batch, strict=True):
            ctx.meter_partition[r.meter_id] = (item.event.message.topic,
                                               item.event.message.partition)
            back = ctx.silence.seen(r.meter_id, now, r.interval_s, ts_ms=r.ts,
                                    category=r.category, site=r.site, company=r.company)
            if back is not None:
                await ctx.send_silence(r.meter_id, back)

    await ctx.bookkeeping.run(observe)


async def record_feedback(ctx: WorkerContext, stream) -> None:
    """Operators' verdicts: counted here, kept in the topic for `meterwatch recalibrate`."""
    async for event in stream.events():
        message = event.message
        ctx.last_offsets[(message.topic, message.partition)] = message.offset
        try:
            verdict = decode_feedback(event.value)
        except InputError as exc:
            ctx.metrics.feedback.labels("invalid").inc()
            await ctx.outputs.dlq.send(key=message.key, value=dead_letter_bytes(
                event.value, f"bad_feedback: {exc}", message.topic, message.partition,
                message.offset, message.key))
            continue
        ctx.metrics.feedback.labels(verdict.verdict).inc()
        log.info("feedback on %s: %s by %s", verdict.alert_id, verdict.verdict, verdict.who)


def register(app, ctx: WorkerContext, feedback_topic) -> dict:
    """Bind the agents to `app`: ingest on the input topics, score on the internal topic,
    record_feedback on `feedback_topic`. Returns them by name (for `test_context()`)."""

    @app.agent(ctx.source, name="meterwatch.ingest")
    async def ingest_agent(stream):
        await ingest(ctx, stream)

    @app.agent(ctx.outputs.readings, name="meterwatch.score")
    async def score_agent(stream):
        await score(ctx, stream)

    @app.agent(feedback_topic, name="meterwatch.record_feedback")
    async def feedback_agent(stream):
        await record_feedback(ctx, stream)

    return {"ingest": ingest_agent, "score": score_agent, "record_feedback": feedback_agent}
