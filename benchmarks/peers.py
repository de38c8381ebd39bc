"""Simpler peer detectors that the quality benchmark sets beside meterwatch.

Each peer is a small class with the same protocol, so that every one is judged the same way:

- `fit(train_values)` learns from the training readings and sets `threshold_`, the 99.5th
  percentile of the peer's own scores on those readings (`quantile_threshold`); a peer has no
  calibrated decision of its own, so one rule, applied to all, keeps the comparison fair;
- `score(values, start=0)` returns one score per reading of `values[start:]`, higher = more
  anomalous; readings before `start` are history only (the trailing windows and rolling
  statistics of the first scored readings need them).

The peers:

- `HalfSpaceTreesPeer` — river's online Half-Space Trees on the min-max scaled reading (the
  training range maps to [0.25, 0.75], so that values outside it are not all clipped to one
  edge) and the hour of day, both in [0, 1] as the trees expect. It keeps learning while it scores
  (score_one, then learn_one), the streaming peer.
- `IsolationForestPeer` — scikit-learn's Isolation Forest on raw trailing windows (the last
  W readings ending at each reading): the forest of meterwatch without the autoencoders.
- `RollingZPeer` — |d - rolling mean| / rolling std of the differenced series over the
  previous day: the textbook baseline.
- `SeasonalNaivePeer` — |x - the same slot one week earlier|, divided by the robust spread
  (1.4826 MAD) of the training readings' own week-over-week residuals: the forecaster's
  seasonal-naive baseline. It has no history for the first week of the scored array (score 0
  there), and an anomaly echoes one week later (the normal reading then differs from the
  anomalous one), a known weakness of the method.
- `TimeOfWeekZPeer` — a robust time-of-week profile: per slot of the week (7 x per_day slots),
  the median and MAD of the training readings; score |x - median_slot| / (1.4826 MAD_slot +
  floor), the floor a quarter of the pooled spread of all training residuals (a slot seen only a
  few times can have a tiny MAD). The profile is fixed at fit; its threshold is taken on the
  training readings it was fitted on.

The two calendar peers need the reading's position in the week. The quality benchmark gives
them `values` that start at the same reading as `train_values` (the training readings are a
prefix of the scored series, or its clean copy), so slot = (phase + index) % (7 * per_day) is
the same slot of the week in both; `phase` (the slot of the week of the first reading, 0 =
Monday 00:00; `week_phase` computes it from a timestamp) only names the slots after the calendar
and changes no score (the seasonal-naive lag needs no calendar at all).
"""

from __future__ import annotations

import numpy as np
from river.anomaly import HalfSpaceTrees
from sklearn.ensemble import IsolationForest

QUANTILE = 0.995


def quantile_threshold(train_scores: np.ndarray, q: float = QUANTILE) -> float:
    """The q-quantile of the finite training scores: flag a reading when its score exceeds it."""
    s = np.asarray(train_scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if len(s) == 0:
        raise ValueError("no finite training score to take a quantile of")
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {q}")
    return float(np.quantile(s, q))


def _values(values) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or len(v) == 0 or not np.isfinite(v).all():
        raise ValueError("values must be a non-empty 1-D array of finite readings")
    return v


def _trailing(v: np.ndarray, w: int) -> np.ndarray:
    """(n, w) windows ending at each reading; the series is edge-padded at its start."""
    padded = np.concatenate([np.full(w - 1, v[0]), v])
    return np.lib.stride_tricks.sliding_window_view(padded, w)


class HalfSpaceTreesPeer:
    """Online Half-Space Trees on (scaled reading, hour of day)."""

    name = "HalfSpaceTrees"

    def __init__(self, per_day: int, n_trees: int = 25, height: int = 8,
                 window_size: int = 250, seed: int = 0):
        self.per_day = per_day
        self._hst = HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window_size,
                                   seed=seed)
        self._lo, self._span = 0.0, 1.0
        self._seen = 0  # readings learnt so far: the clock of the hour-of-day feature

    def _run(self, v: np.ndarray, first: int) -> np.ndarray:
        out = np.empty(len(v))
        # The training range maps to [0.25, 0.75]: readings up to one span beyond it stay apart.
        x = np.clip(0.25 + 0.5 * (v - self._lo) / self._span, 0.0, 1.0)
        for i, value in enumerate(x.tolist()):
            row = {"v": value, "h": ((first + i) % self.per_day) / self.per_day}
            out[i] = self._hst.score_one(row)
            self._hst.learn_one(row)
        return out

    def fit(self, train_values) -> HalfSpaceTreesPeer:
        v = _values(train_values)
        self._lo, self._span = float(v.min()), max(float(np.ptp(v)), 1e-9)
        scores = self._run(v, 0)
        self._seen = len(v)
        # The first window's scores come from empty reference masses: not a fair sample.
        tail = scores[self._hst.window_size:] if len(v) > 2 * self._hst.window_size else scores
        self.threshold_ = quantile_threshold(tail)
        return self

    def score(self, values, start: int = 0) -> np.ndarray:
        """Scores of values[start:], learning online; `start` sets the hour-of-day clock."""
        v = _values(values)[start:]
        return self._run(v, start)


class IsolationForestPeer:
    """Isolation Forest on the raw trailing window of W readings."""

    name = "IsolationForest"

    def __init__(self, window: int, n_estimators: int = 100, seed: int = 0):
        self.window = window
        self._forest = IsolationForest(n_estimators=n_estimators, random_state=seed)

    def fit(self, train_values) -> IsolationForestPeer:
        v = _values(train_values)
        # Whole windows only: edge-padded ones are artefacts and would raise the threshold.
        rows = np.lib.stride_tricks.sliding_window_view(v, self.window)
        self._forest.fit(rows)
        self.threshold_ = quantile_threshold(-self._forest.score_samples(rows))
        return self

    def score(self, values, start: int = 0) -> np.ndarray:
        v = _values(values)
        return -self._forest.score_samples(_trailing(v, self.window)[start:])


