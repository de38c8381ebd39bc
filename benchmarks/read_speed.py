"""Reading speed: `read_meter_csv` and `meterwatch score` against pandas.read_csv.

    python -m benchmarks.read_speed [--quick] [--no-write]

The file is written afresh in a temporary folder: `timestamp,meter_id,value`, 20 meters one
after another, 15-minute readings with ISO times in UTC (`2025-01-01T00:15:00Z`) and kWh with
three decimals, 2,000,000 rows (--quick: 200,000). Each meter has a few repairs to make, as real
files do: 10 empty values (interpolated), 5 rows written twice (identical duplicates, dropped)
and 5 readings a minute late (snapped to the grid).

Contenders, on the same file in the same run:
- `read_meter_csv(path)`: reading and repairing, the MeterSeries ready to score;
- the same with `bulk=False`: the per-row reader it falls back on, which was the only one
  before the column reader (one pass; its series must equal the column reader's, or no figure
  is printed);
- the peer, `pandas.read_csv(path, parse_dates=["timestamp"])`: parsing only, nothing
  checked or repaired (the two take turns, 5 passes each; the fastest of each counts);
- `meterwatch score --input FILE --output OUT` with the default bundle, in this process (one
  pass; the full file takes tens of minutes): its rate, and how much of its time is reading.

Target: reading + repairing within 2x of pandas. The last line printed is
`read_vs_pandas: <read_meter_csv seconds / pandas seconds>`.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.report import arguments, header, machine, publish
from stream_app.io.series_io import read_meter_csv

METERS = 20
START = 1_735_689_600  # 2025-01-01T00:00:00Z
REPEATS = 5  # passes of each reader, taken in turns: both meet the same load


def write_file(path: Path, readings: int, seed: int = 7) -> int:
    """The benchmark's CSV: METERS meters x `readings` rows (and their duplicates); rows written."""
    rng = np.random.default_rng(seed)
    k = np.arange(readings)
    rows = ["timestamp,meter_id,value"]
    for m in range(METERS):
        times = START + 900 * k
        late = rng.choice(np.arange(1, readings - 1), 5, replace=False)
        times[late] += 60
        values = np.maximum(0.0, rng.uniform(0.5, 8.0) * (1 + 0.5 * np.sin(2 * np.pi * k / 96))
                            + rng.normal(0.0, 0.2, readings))
        stamps = np.datetime_as_string(times.astype("datetime64[s]"), unit="s")
        cells = [f"{v:.3f}" for v in values]
        for i in rng.choice(np.arange(1, readings - 1, 2), 10, replace=False):
            cells[i] = ""
        twice = set(rng.choice(np.arange(readings), 5, replace=False).tolist())
        for i in range(readings):
            row = f"{stamps[i]}Z,m{m},{cells[i]}"
            rows += (row, row) if i in twice else (row,)
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return len(rows) - 1


def _timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def _same(a: list, b: list) -> None:
    """The column reader's series equal the per-row reader's: values, times, repairs, rows."""
    assert [(s.meter_id, s.category, s.interval_s, s.repairs) for s in a] == \
        [(s.meter_id, s.category, s.interval_s, s.repairs) for s in b]
    for x, y in zip(a, b):
        for name in ("timestamps", "values"):
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name))
        for name in ("lines", "timestamps", "values", "index"):
            np.testing.assert_array_equal(getattr(x.source, name), getattr(y.source, name))
        assert x.source.notes == y.source.notes


def _score(path: Path, out: Path) -> float:
    """Seconds of `meterwatch score` on the file, its printout (repairs, summary) swallowed."""
    from stream_app.cli import main

    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main(["score", "--input", str(path), "--output", str(out)])
    if code not in (0, None):
        raise SystemExit(f"meterwatch score failed with {code}")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    args = arguments(__doc__, "200,000 rows instead of 2,000,000").parse_args(argv)
    import pandas as pd

    readings = 10_000 if args.quick else 100_000
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "readings.csv"
        rows = write_file(path, readings)
        size = path.stat().st_size
        ours = peer = float("inf")
        for _ in range(REPEATS):  # the fastest pass of each: the least disturbed by other load
            seconds, series = _timed(lambda: read_meter_csv(path))
            ours = min(ours, seconds)
            peer = min(peer, _timed(lambda: pd.read_csv(path, parse_dates=["timestamp"]))[0])
        per_row, reference = _timed(lambda: read_meter_csv(path, bulk=False))
        _same(series, reference)
        score = _score(path, Path(tmp) / "scores.csv")
    ratio = ours / peer
    lines = [header("Reading a meter CSV: read_meter_csv and score vs pandas.read_csv", args.quick),
             "",
             (f"{machine()}, shared. {rows:,} rows ({size / 1e6:.0f} MB) of {METERS} meters, "
              "ISO times with Z, 15 minutes, with 200 empty values, 100 identical duplicate rows "
              "and 100 late readings to repair; fastest of 5 passes taken in turns with pandas "
              "(per-row reader and score: one pass). "
              f"numpy {np.__version__}, pandas {pd.__version__}."), "",
             "| reader | seconds | rows/s | vs pandas |", "|---|---:|---:|---:|"]
    for name, seconds in (("`read_meter_csv` (reading + repairing)", ours),
                          ("`read_meter_csv(bulk=False)`, the per-row reader", per_row),
                          ("`pandas.read_csv(parse_dates=[\"timestamp\"])` (parsing only)", peer),
                          ("`meterwatch score` (read, score, write)", score)):
        lines.append(f"| {name} | {seconds:.2f} | {rows / seconds:,.0f} | {seconds / peer:.1f}x |")
    lines += ["", (f"Target: reading + repairing within 2x of pandas: "
                   f"{'met' if ratio <= 2 else 'missed'} ({ratio:.2f}x). Both readers gave the "
                   f"same series. `score` spent {ours / score:.1%} of its time reading; the rest "
                   "is scoring and writing the output."), ""]
    publish(lines, not args.no_write)
    print(f"read_vs_pandas: {ratio:.2f}")


if __name__ == "__main__":
    main()
