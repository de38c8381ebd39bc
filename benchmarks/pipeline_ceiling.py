"""How close the full `score_batch` comes to its inference-only ceiling, per core.

    python -m benchmarks.pipeline_ceiling [--quick] [--no-write]

Why: inference is the pipeline's unavoidable cost; everything after it (DTW, the Isolation
Forest, the decision) should add little. With the shipped bundle (onnx_models/default) and a
Detector with one ONNX thread (and one Numba thread), the same rows are scored two ways:

- ceiling: only the ONNX calls score_batch makes, one `reconstruct` per (model, window size);
- full: `Detector.score_batch` (inference + DTW + Isolation Forest + z-score limits), with the
  rows' raw readings and time as a meter the bundle has a profile for, and that meter's
  calibration (stream_app.core.calibration, fresh each pass, learning as the worker's does), so
  the evidence (time-of-week, jump and data-fault branches, stream_app.core.evidence) and the
  per-meter decision are scored too.

Rows are the trailing windows (max window) ending at each reading of a simulated metal-profile
meter, normalised with the bundle's default normalisation: 2048 rows (--quick: 1024), scored in
batches of B = 32, 128, 256 and 512. Each figure is the best of several passes over all rows,
ceiling and full passes alternating so both see the same load. To say what limits the ratio, the
full pass's time is split into inference and DTW (the Detector's own timings), the forest
(`forest.score` timed alone on the same features), the evidence (`assess` timed alone on the
same rows, static profiles) and the rest (the per-meter decision and learning among it). The
table is appended, with a date header, to docs/BENCHMARKS.md unless --no-write. The last line printed is
`pipeline_fraction_of_inference_ceiling: <full rows/s / ceiling rows/s at B=256>`.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numba
import numpy as np
import onnxruntime as ort

from benchmarks.report import arguments, header, machine, publish
from stream_app.core.calibration import MeterCalibration
from stream_app.core.evidence import assess
from stream_app.core.model_bundle import Bundle
from stream_app.core.scoring import Detector, RowContext, forest_features
from stream_app.devtools.simulator import simulate

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "onnx_models" / "default"
BATCHES = (32, 128, 256, 512)


def _rows(bundle: Bundle, n: int) -> tuple[np.ndarray, list[str], RowContext]:
    """(n, max_window) normalised trailing windows of one simulated meter, its category, and
    the same rows' raw readings and time, scored as the bundle's first profiled meter."""
    days = -(-(n + bundle.max_window) // 96) + 1
    series = simulate(bundle.manifest.profile, meters=1, days=days, seed=7)[0]
    norm = bundle.manifest.normalisation.default
    w = bundle.max_window
    raw = np.lib.stride_tricks.sliding_window_view(series.values, w)[:n]
    meter = next(iter(bundle.profiles.profiles), series.meter_id)
    context = RowContext(np.ascontiguousarray(raw, dtype=np.float64),
                         series.timestamps[w - 1:w - 1 + n], [meter] * n, series.interval_s)
    return np.ascontiguousarray(norm.apply(raw)), [series.category] * n, context


def _part(context: RowContext, lo: int, hi: int) -> RowContext:
    return RowContext(context.values[lo:hi], context.end_ts_s[lo:hi],
                      context.meter_ids[lo:hi], context.interval_s)


def _measure(det: Detector, rows: np.ndarray, cats: list[str], context: RowContext,
             batch: int, passes: int) -> dict:
    chunks = [(det.trailing_windows(rows[k:k + batch]), cats[k:k + batch],
               _part(context, k, k + batch)) for k in range(0, len(rows), batch)]
    rec, models = det.reconstructor, det.bundle.models
    median = np.asarray(det.bundle.manifest.feature_stats.median, dtype=np.float64)

    def ceiling():
        for windows, _, _ in chunks:
            for w, x in windows.items():
                for m in models:
                    rec.reconstruct(m, w, x)

    stages = {}

    limits = det.bundle.limits
    mean, std = limits.category_stats.get(cats[0], (limits.score_mean, limits.score_std))

    def full():
        spent = {"inference": 0.0, "dtw": 0.0, "forest": 0.0, "evidence": 0.0}
        cal = MeterCalibration.from_bundle(det.bundle.profile_for(context.meter_ids[0]), mean,
                                           std, int(context.interval_s))
        for windows, c, ctx in chunks:
            scores = det.score_batch(windows, c, replace(ctx, calibrations=[cal] * len(c)))
            spent["inference"] += det.timings["inference"]
            spent["dtw"] += det.timings["dtw"]
            feats = forest_features(det.features(scores.errors), median)
            started = time.perf_counter()
            det.bundle.forest.score(feats)
            spent["forest"] += time.perf_counter() - started
            started = time.perf_counter()
            assess(ctx.values, ctx.end_ts_s, ctx.interval_s, det.bundle.profiles,
                   ctx.meter_ids, det.profile_limit)
            spent["evidence"] += time.perf_counter() - started
        return spent

    ceiling()
    full()  # warm-up
    best_c = best_f = float("inf")
    for _ in range(passes):
        started = time.perf_counter()
        ceiling()
        best_c = min(best_c, time.perf_counter() - started)
        # the extra forest.score and assess inside full() are timed but excluded from the full
        # pass's time
        started = time.perf_counter()
        spent = full()
        elapsed = time.perf_counter() - started - spent["forest"] - spent["evidence"]
        if elapsed < best_f:
            best_f, stages = elapsed, spent
    n = len(rows)
    rest = best_f - sum(stages.values())
    return {"batch": batch, "ceiling": n / best_c, "full": n / best_f,
            **{k: v / best_f for k, v in stages.items()}, "rest": rest / best_f}


def _table(results: list[dict]) -> list[str]:
    lines = [
        ("| B | inference-only rows/s | score_batch rows/s | full / ceiling "
         "| inference | DTW | forest | evidence | rest |"),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['batch']} | {r['ceiling']:,.0f} | {r['full']:,.0f} "
            f"| {r['full'] / r['ceiling']:.2f} | {r['inference']:.0%} | {r['dtw']:.0%} "
            f"| {r['forest']:.0%} | {r['evidence']:.0%} | {r['rest']:.0%} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    args = arguments(__doc__, "fewer rows and passes, under a minute").parse_args(argv)
    numba.set_num_threads(1)
    bundle = Bundle.load(BUNDLE)
    det = Detector(bundle, threads=1)
    rows, cats, context = _rows(bundle, 1024 if args.quick else 2048)
    passes = 3 if args.quick else 5
    results = [_measure(det, rows, cats, context, batch, passes) for batch in BATCHES]
    title = header("Scoring pipeline vs its inference-only ceiling, one core", args.quick)
    about = (
        f"{machine()} (shared cores: "
        f"absolute figures vary between runs, the ratios are from one run); onnxruntime "
        f"{ort.__version__}, numba {numba.__version__}. Bundle `{bundle.version}` (windows "
        f"{'/'.join(map(str, bundle.window_sizes))}, models {', '.join(bundle.models)}), "
        f"{len(rows)} rows of a simulated {bundle.manifest.profile} meter scored as profiled "
        f"meter `{context.meter_ids[0]}`, Detector with 1 ONNX "
        "and 1 Numba thread, best of several passes. Stage columns: share of the full pass's time; "
        "rest is the remainder (timing "
        "noise can make it slightly negative)."
    )
    lines = [title, "", about, "", *_table(results), ""]
    publish(lines, not args.no_write)
    key = next(r for r in results if r["batch"] == 256)
    print(f"pipeline_fraction_of_inference_ceiling: {key['full'] / key['ceiling']:.2f}")



if __name__ == "__main__":
    main()
