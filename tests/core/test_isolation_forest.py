"""ForestScorer against sklearn's IsolationForest, a naive tree walk, and corrupt arrays."""

from __future__ import annotations

import numpy as np
import pytest
from reference import naive

from stream_app.core.errors import BundleError, NotFittedError
from stream_app.core.isolation_forest import ForestScorer, average_path_length

ensemble = pytest.importorskip("sklearn.ensemble")


def _fit(n_estimators=25, max_samples="auto", n_features=6, max_features=1.0, seed=0):
    rng = np.random.default_rng(seed)
    train = rng.normal(size=(600, n_features))
    model = ensemble.IsolationForest(
        n_estimators=n_estimators, max_samples=max_samples, max_features=max_features,
        random_state=seed,
    ).fit(train)
    test = np.vstack([rng.normal(size=(200, n_features)), 6 * rng.normal(size=(20, n_features))])
    return model, test


@pytest.mark.parametrize(
    "n_estimators, max_samples, n_features, max_features",
    [(25, "auto", 6, 1.0), (10, 64, 1, 1.0), (40, 0.3, 6, 0.5), (7, 600, 6, 2), (1, 16, 2, 1.0)],
)
def test_equals_minus_score_samples(n_estimators, max_samples, n_features, max_features):
    model, X = _fit(n_estimators, max_samples, n_features, max_features)
    forest = ForestScorer.from_sklearn(model)
    np.testing.assert_allclose(forest.score(X), -model.score_samples(X), rtol=0, atol=1e-12)
    # The decision offset agrees with sklearn's own outlier decision.
    np.testing.assert_array_equal(forest.score(X) > forest.decision_offset, model.predict(X) == -1)


def test_matches_naive_walk_and_sign():
    model, X = _fit()
    score = ForestScorer.from_sklearn(model).score(X)
    np.testing.assert_allclose(score, naive.isolation_score(model, X), rtol=0, atol=1e-12)
    assert np.all((score > 0) & (score <= 1))
    # Higher = more anomalous: the wide rows at the end score above the typical ones.
    assert np.median(score[200:]) > np.median(score[:200])


def test_float32_input_is_compared_like_sklearn():
    model, X = _fit(seed=4)
    X32 = X.astype(np.float32)
    forest = ForestScorer.from_sklearn(model)
    np.testing.assert_allclose(forest.score(X32), -model.score_samples(X32), atol=1e-12)


def test_average_path_length_small_and_large():
    np.testing.assert_allclose(average_path_length([0, 1, 2]), [0.0, 0.0, 1.0])
    assert average_path_length([256])[0] == pytest.approx(naive.c_factor(256), rel=1e-15)


def test_npz_round_trip_gives_identical_scores(tmp_path):
    model, X = _fit(n_estimators=12, max_samples=100)
    forest = ForestScorer.from_sklearn(model)
    np.savez(tmp_path / "forest.npz", **forest.to_arrays())
    with np.load(tmp_path / "forest.npz", allow_pickle=False) as data:
        loaded = ForestScorer.from_arrays(dict(data))
    np.testing.assert_array_equal(loaded.score(X), forest.score(X))
    assert loaded.decision_offset == forest.decision_offset
    assert (loaded.max_depth, loaded.max_samples, loaded.n_features) == (
        forest.max_depth, forest.max_samples, forest.n_features)


def test_batch_sizes_agree_row_by_row():
    model, X = _fit(n_estimators=8)
    forest = ForestScorer.from_sklearn(model)
    full = forest.score(X)
    assert forest.score(X[:0]).shape == (0,)
    for k in (0, 7, 219):
        assert forest.score(X[k : k + 1])[0] == full[k]


def _arrays():
    model, _ = _fit(n_estimators=3, max_samples=32)
    return ForestScorer.from_sklearn(model).to_arrays()


def _corrupt(**changes):
    arrays = {k: v.copy() for k, v in _arrays().items()}
    for key, fn in changes.items():
        arrays[key] = fn(arrays[key])
    return arrays


def _set(index, value):
    def fn(a):
        a[index] = value
        return a
    return fn


@pytest.mark.parametrize(
    "arrays",
    [
        pytest.param({k: v for k, v in _arrays().items() if k != "roots"}, id="missing-key"),
        pytest.param({**_arrays(), "extra": np.zeros(1)}, id="unknown-key"),
        pytest.param(_corrupt(threshold=lambda a: a.astype(np.float32)), id="wrong-dtype"),
        pytest.param(_corrupt(left=lambda a: a[:, None]), id="2-d"),
        pytest.param(_corrupt(left=lambda a: a[:-1]), id="length-mismatch"),
        pytest.param(_corrupt(left=_set(0, 0)), id="cycle"),
        pytest.param(_corrupt(right=_set(0, 10**6)), id="child-out-of-range"),
        pytest.param(_corrupt(feature=_set(0, 99)), id="feature-out-of-range"),
        pytest.param(_corrupt(roots=_set(0, -5)), id="bad-root"),
        pytest.param(_corrupt(meta=_set(2, 1.0)), id="max-depth-too-small"),
        pytest.param(_corrupt(meta=_set(1, 1.0)), id="max-samples-1"),
        pytest.param(_corrupt(meta=lambda a: a[:3]), id="short-meta"),
        pytest.param(_corrupt(threshold=_set(0, np.nan)), id="nan-threshold"),
        pytest.param({k: v[:0] for k, v in _corrupt(meta=lambda a: a[:0]).items()}, id="empty"),
    ],
)
def test_bad_arrays_are_bundle_errors(arrays):
    with pytest.raises(BundleError):
        ForestScorer.from_arrays(arrays)


def test_unfitted_model_and_bad_inputs():
    with pytest.raises(NotFittedError, match="fit it first"):
        ForestScorer.from_sklearn(ensemble.IsolationForest())
    model, X = _fit(n_estimators=3)
    forest = ForestScorer.from_sklearn(model)
    with pytest.raises(ValueError, match="features"):
        forest.score(X[:, :2])
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        forest.score(X)
