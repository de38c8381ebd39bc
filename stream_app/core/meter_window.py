"""One meter's recent history: the state the stream worker keeps per meter, and `score` replays.

A meter keeps its last `max_window` readings on the interval grid (the trailing window of every
selected size ends at the newest one), its last timestamp and its normalisation. Rules, applied the same
way by `meterwatch score` and the worker:

- duplicate (same timestamp, same value): dropped; same timestamp, other value: rejected;
- late reading (older than the last one) within `late_tolerance` intervals whose slot is still in
  the history: it replaces the interpolated value there (the readings after it are not re-scored);
  older than that: rejected with reason `out_of_order`;
- timestamps off the interval grid by more than 10 % of the interval: rejected (`off_grid`);
- a gap of up to `max_gap` missing readings is filled by linear interpolation; a longer gap
  restarts the history (the meter needs `max_window` readings again) and is reported
  (`meterwatch score` uses `max_gap=0`: its reader has interpolated what it may, so every step
  left in a series, a register's drop or a gap longer than its --max-gap, is a split);
- normalisation: the meter's training statistics from the bundle, else fitted on its first
  `warmup` consecutive readings (no scores while warming up; a gap too long to fill starts the
  warm-up again). Those readings stay (`warm_values`, the newest at `warm_end_ts`) until the
  scorer takes them to calibrate the meter (stream_app.core.calibration).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict

import numpy as np

from stream_app.core.preprocessing import Normaliser

OFF_GRID_TOLERANCE = 0.1  # fraction of an interval a timestamp may be late or early


class HistoryRules(TypedDict, total=False):
    """The rules a caller may set for a history (MeterHistory's fields of these names)."""

    max_gap: int
    late_tolerance: int


@dataclass
class PushResult:
    status: str  # "ok" | "duplicate" | "rejected" | "late_applied"
    reason: str = ""
    gap_readings: int = 0  # missing readings before this one (filled or not)
    restarted: bool = False  # the gap was too long: history restarted


@dataclass
class MeterHistory:
    max_window: int
    interval_s: int
    normaliser: Normaliser | None = None
    warmup: int = 192
    max_gap: int = 4
    late_tolerance: int = 4
    last_ts: int | None = None
    values: list[float] = field(default_factory=list)
    filled: list[bool] = field(default_factory=list)
    warm_values: list[float] = field(default_factory=list)
    warm_end_ts: int | None = None  # timestamp of the last warm-up reading, once fitted

    @property
    def ready(self) -> bool:
        return self.normaliser is not None and len(self.values) >= self.max_window

    def push(self, ts: int, value: float) -> PushResult:
        if self.last_ts is None:
            self._append(ts, value)
            return PushResult("ok")
        steps, offset = divmod(ts - self.last_ts, self.interval_s)
        if offset > self.interval_s * OFF_GRID_TOLERANCE:
            if self.interval_s - offset > self.interval_s * OFF_GRID_TOLERANCE:
                return PushResult("rejected", "off_grid: timestamp is not on the meter's interval grid")
            steps += 1
        if steps == 0:
            if self.values and self.values[-1] == value:
                return PushResult("duplicate")
            return PushResult("rejected", "conflicting_duplicate: same timestamp, another value")
        if steps < 0:
            return self._late(-steps, value)
        missing = steps - 1
        if missing > self.max_gap:
            self.values, self.filled = [], []
            if self.normaliser is None:
                self.warm_values = []  # the warm-up's readings are consecutive
            self._append(self.last_ts + steps * self.interval_s, value)
            return PushResult("ok", gap_readings=missing, restarted=True)
        if missing:
            start = self.values[-1]
            for k in range(1, missing + 1):
                self._append_value(start + (value - start) * k / steps, filled=True,
                                   ts=self.last_ts + k * self.interval_s)
        self._append(self.last_ts + steps * self.interval_s, value)
        return PushResult("ok", gap_readings=missing)

    def _late(self, back: int, value: float) -> PushResult:
        index = len(self.values) - 1 - back
        if back > self.late_tolerance or index < 0:
            return PushResult("rejected", f"out_of_order: {back} intervals older than the last reading")
        if not self.filled[index]:
            if self.values[index] == value:
                return PushResult("duplicate")
            return PushResult("rejected", "conflicting_duplicate: that slot already has a reading")
        self.values[index] = value
        self.filled[index] = False
        return PushResult("late_applied")

    def _append(self, ts: int, value: float) -> None:
        self._append_value(value, filled=False, ts=ts)
        self.last_ts = ts

    def _append_value(self, value: float, filled: bool, ts: int) -> None:
        if self.normaliser is None:
            self.warm_values.append(float(value))
            if len(self.warm_values) >= self.warmup:
                self.normaliser = Normaliser.fit(np.asarray(self.warm_values))
                self.warm_end_ts = int(ts)
        self.values.append(float(value))
        self.filled.append(filled)
        if len(self.values) > self.max_window:
            del self.values[0]
            del self.filled[0]

    def take_warmup(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The warm-up's readings (kWh) and their timestamps, once, after the normaliser was
        fitted on them; None when there are none (a meter the bundle normalises)."""
        if self.warm_end_ts is None or not self.warm_values:
            return None
        values = np.asarray(self.warm_values, dtype=np.float64)
        ts = self.warm_end_ts - np.arange(len(values) - 1, -1, -1, dtype=np.int64) * \
            self.interval_s
        self.warm_values, self.warm_end_ts = [], None
        return values, ts

    def normalised_window(self) -> np.ndarray:
        """The last max_window readings, normalised (float32). Only when ready."""
        assert self.normaliser is not None, "a history is scored only when ready"
        return self.normaliser.apply(np.asarray(self.values, dtype=np.float64))

    def to_dict(self) -> dict[str, Any]:
        return {
            "last_ts": self.last_ts,
            "values": self.values,
            # where the values are interpolated (mostly nowhere): a third of the bytes of a
            # flag per value, which kept a meter's state over 4 KB
            "filled_at": [i for i, f in enumerate(self.filled) if f],
            "normaliser": self.normaliser.to_dict() if self.normaliser else None,
            "warm_values": self.warm_values,
            "warm_end_ts": self.warm_end_ts,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], **config: int) -> MeterHistory:
        """`to_dict`'s layout, or the first one (a flag per value, "filled")."""
        norm = data["normaliser"]
        if "filled_at" in data:
            filled = [False] * len(data["values"])
            for i in data["filled_at"]:
                filled[i] = True
        else:
            filled = [bool(f) for f in data["filled"]]
        return cls(
            **config,
            normaliser=Normaliser.from_dict(norm) if norm else None,
            last_ts=data["last_ts"],
            # a bundle with shorter windows may have been loaded since: keep what fits
            values=list(data["values"])[-config["max_window"]:],
            filled=filled[-config["max_window"]:],
            warm_values=list(data["warm_values"]),
            warm_end_ts=data.get("warm_end_ts"),
        )
