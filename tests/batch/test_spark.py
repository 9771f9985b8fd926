"""Spark scores a DataFrame by the one predict path (batch.spark): the batch runner's answers
bit for bit, the version pinned on the driver, bad rows set aside or failing the job."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pyspark.errors import PythonException
from pyspark.sql import SparkSession

from batch import engines
from batch.spark import score
from serving.errors import MissingColumn
from serving.registry import Registry
from serving.settings import Settings
from serving.store import Store
from tests import fixtures
from tests.batch import engine_runs
from tests.batch.engine_runs import World, by_id, dataset, with_nulls

pytestmark = [
    pytest.mark.slow,  # a JVM and its Python workers
    # PySpark 4.3 warns that it "does not yet fully support pandas >= 3.0.0" whenever an
    # Arrow or pandas UDF is made (mapInArrow too): batch.spark hands it no pandas.
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYSPARK_PYTHON", sys.executable)  # the workers' Python: this one
        env.setenv("SPARK_LOCAL_IP", "127.0.0.1")
        session = (
            SparkSession.builder.master("local[2]")
            .appName("mmserve-tests")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.shuffle.partitions", "2")
            .getOrCreate()
        )
        session.sparkContext.setLogLevel("ERROR")
        yield session
        session.stop()


def test_spark_scores_what_the_batch_runner_scores_with_the_version_pinned_by_score(
    spark: SparkSession, world: World, tmp_path: Path
) -> None:
    df = spark.read.parquet(str(world.input))
    scored = score(df, "churn@production", passthrough=["id"], settings=world.settings)
    # The alias moves after score() and before Spark runs a task: the answers are churn:1's.
    world.registry.set_alias("churn", "production", 2)
    try:
        scored.write.parquet(str(tmp_path / "scores"))
        assert engines.plan("churn@production", world.settings).model == "churn:2"
    finally:
        world.registry.set_alias("churn", "production", 1)
    got = by_id(pq.read_table(tmp_path / "scores"))
    assert got.num_rows == engine_runs.ROWS
    assert got.schema == world.expected.schema
    assert got.equals(world.expected)  # every bit of every answer


def test_bad_rows_are_set_aside_with_their_ids_and_reasons(
    spark: SparkSession, world: World, tmp_path: Path
) -> None:
    table = with_nulls(dataset(1_000), "income", [7, 600])
    df = spark.createDataFrame(table).coalesce(1)  # one task: its rows are the ids
    rejects = str(tmp_path / "rejects")
    scored = score(
        df, "churn:1", passthrough=["id"], on_error="skip", rejects=rejects,
        settings=world.settings,
    )  # fmt: skip
    got = by_id(scored.toArrow())
    assert got.column("id").to_pylist() == [i for i in range(1_000) if i not in (7, 600)]
    kept = table.filter(pc.is_valid(table["income"]))
    assert got.equals(by_id(world.registry.load("churn:1").predict(kept, ["id"])))
    assert sorted(p.name for p in Path(rejects).iterdir()) == ["part-00000.parquet"]
    set_aside = pq.read_table(rejects)
    assert set_aside.column_names == ["id", "row", "reason"]
    assert set_aside.column("id").to_pylist() == [7, 600]
    assert set_aside.column("row").to_pylist() == [7, 600]
    assert set_aside.column("reason").to_pylist() == ["column 'income' has a null value"] * 2


def test_a_bad_row_fails_the_job_naming_it(
    spark: SparkSession, world: World, tmp_path: Path
) -> None:
    table = with_nulls(dataset(1_000), "income", [7])
    df = spark.createDataFrame(table).coalesce(1)
    scored = score(df, "churn:1", passthrough=["id"], settings=world.settings)
    message = "Spark partition 0 row 7: column 'income' has a null value (id=7)"
    with pytest.raises(PythonException, match=re.escape(message)):
        scored.collect()
    # The driver refuses what no task could do, before any runs.
    with pytest.raises(MissingColumn, match="missing column 'customer_id'"):
        score(df, "churn:1", passthrough=["customer_id"], settings=world.settings)


def test_typed_answers_keep_their_registered_types(spark: SparkSession, tmp_path: Path) -> None:
    registry = Registry(Store.from_url(str(tmp_path / "store")))
    registry.register(fixtures.typed_model(tmp_path / "typed"), "typed", trust_code=True)
    xs = [-2.5, -1.0, 0.0, 0.5, 3.25]
    df = spark.createDataFrame(pa.table({"id": range(len(xs)), "x": xs}))
    settings = Settings(store_url=registry.store.url)
    scored = score(df, "typed", passthrough=["id"], settings=settings)
    # The schema is the registry's, before any row is scored; an embedding is an array.
    assert [(f.name, f.dataType.simpleString()) for f in scored.schema] == [
        ("id", "bigint"),
        ("label", "string"),
        ("code", "bigint"),
        ("score", "double"),
        ("embedding", "array<float>"),
        ("tokens", "array<bigint>"),
    ]
    assert by_id(scored.toArrow()).drop_columns(["id"]).to_pylist() == fixtures.typed_answers(xs)
