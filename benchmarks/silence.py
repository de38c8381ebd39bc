"""The silence check at 100,000 meters, and memory that comes back after the TTL.

    python -m benchmarks.silence [--quick] [--broker kafka|none] [--no-write]

1. In this process, the worker's own parts: an app as `create_app` builds it (memory:// table),
   its score agent under Faust's `test_context()` (readings re-keyed as ingest writes them) and
   the silence timer `timers.check_silence`, driven with a wall clock moved on instead of
   waited for. N meters (100,000; 20,000 with --quick) in 100 sites: one reading each; then
   the ticks: none due; all N silent at once (the issue's case: 20,000 meter_silent alerts in
   27 s and a 6.7 s tick), DUE_PER_CHECK decided a tick; 60 ticks with all N silent and
   alerted; the TTL passed (a live meter 31 days on) until every one is evicted,
   EVICT_PER_TICK a tick. Each tick's wall time, the alert messages.
2. On a real broker (--broker kafka, the default): a worker process (MW_SILENCE_FACTOR=1,
   MW_METER_TTL_S=60, readings every 10 s) gets waves of 20,000 made-up meter ids, one reading
   each, which go silent; then one reading of a live meter 10 minutes later in stream time
   evicts them. Its resident set size (VmRSS) after each wave and each eviction, its silence
   tick histogram, the alerts on the topic and the tombstones on the table's changelog.

The machine's speed at the time is printed first (`sum(range(10**7))`, ~0.15 s on an idle
core): figures from a loaded machine are that many times slower than on an idle one.
The last line is `silence_tick_max_ms: <value>` (part 1, the worst tick at N meters without a
full garbage collection of the process inside it; those are counted apart).
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import orjson

from benchmarks.report import arguments, header, machine, publish
from stream_app.core.model_bundle import Bundle
from stream_app.core.records import Reading, encode_reading
from stream_app.core.scoring import Detector
from stream_app.stream.retention import EVICT_PER_TICK
from stream_app.stream.silence import DUE_PER_CHECK

BUNDLE = Path(__file__).resolve().parents[1] / "onnx_models" / "default"
T0 = 1_736_121_600_000  # the readings' stream time, ms
DAY_MS = 86_400_000
SITES = 100
WAVE = 20_000  # made-up meter ids per wave on the broker: the figure


class _GcClock:
    """Full (generation 2) collections of the process heap and the time they took, as
    gc.callbacks reports them: a pause of everything the process runs, which lands in a tick
    only when it falls there."""

    def __init__(self) -> None:
        self.full, self.seconds, self.longest, self._started = 0, 0.0, 0.0, 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        self.full, self.seconds, self.longest = (self.full + 1, self.seconds + took,
                                                 max(self.longest, took))


GC = _GcClock()


def cpu_seconds() -> float:
    started = time.perf_counter()
    sum(range(10**7))
    return time.perf_counter() - started


# --- 1. in this process ------------------------------------------------------------------------

@dataclass
class _Source:
    """Where a reading came from, as ingest's rekey.Group reads it off a Kafka message."""

    topic: str
    partition: int
    offset: int
    timestamp: float
    key: bytes


def _internal_messages(readings: list[Reading], first_offset: int, size: int = 1000):
    from stream_app.stream.rekey import Group

    for start in range(0, len(readings), size):
        group = Group()
        for k, reading in enumerate(readings[start:start + size]):
            source = _Source("meter.bench", 0, first_offset + start + k, time.time(),
                             reading.meter_id.encode())
            group.add(reading, source, reading.to_json())
        yield group.value(), group.headers()


