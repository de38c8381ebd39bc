"""`meterwatch evaluate`: detection metrics of a bundle on labelled series, stated honestly.

Every figure is computed over *scored* readings only (warm-up readings have no score and are
neither hits nor misses). Definitions, also written into report.json:

- point-wise: TP/FP/FN over scored readings; precision TP/(TP+FP), recall TP/(TP+FN),
  F1 = 2TP/(2TP+FP+FN). A ratio with a zero denominator is undefined (null), never 0 or 1.
- events: a label window is a maximal run of label 1. With `grace` g it is extended by g
  readings past its end, for matching only. A window with no scored reading (inside warm-up)
  is left out and counted as unscorable. A window is detected when a flagged reading falls
  inside it. An alert run is a maximal run of flagged readings; it is true when it overlaps a
  (grace-extended) window, otherwise it is one false positive.
  event recall = detected windows / scorable windows;
  event precision = true alert runs / all alert runs;
  event F1 = 2PR/(P+R), 0 when P or R is 0 (e.g. no window detected and no alert at all).
- time to detect: readings (and minutes) from a detected window's first reading to its first
  flag; 0 means flagged on the first anomalous reading.
- AP (AUC-PR): average precision of the z-score against the labels, sklearn's step-wise
  definition (no interpolation); its no-skill baseline is the share of anomalous readings.
- point-adjusted F1: every reading of a detected window counts as detected. A single flag then
  earns a whole window, so it is inflated; it is printed for comparison with papers only.

Over 300 lines: the metrics and the command that prints them stay side by side.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import click
import numpy as np

from stream_app.core.accuracy import f1, precision_recall_f1, ratio
from stream_app.core.errors import InputError
from stream_app.core.series import MeterSeries

LABEL_KEYS = {"meter_id", "start", "end"}


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True as [start, end) pairs."""
    edges = np.diff(np.concatenate(([0], np.asarray(mask, dtype=np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def pointwise(labels: np.ndarray, flagged: np.ndarray) -> dict:
    """Point-wise counts, precision, recall and F1 (the readings given are all scored)."""
    y, f = np.asarray(labels, bool), np.asarray(flagged, bool)
    tp, fp, fn = int((y & f).sum()), int((~y & f).sum()), int((y & ~f).sum())
    precision, recall, f1_score = precision_recall_f1(tp, fp, fn)
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall,
            "f1": f1_score}


def events(labels: np.ndarray, flagged: np.ndarray, scored: np.ndarray, grace: int = 0,
           interval_s: int = 900) -> dict:
    """Event-level detection over one series (see the module docstring for the formulas)."""
    if grace < 0:
        raise InputError(f"grace must be >= 0 readings, got {grace}")
    flagged, scored = np.asarray(flagged, bool), np.asarray(scored, bool)
    n = len(flagged)
    windows = [(a, min(b + grace, n)) for a, b in _runs(np.asarray(labels, bool))]
    scorable = [(a, b) for a, b in windows if scored[a:b].any()]
    delays = []
    for a, b in scorable:
        hits = np.flatnonzero(flagged[a:b])
        if len(hits):
            delays.append(int(hits[0]))
    alerts = _runs(flagged)
    true_alerts = sum(any(a < wb and wa < b for wa, wb in windows) for a, b in alerts)
    p, r = ratio(true_alerts, len(alerts)), ratio(len(delays), len(scorable))
    return {"windows": len(scorable), "unscorable_windows": len(windows) - len(scorable),
            "detected": len(delays), "alert_runs": len(alerts),
            "false_alert_runs": len(alerts) - true_alerts, "precision": p, "recall": r,
            "f1": f1(p, r), "delays_readings": delays,
            "delays_minutes": [d * interval_s / 60 for d in delays]}


def delay_summary(delays_readings: list[int], delays_minutes: list[float]) -> dict:
    if not delays_readings:
        return {"mean_readings": None, "median_readings": None,
                "mean_minutes": None, "median_minutes": None}
    return {"mean_readings": float(np.mean(delays_readings)),
            "median_readings": float(np.median(delays_readings)),
            "mean_minutes": float(np.mean(delays_minutes)),
            "median_minutes": float(np.median(delays_minutes))}


def average_precision(labels: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the precision-recall curve as sum (R_k - R_k-1) P_k over distinct scores.

    Ties share one threshold, as in sklearn.metrics.average_precision_score. None when no
    reading is labelled anomalous. Higher score = more anomalous.
    """
    y, s = np.asarray(labels, np.float64), np.asarray(score, np.float64)
    if y.shape != s.shape or not np.isfinite(s).all():
        raise ValueError("labels and scores must have the same shape; scores must be finite")
    if y.sum() == 0:
        return None
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each distinct score
    tps = np.cumsum(y)[last]
    precision = tps / (last + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def point_adjusted_f1(labels: np.ndarray, flagged: np.ndarray) -> float | None:
    """Inflated: a window with any flag counts as wholly detected. Never the headline."""
    y, adjusted = np.asarray(labels, bool), np.asarray(flagged, bool).copy()
    for a, b in _runs(y):
        if adjusted[a:b].any():
            adjusted[a:b] = True
    return pointwise(y, adjusted)["f1"]


def _parse_time(text, where: str) -> int:
    if not isinstance(text, str):
        raise InputError(f"{where}: expected an ISO-8601 string, got {text!r}")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"{where}: cannot parse {text!r} as ISO-8601") from None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())


def apply_label_windows(series: list[MeterSeries], path: str | Path) -> None:
    """Replace every series' labels by the JSON windows (start and end inclusive)."""
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read labels {path}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"labels {path} is not valid JSON: {exc}") from None
    if not isinstance(entries, list):
        raise InputError(f"labels {path}: expected a list of "
                         '{"meter_id", "start", "end"} objects')
    by_id = {s.meter_id: s for s in series}
    for s in series:
        s.labels = np.zeros(len(s), dtype=np.int8)
    for k, e in enumerate(entries):
        where = f"labels {Path(path).name} entry {k}"
        if not isinstance(e, dict) or set(e) != LABEL_KEYS:
            raise InputError(f"{where}: expected exactly the keys meter_id, start, end; "
                             f"got {sorted(e) if isinstance(e, dict) else e!r}")
        meter = by_id.get(str(e["meter_id"]))
        if meter is None:
            raise InputError(f"{where}: meter {e['meter_id']!r} is not in the input; "
                             f"known: {', '.join(by_id)}")
        start, end = _parse_time(e["start"], where), _parse_time(e["end"], where)
        if end < start:
            raise InputError(f"{where}: end {e['end']} is before start {e['start']}")
        labels = cast(np.ndarray, meter.labels)  # every series got its zeros above
        labels[(meter.timestamps >= start) & (meter.timestamps <= end)] = 1


def _metrics(y, flagged, scored, z, ev: dict) -> dict:
    return {"scored_readings": int(scored.sum()), "anomalous_readings": int(y[scored].sum()),
            "point": pointwise(y[scored], flagged[scored]), "event": ev,
            "time_to_detect": delay_summary(ev["delays_readings"], ev["delays_minutes"]),
            "ap": average_precision(y[scored], z[scored]),
            "ap_baseline": ratio(int(y[scored].sum()), int(scored.sum())),
            "point_adjusted_f1_inflated": point_adjusted_f1(y[scored], flagged[scored])}


def evaluate(detector, series: list[MeterSeries], grace: int = 0) -> tuple[dict, list]:
    """(report, per-meter SeriesScores): metrics per meter and pooled over all meters."""
    from stream_app.core.offline import score_series

    if not series or all(s.labels is None for s in series):
        raise InputError("no labels found: give the CSV a 0/1 label (or anomaly) column, "
                         "or label windows with --labels")
    need = detector.bundle.max_window + 1
    for s in series:
        if len(s) < need:
            raise InputError(f"meter {s.meter_id}: {len(s)} readings are too short for "
                             f"window {need - 1} (need at least {need})")
    meters, results, pooled = {}, [], []
    for s in series:
        r = score_series(detector, s)
        scored = ~np.isnan(r.z)
        y = s.labels.astype(bool) if s.labels is not None else np.zeros(len(s), bool)
        flagged = r.flagged.astype(bool)
        ev = events(y, flagged, scored, grace, s.interval_s)
        m = _metrics(y, flagged, scored, r.z, ev)
        meters[s.meter_id] = {"category": s.category, "readings": len(s),
                              "limit": detector.bundle.limits.limit(s.category), **m}
        results.append(r)
        pooled.append((y, flagged, scored, np.nan_to_num(r.z), ev))
    if sum(m["anomalous_readings"] for m in meters.values()) == 0:
        raise InputError("no scored reading is labelled anomalous (label 1): nothing to "
                         "evaluate (labels inside the warm-up are not scored)")
    overall = _pooled(pooled)
    bundle = detector.bundle
    report = {"bundle": {"version": bundle.version, "path": str(bundle.path)},
              "thresholds": {c: float(v) for c, v in bundle.limits.limits.items()},
              "grace_readings": grace, "definitions": __doc__.split("\n\n", 1)[1].strip(),
              "overall": overall, "meters": meters}
    return report, results


def _pooled(parts) -> dict:
    """Point-wise and AP over all meters' readings; event counts summed meter by meter."""
    y = np.concatenate([p[0] for p in parts])
    flagged = np.concatenate([p[1] for p in parts])
    scored = np.concatenate([p[2] for p in parts])
    z = np.concatenate([p[3] for p in parts])
    per = [p[4] for p in parts]
    ev = {k: sum(e[k] for e in per) for k in ("windows", "unscorable_windows", "detected",
                                              "alert_runs", "false_alert_runs")}
    ev["precision"] = ratio(ev["alert_runs"] - ev["false_alert_runs"], ev["alert_runs"])
    ev["recall"] = ratio(ev["detected"], ev["windows"])
    ev["f1"] = f1(ev["precision"], ev["recall"])
    ev["delays_readings"] = [d for e in per for d in e["delays_readings"]]
    ev["delays_minutes"] = [d for e in per for d in e["delays_minutes"]]
    return _metrics(y, flagged, scored, z, ev)


def write_plots(results, limits, out: Path) -> list[Path]:
    """One PNG per meter: readings and z-score, label windows shaded, flags marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for r in results:
        s = r.series
        t = (s.timestamps - s.timestamps[0]) / 86400.0
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 5), sharex=True)
        for ax in (ax1, ax2):
            for a, b in _runs(s.labels.astype(bool) if s.labels is not None else []):
                ax.axvspan(t[a], t[min(b, len(t) - 1)], color="tab:red", alpha=0.2, lw=0)
        hit = r.flagged.astype(bool)
        ax1.plot(t, s.values, lw=0.6, color="tab:blue", label="reading (kWh)")
        ax1.scatter(t[hit], s.values[hit], s=8, color="black", zorder=3, label="flagged")
        ax1.legend(loc="upper right", fontsize=8)
        ax1.set_title(f"{s.meter_id} ({s.category}): red = labelled anomalous")
        ax2.plot(t, r.z, lw=0.6, color="tab:purple", label="z-score")
        ax2.axhline(limits.limit(s.category), color="tab:orange", ls="--", label="limit")
        ax2.scatter(t[hit], r.z[hit], s=8, color="black", zorder=3)
        ax2.set_xlabel("days")
        ax2.legend(loc="upper right", fontsize=8)
        path = out / f"{_safe(s.meter_id)}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "meter"


def _f(x, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def format_summary(report: dict) -> str:
    head = (f"{'meter':<14}{'cat':<13}{'scored':>7}{'events':>7}{'det':>5}{'FPrun':>6}"
            f"{'pt P':>6}{'pt R':>6}{'pt F1':>6}{'ev P':>6}{'ev R':>6}{'ev F1':>6}"
            f"{'AP':>6}{'base':>6}{'ttd min':>8}")
    title = (f"bundle {report['bundle']['version']}, grace {report['grace_readings']} "
             "readings; metrics over scored readings")
    lines = [title, head]
    rows = [(k, m["category"], m) for k, m in report["meters"].items()]
    rows.append(("overall", "", report["overall"]))
    for name, cat, m in rows:
        p, e = m["point"], m["event"]
        lines.append(
            f"{name[:13]:<14}{cat:<13}{m['scored_readings']:>7}{e['windows']:>7}"
            f"{e['detected']:>5}{e['false_alert_runs']:>6}{_f(p['precision']):>6}"
            f"{_f(p['recall']):>6}{_f(p['f1']):>6}{_f(e['precision']):>6}{_f(e['recall']):>6}"
            f"{_f(e['f1']):>6}{_f(m['ap']):>6}{_f(m['ap_baseline']):>6}"
            f"{_f(m['time_to_detect']['median_minutes'], 0):>8}")
    o = report["overall"]
    lines.append(f"point-adjusted F1 {_f(o['point_adjusted_f1_inflated'])} (INFLATED: one flag "
                 "credits a whole window; not a headline figure)")
    return "\n".join(lines)


def evaluate_params() -> list[click.Option]:
    """Options of `meterwatch evaluate`."""
    from stream_app.cli import model_param
    from stream_app.io.series_io import csv_params

    return [
        model_param(),
        click.Option(["--input"], required=True, type=click.Path(path_type=Path),
                     help="CSV of meter readings"),
        click.Option(["--out"], required=True, type=click.Path(path_type=Path),
                     help="folder for report.json and plots"),
        click.Option(["--labels"], type=click.Path(path_type=Path),
                     help='JSON [{"meter_id", "start", "end"}, ...] label windows, ends '
                     "inclusive (default: the CSV's label/anomaly column)"),
        click.Option(["--grace"], type=int, default=0,
                     help="readings after a label window's end that still count as detecting it"),
        click.Option(["--no-plots"], is_flag=True, help="skip the PNG plots"),
        *csv_params(),
    ]


def run_evaluate(args) -> int:
    """`meterwatch evaluate`: InputError (bad input, no labels) propagates: exit 2."""
    from stream_app.cli import _read
    from stream_app.core.model_bundle import Bundle
    from stream_app.core.scoring import Detector

    if args.grace < 0:
        raise InputError(f"--grace must be >= 0 readings, got {args.grace}")
    detector = Detector(Bundle.load(args.model))
    series = _read(args)
    if args.labels is not None:
        apply_label_windows(series, args.labels)
    report, results = evaluate(detector, series, grace=args.grace)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    except OSError as exc:
        raise InputError(f"cannot write to {args.out}: {exc.strerror}") from None
    print(format_summary(report))
    if args.no_plots:
        note = "plots skipped (--no-plots)"
    else:
        try:
            note = f"{len(write_plots(results, detector.bundle.limits, args.out))} plot(s)"
        except ImportError:
            note = "plots skipped: matplotlib is not installed (pip install 'meterwatch[dev]')"
    print(f"wrote {args.out / 'report.json'}; {note}")
    return 0
