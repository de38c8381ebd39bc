"""Labelled anomaly injection, for simulated meters and for real ones (the steel plant).

Real industrial data comes without anomaly labels, so we plant known faults and measure whether
the detector finds them. Sizes are in units of the normal variation where the event is placed
(`reading_units`, `injection_unit`):

    slot          the time of day of a reading: (timestamp mod 1 day) // interval
    spread(slot)  1.4826 * MAD of the meter's readings in that slot (all days)
    unit(slot)    max(spread(slot), 0.05 * median(slot), 0.05 * level)
    level         median of the meter's positive readings
    unit(event)   mean of unit(slot) over the event's readings (1.0 if the meter never reads > 0)

so a spike at 19:00 is measured against how much 19:00 readings vary, a spike at 04:00 against
the night's, with no cap tied to the overall median: a production-hour event is sized by the
production hours' spread. The MAD ignores outliers; the floors give a flat slot or meter a
visible unit. Slots with fewer than 3 readings take the spread and median of all readings.
Measured on the steel plant (2018, 35,040 readings of Usage_kWh, level 4.57 kWh): unit(slot)
from 0.37 kWh (04:15, night idle) to 52.7 kWh (19:45, production), median over the 96 slots
5.74 kWh, hourly means 0.42-0.83 kWh at night and 9.8-51.7 kWh in 08:00-21:00; the floors never
bind there. A one-day or longer event (level_shift, drift) covers every slot and gets the
whole day's mean unit, 17.0 kWh on steel, applied to idle readings too. Before, one unit per
meter (the median of the slot spreads, clipped to [5 %, 50 %] of the median reading) was 2.29 kWh
everywhere: in 47 of the 96 slots the spread exceeded 3 such units, so a spike of magnitude 1
there was within normal variation while a night one was 19-37 night spreads.

One magnitude thus means the same thing on a 3 kWh office meter and a 150 kWh furnace, and in
a plant's idle night and its production shift.
Lengths are in wall-clock time and converted to readings with the series' interval. `magnitude`
multiplies every size (1.0 = the sizes below).

    spike        1-3 readings raised by 3-6 units (a metering glitch or a short surge)
    dip          1-4 readings cut to 10-40 % of their value (a brief trip)
    level_shift  1-2 days offset by +-(1-2) units (a new load, a CT ratio change)
    stuck        2-8 hours frozen at the last reading before the event (a hung meter)
    dropout      1-6 hours of zeros (communication or meter loss)
    time_shift   1 day showing the daily pattern 3-8 hours late (clock / schedule error)
    noise_burst  2-8 hours of extra Gaussian noise of 0.5-1.5 units (a loose contact)
    drift        2-5 days of a linear ramp to +-(1-3) units, then back (sensor drift)

and, on request only (`CALENDAR_KINDS`, not in the default rotation `ANOMALY_KINDS`, so that
`inject(series, count=40, seed=1)` places the same events as before):

    weekday_as_sunday  one whole weekday (Monday to Friday, a UTC day) replaced by the same
                       meter's readings of the nearest preceding Sunday (a closure, a schedule
                       that did not start: the Sunday-for-weekday swap)

Only `dropout` produces zeros. `stuck` freezes a real reading, whatever it is. The kinds that
add or scale (spike, dip, level_shift, noise_burst, drift) are floored at FLOOR_SHARE (5 %) of the
reading they change: energy per interval cannot be negative, and an exact zero is a dropout's
signature, so a deep dip or a negative shift leaves a small positive reading instead. The kinds
that copy real readings of another time (time_shift, weekday_as_sunday) keep them exactly, except
that a copied zero over a positive reading becomes 5 % of that reading. A reading that was
already 0 stays 0. On steel (count=40, seed=1, the same 40 events as with the former unit) the
floor holds 579 readings, all in negative drifts (418), level shifts (137) and noise bursts (24):
a multi-day event's unit of ~17 kWh exceeds the idle readings (~3 kWh); none is a zero.
Events never overlap, stay out of the first `warmup` readings (the detector needs history) and
keep `min_gap` readings apart.

`with_slow_drift` is not an anomaly: it is the slow change of a healthy meter (a plant that
grows), which the detector must follow without alerting; it changes values, never labels.

Over 300 lines: each anomaly kind is a few lines, and they belong together with their scale.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from stream_app.core.errors import InputError
from stream_app.core.series import MeterSeries

ANOMALY_KINDS: tuple[str, ...] = ("spike", "dip", "level_shift", "stuck", "dropout",
                                  "time_shift", "noise_burst", "drift")
# Kinds that need the calendar (timestamps) and whole days: asked for by name only.
CALENDAR_KINDS: tuple[str, ...] = ("weekday_as_sunday",)
INJECTABLE_KINDS: tuple[str, ...] = ANOMALY_KINDS + CALENDAR_KINDS

FLOOR_SHARE = 0.05  # every kind but dropout and stuck keeps at least 5 % of the reading
UNIT_FLOOR = 0.05  # the unit is at least 5 % of the meter's level and of the slot's median
DAY_S = 86400

# (min, max) length of each kind in seconds; spike and dip in readings (see _length).
_DURATION_S = {
    "level_shift": (86400, 2 * 86400),
    "stuck": (2 * 3600, 8 * 3600),
    "dropout": (3600, 6 * 3600),
    "time_shift": (86400, 86400),
    "noise_burst": (2 * 3600, 8 * 3600),
    "drift": (2 * 86400, 5 * 86400),
}
_READINGS = {"spike": (1, 3), "dip": (1, 4)}
_COPIES = ("time_shift", "weekday_as_sunday")  # kinds that show real readings of other times


@dataclass(frozen=True)
class AnomalyEvent:
    """One injected anomaly: readings [start, end) of one meter, and their time span."""

    kind: str
    start: int
    end: int  # exclusive
    meter_id: str
    start_ts: int  # epoch s of the first anomalous reading
    end_ts: int  # epoch s just after the last one (last timestamp + interval)


def _level(finite: np.ndarray) -> float:
    """The median of the positive readings (0.0 for a meter that never reads > 0)."""
    positive = finite[finite > 0]
    return float(np.median(positive)) if len(positive) else 0.0


def _mad_spread(x: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def slot_spreads(timestamps: np.ndarray, values: np.ndarray, interval_s: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(slot of each reading, 1.4826 * MAD per slot, median per slot); slots of the day.

    A slot is a time of day, (timestamp mod 1 day) // interval; arrays per slot are indexed by
    slot number. A slot with fewer than 3 finite readings takes the spread and median of all
    finite readings (a series shorter than 3 days has only such slots).
    """
    ts = np.asarray(timestamps, dtype=np.int64)
    slot = (ts % DAY_S) // max(1, int(interval_s))
    n_slots = int(slot.max()) + 1 if len(slot) else 0
    spread, median = np.zeros(n_slots), np.zeros(n_slots)
    ok = np.isfinite(values)
    v_all = values[ok]
    whole = (_mad_spread(v_all), float(np.median(v_all))) if len(v_all) else (0.0, 0.0)
    for k in range(n_slots):
        x = values[(slot == k) & ok]
        spread[k], median[k] = (_mad_spread(x), float(np.median(x))) if len(x) >= 3 else whole
    return slot, spread, median


