"""Replay recorded meter series into Kafka as reading events, in timestamp order.

Why a replay tool: history in a CSV (or a Green Button export) is the fastest way to feed a
worker real data — to backfill state, rehearse a deployment or reproduce an alert. Every reading
becomes one reading event (`records.encode_reading`, timestamp = epoch ms of the interval's end)
keyed by its meter id, so a keyed topic keeps each meter's readings on one partition in order.

Meters are interleaved by a heap merge on timestamp (ties: the order of `series`), so the broker
sees the fleet as it happened. Pacing, exactly one of:
- `rate`: readings per second, through a token bucket (bursts of at most a tenth of a second);
- `speed`: a multiple of real time measured on the series' own timestamps (96x plays a day of
  15-min readings in 15 minutes);
- `backfill`: as fast as the broker accepts (the producer's queue is the only brake).

Topics: one per meter from `topic_template` (default `meter.{meter_id}`, matched by the worker's
`meter\\..+` pattern) or one keyed topic (`single_topic`). Kafka topic names allow only
`[A-Za-z0-9._-]`: any other character of a meter id (`:` is legal in a meter id) becomes `_` in
the topic name. Two meters may then share a topic; that is harmless because the event's
`meter_id` is authoritative and the topic is only routing. Topics are created first (Apache
Kafka here runs with auto-creation off), `partitions` each.

Failures are never dropped in silence: every delivery report is counted, and `DeliveryError`
(carrying the stats) is raised at the end when any reading was not acknowledged. Ctrl-C stops
producing, flushes what was queued and returns stats with `interrupted=True`.

Over 300 lines: pacing, delivery accounting and the command belong together.
"""

from __future__ import annotations

import heapq
import math
import re
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from stream_app.core.errors import InputError, MeterwatchError
from stream_app.core.records import DEFAULT_INTERVAL_S, MAX_VALUE_KWH, encode_reading
from stream_app.stream.settings import KafkaSettings

# Tuned for throughput over latency: a replay has no reader waiting on a single reading.
PRODUCER_TUNING = {
    "linger.ms": 20,  # fill batches; 20 ms is invisible at replay time scales
    "batch.num.messages": 10_000,
    "batch.size": 1_000_000,  # ~5k readings of ~200 bytes per partition batch
    "queue.buffering.max.messages": 200_000,
    "queue.buffering.max.kbytes": 262_144,
    "acks": "all",
    "enable.idempotence": True,  # retries must not reorder or duplicate a meter's readings
}
FLUSH_TIMEOUT_S = 60.0
INTERRUPT_FLUSH_TIMEOUT_S = 10.0
BURST_S = 0.1  # the token bucket holds a tenth of a second of readings
_ILLEGAL_TOPIC_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
DEFAULT_TEMPLATE = "meter.{meter_id}"


@dataclass(frozen=True)
class ReplayStats:
    """What a replay did. `sent` counts acknowledged readings; `rate` is sent / seconds."""

    sent: int
    failed: int
    seconds: float
    rate: float
    interrupted: bool = False
    first_error: str | None = None


class DeliveryError(MeterwatchError):
    """Some readings were not acknowledged by the broker; `stats` says how many."""

    def __init__(self, stats: ReplayStats):
        self.stats = stats
        super().__init__(f"{stats.failed} reading(s) were not delivered ({stats.sent} were); "
                         f"first error: {stats.first_error}")


def topic_for(meter_id: str, template: str = DEFAULT_TEMPLATE) -> str:
    """The per-meter topic: illegal topic characters of the meter id replaced by `_`."""
    try:
        name = template.format(meter_id=_ILLEGAL_TOPIC_CHARS.sub("_", meter_id))
    except (KeyError, IndexError, ValueError) as exc:
        raise InputError(f"topic template {template!r} may use only {{meter_id}}: {exc}") from None
    if _TOPIC_NAME.fullmatch(name) is None or name in (".", ".."):
        raise InputError(f"topic {name!r} (from template {template!r}) is not a legal Kafka topic "
                         "name: 1..249 characters from [A-Za-z0-9._-]")
    return name


def replay(
    series: list,
    *,
    kafka: KafkaSettings,
    topic_template: str = DEFAULT_TEMPLATE,
    single_topic: str | None = None,
    rate: float | None = None,
    speed: float | None = None,
    backfill: bool = False,
    progress: bool = True,
    partitions: int = 4,
    create: bool = True,
) -> ReplayStats:
    """Produce every reading of `series` (MeterSeries) to Kafka; see the module docstring."""
    _check_pacing(rate, speed, backfill)
    if "{meter_id}" not in topic_template and single_topic is None:
        raise InputError(f"topic template {topic_template!r} must contain {{meter_id}}")
    if not series:
        raise InputError("nothing to replay: no meter series")
    _check_series(series)
    if single_topic is not None:
        if _TOPIC_NAME.fullmatch(single_topic) is None:
            raise InputError(f"topic {single_topic!r} is not a legal Kafka topic name")
        topics = [single_topic] * len(series)
    else:
        topics = [topic_for(s.meter_id, topic_template) for s in series]
    if create:
        from stream_app.stream.topics import create_topics

        create_topics(kafka.confluent_config(), sorted(set(topics)), partitions)
    return _produce_all(series, topics, kafka, rate, speed, progress)


