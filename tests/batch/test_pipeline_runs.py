"""Batch runs of a chain of models (``prep,scored@champion``): every row's answer is both
models applied by hand, in every input format, on one process, two processes, the
distributed workers and through the CLI; bad rows name the step that refused them; the
answers published online are the chain's."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from batch import online
from batch.parts import BadRow
from batch.runner import run_batch
from batch.spec import BatchSpec
from serving.endpoints import files
from serving.endpoints.catalog import Endpoints
from serving.endpoints.pipeline import merge
from serving.registry import Registry
from serving.settings import Settings
from serving.store import Store
from tests import fixtures
from tests.batch.test_runner import read_parts, write_inputs
from tests.services import mmserve_worker, redis_server
from tests.serving.endpoints.test_pipeline import register_pair

MMSERVE = str(Path(sys.executable).with_name("mmserve"))
ROWS = 1_000


def dataset(rows: int = ROWS, seed: int = 3) -> pa.Table:
    """``id``, the features and ``bonus`` (which only the second step takes)."""
    x, _ = fixtures.numeric_data(rows, seed)
    return pa.table(
        {
            "id": np.arange(rows),
            **fixtures.numeric_table(x).to_pydict(),
            "bonus": np.linspace(-1, 1, rows),
        }
    )


def by_hand(registry: Registry, table: pa.Table, last: str = "scored:1") -> pa.Table:
    """The chain's answer, from its models called one after the other."""
    prep = registry.load("prep:1")
    return registry.load(last).predict(merge(table, prep.predict(table)), passthrough=["id"])


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    registry = Registry(Store.from_url(str(tmp_path / "store")))
    register_pair(registry)
    registry.register(fixtures.logistic(), "scored")  # scored:2, newest: never in a chain here
    registry.set_alias("scored", "champion", 1)
    return registry


def test_a_chain_run_equals_both_models_applied_by_hand(registry: Registry, tmp_path: Path) -> None:
    store = registry.store
    table = dataset()
    write_inputs(store, table)  # parquet (row groups of 100), CSV and JSON lines
    settings = Settings(store_url=store.url)
    spec = BatchSpec(
        model="prep,scored@champion", input=f"{store.url}/in", output=f"{store.url}/out",
        id_column="id", partition_rows=200, batch_rows=64,
    )  # fmt: skip
    manifest = run_batch(spec, registry, settings)
    assert (manifest["rows"], manifest["rejected"], manifest["model"]) == (
        ROWS,
        0,
        "prep:1,scored:1",
    )
    out = Store.from_url(spec.output)
    assert json.loads(out.read("_run.json"))["model"] == "prep:1,scored:1"
    assert read_parts(out).equals(by_hand(registry, table))


def test_bad_rows_of_a_chain_name_the_step_that_refused_them(
    registry: Registry, tmp_path: Path
) -> None:
    table = dataset(300)
    bonus = table.column("bonus").to_pylist()
    bonus[7] = bonus[250] = None  # only the second step takes bonus
    table = table.set_column(6, "bonus", pa.array(bonus, pa.float64()))
    pq.write_table(table, tmp_path / "in.parquet")
    settings = Settings(store_url=registry.store.url)
    spec = BatchSpec(
        model="prep:1,scored:1", input=str(tmp_path / "in.parquet"),
        output=str(tmp_path / "fail"), id_column="id", batch_rows=100,
    )  # fmt: skip
    with pytest.raises(BadRow, match=r"in.parquet row 7: step 2 \(scored:1\): column 'bonus'"):
        run_batch(spec, registry, settings)
    skip = spec.model_copy(update={"output": str(tmp_path / "skip"), "on_error": "skip"})
    manifest = run_batch(skip, registry, settings)
    assert (manifest["rows"], manifest["rejected"]) == (298, 2)
    good = [i for i in range(300) if i not in (7, 250)]
    assert read_parts(Store.from_url(skip.output)).equals(by_hand(registry, table.take(good)))
    rejects = pq.read_table(tmp_path / "skip" / "_rejects" / "part-00000.parquet")
    assert rejects.column("id").to_pylist() == [7, 250]
    assert (
        rejects.column("reason").to_pylist()
        == ["step 2 (scored:1): column 'bonus' has a null value"] * 2
    )


