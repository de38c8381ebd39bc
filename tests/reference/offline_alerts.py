"""The alerts a worker must send, derived from `meterwatch score`'s offline flags.

The stream and offline scoring share one detector; this replays the offline result through the
same alert lifecycle (AlertTracker) so a stream test can compare the alert ids it received.
"""

from __future__ import annotations

import numpy as np

from stream_app.core.alerts import AlertTracker, Detection
from stream_app.core.offline import score_series
from stream_app.core.scoring import Detector


def expected_alerts(bundle, series_list) -> set[tuple[str, str]]:
    """(alert_id, status) of the opening and resolving alerts `score`'s flags give."""
    detector = Detector(bundle)
    tracker = AlertTracker(bundle_version=bundle.version, model="+".join(bundle.models))
    out = set()
    for s in series_list:
        result = score_series(detector, s)
        limit = bundle.limits.limit(s.category)
        for i in np.flatnonzero(np.isfinite(result.score)):
            flagged = bool(result.flagged[i])
            det = Detection(s.category, int(result.window[i]), "", float(result.z[i]), limit,
                            float(result.score[i]), kind=result.kind[i]) if flagged else None
            alert = tracker.observe(s.meter_id, int(s.timestamps[i]) * 1000, flagged, det)
            if alert is not None and alert.status != "update":
                out.add((alert.alert_id, alert.status))
    return out
