"""Silent meters: a meter that stops reporting raises an alert; its next reading resolves it.

Scoring only runs when readings arrive, so a meter that goes dark (broken modem, tripped
breaker, cut cable) would otherwise never raise anything. The rule: a meter whose last reading
*arrived* more than `factor` x its interval ago (wall clock, not stream time, so a meter that
stops for good is noticed even when no later reading ever moves stream time on) is silent.

Many at once: when a site loses power or its network, all its meters go silent within about
one reporting interval (each crosses its own deadline). `group_min` meters of one site (its
company + site) going silent within one to two reporting intervals open one grouped episode
(`GroupEvent`, alert kind `meters_silent`) instead of an alert each; while it is open, every
further silence at that site joins it. Silences too few at their own site go to this worker's
group (`site:-:-`, which also holds the meters without company and site) when `group_min` of
them come within the same window, so made-up sites cannot bring back one alert per meter
either. A grouped meter that reports again leaves its episode; the episode is resolved when
none of its meters is silent any more. Between open and resolved an `update` goes out whenever
the number silent has doubled or halved since the last message, so a site of 20,000 meters
costs a few dozen messages at most, not 20,000. Each silence is in exactly one alert: its meter's own or
its group's (which counts them and names the first SAMPLE_SIZE by id).

Expiry: a silent meter whose last reading is more than `ttl_s` behind stream time (the newest
reading this worker has seen) is forgotten by `expire`, which hands it to retention.py to
delete its state; its open alert is resolved with `expired`, or its group counts it.

Cost: the check never walks all meters. A heap holds one deadline per timed meter (pushed when
timing starts, re-pushed only when an old deadline comes due and the meter has reported since),
so a tick pops only the meters due now (DUE_PER_CHECK at most: a mass outage is decided over
a few ticks); a silent meter has no deadline until it reports again, and a second heap orders
silent meters by last reading for the expiry. Entries left behind by
a meter that moved or came back are skipped when they surface, and the heaps are rebuilt when
more than half of them are such leftovers. `examined` counts the entries a call looked at.

`SilenceTracker` is pure logic over a clock you pass in (tests use a fake one); the worker
(agents.py) calls `seen` for every reading it processes and `check` / `expire` from a
wall-clock timer (timers.py). Its state lives in memory only: after a rebalance the new owner of
a partition starts timing a meter at its first reading of that meter, and the old owner forgets
the meters it lost (`forget`), so neither raises a silence caused by the move itself.

The alert id is `alert_id(bundle, meter, last reading ts ms, 0, kind="meter_silent")`: stable
for one silence (the same last reading) across redelivery and replay; a group's is
`alert_id(bundle, group id, earliest last reading of the meters that opened it, 0,
kind="meters_silent")`.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TypeVar

from stream_app.core.alerts import Alert, severity
from stream_app.core.errors import ConfigError
from stream_app.core.records import ms_to_iso

DEFAULT_SILENCE_FACTOR = 4.0  # four missed readings: one late or lost reading is not an outage
DEFAULT_GROUP_MIN = 10  # fewer at once is a few broken modems; more is an outage at the site
SAMPLE_SIZE = 20  # ids a grouped alert names: enough to start looking, small enough to read
TIDY_S = 60.0  # how often idle group counters are dropped (wall clock)
# Deadlines one check looks at, at most: 100,000 meters silent at once are decided over 20
# ticks (seconds late, grouped anyway); 5,000 took 0.28 s on a 2-core machine loaded six-fold
# (docs/BENCHMARKS.md), so a tick stays under its second even there.
DUE_PER_CHECK = 5_000
_COMPACT_MIN = 1024  # leftovers tolerated in a heap before a rebuild is worth its pass
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")  # meter_id's alphabet, less ':' (the separator)
_NAME_ROOM = 58  # "site:" + 58 + ":" + 58 = 122 <= the 128 characters of a meter_id
WORKER = (None, None)  # the group of meters without company and site, and of the overflow


@dataclass(frozen=True, slots=True)
class SilenceEvent:
    """A meter went silent ("open"), reports again or was forgotten after the TTL ("resolved")."""

    status: str
    last_ts_ms: int  # stream time of the last reading before the silence
    interval_s: float
    silent_s: float  # wall-clock seconds without a reading when the event was decided
    factor: float = DEFAULT_SILENCE_FACTOR
    category: str = "industrial"
    site: str | None = None
    company: str | None = None
    expired: bool = False  # resolved because its state was evicted, not because it reports


@dataclass(frozen=True, slots=True)
class GroupEvent:
    """Meters of one site silent at once on this worker: one episode open -> update -> resolved."""

    status: str
    group: str  # the alert's meter_id: group_id(company, site)
    site: str | None
    company: str | None
    category: str  # the category most of its silent meters have
    first_ts_ms: int  # earliest last reading of the meters that opened it (part of its id)
    latest_ts_ms: int  # latest last reading of any meter in the episode
    silent: int  # meters of the episode silent now
    peak: int  # most silent at once
    back: int  # meters that left it by reporting again
    expired: int  # meters that left it silent for longer than the TTL (state evicted)
    moved: int  # meters that left it with their partition (another worker times them now)
    sample: tuple[str, ...]  # the first SAMPLE_SIZE silent meters by id
    group_min: int
    decided_s: float  # wall clock of the count


def group_id(company: str | None, site: str | None) -> str:
    """`site:<company>:<site>` in the meter_id alphabet; `-` for a missing name. A name outside
    the alphabet or longer than its room keeps a readable prefix and gets a hash suffix."""
    return f"site:{_name(company)}:{_name(site)}"


def _name(name: str | None) -> str:
    if name is None:
        return "-"
    safe = _UNSAFE.sub("_", name)
    if name and safe == name and len(name) <= _NAME_ROOM and name != "-":
        return name
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    return f"{safe[:_NAME_ROOM - 9]}.{digest}"


@dataclass(slots=True, eq=False)
class _Meter:
    arrival_s: float
    interval_s: float
    ts_ms: int
    category: str
    site: str | None
    company: str | None
    silent: bool = False
    episode: _Episode | None = None  # the grouped episode it is silent in, if any
    due_seq: int = 0  # sequence number of its live deadline entry (0: none)
    ttl_seq: int = 0  # sequence number of its live expiry entry (0: none)


# An entry of a heap of meters: (deadline or reading time, sequence number, meter, its record).
_Entry = TypeVar("_Entry", bound=tuple[float, int, str, _Meter])


@dataclass(slots=True, eq=False)
class _Burst:
    """Meters of a group alerted one by one lately: two tumbling windows of one interval."""

    start: float = -math.inf
    window_s: float = 0.0
    current: int = 0
    previous: int = 0

    def count(self, now: float) -> int:
        elapsed = now - self.start
        if elapsed >= self.window_s:
            self.previous = self.current if elapsed < 2 * self.window_s else 0
            self.current, self.start = 0, now
        return self.previous + self.current

    def add(self, now: float, n: int, window_s: float) -> None:
        self.window_s = max(self.window_s, window_s)
        self.count(now)
        self.current += n


@dataclass(slots=True, eq=False)
class _Episode:
    key: tuple[str | None, str | None]
    first_ts_ms: int
    members: dict[str, _Meter] = field(default_factory=dict)  # its meters silent now
    latest_ts_ms: int = 0
    peak: int = 0
    back: int = 0
    expired: int = 0
    moved: int = 0
    sent: int = 0  # silent count in the last message (0: open not sent yet)
    category: str = "industrial"

    def join(self, items: list[tuple[str, _Meter, float]]) -> None:
        members = self.members
        for meter, rec, _ in items:
            members[meter] = rec
            rec.episode = self
        self.latest_ts_ms = max(self.latest_ts_ms, max(rec.ts_ms for _, rec, _ in items))
        self.peak = max(self.peak, len(members))

    def leave(self, meter: str, rec: _Meter, why: str) -> None:
        self.members.pop(meter, None)
        setattr(self, why, getattr(self, why) + 1)
        rec.episode = None


@dataclass(slots=True, eq=False)
class _Group:
    name: str
    burst: _Burst = field(default_factory=_Burst)
    episode: _Episode | None = None


class SilenceTracker:
    """Wall-clock silence per meter. `seen` per reading; `check` and `expire` periodically."""

    def __init__(self, factor: float = DEFAULT_SILENCE_FACTOR, *,
                 group_min: int = DEFAULT_GROUP_MIN, ttl_s: float | None = None):
        if not factor >= 1.0:
            raise ConfigError(f"silence factor must be >= 1 (x the meter's interval), got {factor}")
        if type(group_min) is not int or group_min < 2:
            raise ConfigError(f"silence group minimum must be an integer >= 2, got {group_min!r}")
        if ttl_s is not None and not ttl_s > 0:
            raise ConfigError(f"meter TTL must be > 0 s, got {ttl_s}")
        self.factor = float(factor)
        self.group_min = group_min
        self.ttl_ms = None if ttl_s is None else int(ttl_s * 1000)
        self.stream_ms = 0  # the newest reading seen (or shown it by `advance`)
        self.silent_count = 0
        self.examined = 0  # heap entries the last check or expire looked at
        self._meters: dict[str, _Meter] = {}
        self._due: list[tuple[float, int, str, _Meter]] = []
        self._ttl: list[tuple[int, int, str, _Meter]] = []
        self._stale = {"due": 0, "ttl": 0}
        self._seq = itertools.count(1)
        self._groups: dict[tuple[str | None, str | None], _Group] = {}
        self._touched: set[tuple[str | None, str | None]] = set()
        self._tidied_s = -math.inf

    def __len__(self) -> int:
        return len(self._meters)

    def __contains__(self, meter: object) -> bool:
        return meter in self._meters

    def heap_sizes(self) -> tuple[int, int]:
        """(deadline entries, expiry entries), leftovers included."""
        return len(self._due), len(self._ttl)

    def group_count(self) -> int:
        return len(self._groups)

    def advance(self, ts_ms: int) -> None:
        """Stream time has reached at least `ts_ms` (a reading, or a state in the table)."""
        if ts_ms > self.stream_ms:
            self.stream_ms = int(ts_ms)

    def seen(self, meter: str, arrival_wall_s: float, interval_s: float, *, ts_ms: int = 0,
             category: str = "industrial", site: str | None = None,
             company: str | None = None) -> SilenceEvent | None:
        """Record a reading's arrival; the "resolved" event when the meter was silent on its own
        (a grouped meter's return is counted by its group, reported at the next check)."""
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.advance(ts_ms)
        rec = self._meters.get(meter)
        if rec is None:
            rec = self._meters[meter] = _Meter(arrival_wall_s, float(interval_s), int(ts_ms),
                                               category, site, company)
            self._push_due(meter, rec)
            return None
        event = None
        if rec.silent:
            if rec.episode is not None:
                self._touched.add(rec.episode.key)
                rec.episode.leave(meter, rec, "back")
            else:
                event = SilenceEvent("resolved", rec.ts_ms, rec.interval_s,
                                     max(0.0, arrival_wall_s - rec.arrival_s), self.factor,
                                     rec.category, rec.site, rec.company)
            rec.silent, rec.ttl_seq = False, 0
            self.silent_count -= 1
            self._stale["ttl"] += 1
        shorter = interval_s < rec.interval_s
        rec.arrival_s, rec.interval_s = arrival_wall_s, float(interval_s)
        rec.ts_ms = max(rec.ts_ms, int(ts_ms))
        rec.category, rec.site, rec.company = category, site, company
        if event is not None or rec.due_seq == 0 or shorter:
            if rec.due_seq:
                self._stale["due"] += 1
            self._push_due(meter, rec)  # a sooner deadline than the one queued
        return event

    def check(self, now_wall_s: float) -> list[tuple[str, SilenceEvent | GroupEvent]]:
        """Silences decided now: meters that just became silent on their own (sorted by meter),
        then grouped episodes opened, updated or resolved (sorted by group)."""
        self.examined = 0
        fresh: dict[tuple[str | None, str | None], list[tuple[str, _Meter, float]]] = {}
        due = self._due
        while due and due[0][0] < now_wall_s and self.examined < DUE_PER_CHECK:
            _, seq, meter, rec = heapq.heappop(due)
            self.examined += 1
            if rec.due_seq != seq:  # re-queued since, or forgotten (forget zeroes it)
                self._stale["due"] = max(0, self._stale["due"] - 1)
                continue
            quiet = now_wall_s - rec.arrival_s
            if not quiet > self.factor * rec.interval_s:
                self._push_due(meter, rec)  # it reported since this deadline was queued
                continue
            rec.silent, rec.due_seq = True, 0
            self.silent_count += 1
            rec.ttl_seq = seq = next(self._seq)
            heapq.heappush(self._ttl, (rec.ts_ms, seq, meter, rec))
            fresh.setdefault((rec.company, rec.site), []).append((meter, rec, quiet))
        lone = fresh.pop(WORKER, [])
        for key, items in fresh.items():
            group = self._group(key)
            if group.episode is None and group.burst.count(now_wall_s) + len(items) < self.group_min:
                group.burst.add(now_wall_s, len(items), items[0][1].interval_s)
                lone.extend(items)  # too few at this site: alone, or the worker's group
            else:
                self._join(key, group, items)
        alone: list[tuple[str, SilenceEvent | GroupEvent]] = []
        if lone:
            group = self._group(WORKER)
            if group.episode is None and group.burst.count(now_wall_s) + len(lone) < self.group_min:
                group.burst.add(now_wall_s, len(lone), max(rec.interval_s for _, rec, _ in lone))
                alone = [(meter, SilenceEvent("open", rec.ts_ms, rec.interval_s, quiet,
                                              self.factor, rec.category, rec.site, rec.company))
                         for meter, rec, quiet in lone]
            else:
                self._join(WORKER, group, lone)
        alone.sort(key=lambda pair: pair[0])
        grouped = [event for key in self._touched
                   if (event := self._group_event(key, now_wall_s)) is not None]
        grouped.sort(key=lambda event: event.group)
        self._touched.clear()
        self._tidy(now_wall_s)
        return alone + [(event.group, event) for event in grouped]

    def expire(self, now_wall_s: float,
               most: int | None = None) -> list[tuple[str, SilenceEvent | None]]:
        """Silent meters whose last reading is more than the TTL behind stream time (at most
        `most`, oldest first; the rest at the next call), forgotten here (the caller deletes
        their state): each with its "resolved" (expired) event when it was silent on its own,
        None when its group counts it (reported at the next check)."""
        self.examined = 0
        out: list[tuple[str, SilenceEvent | None]] = []
        if self.ttl_ms is None:
            return out
        limit, heap = self.stream_ms - self.ttl_ms, self._ttl
        while heap and heap[0][0] < limit and (most is None or len(out) < most):
            _, seq, meter, rec = heapq.heappop(heap)
            self.examined += 1
            if rec.ttl_seq != seq:  # it reported since, or was forgotten
                self._stale["ttl"] = max(0, self._stale["ttl"] - 1)
                continue
            del self._meters[meter]
            rec.ttl_seq = 0
            self.silent_count -= 1
            if rec.episode is not None:
                self._touched.add(rec.episode.key)
                rec.episode.leave(meter, rec, "expired")
                out.append((meter, None))
            else:
                out.append((meter, SilenceEvent(
                    "resolved", rec.ts_ms, rec.interval_s, max(0.0, now_wall_s - rec.arrival_s),
                    self.factor, rec.category, rec.site, rec.company, expired=True)))
        return out

    def forget(self, meters) -> None:
        """Stop timing these meters (their partition moved to another worker, or retention
        refused or evicted them). A grouped one counts as moved in its group."""
        for meter in meters:
            rec = self._meters.pop(meter, None)
            if rec is None:
                continue
            self._stale["due"] += rec.due_seq != 0
            self._stale["ttl"] += rec.ttl_seq != 0
            rec.due_seq = rec.ttl_seq = 0  # its heap entries are leftovers now
            if rec.silent:
                self.silent_count -= 1
            if rec.episode is not None:
                self._touched.add(rec.episode.key)
                rec.episode.leave(meter, rec, "moved")
        self._compact()

    def silent_meters(self) -> list[str]:
        return sorted(m for m, s in self._meters.items() if s.silent)

    # --- inside ------------------------------------------------------------------------------

    def _group(self, key: tuple[str | None, str | None]) -> _Group:
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(group_id(*key))
        return group

    def _join(self, key, group: _Group, items: list[tuple[str, _Meter, float]]) -> None:
        if group.episode is None:
            group.episode = _Episode(key, min(rec.ts_ms for _, rec, _ in items))
        group.episode.join(items)
        self._touched.add(key)

    def _push_due(self, meter: str, rec: _Meter) -> None:
        rec.due_seq = seq = next(self._seq)
        heapq.heappush(self._due, (rec.arrival_s + self.factor * rec.interval_s, seq, meter, rec))

    def _group_event(self, key, now_wall_s: float) -> GroupEvent | None:
        """The message a touched group's episode calls for, if any."""
        group = self._groups.get(key)
        if group is None or group.episode is None:
            return None
        episode = group.episode
        silent = len(episode.members)
        if silent:  # counted per message (a few an episode), not per meter joining
            categories = Counter(rec.category for rec in episode.members.values())
            episode.category = min(categories.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        if silent == 0:
            status = "resolved"
            group.episode = None
            if episode.sent == 0:  # every meter left before its open went out: nothing to close
                return None
        elif episode.sent == 0:
            status = "open"
        elif silent >= 2 * episode.sent or 2 * silent <= episode.sent:
            status = "update"
        else:
            return None
        episode.sent = max(silent, 1)
        company, site = key
        return GroupEvent(status, group.name, site, company, episode.category,
                          episode.first_ts_ms, episode.latest_ts_ms, silent, episode.peak,
                          episode.back, episode.expired, episode.moved,
                          tuple(heapq.nsmallest(SAMPLE_SIZE, episode.members)), self.group_min,
                          now_wall_s)

    def _tidy(self, now_wall_s: float) -> None:
        """Drop groups with no episode and no recent silence; rebuild heaps of leftovers."""
        if now_wall_s - self._tidied_s >= TIDY_S:
            self._tidied_s = now_wall_s
            idle = [key for key, group in self._groups.items()
                    if group.episode is None and group.burst.count(now_wall_s) == 0]
            for key in idle:
                del self._groups[key]
        self._compact()

    def _compact(self) -> None:
        self._compact_heap("due", self._due, "due_seq")
        self._compact_heap("ttl", self._ttl, "ttl_seq")

    def _compact_heap(self, name: str, heap: list[_Entry], seq_of: str) -> None:
        """Rebuild a heap without its leftovers (entries no longer their meter's `seq_of`)."""
        if self._stale[name] > max(_COMPACT_MIN, len(heap) // 2):
            heap[:] = [e for e in heap if getattr(e[3], seq_of) == e[1]]
            heapq.heapify(heap)
            self._stale[name] = 0


@dataclass(frozen=True, slots=True)
class GroupedSilenceAlert(Alert):
    """A `meters_silent` alert: an `Alert` with the group's counts and sample in `meters`."""

    meters: dict = field(default_factory=dict)


def silence_alert(meter: str, event: SilenceEvent | GroupEvent, *, bundle_version: str,
                  produced_ms: int) -> Alert:
    """The alert message of a silence event: kind "meter_silent" for one meter (same id open ->
    resolved), "meters_silent" for a group (`meter` is then the group id).

    One meter: zscore / threshold carry the rule: silent time in intervals / the factor it
    crossed; window_size and readings_flagged count the missed readings (the schema wants >= 1).
    """
    if isinstance(event, GroupEvent):
        return _group_alert(event, bundle_version, produced_ms)
    ratio = event.silent_s / event.interval_s
    missed = int(ratio)
    end_ms = event.last_ts_ms + int(missed * event.interval_s * 1000)
    if event.status == "open":
        reason = (f"no reading for {event.silent_s:.0f} s ({ratio:.1f} x the {event.interval_s:g} s"
                  f" interval, limit {event.factor:g} x); last reading "
                  f"{ms_to_iso(event.last_ts_ms)}")
    elif event.expired:
        reason = (f"no longer watched: still silent, and its last reading "
                  f"({ms_to_iso(event.last_ts_ms)}) is older than MW_METER_TTL_S of stream time; "
                  "its state was evicted")
    else:
        reason = f"reporting again after {event.silent_s:.0f} s of silence"
    return Alert.from_rule(
        "meter_silent", event.status, meter, opened_ms=event.last_ts_ms,
        start_ms=event.last_ts_ms, end_ms=end_ms, last_seen_ms=end_ms, count=missed,
        measure=(round(ratio, 3), event.factor), severity="medium", reason=reason,
        where=(event.category, event.site, event.company), bundle_version=bundle_version,
        produced_ms=produced_ms)


def _group_alert(event: GroupEvent, bundle_version: str, produced_ms: int) -> Alert:
    """zscore / threshold: meters silent (the peak once resolved) / the group minimum; severity
    from their ratio, at least medium (one silent meter is medium already)."""
    count = event.peak if event.status == "resolved" else event.silent
    band = severity(count, event.group_min)
    where = f"site {event.site!r}" if event.site is not None else "no site"
    if event.company is not None:
        where += f" of {event.company!r}"
    left = f"{event.back:,} reporting again, {event.expired:,} expired, {event.moved:,} moved"
    if event.status == "resolved":
        reason = (f"none of the {event.peak:,} meters ({where}) of this worker's grouped silence "
                  f"is silent any more: {left}")
    else:
        reason = (f"{event.silent:,} meters ({where}) silent on this worker, at least "
                  f"{event.group_min} within about one reporting interval; {left}; first ids: "
                  f"{', '.join(event.sample)}")
    decided = int(event.decided_s * 1000)
    return GroupedSilenceAlert.from_rule(
        "meters_silent", event.status, event.group, opened_ms=event.first_ts_ms,
        start_ms=event.first_ts_ms, end_ms=event.latest_ts_ms, last_seen_ms=decided, count=count,
        measure=(float(count), float(event.group_min)),
        severity="medium" if band == "low" else band, reason=reason,
        where=(event.category, event.site, event.company), bundle_version=bundle_version,
        produced_ms=produced_ms,
        meters={"silent": event.silent, "peak": event.peak, "back": event.back,
                "expired": event.expired, "moved": event.moved, "sample": list(event.sample)})
