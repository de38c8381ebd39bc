"""One meter's state between two batches: what the worker's table holds per meter, typed, and
its bytes.

The bytes are JSON (readable with any Kafka tool in the table's changelog), an object with a
version: {"v": 2, "history": ..., "interval_s": ..., "alert": ..., "category": ...,
"offsets": ..., "calibration": ..., "calibration_bundle": ...}. Version 1, the first layout
(one-letter keys "h", "a", "c", "iv", "o", "k", "kb", no "v"), is still read, so a worker
upgraded on a running changelog keeps every meter's history; it is written as version 2 at the
meter's next batch. A version newer than this code is refused (a ValueError names it), never
guessed at.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

STATE_VERSION = 2
_LEGACY_KEYS = {"history": "h", "alert": "a", "category": "c", "interval_s": "iv",
                "offsets": "o", "calibration": "k", "calibration_bundle": "kb"}


@dataclass
class MeterState:
    history: dict[str, Any]  # MeterHistory.to_dict(): last_ts (s), values, filled, normaliser...
    interval_s: int
    category: str
    alert: dict[str, Any] | None = None  # AlertTracker.state(meter): the open episode, if any
    offsets: dict[str, int] = field(default_factory=dict)  # "topic:partition" -> last applied
    calibration: str | None = None  # MeterCalibration.to_text(), versioned on its own
    calibration_bundle: str | None = None  # the bundle version the calibration was made with

    def to_bytes(self) -> bytes:
        data = orjson.dumps({"v": STATE_VERSION, "history": self.history,
                             "interval_s": self.interval_s, "alert": self.alert,
                             "category": self.category, "offsets": self.offsets,
                             "calibration": self.calibration,
                             "calibration_bundle": self.calibration_bundle},
                            option=orjson.OPT_SERIALIZE_NUMPY)
        # orjson's bytes keep their ~16 KiB write buffer: the table holds an exact copy
        return memoryview(data).tobytes()

    @classmethod
    def from_bytes(cls, raw: bytes) -> MeterState:
        data = orjson.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("a meter state is a JSON object")
        version = data.get("v", 1)
        if version == 1:
            data = {name: data.get(key) for name, key in _LEGACY_KEYS.items()}
        elif version != STATE_VERSION:
            raise ValueError(f"meter state version {version!r}: this meterwatch reads 1 and "
                             f"{STATE_VERSION}")
        return cls(history=data["history"], interval_s=int(data["interval_s"]),
                   category=data["category"], alert=data.get("alert"),
                   offsets=dict(data.get("offsets") or {}),
                   calibration=data.get("calibration") or None,
                   calibration_bundle=data.get("calibration_bundle"))

    @property
    def last_reading_ms(self) -> int:
        """The time of the meter's newest reading, epoch ms."""
        return int(self.history["last_ts"]) * 1000

    def kept_readings(self) -> list[list[float]]:
        """[epoch ms, kWh] of the readings the history keeps (its last max_window, gaps
        filled), oldest first."""
        values = self.history["values"]
        last, n = int(self.history["last_ts"]), len(values)
        return [[(last - (n - 1 - i) * self.interval_s) * 1000, v] for i, v in enumerate(values)]
