"""`meterwatch score`: replay a whole series through the worker's per-meter state and scorer.

Every reading goes through MeterHistory.push exactly as a Kafka reading would, and ready
readings are scored in batches by Detector.score_batch with the meter's calibration
(stream_app.core.calibration), so a CSV scored here and the same readings streamed through the
worker get the same flags.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream_app.core.meter_window import MeterHistory
from stream_app.core.scoring import Detector, RowContext
from stream_app.core.series import MeterSeries

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


def new_history(detector: Detector, meter_id: str, interval_s: int, **rules) -> MeterHistory:
    bundle = detector.bundle
    return MeterHistory(
        max_window=bundle.max_window,
        interval_s=interval_s,
        normaliser=bundle.normaliser_for(meter_id),
        warmup=bundle.manifest.warmup_readings,
        **rules,
    )


def score_series(detector: Detector, series: MeterSeries) -> SeriesScores:
    n = len(series.values)
    score = np.full(n, np.nan)
    z = np.full(n, np.nan)
    strength = np.full(n, np.nan)
    flagged = np.zeros(n, dtype=np.int8)
    window = np.zeros(n, dtype=np.int64)
    reason = ["warming up"] * n
    kind = [""] * n
    history = new_history(detector, series.meter_id, series.interval_s)
    calibration = None
    pending_rows: list[int] = []
    pending_windows: list[np.ndarray] = []
    pending_raw: list[np.ndarray] = []

    def flush() -> None:
        if not pending_rows:
            return
        windows = detector.trailing_windows(np.stack(pending_windows))
        rows = np.asarray(pending_rows)
        context = RowContext(np.stack(pending_raw), series.timestamps[rows],
                             [series.meter_id] * len(rows), series.interval_s,
                             [calibration] * len(rows))
        result = detector.score_batch(windows, [series.category] * len(rows), context)
        score[rows], z[rows], strength[rows] = result.score, result.z, result.strength()
        flagged[rows] = result.flagged
        for k, row in enumerate(pending_rows):
            window[row] = detector.feature_source(int(result.reason_feature[k]))[1]
            reason[row] = detector.explain(result, k) if result.flagged[k] else ""
            kind[row] = result.kind(k) if result.flagged[k] else ""
        pending_rows.clear()
        pending_windows.clear()
        pending_raw.clear()

    waiting = ""  # why a reading after a long gap is not scored yet
    for row, (ts, value) in enumerate(zip(series.timestamps.tolist(), series.values.tolist())):
        outcome = history.push(int(ts), float(value))
        if outcome.restarted:  # a gap too long to fill: the windows fill again from here
            waiting = f"windows filling again after a gap of {outcome.gap_readings} readings"
        if not history.ready and outcome.status == "ok" and waiting:
            reason[row] = waiting
        if history.ready and calibration is None:
            calibration = detector.calibration_for(series.meter_id, history, series.category)
        if outcome.status == "ok" and history.ready:
            pending_rows.append(row)
            pending_windows.append(history.normalised_window())
            pending_raw.append(np.asarray(history.values, dtype=np.float64))
            if len(pending_rows) >= BATCH:
                flush()
        elif outcome.status != "ok":
            reason[row] = outcome.reason or outcome.status
    flush()
    return SeriesScores(series, score, z, flagged, window, reason, kind, strength)
