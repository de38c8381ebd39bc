"""`meterwatch alerts`: read the alert topic, filter, print a table or JSON lines.

The consumer assigns every partition itself instead of joining a group: no rebalance wait, no
committed offsets, and any number of people can watch at once without stealing partitions from
each other. It starts at the end of each partition (only new alerts) or, with
`--from-beginning`, at the start. Without `--follow` it stops once it has reached the end of
every partition as it was when it started; with `--follow` it runs until Ctrl-C (exit 0).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import cast

import click

from stream_app.core.alerts import SEVERITIES
from stream_app.core.errors import InputError
from stream_app.stream.settings import KafkaSettings

DEFAULT_TOPIC = "meter-alerts"
COLUMNS = (("time", 20), ("status", 8), ("severity", 8), ("meter", 24), ("category", 12),
           ("window", 40), ("z/limit", 11), ("reason", 0))


def alerts_params() -> list[click.Option]:
    """Options of `meterwatch alerts`; --topic is the worker's MW_ALERTS_TOPIC."""
    return [
        click.Option(["--topic"], default=DEFAULT_TOPIC, envvar="MW_ALERTS_TOPIC",
                     show_envvar=True, help="alert topic"),
        click.Option(["--follow", "-f"], is_flag=True, help="keep printing new alerts"),
        click.Option(["--from-beginning"], is_flag=True, help="start at the oldest alert"),
        click.Option(["--json"], is_flag=True, help="one JSON object per line"),
        click.Option(["--meter"], help="only this meter id"),
        click.Option(["--category"], help="only this usage category"),
        click.Option(["--severity"], type=click.Choice(SEVERITIES), help="minimum severity"),
    ]


def alert_filter(meter: str | None = None, category: str | None = None,
                 severity: str | None = None) -> Callable[[dict], bool]:
    """Predicate over alert dicts: every given criterion must hold."""
    floor = SEVERITIES.index(severity) if severity else 0

    def keep(alert: dict) -> bool:
        if meter is not None and alert.get("meter_id") != meter:
            return False
        if category is not None and alert.get("category") != category:
            return False
        rank = SEVERITIES.index(alert["severity"]) if alert.get("severity") in SEVERITIES else 0
        return rank >= floor

    return keep


def table_header() -> str:
    return _row([name for name, _ in COLUMNS])


def table_line(alert: dict) -> str:
    """One alert as a fixed-width line: time, status, severity, meter, category, window, z/limit,
    reason."""
    z, limit = alert.get("zscore"), alert.get("threshold")
    ratio = f"{z:.2f}/{limit:.2f}" if isinstance(z, int | float) and limit else "-"
    window = f"{_short(alert.get('window_start'))}..{_short(alert.get('window_end'))}"
    return _row([_short(alert.get("produced_at")), alert.get("status", "?"),
                 alert.get("severity", "?"), alert.get("meter_id", "?"),
                 alert.get("category", "?"), window, ratio,
                 f"[{alert.get('kind', '?')}] {alert.get('reason', '')}"])


def _short(stamp) -> str:
    return str(stamp or "-").replace("T", " ").removesuffix("Z")[:19]


def _row(cells) -> str:
    parts = [str(c)[:w].ljust(w) if w else str(c) for c, (_, w) in zip(cells, COLUMNS, strict=True)]
    return " ".join(parts).rstrip()


def read_alerts(kafka: KafkaSettings, topic: str, *, follow: bool, from_beginning: bool,
                emit: Callable[[dict], None], keep: Callable[[dict], bool] = lambda a: True,
                poll_s: float = 0.2) -> int:
    """Consume `topic`, call `emit` on every kept alert; the number emitted."""
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, TopicPartition

    # a group id is required, but with assign() it never joins: unique, nothing committed
    consumer = Consumer(kafka.confluent_config(
        tuning={"fetch.wait.max.ms": 100},
        fixed={"group.id": f"meterwatch-alerts-{time.time_ns()}", "enable.auto.commit": False,
               "enable.partition.eof": True}))
    emitted = 0
    # Ctrl-C sets a flag the loop reads (as replay's): a KeyboardInterrupt raised while the
    # consumer's poll runs in C can come out of it as a SystemError, or not at all
    stop: list[int] = []
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, lambda signum, _frame: stop.append(signum))
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise InputError(f"topic {topic!r} does not exist (or has no partitions)")
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        consumer.assign([TopicPartition(topic, p, start) for p in meta.partitions])
        ends = {}  # partition -> its end at start, for partitions not yet read that far
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if from_beginning and high > low:
                ends[p] = high
        pending = set(ends)
        while (follow or pending) and not stop:
            msg = consumer.poll(poll_s)
            if msg is None:
                continue
            error = msg.error()
            if error:
                if error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                    continue
                raise InputError(f"reading {topic}: {error}")
            # A consumed message always has an offset (None is for messages being produced).
            if cast(int, msg.offset()) + 1 >= ends.get(msg.partition(), 0):
                pending.discard(msg.partition())
            try:
                # A tombstone (value None) raises TypeError, and is skipped like any non-alert.
                alert = json.loads(cast(bytes, msg.value()))
            except (ValueError, TypeError):
                continue  # not an alert: this tool only shows alerts
            if isinstance(alert, dict) and keep(alert):
                emit(alert)
                emitted += 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        consumer.close()
    return emitted


def run_alerts(args) -> int:
    """`meterwatch alerts`. Ctrl-C ends it cleanly (exit 0): following is meant to be stopped."""
    topic = args.topic
    keep = alert_filter(args.meter, args.category, args.severity)
    if args.json:
        def emit(alert):
            print(json.dumps(alert, separators=(",", ":"), ensure_ascii=False), flush=True)
    else:
        print(table_header(), flush=True)

        def emit(alert):
            print(table_line(alert), flush=True)
    try:
        read_alerts(KafkaSettings.from_env(), topic, follow=args.follow,
                    from_beginning=args.from_beginning, emit=emit, keep=keep)
    except KeyboardInterrupt:
        pass
    sys.stdout.flush()
    return 0

