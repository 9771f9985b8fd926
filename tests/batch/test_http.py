"""``POST /v1/batch-jobs`` and ``GET /v1/batch-jobs/{run_id}`` on a real ``mmserve serve``:
written by the server itself (no broker), or by an ``mmserve worker``."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from serving.registry import Registry
from serving.store import Store
from tests import fixtures
from tests.batch.test_runner import dataset
from tests.services import mmserve_process, mmserve_worker, redis_server


def follow(client: httpx.Client, url: str) -> dict:
    deadline = time.monotonic() + 60
    while (state := client.get(url).json())["status"] == "running":
        assert time.monotonic() < deadline, state
        time.sleep(0.1)
    return state


def spec(tmp_path: Path, output: str, **more: object) -> dict:
    return {"model": "lr", "input": str(tmp_path / "in.parquet"), "output": str(tmp_path / output),
            "id_column": "id", "partition_rows": 100, **more}  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store.from_url(str(tmp_path / "store"))
    Registry(store).register(fixtures.logistic(), "lr")
    pq.write_table(dataset(500), tmp_path / "in.parquet", row_group_size=100)
    return store


def test_a_batch_run_started_over_http(store: Store, tmp_path: Path) -> None:
    with (
        mmserve_process({"MMSERVE_STORE_URL": store.url}) as (url, _),
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        started = client.post("/v1/batch-jobs", json=spec(tmp_path, "out"))
        assert started.status_code == 202, started.text
        body = started.json()
        assert body["model"] == "lr:1"
        assert started.headers["location"] == body["status_url"]
        state = follow(client, body["status_url"])
        assert (state["status"], state["parts_done"], state["parts"]) == ("succeeded", 5, 5)
        assert (state["rows"], state["rejected"], state["error"]) == (500, 0, None)
        again = client.post("/v1/batch-jobs", json=spec(tmp_path, "out"))
        assert again.status_code == 409
        assert "resume it" in again.json()["error"]
        unknown = client.post("/v1/batch-jobs", json={**spec(tmp_path, "x"), "model": "nope"})
        assert unknown.status_code == 404
        both = client.post(
            "/v1/batch-jobs", json=spec(tmp_path, "y", keep_columns=["f0"], join_input=True)
        )
        assert both.status_code == 422
        assert "exclude each other" in both.json()["error"]
        assert client.get("/v1/batch-jobs/nope").status_code == 404
    assert pq.read_table(tmp_path / "out").num_rows == 500


@pytest.mark.slow
def test_with_a_broker_a_worker_writes_the_run(store: Store, tmp_path: Path) -> None:
    with redis_server() as broker:
        env = {"MMSERVE_STORE_URL": store.url, "MMSERVE_BROKER_URL": broker.url}
        with (
            mmserve_worker(env, str(tmp_path / "worker.log"), "--concurrency", "1"),
            mmserve_process(env) as (url, _),
            httpx.Client(base_url=url, timeout=30) as client,
        ):
            started = client.post("/v1/batch-jobs", json=spec(tmp_path, "out"))
            assert started.status_code == 202, started.text
            state = follow(client, started.json()["status_url"])
    assert (state["status"], state["rows"]) == ("succeeded", 500)
