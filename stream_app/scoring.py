"""score_batch: the one scoring pipeline, shared by training calibration, `score` and the worker.

For each reading to score there is one row: the trailing window of every selected size of the
meter's normalised readings, all ending at that reading. Per batch of rows:

1. one ONNX Runtime call per (model, window size) reconstructs the windows;
2. one DTW call per window size gives the reconstruction error of every (window, model) pair;
3. features = log(DTW error), in the bundle's feature order (`<model>/<window>`);
4. the Isolation Forest scores the feature rows, floored at their training median (only excess
   error counts; higher = more anomalous);
5. the score's z-score against normal training rows is compared with the category's limit.

Scoring (steps 1-4) is separate from deciding (step 5). The reason given for a flag is the
feature whose error is furthest above its typical value on normal training data.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stream_app.dtw import dtw_batch
from stream_app.inference import Reconstructor
from stream_app.model_bundle import Bundle

LOG_FLOOR = 1e-6  # keeps log() finite for a perfect reconstruction


@dataclass(frozen=True)
class BatchScores:
    errors: np.ndarray  # (n, n_features) DTW errors
    score: np.ndarray  # (n,) Isolation Forest score, higher = more anomalous
    z: np.ndarray  # (n,) z-score of the score against normal training rows
    limit: np.ndarray  # (n,) the category's z limit
    flagged: np.ndarray  # (n,) bool
    reason_feature: np.ndarray  # (n,) index into feature_order of the most unusual error
    excess: np.ndarray  # (n,) that feature's error / its typical error
    reconstructions: dict  # (model, window) -> (n, window) float32 normalised reconstruction


def reconstruction_errors(
    reconstructor: Reconstructor, models: Sequence[str], windows: dict[int, np.ndarray],
    band: int | None, normalise: bool, timings: dict | None = None, measure: str = "dtw",
) -> tuple[np.ndarray, dict]:
    """DTW errors (n, n_features) in feature order (window-major, then model) + reconstructions.

    `measure` "mse" gives the mean squared error instead (only for the DTW-vs-MSE ablation).
    `timings`, when given, receives the seconds spent in inference and in DTW."""
    n = len(next(iter(windows.values())))
    errors = np.empty((n, len(models) * len(windows)), dtype=np.float64)
    recons = {}
    column = 0
    spent = {"inference": 0.0, "dtw": 0.0}
    for w, x in windows.items():
        started = time.perf_counter()
        outs = [reconstructor.reconstruct(m, w, x) for m in models]
        spent["inference"] += time.perf_counter() - started
        recons.update({(m, w): r for m, r in zip(models, outs, strict=True)})
        left = np.tile(x.astype(np.float64), (len(models), 1))
        right = np.concatenate(outs).astype(np.float64)
        started = time.perf_counter()
        if measure == "mse":
            dist = np.mean((left - right) ** 2, axis=1)
        else:
            dist = dtw_batch(left, right, band=band, normalise=normalise)
        spent["dtw"] += time.perf_counter() - started
        errors[:, column:column + len(models)] = dist.reshape(len(models), n).T
        column += len(models)
    if timings is not None:
        timings.update(spent)
    return errors, recons


def log_errors(errors: np.ndarray) -> np.ndarray:
    return np.log(errors + LOG_FLOOR)


def forest_features(log_err: np.ndarray, median: np.ndarray) -> np.ndarray:
    """What the Isolation Forest sees: log errors, floored at their training median.

    Only an error above the typical is evidence of an anomaly; without the floor the forest
    would also isolate windows reconstructed unusually well (an idle pump, a quiet night)."""
    return np.maximum(log_err, median)


class Detector:
    """A loaded bundle plus its ONNX sessions. Thread-compatible, not thread-safe."""

    def __init__(self, bundle: Bundle, providers: Sequence[str] | None = None, threads: int = 1):
        self.bundle = bundle
        self.reconstructor = Reconstructor(bundle, providers, threads)
        manifest = bundle.manifest
        self.feature_order: list[str] = manifest["feature_order"]
        self.band = manifest["dtw"]["band"]
        self.normalise_dtw = manifest["dtw"]["normalise"]
        self.measure = manifest["dtw"].get("measure", "dtw")
        stats = manifest["feature_stats"]
        self._median = np.asarray(stats["median"], dtype=np.float64)
        self._scale = np.asarray(stats["scale"], dtype=np.float64)
        self.timings = {"inference": 0.0, "dtw": 0.0}  # of the last batch

    def trailing_windows(self, rows: np.ndarray) -> dict[int, np.ndarray]:
        """Window of every size ending at each row's last reading, from (n, max_window) rows."""
        rows = np.asarray(rows, dtype=np.float32)
        return {w: np.ascontiguousarray(rows[:, -w:]) for w in self.bundle.window_sizes}

    def errors(self, windows: dict[int, np.ndarray]) -> tuple[np.ndarray, dict]:
        return reconstruction_errors(self.reconstructor, self.bundle.models, windows,
                                     self.band, self.normalise_dtw, self.timings, self.measure)

    @staticmethod
    def features(errors: np.ndarray) -> np.ndarray:
        return log_errors(errors)

    def score_batch(self, windows: dict[int, np.ndarray], categories: Sequence[str]) -> BatchScores:
        errors, recons = self.errors(windows)
        feats = self.features(errors)
        score = self.bundle.forest.score(forest_features(feats, self._median))
        z, limit, flagged = self.bundle.limits.decide(score, categories)
        robust = (feats - self._median) / self._scale
        reason = np.argmax(robust, axis=1)
        excess = np.exp(feats[np.arange(len(feats)), reason] - self._median[reason])
        return BatchScores(errors, score, z, limit, flagged, reason, excess, recons)

    def reason_text(self, feature_index: int, excess: float) -> str:
        model, window = self.feature_order[feature_index].split("/")
        return f"window {window} ({model}): {self.measure.upper()} error {excess:.1f}x typical"

    def expected_readings(
        self, model_window: tuple[str, int], row: int, scores: BatchScores,
        actual: np.ndarray, normaliser,
    ) -> np.ndarray:
        """What the model expected for the window's readings (kWh): its reconstruction."""
        return np.maximum(normaliser.invert(scores.reconstructions[model_window][row]), 0.0)
