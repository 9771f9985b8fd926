"""The Open Inference Protocol over gRPC on a real ``mmserve serve --grpc-port``: tritonclient's
gRPC client gets what its HTTP client gets from the same process (same values, bit for bit,
same errors and messages), typed ``contents`` and raw tensors alike, and the repository
extension needs the admin token as metadata."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from serving.registry import Registry
from serving.store import Store
from tests import fixtures
from tests.services import free_port, mmserve_server
from tests.serving.http.test_raw_bodies import register_file_models

pytestmark = pytest.mark.slow

KEY, TOKEN = "the-key", "the-token"
WITH_KEY = {"authorization": f"Bearer {KEY}"}  # pass copies to tritonclient.http: it adds to them
ADMIN = {"authorization": f"Bearer {TOKEN}"}
PAYLOAD_LIMIT = 256 * 1024
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3
ENDPOINTS = """\
endpoints:
  ab:
    variants:
      - {name: blue, model: lr, weight: 100}
      - {name: green, model: price, weight: 0}
"""


@dataclass
class Server:
    registry: Registry
    address: str  # the gRPC port's
    http: httpx.Client
    triton_http: httpclient.InferenceServerClient
    triton: grpcclient.InferenceServerClient
    stub: service_pb2_grpc.GRPCInferenceServiceStub


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("grpc")
    registry = Registry(Store.from_url(str(root / "store")))
    registry.register(fixtures.logistic(), "lr")
    registry.register(fixtures.regressor(), "price")
    x, y = fixtures.numeric_data(10)
    pickled: dict[str, Any] = {"flavor": "sklearn-pickle", "trust_pickle": True}
    registry.register(fixtures.ErrorModel().fit(x, y), "broken", **pickled)
    registry.register(fixtures.SlowModel(1.0).fit(x, y), "sleepy", **pickled)
    register_file_models(registry, root, "mirror")
    (root / "endpoints.yaml").write_text(ENDPOINTS)
    env = {
        "MMSERVE_STORE_URL": str(root / "store"),
        "MMSERVE_ENDPOINTS": str(root / "endpoints.yaml"),
        "MMSERVE_API_KEY": KEY,
        "MMSERVE_ADMIN_TOKEN": TOKEN,
        "MMSERVE_MAX_PAYLOAD_BYTES": str(PAYLOAD_LIMIT),
        "PYTHONPATH": os.getcwd(),  # the server unpickles tests.fixtures.ErrorModel
    }
    port = free_port()
    with (
        mmserve_server(env, "--grpc-port", str(port)) as url,
        httpx.Client(base_url=url, timeout=30, headers=WITH_KEY) as http,
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        triton = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        triton_http = httpclient.InferenceServerClient(url.removeprefix("http://"))
        try:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            yield Server(registry, f"127.0.0.1:{port}", http, triton_http, triton, stub)
        finally:
            triton.close()
            triton_http.close()


def features(x: np.ndarray, client: Any = grpcclient) -> list[Any]:
    """One [N] FP64 tensor per feature (binary in HTTP, raw in gRPC)."""
    tensors = []
    for i, name in enumerate(fixtures.FEATURES):
        tensor = client.InferInput(name, [len(x)], "FP64")
        tensor.set_data_from_numpy(np.ascontiguousarray(x[:, i]))
        tensors.append(tensor)
    return tensors


def refused(call: Any) -> tuple[str, str]:
    """The status and message of a tritonclient call that failed."""
    with pytest.raises(InferenceServerException) as caught:
        call()
    return str(caught.value.status()), str(caught.value.message())


# -- health and metadata -----------------------------------------------------------------------


def test_health_and_metadata_are_https(server: Server) -> None:
    client = grpcclient.InferenceServerClient(server.address)  # no key: health is open
    try:
        assert (client.is_server_live(), client.is_server_ready()) == (True, True)
        metadata = client.get_server_metadata(as_json=True)
    finally:
        client.close()
    assert metadata == server.http.get("/v2").json()
    for name in ("lr", "price", "mirror"):
        ours = server.triton.get_model_metadata(name, headers=WITH_KEY, as_json=True)
        http = server.http.get(f"/v2/models/{name}").json()
        for tensor in http["inputs"] + http["outputs"]:
            tensor["shape"] = [str(d) for d in tensor["shape"]]  # MessageToJson's int64s
        assert ours == http


def ready_once_asked(server: Server, name: str, version: str = "") -> bool:
    """Asking loads the model: ready at once, or after some answers of not ready yet."""
    for _ in range(300):
        if server.triton.is_model_ready(name, version, headers=WITH_KEY):
            return True
        time.sleep(0.1)
    return False


def test_a_model_is_ready_once_asked_and_an_unknown_one_is_not_found(server: Server) -> None:
    assert ready_once_asked(server, "price") is True
    assert server.triton.is_model_ready("price", "1", headers=WITH_KEY) is True
    status, message = refused(lambda: server.triton.is_model_ready("nope", headers=WITH_KEY))
    assert (status, message) == ("StatusCode.NOT_FOUND", "model 'nope' is not registered")
    assert server.http.get("/v2/models/nope/ready").json() == {"error": message}


# -- inference ---------------------------------------------------------------------------------


def test_a_classifier_answers_as_over_http_bit_for_bit(server: Server) -> None:
    x, _ = fixtures.numeric_data(50, seed=21)
    ours = server.triton.infer("lr", features(x), headers=WITH_KEY)
    http = server.triton_http.infer("lr", features(x, httpclient), headers=dict(WITH_KEY))
    expected = server.registry.load("lr").predict(fixtures.numeric_table(x))
    for output in ("label", "proba_0", "proba_1"):
        np.testing.assert_array_equal(ours.as_numpy(output), http.as_numpy(output))
        np.testing.assert_array_equal(ours.as_numpy(output), expected[output].to_numpy())
    response = ours.get_response()
    assert (response.model_name, response.model_version) == ("lr", "1")
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("label", "INT64", [50]),
        ("proba_0", "FP64", [50]),
        ("proba_1", "FP64", [50]),
    ]
    assert len(response.raw_output_contents) == 3  # raw in, raw out (as Triton answers)


def test_one_matrix_of_fp32_answers_as_over_http(server: Server) -> None:
    x, _ = fixtures.numeric_data(7, seed=22)
    tensors = []
    for client in (grpcclient, httpclient):
        tensor = client.InferInput("input__0", [7, 5], "FP32")
        tensor.set_data_from_numpy(x.astype(np.float32))
        tensors.append([tensor])
    ours = server.triton.infer("price", tensors[0], headers=WITH_KEY)
    http = server.triton_http.infer("price", tensors[1], headers=dict(WITH_KEY))
    np.testing.assert_array_equal(ours.as_numpy("prediction"), http.as_numpy("prediction"))
    assert ours.as_numpy("prediction").dtype == np.float64


def test_typed_contents_answer_typed_contents_equal_to_https_json(server: Server) -> None:
    x, _ = fixtures.numeric_data(3, seed=23)
    request = service_pb2.ModelInferRequest(model_name="lr", id="req-7")
    for i, name in enumerate(fixtures.FEATURES):
        tensor = request.inputs.add(name=name, datatype="FP64", shape=[3])
        tensor.contents.fp64_contents.extend(x[:, i].tolist())
    request.outputs.add(name="proba_1")
    request.outputs.add(name="label")
    response = server.stub.ModelInfer(request, metadata=tuple(WITH_KEY.items()))
    body = {
        "id": "req-7",
        "inputs": [
            {"name": n, "shape": [3], "datatype": "FP64", "data": x[:, i].tolist()}
            for i, n in enumerate(fixtures.FEATURES)
        ],
        "outputs": [{"name": "proba_1"}, {"name": "label"}],
    }
    http = server.http.post("/v2/models/lr/infer", json=body).json()
    assert response.id == http["id"] == "req-7"
    assert list(response.raw_output_contents) == []
    assert [
        {
            "name": o.name,
            "shape": list(o.shape),
            "datatype": o.datatype,
            "data": list(o.contents.fp64_contents or o.contents.int64_contents),
        }
        for o in response.outputs
    ] == http["outputs"]


def test_binary_outputs_when_asked_for_with_typed_inputs(server: Server) -> None:
    x, _ = fixtures.numeric_data(2, seed=24)
    request = service_pb2.ModelInferRequest(model_name="price")
    tensor = request.inputs.add(name="x", datatype="FP64", shape=[2, 5])
    tensor.contents.fp64_contents.extend(x.ravel().tolist())
    request.parameters["binary_data_output"].bool_param = True
    response = server.stub.ModelInfer(request, metadata=tuple(WITH_KEY.items()))
    expected = server.registry.load("price").predict(fixtures.numeric_table(x))
    assert list(response.raw_output_contents) == [expected["prediction"].to_numpy().tobytes()]


def test_a_file_goes_in_and_comes_back_as_its_exact_bytes(server: Server) -> None:
    answers = []
    for client, infer in (
        (grpcclient, server.triton.infer),
        (httpclient, server.triton_http.infer),
    ):
        tensor = client.InferInput("image", [2], "BYTES")
        tensor.set_data_from_numpy(np.array([PNG, b"\x00\xff"], dtype=object))
        answers.append(infer("mirror", [tensor], headers=dict(WITH_KEY)).as_numpy("image").tolist())
    assert answers[0] == answers[1] == [PNG[::-1], b"\xff\x00"]
    request = service_pb2.ModelInferRequest(model_name="mirror")  # typed BYTES contents
    request.inputs.add(name="image", datatype="BYTES", shape=[1]).contents.bytes_contents.append(
        PNG
    )
    response = server.stub.ModelInfer(request, metadata=tuple(WITH_KEY.items()))
    (output,) = response.outputs
    assert (output.datatype, list(output.contents.bytes_contents)) == ("BYTES", [PNG[::-1]])
    assert (
        hashlib.sha256(output.contents.bytes_contents[0]).digest()
        == hashlib.sha256(PNG[::-1]).digest()
    )


def test_an_endpoint_answers_by_its_name_and_a_pinned_variant(server: Server) -> None:
    x, _ = fixtures.numeric_data(2, seed=25)
    blue = server.triton.infer("ab", features(x), headers=WITH_KEY)
    assert blue.get_response().model_name == "lr"
    pinned = {**WITH_KEY, "x-target-variant": "green"}
    green = server.triton.infer("ab", features(x), headers=pinned)
    expected = server.registry.load("price").predict(fixtures.numeric_table(x))
    np.testing.assert_array_equal(green.as_numpy("prediction"), expected["prediction"].to_numpy())


# -- refusals ----------------------------------------------------------------------------------


def _json_tensor(name: str, values: np.ndarray, datatype: str = "FP64") -> dict[str, Any]:
    return {
        "name": name,
        "shape": list(values.shape),
        "datatype": datatype,
        "data": values.tolist(),
    }


def test_bad_requests_are_invalid_argument_with_https_messages(server: Server) -> None:
    x, _ = fixtures.numeric_data(2, seed=26)
    narrow = grpcclient.InferInput("input__0", [2, 4], "FP64")
    narrow.set_data_from_numpy(np.ascontiguousarray(x[:, :4]))
    texts = []
    for name in fixtures.FEATURES:
        tensor = grpcclient.InferInput(name, [2], "BYTES")
        tensor.set_data_from_numpy(np.array([b"abc", b"def"], dtype=object))
        texts.append(tensor)
    cases = [
        ([narrow], [_json_tensor("input__0", x[:, :4])]),
        (texts, [_json_tensor(n, np.array(["abc", "def"]), "BYTES") for n in fixtures.FEATURES]),
        (features(x)[:4], [_json_tensor(n, x[:, i]) for i, n in enumerate(fixtures.FEATURES[:4])]),
    ]
    messages = []
    for tensors, json_inputs in cases:
        status, message = refused(lambda t=tensors: server.triton.infer("lr", t, headers=WITH_KEY))
        http = server.http.post("/v2/models/lr/infer", json={"inputs": json_inputs})
        assert (status, http.status_code) == ("StatusCode.INVALID_ARGUMENT", 422)
        assert message == http.json()["error"]
        messages.append(message)
    assert messages == [
        "input tensor 'input__0': has 4 columns; the model takes 5 (f0, f1, f2, f3, f4)",
        "column 'f0' must be double, got 'abc' at row 0",
        "missing column 'f4'",
    ]


def test_raw_contents_of_the_wrong_length_are_refused_naming_the_tensor(server: Server) -> None:
    request = service_pb2.ModelInferRequest(model_name="lr")
    request.inputs.add(name="input__0", datatype="FP64", shape=[1, 5])
    request.raw_input_contents.append(b"\0" * 32)
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.ModelInfer(request, metadata=tuple(WITH_KEY.items()))
    assert (caught.value.code(), caught.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "input tensor 'input__0': raw contents of 32 bytes; shape [1, 5] of FP64 is 40 bytes",
    )


def test_an_unknown_model_is_not_found_as_over_http(server: Server) -> None:
    x, _ = fixtures.numeric_data(1)
    status, message = refused(lambda: server.triton.infer("nope", features(x), headers=WITH_KEY))
    http = server.http.post("/v2/models/nope/infer", json={"inputs": [_json_tensor("x", x)]})
    assert (status, message) == ("StatusCode.NOT_FOUND", http.json()["error"])
    assert message == "model 'nope' is not registered"


def test_a_model_failure_is_internal_with_its_message_and_an_error_id(server: Server) -> None:
    x, _ = fixtures.numeric_data(1)
    request = service_pb2.ModelInferRequest(model_name="broken")
    request.inputs.add(name="x", datatype="FP64", shape=[1, 5]).contents.fp64_contents.extend(
        x.ravel().tolist()
    )
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.ModelInfer(request, metadata=tuple(WITH_KEY.items()))
    http = server.http.post("/v2/models/broken/infer", json={"inputs": [_json_tensor("x", x)]})
    assert (caught.value.code(), caught.value.details()) == (
        grpc.StatusCode.INTERNAL,
        http.json()["error"],
    )
    trailers = dict(caught.value.trailing_metadata())
    assert len(trailers["error-id"]) == 32


def test_concurrent_calls_each_get_the_answer_to_their_own_row(server: Server) -> None:
    """Calls in flight together share micro-batches: each still gets its own row's answer."""
    x, _ = fixtures.numeric_data(48, seed=24)
    key = tuple(WITH_KEY.items())
    calls = [
        server.stub.ModelInfer.future(_matrix_request("lr", row[None, :]), metadata=key)
        for row in x
    ]
    answers = [call.result(timeout=30) for call in calls]
    expected = server.registry.load("lr").predict(fixtures.numeric_table(x))
    got = [np.frombuffer(answer.raw_output_contents[2], "<f8")[0] for answer in answers]
    np.testing.assert_array_equal(got, expected["proba_1"].to_numpy())


