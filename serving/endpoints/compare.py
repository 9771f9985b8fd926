"""The shadow report (``mmserve endpoints compare``): primary and shadow answers joined by
inference id and row, from the endpoint's capture.

- ``agreement``: the share of joined rows whose ``label`` is the same in both answers;
- ``deltas``: per numeric output column both give, the mean and largest ``|shadow - primary|``;
- ``latency_ms``: p50 and p99 of the requests' latency, each side (a request counts once).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from serving.endpoints import capture
from serving.store import Store

COLUMNS = ["inference_id", "row", "role", "model", "output", "error", "latency_ms"]
"""What the report reads of the capture: not the inputs (the server answers it over HTTP,
and inputs, images or documents among them, are most of a capture)."""


def compare(store: Store, endpoint: str) -> dict[str, Any]:
    """The report of ``endpoint``'s captured primary and shadow answers."""
    rows = capture.read(store, endpoint, COLUMNS)
    primary = rows.filter(pc.equal(rows["role"], "primary"))
    shadow = rows.filter(pc.equal(rows["role"], "shadow"))
    keys = ["inference_id", "row"]
    pairs = primary.select([*keys, "output"]).join(
        shadow.select([*keys, "output"]), keys, join_type="inner", right_suffix="_shadow"
    )
    answered = pairs.filter(
        pc.and_(pc.is_valid(pairs["output"]), pc.is_valid(pairs["output_shadow"]))
    )
    left = [json.loads(v) for v in answered["output"].to_pylist()]
    right = [json.loads(v) for v in answered["output_shadow"].to_pylist()]
    return {
        "endpoint": endpoint,
        "pairs": answered.num_rows,
        "agreement": _agreement(left, right),
        "deltas": _deltas(left, right),
        "primary": _side(primary),
        "shadow": _side(shadow),
    }


def _agreement(left: list[dict[str, Any]], right: list[dict[str, Any]]) -> float | None:
    pairs = zip(left, right, strict=True)
    labelled = [(a["label"], b["label"]) for a, b in pairs if "label" in a and "label" in b]
    if not labelled:
        return None
    return sum(a == b for a, b in labelled) / len(labelled)


def _deltas(left: list[dict[str, Any]], right: list[dict[str, Any]]) -> dict[str, Any]:
    if not left:
        return {}
    common = [c for c in left[0] if c in right[0] and c != "label" and _numeric(left[0][c])]
    deltas = {}
    for column in common:
        a = np.array([row.get(column) for row in left], dtype=np.float64)
        b = np.array([row.get(column) for row in right], dtype=np.float64)
        gap = np.abs(b - a)
        deltas[column] = {"mean_abs": float(np.mean(gap)), "max_abs": float(np.max(gap))}
    return deltas


def _side(table: pa.Table) -> dict[str, Any]:
    """Requests, rows, errors, models and latency of one side of the comparison."""
    first = table.group_by("inference_id").aggregate([("latency_ms", "max")])
    latency = np.array(first["latency_ms_max"].to_pylist(), dtype=np.float64)
    errors = table.filter(pc.is_valid(table["error"]))
    return {
        "requests": first.num_rows,
        "rows": table.num_rows,
        "errors": errors.group_by("inference_id").aggregate([]).num_rows,
        "models": sorted(set(table["model"].to_pylist())),
        "latency_ms": {
            "p50": float(np.percentile(latency, 50)) if latency.size else None,
            "p99": float(np.percentile(latency, 99)) if latency.size else None,
        },
    }


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
