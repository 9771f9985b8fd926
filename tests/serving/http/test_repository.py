"""Model repository control over HTTP against a real ``mmserve serve``: the Open Inference
Protocol repository extension, SageMaker's multi-model endpoint contract, alias changes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from serving.registry import Registry
from serving.store import Store
from tests import fixtures
from tests.serving.http.test_auth import ADMIN, API_KEY, KEY, secured_server

# Each test that changes what is loaded or where an alias points works on its own models.
PREDICT_ALIASES = "flip"  # production 1, then moved to 2
GATED = "gate"  # 1 approved (production), 2 pending
DROPPED = "drop"  # production 1, newest 2
PAYLOAD_LIMIT = 4096


class Served:
    def __init__(self, client: httpx.Client, registry: Registry):
        self.client, self.registry = client, registry

    def admin(self, method: str, path: str, body: object = None) -> httpx.Response:
        return self.client.request(method, path, json=body, headers=ADMIN)

    def index(self, body: object = None) -> dict[str, dict[str, Any]]:
        response = self.client.post("/v2/repository/index", json=body, headers=ADMIN)
        assert response.status_code == 200
        return {entry["name"]: entry for entry in response.json()}

    def predict(self, ref: str, x: np.ndarray) -> dict[str, Any]:
        document = {"instances": x.tolist()}
        response = self.client.post(f"/v1/models/{ref}:predict", json=document, headers=KEY)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def expected(self, ref: str, x: np.ndarray) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = (
            self.registry.load(ref).predict(fixtures.numeric_table(x)).to_pylist()
        )
        return rows


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    store_dir = tmp_path_factory.mktemp("repository")
    registry = Registry(Store.from_url(str(store_dir)))
    registry.register(fixtures.logistic(), "lr", alias="production")
    registry.register(fixtures.forest(), "lr")
    registry.register(fixtures.regressor(), "price")
    for name in (PREDICT_ALIASES, GATED, DROPPED):
        registry.register(fixtures.logistic(), name, alias="production")
    registry.register(fixtures.forest(), PREDICT_ALIASES)
    registry.register(fixtures.forest(), GATED, approval="pending")
    registry.register(fixtures.forest(), DROPPED)
    with secured_server(store_dir, MMSERVE_MAX_PAYLOAD_BYTES=str(PAYLOAD_LIMIT)) as client:
        yield Served(client, registry)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A server whose model cache holds about 1 KB: no model fits."""
    store_dir = tmp_path_factory.mktemp("tiny")
    registry = Registry(Store.from_url(str(store_dir)))
    registry.register(fixtures.logistic(), "lr")
    with secured_server(store_dir, MMSERVE_CACHE__MAX_MEMORY_MB="0.001") as client:
        yield Served(client, registry)


# -- Open Inference Protocol repository extension --------------------------------------------


def test_the_index_says_which_models_are_loaded(served: Served) -> None:
    for name in ("lr", "price"):
        assert served.admin("POST", f"/v2/repository/models/{name}/unload").status_code == 200
    index = served.index()
    assert index["lr"] == {
        "name": "lr",
        "version": "1",
        "state": "UNAVAILABLE",
        "reason": "unloaded",
    }
    assert index["price"]["state"] == "UNAVAILABLE"
    response = served.admin("POST", "/v2/repository/models/lr/load")
    assert (response.status_code, response.json()) == (200, {})
    assert served.index()["lr"] == {"name": "lr", "version": "1", "state": "READY", "reason": ""}
    ready = served.index({"ready": True})
    assert "lr" in ready and "price" not in ready
    assert {entry["state"] for entry in ready.values()} == {"READY"}
    assert served.index({"ready": False})["price"]["state"] == "UNAVAILABLE"


def test_loading_a_loaded_model_loads_it_again(served: Served) -> None:
    for _ in range(2):
        response = served.admin("POST", "/v2/repository/models/price/load")
        assert (response.status_code, response.json()) == (200, {})
    assert served.index()["price"]["state"] == "READY"


