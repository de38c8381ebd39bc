"""train_bundle: from meter series to a verified model bundle, top to bottom.

1. window sizes: dominant periods of the differenced series (FFT), unless given;
2. per meter: normalisation of its readings from its own statistics (the autoencoders see
   normalised readings; see stream_app.core.preprocessing.Normaliser for why not differences);
3. windows split by time: the first 80 % of each meter's series trains, the last 20 % validates;
   windows touching a labelled anomaly are left out (autoencoders learn normal shapes only);
4. one autoencoder per (model kind, window size), exported to ONNX with a parity check;
5. feature rows (DTW errors of every model/window at a reading) through the runtime's own
   scorer; the Isolation Forest is fitted on training rows;
6. decision: z-scores of the forest score against held-out normal rows; the category limits
   come from the profile, or from a base limit and the usage-ratio formula
   (stream_app.core.thresholds); the base limit is the profile's, lowered to the 99.5th percentile
   of held-out normal z-scores when those never reach it, or, where the profile enables
   augmentation, the one that best separates normal from MI-FGSM adversarial rows (the
   scarce anomaly class);
7. manifest.json with the SHA-256 of every file; the bundle is loaded back and verified.

Over 300 lines: training reads top to bottom in the order above, on purpose.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sklearn.ensemble import IsolationForest
from torch import nn

from stream_app.core.accuracy import precision_recall_f1
from stream_app.core.errors import InputError
from stream_app.core.evidence import MeterProfile, budget_quantile, profile_span
from stream_app.core.inference import Reconstructor
from stream_app.core.isolation_forest import ForestScorer
from stream_app.core.manifest import (
    FOREST_FILE,
    SCHEMA_VERSION,
    Decision,
    DtwOptions,
    Evidence,
    FeatureStats,
    FileEntry,
    Manifest,
    Normalisation,
    ScoreStats,
    TrainedMeter,
    TrainingRecord,
    onnx_name,
)
from stream_app.core.model_bundle import Bundle, BundleLayout, write_manifest
from stream_app.core.preprocessing import Normaliser, dominant_periods, sliding_windows
from stream_app.core.profiles import Profile
from stream_app.core.scoring import Detector, forest_features, reconstruction_errors
from stream_app.core.series import MeterSeries
from stream_app.core.thresholds import CategoryLimits, calibrate_limits
from training.adversarial import mi_fgsm
from training.export import export_onnx
from training.models import build_model, config_dict
from training.train import TrainConfig, fit_autoencoder

log = logging.getLogger(__name__)
VALIDATION_SHARE = 0.2
MAX_FEATURE_ROWS = 20_000  # Isolation Forest rows: plenty for a 1-6 feature forest
ADVERSARIAL_ROWS = 1_000
MIN_CATEGORY_ROWS = 200  # fewer normal rows than this: the category uses the pooled statistics
NORMAL_QUANTILE = 0.995  # without MI-FGSM: the base limit at most this quantile of normal z
MIN_BASE_LIMIT = 1.5
RECENT_READINGS = 4  # the error of a window's newest readings: where a short anomaly is
PROFILE_MIN_LIMIT = 4.0  # the time-of-week branch never flags nearer than 4 spreads
PROFILE_MAX_LIMIT = 8.0  # nor needs more than 8 (validation may hold real anomalies)
MIN_HISTORY_DAYS = 14  # one meter's readings a bundle needs; shorter meters train beside it


@dataclass
class TrainOptions:
    models: tuple[str, ...] = ("cnn_gru", "lstm")
    window_sizes: tuple[int, ...] | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    n_estimators: int = 200
    band: int | None = None
    error_measure: str = "dtw"  # or "mse": the plain squared error, for the ablation
    adversarial: bool | None = None  # MI-FGSM calibration; None: the profile's augmentation.enabled
    recent_readings: int = RECENT_READINGS  # 0: window-level errors only (the ablation)
    evidence: bool = True  # time-of-week profile and data-fault rules (False: the ablation)
    name: str = "bundle"
    version: str = ""
    seed: int = 0
    attribution: str | None = None
    command: str = ""
    unit: str = "kWh"  # what the readings were before they became kWh per interval (train --unit)


@dataclass
class _Meter:
    series: MeterSeries
    normaliser: Normaliser
    values: np.ndarray  # normalised readings, float32
    good: np.ndarray  # bool per reading: False where labelled anomalous
    split: int  # readings before this index train, from it validate
    segment: np.ndarray  # int64 per reading: which run of consecutive readings it is in

    def longest_run(self, part: str) -> int:
        """The longest run of consecutive readings in the train or validation part."""
        lo, hi = (0, self.split) if part == "train" else (self.split, len(self.values))
        if hi <= lo:
            return 0
        return int(np.unique(self.segment[lo:hi], return_counts=True)[1].max())

    def window_cap(self) -> int:
        """The largest window this meter trains: two windows' worth of consecutive readings
        in its train part and in its validation part."""
        return min(self.longest_run("train"), self.longest_run("val")) // 2


def _prepare(series: list[MeterSeries]) -> list[_Meter]:
    meters = []
    for s in series:
        normaliser = Normaliser.fit(s.values)
        good = np.ones(len(s.values), dtype=bool)
        if s.labels is not None:
            good = ~s.labels.astype(bool)
        split = int(len(s.values) * (1 - VALIDATION_SHARE))
        segment = np.zeros(len(s.values), dtype=np.int64)
        segment[s.segment_starts()[1:]] = 1
        meters.append(_Meter(s, normaliser, normaliser.apply(s.values), good, split,
                             np.cumsum(segment)))
    return meters


def _check_history(meters: list[_Meter]) -> None:
    """One line when no meter has MIN_HISTORY_DAYS of readings."""
    longest = max(meters, key=lambda m: len(m.values))
    interval = int(longest.series.interval_s)
    need = -(-MIN_HISTORY_DAYS * 86_400 // interval)
    who = f"meter {longest.series.meter_id}" if len(meters) == 1 else (
        f"the longest meter, {longest.series.meter_id},")
    if len(longest.values) < need:
        raise InputError(
            f"{who} has {len(longest.values):,} readings ({_days(len(longest.values), interval)} "
            f"at {interval} s): too few to train on; a bundle needs at least {need:,} readings "
            f"({MIN_HISTORY_DAYS} days) of one meter (meters with less train alongside it in one "
            "file)")


def _check_window(meters: list[_Meter], max_window: int, cap: int) -> None:
    """One line when no meter has room for the largest window (`cap`: the largest that has)."""
    if max_window > cap:
        interval = int(max(meters, key=lambda m: len(m.values)).series.interval_s)
        raise InputError(
            f"window {max_window} needs {2 * max_window:,} consecutive readings (no gap) in the "
            f"first {1 - VALIDATION_SHARE:.0%} and in the last {VALIDATION_SHARE:.0%} of one "
            f"meter, {10 * max_window:,} readings ({_days(10 * max_window, interval)}) at least: "
            f"too few here, the data allows windows up to {cap}; choose smaller --windows")


def _days(readings: int, interval: int) -> str:
    return f"{readings * interval / 86_400:.1f} days"


def _windows(meters: list[_Meter], size: int, part: str, hop: int,
             owners: list | None = None) -> np.ndarray:
    """Normal windows of one size from the train or validation part of every meter, none
    across a gap. `owners`, when given, receives the index of the meter of every window."""
    out = []
    for k, m in enumerate(meters):
        lo, hi = (0, m.split) if part == "train" else (m.split, len(m.values))
        if hi - lo < size:
            continue
        win = sliding_windows(m.values[lo:hi], size, hop)
        ok = sliding_windows(m.good[lo:hi].astype(np.float32), size, hop).min(axis=1) > 0
        seg = sliding_windows(m.segment[lo:hi].astype(np.float64), size, hop)
        ok &= seg[:, 0] == seg[:, -1]  # one segment: no gap inside
        out.append(win[ok])
        if owners is not None:
            owners.extend([k] * int(ok.sum()))
    return np.concatenate(out).astype(np.float32)


def _choose_windows(meters: list[_Meter], cap: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(window sizes, the FFT's own periods): the dominant periods of the longest meter,
    capped at what the data trains (`cap`). Its gaps are bridged by straight lines for this
    alone: the periods of a meter with a gap every day and a half are still a day's."""
    s = max(meters, key=lambda m: len(m.values)).series
    interval = s.interval_s
    grid = np.arange(s.timestamps[0], s.timestamps[-1] + 1, interval)
    values = s.values if len(grid) == len(s) else np.interp(grid, s.timestamps, s.values)
    found = tuple(dominant_periods(values, interval_s=interval))
    if max(found) <= cap:
        return found, found
    capped = tuple(dominant_periods(values, interval_s=interval, max_period=cap))
    return tuple(sorted({min(w, cap) for w in capped}, reverse=True)), found


