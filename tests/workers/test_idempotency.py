"""Idempotency keys of async jobs, against a real ``mmserve serve`` (running its jobs itself)
with the API key and the admin token set: a key belongs to the credential that sent it, and
to one request; the same key with another request is a 409 naming the key, as in Stripe's
and AWS's APIs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from serving.registry import Registry
from serving.store import Store
from tests import fixtures
from tests.services import mmserve_server

API_KEY = "key-idem-5a1"
ADMIN_TOKEN = "admin-idem-c07"
KEY = {"x-api-key": API_KEY}
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
ROW = "0.5,-1.25,2.0,0.0,3.5"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    store_dir = tmp_path_factory.mktemp("idempotency")
    registry = Registry(Store.from_url(str(store_dir)))
    registry.register(fixtures.logistic(), "lr")
    registry.register(fixtures.forest(), "other")
    env = {
        "MMSERVE_STORE_URL": str(store_dir),
        "MMSERVE_BROKER_URL": "",
        "MMSERVE_API_KEY": API_KEY,
        "MMSERVE_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    with mmserve_server(env) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def submit(
    client: httpx.Client, model: str, key: str, body: str = ROW, **headers: str
) -> httpx.Response:
    sent = {"content-type": "text/csv", "idempotency-key": key, **KEY, **headers}
    return client.post(f"/v1/models/{model}/async", content=body, headers=sent)


def conflict(key: str, fields: str) -> dict[str, str]:
    return {
        "error": f"Idempotency-Key {key!r} was first sent with another request (its {fields} "
        "differ): send a new key for a new request"
    }


def test_a_resubmission_with_the_same_key_is_the_same_job(client: httpx.Client) -> None:
    key = uuid.uuid4().hex
    first = submit(client, "lr", key)
    again = submit(client, "lr", key)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json()["job_id"] == first.json()["job_id"]
    assert again.json()["idempotency_key"] == key
    assert submit(client, "lr", uuid.uuid4().hex).json()["job_id"] != first.json()["job_id"]


def test_the_same_key_for_another_model_is_a_conflict_not_its_job(client: httpx.Client) -> None:
    key = uuid.uuid4().hex
    assert submit(client, "lr", key).status_code == 202
    response = submit(client, "other", key)
    assert (response.status_code, response.json()) == (409, conflict(key, "model"))


def test_the_same_key_with_another_body_or_parameters_is_a_conflict(client: httpx.Client) -> None:
    key = uuid.uuid4().hex
    assert submit(client, "lr", key).status_code == 202
    body = submit(client, "lr", key, "9,9,9,9,9")
    assert (body.status_code, body.json()) == (409, conflict(key, "body"))
    accept = submit(client, "lr", key, accept="application/json")
    assert (accept.status_code, accept.json()) == (409, conflict(key, "accept"))
    both = submit(client, "other", key, "9,9,9,9,9")
    assert (both.status_code, both.json()) == (409, conflict(key, "body, model"))


def test_a_key_belongs_to_the_credential_that_sent_it(client: httpx.Client) -> None:
    key = uuid.uuid4().hex
    keyed = submit(client, "lr", key)
    as_admin = submit(client, "lr", key, **ADMIN)
    assert (keyed.status_code, as_admin.status_code) == (202, 202)
    assert as_admin.json()["job_id"] != keyed.json()["job_id"]
    # Each credential keeps its own job under the key, and another model is still a conflict.
    assert submit(client, "lr", key, **ADMIN).json()["job_id"] == as_admin.json()["job_id"]
    assert submit(client, "lr", key).json()["job_id"] == keyed.json()["job_id"]
    assert submit(client, "other", key, **ADMIN).status_code == 409


def test_a_sagemaker_inference_id_is_a_key_of_its_endpoint(client: httpx.Client) -> None:
    inference_id = uuid.uuid4().hex
    first = submit(client, "lr", uuid.uuid4().hex).json()
    location = first["input_location"]  # an object in the store: an input for the others

    def invoke(endpoint: str) -> httpx.Response:
        headers = {
            **KEY,
            "x-amzn-sagemaker-inputlocation": location,
            "x-amzn-sagemaker-inference-id": inference_id,
        }
        return client.post(f"/endpoints/{endpoint}/async-invocations", headers=headers)

    once, twice = invoke("lr"), invoke("lr")
    assert (once.status_code, twice.status_code) == (202, 202)
    assert once.headers["location"] == twice.headers["location"]
    other = invoke("other")
    assert (other.status_code, other.json()["error"]) == (
        409,
        conflict(inference_id, "model")["error"],
    )
    assert other.headers["x-amzn-errortype"] == "ValidationError"  # SageMaker's error type
