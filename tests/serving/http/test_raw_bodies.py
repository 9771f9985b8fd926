"""A body that is no table (an image, a text) is the one row of a model whose one input takes
it, on a real ``mmserve serve``: ``/invocations`` and ``/endpoints/{name}/invocations``."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serving.endpoints import capture
from serving.registry import Registry
from serving.store import Store
from tests import fixtures
from tests.services import mmserve_server

FILES = """\
    import hashlib

    import pyarrow as pa


    class Digest:
        def load(self, path):
            pass

        def predict(self, table):
            files = table.column(0).to_pylist()
            return pa.table({
                "size": pa.array([len(f) for f in files], pa.int64()),
                "sha256": [hashlib.sha256(f).hexdigest() for f in files],
            })


    class Words:
        def load(self, path):
            pass

        def predict(self, table):
            words = [len(text.split()) for text in table["text"].to_pylist()]
            return pa.table({"words": pa.array(words, pa.int64())})


    class Mirror:
        def load(self, path):
            pass

        def predict(self, table):
            return pa.table({"image": [f[::-1] for f in table["image"].to_pylist()]})
"""
MANIFESTS = {
    "digest": """\
        model = "files:Digest"
        [inputs]
        scan = { type = "binary", content_type = "image/*" }
        [outputs]
        size = "int64"
        sha256 = "string"
    """,
    "words": """\
        model = "files:Words"
        [inputs]
        text = "string"
        [outputs]
        words = "int64"
    """,
    "mirror": """\
        model = "files:Mirror"
        [inputs]
        image = "binary"
        [outputs]
        image = { type = "binary", content_type = "image/png" }
    """,
}
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3  # not a whole image: the model only hashes it
ENDPOINTS = """\
endpoints:
  scans:
    variants: [{name: main, model: digest:1}]
    capture: {sample: 1.0}
