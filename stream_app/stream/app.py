"""The Faust app: topics, the per-meter table and two thin agents around StreamScorer.

    input topics (regex `meter\\..+`, or one keyed topic)
        -> ingest: decode + validate each event; bad ones -> dead-letter topic with the reason
        -> internal topic, partitioned by meter_id (co-partitioned with the table): one
           message per internal partition per ingest batch (stream_app/stream/rekey.py)
        -> score: batches (size and time bound) -> StreamScorer -> table + alerts topic

Faust acks an event whose agent raised, so no exception may escape an agent: a batch that fails
is retried reading by reading, and a reading that still fails goes to the dead-letter topic with
`internal_error` as its reason. Nothing is dropped silently.
"""

from __future__ import annotations

import json
import logging
import time
import weakref
from collections import deque
from importlib import resources

import faust

from stream_app.core.errors import InputError
from stream_app.core.records import Reading, Rejected, decode_reading
from stream_app.core.scoring import Detector
from stream_app.core.stream_scoring import StreamScorer
from stream_app.stream.dead_letters import dead_letter_bytes
from stream_app.stream.exactly_once import one_transaction_per_worker
from stream_app.stream.feedback import decode_feedback
from stream_app.stream.metrics import WorkerMetrics
from stream_app.stream.rekey import SOURCE, Group, Item, internal_partition
from stream_app.stream.rekey import items as items_of
from stream_app.stream.reload import BundleWatcher
from stream_app.stream.settings import KafkaSettings, WorkerSettings
from stream_app.stream.silence import SilenceTracker, silence_alert

log = logging.getLogger("meterwatch.worker")

STATE_TABLE = "meter-state"
TOPIC_REFRESH_S = 10.0  # how soon a new per-meter topic is picked up
RELOAD_S = 2.0  # how often the bundle folder is checked for a new bundle
RECENT_ALERTS = 500  # alert messages the live page can show (memory only)
SILENCE_CHECK_S = 1.0  # how often silent meters are looked for


def _tansu_fetch_wait() -> None:
    """Tansu answers a fetch only after half the client's max wait (Faust hard-codes 1500 ms):
    lower it so latency is not 1 s+. Applied only when the backend is Tansu."""
    from faust.transport.drivers import aiokafka as driver

    original = driver.AIOKafkaConsumerThread._create_worker_consumer

    def create(self, transport):
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = 100
        return consumer

    driver.AIOKafkaConsumerThread._create_worker_consumer = create


def matching_topics(kafka: KafkaSettings, worker: WorkerSettings) -> list[str]:
    """Input topics that exist now: the single input topic, or those matching the pattern."""
    if worker.input_topic:
        return [worker.input_topic]
    from confluent_kafka.admin import AdminClient

    names = AdminClient(kafka.confluent_config()).list_topics(timeout=10).topics
    return sorted(n for n in names if worker.input_regex.fullmatch(n))


