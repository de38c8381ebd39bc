"""A meter's own normal, kept in its state: calibrated when it starts, then learned online.

The bundle knows the meters it was trained on; a production user connects meters it has never
seen. Every scored meter therefore carries a MeterCalibration beside its history, one object
offline (`meterwatch score`) and in the worker's table (`to_bytes` / `from_bytes`):

- a meter the bundle knows (origin "bundle") starts from the bundle's MeterProfile, and its
  forest scores from the bundle's normal scores of its category (a normal distribution with
  PRIOR_DAYS' weight), then learns its own as below;
- a meter the bundle has never seen (origin "warmup") is calibrated at the end of its warm-up,
  on the readings its normaliser is fitted on (stream_app.core.meter_window; 2 days at 15 min,
  8 days hourly). Its time-of-week profile is fitted on them. Its energy-ratio spread is
  measured day against day: each warm-up day against the other warm-up days of its kind, so the
  spread is that of a day the profile has not seen. Its forest scores are judged against its
  own: z = limit * (score - mean) / (t - mean), limit the category's, t the score a normal
  reading of this meter exceeds with the probability that leaves about FALSE_RUNS_PER_WEEK
  runs of forest flags a week (`forest_budget`), so the meter's normal readings cross its
  category's limit about as often as the budget allows, whatever the category: the study's
  limits were chosen for z-scores against labelled training data, which an unseen meter does
  not have; here they give the z its unit and severity its bands. The distribution is that of
  the warm-up's own windows (Detector.calibration_for) and then of every scored reading (see
  below). The time-of-week branch holds the meter to the larger of the bundle's limit and the
  meter's own, taken the same way from its branch scores.

  An hour of the week not seen yet expects what the same hour showed on the seen days of its
  kind (Monday-Friday or Saturday-Sunday); an hour that no day of its kind has shown yet is not
  `known`: the time-of-week branch and the dropout rule do not judge it (a meter's first
  Saturday is not compared with its Tuesday).

Tails: the t of a score histogram is the larger of an exponential tail fitted above its 90th
percentile (peaks over threshold: t = q90 + mean excess * ln(0.1 / p); for the jump and ratio
scores, exponential in the score or in log(1 + score), a Pareto tail, whichever meets the
histogram's own 99th percentile: the steel plant's jumps have a Pareto tail, the simulator's
an exponential one) and its empirical (1 - p) quantile where at least EMPIRICAL_READINGS
readings lie above that: the first extrapolates, the second holds once weeks of readings show
a meter's recurring highs (every Monday morning after an idle weekend) and ignores a few
anomalies. The histograms learn from all readings, the highest in their top bin, and forget
with a memory of MEMORY_DAYS; learning a tail from unflagged readings alone would shrink it day
after day, since each day's highest normal values are the ones flagged. The jump branch gets
JUMP_SHARE of the forest's budget (a spike is also the forest's, through its recent-readings
error).

Online, at the first reading of each new UTC day, the day before is folded in:

- every hour of the week the day showed moves toward that hour's mean reading at rate
  max(1 / (times seen + 1), PROFILE_RATE): the first weeks average, later weeks follow slow
  drift at a bounded rate. Each hour learns its own level, so a day shift that shrinks does not
  rescale the night. A flagged reading counts FLAGGED_SHARE of an unflagged one, so an anomaly
  barely teaches and a persistent level shift still becomes the new normal within weeks (once
  the branch no longer flags it, at the full rate) instead of alerting every week for ever. An
  hour whose mean lies far outside its band (beyond it by the band's own width) on the same side
  SHIFT_WEEKS weeks running has a new normal and takes that week's level at once (a building
  that stopped opening its afternoons alerts for three weeks, not for two months). A
  young hour (seen fewer than YOUNG times) averages its readings, and its band each week's
  lowest and highest; a mature hour's band moves with its median. An hour first learned while
  it was not known (nothing could judge its readings) is provisional: its next day learns from
  all its readings, so an anomaly on a meter's first Saturday does not make every later
  Saturday alert. An hour first seen while known (it expected the same hour of its kind of
  day) learns from its unflagged readings only.
- a warm-up meter's energy-ratio centre and spread and its level learn from all its readings
  (winsorised at WINSOR spreads) during its first CALIBRATION_DAYS, then stay.
- the largest normal reading grows with unflagged readings, and by FLAGGED_SHARE of the way to
  a flagged one (a pump's first run after a quiet warm-up is out of range, its fifth is not);
  a warm-up meter's allowed flat run grows the same way toward a run flagged stuck (two days
  cannot show the longest flat run of an idle weekend).
- the jump branch's typical jump per hour of the day follows at most JUMP_RATE a day.

Folding at day boundaries makes the flags independent of how readings are batched: a reading is
judged with the calibration as it stood at the start of its UTC day.

State size: the profile's three statistics and the typical jumps as float16 relative to the
largest normal reading (rounded so at every fold: the bytes hold exactly what is in memory),
one byte per hour of the week for how often it was seen, bits for known, provisional and far
outside its band (above, below, twice), three
float16 histograms (64 and 2 x 48 bins), an unseen meter's error scale (float16) and the day's
accumulators: about 2.4 KB, 3.0 KB as base85 text in the worker's JSON state; the whole meter
state with its history is about 4.0 KB (at most 4,096 bytes, tested).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from stream_app.core.base85 import b85decode, b85encode
from stream_app.core.evidence import (
    FALSE_RUNS_PER_WEEK,
    JUMP_BASE,
    MIN_RATIO_SCALE,
    SLOTS,
    WEEK_S,
    MeterProfile,
    hour_of_week,
    jump_score,
    jumps,
    log_ratio,
    longest_flat_run,
    profile_span,
)

VERSION = 1
DAY_S = 86_400
PROFILE_RATE = 0.2  # per week: a mature hour follows drift of its level at most this fast
YOUNG = 4  # an hour seen fewer times than this averages all its readings
FLAGGED_SHARE = 0.25  # a flagged reading's weight in a mature hour's update
SHIFT_WEEKS = 3  # an hour far outside its band this many weeks running takes its new level
CALIBRATION_DAYS = 7  # a warm-up meter learns its ratio spread and level in its first week
MEMORY_DAYS = 28  # the score histograms forget with this memory
PRIOR_DAYS = 7  # a trained meter's forest histogram starts as this many days of the bundle's
JUMP_RATE = 0.1  # per day: an hour of the day's typical jump follows change at most this fast
JUMP_MIN_DAYS = 2  # the jump branch judges once its histogram holds two days of readings
JUMP_MIN_LIMIT = 4.0  # and never nearer than four typical jumps
JUMP_SHARE = 0.5  # of the forest's budget: spikes are also the forest's (its recent-readings error)
WINSOR = 6.0  # spreads: how far one reading may pull the ratio statistics in calibration
DEFAULT_RATIO_SCALE = 0.15  # no two warm-up days of one kind: a 15 % energy spread to start
STUCK_HOUR_S = 3600  # a warm-up meter's allowed flat run: at least an hour, and twice its own
SEEN_CAP = 255
RUN_READINGS = 2  # a run of forest flags on normal data is about two readings long
TAIL_SHARE = 0.1  # the exponential tail is fitted above the 90th percentile
EMPIRICAL_READINGS = 12  # the empirical quantile counts once this many readings are above it
# (a recurring high, every Monday morning, is; one anomaly is not)
BINS = 64  # the forest-score histogram: edges in the warm-up's score spreads, -4 to 12
FOREST_EDGES = np.linspace(-4.0, 12.0, BINS + 1)
Z_BINS = 48  # the ratio and jump histograms: |z| from 0 to 4096 on a log scale (a pump's start
# can be hundreds of its idle hours' typical jumps; a histogram must reach it)
Z_EDGES = np.expm1(np.linspace(0.0, np.log1p(4096.0), Z_BINS + 1))
_ORIGINS = ("bundle", "warmup")
_SCALARS = struct.Struct("<BBiii" + "d" * 15)


def forest_budget(interval_s: int) -> float:
    """The share of normal readings the forest may flag: FALSE_RUNS_PER_WEEK runs a week of
    RUN_READINGS readings each."""
    return min(FALSE_RUNS_PER_WEEK * RUN_READINGS * interval_s / WEEK_S, TAIL_SHARE / 2)


def profile_budget(interval_s: int) -> float:
    """The share the time-of-week branch may flag: its runs are about a span long."""
    return min(FALSE_RUNS_PER_WEEK * profile_span(interval_s) * interval_s / WEEK_S,
               TAIL_SHARE / 2)


def tail_top(counts: np.ndarray, edges: np.ndarray, p: float, log: bool = False
             ) -> tuple[float, float]:
    """(mean, t) of a histogram: t is exceeded with probability about p (see the module's
    docstring: the larger of an exponential tail above q90 and the empirical quantile). With
    `log`, the tail may also be exponential in log(1 + x), a Pareto tail (the jumps of real
    meters have one): of the two, the one whose 99th percentile is nearer the histogram's own
    is used, the Pareto one while too few readings show it. While the histogram holds fewer
    than 1 / p readings, t is taken at p * (readings * p): a tail guessed from few readings
    asks for more."""
    counts = np.asarray(counts, np.float64)
    total = counts.sum()
    p = p * min(1.0, total * p)
    mean = float((counts * (edges[:-1] + edges[1:]) / 2).sum() / total)
    above = np.cumsum(counts[::-1])[::-1]  # weight in this bin or higher
    k = int(np.flatnonzero(above >= TAIL_SHARE * total)[-1])
    share = float(above[k] / total)

    def tail(x: np.ndarray, at: float) -> float:  # x: the bin edges on the tail's scale
        centers = (x[:-1] + x[1:]) / 2
        excess = max(float((counts[k:] * (centers[k:] - x[k])).sum() / counts[k:].sum()),
                     float(x[k + 1] - x[k]) / 2)
        return float(x[k]) + excess * float(np.log(share / at))

    exponential = tail(np.asarray(edges, np.float64), p)
    if log:
        pareto = float(np.expm1(tail(np.log1p(edges), p)))
        high = np.flatnonzero(above > max(0.01 * total, EMPIRICAL_READINGS))
        if len(high) == 0:
            exponential = pareto
        else:
            q99 = float(np.log1p(edges[int(high[-1]) + 1]))
            lin99 = np.log1p(tail(np.asarray(edges, np.float64), 0.01))
            par99 = tail(np.log1p(edges), 0.01)
            if abs(par99 - q99) < abs(lin99 - q99):
                exponential = pareto
    beyond = np.flatnonzero(above > max(p * total, EMPIRICAL_READINGS))
    empirical = float(edges[int(beyond[-1]) + 1]) if len(beyond) else -np.inf
    return mean, max(exponential, empirical)


def _add(counts: np.ndarray, values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    k = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(counts) - 1)
    return (counts.astype(np.float32) + np.bincount(k, minlength=len(counts))).astype(
        np.float16)


def _quantise(a: np.ndarray, scale: float) -> np.ndarray:
    """The float16 value of a / scale, back in kWh: what the state's bytes hold."""
    return (np.asarray(a, np.float64) / scale).astype(np.float16).astype(np.float64) * scale


