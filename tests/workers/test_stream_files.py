"""Streams carrying files, against a real Redis: a binary feature's field holds the file's
bytes in base64 or references an object of the consumer's store (``store:<key>``, its
``file://`` URI); bad base64, a missing object, one outside the store or past the size
limit are dead letters naming the field; a binary output is written as base64 text."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from serving.registry import Registry
from serving.settings import StreamSettings
from serving.store import Store
from tests.services import RedisServer
from tests.serving.http.test_raw_bodies import register_file_models
from tests.workers.streams import entries, mmserve_stream, produce, wait_for
from workers.stream import Consumer, LiveModel, Names, RedisEventLog

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3
SCAN = b"%PDF-1.7\n" + bytes(range(255, -1, -1)) * 2
LIMIT = 1000  # MMSERVE_BATCH__MAX_FILE_BYTES of the consumer
BIG = b"\0" * (LIMIT + 1)
NAMES = Names("events", "scores", "scores-dlq", "scorers", "c1")


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    registry = Registry(Store.from_url(str(tmp_path / "store")))
    register_file_models(registry, tmp_path, "digest", "mirror")
    registry.store.write("scans/a.png", PNG)
    registry.store.write("scans/b.pdf", SCAN)
    registry.store.write("scans/big.bin", BIG)
    return registry


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def digest(registry: Registry, data: bytes) -> dict[str, str]:
    """The in-process predictor's answer, as the output entry's text."""
    answer = registry.load("digest").predict(pa.table({"scan": pa.array([data], pa.binary())}))
    row = answer.to_pylist()[0]
    return {"size": str(row["size"]), "sha256": row["sha256"]}


@pytest.mark.slow
def test_files_in_base64_and_by_reference_are_scored_once(
    client: Any, registry: Registry, broker: RedisServer, tmp_path: Path
) -> None:
    store = registry.store
    outside = tmp_path / "outside.png"
    outside.write_bytes(PNG)
    good = [
        {"txn_id": "t0", "scan": b64(PNG)},
        {"txn_id": "t1", "scan": "store:scans/b.pdf"},
        {"txn_id": "t2", "scan": store.uri("scans/a.png")},
        {"txn_id": "t3", "data": json.dumps({"scan": b64(SCAN)})},
        {"txn_id": "t4", "data": json.dumps({"scan": "store:scans/a.png"})},
    ]
    bad = [
        {"txn_id": "t5", "scan": "not base64!"},
        {"txn_id": "t6", "scan": "store:scans/missing.png"},
        {"txn_id": "t7", "scan": outside.as_uri()},
        {"txn_id": "t8", "scan": "s3://elsewhere/scans/a.png"},
        {"txn_id": "t9", "scan": "store:scans/big.bin"},
        {"txn_id": "t10", "scan": b64(BIG)},
        {"txn_id": "t11"},
    ]
    ids = produce(client, "events", good + bad)
    env = {
        "MMSERVE_STORE_URL": store.url,
        "MMSERVE_REDIS_URL": broker.url,
        "MMSERVE_BATCH__MAX_FILE_BYTES": str(LIMIT),
    }
    args = ["--model", "digest", "--source", "events", "--sink", "scores", "--group", "scorers"]
    args += ["--start", "0", "--id-field", "txn_id", "--batch-size", "4"]
    done = lambda: client.xlen("scores") + client.xlen("scores-dlq") == len(ids)  # noqa: E731
    with mmserve_stream(env, tmp_path / "stream.log", *args):
        wait_for(done, f"{len(ids)} outputs and dead letters")
        assert client.xpending("events", "scorers")["pending"] == 0
    files = [PNG, SCAN, PNG, SCAN, PNG]
    assert entries(client, "scores") == [
        {
            "source_id": i,
            "txn_id": f"t{k}",
            **digest(registry, data),
            "model": "digest",
            "version": "1",
        }
        for k, (i, data) in enumerate(zip(ids[:5], files, strict=True))
    ]
    root = store.root_uri
    rule = f"must name an object in the store: a key, or {root}/<key>"
    over = f"is over {LIMIT} bytes (MMSERVE_BATCH__MAX_FILE_BYTES)"
    dead = {
        e["txn_id"]: (e["source_id"], e["error"], e["reason"])
        for e in entries(client, "scores-dlq")
    }
    assert dead == {
        "t5": (
            ids[5],
            "InvalidField",
            "field 'scan' is not base64 or a reference: 'not base64!'",
        ),
        "t6": (ids[6], "UnreadableFile", "field 'scan': 'store:scans/missing.png' names no object"),
        "t7": (
            ids[7],
            "UnreadableFile",
            f"field 'scan': {outside.as_uri()!r} is outside the store ({rule})",
        ),
        "t8": (
            ids[8],
            "UnreadableFile",
            f"field 'scan': 's3://elsewhere/scans/a.png' is outside the store ({rule})",
        ),
        "t9": (ids[9], "UnreadableFile", f"field 'scan': 'store:scans/big.bin' {over}"),
        "t10": (ids[10], "UnreadableFile", f"field 'scan': {b64(BIG)[:40] + '...'!r} {over}"),
        "t11": (ids[11], "MissingField", "missing field 'scan'"),
    }
    # the dead letter keeps the event, to replay it
    assert json.loads(entries(client, "scores-dlq")[0]["event"]) == bad[0]


def consumer(client: Any, registry: Registry, ref: str, **options: Any) -> Consumer:
    settings = StreamSettings(**{"start": "0", "block_ms": 20, "id_field": "txn_id", **options})
    log = RedisEventLog(client, NAMES, start=settings.start, claim_idle_ms=settings.claim_idle_ms)
    c = Consumer(log, LiveModel(registry, ref), settings, max_file_bytes=LIMIT)
    assert c.open(threading.Event())
    return c


def test_a_binary_output_is_written_in_base64(client: Any, registry: Registry) -> None:
    ids = produce(client, "events", [{"txn_id": "t0", "image": b64(PNG)}])
    assert consumer(client, registry, "mirror").step() == 1
    assert entries(client, "scores") == [
        {
            "source_id": ids[0],
            "txn_id": "t0",
            "image": b64(PNG[::-1]),
            "model": "mirror",
            "version": "1",
        }
    ]


def test_a_file_the_store_cannot_give_is_delivered_again_then_dead_lettered(
    client: Any, registry: Registry
) -> None:
    # a folder is no object: the local store cannot read it (as it cannot an S3 store away)
    registry.store.write("folder/inside.png", PNG)
    ids = produce(client, "events", [{"txn_id": "t0", "scan": "store:folder"}])
    first = consumer(client, registry, "digest", max_deliveries=2, claim_idle_ms=1)
    assert first.step() == 1
    assert client.xlen("scores-dlq") == 0  # left pending: delivered again
    assert client.xpending("events", "scorers")["pending"] == 1
    wait_for(lambda: first.step() == 1, "the second delivery")
    [letter] = entries(client, "scores-dlq")
    assert (letter["source_id"], letter["error"], letter["deliveries"]) == (
        ids[0],
        "FileUnavailable",
        "2",
    )
    assert letter["reason"].startswith("field 'scan': cannot read 'store:folder': object store ")
    assert client.xlen("scores") == 0
    assert client.xpending("events", "scorers")["pending"] == 0
