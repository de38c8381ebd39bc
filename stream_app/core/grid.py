"""One meter's rows (time, value, label, file line) -> readings on a regular grid, each repair
reported. The rules (docs/DATA_IN.md says them to users):

- Interval: given, or inferred: the most frequent step (the smallest on ties) when at least 90 %
  of the steps are whole multiples of it (a clean clock, gaps allowed); otherwise (a jittered
  clock) the median step, rounded to the nearest common interval within 10 % (5 min, 10 min,
  15 min, 1 h...) or else to a whole second.
- Phase: the most frequent remainder of the times modulo the interval when it holds half the
  readings, else their circular mean (0, the clock's own grid, when the remainders are spread
  evenly, as with readings finer than a given interval); rounded to a whole minute for intervals
  of whole minutes from 5 minutes up.
- A reading less than `tolerance` (default a third of the interval) from a grid point is snapped
  to it. A reading further off is energy of the interval that contains it: timestamps are
  interval ends, so it goes to the next grid point at or after it and is summed into that slot.
- Readings of power (kW, W) rather than energy are averaged into their slot instead of summed
  (`aggregate="mean"`); the reader turns the slot's mean power into the interval's energy.
- Several readings snapped to one slot: identical ones (same value and label) are dropped and
  counted; different ones are resolved by the `duplicates` policy: `last` (the later row of the
  file wins), `mean`, `sum` (labels: 1 if any is 1), or `error`. An empty value in a slot that
  has a value is dropped.
- Empty values and absent slots: runs of up to `max_gap` are linearly interpolated (absent
  slots get label 0); a longer run is a gap: its slots are left out, so the series has a
  step longer than its interval there and is read as segments (`segment_starts`: no window
  spans a gap, scoring starts again once the windows after it are full). Empty ends are dropped.
- `breaks` (a register's drop: its interval's energy is unknown): the run of missing slots that
  holds one is a gap whatever its length, never interpolated: a new segment starts after it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from stream_app.core.errors import InputError
from stream_app.core.timestamps import format_timestamp

MAX_GRID = 5_000_000  # readings one meter of a file may span (143 years at 15 minutes)
DUPLICATE_POLICIES = ("last", "mean", "sum", "error")
NICE_INTERVALS = (1, 2, 5, 10, 15, 20, 30, 60, 120, 180, 300, 600, 900, 1200, 1800, 3600, 7200,
                  10800, 14400, 21600, 43200, 86400)


@dataclass
class SourceRows:
    """The file rows behind a series, in file order, and where each one went."""

    lines: np.ndarray  # int64 file line (header = 1)
    timestamps: np.ndarray  # int64 the row's own time, UTC epoch seconds
    values: np.ndarray  # float64 the row's own value, NaN when empty
    index: np.ndarray  # int64 the series position whose reading this row is; -1 for none
    notes: list[str]  # for a row with index -1, why ('' otherwise)
    # rows with index -1 that are data faults of the meter, not of the file: row -> fault kind
    faults: dict[int, str] = field(default_factory=dict)


@dataclass
class Grid:
    timestamps: np.ndarray
    values: np.ndarray
    labels: np.ndarray
    interval_s: int
    repairs: list[str]
    source: SourceRows


def infer_interval(times: np.ndarray) -> tuple[int, bool]:
    """(interval s, True when read from a jittered clock's median step); `times` sorted, unique."""
    steps = np.diff(times)
    mode = _mode(steps)
    if np.count_nonzero(steps % mode == 0) >= 0.9 * len(steps):
        return mode, False
    median = float(np.median(steps))
    nice = min(NICE_INTERVALS, key=lambda n: abs(math.log(n / median)))
    return (nice if abs(nice - median) <= 0.1 * median else max(1, round(median))), True


def grid_phase(times: np.ndarray, interval: int) -> int:
    """Where the grid points fall within an interval; see the module docstring."""
    unit = 60 if interval % 60 == 0 and interval >= 300 else 1
    rest = times % interval
    mode = _mode(rest)
    if 2 * np.count_nonzero(rest == mode) >= len(rest):
        phase = float(mode)
    else:
        angle = 2 * np.pi * rest / interval
        sin, cos = float(np.sin(angle).mean()), float(np.cos(angle).mean())
        if math.hypot(sin, cos) < 0.3:  # spread evenly: readings finer than the interval
            return 0
        phase = math.atan2(sin, cos) / (2 * np.pi) * interval
    return int(round(phase / unit) * unit) % interval


def _mode(x: np.ndarray) -> int:
    """The most frequent of whole numbers (the smallest of a tie); the first one when it is
    more than half of them, as on a clean clock, without sorting."""
    if 2 * np.count_nonzero(x == x[0]) > len(x):
        return int(x[0])
    uniq, counts = np.unique(x, return_counts=True)
    return int(uniq[np.argmax(counts)])


def _unique(ts: np.ndarray) -> np.ndarray:
    """np.unique(ts), by sorting: np.unique hashes, 30 times slower on a meter's times, and a
    file's times are mostly in order already."""
    step = np.diff(ts)
    if np.all(step > 0):
        return ts
    if np.all(step >= 0):
        return ts[np.r_[True, step != 0]]
    times = np.sort(ts)
    return times[np.r_[True, times[1:] != times[:-1]]]


def describe_rows(lines: Iterable[int]) -> str:
    """File rows as a repair line names them: `row 5`, `rows 5 and 9`, `rows 5, 9, 12, ... (7 in
    all)`."""
    rows = sorted(int(x) for x in lines)
    if len(rows) == 1:
        return f"row {rows[0]}"
    if len(rows) <= 3:
        return f"rows {', '.join(map(str, rows[:-1]))} and {rows[-1]}"
    return f"rows {', '.join(map(str, rows[:3]))}, ... ({len(rows)} in all)"


def build_grid(meter: str, ts: npt.ArrayLike, values: npt.ArrayLike, labels: npt.ArrayLike,
               lines: npt.ArrayLike, *, interval_s: int | None = None,
               tolerance_s: float | None = None, duplicates: str = "last",
               max_gap: int = 4, aggregate: str = "sum",
               breaks: npt.ArrayLike | None = None) -> Grid:
    """Arrays in file order -> the meter's regular grid; see the module docstring. `breaks`:
    bool per row, True where the series is split (the row's value is unknown)."""
    ts = np.asarray(ts, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int8)
    lines = np.asarray(lines, dtype=np.int64)
    if duplicates not in DUPLICATE_POLICIES:
        raise InputError(f"duplicates policy {duplicates!r}: choose one of "
                         f"{', '.join(DUPLICATE_POLICIES)}")
    repairs: list[str] = []
    times = _unique(ts)
    if interval_s is None:
        if len(times) < 2:
            raise InputError(f"meter {meter!r} has {len(times)} reading; need at least 2 to "
                             "know its interval (or give --interval)", row=int(lines[-1]))
        interval_s, jittered = infer_interval(times)
        if jittered:
            repairs.append(f"{meter}: irregular clock, interval {interval_s} s from the median "
                           "step")
    interval = int(interval_s)
    tol = interval / 3 if tolerance_s is None else float(tolerance_s)
    if not 0 <= tol <= interval / 2:
        raise InputError(f"grid tolerance {tolerance_s} s must be between 0 and half the "
                         f"{interval} s interval")
    phase = grid_phase(times, interval)
    rel = ts - phase
    near = (rel + interval // 2) // interval
    offset = rel - near * interval
    on = (offset == 0) | (np.abs(offset) < tol)
    slot = np.where(on, near, -(-rel // interval))  # off the grid: the slot ending after it
    if np.any(on & (offset != 0)):
        repairs.append(f"{meter}: snapped {np.count_nonzero(on & (offset != 0))} readings up to "
                       f"{int(np.abs(offset[on]).max())} s off the {interval} s grid to the "
                       "nearest grid point")
    if not on.all():
        verb = "averaged" if aggregate == "mean" else "summed"
        repairs.append(f"{meter}: {verb} {np.count_nonzero(~on)} readings more than {tol:g} s "
                       f"off the grid into the slot they end in ({describe_rows(lines[~on])})")
    notes = [""] * len(ts)
    slots, slot_values, slot_labels, rep = _resolve_slots(
        meter, slot, on, ts, values, labels, lines, duplicates, notes, repairs, aggregate)
    _check_span(meter, slots, lines[rep], interval)
    pos = slots - slots[0]
    n = int(pos[-1]) + 1
    grid_values = np.full(n, np.nan)
    grid_values[pos] = slot_values
    grid_labels = np.zeros(n, dtype=np.int8)
    grid_labels[pos] = slot_labels
    grid_lines = np.zeros(n, dtype=np.int64)  # 0 = no row in the file
    grid_lines[pos] = lines[rep]
    grid = phase + interval * (slots[0] + np.arange(n, dtype=np.int64))
    split = np.zeros(n, dtype=bool)
    if breaks is not None:
        split[slot[np.asarray(breaks, dtype=bool)] - slots[0]] = True
    lo, hi = _fill_missing(meter, grid, grid_values, grid_lines, max_gap, repairs, split)
    present = np.zeros(n, dtype=bool)
    present[lo:hi] = ~np.isnan(grid_values[lo:hi])  # what is left missing is a long gap
    if np.count_nonzero(present) < 2:
        raise InputError(f"meter {meter!r} has 1 reading with a value; need at least 2 to know "
                         "its interval", row=int(grid_lines[lo]))
    new_pos = np.cumsum(present) - 1  # grid slot -> position in the series
    index = np.full(len(ts), -1, dtype=np.int64)
    kept = present[pos]
    index[rep[kept]] = new_pos[pos[kept]]
    for r, at in zip(rep[~kept], pos[~kept]):
        if at < lo or at >= hi:
            notes[r] = "empty value at an end of the series, dropped"
        elif split[at]:
            notes[r] = "unknown energy (the register dropped), the series is split here"
        else:
            notes[r] = f"empty value in a gap longer than --max-gap {max_gap}, dropped"
    source = SourceRows(lines, ts, values, index, notes)
    return Grid(grid[present], grid_values[present], grid_labels[present], interval, repairs,
                source)


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _slot_order(slot: np.ndarray, lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, starts): the rows by slot, in file order within a slot (np.lexsort((lines,
    slot))), and where each slot's rows start in that order; no sort when the rows are in slot
    order already, as a file's rows mostly are."""
    step = np.diff(slot)
    if np.all(step >= 0) and np.all(np.diff(lines) > 0):
        return np.arange(len(slot)), np.flatnonzero(np.r_[True, step != 0])
    order = np.lexsort((lines, slot))
    ordered = slot[order]
    return order, np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])


def _resolve_slots(meter: str, slot: np.ndarray, on: np.ndarray, ts: np.ndarray,
                   values: np.ndarray, labels: np.ndarray, lines: np.ndarray, policy: str,
                   notes: list[str], repairs: list[str], aggregate: str = "sum"
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per occupied slot (ascending): its value, label and the row that stands for it."""
    order, starts = _slot_order(slot, lines)
    counts = np.diff(np.r_[starts, len(order)])
    rep = order[starts]
    slots = slot[rep]
    slot_values = values[rep]
    slot_labels = labels[rep]
    identical: list[int] = []
    empty: list[int] = []
    conflicts: list[list[int]] = []
    for g in np.flatnonzero(counts > 1):
        rows = order[starts[g]:starts[g] + counts[g]]  # file order
        if not np.isnan(values[rows]).all():
            empty += [r for r in rows if np.isnan(values[r])]
            rows = rows[~np.isnan(values[rows])]
        kept: list[int] = []
        for r in rows:  # identical: same time if off the grid, same slot if on it
            twin = next((k for k in kept if on[k] == on[r] and (on[r] or ts[k] == ts[r])
                         and _same(values[k], values[r]) and labels[k] == labels[r]), None)
            if twin is None:
                kept.append(r)
            else:
                identical.append(r)
                notes[r] = f"identical duplicate of row {lines[twin]}, dropped"
        snapped = [r for r in kept if on[r]]
        summed = [r for r in kept if not on[r]]
        if len(snapped) > 1:
            conflicts.append(snapped)
            if policy == "error":
                raise InputError(f"duplicate timestamp {format_timestamp(ts[snapped[1]])} for "
                                 f"meter {meter!r} at rows {lines[snapped[0]]} and "
                                 f"{lines[snapped[1]]} with different values (choose "
                                 "--duplicates last, mean or sum)", row=int(lines[snapped[1]]))
            if policy == "last":
                snapped = snapped[-1:]
        value = 0.0
        if snapped:
            value = float(values[snapped].mean() if policy == "mean" else values[snapped].sum())
        if aggregate == "mean" and summed:  # power: the slot's mean, the snapped one(s) counted once
            value = (value + float(values[summed].sum())) / (len(summed) + (1 if snapped else 0))
        else:
            value += float(values[summed].sum())
        contributors = snapped + summed
        winner = max(contributors, key=lambda r: lines[r])
        slot_values[g] = value if contributors and not np.isnan(values[winner]) else np.nan
        slot_labels[g] = labels[contributors].max()
        rep[g] = winner
        for r in kept:
            if r != winner and not notes[r]:
                notes[r] = (f"replaced by row {lines[winner]} (--duplicates last)" if r not in
                            contributors else f"merged into row {lines[winner]}")
    for r in empty:
        notes[r] = "empty value in a slot that has a value, dropped"
    _check_finite(meter, slot_values)
    if identical:
        repairs.append(f"{meter}: dropped {len(identical)} identical duplicate readings "
                       f"({describe_rows(lines[identical])})")
    if empty:
        repairs.append(f"{meter}: dropped {len(empty)} empty readings in slots that have a value "
                       f"({describe_rows(lines[empty])})")
    if conflicts:
        repairs.append(f"{meter}: {len(conflicts)} slots with conflicting duplicates resolved by "
                       f"--duplicates {policy} ({describe_rows([lines[c[-1]] for c in conflicts])})")
    return slots, slot_values, slot_labels, rep


def _check_finite(meter: str, slot_values: np.ndarray) -> None:
    if np.isinf(slot_values).any():
        raise InputError(f"meter {meter!r}: readings merged into one slot add up beyond the "
                         "largest number")


def _check_span(meter: str, slots: np.ndarray, rep_lines: np.ndarray, interval: int) -> None:
    """Refuse, before any grid is allocated, an absurd span."""
    n = int(slots[-1] - slots[0]) + 1
    if n > MAX_GRID:
        raise InputError(f"meter {meter!r} spans {n:,} readings of {interval} s (rows "
                         f"{rep_lines[0]} to {rep_lines[-1]}), more than {MAX_GRID:,}: check its "
                         "timestamps or split the file", row=int(rep_lines[-1]))


def _describe(lines: np.ndarray, a: int, b: int) -> str:
    present = lines[a:b][lines[a:b] > 0]
    if len(present) == 0:
        before = lines[a - 1] if a > 0 else 0
        after = lines[b] if b < len(lines) else 0
        return f"between rows {before} and {after}"
    return f"at row {present[0]}" if len(present) == 1 else f"at rows {present[0]}-{present[-1]}"


def _fill_missing(meter: str, grid: np.ndarray, values: np.ndarray, lines: np.ndarray,
                  max_gap: int, repairs: list[str], split: np.ndarray) -> tuple[int, int]:
    """Interpolate short interior runs of NaN in place, except runs that hold a `split` slot
    (left missing, reported by their cause); return the slice without NaN ends."""
    missing = np.isnan(values)
    if missing.all():
        raise InputError(f"meter {meter!r} has no readings, only missing values",
                         row=int(lines[lines > 0][0]))
    lo = int(np.argmax(~missing))
    hi = len(values) - int(np.argmax(~missing[::-1]))
    if lo > 0:
        repairs.append(f"{meter}: dropped {lo} missing readings at the start "
                       f"({_describe(lines, 0, lo)})")
    if hi < len(values):
        repairs.append(f"{meter}: dropped {len(values) - hi} missing readings at the end "
                       f"({_describe(lines, hi, len(values))})")
    edges = np.diff(np.concatenate(([0], missing[lo:hi].astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1) + lo, np.flatnonzero(edges == -1) + lo
    for a, b in zip(starts.tolist(), ends.tolist()):
        if split[a:b].any():
            continue
        where = _describe(lines, a, b)
        if b - a > max_gap:  # left missing: the series is split there
            repairs.append(f"{meter}: gap of {b - a} missing readings {where} "
                           f"({format_timestamp(grid[a])} to {format_timestamp(grid[b - 1])}), "
                           f"longer than --max-gap {max_gap}: the series is split there (no "
                           "window spans it)")
            continue
        values[a:b] = np.interp(np.arange(a, b), [a - 1, b], [values[a - 1], values[b]])
        repairs.append(f"{meter}: interpolated {b - a} missing readings {where}")
    return lo, hi
