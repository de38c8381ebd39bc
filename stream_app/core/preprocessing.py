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
3. Shorter windows, from the local maxima of the Hann-windowed power spectrum of d:
   - significant: at least PEAK_RATIO x the median power of the surrounding bins, and at most
     20 dB (DYNAMIC_RANGE) below the strongest peak, which keeps leakage sidelobes out;
   - ranked by power, strongest first; a peak within 5 % in frequency (or 2 bins) of a stronger
     one is the same peak seen again and is merged into it;
   - a peak with period in [min_period, T0) is snapped to the nearest integer divisor of T0
     (ties go to the longer window), so that every window tiles the cycle exactly; a divisor
     already chosen is not repeated. Harmonics of the cycle are therefore KEPT as windows (the
     study keeps 96, 24 and 16 on 15-minute data), until `max_periods` sizes.
   On the steel plant's 2018 series (15 minutes, bounds [16, 96]) the autocorrelation names
   T0 = 96; the strongest spectral peaks in [16, 96) are at 19.2 samples (5th harmonic of the
   day) and 24.0 (4th), snapped to 16 and 24: (96, 24, 16), the study's windows. (Its overall
   strongest peaks, at 10.7, 6.9 and 9.6 samples, lie below the four-hour minimum.)

Bounds: min_period defaults to four hours of readings (16 at 15 minutes, 48 at 5 minutes, 4 at
hourly; never below 4): shorter windows hold too little shape to reconstruct. max_period
defaults to one day of readings (windows beyond a day make per-reading scoring costly), and to
n // 4 so that four cycles fit. Fallback (no clear cycle): one window of one day of readings when
`interval_s` is known (bounded by max_period), else min(24, n // 8).

Sliding windows are end-aligned: the last window ends at the last sample, and `hop` counts back
from there, so the windows of a live meter always include its newest reading. Training uses
hop = window // 8; scoring uses hop 1 (every reading is scored).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream_app.core.errors import ConfigError, InputError

ACF_SIGMAS = 5.0  # a cycle's autocorrelation must exceed this many white-noise std (1/sqrt(n))
MERGE_REL = 0.05  # peaks whose frequencies differ by less than 5 % are one peak
PEAK_RATIO = 20.0  # above the local median: white noise's exponential bins pass with p ~ 1e-6
DYNAMIC_RANGE = 1e-2  # 20 dB: Hann sidelobes (<= -31 dB) never pass, real harmonics do
LOCAL_BINS = 32  # half width of the local-median neighbourhood, at least (else len // 64 bins)
DAY_S = 86_400
MIN_WINDOW_S = 4 * 3600
STD_FLOOR = 1e-3  # relative to the mean absolute value: a flat meter must not divide by 0


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
    if max_period and not min_period:
        lo = min(lo, max_period)  # a cap below the shortest window lowers it too
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
    freqs, power, local = _spectral_peaks(d)
    near = local[np.abs(freqs[local] * t0 - 1) <= MERGE_REL]
    if len(near):  # the autocorrelation's lag is coarse; the spectral peak pins the period
        t0 = int(np.clip(round(1 / freqs[near[np.argmax(power[near])]]), lo, hi))
    return tuple(sorted(_shorter_windows(t0, lo, max_periods, freqs, power, local, n),
                        reverse=True))


def _spectral_peaks(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frequencies, Hann-windowed power and the indices of its significant local maxima.

    The Hann window keeps leakage low: its sidelobes sit 31 dB and more below their peak, so a
    peak more than DYNAMIC_RANGE below the strongest one is discarded as leakage. A peak must
    also stand PEAK_RATIO times above the median power of the bins around it: a differenced
    series' noise power grows towards high frequencies (4 sin^2(pi f)), so a global median would
    let high-frequency noise through.
    """
    n = len(d)
    power = np.abs(np.fft.rfft(d * np.hanning(n), 2 * n)) ** 2
    freqs = np.fft.rfftfreq(2 * n)
    inner = np.arange(1, len(power) - 1)
    local = inner[(power[inner] > power[inner - 1]) & (power[inner] >= power[inner + 1])]
    if len(local) == 0:
        return freqs, power, local
    local = local[power[local] >= DYNAMIC_RANGE * power[local].max()]
    half = max(LOCAL_BINS, len(power) // 64)
    padded = np.pad(power, half, mode="reflect")
    ranges = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)
    return freqs, power, local[power[local] >= PEAK_RATIO * np.median(ranges[local], axis=1)]


def _shorter_windows(t0: int, lo: int, max_periods: int, freqs: np.ndarray, power: np.ndarray,
                     local: np.ndarray, n: int) -> list[int]:
    """T0 plus up to max_periods - 1 divisors of T0 named by the strongest remaining peaks."""
    sizes = [t0]
    divisors = [k for k in range(t0 - 1, lo - 1, -1) if t0 % k == 0]
    stronger = [1.0 / t0]  # frequencies of the peaks seen so far, strongest first
    for i in local[np.argsort(power[local], kind="stable")[::-1]]:
        if len(sizes) >= max_periods or not divisors:
            break
        f = freqs[i]
        # Within 5 % (or the Hann main lobe, 2 bins of the unpadded grid) of a stronger peak:
        # the same peak seen again, merged.
        if any(abs(f - g) <= max(MERGE_REL * g, 2.0 / n) for g in stronger):
            continue
        stronger.append(f)
        if not lo <= 1.0 / f < t0:
            continue
        snapped = min(divisors, key=lambda k: (abs(k - 1.0 / f), -k))
        if snapped not in sizes:
            sizes.append(snapped)
    return sizes


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
    """z = (x - mean) / std for a meter's readings; stats from its training data (or warm-up).

    The autoencoders see normalised readings, not differences: differencing serves window
    selection (it removes level and trend so the FFT finds the cycles), but a stuck meter, a
    dropout to zero, a level shift or a drift are changes of level that differences hide."""

    mean: float
    std: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.mean) and np.isfinite(self.std) and self.std > 0):
            raise ConfigError(f"invalid normalisation mean={self.mean} std={self.std}")

    @classmethod
    def fit(cls, values: np.ndarray) -> Normaliser:
        d = np.asarray(values, dtype=np.float64)
        d = d[np.isfinite(d)]
        if len(d) == 0:
            raise InputError("no finite values to fit a normalisation on")
        floor = max(STD_FLOOR * float(np.mean(np.abs(d))), 1e-9)
        return cls(float(d.mean()), max(float(d.std()), floor))

    def apply(self, values: np.ndarray) -> np.ndarray:
        return ((np.asarray(values, dtype=np.float64) - self.mean) / self.std).astype(np.float32)

    def invert(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(z, dtype=np.float64) * self.std + self.mean

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Normaliser:
        unknown = set(data) - {"mean", "std"}
        if unknown or {"mean", "std"} - set(data):
            raise ConfigError(f"normalisation needs exactly mean and std, got {sorted(data)}")
        return cls(float(data["mean"]), float(data["std"]))
