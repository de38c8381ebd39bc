"""`meterwatch sweep`: detection F1 as a function of the MI-FGSM epsilon (the study's analysis).

For each epsilon, adversarial windows are crafted from normal validation rows (MI-FGSM on the
first model's reconstruction loss at the longest window) and serve as the anomaly class that
calibrates the global z limit (best F1 of normal vs adversarial rows, as in training). That
limit is then applied to a labelled test series: the training meters with anomalies of every
kind injected into their held-out last 20 % (fixed seed). Reported per epsilon: the calibrated
limit and the point-wise precision, recall and F1 on the test series. Epsilon is in z-units of
the normalised readings. Writes sweep.csv, sweep.md and sweep.png into the output folder.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import cast

import numpy as np

from stream_app.core.accuracy import precision_recall_f1
from stream_app.core.offline import score_series
from stream_app.core.profiles import Profile
from stream_app.core.scoring import Detector, forest_features
from stream_app.core.series import MeterSeries
from stream_app.devtools.anomalies import inject
from training.adversarial import mi_fgsm
from training.pipeline import VALIDATION_SHARE, TrainOptions, best_base_limit, train_bundle

DEFAULT_EPSILONS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0)


def _prf(flags: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """Point-wise precision, recall and F1, 0 where undefined (the sweep's table)."""
    tp = int((flags & labels).sum())
    precision, recall, f1 = precision_recall_f1(tp, int(flags.sum()) - tp, int(labels.sum()) - tp)
    return precision or 0.0, recall or 0.0, f1 or 0.0


def _test_scores(detector: Detector, series: list[MeterSeries], seed: int):
    """z-scores and labels of every scored reading of the injected held-out parts."""
    zs, labels = [], []
    for k, s in enumerate(series):
        warmup = int(len(s.values) * (1 - VALIDATION_SHARE))
        count = max(1, (len(s.values) - warmup) // (96 * 3))
        injected, _ = inject(s, count=count, seed=seed + k, warmup=warmup, min_gap=96)
        result = score_series(detector, injected)
        held_out = np.zeros(len(s.values), dtype=bool)
        held_out[warmup:] = True
        keep = held_out & np.isfinite(result.z)
        zs.append(result.z[keep])
        labels.append(cast(np.ndarray, injected.labels)[keep].astype(bool))  # inject labels
    return np.concatenate(zs), np.concatenate(labels)


def epsilon_sweep(series: list[MeterSeries], out: Path, profile: Profile, options: TrainOptions,
                  epsilons=DEFAULT_EPSILONS) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    keep: dict = {}
    bundle = train_bundle(series, out / "bundle", profile, options, keep)
    detector = Detector(bundle)
    median = np.asarray(bundle.manifest.feature_stats.median)
    limits = bundle.limits

    def z_of(rows: np.ndarray) -> np.ndarray:
        feats = detector.features(detector.errors(detector.trailing_windows(rows))[0])
        return limits.zscores(bundle.forest.score(forest_features(feats, median)))

    rng = np.random.default_rng(options.seed)
    val_rows = keep["val_rows"]
    source = val_rows[rng.choice(len(val_rows), min(1000, len(val_rows)), replace=False)]
    model = keep["models"][(bundle.models[0], bundle.max_window)]
    z_normal = z_of(val_rows)
    z_test, labels = _test_scores(detector, series, options.seed)
    results = []
    for eps in epsilons:
        adversarial = mi_fgsm(model, source, epsilon=eps, seed=options.seed) if eps else source
        limit, f1_adv = best_base_limit(z_normal, z_of(adversarial))
        precision, recall, f1 = _prf(z_test > limit, labels)
        results.append({"epsilon": eps, "limit": round(limit, 2), "f1_adversarial": round(f1_adv, 4),
                        "precision": round(precision, 4), "recall": round(recall, 4),
                        "f1": round(f1, 4)})
    _write(out, results, len(labels), int(labels.sum()))
    return results


def _write(out: Path, results: list[dict], n: int, positives: int) -> None:
    with open(out / "sweep.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(results[0]))
        writer.writeheader()
        writer.writerows(results)
    lines = [f"Test readings: {n} ({positives} labelled anomalous).", "",
             "| epsilon | calibrated z limit | F1 normal vs adversarial | precision | recall | F1 |",
             "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['epsilon']} | {r['limit']} | {r['f1_adversarial']} | {r['precision']} | "
              f"{r['recall']} | {r['f1']} |" for r in results]
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    eps = [r["epsilon"] for r in results]
    ax.plot(eps, [r["f1"] for r in results], marker="o", label="F1 on injected test series")
    ax.plot(eps, [r["f1_adversarial"] for r in results], marker="s", linestyle="--",
            label="F1 normal vs adversarial")
    ax.axvline(0.25, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("MI-FGSM epsilon (z-units)")
    ax.set_ylabel("F1")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "sweep.png", dpi=120)
    plt.close(fig)
