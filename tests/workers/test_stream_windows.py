"""Window features in a stream consumer against a real Redis: the model sees the features
the pandas reference gives; the state is written by the commit, once, only for entries
still pending on the consumer; late events are dead-lettered when so chosen; old state is
expired."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serving.features import spec as specs
from serving.features import state
from serving.features.windows import Member
from serving.registry import Registry
from serving.settings import StreamSettings
from serving.store import Store
from tests.windows import SPEC_YAML, echo_model, reference, seen, transactions
from tests.workers.streams import entries, produce
from workers._stream_features import StreamFeatures
from workers._stream_log import Outputs
from workers.stream import Consumer, LiveModel, Names, RedisEventLog

NAMES = Names("events", "scores", "scores-dlq", "scorers", "c1")
SPEC = specs.parse(SPEC_YAML)


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    registry = Registry(Store.from_url(str(tmp_path / "store")))
    registry.register(echo_model(tmp_path / "echo", SPEC), "echo", trust_code=True)
    return registry


def consumer(
    client: Any,
    registry: Registry,
    spec: specs.FeatureSpec = SPEC,
    name: str = "c1",
    **options: Any,
) -> Consumer:
    settings = StreamSettings(**{"start": "0", "block_ms": 20, "id_field": "txn_id", **options})
    names = Names("events", "scores", "scores-dlq", "scorers", name)
    log = RedisEventLog(client, names, start=settings.start, claim_idle_ms=settings.claim_idle_ms)
    features = StreamFeatures(spec, client, "redis://", settings.json_field)
    c = Consumer(log, LiveModel(registry, "echo"), settings, features=features)
    assert c.open(threading.Event())
    return c


def drain(c: Consumer) -> int:
    total = 0
    while n := c.step():
        total += n
    return total


def test_the_model_sees_each_events_window_features_as_the_reference_computes_them(
    client: Any, registry: Registry
) -> None:
    events = transactions(1500, seed=5)
    produce(client, "events", events)
    c = consumer(client, registry, batch_size=100)
    assert drain(c) == 1500
    outputs = entries(client, "scores")
    assert [o["txn_id"] for o in outputs] == [e["txn_id"] for e in events]
    expected = reference(SPEC, events)
    got = seen(outputs, SPEC)
    for name in SPEC.features:
        np.testing.assert_array_equal(got[name].to_numpy(), expected[name].to_numpy(), name)
    assert client.xpending("events", "scorers")["pending"] == 0
    late = int(expected["late"].sum())
    assert late > 10 and c.metrics.late.labels("scored")._value.get() == late
    cards = {e["card_id"] for e in events}
    assert all(client.zcard(f"mmserve:features:card_id:{c}") > 0 for c in cards)
    ttl = client.pttl("mmserve:features:card_id:c1")
    assert 0 < ttl <= 86_400_000


def test_a_retried_commit_adds_nothing_twice_and_a_commit_of_entries_not_pending_adds_none(
    client: Any, registry: Registry
) -> None:
    ids = produce(client, "events", [{"n": str(i)} for i in range(3)])
    log = RedisEventLog(client, NAMES, start="0")
    log.open()
    assert [e.id for e in log.read(2, 0)] == ids[:2]  # the third is not pending on c1
    members = {
        i: [(("card_id", "c"), Member(1000 + k, i, {"amount": 1.0}))] for k, i in enumerate(ids)
    }
    changes = state.changes(SPEC, members)
    outputs = Outputs(ids, {"x": ["1", "2", "3"]}, {"model": "m", "version": "1"})
    assert log.commit(outputs, [], changes).skipped == frozenset(ids[2:])
    assert log.commit(outputs, [], changes).skipped == frozenset(ids)  # after a lost reply
    key = "mmserve:features:card_id:c"
    assert client.zrange(key, 0, -1, withscores=True) == [
        (state.encode(members[i][0][1]), 1000.0 + k) for k, i in enumerate(ids[:2])
    ]
    assert client.xlen("scores") == 2


def test_late_events_are_dead_lettered_when_so_chosen_and_counted(
    client: Any, registry: Registry
) -> None:
    spec = specs.parse(
        SPEC_YAML.replace("allowed_lateness: 30s}", "allowed_lateness: 30s, late: dead_letter}")
    )
    base = {"card_id": "c1", "account_id": "a1", "payee": "p", "amount": "10.00"}
    events = [
        {**base, "txn_id": "t0", "ts": "1000"},
        {**base, "txn_id": "t1", "ts": "960"},  # 40 s behind: too late
        {**base, "txn_id": "t2", "ts": "975"},  # 25 s behind: in time
        {**base, "txn_id": "t3", "ts": "1001"},  # sees t0 and t2, not t1
    ]
    produce(client, "events", events)
    c = consumer(client, registry, spec)
    assert drain(c) == 4
    outputs = entries(client, "scores")
    assert [o["txn_id"] for o in outputs] == ["t0", "t2", "t3"]
    assert [o["seen_card_txn_count_60s"] for o in outputs] == ["1", "1", "3"]
    (dead,) = entries(client, "scores-dlq")
    assert (dead["txn_id"], dead["error"], dead["reason"]) == (
        "t1",
        "LateEvent",
        "event time more than the allowed lateness (30000 ms) behind its key's latest",
    )
    assert c.metrics.late.labels("dead_lettered")._value.get() == 1


def test_state_older_than_the_longest_window_and_the_lateness_is_expired(
    client: Any, registry: Registry
) -> None:
    base = {"card_id": "c1", "account_id": "a1", "payee": "p", "amount": "1.00"}
    events = [{**base, "txn_id": f"t{i}", "ts": str(ts)} for i, ts in enumerate([0, 100, 700])]
    produce(client, "events", events)
    assert drain(consumer(client, registry, batch_size=1)) == 3
    # card_id's horizon: 10 min + 30 s; at 700 s, the event at 0 s has left it
    times = [t for _, t in client.zrange("mmserve:features:card_id:c1", 0, -1, withscores=True)]
    assert times == [100_000.0, 700_000.0]
    # account_id's horizon is 1 h + 30 s: all three are kept
    assert client.zcard("mmserve:features:account_id:a1") == 3
