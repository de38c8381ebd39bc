"""Bounded memory on a real broker: evicted meters end in a changelog tombstone, on the worker
that timed them and on one that restored them; the cap's dead letters; grouped silence alerts.

MW_SILENCE_FACTOR=1 with readings every 2 s makes a meter silent 2 s after its reading,
MW_METER_TTL_S=60 makes a minute of stream time the TTL, MW_MAX_METERS=1000 the cap.
"""

from __future__ import annotations

import json
import time

import pytest
from confluent_kafka import Consumer, TopicPartition
from test_worker_kafka import metric, run, wait_for  # noqa: F401 (run: the fixture)

from stream_app.core.records import encode_reading
from stream_app.devtools.demo import metric_total, worker_metrics
from stream_app.stream.app import STATE_TABLE
from stream_app.stream.dead_letters import DeadLetter
from stream_app.stream.topics import create_topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

N = 1_000
MINUTE_MS = 60_000
METERS = "meterwatch_meters "  # the gauge alone, not meterwatch_meters_evicted_total


def last_records(bootstrap: str, topic: str, partitions: int) -> dict[bytes, bytes | None]:
    """The last value of every key of a topic, read to its end (None: a tombstone)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-reader",
                         "enable.auto.commit": False})
    high = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)}
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    last, done = {}, {p for p, h in high.items() if h == 0}
    deadline = time.monotonic() + 120
    try:
        while len(done) < partitions and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            last[message.key()] = message.value()
            if message.offset() + 1 >= high[message.partition()]:
                done.add(message.partition())
    finally:
        consumer.close()
    assert len(done) == partitions, "the changelog was not read to its end"
    return last


def test_evicted_meters_end_in_a_tombstone_on_the_timing_and_on_a_restored_worker(run):  # noqa: F811
    topic = f"{run.app_id}-in"
    create_topics(run.broker.bootstrap, [topic], 4)
    run.use_single_topic(topic)
    run.env.update({"MW_SILENCE_FACTOR": "1", "MW_METER_TTL_S": "60", "MW_MAX_METERS": str(N)})
    t1 = int(time.time() * 1000) - 60 * MINUTE_MS

    def readings(prefix: str, n: int, ts: int, site: str):
        return [(topic, *encode_reading(f"{prefix}-{i:05d}", ts, 1.0, "industrial", site=site,
                                        interval_s=2)) for i in range(n)]

    proc_a, port_a = run.start_worker()
    run.produce(readings("one", N, t1, "fake-1"))
    wait_for(lambda: metric(port_a, "meterwatch_readings_outcome_total") >= N, 180,
             "the first 1,000 meters")
    # the cap is reached: a new meter's reading is dead-lettered; it still moves stream time
    # 10 minutes on, so the silent first thousand are now beyond the TTL and evicted
    run.produce(readings("extra", 1, t1 + 10 * MINUTE_MS, "other"))
    wait_for(lambda: metric(port_a, "meterwatch_meters_evicted_total") >= N, 180,
             "the first thousand evicted")
    assert metric(port_a, 'meterwatch_readings_invalid_total{reason="meter_cap"}') == 1
    wait_for(lambda: metric(port_a, "meterwatch_meter_cap_reached") == 0, 30, "room again")
    # a second thousand gets in, then the worker stops with their state in the table
    run.produce(readings("two", N, t1 + 20 * MINUTE_MS, "fake-2"))
    wait_for(lambda: metric(port_a, "meterwatch_readings_outcome_total") >= 2 * N, 180,
             "the second thousand")
    wait_for(lambda: metric(port_a, METERS) == N, 30, "1,000 meters with state")
    assert metric(port_a, "meterwatch_meters_evicted_total") == N
    time.sleep(4)  # changelog writes and offsets committed
    run.stop()
    run.workers.clear()
    # a new worker restores them; one reports 20 minutes later: the other 999, which it does
    # not time, are found by the sweep of its table and evicted
    _, port_b = run.start_worker()
    run.produce(readings("two", 1, t1 + 40 * MINUTE_MS, "fake-2"))
    wait_for(lambda: metric(port_b, "meterwatch_meters_evicted_total") >= N - 1, 180,
             "the restored 999 evicted")
    wait_for(lambda: metric(port_b, METERS) == 1, 30, "one meter with state")
    time.sleep(4)
    text = worker_metrics(port_b)
    ticks = metric_total(text, "meterwatch_silence_check_seconds_count")
    mean_ms = 1000 * metric_total(text, "meterwatch_silence_check_seconds_sum") / ticks
    last = last_records(run.broker.bootstrap, f"{run.app_id}-{STATE_TABLE}-changelog", 4)
    kept = b"two-00000"
    assert last.pop(kept) is not None
    assert sorted(last) == sorted([f"one-{i:05d}".encode() for i in range(N)]
                                  + [f"two-{i:05d}".encode() for i in range(1, N)])
    assert all(value is None for value in last.values())  # every one a tombstone
    print(f"\nchangelog: {len(last):,} keys end in a tombstone, {kept.decode()} kept; the restored "
          f"worker's silence ticks: {ticks:.0f}, mean {mean_ms:.1f} ms")

    alerts = run.consume(run.env["MW_ALERTS_TOPIC"], lambda got: any(
        a["kind"] == "meters_silent" and a["status"] == "resolved" for a in got), timeout=60)
    # no alert a meter, but for the one that reported to the new worker and fell silent alone
    assert {a["meter_id"] for a in alerts if a["kind"] == "meter_silent"
            and a["meter_id"].startswith(("one-", "two-"))} <= {kept.decode()}
    one = [a for a in alerts if a["meter_id"] == "site:-:fake-1"]
    assert [a["status"] for a in one][0] == "open" and one[-1]["status"] == "resolved"
    assert len({a["alert_id"] for a in one}) == 1 and len(one) <= 12
    # evictions began while the last of them were still going silent: fewer at once than N
    assert one[-1]["meters"]["expired"] == N and 10 <= one[-1]["meters"]["peak"] <= N
    print(f"site:-:fake-1: {len(one)} messages ({', '.join(a['status'] for a in one)}), "
          f"peak {one[-1]['meters']['peak']} silent at once, {N} expired")
    (letter,) = [DeadLetter.from_json(json.dumps(a).encode())
                 for a in run.consume(run.env["MW_DLQ_TOPIC"], lambda got: got, timeout=60)]
    assert letter.reason == "meter_cap"
    assert json.loads(letter.original_value())["meter_id"] == "extra-00000"
