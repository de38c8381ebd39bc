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

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

SLOTS = 168  # hours of the week
WEEK_S = 7 * 86_400
MONDAY_OFFSET_S = 4 * 86_400  # 1970-01-01 was a Thursday: slot 0 is Monday 00:00 UTC
MIN_SLOT_READINGS = 2  # fewer normal readings in an hour of the week: use the hour of day
MIN_STUCK_READINGS = 4  # a run of 3 equal readings is common on coarse meters
OUT_OF_RANGE_FACTOR = 2.0  # twice as far above the median as any normal reading
ZERO_SHARE = 0.02  # "near zero": at most 2 % of the meter's median reading
RATIO_OFFSET = 0.1  # c of the ratio, in units of the meter's median reading
MIN_RATIO_SCALE = 0.02  # a 2 % energy difference is never many spreads away
FALSE_RUNS_PER_WEEK = 0.25  # the branch's limits: about one flagged run a month on normal data
PROFILE_SPAN_S = 3 * 3600  # the profile branch compares the energy of the last three hours
FAULT_KINDS = ("stuck", "dropout", "out_of_range")
JUMP_BASE = 4  # a reading's jump is taken against the median of the four readings before it
JUMP_FLOOR = 0.02  # a jump's spread is at least 2 % (in log units)


def hour_of_week(ts_s: np.ndarray) -> np.ndarray:
    return (((np.asarray(ts_s, dtype=np.int64) - MONDAY_OFFSET_S) % WEEK_S) // 3600).astype(
        np.int64)


def profile_span(interval_s: int) -> int:
    return max(1, round(PROFILE_SPAN_S / interval_s))


def budget_quantile(interval_s: int) -> float:
    """The quantile of normal branch scores that leaves about FALSE_RUNS_PER_WEEK runs of
    flags (each about a span long) a week."""
    return max(0.5, 1 - FALSE_RUNS_PER_WEEK * profile_span(interval_s) * interval_s / WEEK_S)


def longest_flat_run(values: np.ndarray) -> int:
    """Longest run of identical consecutive non-zero readings (0 for no readings)."""
    if len(values) == 0:
        return 0
    same = (values[1:] == values[:-1]) & (values[1:] != 0)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], same.astype(np.int8), [0]))))
    return int((edges[1::2] - edges[::2]).max(initial=0)) + 1


