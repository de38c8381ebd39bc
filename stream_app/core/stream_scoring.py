"""What the worker does with one batch of readings, without Kafka: state in, alerts out.

`StreamScorer.process(readings, states)` pushes every reading into its meter's history (the
rules of meter_window), scores all ready readings of the batch in one Detector.score_batch
call, runs each meter's alert lifecycle, and returns the alerts, the readings refused by the
history rules (dead letters) and the meters' new state. The Faust agent (app.py) is a thin shell
around it: load states from the table, process, write states, send.

State per meter (a Faust table value): a MeterState (stream_app.core.meter_state: history,
alert lifecycle, category, interval, applied offsets, calibration and the bundle version it was
made with) in its versioned bytes. The category travels with the meter; a reading with another
category switches it (meters get re-classified), which is recorded in the state. The
calibration (base85 text of MeterCalibration.to_bytes, versioned) is the meter's own normal;
after a hot reload to another bundle a meter the bundle did not train on keeps its learned
profile, and its forest scores are judged by the new bundle's statistics (the old bundle's
scores do not describe the new one's).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from stream_app.core.alerts import Alert, AlertTracker, Detection
from stream_app.core.calibration import MeterCalibration
from stream_app.core.meter_state import MeterState
from stream_app.core.meter_window import HistoryRules, MeterHistory
from stream_app.core.model_bundle import Bundle
from stream_app.core.records import Reading
from stream_app.core.scoring import BatchScores, Detector, RowContext


class BundleChooser(Protocol):
    """What the scorer asks of a registry (stream_app.stream.registry.Registry, which core may
    not import): the detector for a reading's company and industry profile."""

    def resolve(self, company: str | None, profile: str | None) -> Detector: ...


@dataclass
class RowScore:
    """What scoring said about one reading of the batch (`process(..., detail=True)`)."""

    score: float
    z: float
    flagged: bool
    window: int  # the window size behind the reason
    reason: str  # why it was flagged ("" when not)
    kind: str  # "anomaly" or a data-fault kind when flagged, else ""
    strength: float  # BatchScores.strength: above 1 where flagged


@dataclass
class BatchResult:
    alerts: list[Alert] = field(default_factory=list)
    raised_by: list[int] = field(default_factory=list)  # per alert: its reading's batch index
    refused: list[tuple[int, str]] = field(default_factory=list)  # (index in batch, reason)
    states: dict[str, bytes] = field(default_factory=dict)  # meter_id -> new state
    outcomes: Counter[str] = field(default_factory=Counter)  # scored / warming_up / duplicate / ...
    score_seconds: float = 0.0
    # with detail=True, per reading of the batch: its RowScore when scored, else why not
    rows: list[RowScore | str] = field(default_factory=list)


@dataclass
class _Row:
    index: int
    reading: Reading
    values: np.ndarray  # the last max_window readings (kWh)
    window: np.ndarray  # the same, normalised
    detector: Detector  # the bundle this meter is scored with
    calibration: MeterCalibration


