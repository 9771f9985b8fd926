"""How a stream consumer handles its batches cheaply without changing what it answers: the
next batch read while one scores (read ahead, committed once), a batch of one field layout
decoded by position exactly as event by event, and a commit that finds its entries among
more than it asked Redis for."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from serving.metadata import Feature
from serving.registry import Registry
from serving.settings import RegistrySettings
from serving.store import Store
from tests import fixtures
from tests.workers.streams import entries, fields, produce, rows
from tests.workers.test_stream import NAMES, by_source, consumer, drain, events
from workers._stream_codec import _by_position, decode
from workers._stream_log import Event, Outputs
from workers.stream import RedisEventLog


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    registry = Registry(Store.from_url(str(tmp_path / "store")), RegistrySettings(alias_ttl_s=0))
    registry.register(fixtures.logistic(), "lr", alias="production")
    return registry


FEATURES = [Feature(name=name, dtype="float64") for name in fixtures.FEATURES]


def flat(fields: dict[str, str]) -> list[str]:
    return [x for pair in fields.items() for x in pair]


def as_read(batch: list[dict[str, str]]) -> list[Event]:
    """Events as a log reads them: each a flat list of names and values."""
    return [Event(f"1-{i}", None, 1, flat=flat(f)) for i, f in enumerate(batch)]


def as_dicts(batch: list[dict[str, str]]) -> list[Event]:
    return [Event(f"1-{i}", dict(f), 1, 1) for i, f in enumerate(batch)]


def same_decoding(batch: list[dict[str, str]]) -> Any:
    """``batch`` decoded as read and as dicts (event by event): the same, both ways."""
    read, one_by_one = (
        decode(e, FEATURES, "data", "txn_id") for e in (as_read(batch), as_dicts(batch))
    )
    assert read.table.equals(one_by_one.table)
    assert (read.rows, read.ids) == (one_by_one.rows, one_by_one.ids)
    assert {i: [e.message for e in errs] for i, errs in read.bad.items()} == {
        i: [e.message for e in errs] for i, errs in one_by_one.bad.items()
    }
    return read


def test_a_batch_of_one_field_layout_is_decoded_by_position_as_event_by_event() -> None:
    batch = events(rows(50))
    assert _by_position(as_read(batch), FEATURES, "data", "txn_id") is not None
    decoded = same_decoding(batch)
    assert decoded.table.num_rows == 50 and decoded.ids == [f"t{i}" for i in range(50)]
    assert decoded.table.equals(fixtures.numeric_table(rows(50)).select(fixtures.FEATURES))


@pytest.mark.parametrize(
    "change",
    [
        lambda e: {**e, "f1": "abc"},  # a value that is no number: named
        lambda e: {k: v for k, v in e.items() if k != "f2"},  # a field missing
        lambda e: {k: e[k] for k in reversed(e)},  # the same fields in another order
        lambda e: {**e, "extra": "x"},  # one more field
        lambda e: {"txn_id": e["txn_id"], "data": '{"f0": 1}'},  # a JSON document
        lambda e: {k: v for k, v in e.items() if k != "txn_id"},  # no id
    ],
)
def test_a_batch_that_does_not_share_one_layout_is_decoded_event_by_event(change: Any) -> None:
    batch = events(rows(6))
    batch[3] = change(batch[3])
    assert _by_position(as_read(batch), FEATURES, "data", "txn_id") is None
    same_decoding(batch)


def test_a_repeated_field_counts_with_its_last_value_as_in_a_dict() -> None:
    batch = events(rows(4))
    read = as_read(batch)
    for event in read:
        assert event.flat is not None
        event.flat += ["f0", "0.25"]  # XADD takes a name twice; the last value is the event's
    decoded = decode(read, FEATURES, "data", "txn_id")
    assert decoded.table.column("f0").to_pylist() == [0.25] * 4
    assert read[0].fields is not None and read[0].fields["f0"] == "0.25"


def test_the_next_batch_is_read_while_one_scores_and_every_event_is_committed_once(
    client: Any, registry: Registry
) -> None:
    ids = produce(client, "events", events(rows(40)))
    c = consumer(client, registry, batch_size=8)
    assert c.step() == 8
    held = client.xpending_range("events", "scorers", "-", "+", 100, consumername="c1")
    assert [h["message_id"] for h in held] == ids[8:16]  # read ahead, not scored yet
    assert [o["source_id"] for o in entries(client, "scores")] == ids[:8]
    assert drain(c) == 32
    assert [o["source_id"] for o in entries(client, "scores")] == ids
    assert client.xpending("events", "scorers")["pending"] == 0


def test_a_consumer_asked_to_stop_commits_the_batch_it_read_ahead(
    client: Any, registry: Registry
) -> None:
    ids = produce(client, "events", events(rows(20)))
    c = consumer(client, registry, batch_size=8)
    assert c.step() == 8
    stop = threading.Event()
    stop.set()
    c.run(stop)  # no new batch: the one read ahead is scored and committed
    assert [o["source_id"] for o in entries(client, "scores")] == ids[:16]
    assert client.xpending("events", "scorers")["pending"] == 0


def test_a_restarted_consumer_scores_the_batch_a_killed_one_read_ahead(
    client: Any, registry: Registry
) -> None:
    ids = produce(client, "events", events(rows(20)))
    first = consumer(client, registry, batch_size=8)
    assert first.step() == 8  # then it "dies": its read ahead is pending on c1
    again = consumer(client, registry, batch_size=8)  # c1 again: its own pending first
    assert drain(again) == 12
    assert sorted(by_source(client, "scores")) == sorted(ids)
    assert client.xpending("events", "scorers")["pending"] == 0


def test_a_commit_finds_its_entries_among_more_than_it_asks_for(client: Any) -> None:
    ids = produce(
        client, "events", [{"txn_id": f"t{i}", **fields(r)} for i, r in enumerate(rows(110))]
    )
    log = RedisEventLog(client, NAMES, start="0")
    log.open()
    assert len(log.read(100, 0)) == 100  # held: older than the batch committed now
    newer = [e.id for e in log.read(10, 0)]
    assert newer == ids[100:]
    columns = {"txn_id": [f"t{i}" for i in range(100, 110)]}
    assert log.commit(Outputs(newer, columns, {"model": "m"}), []).skipped == frozenset()
    client.xclaim("events", "scorers", "c2", 0, ids[:5])  # c2 took five of the older over
    older = Outputs(ids[:100], {"txn_id": [f"t{i}" for i in range(100)]}, {"model": "m"})
    assert log.commit(older, []).skipped == frozenset(ids[:5])
    assert sorted(by_source(client, "scores")) == sorted(ids[5:])
    pending = client.xpending_range("events", "scorers", "-", "+", 10, consumername="c2")
    assert [p["message_id"] for p in pending] == ids[:5]


def test_an_entry_read_as_a_flat_list_gives_its_fields_and_time() -> None:
    event = Event("1700000000123-4", None, 2, flat=["a", "1", "b", "2"])
    assert (event.fields, event.time_ms, event.trimmed) == (
        {"a": "1", "b": "2"},
        1700000000123,
        False,
    )
    trimmed = Event("5-0", None, 3)
    assert (trimmed.fields, trimmed.trimmed, trimmed.time_ms) == (None, True, 5)
    assert Event("1-0", {"a": "1"}, 1, 1) == Event("1-0", None, 1, flat=["a", "1"])
