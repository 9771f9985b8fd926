"""SageMaker's /invocations contract over HTTP: formats, Accept, target model, error codes."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from serving import codecs
from tests import fixtures
from tests.serving.http.conftest import Server

LR = {"x-amzn-sagemaker-target-model": "lr"}


def invoke(
    server: Server, body: bytes, content_type: str, accept: str | None = None, target: str = "lr"
):  # type: ignore[no-untyped-def]
    headers = {"content-type": content_type, "x-amzn-sagemaker-target-model": target}
    if accept:
        headers["accept"] = accept
    return server.client.post("/invocations", content=body, headers=headers)


def expected(server: Server, x: np.ndarray, ref: str = "lr") -> pa.Table:
    return server.registry.load(ref).predict(fixtures.numeric_table(x))


def test_headerless_csv_in_csv_out(server: Server) -> None:
    x, _ = fixtures.numeric_data(5, seed=21)
    body = "\n".join(",".join(repr(v) for v in row) for row in x.tolist()).encode()
    response = invoke(server, body, "text/csv")
    assert (response.status_code, response.headers["content-type"]) == (
        200,
        "text/csv; charset=utf-8",
    )
    assert response.headers["x-mmserve-model"] == "lr:1"
    rows = [line.split(",") for line in response.text.strip().splitlines()]
    want = expected(server, x)
    assert [int(r[0]) for r in rows] == want["label"].to_pylist()
    assert [float(r[2]) for r in rows] == want["proba_1"].to_pylist()


def test_csv_with_a_header_row_and_json_accept(server: Server) -> None:
    x, _ = fixtures.numeric_data(4, seed=22)
    body = codecs.encode(fixtures.numeric_table(x), codecs.CSV)
    response = invoke(server, body, "text/csv", accept="application/json")
    assert response.json() == {"predictions": expected(server, x).to_pylist()}


def test_parquet_in_parquet_out(server: Server) -> None:
    x, _ = fixtures.numeric_data(16, seed=23)
    response = invoke(
        server, codecs.encode(fixtures.numeric_table(x), codecs.PARQUET), codecs.PARQUET
    )
    assert codecs.decode(response.content, codecs.PARQUET).equals(expected(server, x))


@pytest.mark.parametrize("shape", ["records", "lists", "instances"])
def test_json_bodies(server: Server, shape: str) -> None:
    x, _ = fixtures.numeric_data(3, seed=24)
    records = fixtures.numeric_table(x).to_pylist()
    document = {"records": records, "lists": x.tolist(), "instances": {"instances": x.tolist()}}[
        shape
    ]
    response = invoke(server, json.dumps(document).encode(), "application/json")
    assert response.json() == {"predictions": expected(server, x).to_pylist()}


def test_json_lines_in_and_out(server: Server) -> None:
    x, _ = fixtures.numeric_data(3, seed=25)
    body = "\n".join(json.dumps(r) for r in fixtures.numeric_table(x).to_pylist()).encode()
    response = invoke(server, body, "application/jsonlines", accept="application/jsonlines")
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines == expected(server, x).to_pylist()


def test_the_target_model_header_picks_the_model(server: Server) -> None:
    x, _ = fixtures.numeric_data(2, seed=26)
    response = invoke(
        server, json.dumps(x.tolist()).encode(), "application/json", target="price.tar.gz"
    )
    assert response.json() == {"predictions": expected(server, x, "price").to_pylist()}


@pytest.mark.parametrize(
    ("body", "content_type", "target", "status", "error"),
    [
        (
            b"1,2\n",
            "text/csv",
            "lr",
            400,
            "cannot read the text/csv body: "
            "rows have 2 values; the model takes 5 (f0, f1, f2, f3, f4), "
            "or send a header row naming them",
        ),
        (b"1,2,3,4,x\n", "text/csv", "lr", 400, "column 'f4' must be double, got 'x' at row 0"),
        (b"", "text/csv", "lr", 400, "cannot read the text/csv body: the body is empty"),
        (b"1,2,3,4,5\n", "text/csv", "ghost", 404, "model 'ghost' is not registered"),
        (
            b"[[0,0,0,0,0]]",
            "application/json",
            "broken",
            424,
            "model broken:1 failed: RuntimeError: weights are corrupt",
        ),
        (
            b"\x80\x04.",
            "application/x-python-pickle",
            "lr",
            415,
            "unsupported format 'application/x-python-pickle'; "
            "use one of text/csv, application/json, "
            "application/jsonlines, application/x-parquet, application/vnd.apache.arrow.stream",
        ),
    ],
)
def test_errors_use_sagemakers_codes(
    server: Server, body, content_type, target, status, error
) -> None:
    response = invoke(server, body, content_type, target=target)
    answer = response.json()
    kind = "ModelError" if status == 424 else "ValidationError"
    want = {"error": error, "message": error, "__type": kind}  # SageMaker's SDKs read the last two
    if status == 424:  # the model failed: an id to find its traceback in the server log
        assert len(answer.pop("error_id")) == 32
        want |= {"OriginalStatusCode": 500, "OriginalMessage": error}
    assert (response.status_code, response.headers["x-amzn-errortype"], answer) == (
        status,
        kind,
        want,
    )


def test_without_a_target_model_several_models_need_naming(server: Server) -> None:
    response = server.client.post(
        "/invocations", content=b"1,2,3,4,5", headers={"content-type": "text/csv"}
    )
    assert response.status_code == 400
    assert "in X-Amzn-SageMaker-Target-Model" in response.json()["error"]


def test_json_lines_of_null_are_a_400_and_the_server_lives_on(server: Server) -> None:
    # pyarrow's JSON reader segfaulted on them, and took the server process with it.
    response = invoke(server, b"null\nnull\n", "application/jsonlines")
    assert (response.status_code, response.json()["error"]) == (
        400,
        (
            "cannot read the application/jsonlines body: "
            "line 1 is not a JSON object (one object per line)"
        ),
    )
    assert server.client.get("/ping").status_code == 200


def test_an_arrow_body_with_a_name_that_is_not_utf8_is_a_400(server: Server) -> None:
    x, _ = fixtures.numeric_data(3, seed=23)
    body = codecs.encode(fixtures.numeric_table(x), codecs.ARROW)
    damaged = body.replace(b"f1", b"\xff1", 1)  # a column name of invalid UTF-8: was a 500
    response = invoke(server, damaged, codecs.ARROW)
    assert response.status_code == 400
    assert response.json()["error"].startswith(
        "cannot read the application/vnd.apache.arrow.stream body: "
    )
