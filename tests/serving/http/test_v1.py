"""V1 routes and health over HTTP against a real ``mmserve serve`` process."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from serving import codecs
from tests import fixtures
from tests.serving.http.conftest import PAYLOAD_LIMIT, Server

JSON = {"content-type": "application/json"}


def post(server: Server, path: str, document: object, **kwargs: object):  # type: ignore[no-untyped-def]
    return server.client.post(path, content=json.dumps(document), headers=JSON, **kwargs)


def test_health_routes(server: Server) -> None:
    assert server.client.get("/v2/health/live").json() == {"live": True}
    ready = server.client.get("/v2/health/ready").json()
    assert (ready["ready"], ready["store"]["available"], ready["store"]["error"]) == (
        True,
        True,
        None,
    )
    assert server.client.get("/ping").status_code == 200
    assert server.client.get("/v2").json()["name"] == "mmserve"


@pytest.mark.parametrize("route", ["/v1/models/lr:predict", "/v1/models/lr/predict"])
def test_positional_instances_get_the_predictors_answers_exactly(
    server: Server, route: str
) -> None:
    x, _ = fixtures.numeric_data(12, seed=4)
    response = post(server, route, {"instances": x.tolist()})
    assert response.status_code == 200
    body = response.json()
    expected = server.registry.load("lr:1").predict(fixtures.numeric_table(x))
    assert (body["model"], body["version"]) == ("lr", 1)
    assert body["predictions"] == expected.to_pylist()


def test_named_instances_columnar_inputs_and_aliases(server: Server) -> None:
    frame, _ = fixtures.mixed_frame(6, seed=8)
    rows = frame.to_dict(orient="records")
    expected = server.registry.load("mixed").predict(pa.Table.from_pandas(frame)).to_pylist()
    assert (
        post(server, "/v1/models/mixed:predict", {"instances": rows}).json()["predictions"]
        == expected
    )
    columns = {name: frame[name].tolist() for name in frame.columns}
    assert (
        post(server, "/v1/models/mixed:predict", {"inputs": columns}).json()["predictions"]
        == expected
    )
    staged = post(server, "/v1/models/lr@staging:predict", {"instances": [[0.1] * 5]}).json()
    assert (staged["model"], staged["version"]) == ("lr", 2)


def test_arrow_in_and_out(server: Server) -> None:
    x, _ = fixtures.numeric_data(9, seed=6)
    table = fixtures.numeric_table(x)
    response = server.client.post(
        "/v1/models/price:predict",
        content=codecs.encode(table, codecs.ARROW),
        headers={"content-type": codecs.ARROW, "accept": codecs.ARROW},
    )
    assert response.headers["content-type"] == codecs.ARROW
    out = codecs.decode(response.content, codecs.ARROW)
    np.testing.assert_array_equal(
        out["prediction"].to_numpy(),
        server.registry.load("price").predict(table)["prediction"].to_numpy(),
    )


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        (
            "/v1/models/ghost:predict",
            {"instances": [[1.0] * 5]},
            404,
            "model 'ghost' is not registered",
        ),
        ("/v1/models/lr:7:predict", {"instances": [[1.0] * 5]}, 404, "model 'lr' has no version 7"),
        (
            "/v1/models/lr@canary:predict",
            {"instances": [[1.0] * 5]},
            404,
            "model 'lr' has no alias 'canary'",
        ),
        (
            "/v1/models/lr:0:predict",
            {"instances": [[1.0] * 5]},
            400,
            "invalid model reference 'lr:0': expected 'name', 'name:<version>' or 'name@<alias>'",
        ),
        (
            "/v1/models/lr:predict",
            {"instances": [[1.0, 2.0]]},
            422,
            "cannot read the application/json body: "
            "instance 0 has 2 values; the model takes 5 (f0, f1, f2, f3, f4)",
        ),
        (
            "/v1/models/lr:predict",
            {"rows": []},
            422,
            "cannot read the application/json body: expected {'instances': [...]} or "
            "{'inputs': {column: [values]}}, with at least one row",
        ),
        ("/v1/models/lr:predict", {"instances": [{"f0": 1.0}]}, 422, "missing column 'f1'"),
        (
            "/v1/models/lr:predict",
            {"inputs": {f"f{i}": [1.0, None] for i in range(5)}},
            422,
            "column 'f0' has a null value at row 1",
        ),
        (
            "/v1/models/mixed:predict",
            {"instances": [{"age": "old", "income": 1.0, "plan": "pro", "region": "north"}]},
            422,
            "column 'age' must be double, got 'old' at row 0",
        ),
        (
            "/v1/models/lr:predict",
            {"inputs": {"f0": [1, "a"]}},
            422,
            "column 'f0' must be one type (numbers, strings or booleans), "
            "got a number then a string at row 1",
        ),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_problem(
    server: Server, path, body, status, error
) -> None:
    response = post(server, path, body)
    assert (response.status_code, response.json()) == (status, {"error": error})


def test_malformed_json_is_422(server: Server) -> None:
    response = server.client.post("/v1/models/lr:predict", content=b'{"instances": [', headers=JSON)
    assert response.status_code == 422
    assert response.json()["error"].startswith(
        "cannot read the application/json body: Expecting value"
    )


@pytest.mark.parametrize(
    "content_type", ["application/x-python-pickle", "text/plain", "application/octet-stream"]
)
def test_other_content_types_are_415(server: Server, content_type: str) -> None:
    response = server.client.post(
        "/v1/models/lr:predict", content=b"\x80\x04K\x01.", headers={"content-type": content_type}
    )
    assert response.status_code == 415
    assert response.json()["error"] == (
        f"unsupported format {content_type!r}; "
        "use one of application/json, application/vnd.apache.arrow.stream"
    )


def test_bodies_over_the_limit_are_413_even_when_streamed(server: Server) -> None:
    big = b'{"instances": [' + b"[1.0, 2.0, 3.0, 4.0, 5.0]," * 3000 + b"[1,2,3,4,5]]}"
    assert len(big) > PAYLOAD_LIMIT
    expected = {"error": f"the request body exceeds the limit of {PAYLOAD_LIMIT} bytes"}
    declared = server.client.post("/v1/models/lr:predict", content=big, headers=JSON)
    assert (declared.status_code, declared.json()) == (413, expected)
    chunks = (big[i : i + 8192] for i in range(0, len(big), 8192))  # no Content-Length
    streamed = server.client.post("/v1/models/lr:predict", content=chunks, headers=JSON)
    assert (streamed.status_code, streamed.json()) == (413, expected)


def test_a_model_that_raises_is_500_with_an_error_id_and_no_trace(server: Server) -> None:
    response = post(server, "/v1/models/broken:predict", {"instances": [[0.0] * 5]})
    body = response.json()
    assert response.status_code == 500
    assert body["error"] == "model broken:1 failed: RuntimeError: weights are corrupt"
    assert len(body["error_id"]) == 32 and "Traceback" not in response.text


def test_models_are_described(server: Server) -> None:
    # Listing them is management (the admin token: tests/serving/http/test_repository.py).
    described = server.client.get("/v1/models/lr@staging").json()
    assert (described["version"], described["outputs"]) == (2, ["label", "proba_0", "proba_1"])
    assert server.client.get("/v1/models/ghost").status_code == 404


def test_unknown_routes_are_json_404(server: Server) -> None:
    response = server.client.get("/v1/nothing/here")
    assert (response.status_code, response.json()) == (404, {"error": "Not Found"})


def test_a_nan_prediction_is_null_not_a_500(server: Server) -> None:
    # Extreme (finite) inputs overflow the regressor to NaN, which JSONResponse refused.
    row = [1e308, -1e308, 1e308, -1e308, 1e308]
    response = post(server, "/v1/models/price:predict", {"instances": [row]})
    assert (response.status_code, response.json()["predictions"]) == (200, [{"prediction": None}])


def test_kserve_v1_liveness_is_the_root(server: Server) -> None:
    # The KServe SDK's is_server_live (V1): GET {base}/, alive when status is "alive". The SDK
    # itself pins pandas<3, which this project is past, so its request is made by hand.
    response = server.client.get("/")
    assert (response.status_code, response.json()["status"].lower()) == (200, "alive")
