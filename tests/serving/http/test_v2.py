"""Open Inference Protocol (V2) over HTTP: spec-shaped JSON, and a standard V2 client."""

from __future__ import annotations

import json
import time

import numpy as np
import pyarrow as pa
import pytest
import tritonclient.http as triton

from tests import fixtures
from tests.serving.http.conftest import Server


@pytest.fixture(scope="module")
def client(server: Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.url.removeprefix("http://"))


def test_a_request_as_the_spec_shows_it(server: Server) -> None:
    x, _ = fixtures.numeric_data(3, seed=12)
    request = {
        "id": "42",
        "inputs": [
            {"name": "input0", "shape": [3, 5], "datatype": "FP64", "data": x.ravel().tolist()}
        ],
        "outputs": [{"name": "proba_1"}, {"name": "label"}],
    }
    response = server.client.post("/v2/models/lr/infer", content=json.dumps(request))
    assert response.status_code == 200
    body = response.json()
    expected = server.registry.load("lr").predict(fixtures.numeric_table(x))
    assert (body["model_name"], body["model_version"], body["id"]) == ("lr", "1", "42")
    assert body["outputs"] == [
        {
            "name": "proba_1",
            "shape": [3],
            "datatype": "FP64",
            "data": expected["proba_1"].to_pylist(),
        },
        {"name": "label", "shape": [3], "datatype": "INT64", "data": expected["label"].to_pylist()},
    ]


def test_versioned_route_and_nested_data(server: Server) -> None:
    x, _ = fixtures.numeric_data(2, seed=13)
    request = {"inputs": [{"name": "x", "shape": [2, 5], "datatype": "FP64", "data": x.tolist()}]}
    body = server.client.post("/v2/models/lr/versions/2/infer", content=json.dumps(request)).json()
    assert body["model_version"] == "2"
    expected = server.registry.load("lr:2").predict(fixtures.numeric_table(x))
    assert [o["name"] for o in body["outputs"]] == ["label", "proba_0", "proba_1"]
    assert body["outputs"][2]["data"] == expected["proba_1"].to_pylist()


def test_a_standard_client_with_its_binary_defaults(server: Server, client) -> None:  # type: ignore[no-untyped-def]
    assert client.is_server_live()
    x, _ = fixtures.numeric_data(40, seed=14)
    tensor = triton.InferInput("input__0", list(x.shape), "FP64")
    tensor.set_data_from_numpy(x)  # binary_data=True by default
    result = client.infer("lr", [tensor])  # no outputs named: all come back binary
    expected = server.registry.load("lr").predict(fixtures.numeric_table(x))
    np.testing.assert_array_equal(result.as_numpy("proba_1"), expected["proba_1"].to_numpy())
    np.testing.assert_array_equal(result.as_numpy("label"), expected["label"].to_numpy())
    assert client.is_model_ready("lr")  # loaded by the request (ready means loaded)


def test_a_registered_model_becomes_ready_without_a_request(server: Server, client) -> None:  # type: ignore[no-untyped-def]
    server.registry.register(fixtures.logistic(), "fresh")
    # Asking loads it: ready at once, or after a few 503s with Retry-After while it loads.
    answers = [client.is_model_ready("fresh") for _ in range(1)]
    for _ in range(300):
        if answers[-1]:
            break
        time.sleep(0.1)
        answers.append(client.is_model_ready("fresh"))
    assert answers[-1] is True
    assert all(answer is False for answer in answers[:-1])
    batches = [
        line
        for line in server.client.get("/metrics").text.splitlines()
        if line.startswith("mmserve_batch_size_count") and 'model="fresh"' in line
    ]
    assert batches == []  # no model call: loaded, not used


def test_a_model_that_cannot_load_is_not_ready_and_says_why(server: Server) -> None:
    server.registry.register(fixtures.logistic(), "spoiled")
    server.registry.store.write("registry/spoiled/1/model.skops", b"not the registered bytes")
    response = server.client.get("/v2/models/spoiled/ready")
    assert response.status_code == 503
    assert response.json()["ready"] is False
    assert response.json()["error"].startswith(
        "artifact 'registry/spoiled/1/model.skops' fails its integrity check"
    )


