"""CSV and JSON-lines inputs read on past a cell that does not fit its column.

pyarrow's streaming readers fix each column's type from the file's first block (a model
input's, the model's type) and stop at the first cell that does not fit: ``abc`` or ``3.5``
in an int64 column, a JSON value whose type changes. A batch run must not stop there with
the reader's traceback: under ``--on-error skip`` the row goes to ``_rejects/`` with its
reason, under ``fail`` the run stops naming file, row, column and value.

So when a reader stops on a cell, the file is read again from the block it stopped in, and
each row is converted to the types fixed so far on its own: CSV cells read as text and
cast a column at a time (as the typed reader would: its null spellings, spaces around
numbers), JSON lines a batch at a time with those types as the reader's explicit schema.
Rows that fit come out as tables, exactly as the typed reader gives them; a row that does
not, as an :class:`Unread`, in input order. Finding the rows that do not fit halves what
fails (a few bad rows cost a few extra casts); a file without one is read as ever.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson

from serving.codecs import read_json_lines
from serving.codecs._jsonl import CheckedLines


@functools.cache
def _nulls() -> pa.Array:
    """The CSV reader's null spellings, as an array (made on first use: a list made into an
    array imports pandas, 50 MB, which the API process otherwise does without)."""
    return pa.array(pacsv.ConvertOptions().null_values)


_SHOWN = 40  # characters of a cell a reason quotes


@dataclass(frozen=True)
class Unread:
    """A row with a cell its column's type cannot hold: why (naming column and value), and
    the row in the file's types with that cell null (what ``_rejects/`` keeps of it)."""

    reason: str
    row: pa.Table


Piece: TypeAlias = pa.Table | Unread


def csv_pieces(
    stream: Callable[[], Any], types: dict[str, pa.DataType], names: Sequence[str], rows: int
) -> Iterator[Piece]:
    """A CSV file's rows (``stream`` opens it; ``types``: the model's columns; ``names``:
    the columns of a file without a header row) in tables of at most ``rows`` rows."""
    read = pacsv.ReadOptions(column_names=list(names))
    done, schema = 0, None
    with stream() as f:
        try:
            reader = pacsv.open_csv(
                f, read_options=read, convert_options=pacsv.ConvertOptions(column_types=types)
            )
            schema = reader.schema
            for batch in reader:
                yield from _split(pa.Table.from_batches([batch]), rows)
                done += batch.num_rows
            return
        except pa.ArrowInvalid as err:
            if "conversion error" not in str(err):
                raise  # not a cell: a row of the wrong length, bytes that are not CSV
    if schema is None:  # the first block: the other columns' types as the reader infers them
        with stream() as f:
            inferred = pacsv.open_csv(f, read_options=read).schema
        schema = pa.schema([(f.name, types.get(f.name, f.type)) for f in inferred])
    read.skip_rows_after_names = done
    text = pacsv.ConvertOptions(column_types=dict.fromkeys(schema.names, pa.string()))
    with stream() as f:
        for batch in pacsv.open_csv(f, read_options=read, convert_options=text):
            table = pa.Table.from_batches([batch])
            for start in range(0, table.num_rows, rows):
                yield from _typed(table.slice(start, rows), schema)


def _typed(text: pa.Table, schema: pa.Schema) -> Iterator[Piece]:
    """CSV cells read as text, cast to ``schema`` a column at a time."""
    columns, reasons = [], dict[int, str]()
    for field in schema:
        cells = text.column(field.name).combine_chunks()
        column, bad = _cast_cells(cells, field.type)
        columns.append(column)
        for row in bad:
            value = str(cells[row].as_py())[:_SHOWN]
            reasons.setdefault(row, f"column {field.name!r} must be {field.type}, got {value!r}")
    yield from _pieces(pa.table(columns, schema=schema), reasons)


def _cast_cells(cells: pa.Array, target: pa.DataType) -> tuple[pa.Array, list[int]]:
    """``cells`` (text) as ``target``, as the typed reader reads them; and the rows that do
    not fit (null in the column)."""
    if pa.types.is_string(target) or pa.types.is_large_string(target):
        return cells.cast(target), []
    nulls = pc.is_in(cells, value_set=_nulls())
    cells = pc.if_else(nulls, None, pc.utf8_trim_whitespace(cells))
    bad = _unfit(lambda a, b: cells.slice(a, b - a).cast(target), 0, len(cells))
    if bad:
        mask = np.zeros(len(cells), bool)
        mask[bad] = True
        cells = pc.if_else(pa.array(mask), None, cells)
    return cells.cast(target), bad


