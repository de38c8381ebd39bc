"""Silent meters: a meter that stops reporting raises an alert; its next reading resolves it.

Scoring only runs when readings arrive, so a meter that goes dark (broken modem, tripped
breaker, cut cable) would otherwise never raise anything. The rule: a meter whose last reading
*arrived* more than `factor` x its interval ago (wall clock, not stream time, so a meter that
stops for good is noticed even when no later reading ever moves stream time on) is silent.

`SilenceTracker` is pure logic over a clock you pass in (tests use a fake one); the worker
(app.py) calls `seen` for every reading it processes and `check` from a wall-clock timer.
Its state lives in memory only: after a rebalance the new owner of a partition starts timing a
meter at its first reading of that meter, and the old owner forgets the meters it lost
(`forget`), so neither raises a silence caused by the move itself.

The alert id is `alert_id(bundle, meter, last reading ts ms, 0, kind="meter_silent")`: stable
for one silence (the same last reading) across redelivery and replay.
"""

from __future__ import annotations

from dataclasses import dataclass

from stream_app.core.alerts import Alert, alert_id
from stream_app.core.errors import ConfigError
from stream_app.core.records import ms_to_iso

DEFAULT_SILENCE_FACTOR = 4.0  # four missed readings: one late or lost reading is not an outage


@dataclass(frozen=True, slots=True)
class SilenceEvent:
    """A meter went silent ("open") or reports again ("resolved")."""

    status: str
    last_ts_ms: int  # stream time of the last reading before the silence
    interval_s: float
    silent_s: float  # wall-clock seconds without a reading when the event was decided
    factor: float = DEFAULT_SILENCE_FACTOR
    category: str = "industrial"
    site: str | None = None
    company: str | None = None


@dataclass(slots=True)
class _Meter:
    arrival_s: float
    interval_s: float
    ts_ms: int
    category: str
    site: str | None
    company: str | None
    silent: bool = False


class SilenceTracker:
    """Wall-clock silence per meter. `seen` per reading, `check` periodically."""

    def __init__(self, factor: float = DEFAULT_SILENCE_FACTOR):
        if not factor >= 1.0:
            raise ConfigError(f"silence factor must be >= 1 (x the meter's interval), got {factor}")
        self.factor = float(factor)
        self._meters: dict[str, _Meter] = {}

    def __len__(self) -> int:
        return len(self._meters)

    def seen(self, meter: str, arrival_wall_s: float, interval_s: float, *, ts_ms: int = 0,
             category: str = "industrial", site: str | None = None,
             company: str | None = None) -> SilenceEvent | None:
        """Record a reading's arrival; the "resolved" event when the meter was silent."""
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        old = self._meters.get(meter)
        self._meters[meter] = _Meter(arrival_wall_s, float(interval_s), int(ts_ms), category,
                                     site, company)
        if old is None or not old.silent:
            return None
        return SilenceEvent("resolved", old.ts_ms, old.interval_s,
                            max(0.0, arrival_wall_s - old.arrival_s), self.factor, old.category,
                            old.site, old.company)

    def check(self, now_wall_s: float) -> list[tuple[str, SilenceEvent]]:
        """Meters that just became silent (each silence is reported once), sorted by meter."""
        out = []
        for meter in sorted(self._meters):
            m = self._meters[meter]
            quiet = now_wall_s - m.arrival_s
            if not m.silent and quiet > self.factor * m.interval_s:
                m.silent = True
                out.append((meter, SilenceEvent("open", m.ts_ms, m.interval_s, quiet,
                                                self.factor, m.category, m.site, m.company)))
        return out

    def forget(self, meters) -> None:
        """Stop timing these meters (their partition moved to another worker)."""
        for meter in meters:
            self._meters.pop(meter, None)

    def silent_meters(self) -> list[str]:
        return sorted(m for m, s in self._meters.items() if s.silent)


def silence_alert(meter: str, event: SilenceEvent, *, bundle_version: str,
                  produced_ms: int) -> Alert:
    """The alert message of a silence event (kind "meter_silent", same id open -> resolved).

    zscore / threshold carry the rule: silent time in intervals / the factor it crossed;
    window_size and readings_flagged count the missed readings (the schema wants >= 1).
    """
    ratio = event.silent_s / event.interval_s
    missed = int(ratio)
    end_ms = event.last_ts_ms + int(missed * event.interval_s * 1000)
    if event.status == "open":
        reason = (f"no reading for {event.silent_s:.0f} s ({ratio:.1f} x the {event.interval_s:g} s"
                  f" interval, limit {event.factor:g} x); last reading "
                  f"{ms_to_iso(event.last_ts_ms)}")
    else:
        reason = f"reporting again after {event.silent_s:.0f} s of silence"
    return Alert(
        alert_id=alert_id(bundle_version, meter, event.last_ts_ms, 0, kind="meter_silent"),
        status=event.status, kind="meter_silent", meter_id=meter, category=event.category,
        site=event.site, company=event.company, window_start=ms_to_iso(event.last_ts_ms),
        window_end=ms_to_iso(end_ms), window_size=missed, model="",
        bundle_version=bundle_version, dtw_error={}, if_score=0.0, zscore=round(ratio, 3),
        threshold=event.factor,
        severity="medium", expected=(), actual=(), reason=reason,
        first_seen=ms_to_iso(event.last_ts_ms), last_seen=ms_to_iso(end_ms),
        readings_flagged=max(1, missed), produced_at=ms_to_iso(produced_ms),
    )
