"""Window features in a stream consumer against a real Redis: the model sees the features
the pandas reference gives; the state is written by the commit, once, only for entries
still pending on the consumer; late events are dead-lettered when so chosen; old state is
expired."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from serving.features import spec as specs
from serving.features import state
from serving.features.windows import Member
from serving.http import create_app
from serving.registry import Registry
from serving.settings import Settings, StreamSettings
from serving.store import Store
from tests.services import RedisServer, kill_group, mmserve_server
from tests.windows import SPEC_YAML, echo_model, reference, seen, transactions
from tests.workers.streams import entries, mmserve_stream, produce, wait_for
from tests.workers.test_stream import drain
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
    held_members: int = 1_000_000,
    **options: Any,
) -> Consumer:
    settings = StreamSettings(**{"start": "0", "block_ms": 20, "id_field": "txn_id", **options})
    names = Names("events", "scores", "scores-dlq", "scorers", name)
    log = RedisEventLog(client, names, start=settings.start, claim_idle_ms=settings.claim_idle_ms)
    features = StreamFeatures(
        spec, client, "redis://", settings.json_field, held_members=held_members
    )
    c = Consumer(log, LiveModel(registry, "echo"), settings, features=features)
    assert c.open(threading.Event())
    return c


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


def test_consumers_taking_turns_on_the_same_keys_each_see_the_others_commits(
    client: Any, registry: Registry
) -> None:
    """Each consumer keeps a copy of the keys' state it saw; a key another consumer changed
    since is read again (its version moved), so turns in stream order give the reference."""
    events = transactions(600, seed=4, cards=3)
    one, two = (consumer(client, registry, name=n, batch_size=40) for n in ("c1", "c2"))
    for turn, start in enumerate(range(0, 600, 40)):  # each batch produced, then scored
        produce(client, "events", events[start : start + 40])
        assert (one, two)[turn % 2].step() == 40
    outputs = entries(client, "scores")
    expected = reference(SPEC, events)
    got = seen(outputs, SPEC)
    for name in SPEC.features:
        np.testing.assert_array_equal(got[name].to_numpy(), expected[name].to_numpy(), name)
    assert one.features is not None and two.features is not None
    key = "mmserve:features:card_id:c0"
    current = client.get(state.version(key))
    assert one.features._held[key][0] == current  # the last turn's: its copy is the state
    assert key not in two.features._held or two.features._held[key][0] != current


def test_a_retried_commit_adds_nothing_twice_and_a_commit_of_entries_not_pending_adds_none(
    client: Any, registry: Registry
) -> None:
    ids = produce(client, "events", [{"n": str(i)} for i in range(3)])
    log = RedisEventLog(client, NAMES, start="0")
    log.open()
    assert [e.id for e in log.read(2, 0)] == ids[:2]  # the third is not pending on c1
    members = {
        i: [(("card_id", "c"), Member.of(1000 + k, i, {"amount": 1.0}))] for k, i in enumerate(ids)
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


def test_the_copy_of_the_state_a_consumer_keeps_is_bounded_in_members_and_features_hold(
    client: Any, registry: Registry
) -> None:
    """A key past the bound (a hot card over a long window) is read again when needed,
    not held: the features are the reference's all the same."""
    events = transactions(600, seed=3, cards=3)
    produce(client, "events", events)
    c = consumer(client, registry, batch_size=50, held_members=40)
    assert drain(c) == 600
    got, expected = seen(entries(client, "scores"), SPEC), reference(SPEC, events)
    for name in SPEC.features:
        np.testing.assert_array_equal(got[name].to_numpy(), expected[name].to_numpy(), name)
    assert c.features is not None
    held = [base for _, base in c.features._held.values()]
    assert c.features._members == sum(len(b.times) for b in held) <= 40
    assert sum(client.zcard(k) for k in client.keys("mmserve:features:*")) > 400  # in Redis


def flaky(registry: Registry, folder: Path, fails: str) -> None:
    """A new version of ``echo`` that fails a batch holding a row where ``fails`` (a Python
    condition on ``table``) holds, while the environment variable FLAKY is set."""
    echo_model(folder, SPEC)
    code = (
        (folder / "echo.py")
        .read_text()
        .replace(
            "    def predict(self, table):\n",
            "    def predict(self, table):\n"
            "        import os\n"
            f'        if os.environ.get("FLAKY") and {fails}:\n'
            '            raise RuntimeError("flaky")\n',
        )
    )
    (folder / "echo.py").write_text(code)
    registry.register(folder, "echo", trust_code=True)


