"""Detection on the real steel-plant series with the shipped default bundle.

Anomalies of every kind are injected into the real 2018 series (fixed seed); the clean series
must raise few flags and the injected events must be flagged far more often. The figures are
printed (pytest -s) so that a change in detection quality is visible, not just pass/fail.
"""

from pathlib import Path

import numpy as np
import pytest

from stream_app.core.model_bundle import Bundle
from stream_app.core.offline import score_series
from stream_app.core.scoring import Detector
from stream_app.devtools.anomalies import inject
from stream_app.io.series_io import read_meter_csv

DEFAULT = Path(__file__).resolve().parents[2] / "onnx_models" / "default"
GRACE = 4  # readings after an event's end in which a flag still counts as detecting it

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def steel(shared_data):
    return read_meter_csv(shared_data / "steel_industry_energy" / "Steel_industry_data.csv")[0]


@pytest.fixture(scope="module")
def detector():
    return Detector(Bundle.load(DEFAULT))


def test_default_bundle_is_the_study_setup(detector):
    m = detector.bundle.manifest
    assert m.window_sizes == (96, 24, 16)
    assert m.decision.limits == {"industrial": 3.0, "general": 3.1, "late_night": 2.3,
                                 "agricultural": 1.7}
    assert "CC BY 4.0" in m.attribution and "10.24432/C52G8C" in m.attribution
    assert m.training.data[0].readings == 35_040


def test_injected_anomalies_are_flagged_and_the_clean_series_is_quiet(steel, detector):
    clean = score_series(detector, steel)
    scored = np.isfinite(clean.score)
    clean_rate = clean.flagged[scored].mean()
    figures = [f"clean series: {clean.flagged.sum()} flags in {scored.sum()} scored readings "
               f"({clean_rate:.2%})"]
    recalls = {}
    for magnitude in (1.0, 3.0):
        series, events = inject(steel, count=40, seed=1, magnitude=magnitude)
        result = score_series(detector, series)
        hits = {}
        for e in events:
            hits.setdefault(e.kind, []).append(bool(result.flagged[e.start:e.end + GRACE].any()))
        recalls[magnitude] = np.mean([h for v in hits.values() for h in v])
        inside = result.flagged[series.labels == 1].mean()
        figures.append(f"magnitude {magnitude}: event recall {recalls[magnitude]:.0%}, "
                       f"flag rate inside events {inside:.2%}; per kind "
                       + ", ".join(f"{k} {sum(v)}/{len(v)}" for k, v in sorted(hits.items())))
    print("\n" + "\n".join(figures))
    assert clean_rate < 0.005
    assert recalls[3.0] >= 0.3
    assert recalls[3.0] >= recalls[1.0]
