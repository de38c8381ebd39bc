"""What the worker's agents, timers and pages share, as one explicit object.

A worker holds, besides Faust's own machinery: the scorer (bundle + per-meter logic), the
per-meter state table, the topics it writes to, its metrics, and three memory-only maps of the
meters of its partitions (recent alerts for the live page, silence timing, which partition each
meter comes on). The agents (agents.py), timers (timers.py) and pages (pages.py) are module-level
functions over this object; a test builds one with in-memory channels as outputs.
"""

from __future__ import annotations

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
from stream_app.stream.settings import KafkaSettings, WorkerSettings
from stream_app.stream.silence import SilenceEvent, SilenceTracker, silence_alert

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
    meter_partition: dict[str, tuple[str, int]] = field(default_factory=dict)
    last_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    silence: SilenceTracker = field(init=False)
    # background work done alongside the agents (not a timer): its failures, counted
    bookkeeping: TaskGuard = field(init=False)

    def __post_init__(self) -> None:
        self.silence = SilenceTracker(self.worker.silence_factor)
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

    async def dead_letter(self, raw: bytes | None, reason: Rejected | str, message,
                          detail: str = "") -> None:
        """Count the refusal and send the dead letter: original bytes, key, source position."""
        self.metrics.invalid.labels(reason.reason if isinstance(reason, Rejected)
                                    else reason.partition(":")[0]).inc()
        await self.outputs.dlq.send(key=message.key, value=dead_letter_bytes(
            raw, reason, message.topic, message.partition, message.offset, message.key,
            detail=detail))

    async def send_alert(self, alert: Alert) -> None:
        """Send an alert, count it, and keep it for the live page (newest first)."""
        await self.outputs.alerts.send(key=alert.meter_id.encode(), value=alert.to_json())
        self.metrics.alerts.labels(alert.category, alert.severity, alert.status).inc()
        self.recent_alerts.appendleft(alert.to_dict())

    async def send_silence(self, meter: str, event: SilenceEvent) -> None:
        """The alert of a meter that went silent or reports again (silence.py)."""
        await self.send_alert(silence_alert(meter, event, bundle_version=self.scorer.bundle.version,
                                            produced_ms=int(time.time() * 1000)))