class StreamScorer:
    def __init__(self, detector: Detector, *, max_gap: int = 4, late_tolerance: int = 4,
                 cooldown: int = 4, update_every: int = 8,
                 registry: BundleChooser | None = None) -> None:
        """`registry` (stream_app.stream.registry.Registry), when given, picks each reading's bundle by
        company, then industry profile, then default; else `detector` scores everything."""
        self.registry = registry
        self.detector = detector
        self.timings = detector.timings  # of the last scored group
        self.bundle = detector.bundle
        self.rules: HistoryRules = {"max_gap": max_gap, "late_tolerance": late_tolerance}
        self.tracker = AlertTracker(bundle_version=self.bundle.version,
                                    model="+".join(self.bundle.models),
                                    cooldown=cooldown, update_every=update_every)

    def switch(self, detector: Detector) -> None:
        """Score with another bundle from the next batch on (hot reload). Meters keep their
        history and normalisation; new alert episodes carry the new bundle version."""
        self.detector = detector
        self.bundle = detector.bundle
        self.tracker.bundle_version = detector.bundle.version
        self.tracker.model = "+".join(detector.bundle.models)

    def detector_for(self, reading: Reading) -> Detector:
        if self.registry is None:
            return self.detector
        return self.registry.resolve(reading.company, reading.profile)

    def _history(self, reading: Reading, state: MeterState | None, bundle: Bundle) -> MeterHistory:
        size, warmup = bundle.max_window, bundle.manifest.warmup_readings
        if state is None:
            return MeterHistory(max_window=size, interval_s=reading.interval_s, warmup=warmup,
                                normaliser=bundle.normaliser_for(reading.meter_id), **self.rules)
        return MeterHistory.from_dict(state.history, max_window=size, interval_s=state.interval_s,
                                      warmup=warmup, **self.rules)

    def process(self, readings: list[Reading], states: dict[str, bytes | None],
                now_ms: int | None = None,
                positions: list[tuple[str, int]] | None = None,
                detail: bool = False) -> BatchResult:
        """Readings in arrival order; `states`: each meter's stored state (None when new).

        `positions`: each reading's source (input "topic:partition", offset). The state keeps the
        highest offset applied per source partition, so an event read again after a crash (the
        state's changelog runs ahead of committed offsets) counts as a duplicate instead of
        being applied twice or refused as out of order.

        `detail`: also say, per reading, what scoring found or why it was not scored
        (`result.rows`), as `meterwatch score` writes it."""
        result = BatchResult()
        why: list[RowScore | str] = result.rows
        produced = int(time.time() * 1000) if now_ms is None else now_ms
        histories: dict[str, MeterHistory] = {}
        applied: dict[str, dict[str, int]] = {}
        detectors: dict[str, Detector] = {}
        categories: dict[str, str] = {}
        calibrations: dict[str, MeterCalibration | None] = {}
        rows: list[_Row] = []
        for index, reading in enumerate(readings):
            meter = reading.meter_id
            if meter not in histories:
                raw = states.get(meter)
                state = MeterState.from_bytes(raw) if raw else None
                detectors[meter] = self.detector_for(reading)
                histories[meter] = self._history(reading, state, detectors[meter].bundle)
                self.tracker.load_state(meter, state.alert if state else None)
                applied[meter] = state.offsets if state else {}
                categories[meter] = state.category if state else reading.category
                calibrations[meter] = self._calibration(state, detectors[meter])
            if positions is not None:
                where, offset = positions[index]
                if offset <= applied[meter].get(where, -1):
                    result.outcomes["duplicate"] += 1
                    if detail:
                        why.append("duplicate")
                    continue
                applied[meter][where] = offset
            history = histories[meter]
            categories[meter] = reading.category
            outcome = history.push(reading.ts_s, reading.value)
            if history.ready and calibrations[meter] is None:
                calibrations[meter] = detectors[meter].calibration_for(meter, history,
                                                                       reading.category)
            if outcome.restarted:
                result.alerts.append(self._gap_alert(reading, outcome.gap_readings, produced))
                result.raised_by.append(index)
            if detail:
                why.append(outcome.reason or outcome.status if outcome.status != "ok"
                           else "" if history.ready else "warming up")
            if outcome.status == "rejected":
                result.refused.append((index, outcome.reason))
                result.outcomes["refused"] += 1
            elif outcome.status != "ok":
                result.outcomes[outcome.status] += 1
            elif not history.ready:
                result.outcomes["warming_up"] += 1
            else:
                calibration = calibrations[meter]
                assert calibration is not None  # set above once the history is ready
                rows.append(_Row(index, reading, np.asarray(history.values),
                                 history.normalised_window(), detectors[meter], calibration))
                result.outcomes["scored"] += 1
        if rows:
            started = time.perf_counter()
            self._score(rows, histories, result, produced, detail)
            result.score_seconds = time.perf_counter() - started
        for meter, history in histories.items():
            cal = calibrations[meter]
            result.states[meter] = MeterState(
                history=history.to_dict(), interval_s=history.interval_s,
                category=categories[meter], alert=self.tracker.state(meter),
                offsets=applied[meter], calibration=cal.to_text() if cal is not None else None,
                calibration_bundle=detectors[meter].bundle.version).to_bytes()
            self.tracker.load_state(meter, None)  # the table holds it; keep no second copy
        return result

    @staticmethod
    def _calibration(state: MeterState | None, detector: Detector) -> MeterCalibration | None:
        if state is None or not state.calibration:
            return None
        cal = MeterCalibration.from_text(state.calibration)
        if state.calibration_bundle != detector.bundle.version:
            cal.forest_mean = cal.forest_top = float("nan")  # another bundle's scores
        return cal

    def _score(self, rows: list[_Row], histories: dict[str, MeterHistory], result: BatchResult,
               produced: int, detail: bool) -> None:
        """One score_batch per bundle in use; a meter's rows stay in time order."""
        groups: dict[int, list[_Row]] = {}
        for row in rows:
            groups.setdefault(id(row.detector), []).append(row)
        for group in groups.values():
            detector = group[0].detector
            self.tracker.bundle_version = detector.bundle.version
            self.tracker.model = "+".join(detector.bundle.models)
            windows = detector.trailing_windows(np.stack([r.window for r in group]))
            context = RowContext(
                np.stack([r.values for r in group]),
                np.asarray([r.reading.ts_s for r in group], dtype=np.int64),
                [r.reading.meter_id for r in group],
                np.asarray([r.reading.interval_s for r in group], dtype=np.int64),
                [r.calibration for r in group])
            scores = detector.score_batch(windows, [r.reading.category for r in group], context)
            strength = scores.strength() if detail else None
            for k, row in enumerate(group):
                flagged = bool(scores.flagged[k])
                details = self._detection(k, row, scores, histories) if flagged else None
                alert = self.tracker.observe(row.reading.meter_id, row.reading.ts, flagged,
                                             details, produced_at_ms=produced)
                if alert is not None:
                    result.alerts.append(alert)
                    result.raised_by.append(row.index)
                if strength is not None:
                    result.rows[row.index] = RowScore(
                        float(scores.score[k]), float(scores.z[k]), flagged,
                        detector.feature_source(int(scores.reason_feature[k]))[1],
                        details.reason if details else "", scores.kind(k) if flagged else "",
                        float(strength[k]))
            self.timings = detector.timings

    def _detection(self, k: int, row: _Row, scores: BatchScores,
                   histories: dict[str, MeterHistory]) -> Detection:
        detector = row.detector
        feature = int(scores.reason_feature[k])
        model, w, _ = detector.feature_source(feature)
        actual = row.values[-w:]
        normaliser = histories[row.reading.meter_id].normaliser
        assert normaliser is not None  # a scored meter has its normaliser
        expected = detector.expected_readings((model, w), k, scores, actual, normaliser)
        errors = dict(zip(detector.error_names, np.round(scores.errors[k], 6).tolist(),
                          strict=True))
        reading = row.reading
        zscore, threshold = scores.measure(k)  # of the branch that flagged it
        lower: tuple[float, ...] = ()
        upper: tuple[float, ...] = ()
        profile = scores.profiles[k] if scores.profiles else None
        if profile is not None:  # what this meter usually reads at these hours of the week
            ts = reading.ts_s - np.arange(w - 1, -1, -1) * reading.interval_s
            band = profile.band(ts)
            expected, lower, upper = band[0], _rounded(band[1]), _rounded(band[2])
        return Detection(
            category=reading.category, window_size=w, model=model,
            zscore=zscore, threshold=threshold,
            if_score=round(float(scores.score[k]), 6), dtw_error=errors,
            expected=_rounded(expected), actual=_rounded(actual),
            site=reading.site, company=reading.company, interval_s=reading.interval_s,
            reason=detector.explain(scores, k), kind=scores.kind(k),
            lower=lower, upper=upper,
        )

    def _gap_alert(self, reading: Reading, missing: int, produced: int) -> Alert:
        """A gap too long to interpolate is reported once; the meter's history restarts.
        zscore / threshold: readings missing / the most that are interpolated (at least 1)."""
        gap_start = reading.ts - (missing + 1) * reading.interval_s * 1000
        limit = float(max(self.rules["max_gap"], 1))
        return Alert.from_rule(
            "gap", "open", reading.meter_id, opened_ms=reading.ts, start_ms=gap_start,
            end_ms=reading.ts, last_seen_ms=reading.ts, count=missing,
            measure=(float(missing), limit),
            severity="medium", reason=f"{missing} readings missing; the meter's history restarts",
            where=(reading.category, reading.site, reading.company),
            bundle_version=self.bundle.version, produced_ms=produced)


def _rounded(values: np.ndarray) -> tuple[float, ...]:
    return tuple(np.round(np.asarray(values, dtype=np.float64), 4).tolist())