def test_a_call_past_its_deadline_is_counted_as_the_client_gone(server: Server) -> None:
    x, _ = fixtures.numeric_data(1)
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.ModelInfer(
            _matrix_request("sleepy", x), metadata=tuple(WITH_KEY.items()), timeout=0.2
        )
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    for _ in range(100):  # the server learns of the deadline a moment after the client
        if _client_gone(server) != 0:
            break
        time.sleep(0.05)
    assert _client_gone(server) == 1


def _client_gone(server: Server) -> float:
    """How many ModelInfer calls the server counted as their client gone (499)."""
    labels = {"route": "/inference.GRPCInferenceService/ModelInfer", "code": "499"}
    return sum(
        sample.value
        for family in text_string_to_metric_families(server.http.get("/metrics").text)
        for sample in family.samples
        if sample.name == "mmserve_requests_total" and labels.items() <= sample.labels.items()
    )


def _matrix_request(model: str, x: np.ndarray) -> Any:
    """A ModelInferRequest of ``x`` as one raw FP64 matrix."""
    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name="input__0", datatype="FP64", shape=list(x.shape))
    request.raw_input_contents.append(np.ascontiguousarray(x, "<f8").tobytes())
    return request


def test_a_message_over_the_payload_limit_is_resource_exhausted(server: Server) -> None:
    x = np.zeros((PAYLOAD_LIMIT // 40 + 1, 5))
    tensor = grpcclient.InferInput("input__0", list(x.shape), "FP64")
    tensor.set_data_from_numpy(x)
    status, _ = refused(lambda: server.triton.infer("lr", [tensor], headers=WITH_KEY))
    assert status == "StatusCode.RESOURCE_EXHAUSTED"


def test_inference_needs_the_api_key_as_metadata(server: Server) -> None:
    x, _ = fixtures.numeric_data(1)
    status, message = refused(lambda: server.triton.infer("lr", features(x)))
    http = server.http.post("/v2/models/lr/infer", headers={"authorization": ""}, json={})
    assert (status, message) == ("StatusCode.UNAUTHENTICATED", http.json()["error"])
    x_api_key = server.triton.infer("lr", features(x), headers={"x-api-key": KEY})
    assert x_api_key.as_numpy("label").shape == (1,)


# -- the repository extension --------------------------------------------------------------------


def test_the_repository_needs_the_admin_token(server: Server) -> None:
    triton = server.triton
    for headers in ({}, WITH_KEY, {"authorization": "Bearer wrong"}):
        status, message = refused(lambda h=headers: triton.get_model_repository_index(headers=h))
        assert (status, message) == (
            "StatusCode.UNAUTHENTICATED",
            "missing or wrong admin token: send 'Authorization: Bearer <token>'",
        )
        assert refused(lambda h=headers: triton.load_model("price", headers=h)) == (status, message)
        assert refused(lambda h=headers: triton.unload_model("price", headers=h)) == (
            status,
            message,
        )


def test_the_repository_index_load_and_unload(server: Server) -> None:
    triton = server.triton
    triton.unload_model("price", headers=ADMIN)
    index = {m["name"]: m for m in triton.get_model_repository_index(ADMIN, as_json=True)["models"]}
    assert index["price"] == {
        "name": "price",
        "version": "1",
        "state": "UNAVAILABLE",
        "reason": "unloaded",
    }
    http = server.http.post("/v2/repository/index", headers=ADMIN).json()
    names = ["broken", "lr", "mirror", "price", "sleepy"]
    assert sorted(index) == sorted(m["name"] for m in http) == names
    triton.load_model("price", headers=ADMIN)
    ready = triton.get_model_repository_index(ADMIN, as_json=True)["models"]
    assert {"name": "price", "version": "1", "state": "READY"} in ready
    # KServe's request names the model at field 1 (Triton's repository_name)
    server.stub.RepositoryModelUnload(
        service_pb2.RepositoryModelUnloadRequest(repository_name="price"),
        metadata=tuple(ADMIN.items()),
    )
    assert ready_once_asked(server, "price") is True
    status, message = refused(lambda: triton.unload_model("nope", headers=ADMIN))
    assert (status, message) == ("StatusCode.NOT_FOUND", "model 'nope' is not registered")
