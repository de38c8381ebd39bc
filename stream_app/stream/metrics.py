"""Prometheus metrics of a worker, served at /metrics on its web port.

Accounting rule, for every run: readings_in = scored + warming_up + dead_lettered + duplicates
(+ late_applied); the counters below are named so that this equation can be checked.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TIME_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.readings_in = Counter("meterwatch_readings_in", "Events read from input topics",
                                   registry=r)
        self.invalid = Counter("meterwatch_readings_invalid", "Events sent to the dead-letter topic",
                               ["reason"], registry=r)
        self.outcomes = Counter("meterwatch_readings_outcome",
                                "Readings by what became of them in the meter's state",
                                ["outcome"], registry=r)
        self.alerts = Counter("meterwatch_alerts_out", "Alerts produced",
                              ["category", "severity", "status"], registry=r)
        self.batch_size = Histogram("meterwatch_batch_size", "Readings per scoring batch",
                                    buckets=(1, 4, 16, 32, 64, 128, 256, 512, 1024, 4096),
                                    registry=r)
        self.inference_seconds = Histogram("meterwatch_inference_seconds",
                                           "ONNX Runtime time per batch", buckets=TIME_BUCKETS,
                                           registry=r)
        self.dtw_seconds = Histogram("meterwatch_dtw_seconds", "DTW time per batch",
                                     buckets=TIME_BUCKETS, registry=r)
        self.score_seconds = Histogram("meterwatch_score_seconds",
                                       "Whole scoring time per batch", buckets=TIME_BUCKETS,
                                       registry=r)
        self.latency = Histogram("meterwatch_end_to_end_latency_seconds",
                                 "From the reading's arrival in Kafka to its alert being sent",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.consumer_lag = Gauge("meterwatch_consumer_lag", "Records behind the end of the topic",
                                  ["topic", "partition"], registry=r)
        self.feedback = Counter("meterwatch_feedback", "Operator verdicts received",
                                ["verdict"], registry=r)
        self.bundle_reloads = Counter("meterwatch_bundle_reloads",
                                      "Times a new verified bundle was switched to", registry=r)
        self.meters = Gauge("meterwatch_meters", "Meters with state on this worker", registry=r)
        self.bundle_info = Gauge("meterwatch_bundle_info",
                                 "1 for each model bundle serving (registry name or the bundle's "
                                 "own, and its version)", ["name", "version"], registry=r)
        self.task_failures = Counter("meterwatch_task_failures",
                                     "Runs of a timer or background task that failed (retried at "
                                     "its next tick)", ["task"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
