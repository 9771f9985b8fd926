"""The digits example: PNG files of scikit-learn's digits read by the user's own code
(``digits-png``) then classified (``digits``), on a real ``mmserve serve``: a file sent raw,
the same as a V1 ``{"b64": ...}`` cell, the same as the pipeline in process."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tritonclient.http as triton
from PIL import Image
from sklearn.datasets import load_digits

from models import digits
from models.digits_png.png import decode, encode
from serving.endpoints.pipeline import Pipeline
from serving.errors import InvalidInput
from serving.registry import Registry
from serving.store import Store
from tests.services import mmserve_server
from tests.workers.streams import scored_by_a_stream

FILES = 50
CORRECT = 49  # of the first 50 held-out digits (deterministic: lbfgs, no randomness)
ENDPOINTS = f"""\
endpoints:
  {digits.ENDPOINT}:
    pipeline: [digits-png:1, digits:1]
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("digits")


@pytest.fixture(scope="module")
def registry(root: Path) -> Registry:
    registry = Registry(Store.from_url(str(root / "store")))
    reader, classifier = digits.register(registry)
    assert (reader.ref, reader.flavor, classifier.ref) == ("digits-png:1", "python", "digits:1")
    return registry


@pytest.fixture(scope="module")
def client(root: Path, registry: Registry) -> Iterator[httpx.Client]:
    (root / "endpoints.yaml").write_text(ENDPOINTS)
    env = {
        "MMSERVE_STORE_URL": str(root / "store"),
        "MMSERVE_ENDPOINTS": str(root / "endpoints.yaml"),
    }
    with mmserve_server(env) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def files(root: Path) -> list[bytes]:
    paths = digits.write_pngs(root / "pngs", FILES)
    truth = load_digits().target[1500 : 1500 + FILES]
    assert [p.name for p in paths] == [f"{1500 + i}-is-{d}.png" for i, d in enumerate(truth)]
    return [p.read_bytes() for p in paths]


def raw(client: httpx.Client, data: bytes) -> httpx.Response:
    path = f"/endpoints/{digits.ENDPOINT}/invocations"
    return client.post(path, content=data, headers={"content-type": "image/png"})


def v1(client: httpx.Client, images: list[bytes]) -> httpx.Response:
    instances = [{"image": {"b64": base64.b64encode(data).decode()}} for data in images]
    return client.post(f"/v1/endpoints/{digits.ENDPOINT}:predict", json={"instances": instances})


def in_process(registry: Registry, images: list[bytes]) -> list[dict[str, Any]]:
    pipeline = Pipeline([registry.load("digits-png:1"), registry.load("digits:1")])
    answer: list[dict[str, Any]] = pipeline.predict(
        pa.table({"image": pa.array(images)})
    ).to_pylist()
    return answer


def png(image: Image.Image) -> bytes:
    sink = io.BytesIO()
    image.save(sink, format="PNG")
    return sink.getvalue()


def test_every_digit_value_survives_the_png_exactly() -> None:
    pixels = load_digits().data
    assert all(np.array_equal(decode(encode(row)), row) for row in pixels)


def test_a_png_answers_alike_raw_as_v1_b64_and_in_process(
    client: httpx.Client, registry: Registry, files: list[bytes]
) -> None:
    local = in_process(registry, files)
    answers = []
    for data in files:
        response = raw(client, data)
        assert (response.status_code, response.headers["x-mmserve-model"]) == (
            200,
            "digits-png:1,digits:1",
        )
        answers += response.json()["predictions"]
    batch = v1(client, files)
    assert batch.status_code == 200
    assert answers == batch.json()["predictions"] == local
    assert list(local[0]) == ["label", *(f"proba_{d}" for d in range(10))]
    labels = digits.pngs(FILES)[1]
    assert sum(a["label"] == label for a, label in zip(answers, labels, strict=True)) == CORRECT


BAD_FILES: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "gif": (
        lambda _: png(Image.new("L", (8, 8))).replace(b"\x89PNG", b"GIF8", 1),
        "not a PNG file: it does not start with the PNG signature",
    ),
    "truncated": (lambda good: good[:60], "not a readable PNG file: image file is truncated"),
    "16x16": (
        lambda _: png(Image.new("L", (16, 16))),
        "the image is 16x16 pixels; the model reads 8x8",
    ),
}


