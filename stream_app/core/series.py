"""A meter's readings on a regular grid: what every reader builds and every scorer reads."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stream_app.core.grid import SourceRows


@dataclass
class MeterSeries:
    """One meter's readings on a regular grid, in time order. A gap longer than the reader's
    `max_gap` is left out: the series is then segments of consecutive readings
    (`segment_starts`), and no window spans the step between two of them."""

    meter_id: str
    category: str
    timestamps: np.ndarray  # int64 epoch seconds, UTC
    values: np.ndarray  # float64 energy per interval (kWh), never negative
    interval_s: int
    labels: np.ndarray | None = None  # int8 0/1, 1 = anomalous reading
    repairs: list[str] = field(default_factory=list)
    source: SourceRows | None = None  # the file rows behind it, when read from a file

    def __post_init__(self) -> None:
        self.timestamps = np.ascontiguousarray(self.timestamps, dtype=np.int64)
        self.values = np.ascontiguousarray(self.values, dtype=np.float64)
        if self.labels is not None:
            self.labels = np.ascontiguousarray(self.labels, dtype=np.int8)
        n = len(self.timestamps)
        if len(self.values) != n or (self.labels is not None and len(self.labels) != n):
            raise ValueError("timestamps, values and labels must have the same length")

    def __len__(self) -> int:
        return len(self.values)

    def segment_starts(self) -> np.ndarray:
        """int64 index of the first reading of each segment (0 first): where the step to the
        reading before is longer than the interval."""
        breaks = np.flatnonzero(np.diff(self.timestamps) != self.interval_s) + 1
        starts: np.ndarray = np.concatenate(([0], breaks)).astype(np.int64)
        return starts

    def segments(self) -> list[tuple[int, int]]:
        """(start, stop) of each run of consecutive readings, in time order."""
        starts = self.segment_starts().tolist()
        return list(zip(starts, starts[1:] + [len(self.values)]))
