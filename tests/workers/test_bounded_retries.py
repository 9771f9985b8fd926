"""Retries end: an async job whose input cannot be read fails, naming why, instead of being
tried again forever (a real ``mmserve serve`` in embedded mode, which retries through its
sweep)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx

from serving.registry import Registry
from serving.store import Store
from tests import fixtures
from tests.services import mmserve_process
from tests.workers.stack import FINISHED


def finished(client: httpx.Client, url: str) -> dict:
    deadline = time.monotonic() + 60
    while (record := client.get(url).json())["status"] not in FINISHED:
        assert time.monotonic() < deadline, record
        time.sleep(0.1)
    return record


def test_a_job_that_keeps_failing_or_names_a_folder_ends_saying_why(tmp_path: Path) -> None:
    store = Store.from_url(str(tmp_path / "store"))
    registry = Registry(store)
    registry.register(fixtures.logistic(), "lr")
    registry.register(fixtures.logistic(), "broken")
    store.write("inputs/folder/a.csv", b"f0,f1,f2,f3\n1,2,3,4\n")
    # A socket where the artifact should be: each load fails with an OSError that is not
    # "not found" (a store error, retried), as a store that keeps failing would.
    artifact = tmp_path / "store" / "registry" / "broken" / "1" / "model.skops"
    artifact.unlink()
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(artifact))
    env = {
        "MMSERVE_STORE_URL": store.url,
        "MMSERVE_BROKER_URL": "",
        "MMSERVE_JOBS__RETRIES": "2",
        "MMSERVE_JOBS__SWEEP_INTERVAL_S": "0.2",
        "MMSERVE_JOBS__SWEEP_GRACE_S": "0",
    }
    with (
        listener,
        mmserve_process(env) as (url, _),
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        pointer = {"input_location": "inputs/folder", "content_type": "text/csv"}
        folder = client.post("/v1/models/lr/async", json=pointer)
        assert folder.status_code == 422, folder.text
        assert folder.json() == {
            "error": "cannot read the request body: no object at the input location "
            "'inputs/folder'"
        }
        failing = client.post("/v1/models/broken/async", content=b"f0,f1,f2,f3\n1,2,3,4\n",
                              headers={"content-type": "text/csv"})  # fmt: skip
        assert failing.status_code == 202, failing.text
        record = finished(client, failing.headers["location"])
        assert (record["status"], record["retries"], record["error"]["type"]) == (
            "failed", 2, "StoreUnavailable"
        )  # fmt: skip
        assert record["error"]["message"].startswith(f"object store {store.url} is unavailable")