@pytest.mark.parametrize("bad", BAD_FILES)
def test_a_file_that_is_no_8x8_png_is_refused_naming_the_problem(
    client: httpx.Client, registry: Registry, files: list[bytes], bad: str
) -> None:
    make, reason = BAD_FILES[bad]
    data = make(files[0])
    # The model refuses it (InvalidInput): the client's error, naming the row, never a 5xx:
    # SageMaker's 400 ValidationError on its routes, 422 elsewhere.
    response = raw(client, data)
    assert (response.status_code, response.json()["__type"]) == (400, "ValidationError")
    step = "step 1 (digits-png:1): "  # the pipeline's step that refused it
    assert response.json()["message"] == f"{step}row 0: {reason}"
    batch = v1(client, [files[1], data])
    assert (batch.status_code, batch.json()["error"]) == (422, f"{step}row 1: {reason}")
    with pytest.raises(InvalidInput) as raised:
        in_process(registry, [data])
    assert raised.value.message == f"{step}row 0: {reason}"


def test_the_reader_answers_alike_over_v2_bytes_through_tritonclient(
    client: httpx.Client, registry: Registry, files: list[bytes]
) -> None:
    """tritonclient sends the PNG files as a BYTES tensor in the binary extension, to the
    reader alone and to the endpoint's chain (an applied endpoint answers on the model
    routes); the chain's own V2 route takes them as base64 strings in JSON."""
    local = registry.load("digits-png:1").predict(pa.table({"image": pa.array(files)}))
    server = triton.InferenceServerClient(str(client.base_url).removeprefix("http://"))
    tensor = triton.InferInput("image", [len(files)], "BYTES")
    tensor.set_data_from_numpy(np.array(files, dtype=object), binary_data=True)
    answer = server.infer("digits-png", [tensor])
    for name in ("p0", "p27", "p63"):
        assert answer.as_numpy(name).tolist() == local.column(name).to_pylist()
    expected = in_process(registry, files)
    chain = server.infer(digits.ENDPOINT, [tensor])
    assert chain.as_numpy("label").tolist() == [row["label"] for row in expected]
    assert chain.as_numpy("proba_3").tolist() == [row["proba_3"] for row in expected]
    body = {
        "inputs": [
            {
                "name": "image",
                "shape": [len(files)],
                "datatype": "BYTES",
                "parameters": {"content_type": "base64"},
                "data": [base64.b64encode(f).decode() for f in files],
            }
        ]
    }
    chained = client.post(f"/v2/endpoints/{digits.ENDPOINT}/infer", json=body).json()
    labels = next(o for o in chained["outputs"] if o["name"] == "label")["data"]
    assert labels == [row["label"] for row in in_process(registry, files)]


def test_a_batch_over_a_folder_of_500_pngs_answers_as_in_process(
    registry: Registry, root: Path
) -> None:
    images = load_digits().images[:500]
    folder = root / "five-hundred"
    folder.mkdir()
    for i, image in enumerate(images):
        (folder / f"{i:04d}.png").write_bytes(encode(image.reshape(-1)))
    out = root / "scores"
    mmserve = str(Path(sys.executable).with_name("mmserve"))
    command = ["batch", "run", "--model", "digits-png:1,digits:1", "--format", "parquet"]
    done = subprocess.run(
        [mmserve, *command, "--input", str(folder), "--output", str(out)],
        env={**os.environ, "MMSERVE_STORE_URL": registry.store.url},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    table = pq.read_table(sorted(out.glob("part-*.parquet"))).sort_by("path")
    assert table.column("path").to_pylist() == [f"{i:04d}.png" for i in range(500)]
    files = [(folder / p).read_bytes() for p in table.column("path").to_pylist()]
    expected = in_process(registry, files)
    assert table.drop_columns(["path"]).to_pylist() == expected


@pytest.mark.slow
def test_a_stream_of_pngs_answers_as_in_process(
    registry: Registry, files: list[bytes], root: Path
) -> None:
    """Events carrying PNG files in base64, scored by a real ``mmserve stream`` of the chain."""
    cells = [base64.b64encode(f).decode() for f in files]
    events = [{"id": str(i), "image": cell} for i, cell in enumerate(cells)]
    chain = "digits-png:1,digits:1"
    answers = scored_by_a_stream(registry.store.url, chain, events, root / "stream.log")
    expected = in_process(registry, files)
    assert [int(a["label"]) for a in answers] == [row["label"] for row in expected]
    assert [float(a["proba_3"]) for a in answers] == [row["proba_3"] for row in expected]