def _check_pacing(rate, speed, backfill) -> None:
    chosen = [name for name, v in (("rate", rate), ("speed", speed), ("backfill", backfill or None))
              if v is not None]
    if len(chosen) != 1:
        raise InputError(f"choose exactly one of rate, speed or backfill (got {chosen or 'none'})")
    for name, value in (("rate", rate), ("speed", speed)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise InputError(f"{name} must be a positive number, got {value}")


def _check_series(series) -> None:
    """Refuse bad data before the first send, so a replay is never cut in half by it."""
    for s in series:
        values = s.values
        if len(values) and np.isnan(values).any():
            raise InputError(f"meter {s.meter_id!r}: missing (NaN) values cannot be replayed")
        if len(values) and (values.min() < 0 or not values.max() <= MAX_VALUE_KWH):
            raise InputError(f"meter {s.meter_id!r}: values must be finite, >= 0 and <= "
                             f"{MAX_VALUE_KWH:g} kWh")
        if len(s.timestamps):  # validates meter id, category and interval the consumer's way
            encode_reading(s.meter_id, int(s.timestamps[0]) * 1000, float(values[0]),
                           s.category, interval_s=_interval(s))


def _interval(s) -> int | None:
    return None if s.interval_s == DEFAULT_INTERVAL_S else int(s.interval_s)


def _merged(series):
    """(ts_s, series index, reading index) for every reading, in timestamp order."""
    def one(k, s):
        return ((int(ts), k, i) for i, ts in enumerate(s.timestamps.tolist()))
    return heapq.merge(*(one(k, s) for k, s in enumerate(series)))


class _TokenBucket:
    """`rate` tokens per second, at most `rate * BURST_S` (>= 1) saved up."""

    def __init__(self, rate: float):
        self.rate = rate
        self.capacity = max(1.0, rate * BURST_S)
        self.tokens = self.capacity
        self.last = time.perf_counter()

    def wait_time(self) -> float:
        """Take a token; return how long to wait first (0 when one was there)."""
        now = time.perf_counter()
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


def _produce_all(series, topics, kafka: KafkaSettings, rate, speed, progress) -> ReplayStats:
    from confluent_kafka import KafkaException, Producer
    from tqdm import tqdm

    counts = {"sent": 0, "failed": 0}
    first_error: list[str] = []

    def on_delivery(err, _msg) -> None:
        if err is None:
            counts["sent"] += 1
        else:
            counts["failed"] += 1
            if not first_error:
                first_error.append(str(err))

    producer = Producer(kafka.confluent_config(tuning=PRODUCER_TUNING))
    total = sum(len(s.timestamps) for s in series)
    bucket = _TokenBucket(rate) if rate is not None else None
    values = [s.values.tolist() for s in series]
    intervals = [_interval(s) for s in series]
    started = time.perf_counter()
    first_ts = None
    produced = 0
    interrupted = False
    # Ctrl-C sets a flag that the loop reads: a KeyboardInterrupt raised while the producer's
    # poll runs in C can come out of it as a SystemError ("returned NULL without setting an
    # exception") instead, and the replay would fail instead of stopping
    stop: list[int] = []
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, lambda signum, _frame: stop.append(signum))
    bar = tqdm(total=total, unit="rd", desc="replay", disable=not progress, smoothing=0.1)
    try:
        for ts, k, i in _merged(series):
            s = series[k]
            if bucket is not None:
                _pause(producer, bucket.wait_time(), stop)
            elif speed is not None:
                first_ts = ts if first_ts is None else first_ts
                _pause(producer, started + (ts - first_ts) / speed - time.perf_counter(), stop)
            if stop:
                interrupted = True
                break
            key, value = encode_reading(s.meter_id, ts * 1000, values[k][i], s.category,
                                        interval_s=intervals[k])
            while True:
                try:
                    producer.produce(topics[k], value=value, key=key, on_delivery=on_delivery)
                    break
                except BufferError:  # local queue full: let the broker catch up
                    producer.poll(0.05)
            produced += 1
            if produced % 1000 == 0:
                producer.poll(0)
                bar.update(1000)
        bar.update(produced % 1000)
    except KeyboardInterrupt:
        interrupted = True
    except KafkaException as exc:
        raise MeterwatchError(f"producing failed after {produced} readings: {exc}") from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        timeout = INTERRUPT_FLUSH_TIMEOUT_S if interrupted else FLUSH_TIMEOUT_S
        left = producer.flush(timeout)
        bar.close()
    if left:
        counts["failed"] += left
        first_error.append(f"{left} still queued after a {timeout:.0f} s flush")
    seconds = time.perf_counter() - started
    stats = ReplayStats(counts["sent"], counts["failed"], seconds,
                        counts["sent"] / seconds if seconds > 0 else 0.0, interrupted,
                        first_error[0] if first_error else None)
    if stats.failed:
        raise DeliveryError(stats)
    return stats


