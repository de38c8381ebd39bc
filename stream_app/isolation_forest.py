"""An Isolation Forest stored as plain arrays and scored with numpy: no pickle, no sklearn.

Sign rule, written once: `ForestScorer.score` is HIGHER FOR MORE ANOMALOUS rows. It equals
`-IsolationForest.score_samples(X)` = 2 ** (-E[h(x)] / c(max_samples)), in (0, 1]; rows of
normal data sit near 0.4-0.5, isolated rows approach 1.

All trees are concatenated into flat node arrays (feature, threshold, left, right, leaf value);
scoring walks every (row, tree) pair one level per step, so a batch costs max_depth vectorised
steps. A leaf's value is its depth plus c(n_node_samples), the average path length of the
samples the tree did not split further, as in sklearn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream_app.errors import BundleError, NotFittedError

EULER_GAMMA = 0.5772156649015329
_KEYS = {"feature": np.int32, "threshold": np.float64, "left": np.int32, "right": np.int32,
         "leaf_value": np.float64, "roots": np.int32, "meta": np.float64}


def average_path_length(n: np.ndarray) -> np.ndarray:
    """c(n): average path length of an unsuccessful BST search among n points (sklearn's)."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    two = n == 2
    big = n > 2
    out[two] = 1.0
    out[big] = 2.0 * (np.log(n[big] - 1.0) + EULER_GAMMA) - 2.0 * (n[big] - 1.0) / n[big]
    return out


@dataclass(frozen=True)
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

    @classmethod
    def from_sklearn(cls, model) -> ForestScorer:
        if not hasattr(model, "estimators_"):
            raise NotFittedError("the Isolation Forest is not fitted: fit it first")
        parts = {k: [] for k in ("feature", "threshold", "left", "right", "leaf_value")}
        roots, offset, depth_max = [], 0, 0
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
    def from_arrays(cls, arrays: dict) -> ForestScorer:
        if set(arrays) != set(_KEYS):
            raise BundleError(f"forest arrays must be exactly {sorted(_KEYS)}, got {sorted(arrays)}")
        a = {}
        for key, dtype in _KEYS.items():
            value = np.asarray(arrays[key])
            if value.ndim != 1 or value.dtype != dtype:
                raise BundleError(f"forest array {key!r} must be 1-D {np.dtype(dtype).name}")
            a[key] = value
        nodes = len(a["feature"])
        if any(len(a[k]) != nodes for k in ("threshold", "left", "right", "leaf_value")):
            raise BundleError("forest node arrays differ in length")
        for key in ("left", "right", "roots"):
            if len(a[key]) and (a[key].max() >= nodes or a[key].min() < -1):
                raise BundleError(f"forest array {key!r} points outside the nodes")
        if len(a["meta"]) != 4 or len(a["roots"]) == 0:
            raise BundleError("forest arrays are empty or their metadata is malformed")
        n_features, max_samples, max_depth, offset = a.pop("meta")
        return cls(**a, n_features=int(n_features), max_samples=int(max_samples),
                   max_depth=int(max_depth), decision_offset=float(offset))

    def score(self, X: np.ndarray) -> np.ndarray:
        """Anomaly score per row, higher = more anomalous (module docstring)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} features, got shape {X.shape}")
        # sklearn compares float32 inputs with float64 thresholds: do the same, to the bit
        X = X.astype(np.float32).astype(np.float64)
        n = len(X)
        node = np.broadcast_to(self.roots, (n, len(self.roots))).copy()
        rows = np.arange(n)[:, None]
        for _ in range(self.max_depth):
            feat = self.feature[node]
            inner = feat >= 0
            if not inner.any():
                break
            go_left = X[rows, np.maximum(feat, 0)] <= self.threshold[node]
            child = np.where(go_left, self.left[node], self.right[node])
            node = np.where(inner, child, node)
        depth = self.leaf_value[node].mean(axis=1)
        return 2.0 ** (-depth / average_path_length(np.array([self.max_samples]))[0])
