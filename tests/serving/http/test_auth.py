"""Who may call what, over HTTP against real ``mmserve serve`` processes: management routes are
off without MMSERVE_ADMIN_TOKEN and need it as a bearer token when set; predict routes need
MMSERVE_API_KEY (or the admin token) when set; health routes stay open."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from starlette.routing import Route

from serving.http.app import create_app
from serving.registry import Registry
from serving.settings import Settings
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

# Routes that load, change or list what is served (every route: ROUTES, below).
MANAGEMENT = [
    ("POST", "/v2/repository/index", None),
    ("GET", "/v1/models", None),
    ("GET", "/v1/endpoints", None),
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
    ("GET", "/v1/models/lr", None, {}),
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


def test_without_an_api_key_predict_routes_are_open(server: Server) -> None:
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


def test_the_consoles_pages_are_open_and_its_data_needs_the_key(secured: httpx.Client) -> None:
    page = secured.get("/ui/")
    assert (page.status_code, page.headers["content-type"]) == (200, "text/html; charset=utf-8")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert secured.get("/ui/app.js").status_code == 200
    data = secured.get("/v1/console/models")
    assert (data.status_code, data.json()) == (401, {"error": NO_KEY})
    sessions = [secured.get("/v1/console/session", headers=h).json() for h in ({}, KEY, ADMIN)]
    assert sessions == [
        {"credential": credential, "api_key": True, "management": True}
        for credential in ("none", "api-key", "admin")
    ]


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
    assert secured.get("/v2/health/ready").json()["ready"] is True
    assert secured.get("/ping").status_code == 200
    assert secured.get("/v2").status_code == 200


def test_the_openapi_spec_states_the_security_schemes(secured: httpx.Client) -> None:
    spec = secured.get("/openapi.json").json()
    assert set(spec["components"]["securitySchemes"]) == {"AdminToken", "APIKeyBearer", "APIKey"}
    assert spec["paths"]["/models"]["post"]["security"] == [{"AdminToken": []}]
    assert spec["security"] == [{"APIKeyBearer": []}, {"APIKey": []}]  # every other route


# -- every route of the app --------------------------------------------------------------------

OPEN, KEYED, MANAGED = "none", "API key", "admin token"
GHOST = "ghost"  # no model, endpoint or loaded name has it: admitted calls get a 404
JOB = "0" * 32
TEXT = {"content-type": "text/csv"}


@dataclass(frozen=True)
class Call:
    """The credential a route needs, and a call to it with the status it gets once let in."""

    needs: str
    path: str
    status: int
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _call(needs: str, path: str, status: int = 404, body: object = None, **headers: str) -> Call:
    content = body if isinstance(body, str) or body is None else json.dumps(body)
    return Call(needs, path, status, content, {k.replace("_", "-"): v for k, v in headers.items()})


INSTANCES = {"instances": [ROW]}
# (method, route as the router has it) -> who may call it. A route missing here fails
# test_every_route_answers_only_its_credential: a new route must be classified to pass.
ROUTES: dict[tuple[str, str], Call] = {
    # health, metrics and the docs: anyone
    ("GET", "/"): _call(OPEN, "/", 200),
    ("GET", "/openapi.json"): _call(OPEN, "/openapi.json", 200),
    ("GET", "/docs"): _call(OPEN, "/docs", 200),
    ("GET", "/docs/oauth2-redirect"): _call(OPEN, "/docs/oauth2-redirect", 200),
    ("GET", "/redoc"): _call(OPEN, "/redoc", 200),
    ("GET", "/v2/health/live"): _call(OPEN, "/v2/health/live", 200),
    ("GET", "/v2/health/ready"): _call(OPEN, "/v2/health/ready", 200),
    ("GET", "/ping"): _call(OPEN, "/ping", 200),
    ("GET", "/v2"): _call(OPEN, "/v2", 200),
    ("GET", "/metrics"): _call(OPEN, "/metrics", 200),
    ("GET", "/v1/console/session"): _call(OPEN, "/v1/console/session", 200),
    # predict, a model's own metadata, submit a job and read it: the API key
    ("POST", "/v1/models/{ref}/predict"): _call(KEYED, "/v1/models/lr/predict", 200, INSTANCES),
    ("POST", "/v1/models/{ref}:predict"): _call(KEYED, "/v1/models/lr:predict", 200, INSTANCES),
    ("GET", "/v1/models/{ref}"): _call(KEYED, "/v1/models/lr", 200),
    ("GET", "/v2/models/{name}"): _call(KEYED, "/v2/models/lr", 200),
    ("GET", "/v2/models/{name}/versions/{version}"): _call(KEYED, "/v2/models/lr/versions/1", 200),
    ("GET", "/v2/models/{name}/config"): _call(KEYED, "/v2/models/lr/config", 200),
    ("GET", "/v2/models/{name}/versions/{version}/config"): _call(
        KEYED, "/v2/models/lr/versions/1/config", 200
    ),
    # one model's counters: /metrics (open) has them too
    ("GET", "/v2/models/{name}/stats"): _call(KEYED, "/v2/models/lr/stats", 200),
    ("GET", "/v2/models/{name}/versions/{version}/stats"): _call(
        KEYED, "/v2/models/lr/versions/1/stats", 200
    ),
    ("GET", "/v2/models/{name}/ready"): _call(KEYED, f"/v2/models/{GHOST}/ready"),
    ("GET", "/v2/models/{name}/versions/{version}/ready"): _call(
        KEYED, f"/v2/models/{GHOST}/versions/1/ready"
    ),
    ("POST", "/v2/models/{name}/infer"): _call(KEYED, "/v2/models/lr/infer", 200, V2_BODY),
    ("POST", "/v2/models/{name}/versions/{version}/infer"): _call(
        KEYED, "/v2/models/lr/versions/1/infer", 200, V2_BODY
    ),
    ("POST", "/invocations"): _call(KEYED, "/invocations", 200, "0.1,-0.2,0.3,0.4,-0.5", **CSV),
    # SageMaker's multi-model invoke predicts, with the names POST /models (admin) loaded only
    ("POST", "/models/{name}/invoke"): _call(KEYED, "/models/lr/invoke", 404, "1", **TEXT),
    ("GET", "/v1/models/{ref}/precomputed/{id}"): _call(KEYED, f"/v1/models/{GHOST}/precomputed/7"),
    ("POST", "/v1/models/{ref}/async"): _call(KEYED, f"/v1/models/{GHOST}/async", 404, "1", **TEXT),
    ("POST", "/endpoints/{name}/async-invocations"): _call(
        KEYED, f"/endpoints/{GHOST}/async-invocations", x_amzn_sagemaker_inputlocation="in"
    ),
    ("GET", "/v1/jobs/{token}"): _call(KEYED, f"/v1/jobs/{JOB}"),
    ("GET", "/v1/jobs/{token}/result"): _call(KEYED, f"/v1/jobs/{JOB}/result"),
    ("DELETE", "/v1/jobs/{token}"): _call(KEYED, f"/v1/jobs/{JOB}"),
    ("POST", "/endpoints/{name}/invocations"): _call(
        KEYED, f"/endpoints/{GHOST}/invocations", 404, "1", **TEXT
    ),
    ("POST", "/v1/endpoints/{name}/invocations"): _call(
        KEYED, f"/v1/endpoints/{GHOST}/invocations", 404, "1", **TEXT
    ),
    ("POST", "/v1/endpoints/{name}:predict"): _call(
        KEYED, f"/v1/endpoints/{GHOST}:predict", 404, INSTANCES
    ),
    ("POST", "/v2/endpoints/{name}/infer"): _call(
        KEYED, f"/v2/endpoints/{GHOST}/infer", 404, V2_BODY
    ),
    ("POST", "/v1/endpoints/{name}/async"): _call(KEYED, f"/v1/endpoints/{GHOST}/async", 404, "1"),
    # the console's models and endpoints pages: what a key holder reads of each already
    ("GET", "/v1/console/models"): _call(KEYED, "/v1/console/models", 200),
    ("GET", "/v1/console/endpoints"): _call(KEYED, "/v1/console/endpoints", 200),
    # what loads, changes or lists state, and batch runs (data at scale): the admin token
    ("GET", "/v1/models"): _call(MANAGED, "/v1/models", 200),
    ("POST", "/v2/repository/index"): _call(MANAGED, "/v2/repository/index", 200),
    ("POST", "/v2/repository/models/{name}/load"): _call(
        MANAGED, f"/v2/repository/models/{GHOST}/load"
    ),
    ("POST", "/v2/repository/models/{name}/unload"): _call(
        MANAGED, f"/v2/repository/models/{GHOST}/unload"
    ),
    ("PUT", "/v1/models/{name}/aliases/{alias}"): _call(
        MANAGED, f"/v1/models/{GHOST}/aliases/staging", 404, {"version": 1}
    ),
    ("DELETE", "/v1/models/{name}/aliases/{alias}"): _call(
        MANAGED, f"/v1/models/{GHOST}/aliases/staging"
    ),
    ("DELETE", "/v1/models/{name}/versions/{version}"): _call(
        MANAGED, f"/v1/models/{GHOST}/versions/1"
    ),
    ("GET", "/models"): _call(MANAGED, "/models", 200),
    ("POST", "/models"): _call(MANAGED, "/models", 404, {"model_name": "x", "url": GHOST}),
    ("GET", "/models/{name}"): _call(MANAGED, f"/models/{GHOST}"),
    ("DELETE", "/models/{name}"): _call(MANAGED, f"/models/{GHOST}"),
    ("GET", "/v1/endpoints"): _call(MANAGED, "/v1/endpoints", 200),
    ("GET", "/v1/endpoints/{name}"): _call(MANAGED, f"/v1/endpoints/{GHOST}"),
    ("DELETE", "/v1/endpoints/{name}"): _call(MANAGED, f"/v1/endpoints/{GHOST}"),
    ("POST", "/v1/endpoints:reload"): _call(MANAGED, "/v1/endpoints:reload", 400),
    ("POST", "/v1/batch-jobs"): _call(MANAGED, "/v1/batch-jobs", 422, {}),
    ("GET", "/v1/batch-jobs"): _call(MANAGED, "/v1/batch-jobs", 200),
    ("GET", "/v1/jobs"): _call(MANAGED, "/v1/jobs", 200),
    ("GET", "/v1/streams"): _call(MANAGED, "/v1/streams", 200),
    ("GET", "/v1/endpoints/{name}/compare"): _call(MANAGED, f"/v1/endpoints/{GHOST}/compare"),
    ("PUT", "/v1/models/{name}/versions/{version}/approval"): _call(
        MANAGED, f"/v1/models/{GHOST}/versions/1/approval", 404, {"approval": "approved"}
    ),
    ("GET", "/v1/batch-jobs/{run_id}"): _call(MANAGED, f"/v1/batch-jobs/{GHOST}"),
}


def app_routes(store_dir: Path) -> set[tuple[str, str]]:
    """Every (method, path) the app routes, from its router: HEAD comes with each GET."""
    app = create_app(Settings(store_url=str(store_dir)))
    return {
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route)
        for method in sorted(route.methods or ()) if method != "HEAD"
    }  # fmt: skip


@pytest.fixture(scope="module")
def walked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Two servers over one store: both secrets set, and neither."""
    store_dir = tmp_path_factory.mktemp("walked")
    Registry(Store.from_url(str(store_dir))).register(fixtures.logistic(), "lr")
    with (
        secured_server(store_dir) as secured,
        mmserve_server({"MMSERVE_STORE_URL": str(store_dir)}) as url,
        httpx.Client(base_url=url, timeout=30) as unsecured,
    ):
        yield secured, unsecured


