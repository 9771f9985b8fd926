"""Stream events to the model's input table; scored rows and failures to stream entries.

An event carries the features as fields (strings, as Redis keeps them), or one field
(``data`` by default) holding a JSON object of them, beside any other fields. Arrow
converts the values to the types registered with the model, so ``"0.1"`` in a field and
``0.1`` in a JSON document become the same double as 0.1 in an HTTP request. Problems are
found per event and name the field: ``missing field 'amount'``, ``field 'amount' is not a
number: 'abc'``; such an event is set aside, the others are scored.

A binary feature's field holds a file: its bytes in base64, or a reference to an object of
the consumer's store (``s3://…``, ``file://…``, ``store:<key>``), read by
``workers/_stream_files.py``. A binary output is written as base64 text.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from serving.codecs import base64_texts, json_texts
from serving.codecs.raw import is_binary
from serving.errors import InvalidField, MissingField, MMServeError
from serving.metadata import Feature
from workers._stream_files import Files
from workers._stream_log import DeadLetter, Event, Outputs

_UNCONVERTIBLE = (
    pa.ArrowInvalid,
    pa.ArrowTypeError,
    pa.ArrowNotImplementedError,
    OverflowError,
    TypeError,
    ValueError,
)
Problems = dict[int, list[MMServeError]]
"""Event index -> what is wrong with it, in the order found."""


@dataclass(frozen=True, slots=True)
class Decoded:
    """A batch of events as model input."""

    table: pa.Table
    """The good events' features, in the registered order and types."""
    rows: list[int]
    """The index (in the batch) of the event of each row of ``table``."""
    ids: list[str | None]
    """The id field of every event of the batch (``None``: not asked for, or absent)."""
    bad: Problems


def decode(
    events: Sequence[Event],
    features: Sequence[Feature],
    json_field: str,
    id_field: str | None,
    files: Files | None = None,
) -> Decoded:
    """The events' features as one table, and the events that do not fit, with why; the
    files of binary features read by ``files`` (none: base64 only, up to 256 MB)."""
    fast = _by_position(events, features, json_field, id_field)
    if fast is not None:
        return fast
    rows, bad = _rows(events, json_field)
    broken = set(bad)  # unreadable documents: their missing fields are no news
    ids = _ids(rows, id_field, bad, broken)
    rows = _files(features, rows, files or Files(None, 256 << 20, "the stream's limit"), bad)
    columns = _columns(features, rows, bad, broken)
    table = pa.Table.from_arrays(columns, names=[f.name for f in features])
    good = [i for i in range(len(rows)) if i not in bad]
    if len(good) < len(rows):
        table = table.take(pa.array(good, pa.int64()))  # a bare [] would be null-typed
    return Decoded(table, good, ids, bad)


def outputs(
    scored: pa.Table,
    events: Sequence[Event],
    ids: Sequence[str | None],
    id_field: str | None,
    model: str,
) -> Outputs:
    """The output entries of the ``scored`` rows, the answers to ``events`` (whose id
    fields are ``ids``): the source entry id, the id field, the outputs (as text: a list
    output such as an embedding as a JSON array), the model's name and version (``model``
    is its ``name:version``)."""
    columns: dict[str, list[str]] = {}
    if id_field is not None:
        columns[id_field] = [i or "" for i in ids]
    for name, column in zip(scored.column_names, scored.columns, strict=True):
        if pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type):
            text = json_texts(column).to_pylist()  # an embedding: "[0.5,1.0]"
        elif is_binary(column.type):  # a file: its bytes as base64 text
            text = base64_texts(column).to_pylist()
        else:  # Arrow writes floats in their shortest form that reads back to the same bits.
            text = pc.cast(column, pa.string()).to_pylist()
        columns[name] = [v if v is not None else "" for v in text]
    name, version = model.split(":")
    return Outputs([e.id for e in events], columns, {"model": name, "version": version})


