"""dtw_batch against the naive full-matrix DTW, dtaidistance, and its edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from reference import naive

from stream_app.core.dtw import dtw_batch

LENGTHS = (1, 2, 5, 16, 24, 96)


def _pairs(n: int, length: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + 1000 * length)
    return rng.normal(size=(n, length)), rng.normal(size=(n, length))


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("band", [None, 0, 1, 3, 200])
def test_matches_naive(length, band):
    # 37 pairs: one full block of lanes plus a padded one.
    x, y = _pairs(37 if length < 96 else 9, length)
    got = dtw_batch(x, y, band=band, normalise=False)
    expected = np.array([naive.dtw(a, b, band) for a, b in zip(x, y, strict=True)])
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=0)


@pytest.mark.parametrize("length", [5, 24])
def test_normalise_divides_by_sqrt_length(length):
    x, y = _pairs(5, length)
    raw = dtw_batch(x, y, normalise=False)
    np.testing.assert_allclose(dtw_batch(x, y), raw / np.sqrt(length), rtol=1e-15)


def test_length_one_is_absolute_difference():
    x = np.array([[1.5], [-2.0], [0.0]])
    y = np.array([[4.0], [3.0], [0.0]])
    np.testing.assert_allclose(dtw_batch(x, y), [2.5, 5.0, 0.0], rtol=1e-15)


def test_hand_computed_warping():
    # y is x delayed by one sample: DTW warps the shift away except at the first sample.
    x = np.array([[0.0, 1.0, 2.0, 3.0]])
    y = np.array([[0.0, 0.0, 1.0, 2.0]])
    # Path (0,0),(0,1),(1,2),(2,3),(3,3): costs 0, 0, 0, 0, (3-2)^2 = 1.
    assert dtw_batch(x, y, normalise=False)[0] == pytest.approx(1.0, rel=1e-15)
    # band=0 forces the diagonal: sqrt(0 + 1 + 1 + 1).
    assert dtw_batch(x, y, band=0, normalise=False)[0] == pytest.approx(np.sqrt(3.0), rel=1e-15)


def test_band_zero_is_euclidean():
    x, y = _pairs(50, 24)
    np.testing.assert_allclose(
        dtw_batch(x, y, band=0, normalise=False), np.linalg.norm(x - y, axis=1), rtol=1e-12
    )


def test_identical_series_give_zero_and_constant_series_the_gap():
    x, _ = _pairs(40, 16)
    np.testing.assert_array_equal(dtw_batch(x, x.copy()), np.zeros(40))
    a = np.full((3, 16), 2.0)
    b = np.full((3, 16), -1.0)
    # Constant series: every cell costs 9; the cheapest path is the diagonal, 16 cells.
    np.testing.assert_allclose(dtw_batch(a, b, normalise=False), np.full(3, np.sqrt(16 * 9.0)))


def test_band_never_lowers_the_distance():
    x, y = _pairs(64, 24)
    free = dtw_batch(x, y)
    for band in (0, 1, 2, 5):
        assert np.all(dtw_batch(x, y, band=band) >= free - 1e-12)


def test_batch_of_one_and_of_thousand_agree_pairwise():
    x, y = _pairs(1000, 24, seed=3)
    full = dtw_batch(x, y, band=2)
    assert full.shape == (1000,)
    for k in (0, 31, 32, 999):
        assert dtw_batch(x[k : k + 1], y[k : k + 1], band=2)[0] == full[k]


def test_empty_batch():
    out = dtw_batch(np.empty((0, 16)), np.empty((0, 16)))
    assert out.shape == (0,) and out.dtype == np.float64


def test_non_contiguous_input():
    x, y = _pairs(20, 32)
    expected = dtw_batch(np.ascontiguousarray(x[:, ::2]), np.ascontiguousarray(y[:, ::2]))
    np.testing.assert_array_equal(dtw_batch(x[:, ::2], y[:, ::2]), expected)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("which", ["x", "y"])
def test_non_finite_names_first_bad_pair(bad, which):
    x, y = _pairs(70, 16)
    target = x if which == "x" else y
    target[41, 7] = bad
    target[55, 0] = bad
    with pytest.raises(ValueError, match=rf"{which} has NaN or inf in pair 41"):
        dtw_batch(x, y)


def test_float32_is_a_type_error():
    x, y = _pairs(3, 8)
    with pytest.raises(TypeError, match="float64"):
        dtw_batch(x.astype(np.float32), y)
    with pytest.raises(TypeError):
        dtw_batch(x.tolist(), y)


@pytest.mark.parametrize(
    "xs, ys", [((3, 8), (3, 9)), ((3, 8), (4, 8)), ((8,), (8,)), ((2, 3, 4), (2, 3, 4))]
)
def test_shape_errors(xs, ys):
    with pytest.raises(ValueError):
        dtw_batch(np.zeros(xs), np.zeros(ys))


def test_negative_band_is_rejected():
    x, y = _pairs(2, 8)
    with pytest.raises(ValueError, match="band"):
        dtw_batch(x, y, band=-1)


@pytest.mark.parametrize("length", [16, 24, 96])
@pytest.mark.parametrize("band", [None, 0, 2, 9])
def test_same_definition_as_dtaidistance(length, band):
    dtaidistance = pytest.importorskip("dtaidistance.dtw")
    x, y = _pairs(8, length, seed=7)
    got = dtw_batch(x, y, band=band, normalise=False)
    # dtaidistance allows |i - j| < window: window = band + 1.
    window = None if band is None else band + 1
    expected = [
        dtaidistance.distance(a, b, window=window, use_pruning=False)
        for a, b in zip(x, y, strict=True)
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)
