"""Reading -> alert latency at a fixed rate, one worker on a real broker.

    python -m benchmarks.latency [--quick] [--rate 2000] [--broker kafka|tansu] [--no-write]

M simulated meters (with injected anomalies) in their per-meter topics, the shipped bundle:

1. warm-up, not measured: each meter's first 192 readings (the bundle's warm-up) are produced at
   once and processed;
2. measured: the following readings are produced at a steady `--rate` readings/s, in time
   order (a reading of every meter per step), for S seconds.

Latency of an alert (open or update) = when this process consumed it from the alert topic -
when it produced the reading that raised it (the alert's `window_end`): the whole path, one
clock. Beside it, the worker's own histogram of every measured reading's Kafka timestamp to
the end of its batch. Quick: 100 meters, 20 s; full: 200 meters, 60 s. The last line is
`latency_p99_ms: <alerts' p99>` (target <= 1,000 ms at 2,000 readings/s).
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np

from benchmarks.report import arguments, header, machine, publish
from stream_app.brokers import create_topics, free_port, start_broker, stop_process
from stream_app.demo import (
    AlertLog,
    follow_alerts,
    metric_total,
    produce_paced,
    start_worker,
    wait_for_worker,
    worker_metrics,
)
from stream_app.simulator import simulate_with_events

BUNDLE = Path(__file__).resolve().parents[1] / "onnx_models" / "default"
WARMUP = 192
HISTOGRAM = "meterwatch_end_to_end_latency_seconds_bucket"


def _buckets(text: str) -> dict[float, float]:
    """Cumulative counts of the worker's latency histogram by upper bound (seconds)."""
    out = {}
    for line in text.splitlines():
        m = re.match(HISTOGRAM + r'\{le="([^"]+)"\} (\S+)$', line)
        if m:
            out[float(m.group(1))] = float(m.group(2))
    return out


def _bucket_quantile(before: dict, after: dict, q: float) -> float:
    """The upper bound of the bucket holding quantile q of the readings between two scrapes."""
    counts = {le: after[le] - before.get(le, 0.0) for le in sorted(after)}
    total = counts[float("inf")]
    for le, n in counts.items():
        if n >= q * total:
            return le
    return float("inf")


def _sums(text: str) -> dict[str, float]:
    """Running sums of the worker's batch histograms (readings per batch, seconds per batch)."""
    names = ("batch_size_sum", "batch_size_count", "score_seconds_sum", "inference_seconds_sum")
    return {n: metric_total(text, f"meterwatch_{n}") for n in names}


def _processed(port: int) -> float:
    try:
        return metric_total(worker_metrics(port), "meterwatch_readings_outcome_total")
    except OSError:  # a busy worker may answer late: ask again
        return 0.0


