"""Worker memory per 10,000 meters of state, on a real broker.

    python -m benchmarks.memory [--quick] [--broker kafka|tansu] [--no-write]

Two workers with the shipped bundle, measured by their resident set size (VmRSS):

- A: no meters in its state; it scores as many readings (of one meter) as B does below, at the
  same steady rate (1,000/s), so both went through the same start-up, JIT compilation and
  scoring batches;
- B: its state table holds N meters with full histories when it starts (N copies of a real
  meter's state, written to the table's changelog beforehand, as a restarted worker finds them);
  it restores them, then scores one reading of every meter at 1,000/s (each is `scored`, not
  warming up: proof that the state was restored and is the real thing).

Memory per meter = (RSS of B - RSS of A) / N, also before B's readings (the table alone). N is
10,000 (--quick) or 30,000. The last line is `worker_kib_per_meter: <value>` (target <= 4 KB,
i.e. 3.9 KiB).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from confluent_kafka import Producer

from benchmarks.report import arguments, header, machine, publish
from stream_app.core.meter_state import MeterState
from stream_app.core.model_bundle import Bundle
from stream_app.core.records import Reading, encode_reading
from stream_app.core.scoring import Detector
from stream_app.core.stream_scoring import StreamScorer
from stream_app.devtools.brokers import free_port, start_broker, stop_process
from stream_app.devtools.demo import (
    metric_total,
    start_worker,
    wait_for_metric,
    wait_for_worker,
    worker_metrics,
)
from stream_app.devtools.simulator import simulate
from stream_app.stream.app import STATE_TABLE
from stream_app.stream.topics import create_topics

BUNDLE = Path(__file__).resolve().parents[1] / "onnx_models" / "default"
PARTITIONS = 4
RATE = 1000.0  # readings/s of the scored readings (both workers): live operation


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _state(topic: str) -> tuple[bytes, int, float]:
    """A real meter's state after 300 readings (history full, alert state, source offsets),
    with the time and value of its next reading."""
    series = simulate("metal", 1, 4, seed=9)[0]
    readings = [Reading(series.meter_id, int(series.timestamps[i]) * 1000,
                        float(series.values[i]), series.category) for i in range(301)]
    scorer = StreamScorer(Detector(Bundle.load(BUNDLE), threads=1))
    result = scorer.process(readings[:300], {}, positions=[(f"{topic}:0", i) for i in range(300)])
    return result.states[series.meter_id], readings[300].ts, readings[300].value


def _produce(bootstrap: str, messages, rate: float | None = None) -> None:
    """At `rate` messages/s when given: live operation, not a burst whose buffers (fetched
    records, queued changelog writes and alerts) would set the worker's high-water mark."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                         "partitioner": "murmur2_random"})  # the partitioner Faust's client uses
    started = time.monotonic()
    for n, (topic, key, value) in enumerate(messages):
        producer.produce(topic, key=key, value=value)
        if n % 500 == 0:
            producer.poll(0)
            if rate and (ahead := n / rate - (time.monotonic() - started)) > 0:
                time.sleep(ahead)
    producer.flush(60)


def _worker(broker, app_id: str, topic: str, log: Path):
    port = free_port()
    proc = start_worker(broker.bootstrap, broker.kind, BUNDLE, app_id, port, log,
                        {"MW_INPUT_TOPIC": topic, "MW_PARTITIONS": str(PARTITIONS),
                         "MW_READINGS_TOPIC": f"{app_id}-readings",
                         "MW_ALERTS_TOPIC": f"{app_id}-alerts", "MW_DLQ_TOPIC": f"{app_id}-dlq",
                         "MW_FEEDBACK_TOPIC": f"{app_id}-feedback"})
    wait_for_worker(proc, port, log, timeout=180)
    return proc, port