async def _in_process(meters: int) -> dict:
    from stream_app.stream.app import create_app
    from stream_app.stream.context import Outputs
    from stream_app.stream.settings import KafkaSettings, WorkerSettings
    from stream_app.stream.timers import check_silence

    data = Path(tempfile.mkdtemp(prefix="mw-silence-"))
    app = create_app(KafkaSettings(), WorkerSettings(data_dir=data, batch_max_wait_s=0.05),
                     Detector(Bundle.load(BUNDLE)), ["meter.bench"])
    ctx = app.meterwatch
    ctx.outputs = Outputs(readings=app.channel(), alerts=app.channel(), dlq=app.channel())
    alerts = ctx.outputs.alerts.clone(is_iterator=True)
    assigned = {(ctx.worker.readings_topic, p) for p in range(ctx.worker.partitions)}
    readings = [Reading(f"bench-{i:06d}", T0, 1.0, "industrial", site=f"site-{i % SITES:03d}",
                        company="bench") for i in range(meters)]
    out: dict = {"meters": meters}

    def outcomes() -> float:
        return sum(s.value for s in ctx.metrics.outcomes.collect()[0].samples
                   if s.name.endswith("_total"))

    async def drain() -> list[dict]:
        got = []
        while True:
            try:
                got.append(orjson.loads((await alerts.get(timeout=0.2)).value))
            except TimeoutError:
                return got

    async def ticks(now: float, n: int | None = None, until=None) -> list[tuple[float, int]]:
        """(wall time, full collections inside) of each tick."""
        times: list[tuple[float, int]] = []
        while (n is not None and len(times) < n) or (until is not None and not until()):
            started, full = time.perf_counter(), GC.full
            await check_silence(ctx, assigned, now + len(times))
            times.append((time.perf_counter() - started, GC.full - full))
        return times

    async with app.meterwatch_agents["score"].test_context() as agent:
        started = time.perf_counter()
        for value, headers in _internal_messages(readings, 0):
            await agent.put(value, headers=headers)
        while outcomes() < meters:
            await asyncio.sleep(0.05)
        out["ingest_s"] = time.perf_counter() - started
        arrived = time.time()
        out["none_due"] = await ticks(arrived + 1, 20)
        deadline = arrived + 4 * 900 + 1  # MW_SILENCE_FACTOR 4 x the 900 s interval
        out["going_silent"] = await ticks(deadline,
                                          until=lambda: ctx.silence.silent_count >= meters)
        out["silent_alerts"] = await drain()
        out["silent_and_alerted"] = await ticks(deadline + 100, 60)
        examined = ctx.silence.examined
        live = [Reading("live", T0 + 31 * DAY_MS, 1.0, "industrial", site="live")]
        for value, headers in _internal_messages(live, meters):
            await agent.put(value, headers=headers)
        while outcomes() < meters + 1:
            await asyncio.sleep(0.05)
        out["evicting"] = await ticks(time.time(), until=lambda: len(ctx.table) <= 1)
        out["evict_alerts"] = await drain()
    out.update(examined_silent=examined, table=len(ctx.table), tracker=len(ctx.silence),
               partition_map=len(ctx.meter_partition), heaps=ctx.silence.heap_sizes(),
               evicted=ctx.metrics.meters_evicted._value.get())
    return out


# --- 2. a worker on a real broker --------------------------------------------------------------

