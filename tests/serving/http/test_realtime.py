"""The real-time data plane over HTTP: micro-batching, limits, serverless cold starts,
model loading, metrics and request ids, against a real ``mmserve serve --serverless``."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.registry import Registry
from serving.store import Store
from tests import fixtures
from tests.services import mmserve_server

pytestmark = pytest.mark.slow

IDLE_TTL_S = 1.0


@dataclass
class Server:
    registry: Registry
    client: httpx.Client


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    store_dir = tmp_path_factory.mktemp("realtime")
    registry = Registry(Store.from_url(str(store_dir)))
    x, y = fixtures.numeric_data(10)
    pickled = {"flavor": "sklearn-pickle", "trust_pickle": True}
    for name, model in [
        ("slow", fixtures.SlowModel(0.3)),
        ("unbatched", fixtures.SlowModel(0.2)),
        ("tight", fixtures.SlowModel(0.5)),
        ("sleepy", fixtures.SlowModel(3.0)),
        ("lazy", fixtures.SlowLoadingModel(load_seconds=2.0)),
    ]:
        registry.register(model.fit(x, y), name, **pickled)  # type: ignore[arg-type]
    registry.register(fixtures.logistic(), "lr")
    registry.register(fixtures.logistic(), "warm")
    models = {
        "unbatched": {"batching": False},
        "tight": {"max_concurrency": 1},
        "warm": {"provisioned": True},
    }
    env = {
        "MMSERVE_STORE_URL": str(store_dir),
        "MMSERVE_REQUEST_TIMEOUT_S": "1",
        "MMSERVE_MODEL_LOAD_WAIT_S": "0.5",
        "MMSERVE_SERVERLESS__IDLE_TTL_S": str(IDLE_TTL_S),
        "MMSERVE_MODELS": json.dumps(models),
        "PYTHONPATH": os.getcwd(),  # the server unpickles tests.fixtures models
    }
    with mmserve_server(env, "--serverless") as url, httpx.Client(base_url=url, timeout=30) as c:
        yield Server(registry, c)


def rows(n: int, seed: int = 0) -> list[list[float]]:
    x, _ = fixtures.numeric_data(n, seed=seed)
    return x.tolist()


def predict(client: httpx.Client, model: str, instances: list[list[float]]) -> httpx.Response:
    return client.post(f"/v1/models/{model}:predict", json={"instances": instances})


def loaded(client: httpx.Client, model: str) -> httpx.Response:
    """The first answer of ``model`` that is not a 503 (a first load may import libraries
    for longer than the server's load wait)."""
    deadline = time.monotonic() + 20
    response = predict(client, model, rows(1))
    while response.status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.2)
        response = predict(client, model, rows(1))
    return response


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    """The value of one sample of ``/metrics`` (0 if absent)."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def concurrently(client: httpx.Client, model: str, requests: list[list[list[float]]]):  # type: ignore[no-untyped-def]
    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(lambda instances: predict(client, model, instances), requests))


def test_concurrent_requests_share_one_model_call_with_exact_answers(server: Server) -> None:
    client = server.client
    assert loaded(client, "slow").status_code == 200  # loaded, and idle again
    calls = metric(client, "mmserve_batch_size_count", model="slow")
    joined = metric(client, "mmserve_batch_size_sum", model="slow")
    requests = [rows(1 + i % 3, seed=i) for i in range(9)]
    with ThreadPoolExecutor(9) as pool:
        first = pool.submit(predict, client, "slow", requests[0])
        time.sleep(0.1)  # the first call is running: the next eight queue up behind it
        rest = list(pool.map(lambda instances: predict(client, "slow", instances), requests[1:]))
    answers = [first.result(), *rest]
    assert [a.status_code for a in answers] == [200] * 9
    assert metric(client, "mmserve_batch_size_count", model="slow") - calls == 2
    assert metric(client, "mmserve_batch_size_sum", model="slow") - joined == 9
    predictor = server.registry.load("slow")
    for instances, answer in zip(requests, answers, strict=True):
        expected = predictor.predict(fixtures.numeric_table(np.array(instances)))
        assert answer.json()["predictions"] == expected.to_pylist()


def test_batching_can_be_switched_off_per_model(server: Server) -> None:
    client = server.client
    assert loaded(client, "unbatched").status_code == 200
    answers = concurrently(client, "unbatched", [rows(1, seed=i) for i in range(4)])
    assert [a.status_code for a in answers] == [200] * 4
    assert metric(client, "mmserve_batch_size_count", model="unbatched") == 0


def test_over_the_models_concurrency_limit_is_429_with_retry_after(server: Server) -> None:
    assert loaded(server.client, "tight").status_code == 200
    answers = concurrently(server.client, "tight", [rows(1)] * 3)
    assert sorted(a.status_code for a in answers) == [200, 429, 429]
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.headers["retry-after"] == "1"
    assert refused.json() == {
        "error": "model 'tight' already has 1 requests in flight, its limit; retry later"
    }


def test_a_request_past_the_timeout_is_504(server: Server) -> None:
    response = loaded(server.client, "sleepy")
    assert (response.status_code, response.json()) == (
        504,
        {"error": "the request took longer than the 1 s limit"},
    )


def test_a_model_still_loading_is_503_with_retry_after_then_answers(server: Server) -> None:
    client = server.client
    response = predict(client, "lazy", rows(1))
    assert (response.status_code, response.headers["retry-after"]) == (503, "1")
    assert response.json() == {"error": "model lazy is still loading after 0.5 s; retry shortly"}
    still = client.get("/v2/models/lazy/ready")
    assert (still.status_code, still.json()) == (
        503,
        {"name": "lazy", "ready": False, "error": "loading"},
    )
    assert loaded(client, "lazy").status_code == 200


def test_an_idle_model_unloads_and_its_next_request_is_a_cold_start(server: Server) -> None:
    client = server.client
    colds = metric(client, "mmserve_cold_starts_total", model="lr", version="1")
    first = predict(client, "lr", rows(2))
    warm = predict(client, "lr", rows(2))
    assert "x-mmserve-cold-start" not in warm.headers
    # Loaded models as readiness lists them (asking the model's own readiness would load it).
    assert "lr:1" in client.get("/v2/health/ready").json()["models"]
    deadline = time.monotonic() + 10 * IDLE_TTL_S
    while "lr:1" in client.get("/v2/health/ready").json()["models"]:
        assert time.monotonic() < deadline, "lr was not unloaded after its idle TTL"
        time.sleep(0.1)
    cold = predict(client, "lr", rows(2))
    assert (cold.status_code, cold.headers["x-mmserve-cold-start"]) == (200, "true")
    assert float(cold.headers["x-mmserve-load-seconds"]) > 0
    assert cold.json() == warm.json() == first.json()
    cold_starts = metric(client, "mmserve_cold_starts_total", model="lr", version="1")
    assert cold_starts - colds == (2 if "x-mmserve-cold-start" in first.headers else 1)


def test_provisioned_models_are_loaded_before_use_and_stay(server: Server) -> None:
    client = server.client
    ready = client.get("/v2/health/ready").json()
    assert ready["ready"] is True and "warm:1" in ready["models"]
    time.sleep(2 * IDLE_TTL_S)
    assert client.get("/v2/models/warm/ready").json() == {"name": "warm", "ready": True}
    response = predict(client, "warm", rows(1))
    assert (response.status_code, "x-mmserve-cold-start" in response.headers) == (200, False)


def test_request_ids_are_echoed_or_made(server: Server) -> None:
    given = server.client.get("/v2/health/live", headers={"x-request-id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    for unfit in ["two words", "x" * 200]:  # not echoed into headers and logs: replaced
        made = server.client.get("/v2/health/live", headers={"x-request-id": unfit})
        assert len(made.headers["x-request-id"]) == 32 and made.headers["x-request-id"] != unfit


def test_metrics_count_requests_by_route_model_and_code(server: Server) -> None:
    client = server.client
    route = "/v1/models/{ref}:predict"
    assert loaded(client, "lr").status_code == 200
    before = metric(client, "mmserve_requests_total", route=route, model="lr", code="200")
    errors = metric(client, "mmserve_errors_total", kind="MissingColumn")
    assert predict(client, "lr", rows(1)).status_code == 200
    bad = client.post("/v1/models/lr:predict", json={"instances": [{"f0": 1.0}]})
    assert bad.status_code == 422
    assert metric(client, "mmserve_requests_total", route=route, model="lr", code="200") == (
        before + 1
    )
    assert metric(client, "mmserve_errors_total", kind="MissingColumn") == errors + 1
    assert metric(client, "mmserve_request_seconds_count", route=route, model="lr") >= 1
    assert metric(client, "mmserve_models_loaded") >= 1


def test_invocations_over_the_limit_are_sagemakers_503(server: Server) -> None:
    assert loaded(server.client, "tight").status_code == 200

    def invoke(_: int) -> httpx.Response:
        return server.client.post(
            "/invocations",
            content=b"0.1,0.2,0.3,0.4,0.5",
            headers={"content-type": "text/csv", "x-amzn-sagemaker-target-model": "tight"},
        )

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(invoke, range(3)))
    assert sorted(a.status_code for a in answers) == [200, 503, 503]
    assert {a.headers.get("retry-after") for a in answers if a.status_code == 503} == {"1"}


@pytest.mark.slow
def test_with_several_server_processes_metrics_add_them_all_up(tmp_path) -> None:  # type: ignore[no-untyped-def]
    registry = Registry(Store.from_url(str(tmp_path / "store")))
    registry.register(fixtures.logistic(), "lr")
    env = {"MMSERVE_STORE_URL": str(tmp_path / "store")}
    with mmserve_server(env, "--workers", "2") as url:
        answered_by, counted = set(), set()
        for _ in range(40):  # new connections: the kernel spreads them over both processes
            with httpx.Client(base_url=url, timeout=30) as client:
                answer = predict(client, "lr", rows(1))
                assert answer.status_code == 200
                answered_by.add(answer.headers["x-request-id"][:16])  # a process's own prefix
        for _ in range(20):
            with httpx.Client(base_url=url, timeout=30) as client:
                scrape = client.get("/metrics")
                counted.add((scrape.headers["x-request-id"][:16], _sample(scrape.text)))
    assert len(answered_by) == 2
    # Whichever process answers /metrics, it counts the requests of both.
    assert {count for _, count in counted} == {40.0}
    assert len({process for process, _ in counted}) == 2


def _sample(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "mmserve_requests_total" and sample.labels.get("model") == "lr":
                return float(sample.value)
    return 0.0