def create_app(kafka: KafkaSettings, worker: WorkerSettings, detector: Detector,
               input_topics: list[str], metrics: WorkerMetrics | None = None,
               registry=None) -> faust.App:
    """`input_topics`: the inputs that exist at start; new pattern matches join while running
    (Faust's own `pattern=` subscription does not work, so the worker polls the topic list)."""
    metrics = metrics or WorkerMetrics()
    if kafka.is_tansu:
        _tansu_fetch_wait()
    if worker.processing_guarantee == "exactly_once":
        one_transaction_per_worker()
    app = faust.App(
        worker.app_id,
        **kafka.faust_kwargs(),
        store=worker.store,
        topic_partitions=worker.partitions,
        processing_guarantee=worker.processing_guarantee,
        web_port=worker.web_port,
        web_host="0.0.0.0",
        web_in_thread=False,
        broker_session_timeout=worker.session_timeout_s,
        broker_heartbeat_interval=worker.session_timeout_s / 6,
        broker_rebalance_timeout=max(worker.session_timeout_s, 10.0),
        stream_recovery_delay=0.1,
        consumer_metadata_max_age_ms=5000,  # new per-meter topics join within seconds
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
    )
    source = app.topic(*input_topics, key_serializer="raw", value_serializer="raw")
    app.topics._resubscribe_sleep_lock_seconds = 1.0  # Faust waits 45 s before resubscribing
    readings = app.topic(worker.readings_topic, partitions=worker.partitions, internal=True,
                         key_serializer="raw", value_serializer="raw")
    alerts = app.topic(worker.alerts_topic, key_serializer="raw", value_serializer="raw")
    dlq = app.topic(worker.dlq_topic, key_serializer="raw", value_serializer="raw")
    # keys and values are bytes (JSON we encode ourselves): the changelog stores them raw
    table = app.Table(STATE_TABLE, default=None, partitions=worker.partitions,
                      key_type=bytes, value_type=bytes)
    scorer = StreamScorer(detector, registry=registry)
    last_offsets: dict = {}
    # live page (GET / and /api/...) and silent meters: memory only, this worker's meters
    recent_alerts: deque = deque(maxlen=RECENT_ALERTS)  # newest first
    silence = SilenceTracker(worker.silence_factor)
    meter_partition: dict[str, tuple] = {}  # meter -> (topic, partition) its readings come on

    async def dead_letter(raw, reason, message, detail=""):
        metrics.invalid.labels(reason.reason if isinstance(reason, Rejected)
                               else reason.partition(":")[0]).inc()
        await dlq.send(key=message.key, value=dead_letter_bytes(
            raw, reason, message.topic, message.partition, message.offset, message.key,
            detail=detail))

    @app.agent(source)
    async def ingest(stream):
        async for events in stream.take_events(worker.batch_size, within=worker.batch_max_wait_s):
            groups: dict[int, Group] = {}  # internal partition -> its readings
            for event in events:
                message = event.message
                metrics.readings_in.inc()
                try:
                    result = decode_reading(event.value, key=message.key,
                                            max_bytes=worker.max_message_bytes)
                except Exception as exc:  # noqa: BLE001 (a decoder bug must not lose the event)
                    result = Rejected("internal_error", repr(exc))
                if isinstance(result, Rejected):
                    await dead_letter(event.value, result, message)
                    continue
                partition = internal_partition(result.meter_id, worker.partitions)
                groups.setdefault(partition, Group()).add(result, message)
            for partition, group in groups.items():
                await readings.send(key=None, partition=partition, value=group.value(),
                                    timestamp=group.timestamp(), headers={SOURCE: group.header()})

    async def apply(items: list[Item], batch: list[Reading]) -> None:
        meters = {r.meter_id for r in batch}
        states = {m: table.get(m.encode()) for m in meters}
        result = scorer.process(batch, states, positions=[i.position for i in items])
        last_event = {r.meter_id: i.event for r, i in zip(batch, items, strict=True)}
        for meter, state in result.states.items():
            with _current(last_event[meter]):
                table[meter.encode()] = state
        for index, reason in result.refused:
            await dead_letter(items[index].raw, reason, items[index].event.message)
        now = time.time()
        for alert in result.alerts:
            await alerts.send(key=alert.meter_id.encode(), value=alert.to_json())
            metrics.alerts.labels(alert.category, alert.severity, alert.status).inc()
            recent_alerts.appendleft(alert.to_dict())
        for item in items:
            metrics.latency.observe(max(0.0, now - item.arrived))
        for outcome, count in result.outcomes.items():
            metrics.outcomes.labels(outcome).inc(count)
        metrics.score_seconds.observe(result.score_seconds)
        if result.outcomes.get("scored"):
            metrics.inference_seconds.observe(scorer.timings["inference"])
            metrics.dtw_seconds.observe(scorer.timings["dtw"])

    @app.agent(readings)
    async def score(stream):
        async for events in stream.take_events(worker.batch_size, within=worker.batch_max_wait_s):
            items, batch = [], []
            for event in events:
                last_offsets[(event.message.topic, event.message.partition)] = event.message.offset
                for item in items_of(event):
                    try:
                        batch.append(Reading.from_json(item.raw))
                    except InputError as exc:  # only our own bytes come here: a bug, not a loss
                        await dead_letter(item.raw, f"internal_error:{exc}"[:200], event.message)
                        continue
                    items.append(item)
            for start in range(0, len(batch), worker.batch_size):
                end = start + worker.batch_size
                await score_chunk(items[start:end], batch[start:end])

    async def score_chunk(items: list[Item], batch: list[Reading]) -> None:
        metrics.batch_size.observe(len(batch))
        await observe_arrivals(items, batch)
        try:
            await apply(items, batch)
        except Exception:
            log.exception("batch of %d failed; retrying reading by reading", len(batch))
            for item, reading in zip(items, batch, strict=True):
                try:
                    await apply([item], [reading])
                except Exception as exc:  # noqa: BLE001 (one bad reading must not stop the batch)
                    await dead_letter(item.raw, f"internal_error:{exc!r}"[:200],
                                      item.event.message)

    async def send_silence(meter, event) -> None:
        alert = silence_alert(meter, event, bundle_version=scorer.bundle.version,
                              produced_ms=int(time.time() * 1000))
        await alerts.send(key=meter.encode(), value=alert.to_json())
        metrics.alerts.labels(alert.category, alert.severity, alert.status).inc()
        recent_alerts.appendleft(alert.to_dict())

    async def observe_arrivals(items: list[Item], batch: list[Reading]) -> None:
        """Arrival times and partitions for silent meters; never stops scoring."""
        try:
            now = time.time()
            for item, r in zip(items, batch, strict=True):
                meter_partition[r.meter_id] = (item.event.message.topic,
                                               item.event.message.partition)
                back = silence.seen(r.meter_id, now, r.interval_s, ts_ms=r.ts,
                                    category=r.category, site=r.site, company=r.company)
                if back is not None:
                    await send_silence(r.meter_id, back)
        except Exception:
            log.exception("silence / live page bookkeeping failed for a batch")

    @app.timer(interval=SILENCE_CHECK_S)
    async def check_silence():
        """Meters of this worker's partitions that stopped reporting (stream_app/stream/silence.py).
        An empty assignment is a rebalance in progress: judge nothing until it settles."""
        assigned = {(tp.topic, tp.partition) for tp in app.consumer.assignment()}
        if not assigned:
            return
        lost = [m for m, tp in meter_partition.items() if tp not in assigned]
        silence.forget(lost)
        for meter in lost:
            meter_partition.pop(meter, None)
        for meter, event in silence.check(time.time()):
            await send_silence(meter, event)

    @app.timer(interval=TOPIC_REFRESH_S)
    async def discover_topics():
        if worker.input_topic:
            return
        found = await app.loop.run_in_executor(None, matching_topics, kafka, worker)
        new = [name for name in found if name not in source.topics]
        if new:
            log.info("new input topics: %s", new)
            source.topics.extend(new)
            app.topics._flag_changes()

    feedback = app.topic(worker.feedback_topic, key_serializer="raw", value_serializer="raw")

    @app.agent(feedback)
    async def record_feedback(stream):
        """Operators' verdicts: counted here, kept in the topic for `meterwatch recalibrate`."""
        async for event in stream.events():
            message = event.message
            try:
                verdict = decode_feedback(event.value)
            except InputError as exc:
                metrics.feedback.labels("invalid").inc()
                await dlq.send(key=message.key, value=dead_letter_bytes(
                    event.value, f"bad_feedback: {exc}", message.topic, message.partition,
                    message.offset, message.key))
                continue
            metrics.feedback.labels(verdict.verdict).inc()
            log.info("feedback on %s: %s by %s", verdict.alert_id, verdict.verdict, verdict.who)

    watcher = BundleWatcher(worker.model_dir, worker.onnx_providers)

    @app.timer(interval=RELOAD_S)
    async def reload_bundle():
        # verified off the event loop; switched between two batches (scoring is synchronous)
        if registry is not None:
            switched = await app.loop.run_in_executor(None, registry.refresh)
            metrics.bundle_reloads.inc(len(switched))
            return
        fresh = await app.loop.run_in_executor(None, watcher.poll)
        if fresh is not None:
            scorer.switch(fresh)
            metrics.bundle_reloads.inc()

    @app.timer(interval=5.0)
    async def report_lag():
        consumer = app.consumer
        for (topic, partition), offset in list(last_offsets.items()):
            tp = next((tp for tp in consumer.assignment()
                       if tp.topic == topic and tp.partition == partition), None)
            if tp is None:
                last_offsets.pop((topic, partition))
                continue
            high = consumer.highwater(tp)
            if high is not None:
                metrics.consumer_lag.labels(topic, str(partition)).set(max(0, high - offset - 1))
        metrics.meters.set(len(table))

    @app.page("/metrics")
    async def metrics_page(web, request):
        return web.bytes(metrics.render(), content_type="text/plain; version=0.0.4")

    @app.page("/health")
    async def health(web, request):
        return web.json({
            "status": "ok",
            "bundle": scorer.bundle.version,
            "bundle_manifest_sha256": watcher.digest,
            "bundle_reloads": watcher.reloads,
            "registry": registry.versions() if registry is not None else None,
            "provider": scorer.detector.reconstructor.active_provider,
            "assigned": sorted(f"{tp.topic}:{tp.partition}" for tp in app.consumer.assignment()),
            "broker_kind": kafka.broker_kind,
        })

    @app.page("/")
    async def alerts_page(web, request):
        return web.html(_web_file("index.html"))

    @app.page("/web/app.js")
    async def alerts_script(web, request):
        return web.bytes(_web_file("app.js").encode(), content_type="text/javascript")

    @app.page("/api/alerts")
    async def alerts_json(web, request):
        return web.json({"alerts": list(recent_alerts), "bundle": scorer.bundle.version,
                         "silent_meters": silence.silent_meters()})

    @app.page("/api/readings")
    async def readings_json(web, request):
        meter = request.query.get("meter", "")
        raw = table.get(meter.encode()) if meter else None
        return web.json({"meter_id": meter, "readings": _kept_readings(raw)})

    app.meterwatch = {"metrics": metrics, "scorer": scorer, "table": table,
                      "topics": {"alerts": alerts, "dlq": dlq, "readings": readings}}
    return app


def _kept_readings(raw: bytes | None) -> list[list]:
    """[epoch ms, kWh] of the history a meter's state keeps (its last max_window readings, gaps
    filled): the live page draws an alert's window over them without a second copy in memory."""
    if not raw:
        return []
    state = json.loads(raw)
    history, step = state["h"], state["iv"]
    n = len(history["values"])
    return [[(history["last_ts"] - (n - 1 - i) * step) * 1000, v]
            for i, v in enumerate(history["values"])]


def _web_file(name: str) -> str:
    """A file of the live alert page (package data: stream_app/stream/web/)."""
    return (resources.files("stream_app.stream") / "web" / name).read_text(encoding="utf-8")


class _current:
    """Make `event` Faust's current event, so a table write goes to its changelog partition."""

    def __init__(self, event):
        self.event = event

    def __enter__(self):
        from faust.streams import _current_event

        self.token = _current_event.set(weakref.ref(self.event))

    def __exit__(self, *exc):
        from faust.streams import _current_event

        _current_event.reset(self.token)