def _on_broker(kind: str, waves: int) -> dict:
    from confluent_kafka import Consumer, Producer, TopicPartition

    from benchmarks.memory import rss_kib
    from stream_app.devtools.brokers import free_port, start_broker, stop_process
    from stream_app.devtools.demo import (
        metric_total,
        start_worker,
        wait_for_metric,
        wait_for_worker,
        worker_metrics,
    )
    from stream_app.stream.app import STATE_TABLE
    from stream_app.stream.topics import create_topics

    tag = f"sil{os.getpid()}"
    log = Path(tempfile.gettempdir()) / f"meterwatch-{tag}.log"
    topic, partitions = f"{tag}-in", 4
    broker = start_broker(kind)
    proc = None
    out: dict = {"waves": []}
    try:
        create_topics(broker.bootstrap, [topic], partitions)
        port = free_port()
        proc = start_worker(broker.bootstrap, broker.kind, BUNDLE, tag, port, log, {
            "MW_INPUT_TOPIC": topic, "MW_PARTITIONS": str(partitions),
            "MW_READINGS_TOPIC": f"{tag}-readings", "MW_ALERTS_TOPIC": f"{tag}-alerts",
            "MW_DLQ_TOPIC": f"{tag}-dlq", "MW_FEEDBACK_TOPIC": f"{tag}-feedback",
            "MW_SILENCE_FACTOR": "1", "MW_METER_TTL_S": "60"})
        wait_for_worker(proc, port, log, timeout=180)
        time.sleep(2)
        out["rss_started"] = rss_kib(proc.pid)
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20})
        now_ms = int(time.time() * 1000)
        for wave in range(waves):
            ts = now_ms - 3_600_000 + wave * 1_200_000  # each wave 20 minutes later
            for i in range(WAVE):
                key, value = encode_reading(f"{tag}-w{wave}-m{i:05d}", ts, 1.0, "industrial",
                                            site=f"made-up-{wave}", interval_s=10)
                producer.produce(topic, key=key, value=value)
                if i % 1000 == 0:
                    producer.poll(0)
            producer.flush(60)
            started = time.monotonic()
            wait_for_metric(port, "meterwatch_readings_outcome_total", (wave + 1) * WAVE + wave,
                            600)
            ingest_s = time.monotonic() - started
            wait_for_metric(port, "meterwatch_silent_meters", WAVE, 300)
            time.sleep(6)  # the meters gauge refreshes every 5 s
            text = worker_metrics(port)
            full = (rss_kib(proc.pid), metric_total(text, "meterwatch_meters "))
            key, value = encode_reading(f"{tag}-live", ts + 600_000, 1.0, "industrial",
                                        site="live", interval_s=10)  # 10 min on: > the TTL
            producer.produce(topic, key=key, value=value)
            producer.flush(60)
            started = time.monotonic()
            wait_for_metric(port, "meterwatch_meters_evicted_total", (wave + 1) * WAVE, 600)
            evict_s = time.monotonic() - started
            time.sleep(6)
            text = worker_metrics(port)
            out["waves"].append({"ingest_s": ingest_s, "rss_full": full[0], "meters_full": full[1],
                                 "evict_s": evict_s, "rss_evicted": rss_kib(proc.pid),
                                 "meters_evicted": metric_total(text, "meterwatch_meters ")})
        text = worker_metrics(port)
        buckets = [(float(line.split('le="')[1].split('"')[0]), float(line.rsplit(" ", 1)[1]))
                   for line in text.splitlines()
                   if line.startswith("meterwatch_silence_check_seconds_bucket")]
        count = metric_total(text, "meterwatch_silence_check_seconds_count")
        out["tick_count"] = count
        out["tick_mean_ms"] = 1000 * metric_total(text, "meterwatch_silence_check_seconds_sum") / count
        out["tick_max_bucket"] = min(le for le, n in buckets if n >= count)
        out["task_failures"] = metric_total(text, "meterwatch_task_failures_total")
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"{tag}-read",
                             "enable.auto.commit": False})

        def read_all(name: str) -> list:
            tps = [TopicPartition(name, p, 0) for p in range(partitions)]
            high = {p: consumer.get_watermark_offsets(TopicPartition(name, p), 10)[1]
                    for p in range(partitions)}
            consumer.assign(tps)
            got, done = [], {p for p, h in high.items() if h == 0}
            deadline = time.monotonic() + 120
            while len(done) < partitions and time.monotonic() < deadline:
                message = consumer.poll(1.0)
                if message is None or message.error():
                    continue
                got.append(message)
                if message.offset() + 1 >= high[message.partition()]:
                    done.add(message.partition())
            consumer.unassign()
            return got

        last = {}
        for message in read_all(f"{tag}-{STATE_TABLE}-changelog"):
            last[message.key()] = message.value()
        out["changelog_keys"] = len(last)
        out["tombstoned"] = sum(1 for v in last.values() if v is None)
        alerts = [orjson.loads(m.value()) for m in read_all(f"{tag}-alerts")]
        out["alerts"] = Counter((a["kind"], a["status"]) for a in alerts)
        consumer.close()
    finally:
        if proc is not None:
            stop_process(proc)
        broker.stop()
    return out


# --- the report --------------------------------------------------------------------------------

def _ms(ticks: list[tuple[float, int]]) -> str:
    if not ticks:
        return "-"
    own = [t for t, full in ticks if not full]
    with_gc = [t for t, full in ticks if full]
    text = (f"{len(ticks)} tick(s): median {1000 * statistics.median(t for t, _ in ticks):,.1f} "
            f"ms, max {1000 * max(own or [0.0]):,.1f} ms")
    if with_gc:
        text += (f"; {len(with_gc)} with a full collection inside: max "
                 f"{1000 * max(with_gc):,.0f} ms")
    return text


