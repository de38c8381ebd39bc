"""replay(): heap-merged, keyed, paced production of meter series, checked by consuming back."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from stream_app.core.errors import InputError
from stream_app.core.records import Reading, decode_reading
from stream_app.core.series import MeterSeries
from stream_app.io.replay import (
    PRODUCER_TUNING,
    DeliveryError,
    ReplayStats,
    _merged,
    _TokenBucket,
    replay,
    topic_for,
)
from stream_app.io.series_io import write_rows_csv
from stream_app.stream.settings import KafkaSettings

T0 = 1_735_689_600  # 2025-01-01T00:00:00Z


def _series(n: int = 40) -> list[MeterSeries]:
    """Three meters with different intervals and offsets, so the merge really interleaves."""
    rng = np.random.default_rng(5)
    spec = [("m-a", "industrial", 900, 0), ("m:b", "general", 1800, 300),
            ("m.c", "late_night", 900, 450)]
    return [MeterSeries(mid, cat, T0 + off + step * np.arange(n), rng.uniform(0, 50, n), step)
            for mid, cat, step, off in spec]


def _settings(broker) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=broker.bootstrap, broker_kind=broker.kind)


def _consume(broker, topics: list[str], expected: int, timeout: float = 30.0) -> list:
    """Everything on `topics`, read by assignment (no group join: fast on every broker)."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": topics[0],
                         "enable.auto.commit": False})
    metadata = consumer.list_topics(timeout=10).topics
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in topics
                     for p in metadata[t].partitions])
    got = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append((msg.topic(), msg.key(), msg.value()))
    finally:
        consumer.close()
    return got


def _decoded(got) -> list[tuple[str, bytes, Reading]]:
    out = []
    for topic, key, value in got:
        reading = decode_reading(value, key=key, max_future_s=None)
        assert isinstance(reading, Reading), reading
        out.append((topic, key, reading))
    return out


def test_topic_names_are_sanitised():
    assert topic_for("plant-7.feeder_2") == "meter.plant-7.feeder_2"
    assert topic_for("site:42") == "meter.site_42"
    assert topic_for("a", "t-{meter_id}-x") == "t-a-x"
    with pytest.raises(InputError, match="only"):
        topic_for("a", "{site}.{meter_id}")
    with pytest.raises(InputError, match="legal"):
        topic_for("a", "bad topic {meter_id}")


def test_merge_is_in_timestamp_order_and_complete():
    series = _series(10)
    merged = list(_merged(series))
    assert len(merged) == 30
    assert [m[0] for m in merged] == sorted(int(t) for s in series for t in s.timestamps)
    assert sorted((k, i) for _, k, i in merged) == [(k, i) for k in range(3) for i in range(10)]


def test_token_bucket_waits_once_the_burst_is_spent():
    bucket = _TokenBucket(100.0)  # capacity 10
    waits = [bucket.wait_time() for _ in range(30)]
    assert waits[:9] == [0.0] * 9
    assert waits[-1] == pytest.approx(0.2, abs=0.02)  # 20 readings beyond the burst at 100/s


