"""Endpoints against a real ``mmserve serve`` started with ``MMSERVE_ENDPOINTS``: the traffic
split, pinned variants, shadows, data capture, pipelines, the V1/V2/SageMaker shapes, async
jobs, live weights from the store, and a bad file refused while the old config serves."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.endpoints import capture
from serving.endpoints.catalog import Endpoints
from serving.endpoints.pipeline import merge
from serving.registry import Registry
from serving.store import Store
from tests import fixtures
from tests.services import mmserve_server
from tests.serving.endpoints.test_pipeline import register_pair, request

pytestmark = pytest.mark.slow

TOKEN = "s3cret"
ADMIN = {"authorization": f"Bearer {TOKEN}"}  # describing endpoints is management
MMSERVE = str(Path(sys.executable).with_name("mmserve"))
FILE = """\
endpoints:
  churn:
    variants:
      - {name: blue, model: lr:1, weight: 90}
      - {name: green, model: lr:2, weight: 10}
    seed: 42
  shadowed:
    variants: [{name: main, model: lr:1}]
    shadow: {model: broken, sample: 1.0}
  captured:
    variants: [{name: main, model: lr:1}]
    shadow: {model: lr:2, sample: 1.0}
    capture: {sample: 1.0}
  scoring:
    pipeline: [prep:1, scored:1]
  napping:
    mode: serverless
    variants: [{name: main, model: nap}]
    serverless: {idle_ttl_s: 0.3}
    batching: {max_batch_size: 4}
