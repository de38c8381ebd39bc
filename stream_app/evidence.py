"""Evidence beside the reconstruction: the meter's time-of-week profile and data-fault rules.

The autoencoders see the shape of a window, never the calendar and never what a meter's
readings physically mean. Three things a reconstruction cannot see are decided here, per
meter, from statistics learned on its normal training readings (`MeterProfile.fit`):

- the time-of-week profile: per hour of the week (168 slots, UTC hours: a factory's week
  repeats in its own clock, a fixed offset from UTC; across a DST change the profile is one
  hour off for the readings of that change), the median reading and its 5-95 % band. Slots a
  short history has not seen twice fall back to the same hour of day pooled over the week. Its
  branch of its own compares the energy of the last three hours with what the profile expects
  for them: ratio = log((actual + c) / (expected + c)) summed over the span, c = 10 % of the
  meter's median reading so that quiet hours do not make ratios of noise; the score is the
  ratio's robust z against the meter's own normal ratios (median and 1.4826 MAD on its
  training readings). A weekday that looks like a Sunday, a night shift that does not stop or
  a weekend run like a Monday has windows of a normal shape (the autoencoders reconstruct them
  well) at the wrong time, and a ratio far from 0;
- data faults, each its own alert kind: `stuck` (a run of identical non-zero readings longer
  than the meter's longest in normal training data, and at least MIN_STUCK_READINGS),
  `dropout` (a reading at or near zero in an hour of the week where the meter reads above zero
  at least 95 % of the time) and `out_of_range` (a reading further above the meter's median
  than OUT_OF_RANGE_FACTOR times the largest normal excursion).

Everything here is vectorised over a batch of rows (one row = the trailing readings of one
meter, kWh, ending at the reading scored) and pure numpy. Higher branch score = more unusual.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

SLOTS = 168  # hours of the week
WEEK_S = 7 * 86_400
MONDAY_OFFSET_S = 4 * 86_400  # 1970-01-01 was a Thursday: slot 0 is Monday 00:00 UTC
MIN_SLOT_READINGS = 2  # fewer normal readings in an hour of the week: use the hour of day
MIN_STUCK_READINGS = 4  # a run of 3 equal readings is common on coarse meters
OUT_OF_RANGE_FACTOR = 2.0  # twice as far above the median as any normal reading
ZERO_SHARE = 0.02  # "near zero": at most 2 % of the meter's median reading
SPREAD_FLOOR = 0.05  # of the meter's median reading (or of its mean absolute value)
RATIO_OFFSET = 0.1  # c of the ratio, in units of the meter's median reading
MIN_RATIO_SCALE = 0.02  # a 2 % energy difference is never many spreads away
RATIO_FALSE_RUNS_PER_WEEK = 0.25  # the meter's own limit: ~1 flagged run a month in training
PROFILE_SPAN_S = 3 * 3600  # the profile residual is averaged over the last three hours
FAULT_KINDS = ("stuck", "dropout", "out_of_range")


def hour_of_week(ts_s: np.ndarray) -> np.ndarray:
    return (((np.asarray(ts_s, dtype=np.int64) - MONDAY_OFFSET_S) % WEEK_S) // 3600).astype(
        np.int64)


def profile_span(interval_s: int) -> int:
    return max(1, round(PROFILE_SPAN_S / interval_s))


def _longest_flat_run(values: np.ndarray) -> int:
    """Longest run of identical consecutive non-zero readings."""
    best = run = 1
    for k in range(1, len(values)):
        if values[k] == values[k - 1] and values[k] != 0:
            run += 1
            best = max(best, run)
        else:
            run = 1
    return best if len(values) else 0


@dataclass(frozen=True)
class MeterProfile:
    """One meter's normal, learned from its training readings (kWh per reading)."""

    median: np.ndarray  # (168,) per hour of the week
    lower: np.ndarray  # (168,) 5th percentile
    upper: np.ndarray  # (168,) 95th percentile
    spread: np.ndarray  # (168,) robust std (1.4826 MAD), floored
    level: float  # median reading
    max_value: float  # largest normal reading
    max_run: int  # longest run of identical non-zero readings
    ratio_center: float = 0.0  # the meter's normal log energy ratio (actual / profile)
    ratio_scale: float = 1.0  # and its robust spread
    ratio_limit: float = 0.0  # the meter's own limit for the branch (a meter of irregular
    # weeks needs a wider one); the bundle's limit applies where it is higher

    @classmethod
    def fit(cls, values: np.ndarray, ts_s: np.ndarray, good: np.ndarray | None = None
            ) -> MeterProfile:
        x = np.asarray(values, dtype=np.float64)
        keep = np.ones(len(x), bool) if good is None else np.asarray(good, bool)
        slot = hour_of_week(ts_s)
        max_run = _longest_flat_run(x[keep]) if keep.any() else 0
        x, slot = x[keep], slot[keep]
        level = float(np.median(x))
        floor = SPREAD_FLOOR * max(abs(level), float(np.mean(np.abs(x))), 1e-9)
        stats = np.empty((4, SLOTS))
        hour = slot % 24
        for s in range(SLOTS):
            pick = x[slot == s]
            if len(pick) < MIN_SLOT_READINGS:
                pick = x[hour == s % 24]
            if len(pick) == 0:
                pick = x
            med = np.median(pick)
            stats[:, s] = (med, np.quantile(pick, 0.05), np.quantile(pick, 0.95),
                           1.4826 * np.median(np.abs(pick - med)))
        profile = cls(stats[0], stats[1], stats[2], np.maximum(stats[3], floor), level,
                      float(x.max()), int(max_run))
        ts = np.asarray(ts_s, dtype=np.int64)
        span = profile_span(int(np.median(np.diff(ts)))) if len(ts) > 1 else 1
        ratio = profile.log_ratio(np.asarray(values, np.float64), ts, span)
        normal = np.convolve(keep, np.ones(span), "valid") >= span
        ratio = ratio[normal] if normal.any() else ratio
        if len(ratio) == 0:
            return profile
        center = float(np.median(ratio))
        scale = 1.4826 * float(np.median(np.abs(ratio - center)))
        scale = max(scale, MIN_RATIO_SCALE)
        per_week = WEEK_S / max(int(np.median(np.diff(ts))), 1)
        z = np.abs(ratio - center) / scale
        q = max(0.5, 1 - RATIO_FALSE_RUNS_PER_WEEK * span / per_week)
        return replace(profile, ratio_center=center, ratio_scale=scale,
                       ratio_limit=float(np.quantile(z, q)))

    def log_ratio(self, values: np.ndarray, ts_s: np.ndarray, span: int) -> np.ndarray:
        """log((actual + c) / (expected + c)) of every run of `span` consecutive readings."""
        c = span * max(RATIO_OFFSET * self.level, 1e-9)
        expected = self.median[hour_of_week(ts_s)]
        ones = np.ones(span)
        return np.log((np.convolve(values, ones, "valid") + c)
                      / (np.convolve(expected, ones, "valid") + c))

    def to_dict(self) -> dict:
        r = lambda a: [round(float(v), 6) for v in a]
        return {"median": r(self.median), "lower": r(self.lower), "upper": r(self.upper),
                "spread": r(self.spread), "level": self.level, "max_value": self.max_value,
                "max_run": self.max_run, "ratio_center": self.ratio_center,
                "ratio_scale": self.ratio_scale, "ratio_limit": self.ratio_limit}

    @classmethod
    def from_dict(cls, d: dict) -> MeterProfile:
        arrays = [np.asarray(d[k], dtype=np.float64) for k in ("median", "lower", "upper",
                                                                 "spread")]
        if any(a.shape != (SLOTS,) or not np.isfinite(a).all() for a in arrays):
            raise ValueError(f"a meter profile needs {SLOTS} finite values per statistic")
        return cls(*arrays, float(d["level"]), float(d["max_value"]), int(d["max_run"]),
                   float(d["ratio_center"]), float(d["ratio_scale"]), float(d["ratio_limit"]))

    def band(self, ts_s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(median, lower, upper) at each timestamp's hour of the week."""
        slot = hour_of_week(ts_s)
        return self.median[slot], self.lower[slot], self.upper[slot]

    def residual(self, values: np.ndarray, ts_s: np.ndarray) -> np.ndarray:
        slot = hour_of_week(ts_s)
        return (np.asarray(values, np.float64) - self.median[slot]) / self.spread[slot]


@dataclass(frozen=True)
class Evidence:
    """Per row: the profile branch's score and each fault rule's verdict."""

    profile_score: np.ndarray  # (n,) robust |z| of the span's energy ratio, NaN: no profile
    expected: np.ndarray  # (n,) the profile's median at the scored reading (NaN: none)
    lower: np.ndarray
    upper: np.ndarray
    fault: list[str]  # (n,) "" or the first fault kind that holds
    fault_reason: list[str]


def assess(values: np.ndarray, end_ts_s: np.ndarray, interval_s: np.ndarray | int,
           profiles: list[MeterProfile | None]) -> Evidence:
    """Evidence of rows of raw readings (n, length) kWh, each ending at `end_ts_s` (epoch s),
    `interval_s` apart (one interval for all rows, or one per row)."""
    values = np.asarray(values, dtype=np.float64)
    n, length = values.shape
    intervals = np.broadcast_to(np.asarray(interval_s, dtype=np.int64), (n,))
    score = np.full(n, np.nan)
    expected, lower, upper = (np.full(n, np.nan) for _ in range(3))
    fault, why = [""] * n, [""] * n
    flat = _trailing_flat_run(values)
    for k, profile in enumerate(profiles):
        if profile is None:
            continue
        span = min(profile_span(int(intervals[k])), length)
        ts = int(end_ts_s[k]) - np.arange(span - 1, -1, -1, dtype=np.int64) * int(intervals[k])
        last = values[k, -1]
        slot = int(hour_of_week(ts[-1:])[0])
        ratio = float(profile.log_ratio(values[k, -span:], ts, span)[0])
        score[k] = abs(ratio - profile.ratio_center) / profile.ratio_scale
        expected[k], lower[k], upper[k] = (profile.median[slot], profile.lower[slot],
                                           profile.upper[slot])
        near_zero = ZERO_SHARE * max(profile.level, 0.0)
        reach = max(profile.max_value - profile.level, 0.0)
        if last != 0 and flat[k] > max(profile.max_run, MIN_STUCK_READINGS):
            fault[k] = "stuck"
            why[k] = (f"stuck: {flat[k]} identical readings of {last:g} (longest in normal "
                      f"data: {profile.max_run})")
        elif last <= near_zero and profile.lower[slot] > near_zero:
            fault[k] = "dropout"
            why[k] = (f"dropout: {last:g} kWh where this hour of the week reads at least "
                      f"{profile.lower[slot]:.3g} kWh 95 % of the time")
        elif reach > 0 and last > profile.level + OUT_OF_RANGE_FACTOR * reach:
            fault[k] = "out_of_range"
            why[k] = (f"out_of_range: {last:g} kWh, the largest normal reading is "
                      f"{profile.max_value:.3g} kWh")
    return Evidence(score, expected, lower, upper, fault, why)


def _trailing_flat_run(values: np.ndarray) -> np.ndarray:
    """Per row: how many readings at the end are identical to the last one."""
    same = values[:, :-1] == values[:, -1:]  # each earlier reading equal to the last
    rev = same[:, ::-1]  # nearest first: the run is the count of leading Trues
    run = np.where(rev.all(axis=1), same.shape[1], np.argmin(rev, axis=1))
    return run + 1