def reading_units(series: MeterSeries) -> np.ndarray:
    """The size unit at each reading: the robust spread of its time-of-day slot, floored at
    UNIT_FLOOR (5 %) of the meter's median positive reading and of the slot's median reading
    (1.0 everywhere for a meter that never reads > 0)."""
    finite = series.values[np.isfinite(series.values)]
    level = _level(finite)
    if level <= 0:
        return np.ones(len(series))
    slot, spread, median = slot_spreads(series.timestamps, series.values, series.interval_s)
    unit = np.maximum(spread, UNIT_FLOOR * np.maximum(median, 0.0))
    return np.maximum(unit, UNIT_FLOOR * level)[slot]


def injection_unit(series: MeterSeries, start: int = 0, length: int | None = None) -> float:
    """The size unit of an event over readings [start, start+length) (default: the whole series):
    the mean over its readings of `reading_units`, i.e. the floored spread of the time-of-day
    slots it covers."""
    units = reading_units(series)
    stop = len(units) if length is None else start + length
    return float(np.mean(units[start:stop])) if stop > start else 1.0


def _length(kind: str, interval_s: int, rng: np.random.Generator) -> int:
    if kind in CALENDAR_KINDS:
        return DAY_S // interval_s
    if kind in _READINGS:
        lo, hi = _READINGS[kind]
        return int(rng.integers(lo, hi + 1))
    lo, hi = _DURATION_S[kind]
    return max(1, round(rng.uniform(lo, hi) / interval_s))


