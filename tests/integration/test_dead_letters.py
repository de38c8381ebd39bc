"""Dead letters name the event that caused them, also after the re-keying hop (real broker).

The meter window refuses a reading only on the scoring side of the internal hop (out_of_order,
conflicting_duplicate, off_grid). Its dead letter must still carry what the producer sent: the
original bytes, the original key and the source topic, partition and offset, as a reading
refused at ingest does (docs/EVENTS.md). The readings here are sent as a producer might send
them (ISO-8601 with an offset, spaces, a field meterwatch ignores), so the compact copy on the
internal topic differs from the original in every byte that could be lost.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from test_faults import consume_all, wait_accounted, worker_counters
from test_worker_kafka import Run

from stream_app.stream.dead_letters import MAX_DEAD_LETTER_ORIGINAL, DeadLetter
from stream_app.stream.topics import create_topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SHIPPED_BUNDLE = Path(__file__).resolve().parents[2] / "onnx_models" / "default"
T0 = 1_736_121_600  # 2025-01-06T00:00:00Z; 15-minute readings
STEP = 900


def reading(meter: str, step: int, value: float, *, off_s: int = 0, pad: int = 0) -> bytes:
    """A producer's bytes: local time with its offset, spaces, a field the worker ignores."""
    ts = time.strftime("%Y-%m-%dT%H:%M:%S+09:00", time.gmtime(T0 + step * STEP + off_s + 9 * 3600))
    event = {"meter_id": meter, "timestamp": ts, "value": value, "category": "industrial",
             "site": "Ulsan works", "note": "n" * pad or "from the field"}
    return json.dumps(event, indent=1).encode()


class Sent:
    """Produces (partition, key, value) messages and keeps where each landed."""

    def __init__(self, bootstrap: str, topic: str):
        self.topic = topic
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        self.where: dict[bytes, tuple[str, int, int]] = {}  # value -> (topic, partition, offset)

    def send(self, messages) -> None:
        def delivered(err, msg):
            assert err is None, err
            self.where[msg.value()] = (msg.topic(), msg.partition(), msg.offset())

        for partition, key, value in messages:
            self.producer.produce(self.topic, key=key, value=value, partition=partition,
                                  on_delivery=delivered)
        assert self.producer.flush(30) == 0


def test_readings_refused_after_the_hop_are_dead_lettered_as_they_came(
        kafka_broker, tmp_path, unique_name):
    name = unique_name("mw").replace("_", "-")
    run = Run(kafka_broker, SHIPPED_BUNDLE, tmp_path, name)  # readings warm up: any bundle
    topic = f"{name}-in"
    run.use_single_topic(topic)
    try:
        create_topics(kafka_broker.bootstrap, [topic], 4)
        _, port = run.start_worker()
        sent = Sent(kafka_broker.bootstrap, topic)
        # dl-a is keyed and arrives on partition 1, dl-b has no key and arrives on partition 3
        good = [(1, b"dl-a", reading("dl-a", s, 10.0 + s)) for s in range(8)]
        good += [(3, None, reading("dl-b", s, 20.0 + s)) for s in range(8)]
        sent.send(good)
        wait_accounted(port, len(good), 120, "the good readings")
        refused = {  # value -> (partition, key, reason code)
            reading("dl-a", 2, 99.0): (1, b"dl-a", "out_of_order"),  # 5 intervals back (> 4)
            reading("dl-a", 7, 42.0): (1, b"dl-a", "conflicting_duplicate"),  # last slot, other value
            reading("dl-b", 8, 21.0, off_s=420): (3, None, "off_grid"),  # 7 minutes off the grid
            reading("dl-b", 6, 1.5): (3, None, "conflicting_duplicate"),  # a slot with a reading
            # over 256 KiB: the hop carries it cut, with the whole one's size and SHA-256
            reading("dl-a", 1, 5.0, pad=300_000): (1, b"dl-a", "out_of_order"),
        }
        sent.send([(p, key, value) for value, (p, key, _) in refused.items()])
        counters = wait_accounted(port, len(good) + len(refused), 120, "the refused readings")
        assert counters["outcome"].get("refused") == len(refused), counters
        letters = [DeadLetter.from_json(v) for v in consume_all(
            kafka_broker.bootstrap, run.env["MW_DLQ_TOPIC"], "read_uncommitted")]
        assert len(letters) == len(refused), letters
        positions = set()
        for letter in letters:
            whole = next(v for v in refused if v.startswith(letter.original_value()))
            partition, key, code = refused[whole]
            where = (letter.topic, letter.partition, letter.offset)
            assert where == sent.where[whole], (letter.reason, where, sent.where[whole])
            assert letter.reason == code and letter.original_key() == key
            assert letter.original_size == len(whole)
            assert letter.original_sha256 == hashlib.sha256(whole).hexdigest()
            assert letter.truncated == (len(whole) > MAX_DEAD_LETTER_ORIGINAL)
            if not letter.truncated:
                assert letter.original_value() == whole
            else:
                assert letter.original_value() == whole[:MAX_DEAD_LETTER_ORIGINAL]
            positions.add(where)
            print(f"\n{letter.reason}: {where}, key {letter.original_key()!r}, "
                  f"{letter.original_size} bytes{' (cut)' if letter.truncated else ''}")
        assert len(positions) == len(refused)  # each names its own event
        assert worker_counters(port)["invalid"] == {"out_of_order": 2, "conflicting_duplicate": 2,
                                                    "off_grid": 1}
    finally:
        run.stop()
