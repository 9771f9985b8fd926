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
from serving.errors import UnsupportedFormat

ACCEPTED = [codecs.CSV, codecs.JSON, codecs.JSONL, codecs.PARQUET, codecs.ARROW]


def media_type(header: str | None, default: str) -> str:
    value = (header or "").split(";")[0].strip().lower()
    if value in ("", "*/*"):
        return default
    if value not in ACCEPTED:
        raise UnsupportedFormat(value, ACCEPTED)
    return value


def decode(body: bytes, kind: str, features: list[str]) -> pa.Table:
    if not body.strip():
        raise codecs.DecodeError(kind, "the body is empty")
    if kind == codecs.CSV:
        return _csv(body, features)
    if kind == codecs.JSON:
        return _json(body, features)
    if kind == codecs.JSONL:
        lines = [line for line in body.splitlines() if line.strip()]
        if lines and lines[0].lstrip().startswith(b"["):  # positional rows, one per line
            return v1.decode(b'{"instances": [' + b",".join(lines) + b"]}", features)
        return codecs.decode(body, codecs.JSONL)
    return codecs.decode(body, kind)


def encode(table: pa.Table, kind: str) -> bytes:
    if kind == codecs.JSON:
        return json.dumps({"predictions": table.to_pylist()}).encode()
    if kind == codecs.CSV:  # SageMaker convention: values only, one line per row
        sink = io.BytesIO()
        pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False))
        return sink.getvalue()
    return codecs.encode(table, kind)


def _csv(body: bytes, features: list[str]) -> pa.Table:
    first_line = body.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    has_header = {cell.strip().strip('"') for cell in first_line.split(",")} >= set(features)
    if has_header:
        return codecs.decode(body, codecs.CSV)
    width = len(first_line.split(","))
    if width != len(features):
        raise codecs.DecodeError(
            codecs.CSV,
            f"rows have {width} values; the model takes {len(features)} ({', '.join(features)}), "
            "or send a header row naming them",
        )
    try:
        options = pacsv.ReadOptions(column_names=features)
        return pacsv.read_csv(pa.BufferReader(body), read_options=options)
    except pa.ArrowInvalid as err:
        raise codecs.DecodeError(codecs.CSV, str(err).splitlines()[0]) from None


def _json(body: bytes, features: list[str]) -> pa.Table:
    stripped = body.lstrip()
    if stripped.startswith(b"["):  # a bare list: records, or positional rows
        return v1.decode(b'{"instances": ' + body + b"}", features)
    return v1.decode(body, features)
