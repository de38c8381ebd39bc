"""Alerts people can act on, and their lifecycle: open -> update ... -> resolved, one id per episode.

Scoring flags readings; a flag per reading would page someone every 15 minutes for one incident.
`AlertTracker` turns the flags of each meter into episodes (state diagram in docs/EVENTS.md):

- the first flagged reading opens an episode and emits `open`;
- further flagged readings emit `update` every `update_every` flags, or at once when the severity
  climbs above the highest already sent;
- `cooldown` consecutive unflagged readings close it with `resolved`, same alert_id; a flag
  during the cooldown continues the episode (no new id).

Decisions depend only on the inputs (reading timestamps, flags, details), never on the wall
clock, and the state is a small JSON-able dict per meter (kept in a Faust table beside the meter's
window): replaying a series gives the same alerts with the same ids. The stream is at-least-once,
so consumers de-duplicate on (alert_id, status, last_seen).

alert_id = first 24 hex chars (96 bits) of sha256("bundle_version|kind|meter_id|opening reading
ts ms|window size"): stable under replay and redelivery, different for another model bundle, and
96 bits keep collisions out of reach for any number of alerts a fleet could produce.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import orjson

from stream_app.core.errors import ConfigError
from stream_app.core.records import DEFAULT_INTERVAL_S, ms_to_iso

ALERT_SCHEMA = "meterwatch.alert/1"
STATUSES = ("open", "update", "resolved")
KINDS = ("anomaly", "gap", "meter_silent")  # the detector, a gap in a meter's readings, a silent meter
SEVERITIES = ("low", "medium", "high", "critical")
# Upper bounds of z / limit per band: just over the limit is "low"; twice the limit is far out in
# the tail of the normal score distribution ("high"); 2.5x and beyond is "critical".
SEVERITY_BANDS = ((1.25, "low"), (1.6, "medium"), (2.5, "high"))
DEFAULT_MODEL = "cnn_gru+lstm"
_STATE_VERSION = 1


def severity(zscore: float, threshold: float) -> str:
    """Band of z / limit (SEVERITY_BANDS). A NaN ratio counts as critical: never hide it."""
    ratio = zscore / threshold if threshold > 0 else math.inf
    for upper, name in SEVERITY_BANDS:
        if ratio < upper:
            return name
    return "critical"


def alert_id(bundle_version: str, meter_id: str, opened_ts_ms: int, window_size: int,
             kind: str = "anomaly") -> str:
    """Stable id of an episode (module docstring says why these inputs)."""
    text = f"{bundle_version}|{kind}|{meter_id}|{int(opened_ts_ms)}|{int(window_size)}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class Detection:
    """What scoring says about one flagged reading: the window that crossed its limit."""

    category: str
    window_size: int
    model: str  # the autoencoder whose window scored worst, e.g. "lstm"
    zscore: float
    threshold: float
    if_score: float
    dtw_error: Mapping[str, float] = field(default_factory=dict)  # "lstm@96" -> DTW error
    expected: tuple[float, ...] = ()  # reconstruction of the window, in kWh
    actual: tuple[float, ...] = ()
    site: str | None = None
    company: str | None = None
    interval_s: int = DEFAULT_INTERVAL_S
    reason: str = ""
    latency_ms: float | None = None
    kind: str = "anomaly"  # or a data-fault kind: stuck, dropout, out_of_range
    lower: tuple[float, ...] = ()  # the time-of-week profile's 5-95 % band, kWh (when known)
    upper: tuple[float, ...] = ()

    def describe(self) -> str:
        return self.reason or (f"window {self.window_size} ({self.model}): z {self.zscore:.2f} "
                               f"over the {self.category} limit {self.threshold:.2f}")


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert message (docs/schemas/alert.schema.json). Times are ISO-8601 UTC."""

    alert_id: str
    status: str
    kind: str
    meter_id: str
    category: str
    site: str | None
    company: str | None
    window_start: str
    window_end: str
    window_size: int
    model: str
    bundle_version: str
    dtw_error: dict[str, float]
    if_score: float
    zscore: float
    threshold: float
    severity: str
    expected: tuple[float, ...]
    actual: tuple[float, ...]
    reason: str
    first_seen: str
    last_seen: str
    readings_flagged: int
    produced_at: str
    latency_ms: float | None = None
    lower: tuple[float, ...] = ()
    upper: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = {"schema": ALERT_SCHEMA, **asdict(self)}
        for name in ("expected", "actual", "lower", "upper"):
            data[name] = list(getattr(self, name))
        return data

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")

    @classmethod
    def from_rule(cls, kind: str, status: str, meter_id: str, *, opened_ms: int, start_ms: int,
                  end_ms: int, last_seen_ms: int, count: int, measure: tuple[float, float],
                  severity: str, reason: str, where: tuple[str, str | None, str | None],
                  bundle_version: str, produced_ms: int, **extra: Any) -> Alert:
        """An alert a rule raises, not the detector (a gap, a silent meter or group): no model,
        no reconstruction. Its id is the meter's and `opened_ms`'s (the reading or time that
        opened the episode); the episode is first seen at the window's start; `count` is its
        window size and readings flagged (the schema wants >= 1 of both); `measure`
        (value, limit) is what the rule compared; `where`: (category, site, company); `extra`:
        the fields of a subclass (GroupedSilenceAlert's `meters`)."""
        category, site, company = where
        return cls(alert_id=alert_id(bundle_version, meter_id, opened_ms, 0, kind=kind),
                   status=status, kind=kind, meter_id=meter_id, category=category, site=site,
                   company=company, window_start=ms_to_iso(start_ms),
                   window_end=ms_to_iso(end_ms), window_size=max(1, count), model="",
                   bundle_version=bundle_version, dtw_error={}, if_score=0.0,
                   zscore=measure[0], threshold=measure[1], severity=severity, expected=(),
                   actual=(), reason=reason, first_seen=ms_to_iso(start_ms),
                   last_seen=ms_to_iso(last_seen_ms), readings_flagged=max(1, count),
                   produced_at=ms_to_iso(produced_ms), **extra)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        """Inverse of to_dict; unknown fields are ignored (consumers tolerate additive change)."""
        names = {f.name for f in fields(cls)}
        kept = {k: v for k, v in data.items() if k in names}
        for name in ("expected", "actual", "lower", "upper"):
            kept[name] = tuple(kept.get(name, ()))
        return cls(**kept)