def test_an_entry_left_pending_by_a_models_error_adds_its_state_once_when_scored_again(
    client: Any, registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit writes no state for an entry left pending, so the consumer's copy must
    not hold it either: it is added when the entry is scored again, and counted once; a
    late one is counted late once."""
    flaky(registry, tmp_path / "flaky", '7.0 in table["card_amount_sum_10m"].to_pylist()')
    base = {"card_id": "c1", "account_id": "a1", "payee": "p", "amount": "1.00"}
    times, amounts = [1000, 1001, 900, 1002, 1003], ["1", "6", "7", "1", "1"]
    events = [
        {**base, "txn_id": f"t{i}", "ts": str(t), "amount": a}
        for i, (t, a) in enumerate(zip(times, amounts, strict=True))
    ]  # t1's sum is 7 (fails once), t2 is late (its own 7: fails once)
    produce(client, "events", events[:4])
    monkeypatch.setenv("FLAKY", "1")
    c = consumer(client, registry, claim_idle_ms=5)
    assert c.step() == 4  # t1 and t2 fail: left pending
    assert client.xpending("events", "scorers")["pending"] == 2
    assert c.metrics.late.labels("scored")._value.get() == 0
    monkeypatch.delenv("FLAKY")
    produce(client, "events", events[4:])
    time.sleep(0.01)  # t1 and t2 idle past claim_idle_ms
    assert drain(c) == 3
    counts = {o["txn_id"]: o["seen_card_txn_count_60s"] for o in entries(client, "scores")}
    assert counts == {"t0": "1", "t1": "2", "t2": "1", "t3": "3", "t4": "4"}
    assert c.metrics.late.labels("scored")._value.get() == 1
    assert client.zcard("mmserve:features:card_id:c1") == 4
    held = c.features._held["mmserve:features:card_id:c1"][1] if c.features else None
    assert held is not None and len(held.members) == 4


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
    # account_id's horizon is 5 min + 30 s: only the last is kept
    assert client.zcard("mmserve:features:account_id:a1") == 1


# -- real mmserve stream processes -----------------------------------------------------------


@pytest.mark.slow
def test_20000_card_payments_through_killed_and_cut_off_consumers_get_the_reference_features(
    broker: RedisServer, client: Any, registry: Registry, tmp_path: Path
) -> None:
    """The issue's test: one consumer SIGKILLed mid-way, its entries taken over by another
    whose Redis connections are cut once; every event has one output, with the features
    pandas computes over the whole stream in its order, and none is left pending."""
    (tmp_path / "features.yaml").write_text(SPEC_YAML)
    env = {
        "MMSERVE_STORE_URL": registry.store.url,
        "MMSERVE_REDIS_URL": broker.url,
        "MMSERVE_STREAM__CLAIM_IDLE_MS": "1000",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }
    args = ["--model", "echo", "--source", "events", "--sink", "scores", "--group", "scorers"]
    args += ["--start", "0", "--id-field", "txn_id", "--features", str(tmp_path / "features.yaml")]
    events = transactions(20_000, seed=11)
    ids = produce(client, "events", events)
    with mmserve_stream(env, tmp_path / "a.log", *args, "--consumer", "a") as a:
        wait_for(lambda: client.xlen("scores") >= 6000, "6,000 outputs")
        kill_group(a, signal.SIGKILL)
        a.wait(10)
    held = client.xpending_range("events", "scorers", "-", "+", 2000, consumername="a")
    assert held, "consumer a died holding no batch"
    # taken over in order: a's entries idle past claim_idle_ms before b looks
    wait_for(
        lambda: all(
            e["time_since_delivered"] > 1000
            for e in client.xpending_range("events", "scorers", "-", "+", 2000)
        ),
        "a's entries idle past claim_idle_ms",
    )
    with mmserve_stream(env, tmp_path / "b.log", *args, "--consumer", "b") as b:
        wait_for(lambda: client.xlen("scores") >= 12_000, "12,000 outputs")
        # every connection but this one's: a command in flight is lost with it and sent
        # again (redis-py's retry, or the consumer's), a commit's as well
        assert client.client_kill_filter(_type="normal", skipme=True) > 0
        wait_for(
            lambda: (
                client.xlen("scores") >= len(events)
                and client.xpending("events", "scorers")["pending"] == 0
            ),
            "every event scored",
        )
        kill_group(b, signal.SIGTERM)
        assert b.wait(20) == 0
    outputs = entries(client, "scores")
    assert sorted(o["source_id"] for o in outputs) == sorted(ids)
    assert client.xlen("scores-dlq") == 0
    by_id = {o["source_id"]: o for o in outputs}
    got = seen([by_id[i] for i in ids], SPEC)
    expected = reference(SPEC, events)
    assert 200 < int(expected["late"].sum()) < 600
    for name in SPEC.features:
        np.testing.assert_array_equal(got[name].to_numpy(), expected[name].to_numpy(), name)


@pytest.mark.slow
def test_a_real_time_request_gets_the_features_the_stream_gives_its_event_and_adds_nothing(
    broker: RedisServer, client: Any, registry: Registry, tmp_path: Path
) -> None:
    (tmp_path / "features.yaml").write_text(SPEC_YAML)
    events = transactions(501, seed=2)
    history, payment = events[:500], events[500]
    produce(client, "events", history)
    c = consumer(client, registry)
    assert drain(c) == 500
    env = {
        "MMSERVE_STORE_URL": registry.store.url,
        "MMSERVE_REDIS_URL": broker.url,
        "MMSERVE_MODELS": json.dumps({"echo": {"features": str(tmp_path / "features.yaml")}}),
    }
    keys = sorted(client.keys("mmserve:features:*"))
    members = {k: client.zcard(k) for k in keys}
    row = {k: v for k, v in payment.items() if k != "txn_id"}
    with mmserve_server(env) as url, httpx.Client(base_url=url, timeout=30) as http:
        answer = http.post("/v1/models/echo/predict", json={"instances": [row]})
        assert answer.status_code == 200, answer.text
        (online,) = answer.json()["predictions"]
        tensors = [
            {"name": k, "shape": [1], "datatype": "BYTES", "data": [v]}
            for k, v in row.items()
            if k not in ("amount", "ts")
        ] + [
            {"name": k, "shape": [1], "datatype": "FP64", "data": [float(row[k])]}
            for k in ("amount", "ts")
        ]
        v2 = http.post("/v2/models/echo/infer", json={"inputs": tensors})
        assert v2.status_code == 200, v2.text
        assert {o["name"]: o["data"][0] for o in v2.json()["outputs"]} == online
        missing = http.post("/v1/models/echo/predict", json={"instances": [row, {"ts": "1"}]})
    assert {k: client.zcard(k) for k in sorted(client.keys("mmserve:features:*"))} == members
    produce(client, "events", [payment])
    assert drain(c) == 1
    streamed = entries(client, "scores")[-1]
    assert streamed["txn_id"] == payment["txn_id"]
    assert {k: float(v) for k, v in online.items()} == {
        f"seen_{name}": float(streamed[f"seen_{name}"]) for name in SPEC.features
    }
    assert online["seen_card_txn_count_60s"] > 1
    assert missing.status_code == 422
    assert missing.json()["error"] == "missing field 'card_id' at row 1"


def test_a_real_time_request_with_redis_away_is_answered_503_naming_it(
    registry: Registry, tmp_path: Path
) -> None:
    """The state is in Redis: without it the features, and so the answer, cannot be had."""
    (tmp_path / "features.yaml").write_text(SPEC_YAML)
    settings = Settings(
        store_url=registry.store.url,
        redis_url="redis://127.0.0.1:1/0",  # nothing listens there
        models={"echo": {"features": str(tmp_path / "features.yaml")}},
    )
    app = create_app(settings, registry)
    row = {"card_id": "c1", "account_id": "a1", "payee": "p", "amount": 1.0, "ts": 1765000000}

    async def predict() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mmserve") as http:
            return await http.post("/v1/models/echo/predict", json={"instances": [row]})

    try:
        answer = asyncio.run(predict())
    finally:
        app.state.jobs.queue.close()
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "5"
    assert answer.json()["error"].startswith("Redis at 127.0.0.1:1/0 is unavailable: ")
