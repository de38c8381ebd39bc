"""An Isolation Forest stored as plain arrays and scored with numpy: no pickle, no sklearn.

Sign rule, written once: `ForestScorer.score` is HIGHER FOR MORE ANOMALOUS rows. It equals
`-IsolationForest.score_samples(X)` = 2 ** (-E[h(x)] / c(max_samples)), in (0, 1]; rows of
normal data sit near 0.4-0.5, isolated rows approach 1. `decision_offset` is sklearn's
`offset_` flipped the same way: a row is an outlier for sklearn exactly when score > offset.

All trees are concatenated into flat node arrays (feature, threshold, left, right, leaf value),
the layout saved with `np.savez` and loaded with `allow_pickle=False`. Scoring walks every
(row, tree) pair one level per step, so a batch costs max_depth vectorised steps whatever its
size. A leaf's value is its depth plus c(n_node_samples), the average path length of the
samples the tree did not split further, as in sklearn. Loaded arrays are checked structurally
(children after parents, every path ends in a leaf within max_depth) because a corrupt forest
would otherwise score silently wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream_app.core.errors import BundleError, NotFittedError

EULER_GAMMA = 0.5772156649015329
_KEYS = {"feature": np.int32, "threshold": np.float64, "left": np.int32, "right": np.int32,
         "leaf_value": np.float64, "roots": np.int32, "meta": np.float64}


def average_path_length(n: np.ndarray) -> np.ndarray:
    """c(n): average path length of an unsuccessful BST search among n points (sklearn's)."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    big = n > 2
    out[n == 2] = 1.0
    out[big] = 2.0 * (np.log(n[big] - 1.0) + EULER_GAMMA) - 2.0 * (n[big] - 1.0) / n[big]
    return out


@dataclass(frozen=True, eq=False)
class ForestScorer:
    feature: np.ndarray  # global feature index per node (-1 at leaves)
    threshold: np.ndarray  # go left when x[feature] <= threshold
    left: np.ndarray  # global node index of the left child (-1 at leaves)
    right: np.ndarray
    leaf_value: np.ndarray  # depth + c(n_node_samples) at leaves
    roots: np.ndarray  # node index of each tree's root
    n_features: int
    max_samples: int
    max_depth: int
    decision_offset: float  # sklearn's offset_, flipped to our sign: anomalous when score > it
    _walk: tuple[np.ndarray, np.ndarray, np.ndarray] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _check_structure(self)
        leaf = self.feature < 0
        node = np.arange(len(self.feature))
        # Leaves become self-loops that are never left (threshold +inf: always "go left" to
        # themselves), so a step needs no leaf mask.
        child = np.empty(2 * len(node), dtype=np.intp)
        child[0::2] = np.where(leaf, node, self.left)
        child[1::2] = np.where(leaf, node, self.right)
        walk = (np.where(leaf, 0, self.feature).astype(np.intp),
                np.where(leaf, np.inf, self.threshold), child)
        object.__setattr__(self, "_walk", walk)

    @classmethod
    def from_sklearn(cls, model: Any) -> ForestScorer:
        """Copy a fitted sklearn IsolationForest (duck-typed: sklearn is not imported here)."""
        if not getattr(model, "estimators_", None):
            raise NotFittedError("the Isolation Forest is not fitted: fit it first")
        parts: dict[str, list[np.ndarray]] = {
            k: [] for k in ("feature", "threshold", "left", "right", "leaf_value")}
        roots: list[int] = []
        offset, depth_max = 0, 0
        for tree, feats in zip(model.estimators_, model.estimators_features_, strict=True):
            t = tree.tree_
            count = t.node_count
            depth = np.zeros(count, dtype=np.int64)
            for node in range(count):  # children always have larger indices than parents
                for child in (t.children_left[node], t.children_right[node]):
                    if child != -1:
                        depth[child] = depth[node] + 1
            leaf = t.children_left == -1
            feats = np.asarray(feats)
            parts["feature"].append(np.where(leaf, -1, feats[np.maximum(t.feature, 0)]))
            parts["threshold"].append(np.where(leaf, 0.0, t.threshold))
            parts["left"].append(np.where(leaf, -1, t.children_left + offset))
            parts["right"].append(np.where(leaf, -1, t.children_right + offset))
            parts["leaf_value"].append(
                np.where(leaf, depth + average_path_length(t.n_node_samples), 0.0))
            roots.append(offset)
            offset += count
            depth_max = max(depth_max, int(depth.max()))
        arrays = {k: np.concatenate(v).astype(_KEYS[k]) for k, v in parts.items()}
        return cls(**arrays, roots=np.asarray(roots, dtype=np.int32),
                   n_features=int(model.n_features_in_), max_samples=int(model.max_samples_),
                   max_depth=depth_max, decision_offset=float(-model.offset_))

    def to_arrays(self) -> dict[str, np.ndarray]:
        meta = np.array([self.n_features, self.max_samples, self.max_depth,
                         self.decision_offset], dtype=np.float64)
        return {"feature": self.feature, "threshold": self.threshold, "left": self.left,
                "right": self.right, "leaf_value": self.leaf_value, "roots": self.roots,
                "meta": meta}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, object]) -> ForestScorer:
        """Rebuild from `to_arrays()` output; anything malformed is a BundleError."""
        if set(arrays) != set(_KEYS):
            raise BundleError(f"forest arrays must be exactly {sorted(_KEYS)}, got {sorted(arrays)}")
        a: dict[str, np.ndarray] = {}
        for key, dtype in _KEYS.items():
            value = np.asarray(arrays[key])
            if value.ndim != 1 or value.dtype != dtype:
                raise BundleError(f"forest array {key!r} must be 1-D {np.dtype(dtype).name}")
            a[key] = value
        meta = a.pop("meta")
        if len(meta) != 4 or not np.isfinite(meta).all():
            raise BundleError("forest metadata must be 4 finite numbers")
        n_features, max_samples, max_depth, offset = meta
        return cls(**a, n_features=int(n_features), max_samples=int(max_samples),
                   max_depth=int(max_depth), decision_offset=float(offset))

    def score(self, X: np.ndarray) -> np.ndarray:
        """Anomaly score per row, higher = more anomalous (module docstring)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} features, got shape {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("the features hold NaN or infinite values")
        # sklearn compares float32 inputs with float64 thresholds: do the same, to the bit
        flat = X.astype(np.float32).astype(np.float64).ravel()
        feature, threshold, child = self._walk
        row_start = (np.arange(len(X), dtype=np.intp) * self.n_features)[:, None]
        node = np.broadcast_to(self.roots.astype(np.intp), (len(X), len(self.roots))).copy()
        for _ in range(self.max_depth):
            go_right = flat[row_start + feature[node]] > threshold[node]
            node = child[2 * node + go_right]
        depth = self.leaf_value[node].mean(axis=1)
        score: np.ndarray = 2.0 ** (-depth / average_path_length(np.array([self.max_samples]))[0])
        return score


def _check_structure(f: ForestScorer) -> None:
    """BundleError unless the arrays form trees whose every path ends in a leaf by max_depth."""
    nodes = len(f.feature)
    if any(len(a) != nodes for a in (f.threshold, f.left, f.right, f.leaf_value)):
        raise BundleError("forest node arrays differ in length")
    if nodes == 0 or len(f.roots) == 0:
        raise BundleError("the forest has no trees")
    if f.n_features < 1 or f.max_samples < 2 or f.max_depth < 0:
        raise BundleError(f"forest metadata out of range: n_features={f.n_features}, "
                          f"max_samples={f.max_samples}, max_depth={f.max_depth}")
    if f.feature.max() >= f.n_features or f.feature.min() < -1:
        raise BundleError("forest array 'feature' names a feature outside the inputs")
    inner = np.flatnonzero(f.feature >= 0)
    leaves = np.flatnonzero(f.feature < 0)
    if not (np.isfinite(f.threshold[inner]).all() and np.isfinite(f.leaf_value[leaves]).all()):
        raise BundleError("forest thresholds or leaf values are not finite")
    if (f.left[leaves] != -1).any() or (f.right[leaves] != -1).any():
        raise BundleError("forest leaves must have no children")
    for key, children in (("left", f.left), ("right", f.right)):
        # Children after their parent: no cycles, and every index inside the node arrays.
        if ((children[inner] <= inner) | (children[inner] >= nodes)).any():
            raise BundleError(f"forest array {key!r} points outside the nodes or backwards")
    if f.roots.min() < 0 or f.roots.max() >= nodes:
        raise BundleError("forest array 'roots' points outside the nodes")
    frontier = f.roots.astype(np.intp)
    for _ in range(f.max_depth):
        frontier = frontier[f.feature[frontier] >= 0]
        frontier = np.concatenate([f.left[frontier], f.right[frontier]])
    if (f.feature[frontier] >= 0).any():
        raise BundleError(f"a forest path is deeper than max_depth={f.max_depth}")
