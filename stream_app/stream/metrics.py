"""Prometheus metrics of a worker, served at /metrics on its web port.

Accounting rule, for every run: readings_in = scored + warming_up + dead_lettered + duplicates
(+ late_applied); the counters below are named so that this equation can be checked.

Beside the worker's own: the process (`process_*`: CPU, resident memory, open files, start
time), platform (`python_info`) and garbage-collector (`python_gc_*`) collectors that
prometheus_client puts on its default registry, here on the worker's. No `*_created` series:
one per counter and histogram child, a timestamp no dashboard or rule of ours reads.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

# Process-wide switch of prometheus_client (what PROMETHEUS_DISABLE_CREATED_SERIES=true does),
# set here, where the worker's registry is defined, so that no entry point can forget it.
disable_created_metrics()

# Reading -> scored and -> alert sent: tens of milliseconds when caught up (docs/BENCHMARKS.md),
# seconds only when the worker falls behind; fine steps below one second, coarse above.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4,
                   0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0, 60.0)
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
        self.reading_to_scored = Histogram(
            "meterwatch_reading_to_scored_seconds",
            "From a reading's Kafka timestamp on its input topic to the end of the scoring batch "
            "that applied it; every reading the score agent took", buckets=LATENCY_BUCKETS,
            registry=r)
        self.reading_to_alert = Histogram(
            "meterwatch_reading_to_alert_seconds",
            "From the Kafka timestamp of the reading that raised an alert to that alert being "
            "handed to the producer; one per alert a reading raised (silence alerts, which no "
            "reading raises, are not counted)", buckets=LATENCY_BUCKETS, registry=r)
        self.consumer_lag = Gauge("meterwatch_consumer_lag",
                                  "Records behind the end of each partition this worker is "
                                  "assigned of the topics it consumes (input, internal, "
                                  "feedback)", ["topic", "partition"], registry=r)
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
        # bounded memory (retention.py, silence.py)
        self.meters_evicted = Counter("meterwatch_meters_evicted", "Meters whose state was deleted "
                                      "after MW_METER_TTL_S of silence", registry=r)
        self.meter_cap_reached = Gauge("meterwatch_meter_cap_reached", "1 while MW_MAX_METERS is "
                                       "reached: new meters' readings are dead-lettered "
                                       "(meter_cap)", registry=r)
        self.silent_meters = Gauge("meterwatch_silent_meters", "Meters silent now (alone or in a "
                                   "grouped alert)", registry=r)
        self.silence_check_seconds = Histogram("meterwatch_silence_check_seconds",
                                               "One silence-check tick (every 1 s)",
                                               buckets=TIME_BUCKETS, registry=r)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self._lagging: set[tuple[str, str]] = set()

    def set_lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        """The lag of every partition assigned now; a partition no longer assigned loses its
        series (else a partition that moved to another worker would count twice in a sum)."""
        now = {(topic, str(partition)) for topic, partition in lags}
        for labels in self._lagging - now:
            self.consumer_lag.remove(*labels)
        for (topic, partition), lag in lags.items():
            self.consumer_lag.labels(topic, str(partition)).set(lag)
        self._lagging = now

    def render(self) -> bytes:
        return generate_latest(self.registry)