def test_unload_drops_every_loaded_version(served: Served) -> None:
    x, _ = fixtures.numeric_data(2, seed=31)
    for ref in ("lr:1", "lr:2"):
        served.predict(ref, x)
        assert served.client.get(f"/v1/models/{ref}", headers=KEY).json()["ready"] is True
    response = served.admin("POST", "/v2/repository/models/lr/unload")
    assert (response.status_code, response.json()) == (200, {})
    for ref in ("lr:1", "lr:2"):
        assert served.client.get(f"/v1/models/{ref}", headers=KEY).json()["ready"] is False
    assert served.index()["lr"]["state"] == "UNAVAILABLE"
    assert served.predict("lr", x)["predictions"] == served.expected("lr:1", x)  # loads again


@pytest.mark.parametrize("action", ["load", "unload"])
@pytest.mark.parametrize(
    ("name", "status", "error"),
    [
        ("ghost", 404, "model 'ghost' is not registered"),
        (
            "lr:2",
            400,
            "invalid model name 'lr:2': use 1-64 characters: a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit",
        ),
    ],
)
def test_unknown_or_invalid_models_are_refused(
    served: Served, action: str, name: str, status: int, error: str
) -> None:
    response = served.admin("POST", f"/v2/repository/models/{name}/{action}")
    assert (response.status_code, response.json()) == (status, {"error": error})


def test_a_standard_v2_client_drives_the_repository(served: Served) -> None:
    client = triton.InferenceServerClient(str(served.client.base_url).removeprefix("http://"))
    client.unload_model("price", headers=ADMIN)
    index = {m["name"]: m for m in client.get_model_repository_index(headers=ADMIN)}
    assert index["price"]["state"] == "UNAVAILABLE"
    client.load_model("price", headers=ADMIN)
    index = {m["name"]: m for m in client.get_model_repository_index(headers=ADMIN)}
    assert index["price"]["state"] == "READY"
    with pytest.raises(InferenceServerException, match="model 'ghost' is not registered"):
        client.load_model("ghost", headers=ADMIN)


def test_a_model_bigger_than_the_cache_is_507(tiny: Served) -> None:
    size = tiny.registry.get("lr:1").size_bytes
    assert 1024 <= size < 2**20
    error = (
        f"model lr:1 needs ~{size / 1024:.1f} KB but the model cache holds at most 1.0 KB "
        "(MMSERVE_CACHE__MAX_MEMORY_MB)"
    )
    response = tiny.admin("POST", "/v2/repository/models/lr/load")
    assert (response.status_code, response.json()) == (507, {"error": error})
    response = tiny.admin("POST", "/models", {"model_name": "lr", "url": ""})
    assert (response.status_code, response.json()) == (507, {"error": error})
    assert tiny.admin("GET", "/models").json() == {"models": []}
    assert tiny.index()["lr"]["state"] == "UNAVAILABLE"


# -- SageMaker multi-model endpoint ------------------------------------------------------------


def invoke(served: Served, name: str, x: np.ndarray) -> httpx.Response:
    body = "\n".join(",".join(repr(v) for v in row) for row in x.tolist())
    headers = {**KEY, "content-type": "text/csv", "accept": "application/json"}
    return served.client.post(f"/models/{name}/invoke", content=body, headers=headers)