def _pause(producer, seconds: float, stop: list[int]) -> None:
    """Wait while serving delivery reports (the producer's poll is the sleep), until the
    time is up or `stop` is set."""
    deadline = time.perf_counter() + seconds
    while seconds > 0 and not stop:
        producer.poll(min(seconds, 0.1))
        seconds = deadline - time.perf_counter()


# --- command line -----------------------------------------------------------------------------

class Speed(click.ParamType):
    """`60x` or `60`: a multiple of real time."""

    name = "speed"

    def convert(self, value, param, ctx) -> float:
        text = str(value)
        try:
            return float(text[:-1] if text.lower().endswith("x") else text)
        except ValueError:
            self.fail(f"speed {text!r} is not a number like 60x", param, ctx)


def replay_params() -> list[click.Parameter]:
    """Options of `meterwatch replay`. Exactly one pace (--rate, --speed, --backfill) is
    checked by replay(); --topic and --topic-template exclude each other (run_replay)."""
    from stream_app.io.series_io import csv_params

    return [
        click.Option(["--input"], required=True, type=click.Path(path_type=Path),
                     help="CSV of meter readings"),
        *csv_params(),
        click.Option(["--rate"], type=float, help="readings per second (one of the three paces)"),
        click.Option(["--speed"], type=Speed(), help="multiple of real time, e.g. 96x"),
        click.Option(["--backfill"], is_flag=True, help="as fast as the broker takes it"),
        *topic_params("per-meter topic name"),
        click.Option(["--partitions"], type=int, default=4, help="partitions of created topics"),
        click.Option(["--no-create"], is_flag=True, help="do not create the topics first"),
        click.Option(["--no-progress"], is_flag=True, help="no progress bar"),
    ]


def topic_params(template_help: str) -> list[click.Option]:
    """--topic-template or --topic, where readings go; --topic is the worker's MW_INPUT_TOPIC
    (the one topic it reads when set). The template's default is applied by `topics_of`, so that
    a --topic from the environment and a --topic-template given are told apart."""
    return [
        click.Option(["--topic-template"], show_default=DEFAULT_TEMPLATE, help=template_help),
        click.Option(["--topic"], envvar="MW_INPUT_TOPIC", show_envvar=True,
                     help="one keyed topic for every meter instead"),
    ]


def topics_of(args) -> tuple[str, str | None]:
    """(topic template, single topic) of the options of topic_params."""
    if args.topic is not None and args.topic_template is not None:
        raise InputError("--topic (or MW_INPUT_TOPIC) and --topic-template exclude each other")
    return args.topic_template or DEFAULT_TEMPLATE, args.topic


def uses_kafka(args) -> bool:
    """`meterwatch replay` talks to Kafka, after the checks that need no broker: a wrong option
    is told at once, before the CLI waits for a broker to answer."""
    _check_pacing(args.rate, args.speed, args.backfill)
    topics_of(args)
    return True


def run_replay(args) -> int:
    """`meterwatch replay`: read the CSV (InputError propagates: exit 2), replay, summarise."""
    from stream_app.io.series_io import read_meter_csv, reader_options

    _check_pacing(args.rate, args.speed, args.backfill)  # before reading a large file
    template, topic = topics_of(args)
    series = read_meter_csv(
        args.input, timestamp_col=args.timestamp_col, value_col=args.value_col,
        meter_col=args.meter_col, category_col=args.category_col,
        default_meter_id=args.meter_id, default_category=args.category, max_gap=args.max_gap,
        **reader_options(args))
    for s in series:
        for repair in s.repairs:
            print(f"repaired {repair}")
    stats = replay(series, kafka=KafkaSettings.from_env(), topic_template=template,
                   single_topic=topic, rate=args.rate, speed=args.speed,
                   backfill=args.backfill, progress=not args.no_progress,
                   partitions=args.partitions, create=not args.no_create)
    where = topic or template
    print(f"replayed {stats.sent} readings of {len(series)} meter(s) to {where} in "
          f"{stats.seconds:.1f} s ({stats.rate:.0f} readings/s)"
          + (" — interrupted, queued readings flushed" if stats.interrupted else ""))
    return 130 if stats.interrupted else 0


replay_cli = run_replay