def weekday_of(day: int) -> int:
    """0 = Monday for a UTC day number (1970-01-01, day 0, was a Thursday)."""
    return (int(day) + 3) % 7


def _weekend(weekday: npt.ArrayLike) -> np.ndarray:
    """1 for Saturday and Sunday, 0 for Monday to Friday."""
    return (np.asarray(weekday) >= 5).astype(np.int64)


def _zeros(dtype: npt.DTypeLike) -> np.ndarray:
    return np.zeros(24, dtype)


@dataclass
class MeterCalibration:
    origin: str  # "bundle" | "warmup"
    profile: MeterProfile | None  # None: the bundle carries no evidence (the ablation)
    seen: np.ndarray  # (168,) uint8: how many days have shown each hour of the week
    provisional: np.ndarray = field(default_factory=lambda: np.zeros(SLOTS, bool))
    # per hour of the week: for how many weeks running its mean was far above (+) / below (-)
    # its band (beyond it by the band's own width), 0 to 2
    outside: np.ndarray = field(default_factory=lambda: np.zeros(SLOTS, np.int8))
    # hours of the week whose expectation rests on readings of that hour or of its kind of day
    # (evidence.ProfileTable: the others are not judged by the profile branch or dropout rule)
    known: np.ndarray = field(default_factory=lambda: np.ones(SLOTS, bool))
    forest_mean: float = float("nan")  # the meter's own normal forest score; NaN: the bundle's
    forest_top: float = float("nan")  # t: the score its category's limit stands for
    f_mu0: float = 0.0  # the forest histogram's origin and unit (the warm-up's mean, spread)
    f_sd0: float = 1.0
    f_hist: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.float16))
    r_hist: np.ndarray = field(default_factory=lambda: np.zeros(Z_BINS, np.float16))
    f_budget: float = 1e-3  # forest_budget / profile_budget of the meter's interval
    r_budget: float = 1e-2
    days: int = 0  # days folded since calibration
    day: int = -1  # the UTC day being accumulated
    hour_sum: np.ndarray = field(default_factory=lambda: _zeros(np.float32))  # unflagged
    hour_n: np.ndarray = field(default_factory=lambda: _zeros(np.uint16))
    flag_sum: np.ndarray = field(default_factory=lambda: _zeros(np.float32))  # flagged
    flag_n: np.ndarray = field(default_factory=lambda: _zeros(np.uint16))
    # the day's lowest and highest unflagged reading per hour, float16 relative to the
    # largest normal reading (constant within a day)
    hour_min: np.ndarray = field(default_factory=lambda: np.full(24, np.inf, np.float16))
    hour_max: np.ndarray = field(default_factory=lambda: np.full(24, -np.inf, np.float16))
    day_max: float = 0.0  # the day's largest unflagged and flagged reading
    flag_max: float = 0.0
    r_n: float = 0.0  # the day's energy ratios, during calibration
    r_sum: float = 0.0
    r_abs: float = 0.0
    # an unseen meter's log reconstruction errors: median and spread over its warm-up windows
    # (Detector.forest_scores maps them onto the bundle's)
    feat_center: np.ndarray | None = None
    feat_scale: np.ndarray | None = None
    # the jump branch (evidence.jumps): the typical |jump| per hour of the day, how many days
    # taught it, the scores' histogram and the day's unflagged jumps
    jump_scale: np.ndarray = field(default_factory=lambda: np.full(24, np.nan, np.float32))
    jump_days: np.ndarray = field(default_factory=lambda: _zeros(np.uint8))
    j_hist: np.ndarray = field(default_factory=lambda: np.zeros(Z_BINS, np.float16))
    jump_sum: np.ndarray = field(default_factory=lambda: _zeros(np.float32))
    jump_n: np.ndarray = field(default_factory=lambda: _zeros(np.uint16))
    jump_limit: float = float("inf")
    day_stuck: int = 0  # the day's longest run flagged stuck

    # ---- construction --------------------------------------------------------------------

    @classmethod
    def from_bundle(cls, profile: MeterProfile | None, score_mean: float, score_std: float,
                    interval_s: int, recent: tuple[np.ndarray, np.ndarray] | None = None
                    ) -> MeterCalibration:
        """A meter the bundle was trained on: its profile, every hour known and well seen; its
        forest scores start from the bundle's normal scores of its category (a normal
        distribution of PRIOR_DAYS' weight) and then learn the meter's own."""
        cal = cls("bundle", profile, np.full(SLOTS, SEEN_CAP, np.uint8),
                  f_mu0=score_mean, f_sd0=score_std, f_budget=forest_budget(interval_s))
        centers = (FOREST_EDGES[:-1] + FOREST_EDGES[1:]) / 2
        prior = np.exp(-0.5 * centers ** 2)
        weight = PRIOR_DAYS * DAY_S / interval_s
        cal.f_hist = (prior / prior.sum() * weight).astype(np.float16)
        cal._forest_from_hist()
        if profile is not None:
            cal.profile = profile
            if recent is not None:
                cal._start_jumps(*recent)
            cal.profile = cal._rounded(profile)
        return cal

    @classmethod
    def from_warmup(cls, values: np.ndarray, ts_s: np.ndarray, interval_s: int,
                    forest_scores: np.ndarray | None, min_std: float,
                    with_profile: bool = True) -> MeterCalibration:
        """A meter the bundle has never seen, from its warm-up readings (kWh, on the grid) and
        the forest scores of the warm-up's windows (None: the bundle's statistics). `min_std`
        floors the forest histogram's unit."""
        x = np.asarray(values, np.float64)
        ts = np.asarray(ts_s, np.int64)
        cal = cls("warmup", None, np.zeros(SLOTS, np.uint8),
                  f_budget=forest_budget(interval_s), r_budget=profile_budget(interval_s))
        if forest_scores is not None and len(forest_scores) >= 10:
            s = np.asarray(forest_scores, np.float64)
            cal.f_mu0, cal.f_sd0 = float(s.mean()), max(float(s.std()), min_std)
            cal.f_hist = _add(cal.f_hist, (s - cal.f_mu0) / cal.f_sd0, FOREST_EDGES)
            cal._forest_from_hist()
        if not with_profile:
            return cal
        slot = hour_of_week(ts)
        stats = np.zeros((3, SLOTS))
        for s in np.unique(slot):
            stats[:, s] = np.quantile(x[slot == s], (0.5, 0.05, 0.95))
            cal.seen[s] = min(len(np.unique(ts[slot == s] // DAY_S)), SEEN_CAP)
        level = float(np.median(x))
        allowed = max(2 * longest_flat_run(x), -(-STUCK_HOUR_S // interval_s))
        center, scale, ratios = _day_against_day(x, ts, interval_s, level)
        cal.profile = MeterProfile(stats[0], stats[1], stats[2], level, float(x.max()),
                                   allowed, center, scale, 0.0)
        if len(ratios):
            cal.r_hist = _add(cal.r_hist, np.abs(ratios - center) / scale, Z_EDGES)
        cal._fill_unseen()
        cal._start_jumps(x, ts)
        cal.profile = cal._own_ratio_limit(cal._rounded(cal.profile))
        return cal

    def _start_jumps(self, x: np.ndarray, ts: np.ndarray) -> None:
        """The typical jump per hour of the day, and the histogram, from consecutive readings."""
        if len(x) <= JUMP_BASE:
            return
        p = self.profile
        assert p is not None  # called with a profile only
        rows = np.lib.stride_tricks.sliding_window_view(x, JUMP_BASE + 1)
        expected = np.lib.stride_tricks.sliding_window_view(
            p.median[hour_of_week(ts)], JUMP_BASE + 1)
        hour = (ts[JUMP_BASE:] % DAY_S) // 3600
        resid = jumps(rows, expected, np.full(len(rows), p.level))[1]
        for h in np.unique(hour):
            self.jump_scale[h] = np.float32(resid[hour == h].mean())
            self.jump_days[h] = 1
        self._fill_jumps()
        z = jump_score(resid, self.jump_scale[hour])
        self.j_hist = _add(self.j_hist, z, Z_EDGES)
        self._jump_limit()

    def _fill_jumps(self) -> None:
        known = self.jump_days > 0
        if known.any() and not known.all():
            self.jump_scale[~known] = np.float32(np.median(self.jump_scale[known]))

    def _jump_limit(self) -> None:
        weight = float(np.asarray(self.j_hist, np.float64).sum())
        if weight * self.f_budget < RUN_READINGS * FALSE_RUNS_PER_WEEK * JUMP_MIN_DAYS * DAY_S \
                / WEEK_S:
            self.jump_limit = float("inf")
            return
        self.jump_limit = max(tail_top(self.j_hist, Z_EDGES, JUMP_SHARE * self.f_budget,
                                       log=True)[1],
                              JUMP_MIN_LIMIT)

    # ---- the decision's view -------------------------------------------------------------

    @property
    def own_forest(self) -> bool:
        return bool(np.isfinite(self.forest_mean))

    @property
    def calibrating(self) -> bool:
        return self.origin == "warmup" and self.days < CALIBRATION_DAYS

    def forest_z(self, score: np.ndarray, limit: np.ndarray) -> np.ndarray:
        """The meter's own calibrated z: its category's limit where a normal score reaches
        the budget (see the module's docstring)."""
        return limit * (score - self.forest_mean) / (self.forest_top - self.forest_mean)

    def start_day(self, day: int) -> None:
        """Called before judging readings of UTC day `day`: folds the day before in."""
        if self.day < 0:
            self.day = int(day)
        elif day > self.day:
            self._fold()
            self.day = int(day)

    def observe(self, last: np.ndarray, ts_s: np.ndarray, flagged: np.ndarray,
                score: np.ndarray, ratio: np.ndarray | None, jump: np.ndarray | None = None,
                jump_z: np.ndarray | None = None, stuck_run: np.ndarray | None = None) -> None:
        """Accumulate judged readings of the current day: the newest reading of each row
        (kWh), its time, whether it was flagged, its forest score, its span's log ratio, its
        |jump| (kWh) and jump score, and its flat run where the stuck rule flagged it."""
        last = np.asarray(last, np.float64)
        bad = np.asarray(flagged, bool)
        hour = (np.asarray(ts_s, np.int64) % DAY_S) // 3600
        if jump is not None:
            ok = ~bad & np.isfinite(jump)
            np.add.at(self.jump_sum, hour[ok], np.asarray(jump)[ok].astype(np.float32))
            np.add.at(self.jump_n, hour[ok], 1)
            z = np.asarray(jump_z, np.float64)
            self.j_hist = _add(self.j_hist, z[np.isfinite(z)], Z_EDGES)
        if stuck_run is not None and len(stuck_run):
            self.day_stuck = max(self.day_stuck, int(np.max(stuck_run)))
        for mask, sums, counts in ((~bad, self.hour_sum, self.hour_n),
                                   (bad, self.flag_sum, self.flag_n)):
            if mask.any():
                np.add.at(sums, hour[mask], last[mask].astype(np.float32))
                np.add.at(counts, hour[mask], 1)
        if (~bad).any():
            rel = (last[~bad] / self._scale()).astype(np.float16)
            np.minimum.at(self.hour_min, hour[~bad], rel)
            np.maximum.at(self.hour_max, hour[~bad], rel)
            self.day_max = max(self.day_max, float(last[~bad].max()))
        if bad.any():
            self.flag_max = max(self.flag_max, float(last[bad].max()))
        if self.own_forest:
            self.f_hist = _add(self.f_hist, (np.asarray(score, np.float64) - self.f_mu0)
                               / self.f_sd0, FOREST_EDGES)
        if self.origin != "warmup":
            return
        p = self.profile
        if ratio is None or p is None:
            return
        r = np.asarray(ratio, np.float64)
        r = r[np.isfinite(r)]
        if len(r) == 0:
            return
        self.r_hist = _add(self.r_hist, np.abs(r - p.ratio_center) / p.ratio_scale, Z_EDGES)
        if self.calibrating:
            c, sc = p.ratio_center, p.ratio_scale
            r = c + np.clip((r - c) / sc, -WINSOR, WINSOR) * sc
            self.r_n += len(r)
            self.r_sum += float(r.sum())
            self.r_abs += float(np.abs(r - c).sum())

    # ---- learning --------------------------------------------------------------------------

    def _forest_from_hist(self) -> None:
        mean, t = tail_top(self.f_hist, FOREST_EDGES, self.f_budget)
        self.forest_mean = self.f_mu0 + mean * self.f_sd0
        self.forest_top = self.forest_mean + max((t - mean) * self.f_sd0, 1e-9)

    def _own_ratio_limit(self, p: MeterProfile) -> MeterProfile:
        if float(np.asarray(self.r_hist, np.float64).sum()) <= 0:
            return p
        return replace(p, ratio_limit=float(tail_top(self.r_hist, Z_EDGES, self.r_budget,
                                                     log=True)[1]))

    def _fold(self) -> None:
        p = self.profile
        if p is not None:
            p = self._fold_profile(p)
        if self.calibrating and p is not None:
            a = 1.0 / (self.days + 2)  # the warm-up counts as one day
            if self.r_n > 0:
                spread = 1.2533 * self.r_abs / self.r_n  # mean |deviation| -> a normal sigma
                p = replace(p, ratio_center=p.ratio_center + a * (self.r_sum / self.r_n
                                                                   - p.ratio_center),
                            ratio_scale=max(p.ratio_scale + a * (spread - p.ratio_scale),
                                            MIN_RATIO_SCALE))
            if (self.hour_n > 0).any():
                means = self.hour_sum[self.hour_n > 0] / self.hour_n[self.hour_n > 0]
                p = replace(p, level=p.level + a * (float(np.median(means)) - p.level))
        forget = np.float32(1.0 - 1.0 / MEMORY_DAYS)
        if self.own_forest:
            self.f_hist = (self.f_hist.astype(np.float32) * forget).astype(np.float16)
            self._forest_from_hist()
        if self.origin == "warmup":
            self.r_hist = (self.r_hist.astype(np.float32) * forget).astype(np.float16)
        if p is not None:
            top = max(p.max_value, self.day_max)
            if self.flag_max > top:
                top += FLAGGED_SHARE * (self.flag_max - top)
            run = p.max_run
            if self.origin == "warmup" and self.day_stuck > run:  # the allowed run of a meter
                # known for two days grows toward a flagged one (a trained meter's is a year's)
                run += max(1, int(np.ceil(FLAGGED_SHARE * (self.day_stuck - run))))
            self.profile = replace(p, max_value=top, max_run=run)
            hours = self.jump_n > 0
            if hours.any():
                days = self.jump_days[hours].astype(np.float64)
                rate = np.maximum(1.0 / (days + 1.0), JUMP_RATE)
                mean = self.jump_sum[hours] / self.jump_n[hours]
                old = np.where(np.isfinite(self.jump_scale[hours]), self.jump_scale[hours], mean)
                self.jump_scale[hours] = (old + rate * (mean - old)).astype(np.float32)
                self.jump_days[hours] = np.minimum(self.jump_days[hours].astype(np.int64) + 1,
                                                   SEEN_CAP)
                self._fill_jumps()
            self.j_hist = (self.j_hist.astype(np.float32) * forget).astype(np.float16)
            self._jump_limit()
            if self.origin == "warmup":
                self._fill_unseen()
                self.profile = self._own_ratio_limit(self.profile)
            self.profile = self._rounded(self.profile)
        self.days += 1
        for acc in (self.hour_sum, self.flag_sum, self.hour_n, self.flag_n):
            acc[:] = 0
        self.hour_min[:] = np.inf
        self.hour_max[:] = -np.inf
        self.day_max = self.flag_max = 0.0
        self.r_n = self.r_sum = self.r_abs = 0.0
        self.jump_sum[:] = 0
        self.jump_n[:] = 0
        self.day_stuck = 0

    def _fold_profile(self, p: MeterProfile) -> MeterProfile:
        hours = np.flatnonzero((self.hour_n.astype(np.int64) + self.flag_n) > 0)
        slots = weekday_of(self.day) * 24 + hours
        seen = self.seen[slots].astype(np.float64)
        known = self.known[slots]
        n_ok, n_bad = self.hour_n[hours].astype(np.float64), self.flag_n[hours].astype(np.float64)
        # a provisional hour and an hour first seen unjudged learn all their readings, an hour
        # first seen judged only its unflagged ones
        share = np.where(self.provisional[slots] | ((seen == 0) & ~known), 1.0,
                         np.where(seen == 0, 0.0, FLAGGED_SHARE))
        weight = n_ok + share * n_bad
        learn = weight > 0
        hours, slots, known = hours[learn], slots[learn], known[learn]
        seen, n_ok, n_bad = seen[learn], n_ok[learn], n_bad[learn]
        share, weight = share[learn], weight[learn]
        if len(hours) == 0:
            return p
        self.provisional[slots] = (seen == 0) & ~known
        mean = (self.hour_sum[hours] + share * self.flag_sum[hours]) / weight
        # a mature hour far outside its band on the same side SHIFT_WEEKS weeks running has a
        # new normal: it takes the new level from all its readings at once
        every = (self.hour_sum[hours] + self.flag_sum[hours]) / (n_ok + n_bad)
        med = p.median[slots]
        side = np.where(every > 2 * p.upper[slots] - med, 1,
                        np.where(every < 2 * p.lower[slots] - med, -1, 0))
        side = np.where(seen >= YOUNG, side, 0).astype(np.int8)
        before = self.outside[slots]
        streak = np.where((side != 0) & (np.sign(before) == side), np.abs(before) + 1, 1)
        moved = (side != 0) & (streak >= SHIFT_WEEKS)
        self.outside[slots] = np.where(moved, 0, side * streak)
        mean = np.where(moved, every, mean)
        lo = np.where(n_ok > 0, self.hour_min[hours].astype(np.float64) * self._scale(), mean)
        hi = np.where(n_ok > 0, self.hour_max[hours].astype(np.float64) * self._scale(), mean)
        median, lower, upper = p.median.copy(), p.lower.copy(), p.upper.copy()
        new, young = seen == 0, seen < YOUNG
        a = np.maximum(1.0 / (seen + 1.0), PROFILE_RATE) * weight / (n_ok + n_bad)
        a = np.where(moved, 1.0, a)
        delta = np.where(new, mean - median[slots], a * (mean - median[slots]))
        lower[slots] = np.where(new, lo, np.where(young, lower[slots] + a * (lo - lower[slots]),
                                                  lower[slots] + delta))
        upper[slots] = np.where(new, hi, np.where(young, upper[slots] + a * (hi - upper[slots]),
                                                  upper[slots] + delta))
        median[slots] += delta
        lower[slots] = np.clip(lower[slots], 0.0, median[slots])
        upper[slots] = np.maximum(upper[slots], median[slots])
        self.seen[slots] = np.minimum(self.seen[slots].astype(np.int64) + 1, SEEN_CAP)
        return replace(p, median=median, lower=lower, upper=upper)

    def _fill_unseen(self) -> None:
        """Hours of the week not seen yet expect what the same hour showed on seen days of
        their kind (known), else on any seen day (not known)."""
        p = self.profile
        assert p is not None  # called with a profile only
        median, lower, upper = p.median.copy(), p.lower.copy(), p.upper.copy()
        seen = self.seen.reshape(7, 24) > 0
        weekend = _weekend(np.arange(7))
        known = seen.copy()
        for d in range(7):
            for h in np.flatnonzero(~seen[d]):
                slot = d * 24 + h
                same = seen[:, h] & (weekend == weekend[d])
                pool = same if same.any() else seen[:, h]
                if not pool.any():
                    median[slot], lower[slot], upper[slot] = p.level, 0.0, p.max_value
                    continue
                src = np.flatnonzero(pool) * 24 + h
                median[slot] = np.median(p.median[src])
                lower[slot] = np.median(p.lower[src])
                upper[slot] = np.median(p.upper[src])
                known[d, h] = same.any()
        self.profile = replace(p, median=median, lower=lower, upper=upper)
        self.known = known.reshape(SLOTS)

    def _scale(self) -> float:
        return max(self.profile.max_value, 1e-9) if self.profile is not None else 1.0

    def _rounded(self, p: MeterProfile) -> MeterProfile:
        """p and the typical jumps as the bytes hold them (float16 of a share of p's largest
        normal reading)."""
        scale = max(p.max_value, 1e-9)
        self.jump_scale = _quantise(self.jump_scale, scale).astype(np.float32)
        return replace(p, median=_quantise(p.median, scale), lower=_quantise(p.lower, scale),
                       upper=_quantise(p.upper, scale))

    # ---- bytes -----------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        p = self.profile
        head = _SCALARS.pack(
            VERSION, _ORIGINS.index(self.origin) | ((p is not None) << 1), self.days, self.day,
            p.max_run if p is not None else 0,
            *((p.level, p.max_value, p.ratio_center, p.ratio_scale, p.ratio_limit)
              if p is not None else (0.0,) * 5),
            self.forest_mean, self.forest_top, self.f_mu0, self.f_sd0, self.f_budget,
            self.r_budget, self.day_max, self.flag_max, self.r_n, self.r_sum)
        parts = [head, np.float64(self.r_abs).tobytes(), self.seen.astype("u1").tobytes(),
                 np.packbits(self.provisional).tobytes()]
        parts += [a.astype(dt).tobytes() for a, dt in (
            (self.hour_sum, "<f4"), (self.hour_n, "<u2"), (self.flag_sum, "<f4"),
            (self.flag_n, "<u2"), (self.hour_min, "<f2"), (self.hour_max, "<f2"))]
        parts.append(self.f_hist.astype("<f2").tobytes())
        parts += [np.float16(self.jump_scale.astype(np.float64) / self._scale()).astype("<f2").tobytes(),
                  self.jump_days.astype("u1").tobytes(),
                  self.j_hist.astype("<f2").tobytes(), self.jump_sum.astype("<f4").tobytes(),
                  self.jump_n.astype("<u2").tobytes(),
                  struct.pack("<di", self.jump_limit, self.day_stuck)]
        if self.origin == "warmup":
            parts.append(self.r_hist.astype("<f2").tobytes())
            center, spread = self.feat_center, self.feat_scale
            feats = 0 if center is None else len(center)
            parts.append(struct.pack("<H", feats))
            if center is not None and spread is not None and feats:
                parts += [center.astype("<f2").tobytes(), spread.astype("<f2").tobytes()]
        if p is not None:
            scale = max(p.max_value, 1e-9)
            parts += [np.float16(a / scale).astype("<f2").tobytes()
                      for a in (p.median, p.lower, p.upper)]
            parts.append(np.packbits(self.known).tobytes())
        parts.append(np.packbits(np.concatenate((self.outside > 0, self.outside < 0,
                                                 np.abs(self.outside) > 1))).tobytes())
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> MeterCalibration:
        if not data or data[0] != VERSION:
            raise ValueError(f"meter calibration version {data[:1]!r}, this build reads "
                             f"{VERSION}")
        (_, bits, days, day, max_run, level, max_value, rc, rs, rl, fm, ftop, mu0, sd0, fb, rb,
         dmax, fmax, rn, rsum) = _SCALARS.unpack_from(data, 0)
        at = _SCALARS.size

        def take(dtype: str, count: int) -> np.ndarray:
            nonlocal at
            out = np.frombuffer(data, dtype=dtype, count=count, offset=at)
            at += out.nbytes
            return out

        rabs = float(take("<f8", 1)[0])
        seen = take("u1", SLOTS).copy()
        provisional = np.unpackbits(take("u1", SLOTS // 8))[:SLOTS].astype(bool)
        hour_sum, hour_n, flag_sum, flag_n, hour_min, hour_max = (
            take(dt, 24).astype(t) for dt, t in (
                ("<f4", np.float32), ("<u2", np.uint16), ("<f4", np.float32),
                ("<u2", np.uint16), ("<f2", np.float16), ("<f2", np.float16)))
        origin = _ORIGINS[bits & 1]
        r_hist = np.zeros(Z_BINS, np.float16)
        center = spread = None
        f_hist = take("<f2", BINS).astype(np.float16)
        jump_rel = take("<f2", 24).astype(np.float64)
        jump_days = take("u1", 24).astype(np.uint8)
        j_hist = take("<f2", Z_BINS).astype(np.float16)
        jump_sum = take("<f4", 24).astype(np.float32)
        jump_n = take("<u2", 24).astype(np.uint16)
        jump_limit, day_stuck = struct.unpack_from("<di", data, at)
        at += 12
        if origin == "warmup":
            r_hist = take("<f2", Z_BINS).astype(np.float16)
            feats = int(take("<u2", 1)[0])
            if feats:
                center, spread = (take("<f2", feats).astype(np.float16) for _ in range(2))
        profile, known = None, np.ones(SLOTS, bool)
        if bits & 2:
            scale = max(max_value, 1e-9)
            median, lower, upper = (take("<f2", SLOTS).astype(np.float64) * scale
                                    for _ in range(3))
            known = np.unpackbits(take("u1", SLOTS // 8))[:SLOTS].astype(bool)
            profile = MeterProfile(median, lower, upper, level, max_value, max_run, rc, rs, rl)
        outside = np.zeros(SLOTS, np.int8)
        if at < len(data):  # absent from a state written before the field existed
            up, down, twice = np.unpackbits(take("u1", 3 * SLOTS // 8)).astype(
                np.int8).reshape(3, SLOTS)
            outside = (up - down) * (1 + twice)
        jump_scale = (jump_rel * (max(max_value, 1e-9) if profile is not None else 1.0)).astype(
            np.float32)
        return cls(
            origin=origin, profile=profile, seen=seen, provisional=provisional, known=known,
            outside=outside,
            forest_mean=fm, forest_top=ftop, f_mu0=mu0, f_sd0=sd0, f_hist=f_hist, r_hist=r_hist,
            f_budget=fb, r_budget=rb, days=days, day=day, hour_sum=hour_sum, hour_n=hour_n,
            flag_sum=flag_sum, flag_n=flag_n, hour_min=hour_min, hour_max=hour_max,
            day_max=dmax, flag_max=fmax, r_n=rn, r_sum=rsum, r_abs=rabs, feat_center=center,
            feat_scale=spread, jump_scale=jump_scale, jump_days=jump_days, j_hist=j_hist,
            jump_sum=jump_sum, jump_n=jump_n, jump_limit=jump_limit, day_stuck=day_stuck)

    def to_text(self) -> str:
        """The bytes as base85 text (stream_app.core.base85: the standard library's text)."""
        return b85encode(self.to_bytes()).decode("ascii")

    @classmethod
    def from_text(cls, text: str) -> MeterCalibration:
        return cls.from_bytes(b85decode(text))


def _day_against_day(x: np.ndarray, ts: np.ndarray, interval_s: int, level: float
                     ) -> tuple[float, float, np.ndarray]:
    """Centre and robust spread of the energy ratio of each warm-up day against the same
    hours of the other warm-up days of its kind (the spread of a day not seen before), and
    the ratios themselves."""
    day = ts // DAY_S
    hour = (ts % DAY_S) // 3600
    weekend = _weekend([weekday_of(d) for d in day])
    predicted = np.full(len(x), np.nan)
    for d in np.unique(day):
        mine = np.flatnonzero(day == d)
        others = (day != d) & (weekend == weekend[mine[0]])
        for h in np.unique(hour[mine]):
            pool = x[others & (hour == h)]
            if len(pool):
                predicted[mine[hour[mine] == h]] = np.median(pool)
    span = profile_span(interval_s)
    none = np.zeros(0)
    if len(x) < span:
        return 0.0, DEFAULT_RATIO_SCALE, none
    ones = np.ones(span)
    ratio = log_ratio(np.convolve(x, ones, "valid"), np.convolve(predicted, ones, "valid"),
                      level, span)
    ratio = ratio[np.isfinite(ratio)]
    if len(ratio) < span:
        return 0.0, DEFAULT_RATIO_SCALE, none
    center = float(np.median(ratio))
    return center, max(1.4826 * float(np.median(np.abs(ratio - center))), MIN_RATIO_SCALE), ratio