def _wait(port: int, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _processed(port) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the worker did not process {n} readings in {timeout:.0f} s")
        time.sleep(0.3)


def main(argv: list[str] | None = None) -> None:
    parser = arguments(__doc__, "100 meters for 20 s instead of 200 for 60 s")
    parser.add_argument("--rate", type=float, default=2000.0, help="readings/s (default 2000)")
    parser.add_argument("--broker", choices=("kafka", "tansu"), default="kafka")
    parser.add_argument("--partitions", type=int, default=1,
                        help="partitions per meter topic (default 1: one meter, one ordered log)")
    args = parser.parse_args(argv)
    meters, seconds = (100, 20) if args.quick else (200, 60)
    steps = int(args.rate * seconds / meters)
    series, _ = simulate_with_events("metal", meters, -(-(WARMUP + steps) // 96) + 2, seed=13,
                                     anomalies_per_meter=2.0)
    for s in series:
        s.meter_id = f"lat-{os.getpid()}-{s.meter_id}"
    cut = [(replace(s, timestamps=s.timestamps[:WARMUP], values=s.values[:WARMUP], labels=None),
            replace(s, timestamps=s.timestamps[WARMUP:WARMUP + steps],
                    values=s.values[WARMUP:WARMUP + steps], labels=None)) for s in series]
    topics = {s.meter_id: f"meter.{s.meter_id}" for s in series}
    alerts_topic = f"lat-{os.getpid()}-alerts"
    log = Path(tempfile.gettempdir()) / f"meterwatch-latency-{os.getpid()}.log"
    broker = start_broker(args.broker)
    worker, stop, alert_log = None, threading.Event(), AlertLog()
    try:
        create_topics(broker.bootstrap, list(topics.values()), args.partitions)
        create_topics(broker.bootstrap, [alerts_topic], 4)
        port = free_port()
        worker = start_worker(broker.bootstrap, broker.kind, BUNDLE, f"lat-{os.getpid()}", port,
                              log, {"MW_ALERTS_TOPIC": alerts_topic,
                                    "MW_INPUT_PATTERN": rf"meter\.lat-{os.getpid()}-.+"})
        wait_for_worker(worker, port, log, timeout=180)
        produce_paced(broker.bootstrap, [w for w, _ in cut], topics, float("inf"), False)
        _wait(port, meters * WARMUP, 300)
        text = worker_metrics(port)
        before, sums_before = _buckets(text), _sums(text)
        follower = threading.Thread(target=follow_alerts, daemon=True,
                                    args=(broker.bootstrap, alerts_topic, alert_log, stop, False))
        follower.start()
        time.sleep(1.0)  # the follower has its partitions
        started = time.perf_counter()
        sent_at = produce_paced(broker.bootstrap, [m for _, m in cut], topics, args.rate, False)
        achieved = len(sent_at) / (time.perf_counter() - started)
        _wait(port, meters * (WARMUP + steps), 300)
        sustained = len(sent_at) / (time.perf_counter() - started)  # produced -> all processed
        time.sleep(1.0)
        text = worker_metrics(port)
        after, sums = _buckets(text), _sums(text)
        busy = time.perf_counter() - started
    finally:
        stop.set()
        if worker is not None:
            stop_process(worker)
        broker.stop()
    latencies = []
    with alert_log.lock:
        for alert, received in zip(alert_log.alerts, alert_log.received, strict=True):
            end_ms = int(datetime.fromisoformat(alert["window_end"]).timestamp() * 1000)
            sent = sent_at.get((alert["meter_id"], end_ms))
            if sent is not None and alert["status"] in ("open", "update"):
                latencies.append((received - sent) * 1000)
    lat = np.array(latencies) if latencies else np.array([np.nan])
    p50, p99 = np.percentile(lat, 50), np.percentile(lat, 99)
    sums = {k: v - sums_before[k] for k, v in sums.items()}
    mean_batch = sums["batch_size_sum"] / max(sums["batch_size_count"], 1)
    top = max(le for le in after if le != float("inf")) * 1000
    r50, r99 = (_bucket_quantile(before, after, q) * 1000 for q in (0.5, 0.99))
    r50, r99 = (f"<= {r:,.0f}" if r <= top else f"> {top:,.0f}" for r in (r50, r99))
    lines = [header(f"Reading -> alert latency at {args.rate:,.0f} readings/s on {args.broker}",
                    args.quick), "",
             (f"{machine()}, shared. {meters} meters in per-meter topics ({args.partitions} partition(s) each), one worker (shipped "
              f"bundle, windows 96/24/16 x 2 models, batch wait 50 ms); {len(sent_at):,} "
              f"readings produced at {achieved:,.0f}/s for {seconds} s after the warm-up; the "
              f"worker had processed them all at an average {sustained:,.0f}/s (from the first "
              f"produced to the last processed), in batches of {mean_batch:,.0f} readings on "
              f"average; scoring took {sums['score_seconds_sum'] / busy:.0%} of that wall time "
              f"(ONNX inference {sums['inference_seconds_sum'] / busy:.0%}). The broker, the "
              "producer and the alert consumer share the machine's cores with the worker."), "",
             "| measure | p50 ms | p99 ms | samples |", "|---|---:|---:|---:|",
             f"| reading produced -> alert consumed | {p50:,.0f} | {p99:,.0f} | {len(latencies)} |",
             (f"| reading in Kafka -> its batch done (worker histogram, bucket bound) | {r50} | {r99} "
              f"| {len(sent_at):,} |"), "",
             (f"Target p99 <= 1,000 ms at 2,000 readings/s: "
              f"{'met' if p99 <= 1000 else 'missed'} (p99 {p99:,.0f} ms)." if args.rate == 2000
              else f"(The target, p99 <= 1,000 ms, is set at 2,000 readings/s; this run is at "
                   f"{args.rate:,.0f}/s.)"), ""]
    publish(lines, not args.no_write)
    print(f"latency_p99_ms: {p99:.0f}")


if __name__ == "__main__":
    main()
