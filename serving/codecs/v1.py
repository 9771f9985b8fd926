"""The native / KServe V1 protocol: ``{"instances": [...]}`` or ``{"inputs": {...}}`` in,
``{"predictions": [...]}`` out.

Instances are objects (by feature name) or lists (positional, in the registered feature
order); ``inputs`` is columnar (``{"feature": [values...]}``) or, as KServe allows, a
list of instances.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from serving.codecs import DecodeError
from serving.errors import WrongType

_SHAPE = "expected {'instances': [...]} or {'inputs': {column: [values]}}"


def decode(body: bytes, features: list[str]) -> pa.Table:
    """The rows of a V1 request body; positional instances take ``features`` as names."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise DecodeError("application/json", str(err)) from None
    if not isinstance(document, dict):
        raise DecodeError("application/json", _SHAPE)
    rows = document.get("instances", document.get("inputs"))
    if isinstance(rows, dict):
        return _columns(rows)
    return rows_to_table(rows, features)


def rows_to_table(rows: Any, features: list[str]) -> pa.Table:
    """Instances (all objects by feature name, or all lists in ``features`` order) as a table."""
    if not isinstance(rows, list) or not rows:
        raise DecodeError("application/json", f"{_SHAPE}, with at least one row")
    if all(isinstance(row, dict) for row in rows):
        return _columns({name: [row.get(name) for row in rows] for name in _keys(rows)})
    if all(isinstance(row, list) for row in rows):
        return _positional(rows, features)
    raise DecodeError("application/json", "instances must all be objects or all be lists")


def encode(table: pa.Table, name: str, version: int) -> dict[str, Any]:
    return {"predictions": table.to_pylist(), "model": name, "version": version}


def _keys(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def _positional(rows: list[list[Any]], features: list[str]) -> pa.Table:
    for index, row in enumerate(rows):
        if len(row) != len(features):
            raise DecodeError(
                "application/json",
                f"instance {index} has {len(row)} values; the model takes {len(features)} "
                f"({', '.join(features)})",
            )
    return _columns(dict(zip(features, map(list, zip(*rows, strict=True)), strict=True)))


def _columns(columns: dict[str, Any]) -> pa.Table:
    arrays, lengths = {}, set()
    for name, values in columns.items():
        if not isinstance(values, list):
            raise DecodeError("application/json", f"column {name!r} must be a list of values")
        try:
            arrays[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            raise WrongType(
                name, "one type (numbers, strings or booleans)", "mixed values"
            ) from None
        lengths.add(len(values))
    if len(lengths) > 1:
        raise DecodeError("application/json", "columns have different lengths")
    return pa.table(arrays)