"""


@dataclass
class Server:
    url: str
    store_dir: Path
    file: Path
    registry: Registry
    client: httpx.Client


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("endpoints")
    store_dir, file = root / "store", root / "endpoints.yaml"
    registry = Registry(Store.from_url(str(store_dir)))
    registry.register(fixtures.logistic(), "lr")
    registry.register(fixtures.forest(), "lr")
    x, y = fixtures.numeric_data(10)
    registry.register(
        fixtures.ErrorModel().fit(x, y), "broken", flavor="sklearn-pickle", trust_pickle=True
    )
    register_pair(registry)
    registry.register(fixtures.logistic(), "nap")
    file.write_text(FILE)
    env = {
        "MMSERVE_STORE_URL": str(store_dir),
        "MMSERVE_ENDPOINTS": str(file),
        "MMSERVE_ADMIN_TOKEN": TOKEN,
        "MMSERVE_DEPLOYMENT__STATE_TTL_S": "0.2",
        "MMSERVE_DEPLOYMENT__RELOAD_INTERVAL_S": "0.2",
        "MMSERVE_DEPLOYMENT__CAPTURE_FLUSH_S": "0.2",
        "PYTHONPATH": os.getcwd(),  # the server unpickles tests.fixtures.ErrorModel
    }
    with mmserve_server(env) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield Server(url, store_dir, file, registry, client)


def rows(n: int, seed: int = 0) -> list[list[float]]:
    x, _ = fixtures.numeric_data(n, seed=seed)
    return x.tolist()


def expected(server: Server, ref: str, instances: list[list[float]]) -> list[dict[str, Any]]:
    table = fixtures.numeric_table(np.array(instances))
    return server.registry.load(ref).predict(table).to_pylist()


def predict(
    server: Server, name: str, instances: list[list[float]], **headers: str
) -> httpx.Response:
    return server.client.post(
        f"/v1/endpoints/{name}:predict", json={"instances": instances}, headers=headers
    )


def metric(server: Server, family: str, **labels: str) -> float:
    text = server.client.get("/metrics").text
    return sum(
        sample.value
        for f in text_string_to_metric_families(text)
        if f.name == family
        for sample in f.samples
        if sample.name in (family, f"{family}_total") and labels.items() <= sample.labels.items()
    )


def eventually(check: Callable[[], Any], seconds: float = 20) -> Any:
    deadline = time.monotonic() + seconds
    while not (found := check()):
        assert time.monotonic() < deadline, "the server did not get there in time"
        time.sleep(0.05)
    return found


def test_a_90_10_split_lands_within_five_sigma(server: Server) -> None:
    one = rows(1, seed=3)

    def variant(_: int) -> str:
        response = predict(server, "churn", one)
        assert response.status_code == 200, response.text
        assert (
            response.headers["x-amzn-invoked-production-variant"]
            == response.headers["x-mmserve-variant"]
        )
        return str(response.headers["x-mmserve-variant"])

    with ThreadPoolExecutor(4) as pool:
        counts = Counter(pool.map(variant, range(2000)))
    # Binomial(2000, 0.1): mean 200, sigma 13.4; outside 5 sigma is a 1-in-1.7-million event.
    assert set(counts) == {"blue", "green"}
    assert abs(counts["green"] - 200) <= 5 * (2000 * 0.1 * 0.9) ** 0.5
    for name, count in counts.items():
        assert metric(server, "mmserve_endpoint_requests", endpoint="churn", variant=name) == count
    view = server.client.get("/v1/endpoints/churn", headers=ADMIN).json()
    assert {v["name"]: v["stats"]["requests"] for v in view["variants"]} == dict(counts)
    assert metric(server, "mmserve_endpoint_weight", endpoint="churn", variant="green") == 10.0


def test_a_pinned_variant_always_answers(server: Server) -> None:
    instances = rows(3, seed=4)
    for header in ("x-target-variant", "x-amzn-sagemaker-target-variant"):
        for _ in range(25):
            response = predict(server, "churn", instances, **{header: "green"})
            assert response.headers["x-mmserve-variant"] == "green"
            assert response.headers["x-mmserve-model"] == "lr:2"
            assert response.json()["predictions"] == expected(server, "lr:2", instances)


def test_unknown_variants_and_endpoints_are_clear_404s(server: Server) -> None:
    response = predict(server, "churn", rows(1), **{"x-target-variant": "purple"})
    assert (response.status_code, response.json()) == (
        404,
        {"error": "endpoint 'churn' has no variant 'purple'; its variants: blue, green"},
    )
    response = server.client.post("/v1/endpoints/nope/invocations", content=b"1,2,3,4,5\n")
    assert response.status_code == 404
    assert (
        response.json()["error"]
        == "endpoint 'nope' does not exist (endpoints: captured, churn, napping, scoring, shadowed)"
    )
    assert server.client.get("/v1/endpoints/BAD", headers=ADMIN).status_code == 404


def test_every_shape_answers_as_the_model_does(server: Server) -> None:
    instances = rows(2, seed=6)
    want = expected(server, "lr:1", instances)
    body = "\n".join(",".join(map(repr, r)) for r in instances).encode()
    for path in ("/v1/endpoints/churn/invocations", "/endpoints/churn/invocations"):
        response = server.client.post(
            path, content=body, headers={"content-type": "text/csv", "x-target-variant": "blue"}
        )
        assert response.headers["content-type"] == "text/csv"
        answered = list(csv.reader(io.StringIO(response.text)))
        assert answered == [[str(w["label"]), repr(w["proba_0"]), repr(w["proba_1"])] for w in want]
    v2 = {
        "inputs": [{"name": "x", "shape": [2, 5], "datatype": "FP64", "data": instances}],
        "id": "7",
    }
    response = server.client.post(
        "/v2/endpoints/churn/infer", json=v2, headers={"x-target-variant": "blue"}
    )
    body2 = response.json()
    assert (body2["model_name"], body2["model_version"], body2["id"]) == ("lr", "1", "7")
    assert body2["outputs"][2]["data"] == [w["proba_1"] for w in want]
    failed = server.client.post(
        "/v1/endpoints/shadowed/invocations",
        content=body,
        headers={"content-type": "text/csv", "x-target-variant": "nope"},
    )
    assert failed.status_code == 404


def test_a_failing_shadow_never_changes_a_response(server: Server) -> None:
    instances = rows(2, seed=7)
    want = expected(server, "lr:1", instances)
    before = metric(server, "mmserve_shadow_requests", endpoint="shadowed", outcome="error")
    for _ in range(30):
        response = predict(server, "shadowed", instances)
        assert (response.status_code, response.json()["predictions"]) == (200, want)
    errors = eventually(
        lambda: (
            metric(server, "mmserve_shadow_requests", endpoint="shadowed", outcome="error") - before
            == 30
        )
    )
    assert errors
    assert metric(server, "mmserve_shadow_requests", endpoint="shadowed", outcome="ok") == 0


def test_capture_holds_every_row_and_compare_joins_primary_and_shadow(server: Server) -> None:
    instances = rows(2, seed=8)
    for i in range(20):
        response = predict(server, "captured", instances, **{"x-inference-id": f"req-{i}"})
        assert response.headers["x-inference-id"] == f"req-{i}"
    store = Store.from_url(str(server.store_dir))
    table = eventually(lambda: (t := capture.read(store, "captured")).num_rows == 80 and t)
    keys = store.walk("capture/captured")
    assert {k.split("/")[0] for k in keys} == {"main", "shadow"}
    assert all(len(k.split("/")) == 6 and k.endswith(".parquet") for k in keys)  # v/yyyy/mm/dd/hh/f
    roles = Counter(zip(table["role"].to_pylist(), table["model"].to_pylist(), strict=True))
    assert roles == {("primary", "lr:1"): 40, ("shadow", "lr:2"): 40}
    assert set(table["inference_id"].to_pylist()) == {f"req-{i}" for i in range(20)}
    assert json.loads(table["input"][0].as_py()) == dict(
        zip(fixtures.FEATURES, instances[table["row"][0].as_py()], strict=True)
    )
    eventually(lambda: metric(server, "mmserve_capture_rows", endpoint="captured") == 80)
    env = {**os.environ, "MMSERVE_STORE_URL": str(server.store_dir)}
    out = subprocess.run(
        [MMSERVE, "endpoints", "compare", "captured", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(out.stdout)
    primary, shadow = expected(server, "lr:1", instances), expected(server, "lr:2", instances)
    agree = sum(p["label"] == s["label"] for p, s in zip(primary, shadow, strict=True)) / 2
    assert (report["pairs"], report["agreement"]) == (40, agree)
    gap = max(abs(p["proba_1"] - s["proba_1"]) for p, s in zip(primary, shadow, strict=True))
    assert report["deltas"]["proba_1"]["max_abs"] == gap
    assert (report["primary"]["requests"], report["shadow"]["requests"]) == (20, 20)


def test_a_pipeline_endpoint_equals_its_models_applied_by_hand(server: Server) -> None:
    table = request(9)
    prep, scored = server.registry.load("prep:1"), server.registry.load("scored:1")
    by_hand = scored.predict(merge(table, prep.predict(table))).to_pylist()
    response = server.client.post(
        "/v1/endpoints/scoring:predict", json={"instances": table.to_pylist()}
    )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == by_hand
    assert (response.headers["x-mmserve-variant"], response.headers["x-mmserve-model"]) == (
        "pipeline",
        "prep:1,scored:1",
    )
    arrow = server.client.post(
        "/v1/endpoints/scoring/invocations",
        content=_arrow(table),
        headers={
            "content-type": "application/vnd.apache.arrow.stream",
            "accept": "application/json",
        },
    )
    assert arrow.json()["predictions"] == by_hand
    submitted = server.client.post(
        "/v1/endpoints/scoring/async", json={"instances": table.to_pylist()}
    )
    assert submitted.status_code == 202, submitted.text
    assert submitted.headers["x-mmserve-variant"] == "pipeline"
    job = submitted.json()
    assert (job["model"], job["requested"]) == ("prep:1,scored:1", "prep:1,scored:1")
    eventually(lambda: server.client.get(job["status_url"]).json()["status"] == "succeeded")
    assert server.client.get(job["result_url"]).json()["predictions"] == by_hand


def test_an_async_job_of_a_chain_pins_each_step_and_answers_as_both_models(
    server: Server,
) -> None:
    server.registry.set_alias("scored", "champion", 1)
    table = request(6, seed=8)
    prep, scored = server.registry.load("prep:1"), server.registry.load("scored:1")
    by_hand = scored.predict(merge(table, prep.predict(table)))
    columns = table.select([*fixtures.FEATURES, "bonus"]).to_pylist()  # as the chain takes them
    body = "".join(",".join(repr(v) for v in row.values()) + "\n" for row in columns).encode()
    submitted = server.client.post(
        "/v1/models/prep,scored@champion/async",
        content=body,
        headers={"content-type": "text/csv", "accept": "application/json"},
    )
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()
    assert (job["model"], job["requested"]) == ("prep:1,scored:1", "prep,scored@champion")
    eventually(lambda: server.client.get(job["status_url"]).json()["status"] == "succeeded")
    assert server.client.get(job["result_url"]).json()["predictions"] == by_hand.to_pylist()
    missing = server.client.post("/v1/models/prep,nope/async", content=body)
    assert missing.status_code == 404
    assert "'nope'" in missing.json()["error"]


def test_an_async_job_goes_to_the_variant_drawn_for_it(server: Server) -> None:
    instances = rows(2, seed=9)
    submitted = server.client.post(
        "/v1/endpoints/churn/async",
        json={"instances": instances},
        headers={"x-target-variant": "green"},
    )
    assert submitted.status_code == 202, submitted.text
    assert submitted.headers["x-mmserve-variant"] == "green"
    job = submitted.json()
    assert job["model"] == "lr:2"
    eventually(lambda: server.client.get(job["status_url"]).json()["status"] == "succeeded")
    assert server.client.get(job["result_url"]).json()["predictions"] == expected(
        server, "lr:2", instances
    )


def test_weights_written_to_the_store_reach_the_server(server: Server) -> None:
    endpoints = Endpoints(Store.from_url(str(server.store_dir)))
    state = endpoints.update_state(
        "churn", lambda s: s.changed(weights={"blue": 0.0, "green": 100.0})
    )
    eventually(
        lambda: (
            server.client.get("/v1/endpoints/churn", headers=ADMIN).json()["generation"]
            == state.generation
        )
    )
    assert {predict(server, "churn", rows(1)).headers["x-mmserve-variant"] for _ in range(30)} == {
        "green"
    }
    assert metric(server, "mmserve_endpoint_weight", endpoint="churn", variant="green") == 100.0
    back = endpoints.update_state("churn", lambda s: s.changed(weights=dict(s.declared)))
    eventually(
        lambda: (
            server.client.get("/v1/endpoints/churn", headers=ADMIN).json()["generation"]
            == back.generation
        )
    )


def test_a_bad_file_is_refused_with_its_line_and_the_old_config_serves(server: Server) -> None:
    admin = {"authorization": f"Bearer {TOKEN}"}
    assert server.client.post("/v1/endpoints:reload").status_code == 401
    server.file.write_text(FILE.replace("weight: 10}", "weight: -5}"))
    refused = server.client.post("/v1/endpoints:reload", headers=admin)
    assert refused.status_code == 400
    assert refused.json()["error"] == (
        f"{server.file} line 5: endpoints.churn.variants[1].weight: "
        "Input should be greater than or equal to 0"
    )
    view = server.client.get("/v1/endpoints/churn", headers=ADMIN).json()
    assert [v["weight"] for v in view["variants"]] == [90.0, 10.0]
    assert predict(server, "churn", rows(1), **{"x-target-variant": "green"}).status_code == 200
    server.file.write_text(FILE + "  extra:\n    variants: [{name: only, model: lr:2}]\n")
    applied = server.client.post("/v1/endpoints:reload", headers=admin)
    assert applied.status_code == 200, applied.text
    assert "extra" in applied.json()["endpoints"]
    assert predict(server, "extra", rows(1)).headers["x-mmserve-variant"] == "only"
    listed = server.client.get("/v1/endpoints", headers=ADMIN).json()["endpoints"]
    assert [e["name"] for e in listed] == [
        "captured", "churn", "extra", "napping", "scoring", "shadowed"
    ]  # fmt: skip
    # The file is watched too: a change is applied without a reload.
    server.file.write_text(FILE + "  watched:\n    variants: [{name: only, model: lr:1}]\n")
    eventually(lambda: server.client.get("/v1/endpoints/watched", headers=ADMIN).status_code == 200)
    assert predict(server, "watched", rows(1)).headers["x-mmserve-model"] == "lr:1"


def test_a_serverless_endpoint_unloads_its_idle_models(server: Server) -> None:
    assert predict(server, "napping", rows(1)).status_code == 200
    # What is loaded, as readiness reports it (a model's own readiness would load it again).
    eventually(lambda: "nap:1" not in loaded_models(server))
    assert "lr:1" in loaded_models(server)
    answer = predict(server, "napping", rows(1))  # a cold start again
    assert (answer.status_code, answer.headers["x-mmserve-cold-start"]) == (200, "true")


def _arrow(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def test_sagemakers_async_invocation_of_an_endpoint_goes_to_a_variant(server: Server) -> None:
    instances = rows(3, seed=4)
    store = Store.from_url(str(server.store_dir))
    store.write("inputs/churn.json", json.dumps({"instances": instances}).encode())
    submitted = server.client.post(
        "/endpoints/churn/async-invocations",
        headers={
            "X-Amzn-SageMaker-InputLocation": "inputs/churn.json",
            "X-Amzn-SageMaker-Content-Type": "application/json",
            "X-Target-Variant": "blue",
        },
    )
    assert submitted.status_code == 202, submitted.text
    assert submitted.headers["x-amzn-invoked-production-variant"] == "blue"
    status_url = submitted.headers["location"]
    eventually(lambda: server.client.get(status_url).json()["status"] == "succeeded")
    job = server.client.get(status_url).json()
    assert job["model"] == "lr:1"
    answer = server.client.get(f"{status_url}/result").json()["predictions"]
    assert answer == expected(server, "lr:1", instances)


def test_sagemakers_async_invocation_of_a_pipeline_endpoint_is_scored_by_its_chain(
    server: Server,
) -> None:
    table = request(4, seed=2)
    prep, scored = server.registry.load("prep:1"), server.registry.load("scored:1")
    by_hand = scored.predict(merge(table, prep.predict(table))).to_pylist()
    store = Store.from_url(str(server.store_dir))
    store.write("inputs/scoring.json", json.dumps({"instances": table.to_pylist()}).encode())
    submitted = server.client.post(
        "/endpoints/scoring/async-invocations",
        headers={
            "X-Amzn-SageMaker-InputLocation": "inputs/scoring.json",
            "X-Amzn-SageMaker-Content-Type": "application/json",
        },
    )
    assert submitted.status_code == 202, submitted.text
    assert submitted.headers["x-amzn-invoked-production-variant"] == "pipeline"
    status_url = submitted.headers["location"]
    eventually(lambda: server.client.get(status_url).json()["status"] == "succeeded")
    assert server.client.get(status_url).json()["model"] == "prep:1,scored:1"
    assert server.client.get(f"{status_url}/result").json()["predictions"] == by_hand


def loaded_models(server: Server) -> list[str]:
    models: list[str] = server.client.get("/v2/health/ready").json()["models"]
    return models
