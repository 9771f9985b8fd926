"""The streaming consumer against a real Redis: exact answers, dead letters with reasons,
exactly-once commits when consumers are claimed from, die, restart or share the work, a
Redis restart, alias follow and pin; and real ``mmserve stream`` processes, SIGKILLed and
SIGTERMed."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from serving.registry import Registry
from serving.settings import RegistrySettings, StreamSettings
from serving.store import Store
from tests import fixtures
from tests.services import RedisServer, free_port, kill_group, redis_server
from tests.workers.streams import (
    GatedLogistic,
    PickyModel,
    entries,
    fields,
    mmserve_stream,
    produce,
    rows,
    table,
    wait_for,
)
from workers._stream_log import Outputs
from workers.stream import Consumer, LiveModel, Names, RedisEventLog

PICKLED: dict[str, Any] = {"flavor": "sklearn-pickle", "trust_pickle": True}


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    registry = Registry(Store.from_url(str(tmp_path / "store")), RegistrySettings(alias_ttl_s=0))
    registry.register(fixtures.logistic(), "lr", alias="production")
    return registry


NAMES = Names("events", "scores", "scores-dlq", "scorers", "c1")


def consumer(
    client: Any, registry: Registry, ref: str = "lr", names: Names = NAMES, **options: Any
) -> Consumer:
    """A consumer in this process, its group made; reads wait 20 ms at most when idle."""
    settings = StreamSettings(**{"start": "0", "block_ms": 20, "id_field": "txn_id", **options})
    log = RedisEventLog(client, names, start=settings.start, claim_idle_ms=settings.claim_idle_ms)
    c = Consumer(log, LiveModel(registry, ref, settings.follow), settings, source=names.source)
    assert c.open(threading.Event())
    return c


def drain(c: Consumer) -> int:
    """Steps until one finds nothing to do; the events they held."""
    total = 0
    while n := c.step():
        total += n
    return total


def events(x: Any, start: int = 0) -> list[dict[str, str]]:
    return [{"txn_id": f"t{start + i}", **fields(row)} for i, row in enumerate(x)]


def by_source(client: Any, stream: str) -> dict[str, dict[str, str]]:
    found = entries(client, stream)
    result = {e["source_id"]: e for e in found}
    assert len(result) == len(found), "an event has two entries"
    return result


def assert_answers(outputs: list[dict[str, str]], expected: Any, ref: str = "lr:1") -> None:
    """Each output is the answer of the predictor of ``ref``, bit for bit (floats read back
    exactly), and says so."""
    assert [o["txn_id"] for o in outputs] == expected.column("txn_id").to_pylist()
    assert [o["label"] for o in outputs] == [str(v) for v in expected.column("label").to_pylist()]
    for name in ("proba_0", "proba_1"):
        assert [float(o[name]) for o in outputs] == expected.column(name).to_pylist()
    assert {f"{o['model']}:{o['version']}" for o in outputs} == {ref}


def expected_of(registry: Registry, ref: str, x: Any, ids: list[str]) -> Any:
    scored = registry.load(ref).predict(table(x))
    return scored.add_column(0, "txn_id", [ids])


# -- in this process -------------------------------------------------------------------------


def test_events_are_scored_once_each_with_the_predictors_exact_answer(
    client: Any, registry: Registry
) -> None:
    x = rows(1000)
    batch = events(x)
    for i in range(0, 1000, 3):  # a third as one JSON document each, numbers as JSON numbers
        doc = {name: float(v) for name, v in zip(fixtures.FEATURES, x[i], strict=True)}
        batch[i] = {"txn_id": f"t{i}", "data": json.dumps(doc)}
    ids = produce(client, "events", batch)
    c = consumer(client, registry, batch_size=128)
    assert drain(c) == 1000
    outputs = entries(client, "scores")
    assert [o["source_id"] for o in outputs] == ids
    assert_answers(outputs, expected_of(registry, "lr", x, [f"t{i}" for i in range(1000)]))
    assert client.xpending("events", "scorers")["pending"] == 0
    assert client.xlen("scores-dlq") == 0
    sample = c.metrics.registry.get_sample_value
    assert sample("mmserve_stream_events_total", {"model": "lr", "version": "1"}) == 1000
    assert sample("mmserve_stream_batch_size_count") == 8
    assert sample("mmserve_stream_lag_seconds_count") == 1000


def test_bad_events_are_dead_lettered_at_once_naming_the_field(
    client: Any, registry: Registry
) -> None:
    x = rows(9)
    good = events(x)
    bad = [
        {k: v for k, v in good[1].items() if k != "f2"},
        {**good[2], "f1": "abc"},
        {"txn_id": "t3", "data": '{"f0": 1,'},
        {"txn_id": "t4", "data": "[1, 2]"},
        {"txn_id": "t5", "data": json.dumps({**{f: 0.5 for f in fixtures.FEATURES}, "f3": None})},
        {**good[6], "f0": "nan"},
        {k: v for k, v in good[7].items() if k != "txn_id"},
    ]
    ids = produce(client, "events", [good[0], *bad, good[8]])
    c = consumer(client, registry)
    assert drain(c) == 9
    outputs = entries(client, "scores")
    assert [o["source_id"] for o in outputs] == [ids[0], ids[8]]
    assert_answers(outputs, expected_of(registry, "lr", x[[0, 8]], ["t0", "t8"]))
    dead = by_source(client, "scores-dlq")
    assert {i: (dead[i]["error"], dead[i]["reason"]) for i in ids[1:8]} == {
        ids[1]: ("MissingField", "missing field 'f2'"),
        ids[2]: ("InvalidField", "field 'f1' is not a number: 'abc'"),
        ids[3]: (
            "InvalidField",
            "field 'data' is not a JSON object (Expecting property name enclosed in double "
            "quotes): '{\"f0\": 1,'",
        ),
        ids[4]: ("InvalidField", "field 'data' is not a JSON object: '[1, 2]'"),
        ids[5]: ("InvalidField", "field 'f3' is not a number: None"),
        ids[6]: ("NullValue", "column 'f0' has a NaN value"),
        ids[7]: ("MissingField", "missing field 'txn_id'"),
    }
    assert json.loads(dead[ids[2]]["event"]) == bad[1]  # the event itself, to replay it
    assert (dead[ids[1]]["txn_id"], dead[ids[1]]["deliveries"]) == ("t1", "1")
    assert client.xpending("events", "scorers")["pending"] == 0
    sample = c.metrics.registry.get_sample_value
    assert sample("mmserve_stream_dead_lettered_total", {"error": "InvalidField"}) == 4


def test_a_batch_of_bad_events_only_is_dead_lettered_and_the_consumer_goes_on(
    client: Any, registry: Registry
) -> None:
    good = events(rows(3))
    bad = [{"txn_id": "t0", "amount": "12.5"}, {"txn_id": "t1", "data": '{"hour": 3}'}]
    ids = produce(client, "events", bad)
    c = consumer(client, registry)
    assert drain(c) == 2
    dead = by_source(client, "scores-dlq")
    assert {i: dead[i]["error"] for i in ids} == {ids[0]: "MissingField", ids[1]: "MissingField"}
    assert entries(client, "scores") == []
    assert client.xpending("events", "scorers")["pending"] == 0
    later = produce(client, "events", good)  # the consumer is still there
    assert drain(c) == 3
    assert [o["source_id"] for o in entries(client, "scores")] == later


def test_a_commit_writes_only_the_entries_still_pending_on_its_consumer(
    client: Any, registry: Registry
) -> None:
    ids = produce(client, "events", events(rows(10)))
    a = RedisEventLog(client, NAMES, start="0")
    a.open()
    assert [e.id for e in a.read(10, 0)] == ids
    client.xclaim("events", "scorers", "c2", 0, ids[:4])  # c2 took four of them over
    outputs = Outputs(ids, {"txn_id": [f"t{i}" for i in range(10)]}, {"model": "m"})
    assert a.commit(outputs, []).skipped == frozenset(ids[:4])
    assert [o["source_id"] for o in entries(client, "scores")] == ids[4:]
    assert a.commit(outputs, []).skipped == frozenset(ids)  # a retry after a lost reply
    c2 = consumer(client, registry, names=Names("events", "scores", "scores-dlq", "scorers", "c2"))
    assert drain(c2) == 4  # its own pending ones, as a restarted consumer does
    assert sorted(by_source(client, "scores")) == sorted(ids)
    assert client.xpending("events", "scorers")["pending"] == 0


def test_entries_of_a_dead_consumer_are_claimed_and_the_trimmed_ones_dead_lettered(
    client: Any, registry: Registry
) -> None:
    ids = produce(client, "events", events(rows(20)))
    client.xgroup_create("events", "scorers", "0")
    client.xreadgroup("scorers", "dead", {"events": ">"}, count=20)  # then it died
    client.xdel("events", *ids[5:8])  # trimmed while pending
    time.sleep(0.01)
    c = consumer(client, registry, claim_idle_ms=5)
    assert drain(c) == 17
    assert sorted(by_source(client, "scores")) == sorted(ids[:5] + ids[8:])
    dead = by_source(client, "scores-dlq")
    assert sorted(dead) == sorted(ids[5:8])
    assert {(d["error"], d["reason"]) for d in dead.values()} == {
        ("EntryTrimmed", "trimmed from stream 'events' while pending: its fields are gone, it "
         "was not scored"),
    }  # fmt: skip
    assert client.xpending("events", "scorers")["pending"] == 0
    sample = c.metrics.registry.get_sample_value
    assert sample("mmserve_stream_dead_lettered_total", {"error": "EntryTrimmed"}) == 3


def test_an_entry_delivered_past_the_limit_is_dead_lettered_unscored(
    client: Any, registry: Registry
) -> None:
    ids = produce(client, "events", events(rows(2)))
    client.xgroup_create("events", "scorers", "0")
    client.xreadgroup("scorers", "dead1", {"events": ">"}, count=1)
    for name in ("dead2", "dead3"):  # each died with it, and the next claimed it
        client.xclaim("events", "scorers", name, 0, [ids[0]])
    time.sleep(0.01)
    c = consumer(client, registry, claim_idle_ms=5, max_deliveries=3)
    assert drain(c) == 2
    assert list(by_source(client, "scores")) == [ids[1]]
    dead = by_source(client, "scores-dlq")[ids[0]]
    assert (dead["error"], dead["deliveries"], dead["txn_id"]) == ("TooManyDeliveries", "4", "t0")
    assert dead["reason"] == (
        "delivered 4 times, more than the limit of 3 (MMSERVE_STREAM__MAX_DELIVERIES), and "
        "never committed: every consumer that took it stopped before finishing it"
    )


def test_a_restarted_consumer_first_drains_its_own_pending_entries(
    client: Any, registry: Registry
) -> None:
    first = produce(client, "events", events(rows(5)))
    client.xgroup_create("events", "scorers", "0")
    client.xreadgroup("scorers", "c1", {"events": ">"}, count=5)  # c1, before it was killed
    client.xdel("events", first[2])  # trimmed while pending
    later = produce(client, "events", events(rows(5, seed=8), start=5))
    own = RedisEventLog(client, NAMES).read(10, 0)
    assert [(e.id, e.fields is None, e.deliveries) for e in own] == [
        (i, i == first[2], 1 if i == first[2] else 2) for i in first
    ]
    c = consumer(client, registry, claim_idle_ms=600_000)  # nothing is idle that long
    assert drain(c) == 9
    assert [o["source_id"] for o in entries(client, "scores")] == first[:2] + first[3:] + later
    dead = by_source(client, "scores-dlq")
    assert [(i, d["error"]) for i, d in dead.items()] == [(first[2], "EntryTrimmed")]
    assert client.xpending("events", "scorers")["pending"] == 0


def test_a_model_error_leaves_the_event_pending_then_dead_letters_it(
    client: Any, registry: Registry
) -> None:
    x, y = fixtures.numeric_data(10)
    registry.register(PickyModel().fit(x, y), "picky", **PICKLED)
    batch = events(rows(8))
    batch[5]["f0"] = "5000"  # the model raises for any call that holds it
    ids = produce(client, "events", batch)
    c = consumer(client, registry, "picky", claim_idle_ms=5, max_deliveries=2)
    assert c.step() == 8  # the seven others are scored; the failing one stays pending
    assert sorted(by_source(client, "scores")) == sorted(ids[:5] + ids[6:])
    assert client.xpending("events", "scorers")["pending"] == 1
    time.sleep(0.01)
    assert c.step() == 1  # delivered again (claimed), fails again: the limit
    dead = by_source(client, "scores-dlq")[ids[5]]
    assert (dead["error"], dead["deliveries"]) == ("ModelError", "2")
    assert dead["reason"] == "model picky:1 failed: ValueError: f0 out of range"
    assert client.xpending("events", "scorers")["pending"] == 0


def test_alias_moves_are_followed_between_batches_or_pinned(
    client: Any, registry: Registry
) -> None:
    registry.register(fixtures.logistic(), "fraud", alias="production")
    follow = consumer(client, registry, "fraud@production")
    pin = consumer(
        client, registry, "fraud@production", follow=False,
        names=Names("events", "pinned", "pinned-dlq", "pinning", "c1"),
    )  # fmt: skip
    x1, x2 = rows(10), rows(10, seed=9)
    produce(client, "events", events(x1))
    assert (drain(follow), drain(pin)) == (10, 10)
    registry.register(fixtures.forest(), "fraud", alias="production")
    produce(client, "events", events(x2, start=10))
    assert (drain(follow), drain(pin)) == (10, 10)
    followed, pinned = entries(client, "scores"), entries(client, "pinned")
    ids1, ids2 = [f"t{i}" for i in range(10)], [f"t{i}" for i in range(10, 20)]
    assert_answers(followed[:10], expected_of(registry, "fraud:1", x1, ids1), "fraud:1")
    assert_answers(followed[10:], expected_of(registry, "fraud:2", x2, ids2), "fraud:2")
    assert_answers(pinned[10:], expected_of(registry, "fraud:1", x2, ids2), "fraud:1")


def test_a_new_group_starts_at_new_events_unless_told_to_start_at_0(
    client: Any, registry: Registry
) -> None:
    produce(client, "events", events(rows(3)))
    new = consumer(client, registry, start="$")
    later = produce(client, "events", events(rows(2, seed=8), start=3))
    everything = consumer(client, registry, names=Names("events", "all", "all-dlq", "all", "c1"))
    assert (drain(new), drain(everything)) == (2, 5)
    assert list(by_source(client, "scores")) == later


def test_a_redis_restart_without_persistence_does_not_stop_the_consumer(
    registry: Registry,
) -> None:
    with redis_server() as own:
        client = redis.Redis.from_url(own.url, decode_responses=True)
        c = consumer(client, registry, start="$", block_ms=100)
        stop = threading.Event()
        loop = threading.Thread(target=c.run, args=(stop,))
        loop.start()
        try:
            produce(client, "events", events(rows(50)))
            wait_for(lambda: client.xlen("scores") == 50, "50 outputs")
            own.restart()  # the stream, the group, the outputs: all gone
            ids = produce(client, "events", events(rows(50, seed=8), start=50))
            wait_for(lambda: client.xlen("scores") == 50, "50 outputs after the restart")
            assert [o["source_id"] for o in entries(client, "scores")] == ids
            assert loop.is_alive()
        finally:
            stop.set()
            loop.join(10)
            client.close()
        assert not loop.is_alive()


# -- real mmserve stream processes -----------------------------------------------------------


@pytest.fixture
def env(broker: RedisServer, registry: Registry) -> dict[str, str]:
    return {
        "MMSERVE_STORE_URL": registry.store.url,
        "MMSERVE_REDIS_URL": broker.url,
        "MMSERVE_STREAM__CLAIM_IDLE_MS": "1000",
        "PYTHONPATH": str(Path.cwd()),  # the processes unpickle tests' models
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }


ARGS = ["--source", "events", "--sink", "scores", "--group", "scorers", "--start", "0"]
ARGS += ["--id-field", "txn_id", "--batch-size", "256"]


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name
    )


@pytest.mark.slow
def test_a_consumer_killed_mid_way_is_taken_over_and_every_event_scored_once(
    client: Any, registry: Registry, env: dict[str, str], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    x, y = fixtures.numeric_data(400)
    model = GatedLogistic().fit(x, y).gated(gate, free_calls=20)  # 20 batches, then it holds
    registry.register(model, "fraud", alias="production", **PICKLED)
    x = rows(20_000)
    good = events(x)
    bad = [
        {**{k: v for k, v in good[i].items() if k != "f3"}, "txn_id": f"m{i}"} for i in range(10)
    ]
    bad += [{**good[i], "txn_id": f"n{i}", "f1": "n/a"} for i in range(10)]
    bad += [{"txn_id": f"j{i}", "data": "{"} for i in range(10)]
    batch = list(good)
    for k, event in enumerate(bad):
        batch.insert(k * 600 + 300, event)
    ids = produce(client, "events", batch)
    good_ids = [i for i, event in zip(ids, batch, strict=True) if event["txn_id"][0] == "t"]
    args = ["--model", "fraud@production", *ARGS]
    with mmserve_stream(env, tmp_path / "a.log", *args, "--consumer", "a") as a:
        wait_for(Path(f"{gate}.held").exists, "consumer a holding its 21st batch")
        held = client.xpending_range("events", "scorers", "-", "+", 1000, consumername="a")
        assert len(held) == 2 * 256  # the batch in the model call, and the next, read ahead
        kill_group(a, signal.SIGKILL)
        a.wait(10)
    scored_by_a = client.xlen("scores")
    assert 20 * 256 - 30 <= scored_by_a <= 20 * 256
    gate.unlink()
    with mmserve_stream(env, tmp_path / "b.log", *args, "--consumer", "b") as b:
        wait_for(
            lambda: (
                client.xlen("scores") + client.xlen("scores-dlq") == len(batch)
                and client.xpending("events", "scorers")["pending"] == 0
            ),
            "every event scored or dead-lettered",
        )
        kill_group(b, signal.SIGTERM)
        assert b.wait(20) == 0
    outputs = by_source(client, "scores")
    assert len(outputs) == 20_000 and sorted(outputs) == sorted(good_ids)
    expected = expected_of(registry, "fraud:1", x, [f"t{i}" for i in range(20_000)])
    assert_answers([outputs[i] for i in good_ids], expected, "fraud:1")
    dead = entries(client, "scores-dlq")
    json_reason = (
        "field 'data' is not a JSON object (Expecting property name enclosed in double quotes): '{'"
    )
    assert sorted((d["txn_id"], d["error"], d["reason"]) for d in dead) == sorted(
        [(f"m{i}", "MissingField", "missing field 'f3'") for i in range(10)]
        + [(f"n{i}", "InvalidField", "field 'f1' is not a number: 'n/a'") for i in range(10)]
        + [(f"j{i}", "InvalidField", json_reason) for i in range(10)]
    )


@pytest.mark.slow
def test_sigterm_finishes_and_commits_the_batch_in_hand_then_exits_0(
    client: Any, registry: Registry, env: dict[str, str], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    x, y = fixtures.numeric_data(400)
    registry.register(GatedLogistic().fit(x, y).gated(gate, 0), "fraud", **PICKLED)
    produce(client, "events", events(rows(1000)))
    args = ["--model", "fraud", *ARGS[:-1], "100"]
    with mmserve_stream(env, tmp_path / "c.log", *args) as proc:
        wait_for(Path(f"{gate}.held").exists, "the consumer inside its first batch")
        kill_group(proc, signal.SIGTERM)
        time.sleep(0.5)  # the handler runs within 10 ms; then the batch may finish
        gate.unlink()
        assert proc.wait(20) == 0
    (group,) = client.xinfo_groups("events")
    assert group["pending"] == 0
    # the batch in hand, and the next, read ahead while it scored: both committed
    assert client.xlen("scores") == group["entries-read"] == 2 * 100
    assert b'"stopped: every batch read was committed"' in (tmp_path / "c.log").read_bytes()


@pytest.mark.slow
def test_two_consumers_split_the_work_and_none_scores_an_event_twice(
    client: Any, registry: Registry, env: dict[str, str], tmp_path: Path
) -> None:
    x, y = fixtures.numeric_data(10)
    registry.register(fixtures.SlowModel(0.02).fit(x, y), "slow", **PICKLED)
    ports = [free_port(), free_port()]
    one, two = (
        [*ARGS, "--model", "slow", "--consumer", name, "--metrics-port", str(port)]
        for name, port in zip(("one", "two"), ports, strict=True)
    )
    with (
        mmserve_stream(env, tmp_path / "1.log", *one),
        mmserve_stream(env, tmp_path / "2.log", *two),
    ):
        x = rows(4000)
        ids = produce(client, "events", events(x))
        wait_for(lambda: client.xlen("scores") == 4000, "4,000 outputs")
        counts = [metric(p, "mmserve_stream_events_total") for p in ports]
    assert sum(counts) == 4000 and min(counts) > 0, counts
    outputs = by_source(client, "scores")
    assert sorted(outputs) == sorted(ids)
    expected = registry.load("slow").predict(table(x)).column("proba_1").to_pylist()
    assert [float(outputs[i]["proba_1"]) for i in ids] == expected
