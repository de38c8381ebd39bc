"""The worker's internal hop: valid readings re-keyed by meter onto the internal topic, batched.

Every reading of a meter must reach the one partition of the internal topic that holds the
meter's state (the table is co-partitioned with it), whatever partition or topic it came in on.
Every Kafka message costs Faust a fixed overhead on both sides of the hop, so one ingest batch
becomes one message per internal partition (not per reading): its readings one compact JSON
line each, and in the `meterwatch-source` header each reading's source partition, offset and
Kafka timestamp. The offset lets a reading read again after a crash be recognised as already
applied (stream_scoring), whatever its copy's offset on the internal topic.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import orjson
from aiokafka.partitioner import murmur2

from stream_app.core.records import Reading

SOURCE = "meterwatch-source"  # header of an internal message: its readings' source positions


@lru_cache(maxsize=1 << 16)
def internal_partition(meter_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives the meter's key (murmur2, as Java's and
    aiokafka's), so a meter's state stays where a keyed producer would have put it."""
    return (murmur2(meter_id.encode()) & 0x7FFFFFFF) % partitions


class Group:
    """The readings of one ingest batch bound for one internal partition: one message."""

    def __init__(self):
        self.lines: list[bytes] = []
        self.sources: dict[str, int] = {}  # "topic:partition" -> index
        self.where: list[int] = []  # per reading: index into sources
        self.offsets: list[int] = []
        self.times: list[int] = []  # source Kafka timestamps, ms

    def add(self, reading: Reading, message) -> None:
        source = f"{message.topic}:{message.partition}"
        self.where.append(self.sources.setdefault(source, len(self.sources)))
        self.lines.append(reading.to_json())
        self.offsets.append(message.offset)
        self.times.append(int(message.timestamp * 1000))

    def value(self) -> bytes:
        return b"\n".join(self.lines)  # compact JSON has no newline

    def timestamp(self) -> float:
        return self.times[0] / 1000

    def header(self) -> bytes:
        return orjson.dumps({"s": list(self.sources), "i": self.where, "o": self.offsets,
                             "t": self.times})


@dataclass(frozen=True)
class Item:
    """One reading of an internal message: its bytes, source position and arrival time."""

    raw: bytes
    event: object  # the Faust event of the internal message (table writes bind to it)
    position: tuple[str, int]  # (source "topic:partition", offset)
    arrived: float  # when the source event reached Kafka, epoch s


def items(event) -> list[Item]:
    """The readings of an internal message; one without a valid source header (a reading
    written by hand, say) stands for itself at its own position."""
    headers = event.message.headers or {}
    header = dict(headers).get(SOURCE) if not isinstance(headers, dict) else headers.get(SOURCE)
    lines = event.value.split(b"\n")
    try:
        h = orjson.loads(header) if header else None
        if h is not None and len(lines) == len(h["i"]) == len(h["o"]) == len(h["t"]):
            return [Item(line, event, (h["s"][i], offset), t / 1000) for line, i, offset, t
                    in zip(lines, h["i"], h["o"], h["t"], strict=True)]
    except (ValueError, TypeError, KeyError, IndexError):
        pass
    message = event.message
    where = f"{message.topic}:{message.partition}"
    return [Item(line, event, (where, message.offset), message.timestamp) for line in lines]
