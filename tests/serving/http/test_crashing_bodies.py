"""Bodies that crashed a native parser or blew up once decoded, sent to a real ``mmserve
serve``: each is refused, and the server goes on answering."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pyarrow as pa
import pytest

from serving import codecs
from tests.serving.http.conftest import Server, serving_test_models
from tests.serving.test_codecs_bounds import TOO_MANY_BYTES, parquet_bomb

ROW = json.dumps({f"f{i}": 0.5 * i for i in range(5)}).encode() + b"\n"
BLOCK = 1 << 20  # pyarrow's JSON reader's block


@pytest.fixture(scope="module")
def roomy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose payload limit takes a body of more than one 1 MiB block."""
    env = {"MMSERVE_MAX_PAYLOAD_BYTES": str(4 * BLOCK), "MMSERVE_MAX_DECODED_CELLS": "1000000"}
    with serving_test_models(tmp_path_factory, **env) as server:
        yield server


def null_at_second_block() -> tuple[bytes, int]:
    """The issue's body: 1 MiB of rows, then ``null`` starting the second block; and the
    number of that line."""
    rows = ROW * (BLOCK // len(ROW))
    return rows + b" " * (BLOCK - len(rows)) + b"null\n" + ROW * 100, BLOCK // len(ROW) + 1


@pytest.mark.slow
def test_a_null_line_at_a_blocks_start_is_a_400_and_the_server_lives_on(roomy: Server) -> None:
    body, line = null_at_second_block()
    headers = {"content-type": "application/jsonlines", "x-amzn-sagemaker-target-model": "lr"}
    response = roomy.client.post("/invocations", content=body, headers=headers)
    assert (response.status_code, response.json()["error"]) == (
        400,
        f"cannot read the application/jsonlines body: line {line} is not a JSON "
        "object (one object per line)",
    )
    assert roomy.client.get("/ping").status_code == 200
    good = roomy.client.post(
        "/invocations", content=ROW * 3, headers={**headers, "accept": "application/json"}
    )
    assert (good.status_code, len(good.json()["predictions"])) == (200, 3)


@pytest.mark.slow
def test_bodies_past_the_decode_bounds_are_a_413_in_every_protocol(roomy: Server) -> None:
    sagemaker = {"x-amzn-sagemaker-target-model": "lr"}
    bomb = {**sagemaker, "content-type": "application/x-parquet"}
    response = roomy.client.post("/invocations", content=parquet_bomb(), headers=bomb)
    assert (response.status_code, response.json()["error"]) == (413, TOO_MANY_BYTES)
    nulls = codecs.encode(pa.table({"f0": pa.nulls(2_000_000)}), codecs.ARROW)
    too_many = (
        "the body's rows, decoded, exceed the limit of 1000000 cells (MMSERVE_MAX_DECODED_CELLS)"
    )
    arrow = {"content-type": codecs.ARROW}
    routes = [("/invocations", {**sagemaker, **arrow}), ("/v1/models/lr:predict", arrow)]
    for path, headers in routes:
        response = roomy.client.post(path, content=nulls, headers=headers)
        assert (response.status_code, response.json()["error"]) == (413, too_many)
    assert roomy.client.get("/ping").status_code == 200