def _limit_rows(rows: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    if len(rows) <= cap:
        return rows
    return rows[np.sort(rng.choice(len(rows), cap, replace=False))]


def best_base_limit(z_normal: np.ndarray, z_anomal: np.ndarray) -> tuple[float, float]:
    """The z limit in [1.5, 6] that maximises F1 of normal vs adversarial rows."""
    best = (3.0, -1.0)
    for limit in np.arange(1.5, 6.01, 0.05):
        tp = float((z_anomal > limit).sum())
        fp = float((z_normal > limit).sum())
        fn = len(z_anomal) - tp
        f1 = precision_recall_f1(tp, fp, fn)[2] or 0.0
        if f1 > best[1]:
            best = (float(limit), f1)
    return best


def _evidence(meters: list[_Meter], recent: int) -> dict:
    """Each meter's profile (stream_app.core.evidence) and the profile branch's limit.

    The limit is calibrated on the validation part with profiles fitted on the training part
    only: the quantile of the branch score that leaves about evidence.FALSE_RUNS_PER_WEEK
    runs of flags a week on normal readings, clipped to [PROFILE_MIN_LIMIT, PROFILE_MAX_LIMIT]: a
    validation part with real unlabelled anomalies (a holiday, a changed shift) must not make
    the branch blind. The profiles shipped are then fitted on all normal readings."""
    scores, quantiles = [], []
    for m in meters:
        s = m.series
        profile = MeterProfile.fit(s.values[:m.split], s.timestamps[:m.split], m.good[:m.split])
        span = profile_span(s.interval_s)
        if len(s.values) - m.split < span:
            continue
        z = profile.ratio_z(s.values[m.split:], s.timestamps[m.split:], span)
        normal = np.convolve(m.good[m.split:], np.ones(span), "valid") >= span
        seg = m.segment[m.split:]
        normal &= seg[span - 1:] == seg[:len(seg) - span + 1]  # no gap inside
        scores.append(z[normal])
        quantiles.append(budget_quantile(s.interval_s))
    limit = PROFILE_MIN_LIMIT
    if scores:
        reach = float(np.quantile(np.concatenate(scores), min(quantiles)))
        limit = float(np.clip(reach, PROFILE_MIN_LIMIT, PROFILE_MAX_LIMIT))
    profiles = {m.series.meter_id: MeterProfile.fit(m.series.values, m.series.timestamps, m.good)
                .to_dict() for m in meters}
    return {"recent_readings": recent, "profile_limit": limit, "meters": profiles}


def train_bundle(series: list[MeterSeries], out: Path, profile: Profile,
                 options: TrainOptions, keep: dict | None = None) -> Bundle:
    """Train, export, calibrate and verify a bundle in `out`. `keep`, when given, receives the
    torch models by (kind, window) and the normal validation rows (for the epsilon sweep)."""
    started = time.perf_counter()
    rng = np.random.default_rng(options.seed)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.iterdir():
        if stale.is_file():
            stale.unlink()
    meters = _prepare(series)
    cap = max(m.window_cap() for m in meters)
    fft_periods: tuple[int, ...] | None = None
    _check_history(meters)
    if options.window_sizes:
        sizes = tuple(sorted(options.window_sizes, reverse=True))
    else:
        chosen, fft_periods = _choose_windows(meters, cap)
        sizes = tuple(sorted(chosen, reverse=True))
    max_w = max(sizes)
    _check_window(meters, max_w, cap)
    recent = min(options.recent_readings, min(sizes))  # a window's newest readings, at most all
    files: dict[str, FileEntry] = {}  # sha256 and bytes: filled in by write_manifest
    models: dict[tuple[str, int], nn.Module] = {}
    history: dict[str, dict] = {}
    for w in sizes:
        # dense windows (one per reading): the trainer draws a fresh subset every epoch, so
        # the autoencoders see every shape within their step budget
        train_x, val_x = _windows(meters, w, "train", 1), _windows(meters, w, "val", max(1, w // 8))
        for kind in options.models:
            model = build_model(kind, w, seed=options.seed)
            model, hist = fit_autoencoder(model, train_x, val_x, options.train, desc=f"{kind}/{w}")
            check = val_x[rng.choice(len(val_x), min(512, len(val_x)), replace=False)]
            report = export_onnx(model, w, out / onnx_name(kind, w), check)
            files[onnx_name(kind, w)] = FileEntry(
                sha256="", bytes=0, role="autoencoder", model=kind, window=w,
                config=config_dict(model), opset=report["opset"],
                parity_max_abs_diff=float(report["max_abs_diff"]))
            models[(kind, w)] = model
            history[f"{kind}/{w}"] = {k: v for k, v in hist.items() if k != "model"}
            # the baseline an autoencoder must beat: each validation window's own mean
            window_mean = float(np.mean((val_x - val_x.mean(axis=1, keepdims=True)) ** 2))
            best = float(min(hist["val_loss"]))
            history[f"{kind}/{w}"].update(window_mean_mse=window_mean,
                                          beats_window_mean=best < window_mean)
            if best >= window_mean:
                log.warning("%s/%d does not beat its windows' mean (validation MSE %.3f vs "
                            "%.3f): its errors carry little evidence; train longer "
                            "(--epochs, --max-train-windows)", kind, w, best, window_mean)

    layout = BundleLayout(out, tuple(options.models), sizes)
    reconstructor = Reconstructor(layout)

    def rows(part: str, cap: int) -> tuple[np.ndarray, np.ndarray]:
        owners: list[int] = []
        windows = _windows(meters, max_w, part, 1, owners)
        keep = _limit_rows(np.arange(len(windows)), cap, rng)
        return windows[keep], np.asarray(owners)[keep]

    def errors_of(rows_: np.ndarray) -> np.ndarray:
        windows = {w: np.ascontiguousarray(rows_[:, -w:]) for w in sizes}
        return reconstruction_errors(reconstructor, layout.models, windows, options.band, True,
                                     measure=options.error_measure,
                                     recent=recent)[0]

    train_rows, _ = rows("train", MAX_FEATURE_ROWS)
    val_rows, val_owner = rows("val", MAX_FEATURE_ROWS // 2)
    val_category = np.array([meters[k].series.category for k in val_owner])
    train_feats = Detector.features(errors_of(train_rows))
    val_feats = Detector.features(errors_of(val_rows))
    median = np.median(train_feats, axis=0)
    scale = 1.4826 * np.median(np.abs(train_feats - median), axis=0) + 1e-9
    sk_forest = IsolationForest(n_estimators=options.n_estimators, random_state=options.seed)
    sk_forest.fit(forest_features(train_feats, median))
    forest = ForestScorer.from_sklearn(sk_forest)
    arrays = forest.to_arrays()
    np.savez(out / FOREST_FILE, **arrays)  # type: ignore[arg-type]  # stub: a **dict might fill allow_pickle
    files[FOREST_FILE] = FileEntry(sha256="", bytes=0, role="isolation_forest", model=None,
                                   window=None, config={"n_estimators": options.n_estimators},
                                   parity_max_abs_diff=None, opset=None)

    val_scores = forest.score(forest_features(val_feats, median))
    mean, std = float(val_scores.mean()), float(val_scores.std())
    category_stats = {c: {"mean": float(val_scores[val_category == c].mean()),
                          "std": max(float(val_scores[val_category == c].std()), 1e-6)}
                      for c in sorted(set(val_category))
                      if (val_category == c).sum() >= MIN_CATEGORY_ROWS}
    aug = profile.augmentation
    adv_index = rng.choice(len(val_rows), min(ADVERSARIAL_ROWS, len(val_rows)), replace=False)
    adv_rows = mi_fgsm(models[(options.models[0], max_w)], val_rows[adv_index],
                       epsilon=aug.epsilon, momentum=aug.momentum, steps=aug.steps,
                       seed=options.seed)
    adv_feats = forest_features(Detector.features(errors_of(adv_rows)), median)
    decision = CategoryLimits({"any": 1.0}, mean, std,
                              {c: (v["mean"], v["std"]) for c, v in category_stats.items()})
    z_val = decision.zscores(val_scores, val_category)
    z_adv = decision.zscores(forest.score(adv_feats), val_category[adv_index])
    best_base, f1_adv = best_base_limit(z_val, z_adv)
    adversarial = aug.enabled if options.adversarial is None else options.adversarial
    if profile.explicit_limits is not None:
        limits, calibration = dict(profile.limits), "profile"
        base = float(profile.base_limit)
    elif adversarial:
        base, calibration = best_base, "mi_fgsm_f1"
        limits = calibrate_limits(base, profile.usage_ratios, profile.gamma)
    else:
        # a forest score is bounded, and so is its z-score: a base limit that held-out normal
        # rows never come near is out of reach of most anomalies too
        reach = float(np.quantile(z_val, NORMAL_QUANTILE))
        base = float(np.clip(reach, MIN_BASE_LIMIT, profile.base_limit))
        calibration = "usage_ratios" if base == profile.base_limit else "normal_quantile"
        limits = calibrate_limits(base, profile.usage_ratios, profile.gamma)

    if options.evidence:
        evidence = Evidence.from_dict(_evidence(meters, recent), "evidence")
    else:
        evidence = Evidence(recent_readings=recent, profile_limit=None, meters={})
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        name=options.name,
        version=options.version or datetime.now(UTC).strftime("%Y%m%d%H%M%S"),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        profile=profile.name,
        interval_s=int(series[0].interval_s),
        window_sizes=sizes,
        models=tuple(options.models),
        feature_order=tuple(f"{m}/{w}" for w in sizes for m in options.models),
        feature_transform="log",
        feature_stats=FeatureStats(median=tuple(median.tolist()), scale=tuple(scale.tolist())),
        dtw=DtwOptions(band=options.band, normalise=True, measure=options.error_measure),
        normalisation=Normalisation(
            default=Normaliser.fit(np.concatenate([m.series.values for m in meters])),
            meters={m.series.meter_id: m.normaliser for m in meters}),
        warmup_readings=max(2 * max_w, 192),
        decision=Decision(score_mean=mean, score_std=std, limits=limits, base_limit=base,
                          calibration=calibration,
                          category_stats={c: ScoreStats(**v) for c, v in category_stats.items()}),
        files=files,
        training=TrainingRecord(
            command=options.command,
            config={**asdict(options.train), "n_estimators": options.n_estimators,
                    "seed": options.seed, "band": options.band, "unit": options.unit},
            data=tuple(TrainedMeter(
                meter_id=m.series.meter_id, category=m.series.category,
                readings=len(m.series.values), first=int(m.series.timestamps[0]),
                last=int(m.series.timestamps[-1]), interval_s=int(m.series.interval_s),
                labelled_anomalies=int(m.series.labels.sum())
                if m.series.labels is not None else None,
                repairs=tuple(m.series.repairs)) for m in meters),
            metrics={
                "history": history,
                "feature_rows": {"train": len(train_rows), "validation": len(val_rows)},
                "windows": {"chosen_by": "given" if fft_periods is None else "fft",
                            "fft_periods": list(fft_periods or ()), "cap": cap,
                            "segments": {m.series.meter_id: int(m.segment[-1]) + 1
                                         for m in meters}},
                "validation_flag_rate": {
                    c: float((z_val[val_category == c] > lim).mean())
                    for c, lim in limits.items() if (val_category == c).any()},
                "adversarial": {"rows": len(adv_rows), "epsilon": aug.epsilon,
                                "best_base_limit": best_base, "f1_at_best": f1_adv,
                                "detected_at_limits": {c: float((z_adv > lim).mean())
                                                       for c, lim in limits.items()}},
                "seconds": round(time.perf_counter() - started, 1),
            }),
        attribution=options.attribution,
        audit=(),
        evidence=evidence,
    )
    write_manifest(out, manifest)
    if keep is not None:
        keep.update(models=models, val_rows=val_rows, train_rows=train_rows)
    return Bundle.load(out)