def dead_letter(
    event: Event, errors: Sequence[MMServeError], id_field: str | None, event_id: str | None
) -> DeadLetter:
    """The dead-letter entry of ``event``: the first error's type, every error's message,
    the deliveries so far and the event's own fields (as JSON, to replay it)."""
    fields = {
        "source_id": event.id,
        "error": type(errors[0]).__name__,
        "reason": "; ".join(e.message for e in errors),
        "deliveries": str(event.deliveries),
    }
    if id_field is not None and event_id is not None:
        fields[id_field] = event_id
    if event.fields is not None:
        fields["event"] = json.dumps(event.fields, separators=(",", ":"))
    return DeadLetter(event.id, fields)


def _by_position(
    events: Sequence[Event], features: Sequence[Feature], json_field: str, id_field: str | None
) -> Decoded | None:
    """The batch decoded by position, when every event came as the same flat list of names
    (a producer's events, as a rule), with every feature and the id, no JSON document and
    no file: each feature's values are one slice of all the events' values together, and
    each type's features one Arrow cast. ``None`` (decode them one by one, naming what is
    wrong) when that does not hold, or a value does not convert."""
    flats = [event.flat for event in events]
    types = [f.type for f in features]  # each made from its name: once
    if not flats or any(is_binary(t) for t in types):
        return None
    first = flats[0]
    if first is None:
        return None
    names, width = first[::2], len(first)
    where = {name: k for k, name in enumerate(names)}  # a repeated name: its last value, as a dict
    wanted = [f.name for f in features] + ([id_field] if id_field is not None else [])
    if json_field in where or any(name not in where for name in wanted):
        return None
    if any(flat is None or len(flat) != width for flat in flats):
        return None
    values = list(itertools.chain.from_iterable(flats))  # type: ignore[arg-type]
    if values[::2] != names * len(flats):
        return None
    stride = width  # one event's values are ``width`` apart in ``values``

    def column(name: str) -> list[str]:
        return values[2 * where[name] + 1 :: stride]

    n = len(flats)
    columns: list[pa.Array] = [pa.nulls(n)] * len(features)
    by_type: dict[pa.DataType, list[int]] = {}
    for j, t in enumerate(types):
        by_type.setdefault(t, []).append(j)
    for target, members in by_type.items():
        together: list[str] = []
        for j in members:
            together += column(features[j].name)
        try:
            converted = _convert(together, target)
        except _UNCONVERTIBLE:
            return None
        if converted.null_count:  # only a cast gives nulls from text: named one by one
            return None
        for k, j in enumerate(members):
            columns[j] = converted.slice(k * n, n)
    table = pa.Table.from_arrays(columns, names=[f.name for f in features])
    ids: list[str | None] = list(column(id_field)) if id_field is not None else [None] * n
    return Decoded(table, list(range(n)), ids, {})


def _rows(events: Sequence[Event], json_field: str) -> tuple[list[Mapping[str, Any]], Problems]:
    rows: list[Mapping[str, Any]] = []
    bad: Problems = {}
    for i, event in enumerate(events):
        fields = event.fields or {}
        document = fields.get(json_field)
        if document is None:
            rows.append(fields)
            continue
        try:
            parsed = json.loads(document)
        except ValueError as err:
            reason = err.msg if isinstance(err, json.JSONDecodeError) else str(err)
            bad[i] = [InvalidField(json_field, document, "a JSON object", reason)]
            parsed = {}
        if not isinstance(parsed, dict):
            bad[i] = [InvalidField(json_field, document, "a JSON object")]
            parsed = {}
        rows.append({**fields, **parsed})
    return rows, bad


def _files(
    features: Sequence[Feature], rows: Sequence[Mapping[str, Any]], files: Files, bad: Problems
) -> list[Mapping[str, Any]]:
    """``rows`` with the text of each binary feature replaced by the file's bytes; a text
    that gives none is reported (its row holds no bytes, and is set aside)."""
    names = [f.name for f in features if is_binary(f.type)]
    if not names:
        return list(rows)
    read: list[Mapping[str, Any]] = []
    for i, row in enumerate(rows):
        if i in bad or not any(isinstance(row.get(name), str) for name in names):
            read.append(row)
            continue
        row = dict(row)
        for name in names:
            if isinstance(row.get(name), str):
                try:
                    row[name] = files.read(name, row[name])
                except MMServeError as err:
                    bad.setdefault(i, []).append(err)
                    row[name] = b""
        read.append(row)
    return read