@dataclass(frozen=True)
class MeterProfile:
    """One meter's normal, learned from its training readings (kWh per reading)."""

    median: np.ndarray  # (168,) per hour of the week
    lower: np.ndarray  # (168,) 5th percentile
    upper: np.ndarray  # (168,) 95th percentile
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
        ts = np.asarray(ts_s, dtype=np.int64)
        keep = np.ones(len(x), bool) if good is None else np.asarray(good, bool)
        slot = hour_of_week(ts)[keep]
        normal = x[keep]
        stats = np.empty((3, SLOTS))
        hour = slot % 24
        for s in range(SLOTS):
            pick = normal[slot == s]
            if len(pick) < MIN_SLOT_READINGS:
                pick = normal[hour == s % 24]
            if len(pick) == 0:
                pick = normal
            stats[:, s] = np.quantile(pick, (0.5, 0.05, 0.95))
        profile = cls(stats[0], stats[1], stats[2], float(np.median(normal)),
                      float(normal.max()), longest_flat_run(normal))
        interval = max(int(np.median(np.diff(ts))), 1) if len(ts) > 1 else WEEK_S
        span = profile_span(interval)
        ratio = profile.log_ratio(x, ts, span)
        whole = np.convolve(keep, np.ones(span), "valid") >= span  # no anomalous reading in it
        ratio = ratio[whole] if whole.any() else ratio
        if len(ratio) == 0:
            return profile
        center = float(np.median(ratio))
        scale = max(1.4826 * float(np.median(np.abs(ratio - center))), MIN_RATIO_SCALE)
        q = budget_quantile(interval)
        return replace(profile, ratio_center=center, ratio_scale=scale,
                       ratio_limit=float(np.quantile(np.abs(ratio - center) / scale, q)))

    def log_ratio(self, values: np.ndarray, ts_s: np.ndarray, span: int) -> np.ndarray:
        """The energy ratio of every run of `span` consecutive readings (see log_ratio)."""
        ones = np.ones(span)
        return log_ratio(np.convolve(values, ones, "valid"),
                          np.convolve(self.median[hour_of_week(ts_s)], ones, "valid"),
                          self.level, span)

    def ratio_z(self, values: np.ndarray, ts_s: np.ndarray, span: int) -> np.ndarray:
        """The branch's score of every run of `span` readings: robust |z| of its ratio."""
        return np.abs(self.log_ratio(values, ts_s, span) - self.ratio_center) / self.ratio_scale

    def to_dict(self) -> dict[str, Any]:
        def r(a: np.ndarray) -> list[float]:
            return [round(float(v), 6) for v in a]

        return {"median": r(self.median), "lower": r(self.lower), "upper": r(self.upper),
                "level": self.level, "max_value": self.max_value, "max_run": self.max_run,
                "ratio_center": self.ratio_center, "ratio_scale": self.ratio_scale,
                "ratio_limit": self.ratio_limit}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MeterProfile:
        median, lower, upper = (np.asarray(d[k], dtype=np.float64)
                                for k in ("median", "lower", "upper"))
        if any(a.shape != (SLOTS,) or not np.isfinite(a).all() for a in (median, lower, upper)):
            raise ValueError(f"a meter profile needs {SLOTS} finite values per statistic")
        return cls(median, lower, upper, float(d["level"]), float(d["max_value"]),
                   int(d["max_run"]), float(d["ratio_center"]), float(d["ratio_scale"]),
                   float(d["ratio_limit"]))

    def band(self, ts_s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(median, lower, upper) at each timestamp's hour of the week."""
        slot = hour_of_week(ts_s)
        return self.median[slot], self.lower[slot], self.upper[slot]


def log_ratio(actual_sum: np.ndarray, expected_sum: np.ndarray, level: np.ndarray | float,
              span: int) -> np.ndarray:
    """log((actual + c) / (expected + c)) of a span's energy, c = RATIO_OFFSET x the meter's
    median reading per reading: quiet hours do not make ratios of noise."""
    c = span * np.maximum(RATIO_OFFSET * np.asarray(level, dtype=np.float64), 1e-9)
    return np.asarray(np.log((actual_sum + c) / (expected_sum + c)), dtype=np.float64)


class ProfileTable:
    """A bundle's meter profiles as stacked arrays, so that a batch is assessed at once.

    `known`, per profile, marks the hours of the week whose expectation rests on readings of
    that hour or of the same kind of day (stream_app.core.calibration); the profile branch and
    the dropout rule do not judge an hour that is not known. Without it every hour is."""

    def __init__(self, profiles: dict[str, MeterProfile],
                 known: dict[str, np.ndarray] | None = None):
        self.profiles = dict(profiles)
        self.index = {meter: k for k, meter in enumerate(self.profiles)}
        rows = list(self.profiles.values())

        def stack(name: str, width: int = 1) -> np.ndarray:
            out = np.asarray([getattr(p, name) for p in rows], dtype=np.float64)
            return out.reshape(len(rows), width) if width > 1 else out.reshape(len(rows))

        self.median, self.lower = stack("median", SLOTS), stack("lower", SLOTS)
        known = known or {}
        self.known = np.asarray([known.get(k, np.ones(SLOTS, bool)) for k in self.profiles],
                                dtype=bool).reshape(len(rows), SLOTS)
        self.level, self.max_value, self.max_run = (stack(n) for n in
                                                    ("level", "max_value", "max_run"))
        self.ratio_center, self.ratio_scale, self.ratio_limit = (
            stack(n) for n in ("ratio_center", "ratio_scale", "ratio_limit"))

    def get(self, meter_id: str) -> MeterProfile | None:
        return self.profiles.get(meter_id)

    def rows_of(self, meter_ids: Iterable[str]) -> np.ndarray:
        """Each meter's row in the table, -1 for a meter without a profile."""
        return np.fromiter((self.index.get(m, -1) for m in meter_ids), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.profiles)


@dataclass(frozen=True)
class Evidence:
    """Per row: the profile branch's score and decision, and the fault rules' verdict."""

    profile_score: np.ndarray  # (n,) robust |z| of the span's energy ratio, NaN: no profile
    # or an hour of the span not known yet
    profile_limit: np.ndarray  # (n,) the limit it was held to (inf: no profile)
    profile_flag: np.ndarray  # (n,) bool
    expected: np.ndarray  # (n,) the profile's median at the scored reading (NaN: none)
    lower: np.ndarray
    fault: list[str]  # (n,) "" or the first fault kind that holds
    fault_reason: list[str]
    fault_score: np.ndarray  # (n,) the fault's measure, above fault_limit where it holds:
    fault_limit: np.ndarray  # stuck: run vs allowed run; dropout: the hour's usual floor vs
    # the near-zero bound (kWh); out_of_range: excursion vs OUT_OF_RANGE_FACTOR normal ones
    ratio: np.ndarray  # (n,) the span's log energy ratio (NaN: not judged)
    # the jump branch, judged by the decision with each meter's calibration (Detector); NaN /
    # inf where it was not (`assess` alone, a meter without calibration)
    jump_score: np.ndarray  # (n,) the newest reading's jump (`jumps`), NaN: none
    jump_limit: np.ndarray  # the meter's own limit (inf: not learned yet)
    jump_base: np.ndarray  # the reading the ones before predict (kWh)
    jump_size: np.ndarray  # the jump's size (log units, `jump_size`)

    @classmethod
    def empty(cls, n: int) -> Evidence:
        nan = np.full(n, np.nan)
        return cls(nan.copy(), np.full(n, np.inf), np.zeros(n, bool), nan.copy(), nan.copy(),
                   [""] * n, [""] * n, np.zeros(n), np.ones(n), nan.copy(), nan.copy(),
                   np.full(n, np.inf), nan.copy(), nan.copy())

    def put(self, rows: np.ndarray, part: Evidence) -> None:
        """Copy `part`'s rows into rows `rows` of this one (the decision's waves)."""
        for name in ("profile_score", "profile_limit", "profile_flag", "expected", "lower",
                     "fault_score", "fault_limit", "ratio"):
            getattr(self, name)[rows] = getattr(part, name)
        for k, r in enumerate(rows.tolist()):
            self.fault[r], self.fault_reason[r] = part.fault[k], part.fault_reason[k]


def assess(values: np.ndarray, end_ts_s: np.ndarray, interval_s: np.ndarray | int,
           table: ProfileTable, meter_ids: Iterable[str] | None, bundle_limit: float,
           table_rows: np.ndarray | None = None) -> Evidence:
    """Evidence of rows of raw readings (n, length) kWh, each ending at `end_ts_s` (epoch s),
    `interval_s` apart (one interval for all rows, or one per row). The profile branch flags
    above the larger of `bundle_limit` and the meter's own limit. Each row's profile is its
    meter's in `table`, or `table_rows` (index into the table, -1: none) when given."""
    values = np.asarray(values, dtype=np.float64)
    n, length = values.shape
    intervals = np.broadcast_to(np.asarray(interval_s, dtype=np.int64), (n,))
    t = (table.rows_of(meter_ids or ()) if table_rows is None
         else np.asarray(table_rows, np.int64))
    score, expected, lower, ratios = (np.full(n, np.nan) for _ in range(4))
    known = np.zeros(n, bool)
    limit = np.full(n, np.inf)
    have = np.flatnonzero(t >= 0)
    for interval in np.unique(intervals[have]):  # one pass per interval in the batch
        rows = have[intervals[have] == interval]
        p = t[rows]
        span = min(profile_span(int(interval)), length)
        back = np.arange(span - 1, -1, -1, dtype=np.int64) * int(interval)
        slots = hour_of_week(np.asarray(end_ts_s, dtype=np.int64)[rows, None] - back)
        ratio = log_ratio(values[rows, -span:].sum(axis=1),
                           table.median[p[:, None], slots].sum(axis=1), table.level[p], span)
        judged = table.known[p[:, None], slots].all(axis=1)  # every hour of the span known
        ratio = np.where(judged, ratio, np.nan)
        ratios[rows] = ratio
        score[rows] = np.abs(ratio - table.ratio_center[p]) / table.ratio_scale[p]
        limit[rows] = np.maximum(bundle_limit, table.ratio_limit[p])
        expected[rows] = table.median[p, slots[:, -1]]
        lower[rows] = table.lower[p, slots[:, -1]]
        known[rows] = table.known[p, slots[:, -1]]
    flag = np.nan_to_num(score, nan=0.0) > limit
    fault, why, measure, bound = _faults(values, t, table, np.where(known, lower, np.nan))
    return Evidence(score, limit, flag, expected, lower, fault, why, measure, bound, ratios,
                    np.full(n, np.nan), np.full(n, np.inf), np.full(n, np.nan),
                    np.full(n, np.nan))


def _faults(values: np.ndarray, t: np.ndarray, table: ProfileTable, lower: np.ndarray
            ) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """The data-fault rules, in order of precedence: stuck, dropout, out_of_range; per row
    the kind, its reason, and its measure with the bound that measure crossed."""
    n = len(values)
    fault, why = [""] * n, [""] * n
    measure, bound = np.zeros(n), np.ones(n)
    have = t >= 0
    if not have.any():
        return fault, why, measure, bound
    p = np.where(have, t, 0)
    last = values[:, -1]
    flat = _trailing_flat_run(values)
    level, max_run, max_value = table.level[p], table.max_run[p], table.max_value[p]
    near_zero = np.maximum(ZERO_SHARE * level, 1e-6)  # a bound above 0 even at level 0
    reach = np.maximum(max_value - level, 0.0)
    allowed = np.maximum(max_run, MIN_STUCK_READINGS)
    stuck = have & (last != 0) & (flat > allowed)
    dropout = have & ~stuck & (last <= near_zero) & (np.nan_to_num(lower) > near_zero)
    high = have & ~stuck & ~dropout & (reach > 0) & (last > level + OUT_OF_RANGE_FACTOR * reach)
    excursion = (last - level) / np.where(reach > 0, reach, 1.0)
    for rows, m, b in ((stuck, flat, allowed),
                       (dropout, np.nan_to_num(lower), near_zero),
                       (high, excursion, np.full(n, OUT_OF_RANGE_FACTOR))):
        measure[rows], bound[rows] = m[rows], b[rows]
    for k in np.flatnonzero(stuck):
        fault[k] = "stuck"
        why[k] = (f"stuck: {flat[k]} identical readings of {last[k]:g} (longest in normal "
                  f"data: {int(max_run[k])})")
    for k in np.flatnonzero(dropout):
        fault[k] = "dropout"
        why[k] = (f"dropout: {last[k]:g} kWh where this hour of the week reads at least "
                  f"{lower[k]:.3g} kWh 95 % of the time")
    for k in np.flatnonzero(high):
        fault[k] = "out_of_range"
        why[k] = (f"out_of_range: {last[k]:g} kWh, the largest normal reading is "
                  f"{max_value[k]:.3g} kWh")
    return fault, why, measure, bound


def jumps(values: np.ndarray, expected: np.ndarray, level: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray]:
    """(anchor, size) of each row's newest reading's jump. Its departure from the profile,
    log((reading + c) / (expected + c)) with `expected` the profile's median at each of the
    row's last JUMP_BASE + 1 readings and c as in the energy ratio, is compared with the median
    departure of the JUMP_BASE readings before it: a scheduled ramp (the profile's own step
    from one hour to the next) is no jump, and a day that runs 10 % high runs 10 % high
    through its steps. size = |that difference| (log units); anchor = the reading the ones
    before predict (kWh). `jump_score` makes a robust z of it: a short-lived departure (a
    spike, a dip, a burst of noise) that a three-hour energy ratio dilutes and a window's
    reconstruction hides where the meter's day is loud."""
    values = np.asarray(values, dtype=np.float64)[:, -JUMP_BASE - 1:]
    c = np.maximum(RATIO_OFFSET * np.asarray(level, dtype=np.float64), 1e-9)
    expected = np.asarray(expected, dtype=np.float64)
    resid = np.log((values + c[:, None]) / (expected + c[:, None]))
    base = np.median(resid[:, :-1], axis=1)
    return (expected[:, -1] + c) * np.exp(base) - c, np.abs(resid[:, -1] - base)


def jump_score(size: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """size / (1.2533 x the hour's mean jump size + JUMP_FLOOR): a robust z."""
    return np.asarray(size, np.float64) / (1.2533 * np.asarray(scale, np.float64) + JUMP_FLOOR)


def alert_kind(branch: str) -> str:
    """The alert kind of a flag's branch: a data fault is its own kind, the rest `anomaly`."""
    return branch if branch in FAULT_KINDS else "anomaly"


def _trailing_flat_run(values: np.ndarray) -> np.ndarray:
    """Per row: how many readings at the end are identical to the last one."""
    same = values[:, :-1] == values[:, -1:]  # each earlier reading equal to the last
    rev = same[:, ::-1]  # nearest first: the run is the count of leading Trues
    run = np.where(rev.all(axis=1), same.shape[1], np.argmin(rev, axis=1))
    return np.asarray(run + 1, dtype=np.int64)