"""
TABLES = (
    "text/csv, application/json, application/jsonlines, application/x-parquet, "
    "application/vnd.apache.arrow.stream"
)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("raw")


@pytest.fixture(scope="module")
def client(root: Path) -> Iterator[httpx.Client]:
    registry = Registry(Store.from_url(str(root / "store")))
    register_file_models(registry, root, *MANIFESTS)
    registry.register(fixtures.logistic(), "lr")
    (root / "endpoints.yaml").write_text(ENDPOINTS)
    env = {
        "MMSERVE_STORE_URL": str(root / "store"),
        "MMSERVE_ENDPOINTS": str(root / "endpoints.yaml"),
        "MMSERVE_DEPLOYMENT__CAPTURE_FLUSH_S": "0.2",
        "PYTHONPATH": os.getcwd(),
    }
    with mmserve_server(env) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def register_file_models(registry: Registry, root: Path, *names: str) -> None:
    """Register the file models ``names`` (of :data:`MANIFESTS`, their code :data:`FILES`),
    each from its folder under ``root``."""
    for name in names:
        folder = fixtures.code_folder(root, name, MANIFESTS[name], **{"files.py": FILES})
        registry.register(folder, name, trust_code=True)


def invoke(
    client: httpx.Client, model: str, body: bytes, content_type: str, **headers: str
) -> httpx.Response:
    headers = {"content-type": content_type, "x-amzn-sagemaker-target-model": model, **headers}
    return client.post("/invocations", content=body, headers=headers)


def test_a_file_is_the_one_row_of_a_model_of_one_binary_input(client: httpx.Client) -> None:
    response = invoke(client, "digest", PNG, "image/png")
    assert (response.status_code, response.headers["content-type"]) == (200, "application/json")
    assert response.json() == {
        "predictions": [{"size": len(PNG), "sha256": hashlib.sha256(PNG).hexdigest()}]
    }
    # the same through an endpoint's route (a model's name: an endpoint of one variant)
    same = client.post(
        "/endpoints/digest/invocations", content=PNG, headers={"content-type": "image/png"}
    )
    assert (same.status_code, same.json()) == (200, response.json())
    # and answered in another table format when asked
    csv = invoke(client, "digest", PNG, "image/png", accept="text/csv")
    assert csv.text == f'{len(PNG)},"{hashlib.sha256(PNG).hexdigest()}"\n'


def test_a_text_is_the_one_row_of_a_model_of_one_string_input(client: httpx.Client) -> None:
    response = invoke(client, "words", b"un deux trois quatre", "text/plain; charset=utf-8")
    assert (response.status_code, response.json()) == (200, {"predictions": [{"words": 4}]})


def test_a_binary_output_is_the_answer_when_accepted(client: httpx.Client) -> None:
    for accept in ({}, {"accept": "image/png"}, {"accept": "image/*, application/json;q=0.5"}):
        response = invoke(client, "mirror", PNG, "application/octet-stream", **accept)
        assert (response.status_code, response.headers["content-type"]) == (200, "image/png")
        assert response.content == PNG[::-1]


@pytest.mark.parametrize(
    ("model", "body", "content_type", "status", "error"),
    [
        (
            "digest",
            b"%PDF-1.7",
            "application/pdf",
            415,
            f"unsupported format 'application/pdf'; use one of image/*, {TABLES}",
        ),
        (
            "words",
            PNG,
            "image/png",
            415,
            f"unsupported format 'image/png'; use one of text/*, {TABLES}",
        ),
        ("lr", PNG, "image/png", 415, f"unsupported format 'image/png'; use one of {TABLES}"),
        ("digest", b"", "image/png", 400, "cannot read the image/png body: the body is empty"),
        (
            "words",
            b"caf\xe9",
            "text/plain",
            400,
            "cannot read the text/plain body: it is not UTF-8 text (byte 3)",
        ),
        (
            "digest",
            PNG,
            "image png",
            415,
            "unsupported format 'image png'; use one of "
            f"{TABLES}, a file's media type (image/png...)",
        ),
    ],
)
def test_a_body_the_model_cannot_take_is_refused_naming_what_it_takes(
    client: httpx.Client, model: str, body: bytes, content_type: str, status: int, error: str
) -> None:
    response = invoke(client, model, body, content_type)
    assert (response.status_code, response.json()["message"]) == (status, error)


def test_the_schema_records_the_content_types(tmp_path: Path) -> None:
    registry = Registry(Store.from_url(str(tmp_path / "store")))
    register_file_models(registry, tmp_path, "digest", "mirror")
    digest = registry.get("digest")
    assert [(f.name, f.dtype, f.content_type) for f in digest.inputs] == [
        ("scan", "binary", "image/*")
    ]
    mirror = registry.get("mirror")
    assert (mirror.output_types, mirror.output_content_types) == (
        {"image": "binary"},
        {"image": "image/png"},
    )


def test_a_file_answers_alike_raw_and_as_a_v1_b64_cell(client: httpx.Client) -> None:
    raw = invoke(client, "digest", PNG, "image/png").json()["predictions"]
    cell = {"b64": base64.b64encode(PNG).decode()}
    v1 = client.post("/v1/models/digest:predict", json={"instances": [{"scan": cell}]})
    assert (v1.status_code, v1.json()["predictions"]) == (200, raw)


def test_a_binary_output_is_base64_in_json_when_json_is_asked(client: httpx.Client) -> None:
    response = invoke(client, "mirror", PNG, "image/png", accept="application/json")
    assert (response.status_code, response.headers["content-type"]) == (200, "application/json")
    expected = {"image": {"b64": base64.b64encode(PNG[::-1]).decode()}}
    assert response.json() == {"predictions": [expected]}


def test_an_endpoint_takes_a_file_and_captures_it_as_base64(
    client: httpx.Client, root: Path
) -> None:
    response = client.post(
        "/endpoints/scans/invocations", content=PNG, headers={"content-type": "image/png"}
    )
    assert (response.status_code, response.headers["x-mmserve-model"]) == (200, "digest:1")
    assert response.json() == invoke(client, "digest", PNG, "image/png").json()
    store = Store.from_url(str(root / "store"))
    deadline = time.monotonic() + 20
    while (captured := capture.read(store, "scans")).num_rows == 0:
        assert time.monotonic() < deadline, "nothing captured"
        time.sleep(0.1)
    record = captured.to_pylist()[0]
    assert json.loads(record["input"]) == {"scan": {"b64": base64.b64encode(PNG).decode()}}
    assert json.loads(record["output"]) == response.json()["predictions"][0]
