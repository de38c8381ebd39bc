"""The stream worker end to end on a broker, as a fraction of its inference-only ceiling.

    python -m benchmarks.worker_e2e [--quick] [--broker tansu|kafka] [--no-write]

One worker (the shipped bundle, one ONNX thread) consumes N readings of 20 simulated meters
already waiting in their per-meter topics (backfill), every reading scored on every window and
model. Measured in the same run:
- worker: readings/s from its first processed reading to its last (from /metrics);
- inference ceiling: the same number of rows through only the ONNX calls the scorer makes,
  in batches of the worker's batch size, in this process on one thread;
- raw consume: confluent-kafka reading the same topics (assign, no group), as context.
The last line is `worker_fraction_of_inference_ceiling: <worker / ceiling>` (target >= 0.7).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from benchmarks.report import cpu_name, header, publish
from stream_app.core.model_bundle import Bundle
from stream_app.core.records import encode_reading
from stream_app.core.scoring import Detector
from stream_app.devtools.brokers import free_port, start_broker, stop_process
from stream_app.devtools.demo import metric_total, start_worker, wait_for_worker, worker_metrics
from stream_app.devtools.simulator import simulate
from stream_app.stream.topics import create_topics

BUNDLE = Path(__file__).resolve().parents[1] / "onnx_models" / "default"
TARGET = 0.70
BATCH = 256
METERS = 20


def _processed(port: int) -> float:
    return metric_total(worker_metrics(port), "meterwatch_readings_outcome_total")


def _produce(bootstrap: str, series, days: int) -> tuple[dict, int]:
    topics = {s.meter_id: f"meter.{s.meter_id}" for s in series}
    create_topics(bootstrap, list(topics.values()), 4)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    n = 0
    for i in range(len(series[0].values)):
        for s in series:
            key, value = encode_reading(s.meter_id, int(s.timestamps[i]) * 1000,
                                        float(s.values[i]), s.category)
            producer.produce(topics[s.meter_id], key=key, value=value)
            n += 1
            if n % 2000 == 0:
                producer.poll(0)
    producer.flush(60)
    return topics, n


def _time_split(text: str, elapsed: float) -> dict:
    """Where the worker's time went, from its own histograms: ONNX inference, the rest of
    scoring (DTW, forest, state, alerts), and everything else (Faust, Kafka clients, JSON)."""
    def total(name: str) -> float:
        return metric_total(text, name)

    inference = total("meterwatch_inference_seconds_sum")
    scoring = total("meterwatch_score_seconds_sum")
    return {"inference": inference / elapsed, "scoring": (scoring - inference) / elapsed,
            "rest": 1 - scoring / elapsed,
            "batch": total("meterwatch_batch_size_sum") / max(1.0, total("meterwatch_batch_size_count"))}


def _raw_consume(bootstrap: str, topics: list[str], n: int) -> float:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"raw-{time.time_ns()}",
                         "enable.auto.commit": False})
    parts = [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in range(4)]
    consumer.assign(parts)
    got, started = 0, time.perf_counter()
    while got < n and time.perf_counter() - started < 60:
        got += len(consumer.consume(1000, timeout=0.5))
    consumer.close()
    return got / (time.perf_counter() - started)


def _ceiling(n: int) -> float:
    detector = Detector(Bundle.load(BUNDLE), threads=1)
    rows = np.random.default_rng(0).normal(size=(n, detector.bundle.max_window))
    windows = [detector.trailing_windows(rows[k:k + BATCH]) for k in range(0, n, BATCH)]
    started = time.perf_counter()
    for chunk in windows:
        for w, x in chunk.items():
            for model in detector.bundle.models:
                detector.reconstructor.reconstruct(model, w, x)
    return n / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--broker", choices=("tansu", "kafka"), default="tansu")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    days = 7 if args.quick else 21
    series = simulate("metal", METERS, days, seed=3)
    for s in series:
        s.meter_id = f"bench-{s.meter_id}"
    broker = start_broker(args.broker)
    worker = None
    try:
        topics, n = _produce(broker.bootstrap, series, days)
        raw = _raw_consume(broker.bootstrap, list(topics.values()), n)
        port = free_port()
        log = Path(tempfile.gettempdir()) / f"meterwatch-bench-{os.getpid()}.log"
        worker = start_worker(broker.bootstrap, broker.kind, BUNDLE, f"bench-{os.getpid()}",
                              port, log, {"MW_BATCH_SIZE": str(BATCH)})
        wait_for_worker(worker, port, log)
        first = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            done = _processed(port)
            if first is None and done > 0:
                first = (time.perf_counter(), done)
            if done >= n:
                break
            time.sleep(0.2)
        elapsed = time.perf_counter() - first[0]
        rate = (done - first[1]) / elapsed
        split = _time_split(worker_metrics(port), elapsed)
    finally:
        if worker is not None:
            stop_process(worker)
        broker.stop()
    ceiling = _ceiling(min(n, 8192))
    about = (f"`{cpu_name()}`, {os.cpu_count()} logical CPUs, shared; {n} readings of "
             f"{METERS} meters waiting in their topics; bundle windows 96/24/16 x 2 models; "
             f"batch {BATCH}. Ratios are from one run.")
    lines = [header(f"Worker end to end on {args.broker}, one worker", args.quick), "", about, "",
             "| measure | readings/s |", "|---|---:|",
             f"| raw confluent-kafka consume | {raw:,.0f} |",
             f"| inference-only ceiling (this process, 1 thread) | {ceiling:,.0f} |",
             f"| worker, every reading scored | {rate:,.0f} |",
             f"| worker / ceiling | {rate / ceiling:.2f} |", "",
             (f"Worker time (its own histograms): ONNX inference {split['inference']:.0%}, "
              f"the rest of scoring {split['scoring']:.0%}, Faust + Kafka clients + decoding "
              f"{split['rest']:.0%}; mean scoring batch {split['batch']:.0f} readings."), "",
             (f"Target worker / ceiling >= {TARGET:.2f} (Kafka + Faust + state <= 30 %): "
              + ("met." if rate / ceiling >= TARGET else
                 f"missed: everything but ONNX inference (the rest of scoring and the Faust + "
                 f"Kafka path, one Python thread) takes {1 - split['inference']:.0%} of the "
                 "worker's time.")), ""]
    publish(lines, not args.no_write)
    print(f"worker_fraction_of_inference_ceiling: {rate / ceiling:.2f}")


if __name__ == "__main__":
    main()