def _ids(
    rows: Sequence[Mapping[str, Any]], id_field: str | None, bad: Problems, broken: set[int]
) -> list[str | None]:
    if id_field is None:
        return [None] * len(rows)
    ids: list[str | None] = []
    for i, row in enumerate(rows):
        value = row.get(id_field)
        if value is None and i not in broken:
            bad.setdefault(i, []).append(MissingField(id_field))
        ids.append(None if value is None else str(value))
    return ids


def _columns(
    features: Sequence[Feature], rows: Sequence[Mapping[str, Any]], bad: Problems, broken: set[int]
) -> list[pa.Array]:
    """One array per feature. The features of one type are converted together, in one
    Arrow cast of all their values (a call per column would cost more than the values);
    when that fails, column by column and value by value, to name each bad one."""
    by_type: dict[pa.DataType, list[int]] = {}
    for j, feature in enumerate(features):
        by_type.setdefault(feature.type, []).append(j)
    n = len(rows)
    columns: list[pa.Array] = [pa.nulls(n)] * len(features)
    for target, members in by_type.items():
        values = [row.get(features[j].name) for j in members for row in rows]
        try:
            together = _convert(values, target)
        except _UNCONVERTIBLE:
            for j in members:
                columns[j] = _column(features[j], rows, bad, broken)
            continue
        for k, j in enumerate(members):
            columns[j] = column = together.slice(k * n, n)
            if column.null_count and not features[j].nullable:
                nulls = np.flatnonzero(pc.is_null(column).to_numpy(zero_copy_only=False))
                _absent(features[j], rows, nulls.tolist(), bad, broken)
    return columns


def _column(
    feature: Feature, rows: Sequence[Mapping[str, Any]], bad: Problems, broken: set[int]
) -> pa.Array:
    values = [row.get(feature.name) for row in rows]
    try:
        column = _convert(values, feature.type)
    except _UNCONVERTIBLE:
        column = _by_value(feature, values, bad, broken)
    if not feature.nullable:
        _absent(feature, rows, [i for i, v in enumerate(values) if v is None], bad, broken)
    return column


def _by_value(feature: Feature, values: list[Any], bad: Problems, broken: set[int]) -> pa.Array:
    """``values`` converted one by one: each that does not convert is reported (and is null
    in the column; its event is set aside)."""
    converted: list[Any] = []
    for i, value in enumerate(values):
        try:
            converted.append(None if value is None else _convert([value], feature.type)[0].as_py())
        except _UNCONVERTIBLE:
            if i not in broken:
                bad.setdefault(i, []).append(InvalidField(feature.name, value, _kind(feature)))
            converted.append(None)
    return pa.array(converted, type=feature.type)


def _convert(values: list[Any], target: pa.DataType) -> pa.Array:
    """``values`` (strings, or the numbers, booleans and strings of JSON) as an array of
    ``target``: a safe Arrow cast, so a fraction never becomes an integer."""
    array = pa.array(values)
    return array if array.type == target else array.cast(target)


def _absent(
    feature: Feature,
    rows: Sequence[Mapping[str, Any]],
    indices: Sequence[int],
    bad: Problems,
    broken: set[int],
) -> None:
    """Report the events with no value for ``feature``, which takes no nulls."""
    for i in indices:
        if i in broken:
            continue
        if feature.name in rows[i]:  # a JSON null
            bad.setdefault(i, []).append(InvalidField(feature.name, None, _kind(feature)))
        else:
            bad.setdefault(i, []).append(MissingField(feature.name))


def _kind(feature: Feature) -> str:
    t = feature.type
    if pa.types.is_integer(t):
        return "an integer"
    if pa.types.is_floating(t):
        return "a number"
    if pa.types.is_boolean(t):
        return "a boolean"
    if is_binary(t):
        return "base64 or a reference"
    return "a string" if pa.types.is_string(t) else f"a value of type {t}"
