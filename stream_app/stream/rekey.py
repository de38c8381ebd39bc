"""The worker's internal hop: valid readings re-keyed by meter onto the internal topic, batched.

Every reading of a meter must reach the one partition of the internal topic that holds the
meter's state (the table is co-partitioned with it), whatever partition or topic it came in on.
Every Kafka message costs Faust a fixed overhead on both sides of the hop, so one ingest batch
becomes one message per internal partition (not per reading; more only past MAX_MESSAGE_BYTES):
its readings one compact JSON line each, and in two headers what the hop must not lose of each
reading's source event:

- `meterwatch-source` (JSON): the source partitions ("s", "topic:partition") and per reading
  its index into them ("i"), its offset ("o"), its Kafka timestamp in ms ("t"), its key ("k":
  0 none, 1 the meter id, 2 empty: a valid reading's key can be nothing else) and where its
  original value is ("v": null when the compact line is byte for byte the original; n when it
  is the next n bytes of the second header; [n, size, sha256] when those n bytes are the start
  of an original of `size` bytes, cut as a dead letter cuts it);
- `meterwatch-original`: those original values, one after the other.

The offset lets a reading read again after a crash be recognised as already applied
(stream_scoring), whatever its copy's offset on the internal topic; the position, key and
original let a reading the meter's window refuses be dead-lettered as the event it came as
(dead_letters.py), not as the hop's copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import orjson
from aiokafka.partitioner import murmur2

from stream_app.core.records import Reading
from stream_app.stream.dead_letters import Original

if TYPE_CHECKING:
    from faust.types import EventT, Message

SOURCE = "meterwatch-source"  # header of an internal message: its readings' source positions
ORIGINAL = "meterwatch-original"  # header: the original values that differ from their lines
# An internal message is sent once its readings and originals reach this many bytes, so it stays
# under the producer's 1,000,000-byte request limit: one original is at most 256 KiB (cut as a
# dead letter cuts it), a compact line about 1 KiB, and the headers a few dozen bytes a reading.
MAX_MESSAGE_BYTES = 512 * 1024
_KEY_CODE = {None: 0, b"": 2}  # anything else a valid reading has is its meter id (1)


@lru_cache(maxsize=1 << 16)
def internal_partition(meter_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives the meter's key (murmur2, as Java's and
    aiokafka's), so a meter's state stays where a keyed producer would have put it."""
    return (murmur2(meter_id.encode()) & 0x7FFFFFFF) % partitions


class Group:
    """The readings of one ingest batch bound for one internal partition: one message."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.sources: dict[str, int] = {}  # "topic:partition" -> index
        self.where: list[int] = []  # per reading: index into sources
        self.offsets: list[int] = []
        self.times: list[int] = []  # source Kafka timestamps, ms
        self.keys: list[int] = []  # per reading: _KEY_CODE
        self.originals: list = []  # per reading: "v" of the header
        self.original_bytes: list[bytes] = []
        self.size = 0  # bytes of lines and originals so far

    def add(self, reading: Reading, message: Message, raw: bytes) -> None:
        """`raw`: the value of `message` that decoded to `reading`."""
        source = f"{message.topic}:{message.partition}"
        self.where.append(self.sources.setdefault(source, len(self.sources)))
        line = reading.to_json()
        self.lines.append(line)
        self.offsets.append(message.offset)
        self.times.append(int(message.timestamp * 1000))
        self.keys.append(_KEY_CODE.get(message.key, 1))
        self.size += len(line) + 1
        if raw == line:
            self.originals.append(None)
            return
        original = Original.of(raw)
        n = len(original.kept)
        self.originals.append([n, original.size, original.sha256] if original.truncated else n)
        self.original_bytes.append(original.kept)
        self.size += n

    @property
    def full(self) -> bool:
        return self.size >= MAX_MESSAGE_BYTES

    def value(self) -> bytes:
        return b"\n".join(self.lines)  # compact JSON has no newline

    def timestamp(self) -> float:
        return self.times[0] / 1000

    def headers(self) -> dict[str, bytes]:
        source = orjson.dumps({"s": list(self.sources), "i": self.where, "o": self.offsets,
                               "t": self.times, "k": self.keys, "v": self.originals})
        if not self.original_bytes:
            return {SOURCE: source}
        return {SOURCE: source, ORIGINAL: b"".join(self.original_bytes)}


@dataclass(frozen=True, slots=True)
class Source:
    """The event a reading came as, by what a dead letter names of it (a Faust message's
    attributes: `ctx.dead_letter` takes either)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None


@dataclass(frozen=True, slots=True)
class Item:
    """One reading of an internal message: its line, what the hop carried of its source event,
    and when that reached Kafka."""

    raw: bytes  # the compact line
    event: object  # the Faust event of the internal message (table writes bind to it)
    position: tuple[str, int]  # (source "topic:partition", offset)
    arrived: float  # when the source event reached Kafka, epoch s
    key: bytes | None  # the source event's key
    original: Original  # the source event's value (cut as a dead letter cuts it)

    @property
    def source(self) -> Source:
        topic, _, partition = self.position[0].rpartition(":")
        return Source(topic, int(partition), self.position[1], self.key)


def items(event: EventT) -> list[Item]:
    """The readings of an internal message; one without a valid source header (a reading
    written by hand, say) stands for itself at its own position."""
    headers = event.message.headers or {}
    headers = headers if isinstance(headers, dict) else dict(headers)
    lines = event.value.split(b"\n")
    try:
        found = _from_headers(event, lines, headers.get(SOURCE), headers.get(ORIGINAL) or b"")
        if found is not None:
            return found
    except (ValueError, TypeError, KeyError, IndexError):
        pass
    message = event.message
    where = f"{message.topic}:{message.partition}"
    return [Item(line, event, (where, message.offset), message.timestamp, message.key,
                 Original.of(line)) for line in lines]


def _from_headers(event: EventT, lines: list[bytes], header: bytes | None,
                  originals: bytes) -> list[Item] | None:
    if not header:
        return None
    h = orjson.loads(header)
    n = len(lines)
    if not len(h["i"]) == len(h["o"]) == len(h["t"]) == n:
        return None
    # written before keys and originals were carried: the line stands for the original
    keys, values = h.get("k", [None] * n), h.get("v", [None] * n)
    if not len(keys) == len(values) == n:
        return None
    sources = h["s"]
    out, at = [], 0
    for line, i, offset, t, key, v in zip(lines, h["i"], h["o"], h["t"], keys, values,
                                          strict=True):
        if v is None:
            original = Original(line, len(line))
        elif type(v) is int:
            original, at = Original(originals[at:at + v], v), at + v
        else:
            kept, size, sha256 = v
            original, at = Original(originals[at:at + kept], size, sha256), at + kept
        out.append(Item(line, event, (sources[i], offset), t / 1000, _key(key, line), original))
    if at != len(originals):
        return None
    return out


_LINE_START = b'{"meter_id":"'  # Reading.to_json writes the meter id first


def _key(code: int | None, line: bytes) -> bytes | None:
    """The source key of a reading from its code: the meter id (which has no quote or escape,
    so it is the line's bytes up to the next quote), empty, or none."""
    if code == 1 and line.startswith(_LINE_START):
        end = line.find(b'"', len(_LINE_START))
        return line[len(_LINE_START):end] if end > 0 else None
    return b"" if code == 2 else None
