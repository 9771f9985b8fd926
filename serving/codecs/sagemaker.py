"""SageMaker's container contract for ``/invocations``: CSV (headerless, as SageMaker sends
it, or with a header row), JSON, JSON lines, parquet and Arrow bodies; ``Accept`` picks
the answer's format.
"""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.csv as pacsv

from serving import codecs
from serving.codecs import v1

ACCEPTED = [codecs.CSV, codecs.JSON, codecs.JSONL, codecs.PARQUET, codecs.ARROW]


def decode(
    body: bytes, kind: str, features: list[str], bounds: codecs.Bounds | None = None
) -> codecs.Rows:
    if not body.strip():
        raise codecs.DecodeError(kind, "the body is empty")
    if kind == codecs.CSV:
        return _csv(body, features, bounds)
    if kind == codecs.JSON:
        return _json(body, features, bounds)
    if kind == codecs.JSONL:
        lines = [line for line in body.splitlines() if line.strip()]
        if lines[0].lstrip().startswith(b"["):  # positional rows, one per line
            return v1.rows_of([_parse(line) for line in lines], features, bounds)
        return codecs.decode(body, codecs.JSONL, bounds)
    return codecs.decode(body, kind, bounds)


def encode(table: pa.Table, kind: str) -> bytes:
    """``table`` as ``kind``: JSON ``{"predictions": [row, ...]}``, CSV values only (an
    embedding's K values as K cells, a list of any length as its JSON text: see
    :func:`serving.codecs.csv_table`), the others as :func:`serving.codecs.encode` writes them."""
    if kind == codecs.JSON:
        return json.dumps({"predictions": codecs.json_safe(table).to_pylist()}).encode()
    if kind == codecs.CSV:  # SageMaker convention: values only, one line per row
        sink = io.BytesIO()
        options = pacsv.WriteOptions(include_header=False)
        pacsv.write_csv(codecs.csv_table(table), sink, options)  # an embedding: K values
        return sink.getvalue()
    return codecs.encode(table, kind)


def _csv(body: bytes, features: list[str], bounds: codecs.Bounds | None) -> pa.Table:
    first_line = body.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    # A first line naming any feature is a header row, one missing a feature too: the
    # predictor then names the missing column (a count of values would not).
    if {cell.strip().strip('"') for cell in first_line.split(",")} & set(features):
        return codecs.decode(body, codecs.CSV, bounds)
    width = len(first_line.split(","))
    if width != len(features):
        raise codecs.DecodeError(
            codecs.CSV,
            f"rows have {width} values; the model takes {len(features)} ({', '.join(features)}), "
            "or send a header row naming them",
        )
    try:
        options = pacsv.ReadOptions(column_names=features)
        table = pacsv.read_csv(pa.BufferReader(body), read_options=options)
    except pa.ArrowInvalid as err:
        raise codecs.DecodeError(codecs.CSV, codecs.reason(err)) from None
    return (bounds or codecs.Bounds()).table(table)


def _json(body: bytes, features: list[str], bounds: codecs.Bounds | None) -> codecs.Rows:
    if body.lstrip().startswith(b"["):  # a bare list: records, or positional rows
        return v1.rows_of(_parse(body), features, bounds)
    return v1.decode(body, features, bounds)


def _parse(text: bytes) -> object:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:  # RecursionError: nested past the stack
        raise codecs.DecodeError(codecs.JSON, str(err)) from None
