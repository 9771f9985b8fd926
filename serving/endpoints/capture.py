"""Data capture: sampled requests and their answers, kept in the store as parquet::

    capture/<endpoint>/<variant>/<yyyy>/<mm>/<dd>/<hh>/<uuid>.parquet

One row per request row (:data:`SCHEMA`): the inference id and the row's index in its
request, endpoint, variant, ``role`` (``primary``, or ``shadow`` under the variant folder
``shadow``), the model version(s), time, the request's latency, and the row's input and
output as JSON objects (variants may take and give different columns). Records wait in a
bounded :class:`Buffer` and are written in batches by the server's flusher; a full buffer
drops new records (and counts them), it never makes a request wait.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
import pyarrow.parquet as pq

from serving.codecs import Matrix, Records, Rows
from serving.endpoints.pipeline import table_of
from serving.store import Store

ROOT = "capture"
SCHEMA = pa.schema(
    [
        ("inference_id", pa.string()),
        ("row", pa.int32()),
        ("endpoint", pa.string()),
        ("variant", pa.string()),
        ("role", pa.string()),
        ("model", pa.string()),
        ("time", pa.timestamp("us", tz="UTC")),
        ("latency_ms", pa.float64()),
        ("input", pa.string()),
        ("output", pa.string()),
        ("error", pa.string()),
    ]
)


@dataclass(frozen=True, slots=True)
class Record:
    """One captured request (all its rows) and what answered it."""

    endpoint: str
    variant: str
    role: str
    model: str
    inference_id: str
    time: datetime
    latency_ms: float
    inputs: Rows
    outputs: pa.Table | None
    error: str | None = None

    @property
    def rows(self) -> int:
        if isinstance(self.inputs, Matrix):
            return len(self.inputs.values)
        if isinstance(self.inputs, Records):
            return len(self.inputs.rows)
        return self.inputs.num_rows


class Buffer:
    """Records waiting to be written, at most ``max_rows`` rows of them."""

    def __init__(self, max_rows: int):
        self.max_rows = max_rows
        self.rows = 0
        self._records: list[Record] = []

    def add(self, record: Record) -> bool:
        """Keep ``record``; ``False`` (dropped) when it would pass the bound."""
        rows = record.rows
        if self.rows + rows > self.max_rows:
            return False
        self._records.append(record)
        self.rows += rows
        return True

    def drain(self) -> list[Record]:
        records, self._records, self.rows = self._records, [], 0
        return records


def write(store: Store, records: list[Record]) -> dict[str, int]:
    """Write ``records`` as one parquet file per endpoint, variant and hour; returns the rows
    written per endpoint."""
    groups: defaultdict[str, list[Record]] = defaultdict(list)
    for record in records:
        hour = record.time.strftime("%Y/%m/%d/%H")
        groups[f"{ROOT}/{record.endpoint}/{record.variant}/{hour}"].append(record)
    written: defaultdict[str, int] = defaultdict(int)
    for prefix, group in groups.items():
        table = pa.Table.from_pylist([row for r in group for row in _rows(r)], schema=SCHEMA)
        sink = io.BytesIO()
        pq.write_table(table, sink)
        store.write(f"{prefix}/{uuid.uuid4().hex}.parquet", sink.getvalue())
        written[group[0].endpoint] += table.num_rows
    return dict(written)


def read(store: Store, endpoint: str, columns: list[str] | None = None) -> pa.Table:
    """Every row captured for ``endpoint`` (every variant, every hour): of ``columns`` only,
    when given (a report that needs no inputs, often the bulk of the rows, keeps none)."""
    prefix = f"{ROOT}/{endpoint}"
    tables = [
        pq.read_table(pa.BufferReader(store.read(f"{prefix}/{key}")), columns=columns)
        for key in store.walk(prefix)
        if key.endswith(".parquet")
    ]
    if tables:
        return pa.concat_tables(tables)
    return SCHEMA.empty_table() if columns is None else SCHEMA.empty_table().select(columns)


def _rows(record: Record) -> list[dict[str, object]]:
    inputs = table_of(record.inputs).to_pylist()
    outputs = record.outputs.to_pylist() if record.outputs is not None else [None] * len(inputs)
    common = {
        "inference_id": record.inference_id,
        "endpoint": record.endpoint,
        "variant": record.variant,
        "role": record.role,
        "model": record.model,
        "time": record.time,
        "latency_ms": record.latency_ms,
        "error": record.error,
    }
    return [
        {**common, "row": i, "input": _json(x), "output": None if y is None else _json(y)}
        for i, (x, y) in enumerate(zip(inputs, outputs, strict=True))
    ]


def _json(row: dict[str, object]) -> str:
    return json.dumps(row, default=_jsonable, separators=(",", ":"))


def _jsonable(value: object) -> object:
    """A value JSON has no type for: bytes (a file) as ``{"b64": ...}``, KServe's way;
    anything else as its text."""
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode()}
    return str(value)
