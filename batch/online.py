"""Precomputed answers for real time: a batch run's outputs in Redis, keyed by id.

Batch precomputes, real time looks up ("batch: the eligible offers, real time: adjust
them"). With ``publish_online`` a finished run writes each output row to a Redis hash of
its own, then becomes its model's published run in one step: a reader sees the old run
or the new one, never a part of either. The old run's hash lingers ``LINGER_S`` for
readers that fetched the old pointer, then expires.

    mmserve:online:<name>                  the published run's id
    mmserve:online:<name>:meta             {run_id, model, rows, started, published}
    mmserve:online:<name>:run:<run_id>     hash: id -> the row's outputs as a JSON object

The store stays the source of truth: the rows are read back from the run's parts, so a
run resumed after a crash (or after Redis lost everything) is published whole again.
Readers run one script, which needs a single Redis (not a cluster: its keys are derived).
A run of a chain of models (``prep:1,fraud:7``) is published as its last model's, whose
outputs its answers are; its meta names the whole chain.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from serving import scorers
from serving.codecs import json_safe, read_json_lines
from serving.refs import ModelRef
from serving.store import Store

if TYPE_CHECKING:
    from batch.runner import Run

LINGER_S = 300
"""How long a replaced run stays readable (a server may hold its pointer a moment)."""
_CHUNK = 20_000

LOOKUP = """
local run = redis.call('GET', KEYS[1])
if not run then return false end
local outputs = redis.call('HGET', KEYS[1] .. ':run:' .. run, ARGV[1])
return {redis.call('GET', KEYS[1] .. ':meta'), outputs}
"""
"""``KEYS[1]`` the model's pointer, ``ARGV[1]`` an id: ``[meta, outputs or nil]``, or nil
when no run is published; one atomic step, so the meta and the row are of one run."""

_FLIP = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then
  local meta = redis.call('GET', KEYS[2])
  if meta and cjson.decode(meta)['started'] > ARGV[3] then return 0 end
  redis.call('EXPIRE', KEYS[1] .. ':run:' .. current, ARGV[4])
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""
"""Make run ``ARGV[1]`` (meta ``ARGV[2]``, started ``ARGV[3]``) the published one, unless
a run started later is published already (a resumed old run must not replace it)."""


def pointer(name: str) -> str:
    return f"mmserve:online:{name}"


def _run_key(name: str, run_id: str) -> str:
    return f"{pointer(name)}:run:{run_id}"


@dataclass(frozen=True)
class Published:
    """A run made the published one (or not, when a later run already was)."""

    rows: int
    current: bool


def publish(redis: Any, run: Run, parts: list[str], outputs: list[str]) -> Published:
    """Write the ``outputs`` of the run's ``parts`` (file names in its output), under its id
    column, to the run's hash; then make the run its model's published one."""
    name, id_column = ModelRef.parse(scorers.steps(run.model)[-1]).name, str(run.spec.id_column)
    key = _run_key(name, run.run_id)
    if redis.get(pointer(name)) == run.run_id:  # published already (a run resumed when done)
        return Published(int(json.loads(redis.get(f"{pointer(name)}:meta"))["rows"]), True)
    redis.delete(key)  # a publication of this run cut short: start it over
    rows = 0
    for table in _rows(run.out, parts, [id_column, *outputs]):
        for start in range(0, table.num_rows, _CHUNK):
            rows += _write(redis, key, table.slice(start, _CHUNK), id_column, outputs)
    meta = {
        "run_id": run.run_id,
        "model": run.model,
        "rows": rows,
        "started": run.started,
        "published": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    flipped = redis.eval(
        _FLIP, 2, pointer(name), f"{pointer(name)}:meta",
        run.run_id, json.dumps(meta), run.started, LINGER_S,
    )  # fmt: skip
    if not flipped:
        redis.expire(key, LINGER_S)
    return Published(rows, bool(flipped))


def _write(redis: Any, key: str, table: pa.Table, id_column: str, outputs: list[str]) -> int:
    ids = pc.cast(table.column(id_column), pa.string()).to_pylist()
    values = _json_objects(json_safe(table.select(outputs))).to_pylist()
    if ids:
        redis.hset(key, mapping=dict(zip(ids, values, strict=True)))
    return len(ids)


def _json_objects(table: pa.Table) -> pa.ChunkedArray:
    """Each row as a JSON object, built column-wise by Arrow (a per-row ``json.dumps`` was
    most of the time of publishing). Arrow writes numbers in their shortest form that
    reads back as the same value, as Python does; nulls (NaN, infinities) as ``null``;
    other types are spelled by Python's json."""
    pieces: list[Any] = []
    for index, field in enumerate(table.schema):
        column = table.column(index)
        if pa.types.is_integer(field.type) or pa.types.is_floating(field.type):
            text = pc.cast(column, pa.string())
        elif pa.types.is_boolean(field.type):
            text = pc.if_else(column, "true", "false")
        else:
            text = pa.chunked_array([pa.array(map(json.dumps, column.to_pylist()), pa.string())])
        pieces += ["{" if index == 0 else ",", json.dumps(field.name) + ":", text.fill_null("null")]
    return pc.binary_join_element_wise(*pieces, "}", "")


def _rows(out: Store, parts: list[str], columns: list[str]) -> Iterator[pa.Table]:
    """The parts' ``columns``, a batch at a time (parquet reads only those columns)."""
    fs = out.filesystem
    for part in parts:
        path = out.path(part)
        with fs.open_input_file(path) as f:
            if part.endswith(".parquet"):
                for batch in pq.ParquetFile(f).iter_batches(columns=columns):
                    yield pa.Table.from_batches([batch])
                continue
            if part.endswith(".csv"):
                for batch in pacsv.open_csv(f):
                    yield _from_csv(pa.Table.from_batches([batch]), columns)
                continue
            for batch in read_json_lines(f, path):
                yield pa.Table.from_batches([batch]).select(columns)


def _from_csv(table: pa.Table, columns: list[str]) -> pa.Table:
    """A CSV part's ``columns``: an output CSV holds as K columns ``name_0`` ..
    ``name_<K-1>`` (an embedding: see :func:`serving.codecs.csv_table`) as one list again.
    (A list of any length stays the JSON text CSV holds it as.)"""
    names = set(table.column_names)
    picked = []
    for name in columns:
        if name in names or f"{name}_0" not in names:
            picked.append(table.column(name))
            continue
        size = next(k for k in itertools.count() if f"{name}_{k}" not in names)
        by_column = pa.chunked_array([table.column(f"{name}_{k}") for k in range(size)])
        order = np.arange(size * table.num_rows).reshape(size, -1).T.reshape(-1)  # row-major
        values = by_column.take(order).combine_chunks()
        picked.append(pa.FixedSizeListArray.from_arrays(values, size))
    return pa.table(picked, names=columns)
