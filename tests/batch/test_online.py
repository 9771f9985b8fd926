"""``publish_online``: a finished run's outputs in a real Redis, keyed by id, replaced whole
by the next run; and ``GET /v1/models/{ref}/precomputed/{id}`` on a real ``mmserve serve``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
import redis

from batch import online
from batch.runner import Run, run_batch
from batch.spec import BatchSpec
from serving.errors import InputError
from serving.registry import Registry
from serving.settings import AwsSettings, Settings
from serving.store import Store
from tests import fixtures
from tests.batch.test_runner import dataset, write_inputs
from tests.services import RedisServer, mmserve_process, redis_server

ROWS = 1_000


@pytest.fixture(scope="module")
def index() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture
def client(index: RedisServer) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(index.url, decode_responses=True) as client:
        client.flushall()
        yield client


def lookup(client: redis.Redis, name: str, id: object) -> tuple[dict, dict | None] | None:
    answer: Any = client.eval(online.LOOKUP, 1, online.pointer(name), str(id))
    if answer is None:
        return None
    meta, outputs = answer
    return json.loads(meta), json.loads(outputs) if outputs else None


def spec_of(store: Store, output: str, **more: Any) -> BatchSpec:
    fields = {"id_column": "id", "partition_rows": 200, "batch_rows": 64, "publish_online": True}
    return BatchSpec(model="lr", input=f"{store.url}/in", output=f"{store.url}/{output}",
                     **{**fields, **more})  # fmt: skip


def test_a_published_run_answers_every_id_as_the_predictor_does(
    registry: Registry, store: Store, aws: AwsSettings, index: RedisServer, client: redis.Redis
) -> None:
    registry.register(fixtures.logistic(), "lr")
    table = dataset(ROWS)
    write_inputs(store, table)  # parquet, CSV and JSON lines parts
    settings = Settings(store_url=store.url, aws=aws, redis_url=index.url)
    manifest = run_batch(spec_of(store, "out", format="csv"), registry, settings)
    assert manifest["published"]["rows"] == ROWS and manifest["published"]["current"]
    expected = registry.load("lr").predict(table, passthrough=["id"]).to_pylist()
    for row in expected:
        found = lookup(client, "lr", row["id"])
        assert found is not None
        meta, outputs = found
        assert outputs == {k: row[k] for k in ("label", "proba_0", "proba_1")}
    assert meta["run_id"] == manifest["run_id"] and meta["model"] == "lr:1"
    assert meta["rows"] == ROWS
    found = lookup(client, "lr", "no-such-id")
    assert found is not None and found[1] is None


def test_a_new_run_replaces_the_old_whole(
    registry: Registry, store: Store, aws: AwsSettings, index: RedisServer, client: redis.Redis
) -> None:
    registry.register(fixtures.logistic(), "lr")
    write_inputs(store, dataset(ROWS))
    settings = Settings(store_url=store.url, aws=aws, redis_url=index.url)
    first = run_batch(spec_of(store, "first"), registry, settings)
    old = lookup(client, "lr", 7)
    assert old is not None and old[0]["run_id"] == first["run_id"]
    registry.register(fixtures.forest(), "lr")  # version 2: other answers
    second = run_batch(spec_of(store, "second", publish_online=False), registry, settings)
    seen: list[Any] = []

    class Watching(redis.Redis):
        """A reader's view each time the second run writes rows: still the first run."""

        def hset(self, *args: Any, **kwargs: Any) -> Any:
            seen.append(lookup(client, "lr", 7))
            return super().hset(*args, **kwargs)

    out = Store.from_url(f"{store.url}/second", aws)
    record = json.loads(out.read("_run.json"))
    run = Run(
        record["run_id"], BatchSpec(**record["spec"]), record["model"], out, record["started"]
    )
    files = [f"{p['name']}.parquet" for p in second["parts"]]
    with Watching.from_url(index.url, decode_responses=True) as writer:
        published = online.publish(writer, run, files, ["label", "proba_0", "proba_1"])
    assert published == online.Published(rows=ROWS, current=True)
    assert len(seen) == 5 and all(view == old for view in seen)
    meta, outputs = lookup(client, "lr", 7) or ({}, None)
    assert (meta["run_id"], meta["model"]) == (second["run_id"], "lr:2")
    assert outputs != old[1]
    # The first run's rows linger for readers that fetched its pointer, then expire.
    assert 0 < client.ttl(f"{online.pointer('lr')}:run:{first['run_id']}") <= online.LINGER_S
    # Resuming the first run (started before the second) does not bring it back.
    again = run_batch(spec_of(store, "first"), registry, settings, resume=True)
    assert not again["published"]["current"]
    assert (lookup(client, "lr", 7) or ({}, None))[0]["run_id"] == second["run_id"]


