"""A stream scored by a chain of models (``prep,scored@production``) against a throwaway
Redis: each output is both models applied by hand and names both versions; an alias step is
followed between batches, or pinned; an event a later step refuses is dead-lettered naming
that step; and a real ``mmserve stream --model prep,scored@production`` does the same."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from sklearn.linear_model import LogisticRegression

from serving.endpoints.pipeline import merge
from serving.registry import Registry
from serving.settings import RegistrySettings, StreamSettings
from serving.store import Store
from tests import fixtures
from tests.services import RedisServer
from tests.serving.endpoints.test_pipeline import register_pair
from tests.workers.streams import entries, fields, mmserve_stream, produce, rows, wait_for
from workers.stream import Consumer, LiveModel, Names, RedisEventLog

CHAIN = "prep,scored@production"
NAMES = Names("events", "scores", "scores-dlq", "scorers", "c1")


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    """``prep:1``, ``scored:1`` (the production alias) and ``scored:2`` (another fit)."""
    registry = Registry(Store.from_url(str(tmp_path / "store")), RegistrySettings(alias_ttl_s=0))
    register_pair(registry)
    x, y = fixtures.numeric_data()
    frame = fixtures.numeric_table(x).append_column("bonus", pa.array(np.zeros(len(x))))
    registry.register(LogisticRegression(C=0.01).fit(frame.to_pandas(), y), "scored")
    registry.set_alias("scored", "production", 1)
    return registry


def consumer(client: Any, registry: Registry, names: Names = NAMES, **options: Any) -> Consumer:
    settings = StreamSettings(**{"start": "0", "block_ms": 20, "id_field": "txn_id", **options})
    log = RedisEventLog(client, names, start=settings.start, claim_idle_ms=settings.claim_idle_ms)
    c = Consumer(log, LiveModel(registry, CHAIN, settings.follow), settings, source=names.source)
    assert c.open(threading.Event())
    return c


def drain(c: Consumer) -> int:
    total = 0
    while n := c.step():
        total += n
    return total


def bonus(n: int, start: int = 0) -> list[float]:
    return [round(0.1 * (start + i) - 1, 3) for i in range(n)]


def events(x: np.ndarray, start: int = 0) -> list[dict[str, str]]:
    return [
        {"txn_id": f"t{start + i}", **fields(row), "bonus": repr(b)}
        for i, (row, b) in enumerate(zip(x, bonus(len(x), start), strict=True))
    ]


def by_hand(registry: Registry, scored: str, x: np.ndarray, start: int = 0) -> list[dict[str, str]]:
    """The outputs the chain ``prep:1,<scored>`` owes the events of ``x``, as stream fields."""
    table = fixtures.numeric_table(x).append_column("bonus", pa.array(bonus(len(x), start)))
    prep, last = registry.load("prep:1"), registry.load(scored)
    answer = last.predict(merge(table, prep.predict(table)))
    name, version = last.ref.split(":")
    return [
        {"txn_id": f"t{start + i}", "label": str(row["label"]), "proba_0": repr(row["proba_0"]),
         "proba_1": repr(row["proba_1"]), "model": f"prep,{name}", "version": f"1,{version}"}
        for i, row in enumerate(answer.to_pylist())
    ]  # fmt: skip


def answers(client: Any, stream: str) -> list[dict[str, str]]:
    """The sink's entries without their source ids, floats written back in Python's form."""
    found = [{k: v for k, v in e.items() if k != "source_id"} for e in entries(client, stream)]
    for entry in found:
        for name in ("proba_0", "proba_1"):
            entry[name] = repr(float(entry[name]))
    return found


def test_a_chain_follows_its_alias_step_between_batches_or_pins_it(
    client: Any, registry: Registry
) -> None:
    follow = consumer(client, registry)
    pin = consumer(
        client, registry, Names("events", "pinned", "pinned-dlq", "pinning", "c1"), follow=False
    )
    x1, x2 = rows(10), rows(10, seed=9)
    produce(client, "events", events(x1))
    assert (drain(follow), drain(pin)) == (10, 10)
    registry.set_alias("scored", "production", 2)
    produce(client, "events", events(x2, start=10))
    assert (drain(follow), drain(pin)) == (10, 10)
    followed, pinned = answers(client, "scores"), answers(client, "pinned")
    assert by_hand(registry, "scored:1", x2, 10) != by_hand(registry, "scored:2", x2, 10)
    assert followed == by_hand(registry, "scored:1", x1) + by_hand(registry, "scored:2", x2, 10)
    assert pinned == by_hand(registry, "scored:1", x1) + by_hand(registry, "scored:1", x2, 10)
    sample = follow.metrics.registry.get_sample_value
    labels = {"model": "prep,scored", "version": "1,2"}
    assert sample("mmserve_stream_events_total", labels) == 10


def test_an_event_a_later_step_refuses_is_dead_lettered_naming_that_step(
    client: Any, registry: Registry
) -> None:
    x = rows(6)
    batch = events(x)
    batch[2]["bonus"] = "nan"  # the first step does not take bonus; the second refuses NaN
    del batch[4]["bonus"]
    produce(client, "events", batch)
    assert drain(consumer(client, registry)) == 6
    good = [i for i in range(6) if i not in (2, 4)]
    expected = by_hand(registry, "scored:1", x)
    assert answers(client, "scores") == [expected[i] for i in good]
    dead = {e["txn_id"]: (e["error"], e["reason"]) for e in entries(client, "scores-dlq")}
    assert dead == {
        "t2": ("NullValue", "step 2 (scored:1): column 'bonus' has a NaN value"),
        "t4": ("MissingField", "missing field 'bonus'"),
    }


@pytest.mark.slow
def test_mmserve_stream_scores_with_a_chain(
    client: Any, registry: Registry, broker: RedisServer, tmp_path: Path
) -> None:
    x = rows(50)
    produce(client, "events", events(x))
    env = {"MMSERVE_STORE_URL": registry.store.url, "MMSERVE_REDIS_URL": broker.url}
    args = ["--model", CHAIN, "--source", "events", "--sink", "scores", "--group", "scorers"]
    args += ["--start", "0", "--id-field", "txn_id"]
    with mmserve_stream(env, tmp_path / "stream.log", *args):
        wait_for(lambda: client.xlen("scores") == 50, "50 outputs")
    assert answers(client, "scores") == by_hand(registry, "scored:1", x)
    assert b"with prep:1,scored:1" in (tmp_path / "stream.log").read_bytes()