def test_a_multi_model_endpoint_loads_lists_invokes_and_unloads(served: Served) -> None:
    loaded = {"modelName": "churn-v2", "modelUrl": "lr:2"}
    response = served.admin("POST", "/models", {"model_name": "churn-v2", "url": "lr:2"})
    assert (response.status_code, response.json()) == (200, loaded)
    again = served.admin("POST", "/models", {"model_name": "churn-v2", "url": "lr"})
    assert (again.status_code, again.json()) == (
        409,
        {"error": "model 'churn-v2' is already loaded (as lr:2); unload it first"},
    )
    assert served.admin("GET", "/models/churn-v2").json() == loaded
    assert loaded in served.admin("GET", "/models").json()["models"]

    x, _ = fixtures.numeric_data(3, seed=32)
    answer = invoke(served, "churn-v2", x)
    assert (answer.status_code, answer.headers["x-mmserve-model"]) == (200, "lr:2")
    assert answer.json() == {"predictions": served.expected("lr:2", x)}

    response = served.admin("DELETE", "/models/churn-v2")
    assert (response.status_code, response.json()) == (200, {})
    for method in ("GET", "DELETE"):
        response = served.admin(method, "/models/churn-v2")
        assert (response.status_code, response.json()) == (
            404,
            {"error": "model 'churn-v2' is not loaded"},
        )
    # Unloaded, the name is not invoked (SageMaker loads it again first).
    gone = invoke(served, "churn-v2", x)
    assert (gone.status_code, gone.headers["x-amzn-errortype"], gone.json()["error"]) == (
        404,
        "ValidationError",  # SageMaker's error type
        "model 'churn-v2' is not loaded",
    )


def test_an_empty_url_loads_the_model_named(served: Served) -> None:
    response = served.admin("POST", "/models", {"model_name": "price", "url": ""})
    assert (response.status_code, response.json()) == (
        200,
        {"modelName": "price", "modelUrl": "price:1"},
    )
    assert served.admin("DELETE", "/models/price").status_code == 200


def test_a_loaded_name_survives_the_cache_dropping_its_model(served: Served) -> None:
    served.admin("POST", "/models", {"model_name": "pinned", "url": "lr:1"})
    served.admin("POST", "/v2/repository/models/lr/unload")  # drops lr:1 from the cache
    assert served.admin("GET", "/models/pinned").json()["modelUrl"] == "lr:1"
    x, _ = fixtures.numeric_data(2, seed=33)
    assert invoke(served, "pinned", x).json() == {"predictions": served.expected("lr:1", x)}
    assert served.admin("DELETE", "/models/pinned").status_code == 200


def test_loaded_models_are_listed_page_by_page(served: Served) -> None:
    names = ["page-a", "page-b", "page-c"]
    for name in names:
        assert served.admin("POST", "/models", {"model_name": name, "url": "price"}).is_success
    try:
        first = served.admin("GET", "/models?max_results=2").json()
        assert first == {
            "models": [
                {"modelName": "page-a", "modelUrl": "price:1"},
                {"modelName": "page-b", "modelUrl": "price:1"},
            ],
            "nextPageToken": "page-b",
        }
        rest = served.admin("GET", "/models?max_results=2&next_page_token=page-b").json()
        assert rest == {"models": [{"modelName": "page-c", "modelUrl": "price:1"}]}
        assert served.admin("GET", "/models?max_results=0").status_code == 422
    finally:
        for name in names:
            served.admin("DELETE", f"/models/{name}")


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"model_name": "x", "url": "ghost"}, 404, "model 'ghost' is not registered"),
        ({"model_name": "x", "url": "lr:9"}, 404, "model 'lr' has no version 9"),
        (
            {"model_name": "Bad Name", "url": "lr"},
            400,
            "invalid model_name 'Bad Name': use 1-64 characters: a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit",
        ),
        ({"url": "lr"}, 422, "body.model_name: Field required"),
    ],
)
def test_loads_that_cannot_happen_are_refused(
    served: Served, body: dict[str, str], status: int, error: str
) -> None:
    response = served.admin("POST", "/models", body)
    assert (response.status_code, response.json()) == (status, {"error": error})
    assert served.admin("GET", "/models/x").status_code == 404


def test_invoke_takes_the_api_key_or_the_admin_token(served: Served) -> None:
    x, _ = fixtures.numeric_data(1, seed=34)
    body = ",".join(repr(v) for v in x[0].tolist())
    headers = {"content-type": "text/csv"}
    assert served.admin("POST", "/models", {"model_name": "keyed", "url": "lr"}).is_success
    try:
        path = "/models/keyed/invoke"
        assert served.client.post(path, content=body, headers=headers).status_code == 401
        as_admin = served.client.post(path, content=body, headers={**headers, **ADMIN})
        assert as_admin.status_code == 200
        bearer = {**headers, "authorization": f"Bearer {API_KEY}"}
        assert served.client.post(path, content=body, headers=bearer).status_code == 200
    finally:
        served.admin("DELETE", "/models/keyed")