def _unfit(read: Callable[[int, int], Any], start: int, end: int) -> list[int]:
    """The rows of ``[start, end)`` that ``read`` fails on, found by halving what fails."""
    try:
        read(start, end)
        return []
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        if end - start == 1:
            return [start]
    middle = (start + end) // 2
    return _unfit(read, start, middle) + _unfit(read, middle, end)


def _pieces(table: pa.Table, reasons: dict[int, str]) -> Iterator[Piece]:
    """``table`` cut around its rows with a reason, each of those an :class:`Unread`."""
    start = 0
    for row in sorted(reasons):
        if row > start:
            yield table.slice(start, row - start)
        yield Unread(reasons[row], table.slice(row, 1))
        start = row + 1
    if start < table.num_rows:
        yield table.slice(start)


def json_pieces(stream: Callable[[], Any], where: str, rows: int) -> Iterator[Piece]:
    """A JSON-lines file's rows (``stream`` opens it), in tables of at most ``rows`` rows;
    every line checked first (:func:`serving.codecs.read_json_lines`)."""
    done, schema = 0, None
    with stream() as f:
        try:
            for batch in read_json_lines(f, where):
                schema = batch.schema
                yield from _split(pa.Table.from_batches([batch]), rows)
                done += batch.num_rows
            return
        except pa.ArrowInvalid:
            pass  # a value of another type than its column's first ones
    with stream() as f:
        lines = _object_lines(CheckedLines(f))
        for _ in range(done):
            next(lines)
        while batch_lines := [line for _, line in zip(range(rows), lines, strict=False)]:
            schema = schema or _json_schema(batch_lines)
            yield from _json_rows(batch_lines, schema)


def _object_lines(checked: CheckedLines) -> Iterator[bytes]:
    """The lines of ``checked`` that hold an object (what the reader counts as rows)."""
    pending = b""
    while chunk := checked.read():
        *whole, pending = (pending + chunk).replace(b"\r", b"\n").split(b"\n")
        yield from (line for line in whole if line.strip())
    if pending.strip():
        yield pending


def _json_schema(lines: list[bytes]) -> pa.Schema:
    """The types the reader gives the first of ``lines`` it can read (a first block that
    did not read whole)."""
    for line in lines:
        try:
            return pajson.read_json(pa.BufferReader(line)).schema
        except pa.ArrowInvalid:
            continue
    return pajson.read_json(pa.BufferReader(lines[0])).schema  # refused again, by name


def _json_rows(lines: list[bytes], schema: pa.Schema) -> Iterator[Piece]:
    options = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")

    def read(start: int, end: int) -> pa.Table:
        body = b"\n".join(lines[start:end])
        return pajson.read_json(pa.BufferReader(body), parse_options=options).select(schema.names)

    bad = _unfit(read, 0, len(lines))
    start = 0
    for row in bad:
        if row > start:
            yield read(start, row)
        yield _unread_line(lines[row], schema)
        start = row + 1
    if start < len(lines):
        yield read(start, len(lines))


def _unread_line(line: bytes, schema: pa.Schema) -> Unread:
    """A JSON line the explicit schema refuses: the first cell that does not fit, and the
    row with what fits."""
    document = json.loads(line)
    values, reasons = {}, []
    for field in schema:
        value = document.get(field.name)
        fits = value is None or _fits(value, field.type)
        values[field.name] = value if fits else None
        if not fits:
            shown = json.dumps(value)[:_SHOWN]
            reasons.append(f"column {field.name!r} must be {field.type}, got {shown}")
    reason = reasons[0] if reasons else "its values do not fit the file's columns"
    return Unread(reason, pa.Table.from_pylist([values], schema=schema))


def _fits(value: Any, target: pa.DataType) -> bool:
    options = pajson.ParseOptions(explicit_schema=pa.schema([("v", target)]))
    body = json.dumps({"v": value}).encode()
    try:
        pajson.read_json(pa.BufferReader(body), parse_options=options)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return False
    return True


def _split(table: pa.Table, rows: int) -> Iterator[pa.Table]:
    for start in range(0, table.num_rows, rows):
        yield table.slice(start, rows)
