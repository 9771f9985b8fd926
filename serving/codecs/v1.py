"""The native / KServe V1 protocol: ``{"instances": [...]}`` or ``{"inputs": {...}}`` in,
``{"predictions": [...]}`` out.

Instances are objects (by feature name) or lists (positional, in the registered feature
order); ``inputs`` is columnar (``{"feature": [values...]}``) or, as KServe allows, a
list of instances.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from serving.codecs import ARROW, JSON, DecodeError, Matrix, Rows, column, json_safe, media_type

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


def decode(body: bytes, features: list[str]) -> Rows:
    """The rows of a V1 request body; positional instances take ``features`` as names."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as err:  # RecursionError: nested past the stack
        raise DecodeError(JSON, str(err)) from None
    if not isinstance(document, dict):
        raise DecodeError(JSON, _SHAPE)
    rows = document.get("instances", document.get("inputs"))
    if isinstance(rows, dict):
        return _columns(rows)
    return rows_of(rows, features)


def rows_of(rows: Any, features: list[str]) -> Rows:
    """Instances (all objects by feature name, or all lists in ``features`` order) as a table."""
    if not isinstance(rows, list) or not rows:
        raise DecodeError(JSON, f"{_SHAPE}, with at least one row")
    if all(isinstance(row, dict) for row in rows):
        return _columns({name: [row.get(name) for row in rows] for name in _keys(rows)})
    if all(isinstance(row, list) for row in rows):
        return _positional(rows, features)
    raise DecodeError(JSON, "instances must all be objects or all be lists")


def encode(
    table: pa.Table, name: str, version: int, rows: list[dict[str, Any]] | None = None
) -> bytes:
    """``{"predictions": [row, ...], "model": name, "version": n}``, each output in its own
    type (a string or int label, an embedding as an array); NaN and infinities (which JSON
    cannot spell) as null. ``rows``: the table's rows, if already made."""
    predictions = rows if rows is not None else table.to_pylist()
    answer = {"predictions": predictions, "model": name, "version": version}
    try:
        return json.dumps(answer, allow_nan=False, separators=(",", ":")).encode()
    except ValueError:  # rare: a model answered NaN or inf
        answer["predictions"] = json_safe(table).to_pylist()
        return json.dumps(answer, separators=(",", ":")).encode()


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
    if not _is_text(name):
        raise DecodeError(JSON, f"column name {name!r} is not valid Unicode text")
    try:
        return column(values, name)
    except UnicodeEncodeError:
        raise DecodeError(JSON, f"column {name!r} has text that is not valid Unicode") from None


def _is_text(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True
