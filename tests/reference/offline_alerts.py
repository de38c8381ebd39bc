"""The alerts a worker must send, derived from `meterwatch score`'s offline flags.

The stream and offline scoring share one detector; this replays the offline result through the
same alert lifecycle (AlertTracker) so a stream test can compare the alerts it received:
`expected_alerts` the (alert_id, status) of the opening and resolving ones, `expected_messages`
every message, `update`s included, as consumers de-duplicate them: (alert_id, status,
last_seen).
"""

from __future__ import annotations

import numpy as np

from stream_app.core.alerts import AlertTracker, Detection
from stream_app.core.offline import score_series
from stream_app.core.scoring import Detector


def expected_alerts(bundle, series_list) -> set[tuple[str, str]]:
    """(alert_id, status) of the opening and resolving alerts `score`'s flags give."""
    return {(alert_id, status) for alert_id, status, _ in expected_messages(bundle, series_list)
            if status != "update"}


def expected_messages(bundle, series_list) -> set[tuple[str, str, str]]:
    """(alert_id, status, last_seen) of every alert message `score`'s flags give: open, every
    update (which depends on the severity band of each flagged reading) and resolved."""
    detector = _Recording(Detector(bundle))
    tracker = AlertTracker(bundle_version=bundle.version, model="+".join(bundle.models))
    out = set()
    for s in series_list:
        detector.rows.clear()
        result = score_series(detector, s)
        scored = np.flatnonzero(np.isfinite(result.score))
        assert len(scored) == len(detector.rows)  # score_series scores rows in time order
        for i, (scores, k) in zip(scored, detector.rows, strict=True):
            flagged = bool(result.flagged[i])
            det = None
            if flagged:
                zscore, threshold = scores.measure(k)  # as the alert states them
                det = Detection(s.category, int(result.window[i]), "", zscore, threshold,
                                float(result.score[i]), kind=result.kind[i])
            alert = tracker.observe(s.meter_id, int(s.timestamps[i]) * 1000, flagged, det)
            if alert is not None:
                out.add((alert.alert_id, alert.status, alert.last_seen))
    return out


class _Recording:
    """A Detector that keeps, row by row, what `score_batch` gave (BatchScores, row)."""

    def __init__(self, detector: Detector):
        self._detector = detector
        self.rows: list = []

    def __getattr__(self, name):
        return getattr(self._detector, name)

    def score_batch(self, *args, **kwargs):
        scores = self._detector.score_batch(*args, **kwargs)
        self.rows.extend((scores, k) for k in range(len(scores.flagged)))
        return scores
