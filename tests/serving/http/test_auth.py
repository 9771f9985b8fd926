"""Who may call what, over HTTP against real ``mmserve serve`` processes: management routes are
off without MMSERVE_ADMIN_TOKEN and need it as a bearer token when set; predict routes need
MMSERVE_API_KEY (or the admin token) when set; health routes stay open."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from serving.registry import Registry
from serving.store import Store
from tests import fixtures
from tests.services import mmserve_server
from tests.serving.http.conftest import Server

ADMIN_TOKEN = "admin-7f3a9c"
API_KEY = "key-51be02"
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
KEY = {"x-api-key": API_KEY}
OFF = "management routes are off: set MMSERVE_ADMIN_TOKEN to turn them on"
NO_ADMIN = "missing or wrong admin token: send 'Authorization: Bearer <token>'"
NO_KEY = "missing or wrong API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"

# Every route that changes what is served, or lists what a multi-model endpoint loaded.
MANAGEMENT = [
    ("POST", "/v2/repository/models/lr/load", None),
    ("POST", "/v2/repository/models/lr/unload", None),
    ("GET", "/models", None),
    ("POST", "/models", {"model_name": "lr", "url": ""}),
    ("GET", "/models/lr", None),
    ("DELETE", "/models/lr", None),
    ("PUT", "/v1/models/lr/aliases/staging", {"version": 1}),
    ("DELETE", "/v1/models/lr/aliases/staging", None),
]
ROW = [0.1, -0.2, 0.3, 0.4, -0.5]
V2_BODY = {"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP64", "data": ROW}]}
CSV = {"content-type": "text/csv", "x-amzn-sagemaker-target-model": "lr"}
# (method, path, body, headers) of each predict route, and of a model-reading one.
PREDICT = [
    ("POST", "/v1/models/lr:predict", json.dumps({"instances": [ROW]}), {}),
    ("POST", "/v2/models/lr/infer", json.dumps(V2_BODY), {}),
    ("POST", "/invocations", "0.1,-0.2,0.3,0.4,-0.5", CSV),
    ("POST", "/models/lr/invoke", "0.1,-0.2,0.3,0.4,-0.5", {"content-type": "text/csv"}),
    ("POST", "/v2/repository/index", None, {}),
    ("GET", "/v1/models", None, {}),
]


@contextmanager
def secured_server(store_dir: Path, **env: str) -> Iterator[httpx.Client]:
    """``mmserve serve`` over ``store_dir`` with the admin token and API key set."""
    settings = {
        "MMSERVE_STORE_URL": str(store_dir),
        "MMSERVE_ADMIN_TOKEN": ADMIN_TOKEN,
        "MMSERVE_API_KEY": API_KEY,
        **env,
    }
    with mmserve_server(settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    store_dir = tmp_path_factory.mktemp("secured")
    Registry(Store.from_url(str(store_dir))).register(fixtures.logistic(), "lr", alias="staging")
    with secured_server(store_dir) as client:
        yield client


def call(client: httpx.Client, method: str, path: str, body: object, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    content = body if isinstance(body, str) or body is None else json.dumps(body)
    return client.request(method, path, content=content, headers=headers)


# -- no admin token: management routes are off ------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), MANAGEMENT)
def test_management_routes_are_off_without_an_admin_token(
    server: Server, method: str, path: str, body: object
) -> None:
    response = call(server.client, method, path, body, {"authorization": "Bearer anything"})
    assert (response.status_code, response.json()) == (403, {"error": OFF})


def test_without_an_api_key_predict_routes_and_the_index_are_open(server: Server) -> None:
    for method, path, body, headers in PREDICT:
        response = call(server.client, method, path, body, headers)
        assert response.status_code == 200, (path, response.text)


# -- admin token set ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong-token",
        f"Bearer {ADMIN_TOKEN}x",
        f"Basic {ADMIN_TOKEN}",
        ADMIN_TOKEN,
        f"Bearer {API_KEY}",
    ],
    ids=["missing", "wrong", "longer", "basic-scheme", "no-scheme", "the-api-key"],
)
def test_management_routes_need_the_admin_token(
    secured: httpx.Client, authorization: str | None
) -> None:
    headers = {"authorization": authorization} if authorization else {}
    for method, path, body in MANAGEMENT:
        response = call(secured, method, path, body, {**headers, **KEY})
        assert (response.status_code, response.json()) == (401, {"error": NO_ADMIN}), path
        assert response.headers["www-authenticate"] == "Bearer"


def test_the_admin_token_opens_management_routes(secured: httpx.Client) -> None:
    response = secured.get("/models", headers={"authorization": f"bearer {ADMIN_TOKEN}"})
    assert (response.status_code, response.json()) == (200, {"models": []})


# -- API key set -------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body", "headers"), PREDICT)
def test_predict_routes_need_the_api_key(
    secured: httpx.Client, method: str, path: str, body: str | None, headers: dict[str, str]
) -> None:
    refused = [
        {},
        {"x-api-key": "wrong"},
        {"authorization": "Bearer wrong"},
        {"authorization": f"Basic {API_KEY}"},
    ]
    for credentials in refused:
        response = call(secured, method, path, body, {**headers, **credentials})
        assert (response.status_code, response.json()) == (401, {"error": NO_KEY}), credentials
        assert response.headers["www-authenticate"] == "Bearer"
    for credentials in (KEY, {"authorization": f"Bearer {API_KEY}"}, ADMIN):  # admin: all
        response = call(secured, method, path, body, {**headers, **credentials})
        assert response.status_code == 200, (credentials, response.text)


def test_health_routes_stay_open(secured: httpx.Client) -> None:
    assert secured.get("/v2/health/live").json() == {"live": True}
    assert secured.get("/v2/health/ready").json() == {"ready": True}
    assert secured.get("/ping").status_code == 200
    assert secured.get("/v2").status_code == 200


def test_the_openapi_spec_states_the_security_schemes(secured: httpx.Client) -> None:
    spec = secured.get("/openapi.json").json()
    assert set(spec["components"]["securitySchemes"]) == {"AdminToken", "APIKeyBearer", "APIKey"}
    assert spec["paths"]["/models"]["post"]["security"] == [{"AdminToken": []}]
    assert spec["security"] == [{"APIKeyBearer": []}, {"APIKey": []}]  # every other route
