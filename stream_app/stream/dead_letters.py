"""Dead letters: a refused event as it goes to the dead-letter topic, with its reason.

docs/schemas/dead-letter.schema.json is the contract; the original key and value travel
base64-encoded (a refused event may not be valid UTF-8), with their size and SHA-256, and the
event's source topic, partition and offset. A reading refused after the re-keying hop (by its
meter's window) is named by what the hop carried for it (rekey.py): its source position, its
key and its original value as an `Original` (cut as a dead letter cuts it, whole size and
SHA-256 kept), so its dead letter is the one ingest would have written.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass

from stream_app.core.errors import InputError
from stream_app.core.records import Rejected, ms_to_iso

DEAD_LETTER_SCHEMA = "meterwatch.dead-letter/1"
# The original goes base64 (+33 %) into a Kafka message of its own; past this it is cut, and its
# size and SHA-256 still identify it. Keeps a dead letter under the broker's 1 MB default.
MAX_DEAD_LETTER_ORIGINAL = 262_144


@dataclass(frozen=True, slots=True)
class Original:
    """An event's value as a dead letter keeps it: the first MAX_DEAD_LETTER_ORIGINAL bytes,
    and the size and SHA-256 of the whole (computed when needed, unless cut)."""

    kept: bytes
    size: int
    sha256: str | None = None  # None: not cut, the SHA-256 of `kept`

    @classmethod
    def of(cls, raw: bytes, limit: int = MAX_DEAD_LETTER_ORIGINAL) -> Original:
        raw = bytes(raw)
        if len(raw) <= limit:
            return cls(raw, len(raw))
        return cls(raw[:limit], len(raw), hashlib.sha256(raw).hexdigest())

    @property
    def truncated(self) -> bool:
        return len(self.kept) < self.size

    def digest(self) -> str:
        return self.sha256 or hashlib.sha256(self.kept).hexdigest()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A refused event as it goes to the dead-letter topic (docs/schemas/dead-letter.schema.json).

    The original value and key travel base64-encoded: a refused event may not be valid UTF-8.
    """

    reason: str
    detail: str
    topic: str | None
    partition: int | None
    offset: int | None
    key_b64: str | None
    value_b64: str | None
    original_size: int
    original_sha256: str | None
    truncated: bool
    rejected_at: str

    def to_json(self) -> bytes:
        event = {"schema": DEAD_LETTER_SCHEMA, "reason": self.reason, "code":
                 self.reason.partition(":")[0], "detail": self.detail, "source": {
                     "topic": self.topic, "partition": self.partition, "offset": self.offset},
                 "key_b64": self.key_b64, "value_b64": self.value_b64,
                 "original_size": self.original_size, "original_sha256": self.original_sha256,
                 "truncated": self.truncated, "rejected_at": self.rejected_at}
        return json.dumps(event, separators=(",", ":")).encode("ascii")

    @classmethod
    def from_json(cls, raw: bytes) -> DeadLetter:
        try:
            event = json.loads(raw)
            source = event["source"]
            return cls(event["reason"], event["detail"], source["topic"], source["partition"],
                       source["offset"], event["key_b64"], event["value_b64"],
                       event["original_size"], event["original_sha256"], event["truncated"],
                       event["rejected_at"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"not a meterwatch dead letter: {exc}") from None

    def original_value(self) -> bytes | None:
        return None if self.value_b64 is None else base64.b64decode(self.value_b64)

    def original_key(self) -> bytes | None:
        return None if self.key_b64 is None else base64.b64decode(self.key_b64)


def dead_letter_bytes(
    raw: bytes | Original | None,
    reason: Rejected | str,
    topic: str | None,
    partition: int | None,
    offset: int | None,
    key: bytes | None,
    *,
    detail: str = "",
    rejected_at_ms: int | None = None,
    max_original: int = MAX_DEAD_LETTER_ORIGINAL,
) -> bytes:
    """The dead-letter message for a refused event. `raw`: its value, or the `Original` the hop
    carried for it. `reason`: a `Rejected` (its detail is used), a code, or "code: detail" as
    `MeterHistory.push` reports it. `rejected_at_ms` defaults to the wall clock (it is a record,
    never a decision)."""
    if isinstance(reason, Rejected):
        detail = detail or reason.detail
        reason = reason.reason
    elif ": " in reason:  # meter_window's "code: detail" form (PushResult.reason)
        reason, _, rest = reason.partition(": ")
        detail = detail or rest
    original = raw if raw is None or isinstance(raw, Original) else Original.of(raw, max_original)
    kept = b"" if original is None else original.kept[:max_original]
    at = time.time_ns() // 1_000_000 if rejected_at_ms is None else rejected_at_ms
    letter = DeadLetter(
        reason=reason, detail=detail, topic=topic, partition=partition, offset=offset,
        key_b64=None if key is None else base64.b64encode(bytes(key)).decode("ascii"),
        value_b64=None if original is None else base64.b64encode(kept).decode("ascii"),
        original_size=0 if original is None else original.size,
        original_sha256=None if original is None else original.digest(),
        truncated=original is not None and len(kept) < original.size, rejected_at=ms_to_iso(at))
    return letter.to_json()
