"""A model whose answers are typed (a string label, an int code, a float score, an embedding
of 4 float32 values, a list of ints of any length), served by a real ``mmserve serve``: each
protocol answers each output in its type (V1 and SageMaker JSON, a V2 ``[N, 4]`` tensor to a
standard client, CSV columns ``embedding_0..3``), and V2 metadata says so."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import tritonclient.http as triton

from serving import codecs
from tests import fixtures
from tests.serving.http.conftest import Server

XS = [1.5, -2.0, 0.25]
ANSWERS = fixtures.typed_answers(XS)
CSV_VALUES = (
    '"spam",2,0.75,1.5,3,-1.5,0.375,"[0]"\n'
    '"ham",0,-1,-2,-4,2,-0.5,"[0,1]"\n'
    '"spam",2,0.125,0.25,0.5,-0.25,0.0625,"[]"\n'
)
CSV_HEADER = (
    '"label","code","score","embedding_0","embedding_1","embedding_2","embedding_3","tokens"\n'
)


@pytest.fixture(scope="module")
def typed(server: Server, tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = fixtures.typed_model(Path(tmp_path_factory.mktemp("typed")) / "typed")
    server.registry.register(folder, "typed", trust_code=True)
    return "typed"


def test_the_models_answers_in_process(server: Server, typed: str) -> None:
    answered = server.registry.load(typed).predict(pa.table({"x": XS}))
    assert answered.to_pylist() == ANSWERS
    assert ANSWERS[1] == {
        "label": "ham",
        "code": 0,
        "score": -1.0,
        "embedding": [-2.0, -4.0, 2.0, -0.5],
        "tokens": [0, 1],
    }


def test_v1_answers_strings_ints_and_arrays(server: Server, typed: str) -> None:
    response = server.client.post(
        f"/v1/models/{typed}:predict", json={"instances": [{"x": x} for x in XS]}
    )
    assert response.status_code == 200, response.text
    assert (
        response.content
        == json.dumps(
            {"predictions": ANSWERS, "model": "typed", "version": 1}, separators=(",", ":")
        ).encode()
    )
    arrow = server.client.post(
        f"/v1/models/{typed}:predict",
        json={"instances": [[x] for x in XS]},
        headers={"accept": codecs.ARROW},
    )
    table = codecs.decode(arrow.content, codecs.ARROW)
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 4)
    assert table.to_pylist() == ANSWERS


V2_OUTPUTS = [
    {"name": "label", "shape": [3], "datatype": "BYTES", "data": ["spam", "ham", "spam"]},
    {"name": "code", "shape": [3], "datatype": "INT64", "data": [2, 0, 2]},
    {"name": "score", "shape": [3], "datatype": "FP64", "data": [0.75, -1.0, 0.125]},
    {
        "name": "embedding",
        "shape": [3, 4],
        "datatype": "FP32",
        "data": [1.5, 3.0, -1.5, 0.375, -2.0, -4.0, 2.0, -0.5, 0.25, 0.5, -0.25, 0.0625],
    },
    {"name": "tokens", "shape": [3], "datatype": "BYTES", "data": ["[0]", "[0,1]", "[]"]},
]


def test_v2_json_has_each_outputs_datatype_and_the_embedding_as_n_by_4(
    server: Server, typed: str
) -> None:
    request = {"id": "7", "inputs": [{"name": "x", "shape": [3], "datatype": "FP64", "data": XS}]}
    response = server.client.post(f"/v2/models/{typed}/infer", content=json.dumps(request))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "model_name": "typed",
        "model_version": "1",
        "id": "7",
        "outputs": V2_OUTPUTS,
    }


def test_a_standard_v2_client_reads_typed_binary_tensors(server: Server, typed: str) -> None:
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    tensor = triton.InferInput("x", [3], "FP64")
    tensor.set_data_from_numpy(np.array(XS))  # binary by default, and every output too
    result = client.infer(typed, [tensor])
    embedding = result.as_numpy("embedding")
    assert (embedding.dtype, embedding.shape) == (np.float32, (3, 4))
    np.testing.assert_array_equal(
        embedding, np.array([a["embedding"] for a in ANSWERS], np.float32)
    )
    assert result.as_numpy("label").tolist() == [b"spam", b"ham", b"spam"]
    code = result.as_numpy("code")
    assert (code.dtype, code.tolist()) == (np.int64, [2, 0, 2])
    assert result.as_numpy("score").tolist() == [0.75, -1.0, 0.125]
    assert result.as_numpy("tokens").tolist() == [b"[0]", b"[0,1]", b"[]"]
    assert [o["shape"] for o in result.get_response()["outputs"]] == [[3], [3], [3], [3, 4], [3]]


def test_v2_metadata_and_config_give_datatypes_and_shapes(server: Server, typed: str) -> None:
    outputs = [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "code", "datatype": "INT64", "shape": [-1]},
        {"name": "score", "datatype": "FP64", "shape": [-1]},
        {"name": "embedding", "datatype": "FP32", "shape": [-1, 4]},
        {"name": "tokens", "datatype": "BYTES", "shape": [-1]},
    ]
    metadata = server.client.get(f"/v2/models/{typed}")
    assert metadata.json() == {
        "name": "typed",
        "versions": ["1"],
        "platform": "python",
        "inputs": [{"name": "x", "datatype": "FP64", "shape": [-1]}],
        "outputs": outputs,
    }
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.get_model_metadata(typed)["outputs"] == outputs
    config = server.client.get(f"/v2/models/{typed}/config").json()
    assert config["output"] == [
        {"name": "label", "data_type": "TYPE_STRING", "dims": [-1]},
        {"name": "code", "data_type": "TYPE_INT64", "dims": [-1]},
        {"name": "score", "data_type": "TYPE_FP64", "dims": [-1]},
        {"name": "embedding", "data_type": "TYPE_FP32", "dims": [-1, 4]},
        {"name": "tokens", "data_type": "TYPE_STRING", "dims": [-1]},
    ]


def invoke(server: Server, body: bytes, content_type: str, accept: str) -> bytes:
    headers = {
        "content-type": content_type,
        "accept": accept,
        "x-amzn-sagemaker-target-model": "typed",
    }
    response = server.client.post("/invocations", content=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.content


def test_sagemaker_answers_json_csv_json_lines_and_parquet(server: Server, typed: str) -> None:
    rows = json.dumps([{"x": x} for x in XS]).encode()
    assert json.loads(invoke(server, rows, codecs.JSON, codecs.JSON)) == {"predictions": ANSWERS}
    headerless = "".join(f"{x}\n" for x in XS).encode()
    assert invoke(server, headerless, codecs.CSV, codecs.CSV).decode() == CSV_VALUES
    lines = invoke(server, rows, codecs.JSON, codecs.JSONL).decode().splitlines()
    assert [json.loads(line) for line in lines] == ANSWERS
    parquet = codecs.decode(invoke(server, rows, codecs.JSON, codecs.PARQUET), codecs.PARQUET)
    assert parquet.schema.field("embedding").type.list_size == 4
    assert parquet.to_pylist() == ANSWERS


def test_an_async_csv_answer_has_the_embeddings_columns(server: Server, typed: str) -> None:
    body = ("x\n" + "".join(f"{x}\n" for x in XS)).encode()
    answers = {}
    for accept in (codecs.CSV, codecs.JSON):
        submitted = server.client.post(
            f"/v1/models/{typed}/async",
            content=body,
            headers={"content-type": codecs.CSV, "accept": accept},
        )
        assert submitted.status_code == 202, submitted.text
        job = submitted.json()
        deadline = time.monotonic() + 20
        while server.client.get(job["status_url"]).json()["status"] != "succeeded":
            assert time.monotonic() < deadline, "the job did not succeed in time"
            time.sleep(0.05)
        answers[accept] = server.client.get(job["result_url"]).content
    assert answers[codecs.CSV].decode() == CSV_HEADER + CSV_VALUES
    assert json.loads(answers[codecs.JSON]) == {"predictions": ANSWERS}
