"""`meterwatch score`: replay a whole series through the worker's batch path.

The series' readings go, a batch at a time, through `StreamScorer.process`, the function the
worker calls for every batch it reads (state in bytes between batches and all), so a CSV scored
here and the same readings streamed through the worker get the same flags and alerts. The
reader has already interpolated the short gaps it may, so every step longer than the interval
left in a series is a split the windows must not span (`max_gap=0` here).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream_app.core.records import Reading
from stream_app.core.scoring import Detector
from stream_app.core.series import MeterSeries
from stream_app.core.stream_scoring import RowScore, StreamScorer

BATCH = 512


@dataclass
class SeriesScores:
    series: MeterSeries
    score: np.ndarray  # NaN where the reading was not scored (warming up)
    z: np.ndarray
    flagged: np.ndarray  # int8
    window: np.ndarray  # window size behind the reason, 0 when not scored
    reason: list[str]
    kind: list[str]  # "anomaly" or a data-fault kind where flagged, else ""
    strength: np.ndarray  # BatchScores.strength: above 1 where flagged, NaN where not scored


def score_series(detector: Detector, series: MeterSeries) -> SeriesScores:
    n = len(series.values)
    score = np.full(n, np.nan)
    z = np.full(n, np.nan)
    strength = np.full(n, np.nan)
    flagged = np.zeros(n, dtype=np.int8)
    window = np.zeros(n, dtype=np.int64)
    reason = ["warming up"] * n
    kind = [""] * n
    scorer = StreamScorer(detector, max_gap=0)
    meter, interval = series.meter_id, int(series.interval_s)
    readings = [Reading(meter, int(ts) * 1000, value, series.category, interval_s=interval)
                for ts, value in zip(series.timestamps.tolist(), series.values.tolist())]
    states: dict[str, bytes | None] = {meter: None}
    waiting = ""  # why a reading after a long gap is not scored yet
    for at in range(0, n, BATCH):
        result = scorer.process(readings[at:at + BATCH], states, now_ms=0, detail=True)
        states[meter] = result.states[meter]
        gaps = {i: a.window_size for a, i in zip(result.alerts, result.raised_by)
                if a.kind == "gap"}
        for i, row in enumerate(result.rows):
            if i in gaps:  # a gap the windows do not span: they fill again from here
                waiting = f"windows filling again after a gap of {gaps[i]} readings"
            if isinstance(row, RowScore):
                k = at + i
                score[k], z[k], flagged[k], window[k] = row.score, row.z, row.flagged, row.window
                reason[k], kind[k], strength[k] = row.reason, row.kind, row.strength
            elif row != "warming up" or waiting:
                reason[at + i] = waiting if row == "warming up" else row
    return SeriesScores(series, score, z, flagged, window, reason, kind, strength)
