"""The native / KServe V1 protocol: ``{"instances": [...]}`` or ``{"inputs": {...}}`` in,
``{"predictions": [...]}`` out.

Instances are objects (by feature name) or lists (positional, in the registered feature
order); ``inputs`` is columnar (``{"feature": [values...]}``) or, as KServe allows, a
list of instances. A cell ``{"b64": "<base64>"}`` is bytes (KServe's convention): a field
whose values are all such cells (or null) is a binary column, and a binary output is
answered the same way.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from serving.codecs import (
    ARROW,
    JSON,
    Bounds,
    DecodeError,
    Matrix,
    Records,
    Rows,
    _kind,
    column,
    json_safe,
    media_type,
)
from serving.errors import InputError

FORM = "application/x-www-form-urlencoded"
ACCEPTED = [JSON, ARROW]
_SHAPE = "expected {'instances': [...]} or {'inputs': {column: [values]}}"


def body_type(content_type: str | None) -> str:
    """The media type a V1 body is read as: Arrow IPC, else JSON; 415 for another format. A
    form's type is JSON too, as KServe reads any body: ``curl -d`` labels a body a form
    unless told otherwise."""
    if content_type is not None and content_type.lower().startswith(FORM):
        return JSON
    return media_type(content_type, JSON, ACCEPTED)


def decode(
    body: bytes, features: list[str], bounds: Bounds | None = None, records: bool = False
) -> Rows:
    """The rows of a V1 request body; positional instances take ``features`` as names. With
    ``bounds``, rows past them are refused (413), decoded bytes counted like any cell.
    ``records``: instances that are objects come as :class:`Records` (for the predictor)."""
    try:
        document = _loads(body)
    except (ValueError, RecursionError) as err:  # RecursionError: nested past the stack
        raise DecodeError(JSON, str(err)) from None
    if not isinstance(document, dict):
        raise DecodeError(JSON, _SHAPE)
    rows: Any = document.get("instances", document.get("inputs"))
    if isinstance(rows, dict):
        return _bounded(_columns(rows), bounds)
    if records and bounds is None and _all_objects(rows):
        return Records(rows, lambda: _objects(rows))
    return rows_of(rows, features, bounds)


# 19 digits in a row: maybe an integer past int64, which orjson reads as a float (rounded).
_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def _loads(body: bytes) -> Any:
    """The JSON document ``json.loads`` reads, read by orjson (a third of the time) where it
    reads the same: not where it would round an integer, nor what it refuses (NaN, a lone
    surrogate...), which json reads or refuses in its own words."""
    if not _LONG_DIGITS.search(body):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return json.loads(body)


def rows_of(rows: Any, features: list[str], bounds: Bounds | None = None) -> Rows:
    """Instances (all objects by feature name, or all lists in ``features`` order) as a table,
    within ``bounds`` if given."""
    if not isinstance(rows, list) or not rows:
        raise DecodeError(JSON, f"{_SHAPE}, with at least one row")
    if all(isinstance(row, dict) for row in rows):
        return _bounded(_objects(rows), bounds)
    if all(isinstance(row, list) for row in rows):
        return _bounded(_positional(rows, features), bounds)
    raise DecodeError(JSON, "instances must all be objects or all be lists")


def encode(
    table: pa.Table, name: str, version: int, rows: list[dict[str, Any]] | None = None
) -> bytes:
    """``{"predictions": [row, ...], "model": name, "version": n}``, each output in its own
    type (a string or int label, an embedding as an array, bytes as ``{"b64": "<base64>"}``);
    NaN and infinities (which JSON cannot spell) as null. ``rows``: the table's rows, if
    already made."""
    predictions = rows if rows is not None else table.to_pylist()
    answer = {"predictions": predictions, "model": name, "version": version}
    try:  # orjson writes NaN and infinities as null
        return orjson.dumps(answer)
    # Rare, and free to catch: a column holds bytes, or an int past 64 bits (a TypeError).
    # The common answer pays no check of its schema.
    except TypeError:
        answer["predictions"] = json_safe(table).to_pylist()
        return json.dumps(answer, separators=(",", ":")).encode()


def _bounded(rows: Rows, bounds: Bounds | None) -> Rows:
    if bounds is None:
        return rows
    if isinstance(rows, Matrix):
        bounds.check(len(rows.values), len(rows.names), rows.values.nbytes)
        return rows
    return bounds.table(rows)


def _all_objects(rows: Any) -> bool:
    return isinstance(rows, list) and bool(rows) and all(type(row) is dict for row in rows)


def _objects(rows: list[dict[str, Any]]) -> pa.Table:
    """Instances by name as columns: every key of any row, a null where a row lacks it."""
    return _columns({name: [row.get(name) for row in rows] for name in _keys(rows)})


def _keys(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def _positional(rows: list[list[Any]], features: list[str]) -> Rows:
    for index, row in enumerate(rows):
        if len(row) != len(features):
            raise DecodeError(
                JSON,
                f"instance {index} has {len(row)} values; the model takes {len(features)} "
                f"({', '.join(features)})",
            )
    numbers = _numbers(rows)
    if numbers is not None:
        return Matrix(numbers, features)
    return _columns(dict(zip(features, map(list, zip(*rows, strict=True)), strict=True)))


def _numbers(rows: list[list[Any]]) -> np.ndarray | None:
    """The rows as one float64 matrix, when every value is a JSON number that float64 holds
    exactly (the common case, worth a fast path); ``None`` sends the rest column by column."""
    kinds = {type(value) for row in rows for value in row}
    if not kinds or not kinds <= {float, int}:
        return None  # strings, booleans, nulls, nested values: typed per column
    matrix = np.array(rows, dtype=np.float64)
    if int in kinds and not (np.abs(matrix) < 2.0**53).all():
        return None  # integers past 2**53 would lose digits as floats
    return matrix


def _columns(columns: dict[str, Any]) -> pa.Table:
    arrays, lengths = {}, set()
    for name, values in columns.items():
        if not isinstance(values, list):
            raise DecodeError(JSON, f"column {name!r} must be a list of values")
        arrays[name] = _array(name, values)
        lengths.add(len(values))
    if len(lengths) > 1:
        raise DecodeError(JSON, "columns have different lengths")
    return pa.table(arrays)


def _array(name: str, values: list[Any]) -> pa.Array:
    # JSON can escape a lone surrogate ("\ud800"), which is no character: Arrow refuses it.
    if not is_text(name):
        raise DecodeError(JSON, f"column name {name!r} is not valid Unicode text")
    try:
        array = column(values, name)
    except UnicodeEncodeError:
        raise DecodeError(JSON, f"column {name!r} has text that is not valid Unicode") from None
    except InputError:
        if any(isinstance(v, dict) and _B64 in v for v in values):
            _binary(name, values)  # raises, naming the first cell that is not {"b64": text}
        raise
    # One type check per column: a struct with a "b64" field is the only way to bytes.
    if pa.types.is_struct(array.type) and array.type.get_field_index(_B64) >= 0:
        return _binary(name, values)
    return array


_B64 = "b64"


def _binary(name: str, values: list[Any]) -> pa.Array:
    """A field of ``{"b64": text}`` cells (or nulls) as a binary column of their bytes."""
    decoded: list[bytes | None] = []
    for row, value in enumerate(values):
        if value is None:
            decoded.append(None)
            continue
        text = value.get(_B64) if isinstance(value, dict) and len(value) == 1 else None
        if not isinstance(text, str):
            raise DecodeError(JSON, f"instance {row} field {name!r}: {_not_b64(value)}")
        try:
            decoded.append(base64.b64decode(text, validate=True))
        except ValueError:  # binascii.Error, or text that is not ASCII
            quoted = repr(text) if len(text) <= 40 else f"{text[:40]!r}..."
            raise DecodeError(
                JSON, f"instance {row} field {name!r}: {quoted} is not base64"
            ) from None
    return pa.array(decoded, pa.binary())


def _not_b64(value: object) -> str:
    if isinstance(value, dict) and list(value) == [_B64]:
        held = "null" if value[_B64] is None else _kind(value[_B64])
        return f'"b64" holds {held}, not base64 text'
    if isinstance(value, dict) and _B64 in value:
        keys = ", ".join(repr(key) for key in value)
        return f'an object with keys {keys}; bytes are {{"b64": "<base64>"}} alone'
    return f'{_kind(value)} where the field\'s other values are {{"b64": ...}} objects'


def is_text(value: str) -> bool:
    """Whether ``value`` is valid Unicode (JSON may escape a lone surrogate, which is not)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True