def test_invoke_never_loads_a_name_that_was_not_loaded(served: Served) -> None:
    """A predict caller may not choose what takes memory: only POST /models (admin) loads."""
    served.admin("POST", "/v2/repository/models/price/unload")
    x, _ = fixtures.numeric_data(1, seed=38)
    response = invoke(served, "price", x)
    assert (response.status_code, response.json()["error"]) == (
        404,
        "model 'price' is not loaded",
    )
    assert served.index()["price"]["state"] == "UNAVAILABLE"


# -- registry aliases --------------------------------------------------------------------------


def test_models_are_listed_with_the_admin_token(served: Served) -> None:
    listed = {m["name"]: m for m in served.admin("GET", "/v1/models").json()["models"]}
    assert listed["lr"] == {"name": "lr", "versions": [1, 2], "aliases": {"production": 1}}
    assert set(listed) == {"lr", "price", PREDICT_ALIASES, GATED, DROPPED}


def test_moving_an_alias_changes_what_the_name_answers_at_once(served: Served) -> None:
    x, _ = fixtures.numeric_data(4, seed=35)
    before = served.predict(PREDICT_ALIASES, x)
    assert (before["version"], before["predictions"]) == (1, served.expected("flip:1", x))
    path = f"/v1/models/{PREDICT_ALIASES}/aliases/production"
    response = served.admin("PUT", path, {"version": 2})
    assert (response.status_code, response.json()) == (
        200,
        {"name": "flip", "aliases": {"production": 2}},
    )
    after = served.predict(PREDICT_ALIASES, x)
    assert (after["version"], after["predictions"]) == (2, served.expected("flip:2", x))
    v2_body = {"inputs": [{"name": "x", "shape": [4, 5], "datatype": "FP64", "data": x.tolist()}]}
    infer = served.client.post("/v2/models/flip/infer", json=v2_body, headers=KEY).json()
    assert infer["model_version"] == "2"


def test_a_protected_alias_needs_an_approved_version_unless_forced(served: Served) -> None:
    path = f"/v1/models/{GATED}/aliases/production"
    refused = served.admin("PUT", path, {"version": 2})
    assert (refused.status_code, refused.json()) == (
        409,
        {
            "error": "gate:2 is pending, not approved: alias 'production' only points at "
            "approved versions (approve it first, or force)"
        },
    )
    staging = served.admin("PUT", f"/v1/models/{GATED}/aliases/staging", {"version": 2})
    assert staging.json() == {"name": "gate", "aliases": {"production": 1, "staging": 2}}
    forced = served.admin("PUT", path, {"version": 2, "force": True})
    assert forced.json() == {"name": "gate", "aliases": {"production": 2, "staging": 2}}
    x, _ = fixtures.numeric_data(2, seed=36)
    assert served.predict(GATED, x)["version"] == 2


def test_a_versions_approval_is_set_unless_a_protected_alias_points_at_it(
    served: Served,
) -> None:
    rejected = served.admin("PUT", "/v1/models/price/versions/1/approval", {"approval": "rejected"})
    assert rejected.json() == {"name": "price", "version": 1, "approval": "rejected"}
    assert served.registry.get("price:1").approval == "rejected"
    approved = served.admin("PUT", "/v1/models/price/versions/1/approval", {"approval": "approved"})
    assert approved.json() == {"name": "price", "version": 1, "approval": "approved"}
    protected = served.admin("PUT", "/v1/models/lr/versions/1/approval", {"approval": "rejected"})
    assert (protected.status_code, protected.json()) == (
        409,
        {"error": "lr:1 is the target of alias 'production': move the alias first, or force"},
    )
    assert served.registry.get("lr:1").approval == "approved"