def _expected(call: Call, credential: str, secured: bool) -> tuple[int, object]:
    """What ``call`` should answer when ``credential`` is sent (on a server with both
    secrets set if ``secured``, else with neither)."""
    let_in: tuple[int, object] = (call.status, None)
    if not secured:
        return (403, {"error": OFF}) if call.needs == MANAGED else let_in
    if call.needs == OPEN or credential == MANAGED:
        return let_in
    if credential == OPEN:
        return 401, {"error": NO_KEY}
    return (401, {"error": NO_ADMIN}) if call.needs == MANAGED else let_in


def test_every_route_answers_only_its_credential(
    walked: tuple[httpx.Client, httpx.Client], tmp_path: Path
) -> None:
    assert app_routes(tmp_path) == set(ROUTES)  # a route missing from ROUTES fails here
    secured, unsecured = walked
    sent = {OPEN: {}, KEYED: KEY, MANAGED: ADMIN}
    wrong = []
    for (method, _), call in sorted(ROUTES.items()):
        runs = [(secured, True, credential) for credential in sent] + [(unsecured, False, OPEN)]
        for client, is_secured, credential in runs:
            headers = {**call.headers, **sent[credential]}
            response = client.request(method, call.path, content=call.body, headers=headers)
            status, body = _expected(call, credential, is_secured)
            got = (response.status_code, response.json() if body is not None else None)
            if got != (status, body):
                where = "secured" if is_secured else "unsecured"
                wrong.append((method, call.path, where, credential, got, response.text[:120]))
    assert wrong == [], "\n".join(map(str, wrong))