def test_pacing_and_data_are_checked_before_sending():
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:1")  # never contacted
    series = _series(3)
    with pytest.raises(InputError, match="exactly one"):
        replay(series, kafka=settings, rate=10, backfill=True)
    with pytest.raises(InputError, match="exactly one"):
        replay(series, kafka=settings)
    with pytest.raises(InputError, match="positive"):
        replay(series, kafka=settings, rate=0)
    series[1].values[1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        replay(series, kafka=settings, backfill=True)
    bad = [MeterSeries("bad id!", "general", T0 + 900 * np.arange(2), np.ones(2), 900)]
    with pytest.raises(InputError, match="bad_meter_id"):
        replay(bad, kafka=settings, backfill=True)


def test_failed_deliveries_are_counted_and_raised(monkeypatch):
    """Nobody listens on port 1: every reading times out, and the replay says so, with counts."""
    monkeypatch.setitem(PRODUCER_TUNING, "message.timeout.ms", 1000)
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    with pytest.raises(DeliveryError, match="30 reading.s. were not delivered") as info:
        replay(_series(10), kafka=settings, backfill=True, progress=False, create=False)
    assert (info.value.stats.sent, info.value.stats.failed) == (0, 30)
    assert "timed out" in info.value.stats.first_error.lower()


@pytest.mark.kafka
def test_backfill_to_per_meter_topics_round_trips(kafka_broker, unique_name):
    series = _series()
    prefix = unique_name("rp")
    template = prefix + ".{meter_id}"
    stats = replay(series, kafka=_settings(kafka_broker), topic_template=template,
                   backfill=True, progress=False)
    assert isinstance(stats, ReplayStats)
    assert (stats.sent, stats.failed, stats.interrupted) == (120, 0, False)
    topics = sorted({topic_for(s.meter_id, template) for s in series})
    assert topics == [f"{prefix}.m-a", f"{prefix}.m.c", f"{prefix}.m_b"]
    got = _decoded(_consume(kafka_broker, topics, 120))
    assert len(got) == 120
    for s in series:
        mine = [(t, r) for t, key, r in got if key == s.meter_id.encode()]
        assert {t for t, _ in mine} == {topic_for(s.meter_id, template)}
        readings = [r for _, r in mine]  # one key -> one partition: consumed in produced order
        assert [r.ts for r in readings] == (s.timestamps * 1000).tolist()
        assert [r.value for r in readings] == s.values.tolist()
        assert {(r.category, r.interval_s) for r in readings} == {(s.category, s.interval_s)}


@pytest.mark.kafka
def test_single_topic_mode_keeps_keys_and_order(kafka_broker, unique_name):
    series = _series(20)
    topic = unique_name("rp-one")
    stats = replay(series, kafka=_settings(kafka_broker), single_topic=topic, backfill=True,
                   progress=False, partitions=2)
    assert (stats.sent, stats.failed) == (60, 0)
    got = _decoded(_consume(kafka_broker, [topic], 60))
    assert len(got) == 60 and {t for t, _, _ in got} == {topic}
    for s in series:
        ts = [r.ts for _, key, r in got if key == s.meter_id.encode()]
        assert ts == (s.timestamps * 1000).tolist()


@pytest.mark.kafka
def test_rate_limit_is_respected(kafka_broker, unique_name):
    n, rate = 150, 300.0
    series = [MeterSeries("rated", "general", T0 + 900 * np.arange(n), np.ones(n), 900)]
    topic = unique_name("rp-rate")
    replay(series, kafka=_settings(kafka_broker), single_topic=topic, backfill=True,
           progress=False)  # topic exists and the connection is warm before timing
    stats = replay(series, kafka=_settings(kafka_broker), single_topic=topic, rate=rate,
                   progress=False)
    assert stats.sent == n
    assert stats.seconds >= n / rate * 0.8
    assert stats.rate <= rate * 1.25


@pytest.mark.kafka
def test_speed_follows_the_series_clock(kafka_broker, unique_name):
    # 9 steps of 900 s at 9000x real time: 0.9 s of pacing.
    series = [MeterSeries("fast", "general", T0 + 900 * np.arange(10), np.ones(10), 900)]
    topic = unique_name("rp-speed")
    stats = replay(series, kafka=_settings(kafka_broker), single_topic=topic, speed=9000.0,
                   progress=False)
    assert stats.sent == 10
    assert stats.seconds >= 0.9 * 0.8


@pytest.mark.kafka
def test_ctrl_c_stops_after_flushing(kafka_broker, unique_name, tmp_path):
    """SIGINT mid-replay: exit 130, and every reading it reports as sent is on the topic."""
    n = 12_000  # a minute at 200/s: the SIGINT lands mid-replay even when counting is slow
    path = tmp_path / "slow.csv"
    write_rows_csv(path, ["timestamp", "meter_id", "category", "value"],
                   ([T0 + 900 * i, "slow", "general", 1.0] for i in range(n)))
    topic = unique_name("rp-int")
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap,
           "MW_BROKER_KIND": kafka_broker.kind}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream_app.cli", "replay", "--input", str(path), "--rate", "200",
         "--topic", topic, "--no-progress"], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _count(kafka_broker, topic) < 50:
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    sent = int(re.search(r"replayed (\d+) readings", out).group(1))
    assert 50 <= sent < n and "interrupted" in out
    assert len(_consume(kafka_broker, [topic], sent, timeout=10)) == sent


def _count(broker, topic: str) -> int:
    """Messages on `topic` so far (sum of high watermarks; 0 before it exists)."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": topic})
    try:
        meta = consumer.list_topics(timeout=5).topics.get(topic)
        if meta is None or meta.error is not None:
            return 0
        try:
            return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
                       for p in meta.partitions)
        except KafkaException:  # a topic just auto-created may not have its leader yet
            return 0
    finally:
        consumer.close()