class RollingZPeer:
    """|d - mean| / std of the differenced series, statistics over the previous `window`."""

    name = "rolling z"

    def __init__(self, window: int):
        self.window = window
        self._mean, self._std = 0.0, 1.0

    def _z(self, v: np.ndarray) -> np.ndarray:
        d = np.diff(v, prepend=v[0])
        w = self.window
        c1 = np.concatenate([[0.0], np.cumsum(d)])
        c2 = np.concatenate([[0.0], np.cumsum(d * d)])
        idx = np.arange(len(d))
        lo = np.maximum(idx - w, 0)
        count = idx - lo  # readings strictly before this one, at most w
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (c1[idx] - c1[lo]) / count
            var = (c2[idx] - c2[lo]) / count - mean ** 2
        short = count < w  # too little history: fall back to the training statistics
        mean = np.where(short, self._mean, mean)
        std = np.where(short, self._std, np.sqrt(np.maximum(var, 0.0)))
        std = np.maximum(std, 0.1 * self._std)  # a flat stretch must not make noise huge
        return np.abs(d - mean) / std

    def fit(self, train_values) -> RollingZPeer:
        v = _values(train_values)
        d = np.diff(v)
        self._mean, self._std = float(d.mean()), max(float(d.std()), 1e-9)
        self.threshold_ = quantile_threshold(self._z(v))
        return self

    def score(self, values, start: int = 0) -> np.ndarray:
        return self._z(_values(values))[start:]


def week_phase(first_ts: int, interval_s: int) -> int:
    """The slot of the week (0 = Monday 00:00 UTC) of a reading at epoch second `first_ts`."""
    week_s = 7 * 86400
    return int(((int(first_ts) + 3 * 86400) % week_s) // interval_s)  # 1970-01-01: a Thursday


def _mad_spread(x: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


class SeasonalNaivePeer:
    """|x - x one week earlier| over the robust spread of the training residuals."""

    name = "seasonal naive"

    def __init__(self, per_day: int):
        self.per_day = per_day
        self.lag = 7 * per_day
        self._spread: float | None = None

    def _residual(self, v: np.ndarray) -> np.ndarray:
        r = np.zeros(len(v))  # no reading one week earlier: no evidence
        r[self.lag:] = np.abs(v[self.lag:] - v[:-self.lag]) if len(v) > self.lag else 0.0
        return r

    def fit(self, train_values) -> SeasonalNaivePeer:
        v = _values(train_values)
        if len(v) <= self.lag:
            raise ValueError(f"seasonal naive needs more than one week ({self.lag} readings) "
                             f"of training readings, got {len(v)}")
        r = v[self.lag:] - v[:-self.lag]
        # A flat week-over-week meter must not turn rounding noise into huge scores.
        self._spread = max(_mad_spread(r), 0.01 * float(np.median(np.abs(v))), 1e-9)
        self.threshold_ = quantile_threshold(self._residual(v)[self.lag:] / self._spread)
        return self

    def score(self, values, start: int = 0) -> np.ndarray:
        if self._spread is None:
            raise RuntimeError("call fit() before score()")
        v = _values(values)
        return (self._residual(v) / self._spread)[start:]


class TimeOfWeekZPeer:
    """|x - median of its slot of the week| / (1.4826 MAD of the slot + floor)."""

    name = "time-of-week z"

    def __init__(self, per_day: int, phase: int = 0):
        self.per_day = per_day
        self.per_week = 7 * per_day
        self.phase = phase
        self._median: np.ndarray | None = None
        self._scale: np.ndarray | None = None

    def _slots(self, n: int) -> np.ndarray:
        return (self.phase + np.arange(n)) % self.per_week

    def fit(self, train_values) -> TimeOfWeekZPeer:
        v = _values(train_values)
        slot = self._slots(len(v))
        if len(v) < self.per_week:
            raise ValueError(f"time-of-week z needs at least one week ({self.per_week} "
                             f"readings) of training readings, got {len(v)}")
        order = np.argsort(slot, kind="stable")
        groups = np.split(v[order], np.cumsum(np.bincount(slot, minlength=self.per_week))[:-1])
        median = np.array([np.median(g) for g in groups])
        mad = np.array([np.median(np.abs(g - m)) for g, m in zip(groups, median)])
        pooled = _mad_spread(v - median[slot])
        floor = max(0.25 * pooled, 0.01 * float(np.median(np.abs(v))), 1e-9)
        self._median, self._scale = median, 1.4826 * mad + floor
        self.threshold_ = quantile_threshold(self._z(v))
        return self

    def _z(self, v: np.ndarray) -> np.ndarray:
        slot = self._slots(len(v))
        return np.abs(v - self._median[slot]) / self._scale[slot]

    def score(self, values, start: int = 0) -> np.ndarray:
        if self._median is None:
            raise RuntimeError("call fit() before score()")
        return self._z(_values(values))[start:]


def make_peers(per_day: int, seed: int = 0, phase: int = 0) -> list:
    """The five peers for a series with `per_day` readings a day (window W = one day);
    `phase` is the slot of the week of the first reading (see `week_phase`), names only."""
    return [HalfSpaceTreesPeer(per_day, seed=seed), IsolationForestPeer(per_day, seed=seed),
            RollingZPeer(per_day), SeasonalNaivePeer(per_day),
            TimeOfWeekZPeer(per_day, phase)]
