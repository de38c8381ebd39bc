"""Which meters a worker keeps state for: none silent longer than the TTL, at most MW_MAX_METERS.

Without this every meter id the worker ever read stayed in its table, its changelog and its
memory-only maps for good: 20,000 made-up meter ids added 38 MiB that never came back.

- Eviction (MW_METER_TTL_S, default 30 days of stream time, the newest reading this worker has
  seen or the newest state in its table): a meter that is silent (silence.py's wall-clock rule)
  and whose last reading is more than the TTL behind stream time loses everything: its table key
  is deleted (Faust writes a tombstone to the changelog, so a restore or a standby replica drops
  it too) and the silence tracker and the meter -> partition map forget it. The tracker hands
  over the meters it times (`SilenceTracker.expire`). Meters whose state the table holds but that
  have not reported since this worker got their partition (restored from the changelog; the
  tracker does not know them) are found by a sweep over the table's keys, SWEEP_KEYS per tick,
  so a tick costs the same whatever the number of meters. A meter that reports after its
  eviction starts afresh (warming up). Nothing is evicted while Faust recovers or rebalances
  (the timer's caller says so): a state read mid-recovery may be one a later changelog record
  replaces, and the tombstone would then delete the newer state on the next restore.
- Cap (MW_MAX_METERS, default 200,000): a new meter (no state in the table) beyond it gets no
  state. Its readings go to the dead-letter topic with reason `meter_cap` (counted in
  meterwatch_readings_invalid_total{reason="meter_cap"}), never dropped, and
  meterwatch_meter_cap_reached is 1 while the cap is reached; meters with state are never
  refused. The count is what the table holds (as meterwatch_meters: with the memory store a
  standby replica's meters are included), taken at each sweep pass and kept up to date with the
  meters admitted and evicted since.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import orjson

from stream_app.core.meter_state import MeterState
from stream_app.stream.patches import delete_key
from stream_app.stream.rekey import internal_partition
from stream_app.stream.silence import SilenceTracker

log = logging.getLogger("meterwatch.worker")

SWEEP_KEYS = 2_000  # table keys a tick looks at: 100,000 meters a pass every 50 s, ~1 ms a tick
# Meters a tick evicts (the rest at the next ones): each is a changelog send through Faust,
# 0.3 ms on a 2-core machine loaded six-fold (docs/BENCHMARKS.md), so a tick stays well under
# its second even there; 100,000 meters expired at once are gone in 200 s (of a 30-day TTL).
EVICT_PER_TICK = 500


class MeterPartitions(dict):
    """meter -> (internal topic, partition) of its latest reading, indexed both ways, so the
    meters of a partition that moved away are found without walking every meter. One tuple per
    partition is shared by all its meters."""

    def __init__(self) -> None:
        super().__init__()
        self._by_tp: dict[tuple[str, int], tuple[tuple[str, int], set[str]]] = {}

    def __setitem__(self, meter: str, tp: tuple[str, int]) -> None:
        old = self.get(meter)
        if old == tp:
            return
        if old is not None:
            self._leave(meter, old)
        entry = self._by_tp.get(tp)
        if entry is None:
            entry = self._by_tp[tp] = (tp, set())
        entry[1].add(meter)
        super().__setitem__(meter, entry[0])

    def pop(self, meter: str, default=None):
        tp = super().pop(meter, None)
        if tp is None:
            return default
        self._leave(meter, tp)
        return tp

    def __delitem__(self, meter: str) -> None:
        if self.pop(meter) is None:
            raise KeyError(meter)

    def clear(self) -> None:
        super().clear()
        self._by_tp.clear()

    def lose(self, assigned: set[tuple[str, int]]) -> list[str]:
        """Forget the meters of every partition not in `assigned`; returns them."""
        lost: list[str] = []
        for tp in [tp for tp in self._by_tp if tp not in assigned]:
            _, meters = self._by_tp.pop(tp)
            for meter in meters:
                super().pop(meter, None)
            lost.extend(meters)
        return lost

    def partitions(self) -> int:
        return len(self._by_tp)

    def _leave(self, meter: str, tp: tuple[str, int]) -> None:
        entry = self._by_tp.get(tp)
        if entry is not None:
            entry[1].discard(meter)
            if not entry[1]:
                del self._by_tp[tp]


def last_reading_ms(raw: bytes | None) -> int | None:
    """The time of a meter's last reading from its table state (a MeterState); None when
    unreadable."""
    if not raw:
        return None
    try:
        return MeterState.from_bytes(raw).last_reading_ms
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


class Retention:
    """Evicts meters silent longer than the TTL and holds new meters to the cap (module doc)."""

    def __init__(self, table, tracker: SilenceTracker, meter_partition: MeterPartitions, *,
                 topic: str, partitions: int, ttl_s: float, max_meters: int, metrics):
        self.table, self.tracker, self.meter_partition = table, tracker, meter_partition
        self.topic, self.partitions = topic, partitions
        self.ttl_ms = int(ttl_s * 1000)
        self.max_meters = max_meters
        self.metrics = metrics
        self.count = 0  # meters with state here (module doc)
        self.capped = False
        self.examined = 0  # table keys the last sweep looked at
        self._keys: list = []
        self._pos = 0
        self._assigned: set[tuple[str, int]] = set()

    def admit(self, new_meters: Iterable[str]) -> set[str]:
        """Of these meters without state, the ones the cap refuses; the rest are counted in.
        The refused are forgotten by the in-memory maps too (they were timed on arrival)."""
        refused = set()
        for meter in new_meters:
            if self.count < self.max_meters:
                self.count += 1
            else:
                refused.add(meter)
        if refused:
            self.tracker.forget(refused)
            for meter in refused:
                self.meter_partition.pop(meter, None)
        self.report()
        return refused

    def evict(self, meter: str) -> bool:
        """Delete the meter's state (a tombstone in the changelog) and forget it everywhere."""
        tp = self.meter_partition.pop(meter, None)  # known for a timed meter: no murmur2
        partition = tp[1] if tp is not None else internal_partition(meter, self.partitions)
        deleted = delete_key(self.table, meter.encode(), self.topic, partition)
        self.tracker.forget([meter])
        if deleted:
            self.count = max(0, self.count - 1)
            self.metrics.meters_evicted.inc()
        return deleted

    def sweep(self, assigned: set[tuple[str, int]], most: int = EVICT_PER_TICK) -> list[str]:
        """Look at the next SWEEP_KEYS table keys (fewer once `most` are evicted); evict the
        meters among them that this worker owns, does not time (restored, not reported since)
        and whose last reading is older than the TTL. At the end of a pass, or when the
        assignment changed (partitions restored since), the next pass starts with a fresh
        snapshot of the keys."""
        if self._pos >= len(self._keys) or assigned != self._assigned:
            self._assigned = set(assigned)
            self._keys, self._pos = list(self.table.keys()), 0
            self.count = len(self._keys)
        evicted: list[str] = []
        self.examined = 0
        while self._pos < len(self._keys) and self.examined < SWEEP_KEYS and len(evicted) < most:
            key = self._keys[self._pos]
            self._pos += 1
            self.examined += 1
            meter = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
            if meter in self.tracker:
                continue
            if (self.topic, internal_partition(meter, self.partitions)) not in assigned:
                continue  # a standby replica's: its owner evicts it
            last = last_reading_ms(self.table.get(key))
            if last is None:
                continue
            self.tracker.advance(last)
            if last < self.tracker.stream_ms - self.ttl_ms and self.evict(meter):
                evicted.append(meter)
        self.report()
        return evicted

    def report(self) -> None:
        """meterwatch_meter_cap_reached, and a log line when it changes."""
        reached = self.count >= self.max_meters
        if reached != self.capped:
            if reached:
                log.warning("meter cap reached: %d meters with state (MW_MAX_METERS=%d); "
                            "readings of new meters go to the dead-letter topic as meter_cap",
                            self.count, self.max_meters)
            else:
                log.info("meter cap no longer reached: %d meters with state (MW_MAX_METERS=%d)",
                         self.count, self.max_meters)
            self.capped = reached
        self.metrics.meter_cap_reached.set(int(reached))
