"""What the console's jobs, batch and streams pages list, against a real Redis and store:
exact views, the bound on the work of one listing, and records that cannot be read."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from serving.http._overview import SCANNED, _described, batch_runs, streams, without_password
from serving.http.app import create_app
from serving.registry import Registry
from serving.settings import Settings
from serving.store import Store
from tests import fixtures
from tests.services import redis_server


@pytest.fixture
def events() -> Iterator[str]:
    """A throwaway Redis of its own: the listing sees every key of its database."""
    with redis_server() as server:
        yield server.url


def _client(url: str) -> Any:
    return redis.Redis.from_url(url, decode_responses=True)


def test_streams_lists_each_streams_groups_and_the_newest_dead_letter(events: str) -> None:
    r = _client(events)
    for i in range(3):
        r.xadd("events", {"f0": i})
    r.xgroup_create("events", "scorers", id="0")
    r.xreadgroup("scorers", "c1", {"events": ">"}, count=2)
    r.xadd("scores-dlq", {"error": "Old", "reason": "first"})
    newest = r.xadd("scores-dlq", {"error": "MissingColumn", "reason": "no field 'f1'", "f0": "x"})
    r.set("not-a-stream", "1")
    listed = streams(events)
    assert (listed["redis"], listed["complete"]) == (True, True)
    events_view, dead = listed["streams"]
    assert {k: v for k, v in events_view.items() if k != "groups"} == {
        "name": "events",
        "length": 3,
        "dead_letters": False,
    }
    group = events_view["groups"][0]
    assert (group["name"], group["consumers"], group["pending"], group["lag"]) == (
        "scorers",
        1,
        2,
        1,
    )
    assert dead == {
        "name": "scores-dlq",
        "length": 2,
        "dead_letters": True,
        "groups": [],
        "latest": {"id": newest, "error": "MissingColumn", "reason": "no field 'f1'"},
    }


def test_one_streams_listing_scans_a_bounded_number_of_keys(events: str) -> None:
    r = _client(events)
    r.xadd("events", {"f0": 1})
    for start in range(0, 3 * SCANNED, 5_000):  # a broker's Redis with many other keys
        r.mset({f"result:{i}": "1" for i in range(start, start + 5_000)})
    r.config_resetstat()
    listed = streams(events)
    assert (listed["redis"], listed["complete"]) == (True, False)
    assert r.info("commandstats")["cmdstat_scan"]["calls"] == SCANNED // 1_000


def test_a_stream_deleted_since_the_scan_is_left_out(events: str) -> None:
    r = _client(events)
    r.xadd("events", {"f0": 1})
    assert [s["name"] for s in _described(r, ["events", "gone"])] == ["events"]


def test_no_redis_configured_lists_nothing() -> None:
    assert streams(None) == {"redis": False, "streams": []}


def test_a_run_whose_records_cannot_be_read_is_listed_with_its_error(tmp_path: Path) -> None:
    store = Store.from_url(str(tmp_path / "store"))
    store.write("batch/notjson.json", b"{not json")
    store.write("batch/nooutput.json", b'{"spec": {}}')
    store.write("batch/gone.json", b'{"output": "%s"}' % str(tmp_path / "nowhere").encode())
    runs = {r["run_id"]: r for r in batch_runs(Registry(store), Settings())}
    assert runs == {
        "notjson": {
            "run_id": "notjson",
            "status": "unknown",
            "error": {"message": "JSONDecodeError"},
        },
        "nooutput": {"run_id": "nooutput", "status": "unknown", "error": {"message": "KeyError"}},
        "gone": {
            "run_id": "gone",
            "status": "unknown",
            "error": {"message": "no object at key '_run.json'"},
        },
    }


def test_locations_are_shown_without_their_user_and_password() -> None:
    assert without_password("s3://AKIA:s3cret@bucket/out/") == "s3://bucket/out/"
    assert without_password("redis://:pw@redis:6379/0") == "redis://redis:6379/0"
    assert without_password("/data/out") == "/data/out"
    assert without_password("s3://u:p@Bucket:port/out") == "s3://Bucket:port/out"  # as it is


def test_a_model_whose_records_cannot_be_read_is_listed_with_its_error(tmp_path: Path) -> None:
    store = Store.from_url(str(tmp_path / "store"))
    registry = Registry(store)
    registry.register(fixtures.logistic(), "lr")
    store.write("registry/zz/1/model.json", b"{not json")
    app = create_app(Settings(store_url=store.url), registry)
    try:
        listed = asyncio.run(_get(app, "/v1/console/models"))
    finally:
        app.state.jobs.queue.close()
    assert listed.status_code == 200
    models = {m["name"]: m for m in listed.json()["models"]}
    assert [v["version"] for v in models["lr"]["versions"]] == [1]
    assert models["zz"] == {"name": "zz", "aliases": {}, "versions": [], "error": "ValidationError"}


async def _get(app: Any, path: str) -> httpx.Response:
    """``GET path`` of ``app`` in this process (no server, no lifespan: routes alone)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://mmserve") as client:
        return await client.get(path)