def test_a_run_resumed_after_redis_lost_everything_is_published_again(
    registry: Registry, tmp_path: Path, index: RedisServer, client: redis.Redis
) -> None:
    registry.register(fixtures.logistic(), "lr")
    pq.write_table(dataset(300), tmp_path / "in.parquet", row_group_size=100)
    settings = Settings(store_url=registry.store.url, redis_url=index.url)
    spec = BatchSpec(
        model="lr", input=str(tmp_path / "in.parquet"), output=str(tmp_path / "out"),
        id_column="id", publish_online=True,
    )  # fmt: skip
    first = run_batch(spec, registry, settings)
    client.flushall()  # a Redis without persistence, restarted
    assert lookup(client, "lr", 3) is None
    again = run_batch(spec, registry, settings, resume=True)
    assert again["published"]["rows"] == 300
    assert (lookup(client, "lr", 3) or ({}, None))[0]["run_id"] == first["run_id"]


def test_publishing_needs_an_id_column_and_redis(tmp_path: Path, registry: Registry) -> None:
    with pytest.raises(ValueError, match="publish_online needs id_column"):
        BatchSpec(model="lr", input="in", output="out", publish_online=True)
    registry.register(fixtures.logistic(), "lr")
    spec = BatchSpec(
        model="lr", input="in", output=str(tmp_path / "o"), id_column="id", publish_online=True
    )
    with pytest.raises(InputError, match="publish_online needs Redis"):
        run_batch(spec, registry, Settings(store_url=registry.store.url))


def test_the_server_answers_a_precomputed_id(
    tmp_path: Path, index: RedisServer, client: redis.Redis
) -> None:
    store = Store.from_url(str(tmp_path / "store"))
    registry = Registry(store)
    registry.register(fixtures.logistic(), "lr")
    registry.register(fixtures.forest(), "lr")
    table = dataset(300)
    pq.write_table(table, tmp_path / "in.parquet")
    settings = Settings(store_url=store.url, redis_url=index.url)
    spec = BatchSpec(
        model="lr:1", input=str(tmp_path / "in.parquet"), output=str(tmp_path / "out"),
        id_column="id", publish_online=True,
    )  # fmt: skip
    manifest = run_batch(spec, registry, settings)
    expected = registry.load("lr:1").predict(table, passthrough=["id"]).to_pylist()
    env = {"MMSERVE_STORE_URL": store.url, "MMSERVE_REDIS_URL": index.url}
    with mmserve_process(env) as (url, _), httpx.Client(base_url=url) as http:
        answer = http.get("/v1/models/lr/precomputed/42")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["outputs"] == {k: expected[42][k] for k in ("label", "proba_0", "proba_1")}
        assert (body["id"], body["model"], body["version"]) == ("42", "lr", 1)
        assert body["run_id"] == manifest["run_id"]
        assert 0 <= body["age_s"] < 60 and int(answer.headers["age"]) == int(body["age_s"])
        assert http.get("/v1/models/lr:1/precomputed/42").json()["outputs"] == body["outputs"]
        unknown = http.get("/v1/models/lr/precomputed/9999")
        assert unknown.status_code == 404
        assert unknown.json() == {
            "error": f"no precomputed answer of lr: run {manifest['run_id']} has no row with "
            "id '9999'"
        }
        other = http.get("/v1/models/lr:2/precomputed/42")
        assert other.status_code == 404
        assert other.json() == {
            "error": f"no precomputed answer of lr:2 (lr:2): the published run "
            f"({manifest['run_id']}) scored lr:1"
        }
        never = http.get("/v1/models/rf/precomputed/1")
        assert never.status_code == 404
        assert "no batch run of it was published" in never.json()["error"]
        assert http.get("/v1/models/Bad!/precomputed/1").status_code == 400
        assert http.get(f"/v1/models/lr/precomputed/{'x' * 300}").status_code == 400
        index.stop()
        try:
            away = http.get("/v1/models/lr/precomputed/42")
        finally:
            index.start()
        assert away.status_code == 503
        assert away.json()["error"].startswith("Redis at 127.0.0.1:")
    with (
        mmserve_process({"MMSERVE_STORE_URL": store.url}) as (url, _),
        httpx.Client(base_url=url) as http,
    ):
        none = http.get("/v1/models/lr/precomputed/42")
        assert none.status_code == 404
        assert "this server has no Redis" in none.json()["error"]


def test_the_cli_publishes_and_refuses_a_run_without_ids(
    tmp_path: Path, index: RedisServer, client: redis.Redis
) -> None:
    store = Store.from_url(str(tmp_path / "store"))
    Registry(store).register(fixtures.logistic(), "lr")
    pq.write_table(dataset(100), tmp_path / "in.parquet")
    mmserve = os.path.join(os.path.dirname(sys.executable), "mmserve")
    argv = [mmserve, "batch", "run", "--model", "lr", "--input", str(tmp_path / "in.parquet")]
    env = {**os.environ, "MMSERVE_STORE_URL": store.url, "MMSERVE_REDIS_URL": index.url}
    done = subprocess.run(
        [*argv, "--output", str(tmp_path / "out"), "--id-column", "id", "--publish-online"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["published"]["rows"] == 100
    assert (lookup(client, "lr", 99) or ({}, None))[0]["run_id"] == done.stdout.strip()
    refused = subprocess.run(
        [*argv, "--output", str(tmp_path / "no-ids"), "--publish-online"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr == "error: publish_online needs id_column: answers are looked up by id\n"
