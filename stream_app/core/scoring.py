"""score_batch: the one scoring pipeline, shared by training calibration, `score` and the worker.

For each reading to score there is one row: the trailing window of every selected size of the
meter's normalised readings, all ending at that reading. Per batch of rows:

1. one ONNX Runtime call per (model, window size) reconstructs the windows;
2. one DTW call per window size gives the reconstruction error of every (window, model) pair;
3. features = log(DTW error), in the bundle's feature order (`<model>/<window>`);
4. the Isolation Forest scores the feature rows, floored at their training median (only excess
   error counts; higher = more anomalous);
5. the score's z-score against normal scores is compared with the category's limit: the
   meter's own normal scores for a meter the bundle has never seen, else the bundle's of its
   category (stream_app.core.calibration); with a profile, the forest flags only a reading
   outside its hour of the week's band (an unusual window whose newest reading is usual is
   where an anomaly is not: on LEAD such flags were all false);
6. the evidence (stream_app.core.evidence): the time-of-week branch and the data-fault rules,
   OR-ed with the forest's decision.

Scoring (steps 1-4) is separate from deciding (steps 5-6). Rows that come with their meters'
calibrations are decided in waves, a meter's rows one UTC day at a time in time order, each
wave with the calibrations as they stood at the start of its day; the rows' outcomes are then
learned (MeterCalibration.observe). The reason given for a forest flag is the feature whose
error is furthest above its typical value on normal training data.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import zip_longest

import numpy as np

from stream_app.core.calibration import DAY_S, MeterCalibration
from stream_app.core.dtw import dtw_batch
from stream_app.core.evidence import (
    FAULT_KINDS,
    JUMP_BASE,
    RATIO_OFFSET,
    Evidence,
    MeterProfile,
    ProfileTable,
    alert_kind,
    assess,
    hour_of_week,
    jump_score,
    jumps,
)
from stream_app.core.inference import Reconstructor
from stream_app.core.meter_window import MeterHistory
from stream_app.core.model_bundle import Bundle
from stream_app.core.preprocessing import Normaliser

LOG_FLOOR = 1e-6  # keeps log() finite for a perfect reconstruction
MIN_STD_SHARE = 0.25  # a meter's own spreads (features, forest score) are at least this share
# of the bundle's
MIN_WARMUP_WINDOWS = 24  # fewer warm-up windows: an unseen meter is judged by the bundle's scores


@dataclass(frozen=True)
class BatchScores:
    errors: np.ndarray  # (n, n_features) DTW errors (then the recent readings' errors)
    score: np.ndarray  # (n,) Isolation Forest score, higher = more anomalous
    z: np.ndarray  # (n,) z-score of the score against normal training rows
    limit: np.ndarray  # (n,) the category's z limit
    flagged: np.ndarray  # (n,) bool: forest, profile branch or a data-fault rule
    reason_feature: np.ndarray  # (n,) index into feature_order of the most unusual error
    excess: np.ndarray  # (n,) that feature's error / its typical error
    # (model, window) -> (n, window) float32 normalised reconstruction
    reconstructions: dict[tuple[str, int], np.ndarray]
    branch: tuple[str, ...]  # per row: what flagged it ("forest", "profile", a fault kind) or ""
    evidence: Evidence | None = None  # profile and fault rules, when rows came with context
    profiles: tuple[MeterProfile | None, ...] = ()  # per row: the profile it was judged with

    def kind(self, row: int) -> str:
        """The alert kind of a flagged row (stream_app.core.evidence.alert_kind)."""
        return alert_kind(self.branch[row])

    def strength(self) -> np.ndarray:
        """(n,) how far each row goes toward a flag: the largest score / limit over the
        forest, the time-of-week and jump branches and the fault rules (above 1 where one
        flags). Every limit is set at the same false-alert budget, so the ratios rank rows
        across branches (the quality benchmark's AUC-PR ranks by it)."""
        ratios = [np.asarray(self.z, np.float64) / np.asarray(self.limit, np.float64)]
        ev = self.evidence
        if ev is not None:
            ratios.append(ev.profile_score / ev.profile_limit)
            ratios.append(ev.jump_score / ev.jump_limit)
            holds = np.asarray([f != "" for f in ev.fault])
            ratios.append(np.where(holds, ev.fault_score / ev.fault_limit, 0.0))
        stacked = np.stack(ratios)
        return np.asarray(np.max(np.where(np.isnan(stacked), -np.inf, stacked), axis=0),
                          dtype=np.float64)

    def measure(self, row: int) -> tuple[float, float]:
        """(z, limit) an alert of the row states, so its severity: those of the branch that
        flagged it, z rounded to 4 places. The forest's z and the category limit; the profile's
        spread from the usual and its limit; the jump's score and the meter's limit; a fault
        rule's measure and the bound it crossed."""
        branch, ev = self.branch[row], self.evidence
        if ev is None or branch == "forest" or branch == "":
            return round(float(self.z[row]), 4), float(self.limit[row])
        if branch == "profile":
            return round(float(ev.profile_score[row]), 4), float(ev.profile_limit[row])
        if branch == "jump":
            return round(float(ev.jump_score[row]), 4), float(ev.jump_limit[row])
        if branch in FAULT_KINDS:
            return round(float(ev.fault_score[row]), 4), float(ev.fault_limit[row])
        return round(float(self.z[row]), 4), float(self.limit[row])


@dataclass(frozen=True)
class RowContext:
    """What the evidence needs beside the normalised windows: raw readings and their time."""

    values: np.ndarray  # (n, L) the trailing readings, kWh
    end_ts_s: np.ndarray  # (n,) epoch seconds of each row's newest reading
    meter_ids: Sequence[str]
    interval_s: np.ndarray | int  # one for all rows, or one per row
    # per row: its meter's calibration (rows of one meter share one object and come in time
    # order); None: the bundle's profiles and statistics, nothing learned (benchmarks)
    calibrations: Sequence[MeterCalibration] | None = None


def _recent(history: MeterHistory) -> tuple[np.ndarray, np.ndarray]:
    """The readings a history holds (kWh) and their timestamps."""
    values = np.asarray(history.values, dtype=np.float64)
    assert history.last_ts is not None  # a ready meter has readings
    return values, history.last_ts - np.arange(len(values) - 1, -1, -1) * history.interval_s


def reconstruction_errors(
    reconstructor: Reconstructor, models: Sequence[str], windows: dict[int, np.ndarray],
    band: int | None, normalise: bool, timings: dict[str, float] | None = None,
    measure: str = "dtw", recent: int = 0,
) -> tuple[np.ndarray, dict[tuple[str, int], np.ndarray]]:
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
    return np.asarray(np.maximum(log_err, median), dtype=np.float64)


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
        # profiles and rules in this bundle (a bundle trained without evidence has no limit)
        self.has_evidence = evidence.profile_limit is not None
        self.timings = {"inference": 0.0, "dtw": 0.0}  # of the last batch

    def trailing_windows(self, rows: np.ndarray) -> dict[int, np.ndarray]:
        """Window of every size ending at each row's last reading, from (n, max_window) rows."""
        rows = np.asarray(rows, dtype=np.float32)
        return {w: np.ascontiguousarray(rows[:, -w:]) for w in self.bundle.window_sizes}

    def errors(self, windows: dict[int, np.ndarray]
               ) -> tuple[np.ndarray, dict[tuple[str, int], np.ndarray]]:
        return reconstruction_errors(self.reconstructor, self.bundle.models, windows,
                                     self.band, self.normalise_dtw, self.timings, self.measure,
                                     self.recent)

    @staticmethod
    def features(errors: np.ndarray) -> np.ndarray:
        return log_errors(errors)

    def forest_scores(
        self, windows: dict[int, np.ndarray],
        calibrations: Sequence[MeterCalibration] | None = None,
    ) -> tuple[np.ndarray, dict[tuple[str, int], np.ndarray], np.ndarray, np.ndarray,
               np.ndarray]:
        """Steps 1-4: (errors, reconstructions, forest score, reason feature, its excess).

        A row whose meter the bundle never saw has its log errors mapped onto the bundle's
        (robust z against the meter's own, times the bundle's spread, plus its median): the
        forest was fitted on the training meters' errors, and an unfamiliar meter's errors are
        all high to it. Its reason then says how far above the meter's own typical error."""
        errors, recons = self.errors(windows)
        feats = self.features(errors)
        if calibrations is not None:
            mine = [(i, c.feat_center, c.feat_scale) for i, c in enumerate(calibrations)
                    if c.feat_center is not None and c.feat_scale is not None]  # set together
            if mine:
                own = [i for i, _, _ in mine]
                center = np.stack([c for _, c, _ in mine])
                scale = np.stack([sc for _, _, sc in mine])
                feats[own] = self._median + (feats[own] - center) / scale * self._scale
        score = self.bundle.forest.score(forest_features(feats, self._median))
        robust = (feats - self._median) / self._scale
        reason = np.argmax(robust, axis=1)
        excess = np.exp(feats[np.arange(len(feats)), reason] - self._median[reason])
        return errors, recons, score, reason, excess

    def own_features(self, windows: dict[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(median, robust spread) of an unseen meter's log errors over its warm-up windows;
        the spread is at least MIN_STD_SHARE of the bundle's."""
        feats = self.features(self.errors(windows)[0])
        center = np.median(feats, axis=0)
        spread = 1.4826 * np.median(np.abs(feats - center), axis=0)
        return center, np.maximum(spread, MIN_STD_SHARE * self._scale)

    def calibration_for(self, meter_id: str, history: MeterHistory, category: str
                        ) -> MeterCalibration:
        """A ready meter's new calibration: the bundle's profile for a meter it knows, else one
        learned from the warm-up's readings and the forest scores of their windows. A meter
        whose warm-up readings are gone (a state written before calibrations existed) is
        calibrated on the readings its history still holds."""
        if self.bundle.normaliser_for(meter_id) is not None:
            limits = self.bundle.limits
            mean, std = limits.category_stats.get(category, (limits.score_mean, limits.score_std))
            return MeterCalibration.from_bundle(self.bundle.profile_for(meter_id), mean, std,
                                                history.interval_s, _recent(history))
        warmup = history.take_warmup()
        if warmup is None:
            warmup = _recent(history)
        values, ts = warmup
        assert history.normaliser is not None  # a ready meter has its normaliser
        z = history.normaliser.apply(values).astype(np.float32)
        w = self.bundle.max_window
        scores, center, spread = None, None, None
        if len(z) >= w + MIN_WARMUP_WINDOWS:
            windows = self.trailing_windows(np.lib.stride_tricks.sliding_window_view(z, w))
            center, spread = (v.astype(np.float16) for v in self.own_features(windows))
            probe = MeterCalibration("warmup", None, np.zeros(0), feat_center=center,
                                     feat_scale=spread)
            scores = self.forest_scores(windows, [probe] * (len(z) - w + 1))[2]
        cal = MeterCalibration.from_warmup(values, ts, history.interval_s, scores,
                                           MIN_STD_SHARE * self.bundle.limits.score_std,
                                           with_profile=self.has_evidence)
        if center is not None and spread is not None:  # float16: what the state's bytes hold
            cal.feat_center = center.astype(np.float16)
            cal.feat_scale = spread.astype(np.float16)
        return cal

    def score_batch(self, windows: dict[int, np.ndarray], categories: Sequence[str],
                    context: RowContext | None = None) -> BatchScores:
        errors, recons, score, reason, excess = self.forest_scores(
            windows, None if context is None else context.calibrations)
        n = len(score)
        z, limit, forest_flag = self.bundle.limits.decide(score, categories)
        ev: Evidence | None = None
        profiles: tuple[MeterProfile | None, ...] = ()
        fault, profile_flag = [""] * n, np.zeros(n, dtype=bool)
        if context is not None and context.calibrations is not None:
            ev, profiles = self._decide(score, z, limit, forest_flag, context)
            fault, profile_flag = ev.fault, ev.profile_flag
        elif context is not None:
            ev = assess(context.values, context.end_ts_s, context.interval_s,
                        self.bundle.profiles, context.meter_ids, self.profile_limit)
            fault, profile_flag = ev.fault, ev.profile_flag
            profiles = tuple(self.bundle.profile_for(m) for m in context.meter_ids)
        jump_flag = np.zeros(n, dtype=bool)
        if ev is not None:
            jump_flag = np.nan_to_num(ev.jump_score, nan=0.0) > ev.jump_limit
        branch = tuple(f or ("forest" if ff else "profile" if pf else "jump" if jf else "")
                       for f, ff, pf, jf in zip(fault, forest_flag, profile_flag, jump_flag,
                                                strict=True))
        flagged = np.asarray([b != "" for b in branch], dtype=bool)
        return BatchScores(errors, score, z, limit, flagged, reason, excess, recons, branch, ev,
                           profiles)

    def _decide(self, score: np.ndarray, z: np.ndarray, limit: np.ndarray,
                forest_flag: np.ndarray, context: RowContext
                ) -> tuple[Evidence, tuple[MeterProfile | None, ...]]:
        """Steps 5-6 with the rows' calibrations, in waves (see the module's docstring); fills
        z and forest_flag in place for meters judged by their own scores. Returns the evidence
        and the profile each row was judged with."""
        n = len(score)
        ts = np.asarray(context.end_ts_s, dtype=np.int64)
        intervals = np.broadcast_to(np.asarray(context.interval_s, dtype=np.int64), (n,))
        values = np.asarray(context.values, dtype=np.float64)
        owners: dict[int, tuple[MeterCalibration, list[int]]] = {}
        for i, cal in enumerate(context.calibrations or ()):
            owners.setdefault(id(cal), (cal, []))[1].append(i)
        chunks: list[list[tuple[MeterCalibration, np.ndarray]]] = []  # per meter: its rows
        # split by UTC day
        for cal, picked in owners.values():
            r = np.asarray(picked)
            chunks.append([(cal, part) for part in
                           np.split(r, np.flatnonzero(np.diff(ts[r] // DAY_S)) + 1)])
        ev = Evidence.empty(n)
        profiles: list[MeterProfile | None] = [None] * n
        for day_parts in zip_longest(*chunks):  # every meter's next day of rows
            wave = [c for c in day_parts if c is not None]
            for cal, part in wave:
                cal.start_day(int(ts[part[0]] // DAY_S))
                if cal.own_forest:
                    z[part] = cal.forest_z(score[part], limit[part])
                    forest_flag[part] = z[part] > limit[part]
                if cal.profile is not None:  # the forest flags a reading outside its band
                    _, lo, hi = cal.profile.band(ts[part])
                    forest_flag[part] &= (values[part, -1] < lo) | (values[part, -1] > hi)
                for r in part.tolist():
                    profiles[r] = cal.profile
            rows = np.concatenate([part for _, part in wave])
            flags = forest_flag[rows].copy()
            if any(cal.profile is not None for cal, _ in wave):
                flags |= self._evidence(wave, rows, values, ts, intervals, ev)
            at = 0
            for cal, part in wave:
                stuck = np.asarray([ev.fault[r] == "stuck" for r in part.tolist()])
                cal.observe(values[part, -1], ts[part], flags[at:at + len(part)], score[part],
                            ev.ratio[part], ev.jump_size[part], ev.jump_score[part],
                            ev.fault_score[part][stuck] if stuck.any() else None)
                at += len(part)
        return ev, tuple(profiles)

    def _evidence(self, wave: list[tuple[MeterCalibration, np.ndarray]], rows: np.ndarray,
                  values: np.ndarray, ts: np.ndarray, intervals: np.ndarray, ev: Evidence
                  ) -> np.ndarray:
        """The time-of-week, fault and jump evidence of one wave's rows, with each meter's
        profile as it stands; written into `ev`, the rows' evidence flags returned."""
        judged = [(k, cal.profile, cal.known) for k, (cal, _) in enumerate(wave)
                  if cal.profile is not None]
        table = ProfileTable({str(k): p for k, p, _ in judged},
                             {str(k): known for k, _, known in judged})
        where = {k: j for j, (k, _, _) in enumerate(judged)}
        owner = np.concatenate([np.full(len(part), where.get(k, -1))
                                for k, (_, part) in enumerate(wave)])
        part_ev = assess(values[rows], ts[rows], intervals[rows], table, None,
                         self.profile_limit, owner)
        ev.put(rows, part_ev)
        flags = part_ev.profile_flag | np.asarray([f != "" for f in part_ev.fault])
        # the jump: the newest reading against the ones before it, followed along the profile
        back = np.arange(JUMP_BASE, -1, -1, dtype=np.int64)
        slots = hour_of_week(ts[rows, None] - back * intervals[rows, None])
        p = np.maximum(owner, 0)[:, None]
        expected, known = table.median[p, slots], table.known[p, slots].all(axis=1)
        hour = (ts[rows] % DAY_S) // 3600
        scale, level = np.full(len(rows), np.nan), np.full(len(rows), np.nan)
        band_lo, band_hi = np.full(len(rows), np.nan), np.full(len(rows), np.nan)
        limits = np.full(len(rows), np.inf)
        at = 0
        for cal, part in wave:
            k = slice(at, at + len(part))
            if cal.profile is not None:
                scale[k], level[k] = cal.jump_scale[hour[k]], cal.profile.level
                _, band_lo[k], band_hi[k] = cal.profile.band(ts[rows[k]])
                limits[k] = cal.jump_limit
            at += len(part)
        anchor, size = jumps(values[rows], expected, level)
        size = np.where(known, size, np.nan)  # an hour not known yet is not judged
        # a reading back inside its hour's band and nearer its profile than the ones before it
        # (after a spike, a dip or an outage) is no anomaly, however far it jumps
        c = np.maximum(RATIO_OFFSET * level, 1e-9)
        back_home = (np.abs(np.log((values[rows, -1] + c) / (expected[:, -1] + c)))
                     <= np.abs(np.log((anchor + c) / (expected[:, -1] + c))))
        back_home &= (values[rows, -1] >= band_lo) & (values[rows, -1] <= band_hi)
        limits = np.where(back_home, np.inf, limits)
        jz = jump_score(size, scale)
        ev.jump_size[rows], ev.jump_score[rows] = size, jz
        ev.jump_limit[rows], ev.jump_base[rows] = limits, anchor
        return np.asarray(flags | (np.nan_to_num(jz, nan=0.0) > limits), dtype=bool)

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
        assert ev is not None  # every branch but the forest is evidence
        if branch == "profile":
            return (f"time of week: the last readings are {ev.profile_score[row]:.1f} spreads "
                    f"from this hour's usual {ev.expected[row]:.3g} kWh (limit "
                    f"{ev.profile_limit[row]:.1f})")
        if branch == "jump":
            return (f"jump: {ev.jump_score[row]:.1f} typical jumps at this hour from the "
                    f"{ev.jump_base[row]:.3g} kWh the readings before lead to expect (limit "
                    f"{ev.jump_limit[row]:.1f})")
        return ev.fault_reason[row]

    def expected_readings(
        self, model_window: tuple[str, int], row: int, scores: BatchScores,
        actual: np.ndarray, normaliser: Normaliser,
    ) -> np.ndarray:
        """What the model expected for the window's readings (kWh): its reconstruction."""
        return np.asarray(np.maximum(normaliser.invert(scores.reconstructions[model_window][row]),
                                     0.0), dtype=np.float64)
