"""DTW reconstruction error between windows and their autoencoder reconstructions, batched.

Definition (the one `dtaidistance.dtw.distance(s1, s2, use_pruning=False)` computes):

    cost(i, j) = (x[i] - y[j]) ** 2
    D(i, j)    = cost(i, j) + min(D(i-1, j), D(i, j-1), D(i-1, j-1)),  D(-1, -1) = 0,
                 D(i, -1) = D(-1, j) = inf otherwise
    dtw(x, y)  = sqrt(D(n-1, n-1))

Each step has weight 1 (symmetric step pattern without diagonal doubling). With a Sakoe-Chiba
`band` the cells with |i - j| > band are forbidden; `band=0` is therefore the Euclidean distance.
dtaidistance's `window` counts differently: it allows |i - j| < window, so `band=b` here is
`window=b + 1` there (and `window=None`/`0` there is `band=None` here).

With `normalise=True` the distance is divided by sqrt(length). A window of 96 samples collects
about four times the squared error of a window of 24, so the raw distance grows like sqrt(length);
the normalised value is RMS-like and comparable across the window sizes used side by side.

Why the kernel looks the way it does: one scoring step evaluates thousands of short pairs
(16..96 samples). Calling a DTW routine per pair is dominated by call overhead, and a single
pair's recurrence is a serial dependency chain along each row. So the batch is transposed to a
(length, n_pairs) layout and blocks of `_BLOCK` pairs advance through the recurrence side by side:
the innermost loop runs over pairs, which are independent, and compiles to SIMD lanes. A rolling
two-row buffer of shape (length + 1, _BLOCK) holds the cumulative costs. Blocks are distributed
over threads with `prange`, each writing its own slice of the output.
"""

from __future__ import annotations

import math
from typing import Literal, TypedDict

import numpy as np
from numba import njit, prange

__all__ = ["dtw_batch"]

# Pairs advanced together in the innermost loop. 32 float64 lanes = 4 AVX-512 or 8 AVX2 vectors;
# the two row buffers of a 96-sample window then take 2 * 97 * 32 * 8 B = 50 KB, about L1/L2 size.
_BLOCK = 32


class _JitOptions(TypedDict):
    """The keyword arguments of `njit` set below, typed so that `njit(**_JIT)` type-checks."""

    nogil: bool
    cache: bool
    error_model: Literal["python", "numpy"]


# All Numba options in one place. cache=True: later processes load the compiled kernel from
# __pycache__ instead of recompiling (about a second saved at start-up). No fastmath: the
# recurrence relies on inf for forbidden cells, which fastmath's "no infinities" would break, and
# the remaining flags gave no measurable speed-up on this loop.
_JIT: _JitOptions = {"nogil": True, "cache": True, "error_model": "numpy"}


def dtw_batch(
    x: np.ndarray, y: np.ndarray, *, band: int | None = None, normalise: bool = True
) -> np.ndarray:
    """DTW distance between row k of `x` and row k of `y`, for every k (definition above).

    x, y: float64 arrays of the same shape (n_pairs, length). Returns float64 (n_pairs,).
    Raises TypeError for another dtype, ValueError for a bad shape, a negative band or a
    non-finite value (naming the first bad pair).
    """
    for name, arr in (("x", x), ("y", y)):
        if not isinstance(arr, np.ndarray) or arr.dtype != np.float64:
            dtype = getattr(arr, "dtype", type(arr).__name__)
            raise TypeError(f"{name} must be a float64 numpy array, got {dtype}")
        if arr.ndim != 2:
            raise ValueError(f"{name} must have shape (n_pairs, length), got {arr.shape}")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}")
    n_pairs, length = x.shape
    if length == 0 and n_pairs > 0:
        raise ValueError("windows must have at least one sample")
    if band is not None:
        if isinstance(band, bool) or not isinstance(band, int | np.integer):
            raise ValueError(f"band must be a non-negative int or None, got {band!r}")
        if band < 0:
            raise ValueError(f"band must be >= 0, got {band}")
    if n_pairs == 0:
        return np.empty(0, dtype=np.float64)

    width = length if band is None else min(int(band), length)
    out = np.empty(n_pairs, dtype=np.float64)
    finite = np.empty(n_pairs, dtype=np.bool_)
    _dtw_pairs(np.ascontiguousarray(x), np.ascontiguousarray(y), width, out, finite)
    if not finite.all():
        # Error path only: find which array holds the first bad value.
        for name, arr in (("x", x), ("y", y)):
            bad = ~np.isfinite(arr).all(axis=1)
            if bad.any():
                raise ValueError(f"{name} has NaN or inf in pair {int(np.argmax(bad))}")
    if normalise:
        out /= np.sqrt(length)
    return out


@njit(parallel=True, **_JIT)
def _dtw_pairs(x: np.ndarray, y: np.ndarray, band: int, out: np.ndarray,
               finite: np.ndarray) -> None:  # pragma: no cover - compiled
    """Kernel: x, y (n_pairs, length) C-contiguous; writes out and finite (all inputs finite)."""
    n_pairs, length = x.shape
    for b in prange(-(-n_pairs // _BLOCK)):
        start = b * _BLOCK
        stop = min(start + _BLOCK, n_pairs)
        # Block-local transposed copy, zero-padded to whole lanes; it stays in cache.
        xb = np.zeros((length, _BLOCK))
        yb = np.zeros((length, _BLOCK))
        for k in range(stop - start):
            # The finiteness check rides on the copy: no separate pass over the inputs.
            ok = True
            for i in range(length):
                xv = x[start + k, i]
                yv = y[start + k, i]
                xb[i, k] = xv
                yb[i, k] = yv
                ok &= math.isfinite(xv) & math.isfinite(yv)
            finite[start + k] = ok
        dist = _dtw_block(xb, yb, band)
        for k in range(stop - start):
            out[start + k] = dist[k]


@njit(**_JIT)
def _dtw_block(xb: np.ndarray, yb: np.ndarray, band: int) -> np.ndarray:  # pragma: no cover - compiled
    """_BLOCK pairs side by side; xb, yb (length, _BLOCK). Returns their DTW distances.

    Buffer row c holds D(., c - 1) for every lane; row 0 is the virtual column D(., -1).
    """
    length = xb.shape[0]
    inf = np.inf
    prev = np.full((length + 1, _BLOCK), inf)
    cur = np.full((length + 1, _BLOCK), inf)
    prev[0, :] = 0.0  # D(-1, -1) = 0: the path starts at (0, 0)
    for i in range(length):
        j_lo = max(0, i - band)
        j_hi = min(length, i + band + 1)
        # Column j_lo - 1 of this row is outside the band (or D(i, -1)); it may hold a stale
        # value from two rows ago.
        cur[j_lo, :] = inf
        xi = xb[i]
        for j in range(j_lo, j_hi):
            yj = yb[j]
            up = prev[j + 1]
            diag = prev[j]
            left = cur[j]
            new = cur[j + 1]
            for k in range(_BLOCK):
                d = xi[k] - yj[k]
                new[k] = d * d + min(diag[k], up[k], left[k])
        if j_hi < length:
            # Column j_hi is outside this row's band; the next row reads it as D(i, j_hi).
            cur[j_hi + 1, :] = inf
        prev, cur = cur, prev
    return np.sqrt(prev[length])
