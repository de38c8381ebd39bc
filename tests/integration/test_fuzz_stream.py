"""10,000+ hostile and valid events through one worker: it stays up and loses nothing.

The events come from a seeded random generator (reproducible, and fast enough to make 10k in
well under a second; hypothesis shrinking would not help against a subprocess worker). Each bad
event is built to fail one check and carries the reason code it must be dead-lettered with:
malformed JSON, invalid UTF-8, wrong types, NaN/Infinity literals, negative and absurd values,
far-past and far-future timestamps, unknown categories, missing fields, key mismatch and
messages over MW_MAX_MESSAGE_BYTES (set to 4096 here). The valid readings are spread over 20
meters with repeats (duplicates) and swapped neighbours (out-of-order bursts).

Checks: the worker is alive and /health answers; every bad event is in the dead-letter topic
with its reason (matched by the SHA-256 of its bytes); every dead letter, those of readings the
meter window refuses after the re-keying hop included, names the input event it came from: the
key and value at its source partition and offset are its own; the accounting equation holds
with read = produced.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import time
from collections import Counter

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from test_faults import assert_accounted, consume_all, wait_accounted, worker_counters

from stream_app.core.records import encode_reading
from stream_app.devtools.demo import worker_health
from stream_app.stream.topics import create_topics

pytestmark = [pytest.mark.fuzz, pytest.mark.kafka, pytest.mark.slow]

N_EVENTS = 10_000
N_METERS = 20
MAX_BYTES = 4096
STEP_MS = 900_000


def _bad(rng: random.Random, meter: str, ts: int) -> tuple[bytes, bytes | None, str]:
    """(value, key, expected reason code) of one event built to fail one check."""
    key = meter.encode()
    base = {"meter_id": meter, "timestamp": ts, "value": 12.5, "category": "industrial"}

    def with_(**change):
        event = dict(base)
        event.update(change)
        return json.dumps(event).encode()

    kind = rng.randrange(14)
    if kind == 0:
        return with_()[: rng.randrange(1, 40)], key, "malformed_json"
    if kind == 1:
        raw = bytearray(with_())
        raw[rng.randrange(len(raw))] = rng.choice([0xFF, 0xFE, 0xC0, 0x80])
        return bytes(raw), key, "not_utf8"
    if kind == 2:
        literal = rng.choice([b"NaN", b"Infinity", b"-Infinity"])
        return with_(value="X").replace(b'"X"', literal), key, "not_finite"
    if kind == 3:
        return with_(value=rng.choice(["12", [1], {"v": 1}, True])), key, "wrong_type"
    if kind == 4:
        return with_(value=-rng.uniform(0.001, 1e6)), key, "negative_value"
    if kind == 5:
        return with_(value=rng.uniform(1e8, 1e300)), key, "absurd_value"
    if kind == 6:
        return with_(timestamp=rng.randrange(0, 946_684_800_000)), key, "past_timestamp"
    if kind == 7:
        future = int(time.time() * 1000) + rng.randrange(2, 3000) * 86_400_000
        return with_(timestamp=future), key, "future_timestamp"
    if kind == 8:
        return with_(category=rng.choice(["brewery", "INDUSTRIAL", "", "nuclear"])), key, \
            "unknown_category"
    if kind == 9:
        return with_(pad="x" * rng.randrange(MAX_BYTES, 3 * MAX_BYTES)), key, "too_large"
    if kind == 10:
        event = dict(base)
        event.pop(rng.choice(["meter_id", "value", "category"]))
        return json.dumps(event).encode(), key, "missing_field"
    if kind == 11:
        return with_(meter_id=meter + "-other"), key, "key_mismatch"
    if kind == 12:
        return rng.choice([b"[1,2]", b"42", b'"text"', b"null"]), key, "not_an_object"
    meter_id, code = rng.choice([(7, "wrong_type"), (None, "missing_field"),
                                 (["m"], "wrong_type"), ("bad id!", "bad_meter_id")])
    return with_(meter_id=meter_id), None, code


WINDOW_CODES = ("out_of_order", "conflicting_duplicate", "off_grid")  # refused after the hop


def read_with_positions(bootstrap: str, topic: str, count: int) -> dict:
    """(topic, partition, offset) -> (key, value) of the first `count` messages of `topic`."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"pos-{time.time_ns()}",
                         "enable.auto.commit": False})
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    got, deadline = {}, time.monotonic() + 120
    try:
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                got[(msg.topic(), msg.partition(), msg.offset())] = (msg.key(), msg.value())
    finally:
        consumer.close()
    return got


