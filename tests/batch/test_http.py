"""``POST /v1/batch-jobs`` and ``GET /v1/batch-jobs/{run_id}`` on a real ``mmserve serve``:
written by the server itself (no broker), or by an ``mmserve worker``; the admin token, and
places under the store or the allowed roots only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


def follow(client: httpx.Client, url: str, headers: dict[str, str] | None = None) -> dict:
    deadline = time.monotonic() + 60
    while (state := client.get(url, headers=headers).json())["status"] == "running":
        assert time.monotonic() < deadline, state
        time.sleep(0.1)
    return state


def spec(tmp_path: Path, output: str, **more: object) -> dict:
    return {"model": "lr", "input": str(tmp_path / "in.parquet"), "output": str(tmp_path / output),
            "id_column": "id", "partition_rows": 100, **more}  # fmt: skip


ADMIN = {"Authorization": "Bearer admin-secret"}


def counted(client: httpx.Client) -> dict[str, float]:
    """The batch runs' counters on ``/metrics``, once a run is counted (just after its
    manifest, which its status reads, is written)."""
    names = {
        'mmserve_batch_runs_total{status="succeeded"}': "succeeded",
        'mmserve_batch_runs_total{status="failed"}': "failed",
        "mmserve_batch_rows_total": "rows",
        "mmserve_batch_rejected_rows_total": "rejected",
    }
    deadline = time.monotonic() + 30
    while True:
        found: dict[str, float] = {}
        for line in client.get("/metrics").text.splitlines():
            name, _, number = line.rpartition(" ")
            if name in names:
                found[names[name]] = float(number)
        if found.get("succeeded", 0) + found.get("failed", 0) > 0 or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def env(store: Store, tmp_path: Path, **more: str) -> dict[str, str]:
    """The server's: the admin token, an API key, and ``tmp_path`` as an allowed root."""
    roots = json.dumps([str(tmp_path)])
    return {"MMSERVE_STORE_URL": store.url, "MMSERVE_ADMIN_TOKEN": "admin-secret",
            "MMSERVE_API_KEY": "key", "MMSERVE_BATCH__ROOTS": roots, **more}  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store.from_url(str(tmp_path / "store"))
    Registry(store).register(fixtures.logistic(), "lr")
    pq.write_table(dataset(500), tmp_path / "in.parquet", row_group_size=100)
    return store


def test_a_batch_run_started_over_http(store: Store, tmp_path: Path) -> None:
    with (
        mmserve_process(env(store, tmp_path)) as (url, _),
        httpx.Client(base_url=url, timeout=30, headers=ADMIN) as client,
    ):
        started = client.post("/v1/batch-jobs", json=spec(tmp_path, "out"))
        assert started.status_code == 202, started.text
        body = started.json()
        assert body["model"] == "lr:1"
        assert started.headers["location"] == body["status_url"]
        state = follow(client, body["status_url"])
        assert (state["status"], state["parts_done"], state["parts"]) == ("succeeded", 5, 5)
        assert (state["rows"], state["rejected"], state["error"]) == (500, 0, None)
        assert counted(client) == {"succeeded": 1, "failed": 0, "rows": 500, "rejected": 0}
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
        both = env(store, tmp_path, MMSERVE_BROKER_URL=broker.url)
        with (
            mmserve_worker(both, str(tmp_path / "worker.log"), "--concurrency", "1"),
            mmserve_process(both) as (url, _),
            httpx.Client(base_url=url, timeout=30, headers=ADMIN) as client,
        ):
            started = client.post("/v1/batch-jobs", json=spec(tmp_path, "out"))
            assert started.status_code == 202, started.text
            state = follow(client, started.json()["status_url"])
            assert counted(client) == {"succeeded": 1, "failed": 0, "rows": 500, "rejected": 0}
    assert (state["status"], state["rows"]) == ("succeeded", 500)


