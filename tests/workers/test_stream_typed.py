"""A stream scored by a model whose answers are typed, against a real Redis: each output entry
has the string label and int code as written, and the embedding (4 float32 values) and a
list of any length as JSON arrays."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from serving.registry import Registry
from serving.settings import StreamSettings
from serving.store import Store
from tests import fixtures
from tests.workers.streams import entries, produce
from workers.stream import Consumer, LiveModel, Names, RedisEventLog

XS = [1.5, -2.0, 0.25]
NAMES = Names("events", "scores", "scores-dlq", "scorers", "c1")


def test_each_entry_has_the_outputs_in_their_types(client: Any, tmp_path: Path) -> None:
    registry = Registry(Store.from_url(str(tmp_path / "store")))
    registry.register(fixtures.typed_model(tmp_path / "typed"), "typed", trust_code=True)
    events = [{"txn_id": f"t{i}", "x": repr(x)} for i, x in enumerate(XS)]
    events[2] = {"txn_id": "t2", "data": json.dumps({"x": XS[2]})}  # a JSON document
    ids = produce(client, "events", events)
    settings = StreamSettings(start="0", block_ms=20, id_field="txn_id")
    log = RedisEventLog(client, NAMES, start=settings.start, claim_idle_ms=settings.claim_idle_ms)
    consumer = Consumer(log, LiveModel(registry, "typed", settings.follow), settings)
    assert consumer.open(threading.Event())
    assert consumer.step() == 3
    assert entries(client, "scores") == [
        {
            "source_id": ids[0],
            "txn_id": "t0",
            "label": "spam",
            "code": "2",
            "score": "0.75",
            "embedding": "[1.5,3.0,-1.5,0.375]",
            "tokens": "[0]",
            "model": "typed",
            "version": "1",
        },
        {
            "source_id": ids[1],
            "txn_id": "t1",
            "label": "ham",
            "code": "0",
            "score": "-1",
            "embedding": "[-2.0,-4.0,2.0,-0.5]",
            "tokens": "[0,1]",
            "model": "typed",
            "version": "1",
        },
        {
            "source_id": ids[2],
            "txn_id": "t2",
            "label": "spam",
            "code": "2",
            "score": "0.125",
            "embedding": "[0.25,0.5,-0.25,0.0625]",
            "tokens": "[]",
            "model": "typed",
            "version": "1",
        },
    ]
    answers = fixtures.typed_answers(XS)
    outputs = entries(client, "scores")
    assert [json.loads(o["embedding"]) for o in outputs] == [a["embedding"] for a in answers]
    assert client.xlen("scores-dlq") == 0
