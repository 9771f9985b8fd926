"""A real ``mmserve serve`` through a store outage (item 13 of issue 16): the S3 server is
real, a proxy in front of it refuses or hangs connections. Loaded models keep answering,
saying how stale their reference is; everything else is a 503 naming the store, within the
store's timeouts; readiness says what can be served."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from serving.registry import Registry
from serving.settings import AwsSettings
from serving.store import Store
from tests import fixtures
from tests.proxy import Proxy, proxy
from tests.services import mmserve_server

pytestmark = pytest.mark.slow

STALE_BOUND_S = 15
ROWS = {"instances": fixtures.numeric_data(3)[0].tolist()}


def _env(s3_url: str, cut: Proxy, **extra: str) -> dict[str, str]:
    return {
        "MMSERVE_STORE_URL": s3_url,
        "AWS_ENDPOINT_URL": cut.url,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "MMSERVE_STORE_CONNECT_TIMEOUT_S": "0.5",
        "MMSERVE_STORE_REQUEST_TIMEOUT_S": "0.5",
        "AWS_MAX_ATTEMPTS": "1",
        "MMSERVE_REGISTRY__ALIAS_TTL_S": "0",
        "MMSERVE_REGISTRY__STALE_RESOLUTION_S": str(STALE_BOUND_S),
        **extra,
    }


@pytest.fixture
def cut(s3_endpoint: str) -> Iterator[Proxy]:
    with proxy(s3_endpoint) as p:
        yield p


@pytest.fixture
def registered(s3_url: str, aws: AwsSettings) -> str:
    registry = Registry(Store.from_url(s3_url, aws))
    registry.register(fixtures.logistic(), "m", alias="production")
    registry.register(fixtures.logistic(), "never-loaded")
    return s3_url


def predict(client: httpx.Client, ref: str) -> httpx.Response:
    return client.post(f"/v1/models/{ref}:predict", content=json.dumps(ROWS))


def until(check: Callable[[], httpx.Response | None]) -> httpx.Response:
    """``check()``'s first answer that is not ``None``, trying for up to a minute."""
    deadline = time.monotonic() + 60
    while (answer := check()) is None:
        assert time.monotonic() < deadline, "the server never got there"
        time.sleep(0.2)
    return answer


def until_status(call: Callable[[], httpx.Response], status: int) -> httpx.Response:
    """``call()``'s first answer with ``status``."""
    return until(lambda: answer if (answer := call()).status_code == status else None)


def test_loaded_models_answer_through_a_hanging_store(registered: str, cut: Proxy) -> None:
    unavailable = f"object store {registered} is unavailable: "
    with (
        mmserve_server(_env(registered, cut)) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        assert predict(client, "m:1").status_code == 200  # loaded
        ready = client.get("/v2/health/ready")
        assert ready.status_code == 200
        assert ready.json()["store"] == {
            "url": registered,
            "available": True,
            "checked_s": ready.json()["store"]["checked_s"],
            "error": None,
        }
        assert ready.json()["models"] == ["m:1"]
        for ref in ("m@production", "m"):  # resolved by the store just before it hangs
            answer = predict(client, ref)
            assert answer.status_code == 200
            assert "x-mmserve-stale-seconds" not in answer.headers

        cut.set("hang")
        for ref in ("m@production", "m"):
            answer = predict(client, ref)
            assert answer.status_code == 200, answer.text
            assert float(answer.headers["x-mmserve-stale-seconds"]) >= 0
            assert answer.json()["predictions"] == predict(client, "m:1").json()["predictions"]
        for path in ("/v1/models/never-loaded:predict", "/v1/models/m:2:predict"):
            answer = client.post(path, content=json.dumps(ROWS))
            assert answer.status_code == 503
            assert answer.json()["error"].startswith(unavailable)
        status = client.get(f"/v1/jobs/{uuid.uuid4().hex}")  # not 180 s: bounded by timeouts
        assert status.status_code == 503
        assert status.json()["error"].startswith(unavailable)

        def degraded() -> httpx.Response | None:
            ready = client.get("/v2/health/ready")
            return ready if ready.json()["store"]["available"] is False else None

        ready = until(degraded)
        assert ready.status_code == 200
        body = ready.json()
        assert (body["ready"], body["models"]) == (True, ["m:1"])
        assert body["store"]["error"].startswith(unavailable)
        assert {ref: r["model"] for ref, r in body["references"].items()} == {
            "m": "m:1",
            "m@production": "m:1",
        }
        assert client.get("/ping").status_code == 200

        # Past the bound, the reference is a 503 naming the store; the version still answers.
        answer = until_status(lambda: predict(client, "m@production"), 503)
        assert answer.json()["error"].startswith(unavailable)
        pinned = predict(client, "m:1")
        assert pinned.status_code == 200
        assert "x-mmserve-stale-seconds" not in pinned.headers
        assert client.get("/v2/health/ready").status_code == 200  # m:1 can still be served

        cut.set("up")
        answer = until_status(lambda: predict(client, "m@production"), 200)
        assert "x-mmserve-stale-seconds" not in answer.headers


def test_a_server_with_nothing_to_serve_is_not_ready_until_the_store_answers(
    registered: str, cut: Proxy
) -> None:
    cut.set("down")
    provisioned = json.dumps({"m": {"provisioned": True}})
    with (
        mmserve_server(_env(registered, cut, MMSERVE_MODELS=provisioned)) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        ready = client.get("/v2/health/ready")
        assert ready.status_code == 503
        body = ready.json()
        assert (body["ready"], body["models"], body["references"]) == (False, [], {})
        assert body["store"]["available"] is False
        assert body["store"]["error"].startswith(f"object store {registered} is unavailable: ")
        assert client.get("/ping").status_code == 503
        answer = predict(client, "m")
        assert answer.status_code == 503
        assert answer.json()["error"].startswith(f"object store {registered} is unavailable: ")

        cut.set("up")  # the provisioned model loads once the store answers
        ready = until_status(lambda: client.get("/v2/health/ready"), 200)
        assert ready.json()["models"] == ["m:1"]
        assert ready.json()["store"]["available"] is True
