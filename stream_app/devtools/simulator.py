"""Seeded simulator of realistic 15-minute industrial meters, driven by an industry profile.

Everything industry-specific comes from the profile's `simulator` section (see
`stream_app.core.profiles`): hourly level codes for weekdays and weekends (the steel plant's
light/medium/maximum load classes, office hours, the 23:00-07:00 off-peak tariff, irrigation
hours), weekend factor, monthly season, refrigeration compressor cycles, intermittent pumps and
the slow wander of a continuous process. The code only knows these generic mechanisms.

Reading = base_kwh * meter scale * level(hour, weekday) * weekend factor * season(month)
          * day factor * cycle * wander * (1 + noise * N(0, 1)),  clipped at 0, rounded to Wh.

Meters cycle through the profile's categories (industrial, general, late_night, agricultural),
so four or more meters cover every category; each meter has its own log-normal scale and its
own random stream derived from (seed, meter index), so meter k is the same whatever `meters` is.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import cast

import numpy as np

from stream_app.core.errors import InputError
from stream_app.core.profiles import Profile, load_profile
from stream_app.core.series import MeterSeries
from stream_app.core.timestamps import format_timestamp
from stream_app.devtools.anomalies import ANOMALY_KINDS, AnomalyEvent, inject
from stream_app.io.series_io import write_rows_csv

CSV_HEADER = ["timestamp", "meter_id", "category", "value", "label", "anomaly_kind"]
DAY_S = 86400


def _calendar(timestamps: np.ndarray):
    """Hour of day, weekend flag, day index, month (0-11) of each UTC timestamp."""
    days = timestamps // DAY_S
    hour = (timestamps % DAY_S) // 3600
    weekend = ((days + 3) % 7) >= 5  # 1970-01-01 was a Thursday; Monday = 0
    month = timestamps.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64) % 12
    return hour, weekend, days - days[0], month


def _cycle(n: int, interval_s: int, cfg: Mapping, rng: np.random.Generator) -> np.ndarray:
    """Compressor on/off square wave averaged over each interval; mean 1 by construction."""
    minutes_per = max(1, interval_s // 60)
    period = cfg["period_min"] * rng.uniform(0.9, 1.1)
    minute = np.arange(n * minutes_per) + rng.uniform(0, period)
    on = ((minute % period) < cfg["duty"] * period).reshape(n, minutes_per).mean(axis=1)
    return (1.0 - cfg["amplitude"]) + cfg["amplitude"] * on / cfg["duty"]


def _intermittent(hour, day, month, pattern, cfg, season, rng) -> np.ndarray:
    """On/off mask of a pump: some days, one run of a few hours inside its preferred hours."""
    n_days = int(day[-1]) + 1
    preferred = np.flatnonzero(pattern > cfg["idle"])
    if len(preferred) == 0:
        return np.zeros(len(hour))
    peak = max(season) if season and max(season) > 0 else 1.0
    run_start = np.full(n_days, -1.0)
    run_end = np.full(n_days, -1.0)
    first_of_day = np.searchsorted(day, np.arange(n_days))
    for d in range(n_days):
        p = cfg["day_prob"] * (season[month[first_of_day[d]]] / peak if season else 1.0)
        duration = rng.uniform(cfg["min_hours"], cfg["max_hours"])
        begin = float(rng.choice(preferred))
        if rng.random() < p:
            run_start[d], run_end[d] = begin, begin + duration
    return ((hour >= run_start[day]) & (hour < run_end[day])).astype(np.float64)


def _meter_values(cfg: Mapping, timestamps: np.ndarray, interval_s: int, scale: float,
                  rng: np.random.Generator) -> np.ndarray:
    n = len(timestamps)
    hour, weekend, day, month = _calendar(timestamps)
    codes = cfg["levels"]
    weekday_levels = np.array([codes[c] for c in cfg["weekday"]])
    weekend_levels = np.array([codes[c] for c in cfg["weekend"]]) * cfg["weekend_factor"]
    level = np.where(weekend, weekend_levels[hour], weekday_levels[hour])
    if cfg["intermittent"] is not None:
        itm = cfg["intermittent"]
        on = _intermittent(hour, day, month, weekday_levels, itm, cfg["season"], rng)
        level = itm["idle"] + (level - itm["idle"]) * on
    if cfg["season"] is not None and cfg["intermittent"] is None:
        level = level * np.asarray(cfg["season"])[month]
    day_factor = np.exp(rng.normal(0.0, cfg["day_variation"], int(day[-1]) + 1))[day]
    level = level * day_factor
    if cfg["cycle"] is not None:
        level = level * _cycle(n, interval_s, cfg["cycle"], rng)
    if cfg["wander"] > 0:
        level = level * np.exp(_ar1(n, cfg["wander"], rng))
    noisy = cfg["base_kwh"] * scale * level * (1.0 + cfg["noise"] * rng.standard_normal(n))
    return np.round(np.maximum(noisy, 0.0), 3)


def _ar1(n: int, sigma: float, rng: np.random.Generator, phi: float = 0.995) -> np.ndarray:
    """Slow mean-reverting wander (time constant ~ 1/(1-phi) = 200 readings, about 2 days)."""
    shocks = rng.normal(0.0, sigma, n)
    out = np.empty(n)
    acc = 0.0
    for i in range(n):
        acc = phi * acc + shocks[i]
        out[i] = acc
    return out


def simulate_with_events(
    profile: str | Profile, meters: int, days: int, *, seed: int = 0,
    start: str = "2025-01-06T00:00:00+00:00", interval_s: int = 900,
    anomalies_per_meter: float = 0.0, kinds=None,
) -> tuple[list[MeterSeries], list[AnomalyEvent]]:
    """Like `simulate`, also returning the injected events (sorted by meter, then start)."""
    prof = load_profile(profile) if isinstance(profile, str) else profile
    if meters < 1 or days < 1:
        raise InputError(f"meters and days must be >= 1, got {meters} and {days}")
    if interval_s < 60 or interval_s % 60 or DAY_S % interval_s:
        raise InputError(f"interval must be whole minutes dividing a day, got {interval_s} s")
    if anomalies_per_meter < 0:
        raise InputError(f"anomalies per meter must be >= 0, got {anomalies_per_meter}")
    t0 = _parse_start(start)
    per_day = DAY_S // interval_s
    timestamps = t0 + interval_s * np.arange(days * per_day, dtype=np.int64)
    sim, cats = prof.simulator, prof.categories
    series, events = [], []
    for i in range(meters):
        rng = np.random.default_rng([seed, i])
        category = cats[i % len(cats)]
        scale = float(np.exp(rng.normal(0.0, sim["scale_spread"])))
        values = _meter_values(sim["categories"][category], timestamps, interval_s, scale, rng)
        s = MeterSeries(f"{prof.name}-{i + 1:03d}", category, timestamps.copy(), values,
                        interval_s, np.zeros(len(values), np.int8), [])
        count = int(anomalies_per_meter) + int(rng.random() < anomalies_per_meter % 1)
        if count:
            # One week of history first, or a fifth of a shorter simulation.
            warmup = min(7 * per_day, len(values) // 5)
            s, evs = inject(s, count=count, kinds=kinds or ANOMALY_KINDS,
                            seed=int(rng.integers(2**31)), warmup=warmup,
                            min_gap=min(2 * per_day, len(values) // 20))
            events.extend(evs)
        series.append(s)
    return series, events


def simulate(
    profile: str | Profile, meters: int, days: int, *, seed: int = 0,
    start: str = "2025-01-06T00:00:00+00:00", interval_s: int = 900,
    anomalies_per_meter: float = 0.0, kinds=None,
) -> list[MeterSeries]:
    """`meters` labelled meter series of `days` days; deterministic for a seed.

    Labels are 0 except over injected anomalies (`anomalies_per_meter` on average, the
    fraction drawn per meter, kinds from `kinds` or all of ANOMALY_KINDS).
    """
    return simulate_with_events(profile, meters, days, seed=seed, start=start,
                                interval_s=interval_s, anomalies_per_meter=anomalies_per_meter,
                                kinds=kinds)[0]


def simulate_to_csv(path, profile: str | Profile, meters: int, days: int, **options
                    ) -> tuple[list[MeterSeries], list[AnomalyEvent]]:
    """Simulate and write timestamp,meter_id,category,value,label,anomaly_kind, time-ordered.

    `anomaly_kind` names the injected kind on anomalous readings and is empty elsewhere;
    `read_meter_csv` reads the file back. Options are those of `simulate`.
    """
    series, events = simulate_with_events(profile, meters, days, **options)
    kind_at = [np.full(len(s), "", dtype=object) for s in series]
    index = {s.meter_id: k for k, s in enumerate(series)}
    for e in events:
        kind_at[index[e.meter_id]][e.start:e.end] = e.kind
    stamps = [format_timestamp(t) for t in series[0].timestamps]
    labels = [cast(np.ndarray, s.labels) for s in series]  # simulated series are all labelled
    rows = (
        (stamps[j], s.meter_id, s.category, float(s.values[j]), int(labels[k][j]), kind_at[k][j])
        for j in range(len(stamps))
        for k, s in enumerate(series)
    )
    write_rows_csv(path, CSV_HEADER, rows)
    return series, events


def _parse_start(start: str) -> int:
    try:
        moment = datetime.fromisoformat(start)
    except ValueError:
        raise InputError(f"cannot parse start {start!r}: expected ISO-8601 like "
                         "2025-01-06T00:00:00+00:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())