def main(argv: list[str] | None = None) -> None:
    parser = arguments(__doc__, "20,000 meters in process instead of 100,000; 2 waves, not 3")
    parser.add_argument("--broker", choices=("kafka", "tansu", "none"), default="kafka")
    parser.add_argument("--waves", type=int, default=None,
                        help="waves of made-up meters on the broker (default 3, --quick 2)")
    args = parser.parse_args(argv)
    meters = 20_000 if args.quick else 100_000
    speed = cpu_seconds()
    gc.callbacks.append(GC)
    a = asyncio.run(_in_process(meters))
    kinds = Counter((x["kind"], x["status"]) for x in a["silent_alerts"])
    evict_kinds = Counter((x["kind"], x["status"]) for x in a["evict_alerts"])
    every = a["none_due"] + a["going_silent"] + a["silent_and_alerted"] + a["evicting"]
    worst = max(t for t, full in every if not full)
    worst_gc = max((t for t, full in every if full), default=0.0)
    lines = [header(f"Silence check and meter eviction at {meters:,} meters", args.quick), "",
             (f"{machine()}, shared: `sum(range(10**7))` took {speed:.2f} s at the start (~0.15 s "
              "on an idle core). Part 1 in this process: the worker's app (memory:// table), its "
              "score agent under `test_context()` and its silence timer `check_silence`, the "
              f"wall clock moved on instead of waited for; {meters:,} meters in {SITES} sites, "
              f"one reading each (ingested in {a['ingest_s']:.1f} s)."), "",
             "| ticks | wall time per tick |", "|---|---|",
             f"| {meters:,} meters timed, none due | {_ms(a['none_due'])} |",
             f"| all {meters:,} silent at once ({DUE_PER_CHECK:,} decided a tick) | "
             f"{_ms(a['going_silent'])} |",
             f"| all silent and alerted | {_ms(a['silent_and_alerted'])} |",
             f"| TTL passed: evicting ({EVICT_PER_TICK:,} a tick) | {_ms(a['evicting'])} |", "",
             (f"Alert messages when they went silent: {sum(kinds.values())} "
              f"({', '.join(f'{k} {s} {n}' for (k, s), n in sorted(kinds.items()))}) for "
              f"{meters:,} silent meters (before: one meter_silent each). While all were silent "
              f"and alerted a tick looked at {a['examined_silent']} deadline entries. Evicting: "
              f"{sum(evict_kinds.values())} messages "
              f"({', '.join(f'{k} {s} {n}' for (k, s), n in sorted(evict_kinds.items()))}); "
              f"{a['evicted']:,.0f} evicted; after: table {a['table']}, silence tracker "
              f"{a['tracker']}, partition map {a['partition_map']}, heap entries {a['heaps']} "
              f"(the live meter). Worst tick {1000 * worst:,.0f} ms: "
              f"{'under' if worst < 1.0 else 'over'} the 1 s tick. The process made "
              f"{GC.full} full garbage collections in all ({GC.seconds:.1f} s, the longest "
              f"{GC.longest:.2f} s): a pause of the whole process wherever it falls, "
              f"{sum(1 for _, full in every if full)} of the {len(every)} ticks had one inside "
              f"(worst {1000 * worst_gc:,.0f} ms). Here Faust's producer buffer also keeps every "
              "changelog message, with no broker to send them to."), ""]
    if args.broker != "none":
        waves = args.waves or (2 if args.quick else 3)
        b = _on_broker(args.broker, waves)
        lines += [(f"Part 2, a worker process on {args.broker} (MW_SILENCE_FACTOR=1, "
                   f"MW_METER_TTL_S=60, readings every 10 s): {waves} waves of {WAVE:,} made-up "
                   "meter ids, one reading each, left silent, then evicted by one reading of a "
                   "live meter 10 minutes on in stream time."), "",
                  "| wave | ingested in s | RSS MiB, silent | meters | evicted in s | "
                  "RSS MiB, evicted | meters |", "|---:|---:|---:|---:|---:|---:|---:|",
                  f"| start | | {b['rss_started'] / 1024:,.1f} | 0 | | | |"]
        for k, w in enumerate(b["waves"], 1):
            lines.append(f"| {k} | {w['ingest_s']:.1f} | {w['rss_full'] / 1024:,.1f} | "
                         f"{w['meters_full']:,.0f} | {w['evict_s']:.1f} | "
                         f"{w['rss_evicted'] / 1024:,.1f} | {w['meters_evicted']:,.0f} |")
        first, rest = b["waves"][0], b["waves"][1:]
        growth = [(w["rss_evicted"] - first["rss_evicted"]) / 1024 for w in rest]
        alerts = b["alerts"]
        lines += ["", (f"{waves * WAVE:,} meters through, {b['tombstoned']:,} of the "
                       f"changelog's {b['changelog_keys']:,} keys end in a tombstone; alerts: "
                       f"{', '.join(f'{k} {s} {n}' for (k, s), n in sorted(alerts.items()))}. "
                       f"Silence ticks: {b['tick_count']:,.0f}, mean {b['tick_mean_ms']:.1f} ms, "
                       f"every one <= {b['tick_max_bucket']:g} s (histogram bucket); "
                       f"{b['task_failures']:.0f} task failures. RSS after each later wave's "
                       "eviction vs after the first's: "
                       f"{', '.join(f'{g:+.1f} MiB' for g in growth) or '-'} (the memory a "
                       "wave took is used again by the next, not added)."), ""]
    publish(lines, not args.no_write)
    print(f"silence_tick_max_ms: {1000 * worst:.1f}")


if __name__ == "__main__":
    main()