def main(argv: list[str] | None = None) -> None:
    parser = arguments(__doc__, "10,000 meters instead of 30,000")
    parser.add_argument("--broker", choices=("kafka", "tansu"), default="kafka")
    args = parser.parse_args(argv)
    meters = 10_000 if args.quick else 30_000
    tag = f"mem{os.getpid()}"
    log = Path(tempfile.gettempdir()) / f"meterwatch-{tag}.log"
    state, next_ts, next_value = _state(f"{tag}-in")
    ids = [f"{tag}-m{i:06d}" for i in range(meters)]
    broker = start_broker(args.broker)
    procs = []
    try:
        topic_a, topic_b = f"{tag}-a-in", f"{tag}-b-in"
        create_topics(broker.bootstrap, [topic_a, topic_b], PARTITIONS)
        # A: one meter, as many readings as B scores
        series = simulate("metal", 1, -(-meters // 96) + 3, seed=9)[0]
        one = [(topic_a, *encode_reading(f"{tag}-solo", int(t) * 1000, float(v), "industrial"))
               for t, v in zip(series.timestamps[:meters + 192], series.values, strict=False)]
        proc_a, port_a = _worker(broker, f"{tag}-a", topic_a, log)
        procs.append(proc_a)
        time.sleep(2)
        rss_a_idle = rss_kib(proc_a.pid)
        _produce(broker.bootstrap, one, RATE)
        wait_for_metric(port_a, "meterwatch_readings_outcome_total", len(one), 300)
        time.sleep(2)
        rss_a = rss_kib(proc_a.pid)
        stop_process(proc_a)
        # B: N meters' state in the changelog before it starts
        changelog = f"{tag}-b-{STATE_TABLE}-changelog"
        create_topics(broker.bootstrap, [changelog], PARTITIONS, {"cleanup.policy": "compact"})
        _produce(broker.bootstrap, [(changelog, m.encode(), state) for m in ids])
        started = time.monotonic()
        proc_b, port_b = _worker(broker, f"{tag}-b", topic_b, log)
        procs.append(proc_b)
        wait_for_metric(port_b, "meterwatch_meters", meters, 300)
        restored = time.monotonic() - started
        time.sleep(2)
        rss_table = rss_kib(proc_b.pid)
        _produce(broker.bootstrap, [(topic_b, *encode_reading(m, next_ts, next_value,
                                                             "industrial")) for m in ids], RATE)
        wait_for_metric(port_b, "meterwatch_readings_outcome_total", meters, 300)
        time.sleep(2)
        rss_b = rss_kib(proc_b.pid)
        scored = metric_total(worker_metrics(port_b),
                              'meterwatch_readings_outcome_total{outcome="scored"}')
    finally:
        for proc in procs:
            stop_process(proc)
        broker.stop()
    if scored != meters:
        raise SystemExit(f"only {scored:.0f} of {meters} readings were scored: state not restored")
    per_meter = (rss_b - rss_a) / meters
    table_only = (rss_table - rss_a_idle) / meters
    hist = len(MeterState.from_bytes(state).history["values"])
    lines = [header(f"Worker memory per meter on {args.broker}", args.quick), "",
             (f"{machine()}. {meters:,} meters restored from the changelog (each a real meter's "
              f"state: {hist} readings of history, alert state, source offsets; {len(state):,} "
              f"bytes of JSON), in-memory table store; restored in {restored:.1f} s from the "
              "worker's start."), "",
             "| worker | RSS MiB |", "|---|---:|",
             f"| A: no meters, started | {rss_a_idle / 1024:,.1f} |",
             f"| A: after scoring {len(one):,} readings of one meter | {rss_a / 1024:,.1f} |",
             f"| B: {meters:,} meters restored, started | {rss_table / 1024:,.1f} |",
             f"| B: after one scored reading per meter | {rss_b / 1024:,.1f} |", "",
             (f"Per meter: {table_only:.2f} KiB for the restored table (B vs A, both started), "
              f"**{per_meter:.2f} KiB** once every meter has been scored (B vs A, both after "
              f"scoring the same number of readings) ({per_meter * 10_000 / 1024:.0f} MiB per "
              f"10,000 meters). Target <= 4 KB per meter: "
              f"{'met' if per_meter * 1024 <= 4000 else 'missed'}."), ""]
    publish(lines, not args.no_write)
    print(f"worker_kib_per_meter: {per_meter:.2f}")


if __name__ == "__main__":
    main()
