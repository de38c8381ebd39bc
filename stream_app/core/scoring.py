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

from stream_app.core.dtw import dtw_batch
from stream_app.core.evidence import Evidence, alert_kind, assess
from stream_app.core.inference import Reconstructor
from stream_app.core.model_bundle import Bundle

LOG_FLOOR = 1e-6  # keeps log() finite for a perfect reconstruction


@dataclass(frozen=True)
class BatchScores:
    errors: np.ndarray  # (n, n_features) DTW errors (then the recent readings' errors)
    score: np.ndarray  # (n,) Isolation Forest score, higher = more anomalous
    z: np.ndarray  # (n,) z-score of the score against normal training rows
    limit: np.ndarray  # (n,) the category's z limit
    flagged: np.ndarray  # (n,) bool: forest, profile branch or a data-fault rule
    reason_feature: np.ndarray  # (n,) index into feature_order of the most unusual error
    excess: np.ndarray  # (n,) that feature's error / its typical error
    reconstructions: dict  # (model, window) -> (n, window) float32 normalised reconstruction
    branch: tuple[str, ...]  # per row: what flagged it ("forest", "profile", a fault kind) or ""
    evidence: Evidence | None = None  # profile and fault rules, when rows came with context

    def kind(self, row: int) -> str:
        """The alert kind of a flagged row (stream_app.core.evidence.alert_kind)."""
        return alert_kind(self.branch[row])


@dataclass(frozen=True)
class RowContext:
    """What the evidence needs beside the normalised windows: raw readings and their time."""

    values: np.ndarray  # (n, L) the trailing readings, kWh
    end_ts_s: np.ndarray  # (n,) epoch seconds of each row's newest reading
    meter_ids: Sequence[str]
    interval_s: np.ndarray | int  # one for all rows, or one per row


def reconstruction_errors(
    reconstructor: Reconstructor, models: Sequence[str], windows: dict[int, np.ndarray],
    band: int | None, normalise: bool, timings: dict | None = None, measure: str = "dtw",
    recent: int = 0,
) -> tuple[np.ndarray, dict]:
    """DTW errors (n, n_features) in feature order (window-major, then model) + reconstructions.

    With `recent` > 0, as many columns again follow, in the same order: the mean squared error
    of the window's last `recent` readings. A window-level DTW error cannot say where in the
    window the anomaly is; the error of the newest readings starts and ends an alert with it.
    `measure` "mse" gives the mean squared error instead (only for the DTW-vs-MSE ablation).
    `timings`, when given, receives the seconds spent in inference and in DTW."""
    n = len(next(iter(windows.values())))
    pairs = len(models) * len(windows)
    errors = np.empty((n, pairs * (2 if recent else 1)), dtype=np.float64)
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
        if recent:
            tail = np.mean((left[:, -recent:] - right[:, -recent:]) ** 2, axis=1)
            errors[:, pairs + column:pairs + column + len(models)] = tail.reshape(
                len(models), n).T
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
        self.feature_order: list[str] = list(manifest.feature_order)
        self.band = manifest.dtw.band
        self.normalise_dtw = manifest.dtw.normalise
        self.measure = manifest.dtw.measure
        self._median = np.asarray(manifest.feature_stats.median, dtype=np.float64)
        self._scale = np.asarray(manifest.feature_stats.scale, dtype=np.float64)
        evidence = manifest.evidence
        self.recent = evidence.recent_readings
        self.profile_limit = (np.inf if evidence.profile_limit is None
                              else evidence.profile_limit)
        self.timings = {"inference": 0.0, "dtw": 0.0}  # of the last batch

    def trailing_windows(self, rows: np.ndarray) -> dict[int, np.ndarray]:
        """Window of every size ending at each row's last reading, from (n, max_window) rows."""
        rows = np.asarray(rows, dtype=np.float32)
        return {w: np.ascontiguousarray(rows[:, -w:]) for w in self.bundle.window_sizes}

    def errors(self, windows: dict[int, np.ndarray]) -> tuple[np.ndarray, dict]:
        return reconstruction_errors(self.reconstructor, self.bundle.models, windows,
                                     self.band, self.normalise_dtw, self.timings, self.measure,
                                     self.recent)

    @staticmethod
    def features(errors: np.ndarray) -> np.ndarray:
        return log_errors(errors)

    def score_batch(self, windows: dict[int, np.ndarray], categories: Sequence[str],
                    context: RowContext | None = None) -> BatchScores:
        errors, recons = self.errors(windows)
        feats = self.features(errors)
        score = self.bundle.forest.score(forest_features(feats, self._median))
        z, limit, forest_flag = self.bundle.limits.decide(score, categories)
        robust = (feats - self._median) / self._scale
        reason = np.argmax(robust, axis=1)
        excess = np.exp(feats[np.arange(len(feats)), reason] - self._median[reason])
        ev = None
        fault, profile_flag = [""] * len(score), np.zeros(len(score), dtype=bool)
        if context is not None:
            ev = assess(context.values, context.end_ts_s, context.interval_s,
                        self.bundle.profiles, context.meter_ids, self.profile_limit)
            fault, profile_flag = ev.fault, ev.profile_flag
        branch = tuple(f or ("forest" if ff else "profile" if pf else "")
                       for f, ff, pf in zip(fault, forest_flag, profile_flag, strict=True))
        flagged = np.asarray([b != "" for b in branch], dtype=bool)
        return BatchScores(errors, score, z, limit, flagged, reason, excess, recons, branch, ev)

    def feature_source(self, feature_index: int) -> tuple[str, int, bool]:
        """(model, window, recent?) of a forest feature."""
        n = len(self.feature_order)
        model, window = self.feature_order[feature_index % n].split("/")
        return model, int(window), feature_index >= n

    @property
    def error_names(self) -> list[str]:
        """Names of the error columns, as alerts show them: "lstm@96", "lstm@96@last4"."""
        names = [f.replace("/", "@") for f in self.feature_order]
        return names + [f"{f}@last{self.recent}" for f in names] if self.recent else names

    def reason_text(self, feature_index: int, excess: float) -> str:
        model, window, recent = self.feature_source(feature_index)
        if recent:
            return (f"window {window} ({model}): error of the last {self.recent} readings "
                    f"{excess:.1f}x typical")
        return f"window {window} ({model}): {self.measure.upper()} error {excess:.1f}x typical"

    def explain(self, scores: BatchScores, row: int) -> str:
        """Why row `row` was flagged, in one line."""
        branch = scores.branch[row]
        if branch == "forest":
            return self.reason_text(int(scores.reason_feature[row]), float(scores.excess[row]))
        ev = scores.evidence
        if branch == "profile":
            return (f"time of week: the last readings are {ev.profile_score[row]:.1f} spreads "
                    f"from this hour's usual {ev.expected[row]:.3g} kWh (limit "
                    f"{ev.profile_limit[row]:.1f})")
        return ev.fault_reason[row]

    def expected_readings(
        self, model_window: tuple[str, int], row: int, scores: BatchScores,
        actual: np.ndarray, normaliser,
    ) -> np.ndarray:
        """What the model expected for the window's readings (kWh): its reconstruction."""
        return np.maximum(normaliser.invert(scores.reconstructions[model_window][row]), 0.0)