def generate(seed: int, topic: str, t0: int) -> tuple[list, Counter]:
    """The events (topic, key, value) and Counter((sha256, reason code)) of the bad ones."""
    rng = random.Random(seed)
    meters = [f"fz-{i:02d}" for i in range(N_METERS)]
    next_step = dict.fromkeys(meters, 0)
    out, bad = [], Counter()
    while len(out) < N_EVENTS:
        meter = rng.choice(meters)
        ts = t0 + next_step[meter] * STEP_MS
        roll = rng.random()
        if roll < 0.6:
            value, key, code = _bad(rng, meter, ts)
            out.append((topic, key, value))
            bad[(hashlib.sha256(value).hexdigest(), code)] += 1
            continue
        burst = rng.randrange(1, 5)
        readings = []
        for _ in range(burst):
            ts = t0 + next_step[meter] * STEP_MS
            next_step[meter] += 1
            readings.append(encode_reading(meter, ts, 10 + 5 * rng.random(), "industrial"))
        if roll < 0.7 and len(readings) > 1:
            readings.reverse()  # out-of-order burst, within the tolerance
        if roll > 0.93:
            readings.append(readings[-1])  # an exact repeat
        out.extend((topic, k, v) for k, v in readings)
    return out, bad


def test_ten_thousand_fuzzed_events(kafka_broker, tiny_bundle, tmp_path, unique_name):
    from test_worker_kafka import Run

    name = unique_name("mw").replace("_", "-")
    run = Run(kafka_broker, tiny_bundle.path, tmp_path, name)
    topic = f"{name}-in"
    run.env.pop("MW_INPUT_PATTERN")
    run.env.update(MW_INPUT_TOPIC=topic, MW_MAX_MESSAGE_BYTES=str(MAX_BYTES))
    t0 = (int(time.time() * 1000) // STEP_MS - 2000) * STEP_MS
    events, bad = generate(20260101, topic, t0)
    assert len(events) >= N_EVENTS and sum(bad.values()) > 3000
    try:
        create_topics(kafka_broker.bootstrap, [topic], 4)
        proc, port = run.start_worker()
        started = time.monotonic()
        run.produce(events)
        counters = wait_accounted(port, len(events), 120, "every fuzzed event to get a fate")
        took = time.monotonic() - started
        assert proc.poll() is None and worker_health(port)["status"] == "ok"
        counters = worker_counters(port)
        assert_accounted([counters], len(events))  # one worker, no crash: each read once
        letters = [json.loads(v) for v in consume_all(kafka_broker.bootstrap,
                                                      run.env["MW_DLQ_TOPIC"], "read_uncommitted")]
        assert len(letters) == sum(counters["invalid"].values())
        got = Counter((d["original_sha256"], d["code"]) for d in letters)
        missing = bad - got
        assert not missing, f"bad events not dead-lettered with their reason: {missing}"
        for d in letters:
            if not d["truncated"] and d["value_b64"] is not None:
                assert hashlib.sha256(base64.b64decode(d["value_b64"])).hexdigest() \
                    == d["original_sha256"]
        sources = read_with_positions(kafka_broker.bootstrap, topic, len(events))
        for d in letters:  # each names its own event: key and bytes at its source position
            where = (d["source"]["topic"], d["source"]["partition"], d["source"]["offset"])
            key, value = sources[where]
            assert d["original_sha256"] == hashlib.sha256(value).hexdigest(), (d["code"], where)
            assert d["key_b64"] == (None if key is None else base64.b64encode(key).decode())
        assert len({(d["source"]["partition"], d["source"]["offset"]) for d in letters}) \
            == len(letters)
        after_hop = Counter(d["code"] for d in letters if d["code"] in WINDOW_CODES)
        print(f"\nfuzz: {len(events)} events ({sum(bad.values())} bad) in {took:.1f} s; "
              f"outcomes {counters['outcome']}; dead letters by reason {counters['invalid']}; "
              f"{len(letters)} dead letters at their source positions, {dict(after_hop)} "
              f"refused after the hop")
    finally:
        run.stop()
