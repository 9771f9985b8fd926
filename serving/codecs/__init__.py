"""Tables to and from bytes: CSV, JSON records, JSON lines, parquet and Arrow IPC.

The protocol codecs of the HTTP routes (V1, V2, SageMaker) build on these; the CLI picks
one by file extension.

Answers keep their columns' types (see ``ModelVersion.output_types``): a string or int
label is a JSON string or integer, a CSV cell as written; a list output is a JSON array, a
parquet or Arrow list column. CSV has no lists (:func:`csv_table`): a fixed-size list of K
values (an embedding) ``name`` is K columns ``name_0`` .. ``name_<K-1>``, and a list of
any length is one column holding each row's list as JSON text (``[0.5,1.0]``). A binary
column (bytes) is ``{"b64": "<base64>"}`` in JSON (KServe V1's spelling), its base64 text in
CSV, and binary in parquet and Arrow.
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from serving.codecs._bounds import Bounds, Tally
from serving.codecs._jsonl import CheckedLines, NotJsonLines, check_json_lines
from serving.errors import InputError, OutOfTypeRange, UnsupportedFormat, WrongType

CSV = "text/csv"
JSON = "application/json"
JSONL = "application/jsonlines"
PARQUET = "application/x-parquet"
ARROW = "application/vnd.apache.arrow.stream"

MEDIA_TYPES = [CSV, JSON, JSONL, PARQUET, ARROW]


@dataclass(frozen=True, slots=True)
class Matrix:
    """Rows that arrived as one float matrix, columns in the model's feature order: JSON
    rows of numbers, a V2 ``[N, K]`` tensor. The predictor takes it as it takes a table of
    the same columns, and with the same answers; it only skips building Arrow columns that
    it would stack back into this matrix (the cost of a one-row request)."""

    values: np.ndarray
    names: Sequence[str]

    def table(self) -> pa.Table:
        """The same rows as a table (columns sliced from one column-major copy)."""
        rows = len(self.values)
        flat = pa.array(self.values.ravel(order="F"))
        columns = [flat.slice(j * rows, rows) for j in range(len(self.names))]
        return pa.Table.from_arrays(columns, names=list(self.names))


@dataclass(frozen=True, slots=True)
class Records:
    """Rows that arrived as JSON objects by feature name (V1 instances). The predictor takes
    rows whose keys and values fit the schema exactly as they are, and builds their Arrow
    columns once for a whole micro-batch (a one-row request's own table was most of its
    decoding); it takes any other as :meth:`table`, with the same answers and errors."""

    rows: list[dict[str, Any]]
    table: Callable[[], pa.Table]
    """The same rows as a table, as the decoder makes it of them (its refusals included)."""


Rows: TypeAlias = pa.Table | Matrix | Records
"""What decoders hand the predictor."""
_SUFFIXES = {
    ".csv": CSV,
    ".json": JSON,
    ".jsonl": JSONL,
    ".ndjson": JSONL,
    ".parquet": PARQUET,
    ".pq": PARQUET,
    ".arrow": ARROW,
    ".arrows": ARROW,
}


class DecodeError(InputError):
    """A body (or, with ``source``, a file) its format cannot read."""

    def __init__(self, media_type: str, reason: str, source: str | None = None) -> None:
        super().__init__(f"cannot read {source or f'the {media_type} body'}: {reason}")
        self.media_type, self.reason, self.source = media_type, reason, source


def media_type(header: str | None, default: str, accepted: list[str]) -> str:
    """The media type a Content-Type/Accept header names (``default`` if none or ``*/*``),
    refused with 415 unless it is one of ``accepted``."""
    value = (header or "").split(";")[0].strip().lower()
    if value in ("", "*/*"):
        return default
    if value not in accepted:
        raise UnsupportedFormat(value, accepted)
    return value


def media_type_of(path: Path) -> str:
    try:
        return _SUFFIXES[path.suffix.lower()]
    except KeyError:
        raise UnsupportedFormat(path.suffix or path.name, sorted(_SUFFIXES)) from None


_UNREADABLE = (pa.ArrowException, OSError, ValueError, TypeError, OverflowError, RecursionError)


def decode(data: bytes, media_type: str, bounds: Bounds | None = None) -> pa.Table:
    """The rows in ``data``, read as ``media_type``, within ``bounds`` (by default, the
    default settings'): past one, :class:`~serving.errors.DecodedTooLarge` (413), or past
    its deadline :class:`~serving.errors.RequestTimeout`, as soon as the rows read show it."""
    if not data:
        raise DecodeError(media_type, "the body is empty")
    bounds = bounds or Bounds()
    try:
        if media_type == CSV:
            return bounds.table(pacsv.read_csv(pa.BufferReader(data)))
        if media_type == JSONL:
            return bounds.table(_json_lines(data))
        if media_type == JSON:
            return bounds.table(_records(json.loads(data)))
        if media_type == PARQUET:
            return _valid(_parquet(data, bounds))
        if media_type == ARROW:
            return _valid(_arrow(data, bounds))
    # A truncated Arrow or parquet body fails as an OSError (a read past its end); JSON nested
    # deeper than Python's stack, as a RecursionError; an integer past int64, as an OverflowError.
    except _UNREADABLE as err:
        raise DecodeError(media_type, reason(err)) from None
    raise UnsupportedFormat(media_type, MEDIA_TYPES)


def encode(table: pa.Table, media_type: str) -> bytes:
    """``table`` as bytes of ``media_type``."""
    if media_type == CSV:
        sink = io.BytesIO()
        pacsv.write_csv(csv_table(table), sink)
        return sink.getvalue()
    if media_type in (JSON, JSONL):
        rows = json_safe(table).to_pylist()
        if media_type == JSON:
            return json.dumps(rows).encode()
        return "".join(json.dumps(row) + "\n" for row in rows).encode()
    if media_type == PARQUET:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        return sink.getvalue().to_pybytes()
    if media_type == ARROW:
        sink = pa.BufferOutputStream()
        with ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes()
    raise UnsupportedFormat(media_type, MEDIA_TYPES)


def json_safe(table: pa.Table) -> pa.Table:
    """``table`` as JSON can spell it: NaN and infinities as nulls, in lists too (a model fed
    extreme values can answer NaN; Python would write the invalid token ``NaN``), and a
    binary column's values as ``{"b64": "<base64>"}`` objects (KServe V1's convention)."""
    for index, field in enumerate(table.schema):
        if pa.types.is_floating(field.type):
            column = table.column(index)
            finite = pc.is_finite(column)
            if not pc.all(finite).as_py():
                table = table.set_column(index, field, pc.if_else(finite, column, None))
        elif _is_list(field.type) and pa.types.is_floating(field.type.value_type):
            column = table.column(index)
            if not pc.all(pc.is_finite(pc.list_flatten(column))).as_py():  # rare: Python
                rows = [_finite(row) for row in column.to_pylist()]
                table = table.set_column(index, field, pa.array(rows, field.type))
        elif _is_bytes(field.type):
            texts = base64_texts(table.column(index))
            objects = pa.StructArray.from_arrays([texts], names=["b64"], mask=texts.is_null())
            table = table.set_column(index, field.name, objects)
    return table


def csv_table(table: pa.Table) -> pa.Table:
    """``table`` as CSV can hold it: a fixed-size list column ``name`` of K values (an
    embedding) as K columns ``name_0`` .. ``name_<K-1>``; a list of any length as one column
    of each row's list as JSON text (CSV has no ragged rows); a binary column as its values'
    base64 text (CSV holds only text); other columns as they are."""
    if not any(_is_list(t) or _is_bytes(t) for t in table.schema.types):
        return table
    names: list[str] = []
    columns: list[pa.ChunkedArray] = []
    for field, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_fixed_size_list(field.type):
            for k in range(field.type.list_size):
                names.append(f"{field.name}_{k}")
                columns.append(pc.list_element(column, k))
        elif _is_bytes(field.type):
            names.append(field.name)
            columns.append(pa.chunked_array([base64_texts(column)]))
        else:
            names.append(field.name)
            columns.append(json_texts(column) if _is_list(field.type) else column)
    return pa.table(columns, names=names)


def json_texts(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Each value of ``column`` (a list column) as compact JSON text; a null stays null."""
    safe = json_safe(pa.table({"_": column})).column(0).to_pylist()
    texts = [None if v is None else json.dumps(v, separators=(",", ":")) for v in safe]
    return pa.chunked_array([pa.array(texts, pa.string())])


def base64_texts(column: pa.ChunkedArray) -> pa.Array:
    """Each value of a binary column as standard base64 text; a null stays null."""
    encode = base64.b64encode
    texts = [None if v is None else encode(v).decode("ascii") for v in column.to_pylist()]
    return pa.array(texts, pa.string())


def _is_bytes(t: pa.DataType) -> bool:
    return (
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or pa.types.is_binary_view(t)
    )


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_fixed_size_list(t)


def _finite(row: list[float | None] | None) -> list[float | None] | None:
    if row is None:
        return None
    return [v if v is not None and math.isfinite(v) else None for v in row]


def read_file(path: Path) -> pa.Table:
    """The rows of a local file (the machine's own user's: no decode bound). A file that
    cannot be read or decoded is named, not called a body."""
    kind = media_type_of(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DecodeError(kind, err.strerror or str(err), str(path)) from None
    try:
        return decode(data, kind, Bounds.unbounded())
    except DecodeError as err:
        raise DecodeError(kind, err.reason, str(path)) from None


def write_file(table: pa.Table, path: Path) -> None:
    path.write_bytes(encode(table, media_type_of(path)))


def reason(err: BaseException) -> str:
    """The first line of ``err``'s message (pyarrow's run to several), or its type if none."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _valid(table: pa.Table) -> pa.Table:
    """``table``, once its bytes are known to hold what its schema says: binary formats carry
    names and strings that are not UTF-8, or offsets past their buffers, which only fail
    (or worse) where they are used. Raises a ValueError (or ArrowInvalid) otherwise."""
    table.validate(full=True)
    for field in table.schema:  # names are decoded only when read
        _ = field.name
    return table


def read_json_lines(stream: object, where: str) -> Iterator[pa.RecordBatch]:
    """The record batches of the JSON lines in ``stream`` (a file), read a block at a time;
    each block is checked before pyarrow's reader sees it (:mod:`serving.codecs._jsonl`).
    A refused line is a :class:`DecodeError` naming ``where`` (the file) and the line."""
    try:
        yield from pajson.open_json(CheckedLines(stream))
    except NotJsonLines as err:
        raise DecodeError(JSONL, str(err), source=where) from None


_BATCH_ROWS = 4096
"""Rows of parquet read at a time: a decode is stopped within a batch of its bound."""


def _parquet(data: bytes, bounds: Bounds) -> pa.Table:
    """The rows of a parquet body, counted from its metadata first, then a batch at a time."""
    file = pq.ParquetFile(pa.BufferReader(data))
    meta = file.metadata
    declared = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    bounds.check(meta.num_rows, meta.num_columns, declared)
    return _counted(file.iter_batches(batch_size=_BATCH_ROWS), file.schema_arrow, bounds)


def _arrow(data: bytes, bounds: Bounds) -> pa.Table:
    reader = ipc.open_stream(data)
    return _counted(reader, reader.schema, bounds)


def _counted(batches: Iterator[pa.RecordBatch], schema: pa.Schema, bounds: Bounds) -> pa.Table:
    tally, read = Tally(bounds), []
    for batch in batches:
        tally.add(batch)
        read.append(batch)
    return pa.Table.from_batches(read, schema=schema)


def _json_lines(data: bytes) -> pa.Table:
    # pyarrow's reader kills the process on some lines (a null at a block's start, deep
    # nesting): it reads only lines checked first.
    if not data.strip():
        raise ValueError("the body has no JSON object")
    check_json_lines(data)
    return pajson.read_json(pa.BufferReader(data))


def _records(document: object) -> pa.Table:
    if not isinstance(document, list) or not all(isinstance(r, dict) for r in document):
        raise ValueError("expected a JSON array of objects, one per row")
    try:
        return pa.Table.from_pylist(document)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        for name in document[0] if document else ():  # the columns from_pylist takes
            column([row.get(name) for row in document], name)  # raises naming the row
        raise


def column(values: list[object], name: str) -> pa.Array:
    """JSON values as one Arrow column; a refusal names the column and the first row that
    does not fit: an integer past int64 (Arrow's JSON numbers), or a value of another kind
    than the column's first (a string among numbers)."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        raise _refusal(values, name) from None


_INT64 = range(-(2**63), 2**63)


def _refusal(values: list[object], name: str) -> InputError:
    first = next(((row, v) for row, v in enumerate(values) if v is not None), None)
    for row, value in enumerate(values):
        if type(value) is int and value not in _INT64:
            return OutOfTypeRange(name, row, str(value), "int64")
        if first is not None and value is not None and _kind(value) != _kind(first[1]):
            got = f"{_kind(first[1])} then {_kind(value)}"
            return WrongType(name, "one type (numbers, strings or booleans)", got, row)
    return WrongType(name, "one type (numbers, strings or booleans)", "mixed values")


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"
