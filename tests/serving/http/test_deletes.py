"""Deleting a model version and an endpoint over HTTP, against a real ``mmserve serve``."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from serving.endpoints import files
from serving.endpoints.catalog import Endpoints
from serving.registry import Registry
from serving.store import Store
from tests import fixtures
from tests.serving.http.test_auth import ADMIN, KEY, secured_server

ENDPOINTS = """
endpoints:
  churn:
    variants: [{name: blue, model: lr@production}]
  pinned:
    variants: [{name: only, model: lr:4}]
"""
ROW = {"instances": [[0.1, -0.2, 0.3, 0.4, -0.5]]}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Registry]]:
    """lr:1 production, lr:2 and lr:3 unaliased, lr:4 pinned by endpoint 'pinned'."""
    store_dir = tmp_path_factory.mktemp("deletes")
    registry = Registry(Store.from_url(str(store_dir)))
    registry.register(fixtures.logistic(), "lr", alias="production")
    for _ in range(3):
        registry.register(fixtures.forest(), "lr")
    Endpoints(registry.store).apply(files.parse(ENDPOINTS))
    with secured_server(store_dir) as client:
        yield client, registry


def test_deleting_a_version_answers_the_versions_left(
    served: tuple[httpx.Client, Registry],
) -> None:
    client, registry = served
    deleted = client.delete("/v1/models/lr/versions/2", headers=ADMIN)
    assert (deleted.status_code, deleted.json()) == (200, {"name": "lr", "versions": [1, 3, 4]})
    assert registry.version_numbers("lr") == [1, 3, 4]
    gone = client.post("/v1/models/lr:2/predict", json=ROW, headers=KEY)
    assert (gone.status_code, gone.json()) == (404, {"error": "model 'lr' has no version 2"})
    again = client.delete("/v1/models/lr/versions/2", headers=ADMIN)
    assert (again.status_code, again.json()) == (404, {"error": "model 'lr' has no version 2"})


def test_a_loaded_version_deleted_is_no_longer_served(
    served: tuple[httpx.Client, Registry],
) -> None:
    client, _ = served
    assert client.post("/v1/models/lr:3/predict", json=ROW, headers=KEY).status_code == 200
    assert client.delete("/v1/models/lr/versions/3", headers=ADMIN).status_code == 200
    # The server had it in its cache: deleting it there drops it at once.
    gone = client.post("/v1/models/lr:3/predict", json=ROW, headers=KEY)
    assert (gone.status_code, gone.json()) == (404, {"error": "model 'lr' has no version 3"})


def test_a_version_in_use_is_not_deleted(served: tuple[httpx.Client, Registry]) -> None:
    client, registry = served
    aliased = client.delete("/v1/models/lr/versions/1", headers=ADMIN)
    assert (aliased.status_code, aliased.json()) == (
        409,
        {"error": "lr:1 is in use, by alias 'production': point it at another version first"},
    )
    pinned = client.delete("/v1/models/lr/versions/4", headers=ADMIN)
    assert (pinned.status_code, pinned.json()) == (
        409,
        {
            "error": "lr:4 is in use, by endpoint 'pinned' (variant only): point it at another "
            "version first"
        },
    )
    assert 1 in registry.version_numbers("lr") and 4 in registry.version_numbers("lr")
    bad = client.delete("/v1/models/lr/versions/x", headers=ADMIN)
    assert bad.status_code == 400


def test_deleting_an_endpoint_stops_serving_it(served: tuple[httpx.Client, Registry]) -> None:
    client, registry = served
    path = "/v1/endpoints/churn:predict"
    assert client.post(path, json=ROW, headers=KEY).status_code == 200
    deleted = client.delete("/v1/endpoints/churn", headers=ADMIN)
    assert (deleted.status_code, deleted.json()) == (200, {"endpoints": ["pinned"]})
    assert Endpoints(registry.store).names() == ["pinned"]
    gone = client.post(path, json=ROW, headers=KEY)
    assert (gone.status_code, gone.json()) == (
        404,
        {"error": "endpoint 'churn' does not exist (endpoints: pinned)"},
    )
    again = client.delete("/v1/endpoints/churn", headers=ADMIN)
    assert (again.status_code, again.json()) == (
        404,
        {"error": "endpoint 'churn' does not exist (endpoints: pinned)"},
    )