def test_a_chain_runs_answers_are_published_as_its_last_models(
    registry: Registry, tmp_path: Path
) -> None:
    table = dataset(200)
    pq.write_table(table, tmp_path / "in.parquet")
    with redis_server() as index, redis.Redis.from_url(index.url, decode_responses=True) as r:
        settings = Settings(store_url=registry.store.url, redis_url=index.url)
        spec = BatchSpec(
            model="prep,scored@champion", input=str(tmp_path / "in.parquet"),
            output=str(tmp_path / "out"), id_column="id", publish_online=True,
        )  # fmt: skip
        manifest = run_batch(spec, registry, settings)
        assert manifest["published"]["rows"] == 200 and manifest["published"]["current"]
        for row in by_hand(registry, table).to_pylist():
            meta, outputs = r.eval(online.LOOKUP, 1, online.pointer("scored"), str(row["id"]))
            assert json.loads(outputs) == {k: row[k] for k in ("label", "proba_0", "proba_1")}
        assert json.loads(meta)["model"] == "prep:1,scored:1"
        assert r.get(online.pointer("prep")) is None


@pytest.mark.slow
def test_a_chain_run_on_helpers_or_on_workers_equals_both_models_by_hand(
    registry: Registry, tmp_path: Path
) -> None:
    x, y = fixtures.numeric_data(10)
    slow = fixtures.SlowModel(0.2).fit(x, y)  # 16 parts: ~3 s alone, a helper starts in ~2
    registry.register(slow, "slow", flavor="sklearn-pickle", trust_pickle=True)
    table = dataset(1_600)
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=100)
    chain = "prep:1,slow:1"
    settings = Settings(store_url=registry.store.url)
    spec = BatchSpec(model=chain, input=str(tmp_path / "in.parquet"),
                     output=str(tmp_path / "two"), id_column="id", partition_rows=100)  # fmt: skip
    two = run_batch(spec, registry, settings, workers=2)
    assert read_parts(Store.from_url(spec.output)).equals(by_hand(registry, table, "slow:1"))
    here = f"{socket.gethostname()}:{os.getpid()}"
    assert {p["writer"] == here for p in two["parts"]} == {True, False}  # a helper wrote some
    # On the workers: the CLI's coordinator pins the alias step, each worker loads the chain.
    argv = [MMSERVE, "batch", "run", "--model", "prep,scored@champion", "--distributed"]
    argv += ["--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "spread")]
    argv += ["--id-column", "id", "--partition-rows", "400"]
    with redis_server() as broker:
        env = {"MMSERVE_STORE_URL": registry.store.url, "MMSERVE_BROKER_URL": broker.url,
               "MMSERVE_BATCH__ROOTS": json.dumps([str(tmp_path)])}  # fmt: skip
        with mmserve_worker(env, str(tmp_path / "worker.log"), "--concurrency", "1"):
            spread = subprocess.run(
                argv, env={**os.environ, **env}, capture_output=True, text=True, timeout=120
            )
    assert spread.returncode == 0, spread.stderr
    assert "1600 rows scored by prep:1,scored:1 in 4 parts" in spread.stderr
    assert json.loads((tmp_path / "spread" / "_manifest.json").read_text())["model"] == (
        "prep:1,scored:1"
    )
    assert pq.read_table(tmp_path / "spread").equals(by_hand(registry, table))


@pytest.mark.slow
def test_endpoints_batch_scores_with_a_pipeline_variant(registry: Registry, tmp_path: Path) -> None:
    (tmp_path / "endpoints.yaml").write_text(
        "endpoints:\n  scoring:\n    pipeline: [prep, scored@champion]\n"
    )
    Endpoints(registry.store).apply(files.load(tmp_path / "endpoints.yaml"))
    table = dataset(40)
    pq.write_table(table, tmp_path / "rows.parquet")
    result = subprocess.run(
        [MMSERVE, "endpoints", "batch", "scoring", "--input", str(tmp_path / "rows.parquet"),
         "--output", str(tmp_path / "out"), "--id-column", "id"],
        env={**os.environ, "MMSERVE_STORE_URL": registry.store.url, "COLUMNS": "200"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "40 rows scored by scoring/pipeline (prep:1,scored:1)" in result.stderr
    assert pq.read_table(tmp_path / "out").equals(by_hand(registry, table))
