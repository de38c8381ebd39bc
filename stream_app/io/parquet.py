"""Meter readings in a Parquet file, read as the CSV of the same table would be.

A Parquet file (told by its `PAR1` magic, whatever its name) goes through the meter CSV's rules
(stream_app.io.series_io): the same column names are recognised, the same options apply, every
repair is reported and every error names the row, counted as in that CSV (the header is row 1,
the first reading row 2). Each cell becomes the text the CSV would hold, so one set of rules
judges both:

- a timestamp column with a zone (`timestamp[ns, tz=UTC]`, any unit, any zone) is an instant:
  epoch seconds; one without a zone is wall time, read in `--tz` (default UTC) like a CSV's
  times without an offset, the repeated hour of a DST fall-back placed by row order;
- numbers keep their shortest exact text (a float64 reads back as the same float, a float32's
  1.1 as 1.1), booleans are `true` / `false`, and a null is an empty cell (a missing reading);
- string columns are read as they are (ISO times, decimal numbers).

Needs pyarrow (`pip install 'meterwatch[parquet]'`); without it, one line says so. Rows are read
one at a time by the CSV's per-row reader, not its column reader: a Parquet file reads at about
the per-row reader's speed (benchmarks/read_speed.py measures the CSV readers).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stream_app.core.errors import InputError

MAGIC = b"PAR1"


def is_parquet(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == MAGIC
    except OSError:
        return False  # the CSV reader says why it cannot be read


class ParquetRows:
    """csv.reader's face over a Parquet table: `header`, then rows of cell texts, `line_num`
    the row's number as in the CSV of the table."""

    def __init__(self, path: Path) -> None:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise InputError(f"{path.name} is a Parquet file: reading it needs pyarrow "
                             "(pip install 'meterwatch[parquet]')") from None
        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise InputError(f"{path.name} is not a readable Parquet file: "
                             f"{str(exc).splitlines()[0][:200]}") from None
        self.header = [str(name).strip() for name in table.column_names]
        if not self.header:
            raise InputError(f"{path.name} is a Parquet file without columns", row=1)
        self._columns = [_texts(column) for column in table.columns]
        self._rows = table.num_rows
        self.line_num = 1

    def __iter__(self) -> Iterator[list[str]]:
        for i in range(self._rows):
            self.line_num = i + 2
            yield [column[i] for column in self._columns]


def _texts(column: Any) -> list[str]:
    """A column's cells as the CSV of the table would hold them ('' for a null)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_timestamp(kind):
        if kind.tz is not None:  # an instant: epoch seconds, which the CSV rules read exactly
            per_s = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[kind.unit]
            ticks = pc.cast(column, pa.int64())
            column = pc.cast(pc.divide(ticks, pa.scalar(per_s, pa.int64())), pa.string())
        else:  # wall time: read in --tz, as a CSV's time without an offset
            column = pc.strftime(column, format="%Y-%m-%dT%H:%M:%S")
    elif not pa.types.is_string(kind) and not pa.types.is_large_string(kind):
        column = pc.cast(column, pa.string())
    return ["" if x is None else x for x in column.to_pylist()]
