"""Sustained load: 200 meters at a steady 300 readings/s for MW_SOAK_S seconds (default 60).

Every 5 s the worker's RSS, its consumer lag (meterwatch_consumer_lag) and its reading-to-scored
latency histogram (meterwatch_reading_to_scored_seconds) are sampled and printed. Assertions:
after the warm-up (the first third) RSS grows by at most RSS_GROWTH_MIB, the lag over the second
half does not grow (the worker keeps up), every reading gets a fate once the producer stops, and
the accounting equation holds.
The 10-minute run: `MW_SOAK_S=600 pytest -m soak -s`; with MW_SOAK_REPORT=1 a passing run also
appends its figures to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time

import pytest
from test_faults import assert_accounted, wait_accounted, worker_counters
from test_worker_kafka import Run, metric

from stream_app.core.records import encode_reading
from stream_app.devtools.demo import worker_metrics
from stream_app.stream.topics import create_topics

pytestmark = [pytest.mark.soak, pytest.mark.kafka, pytest.mark.slow]

METERS = 200
RATE = 300  # readings per second
SAMPLE_S = 5.0
RSS_GROWTH_MIB = 80.0  # after warm-up; per-meter history is bounded, so RSS should plateau
STEP_MS = 900_000
CATEGORIES = ("industrial", "general", "late_night", "agricultural")


def soak_seconds() -> float:
    return float(os.environ.get("MW_SOAK_S", "60"))


def rss_mib(pid: int) -> float:
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except ImportError:
        with open(f"/proc/{pid}/status") as status:
            line = next(x for x in status if x.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024


def latency_quantiles(port: int, qs=(0.5, 0.99)) -> dict:
    """Quantiles (upper bucket bound) of the worker's reading-to-scored latency histogram."""
    text = worker_metrics(port)
    buckets = sorted((float(m.group(1)), float(m.group(2))) for m in re.finditer(
        r'^meterwatch_reading_to_scored_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.MULTILINE))
    total = buckets[-1][1] if buckets else 0.0
    return {q: next((le for le, n in buckets if total and n >= q * total), math.nan) for q in qs}


class SteadyProducer(threading.Thread):
    """RATE readings/s round-robin over METERS meters, each a daily cycle in 15-minute steps."""

    def __init__(self, run: Run, topic: str, seconds: float):
        super().__init__(daemon=True)
        self.run_, self.topic, self.seconds = run, topic, seconds
        steps = int(RATE * seconds / METERS) + 2
        self.t0 = (int(time.time() * 1000) // STEP_MS - steps - 96) * STEP_MS
        self.sent = 0

    def run(self):
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": self.run_.broker.bootstrap, "linger.ms": 5})
        tick, started = 0.1, time.monotonic()
        per_tick = int(RATE * tick)
        while time.monotonic() - started < self.seconds:
            for _ in range(per_tick):
                meter, step = self.sent % METERS, self.sent // METERS
                value = 50 + 20 * math.sin(2 * math.pi * step / 96) + (meter % 7)
                key, raw = encode_reading(f"soak-{meter:03d}", self.t0 + step * STEP_MS, value,
                                          CATEGORIES[meter % 4])
                producer.produce(self.topic, key=key, value=raw)
                self.sent += 1
            producer.poll(0)
            time.sleep(max(0.0, started + (self.sent / RATE) - time.monotonic()))
        assert producer.flush(30) == 0


def report(seconds: float, sent: int, samples: list, growth: float, counters: dict) -> None:
    """The run's figures as a section of docs/BENCHMARKS.md (samples: about 12 of them)."""
    from benchmarks.report import header, machine, publish

    every = max(1, len(samples) // 12)
    rss = [s[1] for s in samples]
    lags = [s[2] for s in samples if s[0] >= seconds / 2]
    lines = [header(f"Soak: {METERS} meters at {RATE} readings/s for {seconds:.0f} s on kafka",
                    False), "",
             (f"{machine()}, shared. One worker (a small two-window bundle), one input topic of "
              f"4 partitions; {sent:,} readings sent at a steady rate, worker sampled every "
              f"{SAMPLE_S:.0f} s. Every reading accounted for: read {counters['in']:,.0f} = "
              f"dead-lettered {sum(counters['invalid'].values()):,.0f} + outcomes "
              + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(counters["outcome"].items()))
              + "."), "",
             "| t s | RSS MiB | consumer lag | latency p50 s (bucket) | p99 s (bucket) | processed |",
             "|---:|---:|---:|---:|---:|---:|",
             *(f"| {t:.0f} | {r:.1f} | {lag:.0f} | {p50:.3f} | {p99:.3f} | {done:,.0f} |"
               for t, r, lag, p50, p99, done in samples[::every]), "",
             (f"RSS {min(rss):.1f} -> {max(rss):.1f} MiB; growth after the first third "
              f"{growth:.1f} MiB (bound {RSS_GROWTH_MIB:.0f} MiB); consumer lag over the second "
              f"half {min(lags):.0f}-{max(lags):.0f} records; worst p99 bucket "
              f"{max(s[4] for s in samples):.3f} s."), ""]
    publish(lines, True)


def test_steady_load(kafka_broker, tiny_bundle, tmp_path, unique_name):
    seconds = soak_seconds()
    name = unique_name("mw").replace("_", "-")
    run = Run(kafka_broker, tiny_bundle.path, tmp_path, name)
    topic = f"{name}-in"
    run.use_single_topic(topic)
    try:
        create_topics(kafka_broker.bootstrap, [topic], 4)
        proc, port = run.start_worker()
        producer = SteadyProducer(run, topic, seconds)
        producer.start()
        samples, started = [], time.monotonic()
        while producer.is_alive():
            time.sleep(SAMPLE_S)
            lat = latency_quantiles(port)
            samples.append((time.monotonic() - started, rss_mib(proc.pid),
                            metric(port, "meterwatch_consumer_lag"), lat[0.5], lat[0.99],
                            metric(port, "meterwatch_readings_outcome_total")))
        producer.join()
        print(f"\nsoak {seconds:.0f} s, {METERS} meters, {RATE}/s target, "
              f"{producer.sent / seconds:.0f}/s sent")
        print("   t_s  rss_MiB   lag  p50_s  p99_s  processed")
        for t, rss, lag, p50, p99, done in samples:
            print(f"{t:6.0f} {rss:8.1f} {lag:5.0f} {p50:6.3f} {p99:6.3f} {done:10.0f}")
        wait_accounted(port, producer.sent, 60, "the last readings after the producer stopped")
        assert proc.poll() is None
        counters = worker_counters(port)
        assert_accounted([counters], producer.sent)
        warm = [s for s in samples if s[0] >= seconds / 3]
        growth = max(s[1] for s in warm) - warm[0][1]
        half = [s[2] for s in samples if s[0] >= seconds / 2]
        print(f"RSS growth after warm-up: {growth:.1f} MiB (bound {RSS_GROWTH_MIB}); lag over "
              f"the second half: {half}")
        assert growth <= RSS_GROWTH_MIB
        assert half[-1] <= max(2 * RATE, 1.5 * half[0]), "the worker falls behind"
        if os.environ.get("MW_SOAK_REPORT"):
            report(seconds, producer.sent, samples, growth, counters)
    finally:
        run.stop()
