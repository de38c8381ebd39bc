"""What the worker's agents, timers and pages share, as one explicit object.

A worker holds, besides Faust's own machinery: the scorer (bundle + per-meter logic), the
per-meter state table, the topics it writes to, its metrics, and memory-only maps: the recent
alerts for the live page (bounded), the last offset per partition (one entry a partition), and
two per meter of its partitions, silence timing (silence.py) and which partition each meter
comes on (retention.MeterPartitions). Both per-meter maps, and the table, forget a meter that
moves away, that the cap refuses, or that is silent longer than MW_METER_TTL_S (retention.py).
The agents (agents.py), timers (timers.py) and pages (pages.py) are module-level functions over
this object; a test builds one with in-memory channels as outputs.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from stream_app.core.alerts import Alert
from stream_app.core.records import Rejected
from stream_app.core.stream_scoring import StreamScorer
from stream_app.stream.dead_letters import dead_letter_bytes
from stream_app.stream.guard import TaskGuard
from stream_app.stream.metrics import WorkerMetrics
from stream_app.stream.reload import BundleWatcher
from stream_app.stream.retention import MeterPartitions, Retention
from stream_app.stream.settings import KafkaSettings, WorkerSettings
from stream_app.stream.silence import GroupEvent, SilenceEvent, SilenceTracker, silence_alert

RECENT_ALERTS = 500  # alert messages the live page can show (memory only)


@dataclass
class Outputs:
    """Where a worker writes: Faust topics in a worker, in-memory channels in agent tests.
    Each has Faust's `send(key=, value=, partition=, timestamp=, headers=)`."""

    readings: Any  # the internal topic, re-keyed by meter (rekey.py)
    alerts: Any
    dlq: Any


@dataclass
class WorkerContext:
    """One worker's shared state; built once by `create_app` (app.py)."""

    kafka: KafkaSettings
    worker: WorkerSettings
    scorer: StreamScorer
    table: Any  # Faust Table: meter id (bytes) -> encoded meter state (bytes)
    outputs: Outputs
    source: Any  # the input topic; its list of topic names grows while running (timers.py)
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    registry: Any = None  # stream_app.stream.registry.Registry, or None: one bundle folder
    watcher: BundleWatcher | None = None
    recent_alerts: deque = field(default_factory=lambda: deque(maxlen=RECENT_ALERTS))
    meter_partition: MeterPartitions = field(default_factory=MeterPartitions)
    last_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    silence: SilenceTracker = field(init=False)
    retention: Retention = field(init=False)
    # background work done alongside the agents (not a timer): its failures, counted
    bookkeeping: TaskGuard = field(init=False)

    def __post_init__(self) -> None:
        worker = self.worker
        self.silence = SilenceTracker(worker.silence_factor, group_min=worker.silence_group_min,
                                      ttl_s=worker.meter_ttl_s)
        self.retention = Retention(self.table, self.silence, self.meter_partition,
                                   topic=worker.readings_topic, partitions=worker.partitions,
                                   ttl_s=worker.meter_ttl_s, max_meters=worker.max_meters,
                                   metrics=self.metrics)
        self.bookkeeping = TaskGuard("silence_bookkeeping", self.metrics.task_failures)
        if self.watcher is None:
            self.watcher = BundleWatcher(self.worker.model_dir, self.worker.onnx_providers)
        self.report_bundles()

    def report_bundles(self) -> None:
        """meterwatch_bundle_info: the bundles serving now (after a start or a reload)."""
        if self.registry is not None:
            serving = {name: d.bundle.manifest.version
                       for name, d in self.registry.detectors.items()}
        else:
            serving = {self.scorer.bundle.manifest.name: self.scorer.bundle.manifest.version}
        self.metrics.bundle_info.clear()
        for name, version in serving.items():
            self.metrics.bundle_info.labels(name, version).set(1)

    async def dead_letter(self, raw, reason: Rejected | str, message, detail: str = ""):
        """Count the refusal and send the dead letter: original bytes (or the hop's Original),
        key, source position (of `message`, or of a reading's rekey.Source after the hop).
        Returns the broker's acknowledgement to await."""
        self.metrics.invalid.labels(reason.reason if isinstance(reason, Rejected)
                                    else reason.partition(":")[0]).inc()
        return await self.outputs.dlq.send(key=message.key, value=dead_letter_bytes(
            raw, reason, message.topic, message.partition, message.offset, message.key,
            detail=detail))

    async def send_alert(self, alert: Alert):
        """Send an alert, count it, and keep it for the live page (newest first). Returns the
        broker's acknowledgement to await."""
        sent = await self.outputs.alerts.send(key=alert.meter_id.encode(), value=alert.to_json())
        self.metrics.alerts.labels(alert.category, alert.severity, alert.status).inc()
        self.recent_alerts.appendleft(alert.to_dict())
        return sent

    async def refuse_beyond_cap(self, items: list, batch: list, states: dict) -> tuple[list, list]:
        """The readings of new meters (no state in `states`) beyond MW_MAX_METERS go to the
        dead-letter topic as `meter_cap`, acknowledged by the broker before the batch goes on
        (as apply's own dead letters); returns the items and readings that stay."""
        new = dict.fromkeys(r.meter_id for r in batch if states.get(r.meter_id) is None)
        refused = self.retention.admit(new)  # in the order they came
        if not refused:
            return items, batch
        kept_items, kept, sent = [], [], []
        for item, reading in zip(items, batch, strict=True):
            if reading.meter_id in refused:
                sent.append(await self.dead_letter(
                    item.original, "meter_cap", item.source,
                    detail=f"{reading.meter_id}: a new meter beyond "
                           f"MW_MAX_METERS={self.worker.max_meters}"))
            else:
                kept_items.append(item)
                kept.append(reading)
        await asyncio.gather(*sent)
        return kept_items, kept

    async def send_silence(self, meter: str, event: SilenceEvent | GroupEvent) -> None:
        """The alert of a meter (or, for a GroupEvent, a group of meters) that went silent,
        reports again or was forgotten after the TTL (silence.py)."""
        await self.send_alert(silence_alert(meter, event, bundle_version=self.scorer.bundle.version,
                                            produced_ms=int(time.time() * 1000)))
