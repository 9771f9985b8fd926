"""Files through the Open Inference Protocol on a real ``mmserve serve`` (issue 19): a BYTES
tensor is a binary input's bytes, from tritonclient's binary extension or JSON base64, and a
binary output is a BYTES tensor of them."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient

from serving.registry import Registry
from serving.store import Store
from tests.services import mmserve_server
from tests.serving.http.test_raw_bodies import register_file_models

ALL_BYTES = bytes(range(256))
PNG = b"\x89PNG\r\n\x1a\n" + ALL_BYTES * 3  # not a whole image: the models only read bytes


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("v2-binary")
    registry = Registry(Store.from_url(str(root / "store")))
    register_file_models(registry, root, "digest", "mirror")
    env = {"MMSERVE_STORE_URL": str(root / "store"), "PYTHONPATH": os.getcwd()}
    with mmserve_server(env) as base:
        yield base


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def triton(url: str) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url.removeprefix("http://"))


def file_input(name: str, payload: bytes) -> httpclient.InferInput:
    tensor = httpclient.InferInput(name, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([payload], dtype=object), binary_data=True)
    return tensor


@pytest.mark.parametrize("payload", [ALL_BYTES, PNG, b"hello"])  # the last is UTF-8 text
def test_tritonclient_sends_a_file_as_its_exact_bytes(
    triton: httpclient.InferenceServerClient, payload: bytes
) -> None:
    result = triton.infer("digest", [file_input("scan", payload)])
    assert result.as_numpy("size").tolist() == [len(payload)]
    assert result.as_numpy("sha256").tolist() == [hashlib.sha256(payload).hexdigest().encode()]


def test_tritonclient_reads_a_binary_output_as_its_bytes(
    triton: httpclient.InferenceServerClient,
) -> None:
    outputs = [httpclient.InferRequestedOutput("image", binary_data=True)]
    result = triton.infer("mirror", [file_input("image", PNG)], outputs=outputs)
    image = result.as_numpy("image")
    assert (image.shape, image.tolist()) == ((1,), [PNG[::-1]])
    assert result.get_output("image")["datatype"] == "BYTES"


def test_json_base64_goes_in_and_comes_back(client: httpx.Client) -> None:
    request = {
        "inputs": [
            {
                "name": "image",
                "shape": [2],
                "datatype": "BYTES",
                "parameters": {"content_type": "base64"},
                "data": [base64.b64encode(PNG).decode(), "AAH/"],
            }
        ]
    }
    response = client.post("/v2/models/mirror/infer", json=request)
    assert (response.status_code, response.headers["content-type"]) == (200, "application/json")
    assert response.json() == {
        "model_name": "mirror",
        "model_version": "1",
        "outputs": [
            {
                "name": "image",
                "shape": [2],
                "datatype": "BYTES",
                "parameters": {"content_type": "base64"},
                "data": [base64.b64encode(PNG[::-1]).decode(), "/wEA"],
            }
        ],
    }


def test_json_base64_is_the_file_a_model_reads(client: httpx.Client) -> None:
    tensor = {"name": "scan", "shape": [1], "datatype": "BYTES", "data": ["AP8="]}
    request = {"inputs": [{**tensor, "parameters": {"content_type": "base64"}}]}
    response = client.post("/v2/models/digest/infer", json=request)
    assert response.status_code == 200
    assert response.json()["outputs"] == [
        {"name": "size", "shape": [1], "datatype": "INT64", "data": [2]},
        {
            "name": "sha256",
            "shape": [1],
            "datatype": "BYTES",
            "data": [hashlib.sha256(b"\x00\xff").hexdigest()],
        },
    ]


def test_a_bad_base64_element_is_refused_naming_tensor_and_element(client: httpx.Client) -> None:
    tensor = {"name": "scan", "shape": [2], "datatype": "BYTES", "data": ["AP8=", "abc$"]}
    request = {"inputs": [{**tensor, "parameters": {"content_type": "base64"}}]}
    response = client.post("/v2/models/digest/infer", json=request)
    assert (response.status_code, response.json()) == (
        422,
        {"error": "input tensor 'scan': element 1: 'abc$' is not base64"},
    )


def test_metadata_lists_binary_inputs_and_outputs_as_bytes(client: httpx.Client) -> None:
    digest = client.get("/v2/models/digest").json()
    assert (digest["inputs"], digest["outputs"]) == (
        [{"name": "scan", "datatype": "BYTES", "shape": [-1]}],
        [
            {"name": "size", "datatype": "INT64", "shape": [-1]},
            {"name": "sha256", "datatype": "BYTES", "shape": [-1]},
        ],
    )
    mirror = client.get("/v2/models/mirror").json()
    assert mirror["outputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