def _event(series: MeterSeries, kind: str, start: int, end: int) -> AnomalyEvent:
    return AnomalyEvent(kind, start, end, series.meter_id, int(series.timestamps[start]),
                        int(series.timestamps[end - 1]) + series.interval_s)


def _weekday(ts) -> np.ndarray:
    """0 = Monday ... 6 = Sunday, of UTC epoch seconds (1970-01-01 was a Thursday)."""
    return (np.asarray(ts, dtype=np.int64) // DAY_S + 3) % 7


def _sunday_source(timestamps: np.ndarray, interval_s: int, start: int, length: int) -> int:
    """Index of the reading on the nearest preceding Sunday at the time of day of `start`, for a
    segment that lies within one weekday (Monday to Friday); InputError otherwise."""
    if interval_s <= 0 or DAY_S % interval_s:
        raise InputError(f"weekday_as_sunday needs an interval dividing a day, got {interval_s} s")
    ts = timestamps[start:start + length]
    days = ts // DAY_S
    if days[0] != days[-1] or _weekday(ts[0]) > 4:
        raise InputError("weekday_as_sunday must lie within one weekday (Monday to Friday)")
    back = int(_weekday(ts[0])) + 1  # days since the Sunday before
    src = start - back * (DAY_S // interval_s)
    if src < 0 or timestamps[src] != ts[0] - back * DAY_S:
        raise InputError("weekday_as_sunday needs the preceding Sunday's readings in the series")
    return src


def _apply(kind: str, values: np.ndarray, start: int, length: int, rng: np.random.Generator,
           magnitude: float, unit: float, interval_s: int,
           timestamps: np.ndarray | None = None) -> None:
    """Private kernel: change values[start:start+length] in place, and nothing else."""
    seg = slice(start, start + length)
    before = values[seg].copy()
    sign = 1.0 if rng.random() < 0.5 else -1.0
    if kind == "spike":
        values[seg] += rng.uniform(3.0, 6.0, length) * unit * magnitude
    elif kind == "dip":
        values[seg] *= max(0.0, 1.0 - (1.0 - rng.uniform(0.1, 0.4)) * magnitude)
    elif kind == "level_shift":
        values[seg] += sign * rng.uniform(1.0, 2.0) * unit * magnitude
    elif kind == "stuck":
        values[seg] = values[start - 1] if start > 0 else values[start]
        return  # a frozen real reading, whatever it is: no floor
    elif kind == "dropout":
        values[seg] = 0.0
        return
    elif kind == "time_shift":
        lag = max(1, round(rng.uniform(3, 8) * 3600 / interval_s))
        after = len(values) - start - length
        if start >= min(lag, after) and start >= 1:  # the meter shows what it read `lag` ago
            lag = min(lag, start)
            values[seg] = values[start - lag:start - lag + length].copy()
        else:  # too close to the start for a delay: the day runs early instead
            lag = min(lag, after)
            values[seg] = values[start + lag:start + lag + length].copy()
    elif kind == "noise_burst":
        values[seg] += rng.normal(0.0, rng.uniform(0.5, 1.5) * unit * magnitude, length)
    elif kind == "drift":
        ramp = np.linspace(0.0, 1.0, length + 1)[1:]
        values[seg] += sign * rng.uniform(1.0, 3.0) * unit * magnitude * ramp
    elif kind == "weekday_as_sunday":
        if timestamps is None:
            raise InputError("weekday_as_sunday needs the series' timestamps")
        src = _sunday_source(timestamps, interval_s, start, length)
        values[seg] = values[src:src + length].copy()
    else:
        raise InputError(f"unknown anomaly kind {kind!r}; known: {', '.join(INJECTABLE_KINDS)}")
    # Never an exact zero (a dropout's signature) where the meter read something, never < 0.
    floor = FLOOR_SHARE * np.maximum(before, 0.0)
    if kind in _COPIES:  # real readings from elsewhere stay exact; only a copied zero is lifted
        values[seg] = np.where(values[seg] <= 0.0, floor, values[seg])
    else:
        np.maximum(values[seg], floor, out=values[seg])


def inject_one(series: MeterSeries, kind: str, start: int, length: int,
               rng: np.random.Generator, magnitude: float = 1.0
               ) -> tuple[MeterSeries, AnomalyEvent]:
    """A new series with one `kind` anomaly over readings [start, start+length), labelled 1."""
    n = len(series)
    if kind not in INJECTABLE_KINDS:
        raise InputError(f"unknown anomaly kind {kind!r}; known: {', '.join(INJECTABLE_KINDS)}")
    if length < 1 or start < 0 or start + length > n:
        raise InputError(f"anomaly [{start}, {start + length}) does not fit {n} readings")
    if kind == "time_shift" and n < length + 2:
        raise InputError(f"time_shift of {length} readings needs a longer series than {n}")
    values = series.values.copy()
    _apply(kind, values, start, length, rng, magnitude,
           injection_unit(series, start, length), series.interval_s, series.timestamps)
    labels = np.zeros(n, np.int8) if series.labels is None else series.labels.copy()
    labels[start:start + length] = 1
    out = replace(series, values=values, labels=labels, repairs=list(series.repairs))
    return out, _event(series, kind, start, start + length)


def _rooms(n: int, taken: list[tuple[int, int]], length: int, warmup: int, min_gap: int
           ) -> list[tuple[int, int]]:
    """(first start, number of starts) of each free stretch that holds `length` readings."""
    bounds, lo = [], warmup
    for a, b in sorted(taken):
        bounds.append((lo, a - min_gap))
        lo = max(lo, b + min_gap)
    bounds.append((lo, n))
    return [(a, b - length - a + 1) for a, b in bounds if b - a >= length]


def _free_slot(n: int, taken: list[tuple[int, int]], length: int, warmup: int, min_gap: int,
               rng: np.random.Generator, allowed: np.ndarray | None = None) -> int | None:
    """A uniformly random start among all positions that respect warmup, min_gap, overlap
    (and, when given, among the `allowed` starts only)."""
    room = _rooms(n, taken, length, warmup, min_gap)
    if allowed is not None:
        fits = np.zeros(len(allowed), bool)
        for a, r in room:
            fits |= (allowed >= a) & (allowed < a + r)
        choices = allowed[fits]
        return int(choices[rng.integers(0, len(choices))]) if len(choices) else None
    if not room:
        return None
    weights = np.array([r for _, r in room], dtype=np.float64)
    a, r = room[int(rng.choice(len(room), p=weights / weights.sum()))]
    return a + int(rng.integers(0, r))


def _swap_starts(series: MeterSeries) -> np.ndarray:
    """First readings of the whole weekdays whose preceding Sunday is in the series."""
    if series.interval_s <= 0 or DAY_S % series.interval_s:
        return np.zeros(0, np.int64)
    per_day = DAY_S // series.interval_s
    ts, n = series.timestamps, len(series)
    idx = np.flatnonzero((ts % DAY_S == 0) & (_weekday(ts) <= 4))
    src = idx - (_weekday(ts[idx]) + 1) * per_day
    ok = (src >= 0) & (idx + per_day <= n)
    idx, src = idx[ok], src[ok]
    # a regular grid: the Sunday is exactly `back` days earlier and the day is whole
    ok = (ts[src] == ts[idx] - (idx - src) // per_day * DAY_S) & (
        ts[idx + per_day - 1] == ts[idx] + DAY_S - series.interval_s)
    return idx[ok]


def inject(series: MeterSeries, *, count: int, kinds=ANOMALY_KINDS, seed: int,
           magnitude: float = 1.0, min_gap: int = 96 * 2, warmup: int = 96 * 7
           ) -> tuple[MeterSeries, list[AnomalyEvent]]:
    """A new series with `count` labelled anomalies of the given kinds; the input is untouched.

    `kinds` may name any of INJECTABLE_KINDS; the default is ANOMALY_KINDS (no calendar kind).
    Deterministic for a seed. Raises InputError when the events cannot all be placed.
    """
    kinds = tuple(kinds)
    if not kinds or any(k not in INJECTABLE_KINDS for k in kinds):
        raise InputError(f"anomaly kinds must be among {', '.join(INJECTABLE_KINDS)}, "
                         f"got {kinds}")
    if count < 0 or min_gap < 0 or warmup < 0 or not magnitude > 0:
        raise InputError("count, min_gap and warmup must be >= 0 and magnitude > 0")
    rng = np.random.default_rng(seed)
    n, units = len(series), reading_units(series)
    values = series.values.copy()
    labels = np.zeros(n, np.int8) if series.labels is None else series.labels.copy()
    events: list[AnomalyEvent] = []
    swap_starts = _swap_starts(series) if "weekday_as_sunday" in kinds else None
    for kind in rng.choice(np.array(kinds), size=count):
        kind = str(kind)
        taken = [(e.start, e.end) for e in events]
        if kind in CALENDAR_KINDS:
            length = _length(kind, series.interval_s, rng)
            start = _free_slot(n, taken, length, warmup, min_gap, rng, allowed=swap_starts)
        else:
            length = min(_length(kind, series.interval_s, rng), max(1, n // 4))
            start = _free_slot(n, taken, length, warmup, min_gap, rng)
        if start is None:
            raise InputError(f"cannot place {count} anomalies in {n} readings of meter "
                             f"{series.meter_id!r} (warmup {warmup}, min gap {min_gap}); "
                             "ask for fewer")
        # time_shift and the swap copy readings from outside the event: take the original ones.
        source = series.values if kind in _COPIES else values
        segment = source.copy()
        unit = float(np.mean(units[start:start + length]))  # the spread where the event lies
        _apply(kind, segment, start, length, rng, magnitude, unit, series.interval_s,
               series.timestamps)
        values[start:start + length] = segment[start:start + length]
        labels[start:start + length] = 1
        events.append(_event(series, kind, start, start + length))
    events.sort(key=lambda e: e.start)
    out = replace(series, values=values, labels=labels, repairs=list(series.repairs))
    return out, events


def with_slow_drift(series: MeterSeries, share: float = 0.3, *, start: int = 0) -> MeterSeries:
    """A new series whose level drifts slowly up by `share` (+30 % by default): readings from
    `start` on are multiplied by 1 + share * ramp, the ramp rising linearly from 0 at `start` to 1
    at the last reading. Readings before `start`, and the labels, are unchanged: this is the
    normal slow change of a meter, not an anomaly (a detector should not alert on it)."""
    n = len(series)
    if not np.isfinite(share) or share <= -1.0:
        raise InputError(f"drift share must be finite and > -1, got {share}")
    if not 0 <= start < n:
        raise InputError(f"drift start {start} is outside the {n} readings")
    factor = np.ones(n)
    factor[start:] += share * np.linspace(0.0, 1.0, n - start) if n - start > 1 else share
    labels = None if series.labels is None else series.labels.copy()
    return replace(series, values=series.values * factor, labels=labels,
                   repairs=list(series.repairs))
