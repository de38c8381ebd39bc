"""Naive references: full matrices and plain loops, written to be read, not to be fast."""

from __future__ import annotations

import math

import numpy as np


def dtw(x, y, band=None) -> float:
    """DTW with local cost (x_i - y_j)^2, steps (i-1,j), (i,j-1), (i-1,j-1), sqrt at the end.

    Cells with |i - j| > band are forbidden (infinite cost).
    """
    n, m = len(x), len(y)
    inf = float("inf")
    d = [[inf] * (m + 1) for _ in range(n + 1)]
    d[0][0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            if band is not None and abs(i - j) > band:
                continue
            cost = (float(x[i - 1]) - float(y[j - 1])) ** 2
            d[i][j] = cost + min(d[i - 1][j], d[i][j - 1], d[i - 1][j - 1])
    return math.sqrt(d[n][m])


def c_factor(n: float) -> float:
    """Average path length of an unsuccessful search in a binary search tree of n points."""
    if n <= 1:
        return 0.0
    if n == 2:
        return 1.0
    return 2.0 * (math.log(n - 1.0) + np.euler_gamma) - 2.0 * (n - 1.0) / n


def isolation_score(model, X) -> np.ndarray:
    """-score_samples of a fitted sklearn IsolationForest, one sample and one tree at a time."""
    X = np.asarray(X, dtype=np.float64)
    out = np.empty(len(X))
    for s, row in enumerate(X):
        depths = []
        for tree, feats in zip(model.estimators_, model.estimators_features_):
            t = tree.tree_
            node, depth = 0, 0
            while t.children_left[node] != -1:
                value = row[feats[t.feature[node]]]
                node = t.children_left[node] if value <= t.threshold[node] else t.children_right[node]
                depth += 1
            depths.append(depth + c_factor(t.n_node_samples[node]))
        out[s] = 2.0 ** (-np.mean(depths) / c_factor(model.max_samples_))
    return out


def zscore_limit(base: float, ratios: dict[str, float], gamma: float, lo: float, hi: float):
    """The documented limit formula, written out with plain floats."""
    total = sum(ratios.values())
    shares = {c: r / total for c, r in ratios.items()}
    r_bar = sum(s * s for s in shares.values())
    return {c: min(hi, max(lo, base * (s / r_bar) ** gamma)) for c, s in shares.items()}