def test_tritons_configuration_and_statistics_extensions(server: Server, client) -> None:  # type: ignore[no-untyped-def]
    server.registry.register(fixtures.logistic(), "counted")
    x, _ = fixtures.numeric_data(3, seed=16)
    for row in x:  # one at a time: three model calls
        tensor = triton.InferInput("input__0", [1, 5], "FP64")
        tensor.set_data_from_numpy(row.reshape(1, 5))
        client.infer("counted", [tensor])
    assert client.get_model_config("counted") == {
        "name": "counted",
        "platform": "sklearn-skops",
        "backend": "mmserve",
        "max_batch_size": 0,
        "input": [{"name": f, "data_type": "TYPE_FP64", "dims": [-1]} for f in fixtures.FEATURES],
        "output": [
            {"name": "label", "data_type": "TYPE_INT64", "dims": [-1]},
            {"name": "proba_0", "data_type": "TYPE_FP64", "dims": [-1]},
            {"name": "proba_1", "data_type": "TYPE_FP64", "dims": [-1]},
        ],
    }
    (stats,) = client.get_inference_statistics("counted", "1")["model_stats"]
    assert (stats["name"], stats["version"]) == ("counted", "1")
    assert (stats["inference_count"], stats["execution_count"]) == (3, 3)
    assert stats["inference_stats"]["success"]["count"] == 3
    assert stats["inference_stats"]["success"]["ns"] > 0
    assert stats["inference_stats"]["fail"]["count"] == 0


def test_a_standard_client_with_named_tensors_and_strings(server: Server, client) -> None:  # type: ignore[no-untyped-def]
    frame, _ = fixtures.mixed_frame(7, seed=15)
    inputs = []
    for name, datatype in [
        ("age", "FP64"),
        ("income", "FP64"),
        ("plan", "BYTES"),
        ("region", "BYTES"),
    ]:
        values = frame[name].to_numpy(dtype=object if datatype == "BYTES" else np.float64)
        tensor = triton.InferInput(name, [len(frame)], datatype)
        tensor.set_data_from_numpy(values, binary_data=name != "income")  # mixed JSON and binary
        inputs.append(tensor)
    outputs = [
        triton.InferRequestedOutput("proba_1", binary_data=False),
        triton.InferRequestedOutput("label"),
    ]
    result = client.infer("mixed", inputs, outputs=outputs)
    expected = server.registry.load("mixed").predict(pa.Table.from_pandas(frame))
    np.testing.assert_array_equal(result.as_numpy("proba_1"), expected["proba_1"].to_numpy())
    np.testing.assert_array_equal(result.as_numpy("label"), expected["label"].to_numpy())


def test_model_metadata(server: Server, client) -> None:  # type: ignore[no-untyped-def]
    metadata = client.get_model_metadata("lr")
    assert metadata["name"] == "lr" and metadata["versions"] == ["1", "2"]
    assert [i["name"] for i in metadata["inputs"]] == fixtures.FEATURES
    assert server.client.get("/v2/models/lr/versions/2").json()["outputs"][1]["name"] == "proba_0"
    assert server.client.get("/v2/models/ghost/ready").status_code == 404


@pytest.mark.parametrize(
    ("request_body", "status", "error"),
    [
        (
            {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]},
            422,
            "input tensor 'x': has 3 columns; the model takes 5 (f0, f1, f2, f3, f4)",
        ),
        (
            {"inputs": [{"name": "x", "shape": [2, 5], "datatype": "FP64", "data": [1, 2, 3]}]},
            422,
            "input tensor 'x': has 3 values; shape [2, 5] needs 10",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP128", "data": [1] * 5}]},
            422,
            "input tensor 'x': unknown datatype 'FP128'",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1, 5], "datatype": "INT64", "data": ["a"] * 5}]},
            422,
            "input tensor 'x': data are not all INT64",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP64"}]},
            422,
            "input tensor 'x': has neither data nor binary_data_size",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "FP64", "data": [1]}]},
            422,
            "cannot read the application/json body: inputs.0.shape: Field required",
        ),
        (
            {
                "inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP64", "data": [1] * 5}],
                "outputs": [{"name": "score"}],
            },
            422,
            "unknown outputs ['score']; the model gives ['label', 'proba_0', 'proba_1']",
        ),
        *(  # zero values, yet a shape numpy cannot even describe: was a 500
            (
                {"inputs": [{"name": "x", "shape": shape, "datatype": "FP64", "data": []}]},
                422,
                f"input tensor 'x': shape {shape} is too large: at most 2147483647 "
                "elements in its non-zero dimensions",
            )
            for shape in ([0, 2**63 - 1], [2**63 - 1, 0], [0, 2**40, 2**40])
        ),
    ],
)
def test_bad_v2_requests_name_the_problem(server: Server, request_body, status, error) -> None:
    response = server.client.post("/v2/models/lr/infer", content=json.dumps(request_body))
    assert (response.status_code, response.json()) == (status, {"error": error})


def test_unknown_model_is_404_in_v2_error_shape(server: Server) -> None:
    body = {"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP64", "data": [1] * 5}]}
    response = server.client.post("/v2/models/ghost/infer", content=json.dumps(body))
    assert (response.status_code, response.json()) == (
        404,
        {"error": "model 'ghost' is not registered"},
    )
