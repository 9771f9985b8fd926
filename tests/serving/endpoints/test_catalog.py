"""Endpoints in the store (a local folder and S3 over HTTP): applying, live state, capture
and the shadow report."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from serving.endpoints import capture, files
from serving.endpoints.catalog import Endpoints
from serving.endpoints.compare import COLUMNS, compare
from serving.endpoints.rollout import rollback
from serving.endpoints.state import Decision
from serving.errors import EndpointNotFound, UnsupportedOperation
from serving.store import Store

FILE = """\
endpoints:
  churn:
    variants:
      - {name: blue, model: churn:1, weight: 90}
      - {name: green, model: churn:2, weight: 10}
"""


def test_apply_writes_config_and_state_and_keeps_live_weights(store: Store) -> None:
    endpoints = Endpoints(store)
    assert endpoints.apply(files.parse(FILE)) == ["churn"]
    assert endpoints.apply(files.parse(FILE)) == []  # the same file again: nothing changes
    assert sorted(store.walk("endpoints")) == ["churn/config.json", "churn/state.json"]
    state = endpoints.update_state(
        "churn", lambda s: s.changed(weights={"blue": 0.0, "green": 100.0})
    )
    # A server restarting with the same file does not undo a finished shift...
    assert endpoints.apply(files.parse(FILE)) == []
    assert endpoints.state("churn").weights == {"blue": 0.0, "green": 100.0}
    # ...but an edited file's weights are the new truth.
    edited = FILE.replace("weight: 90", "weight: 50").replace("weight: 10", "weight: 50")
    assert endpoints.apply(files.parse(edited)) == ["churn"]
    after = endpoints.state("churn")
    assert after.weights == {"blue": 50.0, "green": 50.0}
    assert after.generation > state.generation
    assert list(endpoints.snapshot()) == ["churn"]


def test_an_unknown_endpoint_names_the_known_ones(store: Store) -> None:
    endpoints = Endpoints(store)
    with pytest.raises(EndpointNotFound, match=r"^endpoint 'nope' does not exist \(no endpoint"):
        endpoints.config("nope")
    endpoints.apply(files.parse(FILE))
    with pytest.raises(EndpointNotFound) as caught:
        endpoints.served("nope")
    assert caught.value.message == "endpoint 'nope' does not exist (endpoints: churn)"


def test_rollback_by_hand_undoes_the_last_completed_shift(store: Store) -> None:
    endpoints = Endpoints(store)
    endpoints.apply(files.parse(FILE))
    with pytest.raises(UnsupportedOperation, match="no rollout is running"):
        rollback(endpoints, "churn")
    before = {"blue": 90.0, "green": 10.0}
    done = Decision(
        rollout="r1", kind="variant", target="green", strategy="all-at-once",
        outcome="completed", reason="ok", before=before,
    )  # fmt: skip
    endpoints.update_state("churn", lambda s: s.decided(done, {"blue": 0.0, "green": 100.0}))
    decision = rollback(endpoints, "churn")
    state = endpoints.state("churn")
    assert (decision.outcome, state.weights, state.last and state.last.reason) == (
        "rolled_back",
        before,
        "rolled back by hand",
    )


def _record(
    role: str, variant: str, inference_id: str, outputs: list[dict[str, float]]
) -> capture.Record:
    inputs = pa.table({"f0": [float(i) for i in range(len(outputs))]})
    primary = role == "primary"
    return capture.Record(
        endpoint="churn",
        variant=variant,
        role=role,
        model="churn:1" if primary else "churn:2",
        inference_id=inference_id,
        time=datetime(2026, 5, 4, 13, 30, tzinfo=UTC),
        latency_ms=2.0 if primary else 4.0,
        inputs=inputs,
        outputs=pa.Table.from_pylist(outputs),
    )


def test_capture_is_partitioned_by_variant_and_hour_and_compared_by_inference_id(
    store: Store,
) -> None:
    buffer = capture.Buffer(max_rows=5)
    a = [{"label": 1, "proba_1": 0.75}, {"label": 0, "proba_1": 0.25}]
    b = [{"label": 1, "proba_1": 0.5}, {"label": 1, "proba_1": 0.625}]
    assert buffer.add(_record("primary", "blue", "id-1", a))
    assert buffer.add(_record("shadow", "shadow", "id-1", b))
    assert not buffer.add(_record("primary", "blue", "id-2", a))  # 6 rows > 5: dropped
    assert capture.write(store, buffer.drain()) == {"churn": 4}
    keys = store.walk("capture/churn")
    assert [k.rsplit("/", 1)[0] for k in keys] == ["blue/2026/05/04/13", "shadow/2026/05/04/13"]
    rows = capture.read(store, "churn")
    assert rows.schema == capture.SCHEMA
    assert sorted(zip(rows["role"].to_pylist(), rows["row"].to_pylist(), strict=True)) == [
        ("primary", 0), ("primary", 1), ("shadow", 0), ("shadow", 1)
    ]  # fmt: skip
    report = compare(store, "churn")
    assert (report["pairs"], report["agreement"]) == (2, 0.5)
    assert report["deltas"] == {"proba_1": {"mean_abs": 0.3125, "max_abs": 0.375}}
    assert report["primary"]["models"] == ["churn:1"] and report["shadow"]["models"] == ["churn:2"]
    assert report["primary"]["latency_ms"] == {"p50": 2.0, "p99": 2.0}
    assert report["shadow"]["requests"] == 1 and report["shadow"]["rows"] == 2
    # the report reads no inputs (over HTTP, they would all be in the server's memory)
    assert capture.read(store, "churn", COLUMNS).column_names == COLUMNS
    assert capture.read(store, "none", COLUMNS).column_names == COLUMNS
    assert compare(store, "none")["pairs"] == 0