def test_removing_an_alias(served: Served) -> None:
    x, _ = fixtures.numeric_data(2, seed=37)
    assert served.predict(DROPPED, x)["version"] == 1
    path = f"/v1/models/{DROPPED}/aliases/production"
    response = served.admin("DELETE", path)
    assert (response.status_code, response.json()) == (200, {"name": "drop", "aliases": {}})
    assert served.predict(DROPPED, x)["version"] == 2  # no production: the newest
    again = served.admin("DELETE", path)
    assert (again.status_code, again.json()) == (
        404,
        {"error": "model 'drop' has no alias 'production'"},
    )


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error"),
    [
        (
            "PUT",
            "/v1/models/ghost/aliases/staging",
            {"version": 1},
            404,
            "model 'ghost' is not registered",
        ),
        (
            "DELETE",
            "/v1/models/ghost/aliases/staging",
            None,
            404,
            "model 'ghost' is not registered",
        ),
        (
            "PUT",
            "/v1/models/lr/aliases/staging",
            {"version": 9},
            404,
            "model 'lr' has no version 9",
        ),
        (
            "PUT",
            "/v1/models/lr/aliases/Staging",
            {"version": 1},
            400,
            "invalid alias 'Staging': use 1-64 characters: a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit",
        ),
        (
            "PUT",
            "/v1/models/lr/aliases/staging",
            {"version": 0},
            422,
            "body.version: Input should be greater than or equal to 1",
        ),
        (
            "PUT",
            "/v1/models/lr/versions/1@x/approval",  # a version, never an alias
            {"approval": "approved"},
            400,
            "invalid model reference 'lr:1@x': expected 'name', 'name:<version>' or 'name@<alias>'",
        ),
        (
            "PUT",
            "/v1/models/lr/versions/1/approval",
            {"approval": "maybe"},
            422,
            "body.approval: Input should be 'pending', 'approved' or 'rejected'",
        ),
        (
            "PUT",
            "/v1/models/lr/versions/9/approval",
            {"approval": "approved"},
            404,
            "model 'lr' has no version 9",
        ),
        (
            "DELETE",
            "/v1/models/lr/versions/1@x",
            None,
            400,
            "invalid model reference 'lr:1@x': expected 'name', 'name:<version>' or 'name@<alias>'",
        ),
    ],
)
def test_alias_changes_that_cannot_happen_are_refused(
    served: Served, method: str, path: str, body: object, status: int, error: str
) -> None:
    response = served.admin(method, path, body)
    assert (response.status_code, response.json()) == (status, {"error": error})


# -- bodies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/models"),
        ("PUT", "/v1/models/lr/aliases/staging"),
        ("POST", "/v2/repository/index"),
    ],
)
def test_json_bodies_are_held_to_the_payload_limit(served: Served, method: str, path: str) -> None:
    body = {"model_name": "x" * PAYLOAD_LIMIT, "url": "", "version": 1}
    response = served.client.request(method, path, json=body, headers={**ADMIN, **KEY})
    assert (response.status_code, response.json()) == (
        413,
        {"error": f"the request body exceeds the limit of {PAYLOAD_LIMIT} bytes"},
    )


def test_json_bodies_are_read_whatever_their_content_type(served: Served) -> None:
    """``curl -d`` sends application/x-www-form-urlencoded; the body is JSON all the same."""
    headers = {**ADMIN, "content-type": "application/x-www-form-urlencoded"}
    body = '{"model_name": "form-posted", "url": "price"}'
    response = served.client.post("/models", content=body, headers=headers)
    assert response.json() == {"modelName": "form-posted", "modelUrl": "price:1"}
    assert served.admin("DELETE", "/models/form-posted").status_code == 200
    malformed = served.client.post("/models", content="{", headers=ADMIN)
    assert (malformed.status_code, malformed.json()["error"][:24]) == (
        422,
        "body: Invalid JSON: EOF ",
    )
