"""Labelled anomaly injection, for simulated meters and for real ones (the steel plant).

Real industrial data comes without anomaly labels, so we plant known faults and measure whether
the detector finds them. Sizes are relative to the series' own robust scale

    scale = max(IQR(values) / 1.349, std(values) / 2)   (mean, then 1 as fallbacks)

IQR / 1.349 is the std of a normal with that IQR and ignores outliers; the std / 2 floor keeps
the scale meaningful on meters that idle most of the time (a pump) and whose IQR is tiny.

so that one magnitude means the same thing on a 3 kWh office meter and a 150 kWh furnace.
Lengths are in wall-clock time and converted to readings with the series' interval. `magnitude`
multiplies every size (1.0 = the sizes below).

    spike        1-3 readings raised by 3-6 scales (a metering glitch or a short surge)
    dip          1-4 readings cut to 10-40 % of their value (a brief trip)
    level_shift  1-2 days offset by +-(1-2) scales (a new load, a CT ratio change)
    stuck        2-8 hours frozen at the last reading before the event (a hung meter)
    dropout      1-6 hours of zeros (communication or meter loss)
    time_shift   1 day showing the daily pattern 3-8 hours late (clock / schedule error)
    noise_burst  2-8 hours of extra Gaussian noise of 0.5-1.5 scales (a loose contact)
    drift        2-5 days of a linear ramp to +-(1-3) scales, then back (sensor drift)

Values are clipped at 0 (energy per interval cannot be negative). Events never overlap, stay out
of the first `warmup` readings (the detector needs history) and keep `min_gap` readings apart.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from stream_app.errors import InputError
from stream_app.series_io import MeterSeries

ANOMALY_KINDS: tuple[str, ...] = ("spike", "dip", "level_shift", "stuck", "dropout",
                                  "time_shift", "noise_burst", "drift")

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


@dataclass(frozen=True)
class AnomalyEvent:
    """One injected anomaly: readings [start, end) of one meter, and their time span."""

    kind: str
    start: int
    end: int  # exclusive
    meter_id: str
    start_ts: int  # epoch s of the first anomalous reading
    end_ts: int  # epoch s just after the last one (last timestamp + interval)


def robust_scale(values: np.ndarray) -> float:
    """max(IQR / 1.349, std / 2); falls back to the mean, then 1.0 for flat or empty series."""
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return 1.0
    q25, q75 = np.percentile(finite, [25, 75])
    for candidate in (max((q75 - q25) / 1.349, finite.std() / 2), abs(finite.mean())):
        if candidate > 0:
            return float(candidate)
    return 1.0


def _length(kind: str, interval_s: int, rng: np.random.Generator) -> int:
    if kind in _READINGS:
        lo, hi = _READINGS[kind]
        return int(rng.integers(lo, hi + 1))
    lo, hi = _DURATION_S[kind]
    return max(1, round(rng.uniform(lo, hi) / interval_s))


def _event(series: MeterSeries, kind: str, start: int, end: int) -> AnomalyEvent:
    return AnomalyEvent(kind, start, end, series.meter_id, int(series.timestamps[start]),
                        int(series.timestamps[end - 1]) + series.interval_s)


def _apply(kind: str, values: np.ndarray, start: int, length: int, rng: np.random.Generator,
           magnitude: float, scale: float, interval_s: int) -> None:
    """Private kernel: change values[start:start+length] in place, and nothing else."""
    seg = slice(start, start + length)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    if kind == "spike":
        values[seg] += rng.uniform(3.0, 6.0, length) * scale * magnitude
    elif kind == "dip":
        values[seg] *= max(0.0, 1.0 - (1.0 - rng.uniform(0.1, 0.4)) * magnitude)
    elif kind == "level_shift":
        values[seg] += sign * rng.uniform(1.0, 2.0) * scale * magnitude
    elif kind == "stuck":
        values[seg] = values[start - 1] if start > 0 else values[start]
    elif kind == "dropout":
        values[seg] = 0.0
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
        values[seg] += rng.normal(0.0, rng.uniform(0.5, 1.5) * scale * magnitude, length)
    elif kind == "drift":
        ramp = np.linspace(0.0, 1.0, length + 1)[1:]
        values[seg] += sign * rng.uniform(1.0, 3.0) * scale * magnitude * ramp
    else:
        raise InputError(f"unknown anomaly kind {kind!r}; known: {', '.join(ANOMALY_KINDS)}")
    np.maximum(values[seg], 0.0, out=values[seg])


def inject_one(series: MeterSeries, kind: str, start: int, length: int,
               rng: np.random.Generator, magnitude: float = 1.0
               ) -> tuple[MeterSeries, AnomalyEvent]:
    """A new series with one `kind` anomaly over readings [start, start+length), labelled 1."""
    n = len(series)
    if kind not in ANOMALY_KINDS:
        raise InputError(f"unknown anomaly kind {kind!r}; known: {', '.join(ANOMALY_KINDS)}")
    if length < 1 or start < 0 or start + length > n:
        raise InputError(f"anomaly [{start}, {start + length}) does not fit {n} readings")
    if kind == "time_shift" and n < length + 2:
        raise InputError(f"time_shift of {length} readings needs a longer series than {n}")
    values = series.values.copy()
    _apply(kind, values, start, length, rng, magnitude, robust_scale(series.values),
           series.interval_s)
    labels = np.zeros(n, np.int8) if series.labels is None else series.labels.copy()
    labels[start:start + length] = 1
    out = replace(series, values=values, labels=labels, repairs=list(series.repairs))
    return out, _event(series, kind, start, start + length)


def _free_slot(n: int, taken: list[tuple[int, int]], length: int, warmup: int, min_gap: int,
               rng: np.random.Generator) -> int | None:
    """A uniformly random start among all positions that respect warmup, min_gap, overlap."""
    bounds, lo = [], warmup
    for a, b in sorted(taken):
        bounds.append((lo, a - min_gap))
        lo = max(lo, b + min_gap)
    bounds.append((lo, n))
    room = [(a, b - length - a + 1) for a, b in bounds if b - a >= length]
    if not room:
        return None
    weights = np.array([r for _, r in room], dtype=np.float64)
    a, r = room[int(rng.choice(len(room), p=weights / weights.sum()))]
    return a + int(rng.integers(0, r))


def inject(series: MeterSeries, *, count: int, kinds=ANOMALY_KINDS, seed: int,
           magnitude: float = 1.0, min_gap: int = 96 * 2, warmup: int = 96 * 7
           ) -> tuple[MeterSeries, list[AnomalyEvent]]:
    """A new series with `count` labelled anomalies of the given kinds; the input is untouched.

    Deterministic for a seed. Raises InputError when the events cannot all be placed.
    """
    kinds = tuple(kinds)
    if not kinds or any(k not in ANOMALY_KINDS for k in kinds):
        raise InputError(f"anomaly kinds must be among {', '.join(ANOMALY_KINDS)}, got {kinds}")
    if count < 0 or min_gap < 0 or warmup < 0 or not magnitude > 0:
        raise InputError("count, min_gap and warmup must be >= 0 and magnitude > 0")
    rng = np.random.default_rng(seed)
    n, scale = len(series), robust_scale(series.values)
    values = series.values.copy()
    labels = np.zeros(n, np.int8) if series.labels is None else series.labels.copy()
    events: list[AnomalyEvent] = []
    for kind in rng.choice(np.array(kinds), size=count):
        kind = str(kind)
        length = min(_length(kind, series.interval_s, rng), max(1, n // 4))
        start = _free_slot(n, [(e.start, e.end) for e in events], length, warmup, min_gap, rng)
        if start is None:
            raise InputError(f"cannot place {count} anomalies in {n} readings of meter "
                             f"{series.meter_id!r} (warmup {warmup}, min gap {min_gap}); "
                             "ask for fewer")
        # time_shift copies readings from outside the event: take them from the original.
        source = series.values if kind == "time_shift" else values
        segment = source.copy()
        _apply(kind, segment, start, length, rng, magnitude, scale, series.interval_s)
        values[start:start + length] = segment[start:start + length]
        labels[start:start + length] = 1
        events.append(_event(series, kind, start, start + length))
    events.sort(key=lambda e: e.start)
    out = replace(series, values=values, labels=labels, repairs=list(series.repairs))
    return out, events
