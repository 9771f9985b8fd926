"""What the Spark and Ray tests share: the churn model in two versions, a 100,000-row
dataset, and the batch runner's answers to it (what both engines must give, bit for bit)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.base import clone

from batch.runner import run_batch
from batch.spec import BatchSpec
from serving.registry import Registry
from serving.settings import Settings
from serving.store import Store
from tests import fixtures

ROWS = 100_000
FILES = 4


def churn(registry: Registry) -> None:
    """``churn:1`` (the production alias) and ``churn:2``, which answers otherwise (it learnt
    the opposite labels): moving the alias changes every answer."""
    frame, y = fixtures.mixed_frame()
    v1 = fixtures.mixed_pipeline()
    registry.register(v1, "churn", alias="production", input_example=frame.head(5))
    registry.register(clone(v1).fit(frame, 1 - y), "churn", input_example=frame.head(5))


def dataset(rows: int, seed: int = 7) -> pa.Table:
    frame, _ = fixtures.mixed_frame(rows, seed)
    return pa.table({"id": np.arange(rows), **pa.Table.from_pandas(frame).to_pydict()})


def write_dataset(folder: Path, table: pa.Table, files: int = FILES) -> None:
    """``table`` as ``files`` parquet files of row groups of 10,000 rows."""
    folder.mkdir(parents=True)
    size = -(-table.num_rows // files)
    for i in range(files):
        piece = table.slice(i * size, size)
        pq.write_table(piece, folder / f"part-{i}.parquet", row_group_size=10_000)


def runner_answers(registry: Registry, input: Path, output: Path) -> pa.Table:
    """``mmserve batch run``'s answers to ``input`` (churn@production, ids passed through)."""
    spec = BatchSpec(model="churn@production", input=str(input), output=str(output), id_column="id")
    manifest = run_batch(spec, registry, Settings(store_url=registry.store.url))
    assert manifest["model"] == "churn:1"
    out = Store.from_url(str(output))
    names = sorted(n for n in out.list("") if n.startswith("part-"))
    return pa.concat_tables(pq.read_table(pa.BufferReader(out.read(n))) for n in names)


def by_id(table: pa.Table) -> pa.Table:
    """``table`` in id order, its schema's metadata dropped (an engine's order is its own)."""
    return table.sort_by("id").combine_chunks().replace_schema_metadata(None)


@dataclass(frozen=True)
class World:
    """A registry with churn in it, the dataset's folder and the batch runner's answers."""

    registry: Registry
    settings: Settings
    input: Path
    expected: pa.Table


def world(root: Path) -> World:
    registry = Registry(Store.from_url(str(root / "store")))
    churn(registry)
    write_dataset(root / "customers", dataset(ROWS))
    expected = by_id(runner_answers(registry, root / "customers", root / "runner"))
    return World(registry, Settings(store_url=registry.store.url), root / "customers", expected)


def with_nulls(table: pa.Table, column: str, rows: list[int]) -> pa.Table:
    """``table`` with ``column`` null at ``rows`` (the model takes no null there)."""
    values = table.column(column).to_pylist()
    for row in rows:
        values[row] = None
    index = table.schema.get_field_index(column)
    return table.set_column(index, column, pa.array(values, table.schema.field(column).type))