class AlertTracker:
    """Per-meter alert lifecycle. `observe` once per scored reading, in time order."""

    def __init__(self, *, bundle_version: str, model: str = DEFAULT_MODEL, update_every: int = 8,
                 cooldown: int = 4, meters: Mapping[str, Mapping[str, Any]] | None = None):
        if not bundle_version:
            raise ConfigError("bundle_version is required: it is part of every alert id")
        for name, value in (("update_every", update_every), ("cooldown", cooldown)):
            if type(value) is not int or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        self.bundle_version, self.model = bundle_version, model
        self.update_every, self.cooldown = update_every, cooldown
        self._meters: dict[str, dict[str, Any]] = {m: dict(s) for m, s in (meters or {}).items()}

    def observe(self, meter_id: str, ts: int, flagged: bool, details: Detection | None = None,
                *, produced_at_ms: int | None = None) -> Alert | None:
        """The alert this reading causes, if any. `ts`: reading time, epoch ms.

        A reading at or before the last one observed is ignored (redelivery after a restart).
        `produced_at_ms` is only recorded in the alert; it defaults to `ts` so replays match.
        """
        state = self._meters.setdefault(meter_id, {})
        if "last_ts" in state and ts <= state["last_ts"]:
            return None
        state["last_ts"] = ts
        produced = ts if produced_at_ms is None else produced_at_ms
        if not flagged:
            if "alert_id" not in state:
                return None
            state["clear_run"] += 1
            if state["clear_run"] < self.cooldown:
                return None
            alert = self._resolved(meter_id, state, produced)
            self._meters[meter_id] = {"last_ts": ts}
            return alert
        if details is None:
            raise ValueError("a flagged reading needs its Detection details")
        rank = SEVERITIES.index(severity(details.zscore, details.threshold))
        if "alert_id" not in state:
            state.update(alert_id=alert_id(self.bundle_version, meter_id, ts, details.window_size,
                                           details.kind),
                         kind=details.kind, first_seen=ts, flagged=0, since_emit=0, clear_run=0,
                         emitted_rank=-1, peak=None)
        state["flagged"] += 1
        state["since_emit"] += 1
        state["clear_run"] = 0
        state["last_seen"] = ts
        if state["peak"] is None or (details.zscore / max(details.threshold, 1e-9)
                                     > state["peak"]["zscore"] / max(state["peak"]["threshold"],
                                                                     1e-9)):
            state["peak"] = _summary(details, ts)
        if state["emitted_rank"] >= 0 and rank <= state["emitted_rank"] \
                and state["since_emit"] < self.update_every:
            return None
        status = "open" if state["emitted_rank"] < 0 else "update"
        state["since_emit"] = 0
        state["emitted_rank"] = max(rank, state["emitted_rank"])
        return self._alert(meter_id, state, status, details, ts, produced)

    def state(self, meter_id: str) -> dict[str, Any] | None:
        """The meter's state as a small JSON-able dict (None if never seen): for a Faust table."""
        state = self._meters.get(meter_id)
        return None if state is None else _copy(state)

    def load_state(self, meter_id: str, state: Mapping[str, Any] | None) -> None:
        if state is None:
            self._meters.pop(meter_id, None)
        else:
            self._meters[meter_id] = _copy(state)

    def open_alerts(self) -> dict[str, str]:
        """meter_id -> alert_id of every episode not yet resolved."""
        return {m: s["alert_id"] for m, s in self._meters.items() if "alert_id" in s}

    def to_dict(self) -> dict[str, Any]:
        return {"version": _STATE_VERSION, "bundle_version": self.bundle_version,
                "model": self.model, "update_every": self.update_every,
                "cooldown": self.cooldown, "meters": json.loads(json.dumps(self._meters))}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlertTracker:
        data = dict(data)
        if data.pop("version", None) != _STATE_VERSION:
            raise ConfigError(f"alert tracker state version must be {_STATE_VERSION}")
        unknown = set(data) - {"bundle_version", "model", "update_every", "cooldown", "meters"}
        if unknown:
            raise ConfigError(f"unknown alert tracker state key(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    def _alert(self, meter_id: str, state: dict[str, Any], status: str, details: Detection, ts: int,
               produced: int) -> Alert:
        start = ts - (details.window_size - 1) * details.interval_s * 1000
        return Alert(
            alert_id=state["alert_id"], status=status, kind=state.get("kind", "anomaly"),
            meter_id=meter_id,
            category=details.category, site=details.site, company=details.company,
            window_start=ms_to_iso(start), window_end=ms_to_iso(ts),
            window_size=details.window_size, model=self.model,
            bundle_version=self.bundle_version, dtw_error=dict(details.dtw_error),
            if_score=details.if_score, zscore=details.zscore, threshold=details.threshold,
            severity=severity(details.zscore, details.threshold),
            expected=tuple(details.expected), actual=tuple(details.actual),
            lower=tuple(details.lower), upper=tuple(details.upper),
            reason=details.describe(), first_seen=ms_to_iso(state["first_seen"]),
            last_seen=ms_to_iso(state["last_seen"]), readings_flagged=state["flagged"],
            produced_at=ms_to_iso(produced), latency_ms=details.latency_ms)

    def _resolved(self, meter_id: str, state: dict[str, Any], produced: int) -> Alert:
        """The closing message describes the episode's worst window (the peak)."""
        peak = dict(state["peak"])
        peak_ts = peak.pop("ts")
        details = Detection(**peak)
        alert = self._alert(meter_id, state, "resolved", details, peak_ts, produced)
        reason = (f"resolved after {self.cooldown} unflagged readings; "
                  f"peak: {details.describe()}")
        return replace(alert, reason=reason)


def _summary(details: Detection, ts: int) -> dict[str, Any]:
    """The JSON-able part of a Detection kept in state: no window values (state stays small)."""
    summary = {f.name: getattr(details, f.name) for f in fields(Detection)
               if f.name not in ("expected", "actual", "latency_ms", "lower", "upper")}
    summary["dtw_error"] = dict(details.dtw_error)
    summary["ts"] = ts
    return summary


def _copy(state: Mapping[str, Any]) -> dict[str, Any]:
    """A deep, JSON-clean copy of a meter's alert state (per meter per batch: orjson)."""
    copied: dict[str, Any] = orjson.loads(orjson.dumps(state, option=orjson.OPT_SERIALIZE_NUMPY))
    return copied
