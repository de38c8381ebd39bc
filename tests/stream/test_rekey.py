"""The internal hop carries what a dead letter needs of each reading's source event: position,
key and original bytes (cut as a dead letter cuts them), and stays under the message limit."""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

import orjson

from stream_app.core.records import decode_reading, encode_reading
from stream_app.stream.dead_letters import MAX_DEAD_LETTER_ORIGINAL, DeadLetter, dead_letter_bytes
from stream_app.stream.rekey import MAX_MESSAGE_BYTES, ORIGINAL, SOURCE, Group, items

T0 = 1_736_121_600_000


def message(topic: str, partition: int, offset: int, key: bytes | None, value: bytes):
    """What the hop reads of a Faust message (and a received one: headers as pairs)."""
    return SimpleNamespace(topic=topic, partition=partition, offset=offset, key=key,
                           value=value, timestamp=T0 / 1000, headers=None)


def hop(sources: list) -> tuple[Group, list]:
    """Through Group as ingest builds it, then back through `items` as the scorer reads it."""
    group = Group()
    for m in sources:
        group.add(decode_reading(m.value, key=m.key, max_future_s=None), m, m.value)
    internal = message("mw-readings", 0, 77, None, group.value())
    internal.headers = list(group.headers().items())  # as aiokafka hands them over
    return group, items(SimpleNamespace(message=internal, value=internal.value))


def test_position_key_and_original_bytes_survive_the_hop():
    canonical = encode_reading("m-1", T0, 10.5, "industrial")[1]
    spaced = json.dumps({"meter_id": "m-1", "timestamp": "2025-01-06T01:15:00+01:00",
                         "value": 11, "category": "industrial", "extra": [1, 2]},
                        indent=2).encode()
    padded = json.dumps({"meter_id": "m:2", "timestamp": T0 + 900_000, "value": 1.0,
                         "category": "general", "pad": "p" * 300_000}).encode()
    sources = [message("meter.m-1", 3, 41, b"m-1", canonical),
               message("meter.m-1", 3, 42, None, spaced),
               message("shared", 1, 9, b"", padded)]
    group, got = hop(sources)
    header = orjson.loads(group.headers()[SOURCE])
    assert header["k"] == [1, 0, 2]
    assert header["v"][0] is None  # the line is the original: not carried twice
    assert [i.position for i in got] == [("meter.m-1:3", 41), ("meter.m-1:3", 42), ("shared:1", 9)]
    for item, m in zip(got, sources, strict=True):
        assert (item.source.topic, item.source.partition, item.source.offset, item.source.key) \
            == (m.topic, m.partition, m.offset, m.key)
        assert item.original.size == len(m.value)
        assert item.original.digest() == hashlib.sha256(m.value).hexdigest()
        # the dead letter of the hop's copy is the one ingest would write of the original
        after = DeadLetter.from_json(dead_letter_bytes(
            item.original, "out_of_order: late", item.source.topic, item.source.partition,
            item.source.offset, item.source.key, rejected_at_ms=T0))
        before = DeadLetter.from_json(dead_letter_bytes(
            m.value, "out_of_order: late", m.topic, m.partition, m.offset, m.key,
            rejected_at_ms=T0))
        assert after == before
    assert got[2].original.truncated and len(got[2].original.kept) == MAX_DEAD_LETTER_ORIGINAL


def test_an_ingest_batch_is_cut_into_messages_under_the_limit():
    big = [message("t", 0, n, b"m-1", json.dumps({
        "meter_id": "m-1", "timestamp": T0 + n * 900_000, "value": 1.0,
        "category": "industrial", "pad": "x" * 200_000}).encode()) for n in range(5)]
    group, sizes = Group(), []

    def sent(group):
        sizes.append(len(group.value()) + sum(map(len, group.headers().values())))

    for m in big:  # as ingest does: a full group goes out at once
        group.add(decode_reading(m.value, key=m.key, max_future_s=None), m, m.value)
        if group.full:
            sent(group)
            group = Group()
    sent(group)
    assert len(sizes) == 2 and max(sizes) < 1_000_000  # the producer's request limit
    assert MAX_MESSAGE_BYTES < 1_000_000 - MAX_DEAD_LETTER_ORIGINAL


def test_a_message_without_carried_originals_stands_for_itself():
    """Written by hand, or by a worker from before keys and originals were carried."""
    line = decode_reading(encode_reading("m-1", T0, 1.0, "general")[1]).to_json()
    old = orjson.dumps({"s": ["meter.m-1:2"], "i": [0], "o": [5], "t": [T0]})
    internal = message("mw-readings", 1, 8, b"k", line)
    internal.headers = {SOURCE: old}
    (item,) = items(SimpleNamespace(message=internal, value=line))
    assert item.position == ("meter.m-1:2", 5) and item.source.key is None
    assert item.original.kept == line
    internal.headers = {SOURCE: b"not json", ORIGINAL: b"x"}
    (item,) = items(SimpleNamespace(message=internal, value=line))
    assert (item.source.topic, item.source.partition, item.source.offset, item.source.key) \
        == ("mw-readings", 1, 8, b"k")
