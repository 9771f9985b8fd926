"""How much a decode may make, and until when: rows are counted as they are read (a batch
at a time for parquet and Arrow, whose bodies decode to many times their size), and a decode
that passes a bound, or outlives its request, stops there."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from serving.errors import DecodedTooLarge, RequestTimeout
from serving.settings import Settings

_DEFAULTS = Settings.model_fields


@dataclass(frozen=True, slots=True)
class Bounds:
    """The decode bounds of ``Settings`` (``max_decoded_bytes``, ``max_decoded_cells``) and,
    for a real-time request, the monotonic time past which its decode stops (504)."""

    max_bytes: int = _DEFAULTS["max_decoded_bytes"].default
    max_cells: int = _DEFAULTS["max_decoded_cells"].default
    deadline: float | None = None
    timeout_s: float = 0.0

    @classmethod
    def of(cls, settings: Settings, timeout_s: float | None = None) -> Bounds:
        """``settings``' bounds; with ``timeout_s``, a deadline that far from now."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        return cls(
            settings.max_decoded_bytes, settings.max_decoded_cells, deadline, timeout_s or 0.0
        )

    @classmethod
    def unbounded(cls) -> Bounds:
        """No bound: a file the machine's own user reads (the CLI)."""
        return cls(sys.maxsize, sys.maxsize)

    def check(self, rows: int, columns: int, nbytes: int) -> None:
        """Raise unless ``rows`` times ``columns`` and ``nbytes`` are within the bounds, and the
        deadline (if any) has not passed."""
        if rows * max(columns, 1) > self.max_cells:
            raise DecodedTooLarge(self.max_cells, "cells", "MMSERVE_MAX_DECODED_CELLS")
        if nbytes > self.max_bytes:
            raise DecodedTooLarge(self.max_bytes, "bytes", "MMSERVE_MAX_DECODED_BYTES")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise RequestTimeout(self.timeout_s)

    def table(self, table: pa.Table) -> pa.Table:
        """``table``, checked whole."""
        Tally(self).add(table)
        return table


@dataclass(slots=True)
class Tally:
    """Rows and bytes read so far by one decode, checked against its bounds at each add."""

    bounds: Bounds
    rows: int = 0
    nbytes: int = field(default=0)

    def add(self, rows: pa.Table | pa.RecordBatch) -> None:
        self.rows += rows.num_rows
        self.nbytes += sum(_expanded_bytes(column) for column in rows.columns)
        self.bounds.check(self.rows, rows.num_columns, self.nbytes)


def _expanded_bytes(column: pa.Array | pa.ChunkedArray) -> int:
    """``column``'s bytes, a dictionary column's as it will be once decoded (a few rows of
    indices can stand for many copies of a long value)."""
    if not pa.types.is_dictionary(column.type):
        return int(column.nbytes)
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    total = 0
    for chunk in chunks:
        values, indices = chunk.dictionary, chunk.indices
        if pa.types.is_binary(values.type) or pa.types.is_string(values.type) or (
            pa.types.is_large_binary(values.type) or pa.types.is_large_string(values.type)
        ):
            lengths = pc.take(pc.binary_length(values), indices)
            total += int(pc.sum(lengths).as_py() or 0) + 8 * len(chunk)
        else:
            width = values.nbytes // max(len(values), 1) + 1
            total += width * len(chunk)
    return total
