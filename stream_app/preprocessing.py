"""Differencing, FFT window selection, sliding windows and per-meter normalisation.

Window selection (`dominant_periods`), on the first-order differenced series d:

1. Power spectrum by FFT: P(f) = |FFT(d - mean d)|^2 (zero-padded to 2n, so that its inverse
   FFT is the linear autocorrelation, Wiener-Khinchin).
2. Fundamental period T0: the lag of the highest local peak of the autocorrelation (inverse FFT of
   P) within [min_period, max_period]. The autocorrelation adds up all harmonics of a cycle in
   phase, so it names the cycle (one day = 96 readings on 15-minute data) where the raw
   spectrum of a differenced series is dominated by its higher harmonics (differencing weights
   power by 4 sin^2(pi f)). The lag is refined to the rounded period of the strongest spectral
   peak within 5 % of it. If the autocorrelation peak is below ACF_SIGMAS / sqrt(n) (white noise's
   autocorrelation has standard deviation 1 / sqrt(n)) there is no clear cycle: fallback.
3. Shorter windows: the local peaks of P with periods in [min_period, T0), strongest first, each
   at least PEAK_RATIO x the median power, are snapped to the nearest integer divisor of T0
   (harmonic merging: peaks of one cycle's harmonics collapse onto a window that tiles the cycle
   exactly, ties go to the longer window); duplicates are merged until `max_periods` sizes.

Bounds: min_period defaults to four hours of readings (16 at 15 minutes, 48 at 5 minutes, 4 at
hourly; never below 4): shorter windows hold too little shape to reconstruct. max_period
defaults to one day of readings (windows beyond a day make per-reading scoring costly), and to
n // 4 so that four cycles fit. Fallback (no clear cycle): one window of one day of readings when
`interval_s` is known (bounded by max_period), else min(24, n // 8).
On the steel plant's 2018 series this returns (96, 24, 16), the study's windows.

Sliding windows are end-aligned: the last window ends at the last sample, and `hop` counts back
from there, so the windows of a live meter always include its newest reading. Training uses
hop = window // 8; scoring uses hop 1 (every reading is scored).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream_app.errors import ConfigError, InputError

ACF_SIGMAS = 5.0  # a cycle's autocorrelation must exceed this many white-noise std (1/sqrt(n))
T0_REFINE = 0.05  # relative distance within which a spectral peak refines the fundamental
PEAK_RATIO = 10.0  # a spectral peak must stand this far above the median power
DAY_S = 86_400
MIN_WINDOW_S = 4 * 3600
STD_FLOOR = 1e-3  # relative to the mean absolute difference: a flat meter must not divide by 0


def difference(values: np.ndarray) -> np.ndarray:
    """First-order differences x[t] - x[t-1] (float64, length n - 1)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise InputError(f"expected a 1-D series, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise InputError("the series holds NaN or infinite values")
    return np.diff(x)


def _bounds(n: int, interval_s: int | None, min_period: int | None,
            max_period: int | None) -> tuple[int, int]:
    lo = min_period or (max(4, round(MIN_WINDOW_S / interval_s)) if interval_s else 4)
    hi = max_period or (min(n // 4, DAY_S // interval_s) if interval_s else n // 4)
    return max(lo, 2), min(hi, n // 4)


def _fallback(n: int, interval_s: int | None, lo: int, hi: int) -> tuple[int, ...]:
    size = DAY_S // interval_s if interval_s else min(24, n // 8)
    return (int(np.clip(size, lo, max(lo, hi))),)


def dominant_periods(
    values: np.ndarray,
    *,
    max_periods: int = 3,
    min_period: int | None = None,
    max_period: int | None = None,
    interval_s: int | None = None,
) -> tuple[int, ...]:
    """Window sizes from the FFT of the differenced series (rules in the module docstring)."""
    d = difference(values)
    n = len(d)
    if n < 32:
        raise InputError(f"the series has {n + 1} readings; window selection needs at least 33")
    if max_periods < 1:
        raise ConfigError("max_periods must be >= 1")
    lo, hi = _bounds(n, interval_s, min_period, max_period)
    d = d - d.mean()
    if hi < lo or not np.any(d):
        return _fallback(n, interval_s, lo, hi)
    power = np.abs(np.fft.rfft(d, 2 * n)) ** 2
    acf = np.fft.irfft(power)[: hi + 2]
    acf = acf / acf[0]
    lags = np.arange(lo, hi + 1)
    peaks = lags[(acf[lags] > acf[lags - 1]) & (acf[lags] >= acf[lags + 1])]
    if len(peaks) == 0 or acf[peaks].max() < ACF_SIGMAS / np.sqrt(n):
        return _fallback(n, interval_s, lo, hi)
    t0 = int(peaks[np.argmax(acf[peaks])])
    freqs = np.fft.rfftfreq(2 * n)
    inner = np.arange(1, len(power) - 1)
    local = inner[(power[inner] > power[inner - 1]) & (power[inner] >= power[inner + 1])]
    near = local[np.abs(freqs[local] * t0 - 1) <= T0_REFINE]
    if len(near):  # the autocorrelation's lag is coarse; the spectral peak pins the period
        t0 = int(np.clip(round(1 / freqs[near[np.argmax(power[near])]]), lo, hi))
    sizes = [t0]
    divisors = [k for k in range(t0 - 1, lo - 1, -1) if t0 % k == 0]
    median = np.median(power[1:])
    for i in local[np.argsort(power[local])[::-1]]:
        if len(sizes) >= max_periods or not divisors or power[i] < PEAK_RATIO * median:
            break
        period = 1.0 / freqs[i]
        if not lo <= period < t0:
            continue
        snapped = min(divisors, key=lambda k: (abs(k - period), -k))
        if snapped not in sizes:
            sizes.append(snapped)
    return tuple(sorted(sizes, reverse=True))


def sliding_windows(series: np.ndarray, size: int, hop: int = 1) -> np.ndarray:
    """End-aligned windows (n_windows, size), a contiguous copy; the last ends at the last sample."""
    x = np.asarray(series)
    if x.ndim != 1:
        raise InputError(f"expected a 1-D series, got shape {x.shape}")
    if size < 1 or hop < 1:
        raise ConfigError(f"size and hop must be >= 1, got {size}, {hop}")
    if len(x) < size:
        raise InputError(f"the series has {len(x)} values, fewer than the window size {size}")
    view = np.lib.stride_tricks.sliding_window_view(x, size)
    starts = np.arange(len(x) - size, -1, -hop)[::-1]
    return np.ascontiguousarray(view[starts])


@dataclass(frozen=True)
class Normaliser:
    """z = (d - mean) / std for a meter's differenced readings; stats from training data."""

    mean: float
    std: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.mean) and np.isfinite(self.std) and self.std > 0):
            raise ConfigError(f"invalid normalisation mean={self.mean} std={self.std}")

    @classmethod
    def fit(cls, diffs: np.ndarray) -> Normaliser:
        d = np.asarray(diffs, dtype=np.float64)
        d = d[np.isfinite(d)]
        if len(d) == 0:
            raise InputError("no finite differences to fit a normalisation on")
        floor = max(STD_FLOOR * float(np.mean(np.abs(d))), 1e-9)
        return cls(float(d.mean()), max(float(d.std()), floor))

    def apply(self, diffs: np.ndarray) -> np.ndarray:
        return ((np.asarray(diffs, dtype=np.float64) - self.mean) / self.std).astype(np.float32)

    def invert(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(z, dtype=np.float64) * self.std + self.mean

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, data: dict) -> Normaliser:
        unknown = set(data) - {"mean", "std"}
        if unknown or {"mean", "std"} - set(data):
            raise ConfigError(f"normalisation needs exactly mean and std, got {sorted(data)}")
        return cls(float(data["mean"]), float(data["std"]))