def test_a_batch_run_needs_the_admin_token_and_reaches_only_the_store_and_the_roots(
    store: Store, tmp_path: Path
) -> None:
    (tmp_path / "secret.csv").write_text("f0,f1,f2,f3\n1,2,3,4\nroot:x:0:0:the secret\n")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (tmp_path / "escape").symlink_to(outside)
    with (
        mmserve_process(env(store, tmp_path)) as (url, _),
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        body = spec(tmp_path, "out")
        assert client.post("/v1/batch-jobs", json=body).status_code == 401
        for headers in ({"Authorization": "Bearer key"}, {"X-API-Key": "key"}):  # the API key
            refused = client.post("/v1/batch-jobs", json=body, headers=headers)
            assert refused.status_code == 401, refused.text
            assert refused.json()["error"] == (
                "missing or wrong admin token: send 'Authorization: Bearer <token>'"
            )
        assert not (tmp_path / "out").exists()
        places = {
            "input": ["/etc/passwd", "../x.parquet", "http://example.com/x.csv"],
            "output": ["/tmp", str(tmp_path / "escape" / "out"), str(tmp_path / "a/../../b")],
        }
        for field, values in places.items():
            for value in values:
                refused = client.post("/v1/batch-jobs", json={**body, field: value}, headers=ADMIN)
                assert refused.status_code == 400, refused.text
                assert refused.json()["error"].startswith(f"invalid batch {field} {value!r}: ")
        assert os.listdir(outside) == []
        store.write("in/a.parquet", (tmp_path / "in.parquet").read_bytes())  # store keys
        started = client.post(
            "/v1/batch-jobs", json={**body, "input": "in/*.parquet", "output": "scores"},
            headers=ADMIN,
        )  # fmt: skip
        assert started.status_code == 202, started.text
        status_url = started.json()["status_url"]
        assert client.get(status_url, headers={"X-API-Key": "key"}).status_code == 401
        state = follow(client, status_url, ADMIN)
        assert (state["status"], state["rows"], state["output"]) == (
            "succeeded",
            500,
            f"{Path(store.url).resolve()}/scores",
        )
        secret = {**body, "input": str(tmp_path / "secret.csv"), "output": str(tmp_path / "o")}
        started = client.post("/v1/batch-jobs", json=secret, headers=ADMIN)
        state = follow(client, started.json()["status_url"], ADMIN)
        assert state["status"] == "failed"
        assert state["error"] == {
            "type": "UnreadableInput",
            "message": f"input file {tmp_path / 'secret.csv'} is not valid csv at row 0 or after",
        }


def test_a_run_that_fails_is_a_200_saying_so_and_the_cli_exits_4(
    store: Store, tmp_path: Path
) -> None:
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")  # not the model's columns
    with (
        mmserve_process(env(store, tmp_path)) as (url, _),
        httpx.Client(base_url=url, timeout=30, headers=ADMIN) as client,
    ):
        glob = str(tmp_path / "nowhere" / "*.parquet")
        refused = client.post("/v1/batch-jobs", json={**spec(tmp_path, "g"), "input": glob})
        assert (refused.status_code, refused.json()["error"]) == (
            400,
            f"invalid batch input {glob!r}: its folder does not exist",
        )
        failing = {**spec(tmp_path, "out"), "input": str(tmp_path / "other.csv")}
        started = client.post("/v1/batch-jobs", json=failing)
        assert started.status_code == 202, started.text
        state = follow(client, started.json()["status_url"])
        again = client.get(started.json()["status_url"])
        assert counted(client) == {"succeeded": 0, "failed": 1, "rows": 0, "rejected": 0}
    assert again.status_code == 200
    assert again.json() == state
    assert (state["status"], state["error"]) == (
        "failed",
        {"type": "MissingColumn", "message": "missing column 'id'"},
    )
    run_id = started.json()["run_id"]
    cli = os.path.join(os.path.dirname(sys.executable), "mmserve")
    shown = subprocess.run(
        [cli, "batch", "status", run_id], env={**os.environ, "MMSERVE_STORE_URL": store.url},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 4, shown.stderr
    assert json.loads(shown.stdout) == state
    assert shown.stderr == f"error: run {run_id} failed: missing column 'id'\n"
    unknown = subprocess.run(
        [cli, "batch", "status", "nope"], env={**os.environ, "MMSERVE_STORE_URL": store.url},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert unknown.returncode == 1
