"""What a real ``mmserve serve`` says of rows that do not fit, and ``mmserve predict`` of a
file it cannot read: the column, the row and the problem (the offending value, never more
of the body), each as a 4xx."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.linear_model import LogisticRegression

from serving import codecs
from tests.serving.http.conftest import Server, serving_test_models

MMSERVE = os.path.join(os.path.dirname(sys.executable), "mmserve")
BIG = 2**70  # past int64


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The test models, and ``visits``: an int64 column (``visits``) and a double one."""
    with serving_test_models(tmp_path_factory) as server:
        rng = np.random.default_rng(7)
        visits = rng.integers(0, 50, 200)
        frame = pd.DataFrame({"visits": visits, "spend": rng.normal(100, 30, 200)})
        model = LogisticRegression().fit(frame, frame["spend"] > 100)
        server.registry.register(model, "visits", input_example=frame.head(5))
        yield server


def error(response: object) -> tuple[int, str]:
    return response.status_code, response.json()["error"]  # type: ignore[attr-defined]


def sagemaker(server: Server, body: bytes, target: str) -> tuple[int, str]:
    headers = {"Content-Type": "text/csv", "X-Amzn-SageMaker-Target-Model": target}
    return error(server.client.post("/invocations", content=body, headers=headers))


def v2(server: Server, model: str, *tensors: dict[str, object]) -> tuple[int, str]:
    body = json.dumps({"inputs": list(tensors)}).replace("Infinity", "1e400")
    response = server.client.post(
        f"/v2/models/{model}/infer", content=body, headers={"Content-Type": "application/json"}
    )
    return error(response)


def test_a_csv_header_row_missing_a_column_names_it(server: Server) -> None:
    assert sagemaker(server, b"f0,f1,f2,f3\n1,2,3,4\n", "lr") == (400, "missing column 'f4'")
    assert sagemaker(server, b"f4,f0,f1,f3\n1,2,3,4\n", "lr") == (400, "missing column 'f2'")


def test_an_integer_past_int64_is_out_of_range_not_mixed(server: Server) -> None:
    positional = {"instances": [[1, 2, 3, 4, 5], [1, 2, 3, 4, BIG]]}
    by_name = {"instances": [{"visits": 1, "spend": 2.0}, {"visits": -BIG, "spend": 2.0}]}
    for model, body, column in (("lr", positional, "f4"), ("visits", by_name, "visits")):
        answer = server.client.post(f"/v1/models/{model}:predict", json=body)
        shown = str(BIG if column == "f4" else -BIG)
        assert error(answer) == (
            422,
            f"column {column!r} has {shown}, out of range for int64, at row 1",
        )


def test_a_number_past_float64_in_a_v2_tensor_is_out_of_range(server: Server) -> None:
    inf = float("inf")  # sent as 1e400 (see v2())
    matrix = {"name": "input0", "shape": [2, 5], "datatype": "FP64",
              "data": [1, 2, 3, 4, 5, 1, 2, 3, inf, 5]}  # fmt: skip
    assert v2(server, "lr", matrix) == (
        422,
        "column 'f3' has 1e400, out of range for double, at row 1",
    )
    by_feature = [
        {"name": "visits", "shape": [3], "datatype": "FP64", "data": [1, 2, inf]},
        {"name": "spend", "shape": [3], "datatype": "FP64", "data": [1, 2, 3]},
    ]
    assert v2(server, "visits", *by_feature) == (
        422,
        "column 'visits' has 1e400, out of range for double, at row 2",
    )


def test_a_30_digit_csv_number_is_out_of_range_for_an_int64_column(server: Server) -> None:
    body = b"visits,spend\n1,2.0\n123456789012345678901234567890,1.0\n"
    assert sagemaker(server, body, "visits") == (
        400,
        "column 'visits' has 1.2345678901234568e+29, out of range for int64, at row 1",
    )


def test_a_value_of_the_wrong_type_is_named_with_its_row(server: Server) -> None:
    body = b"visits,spend\n1,2.0\n2,3.0\n3,4.0\nabc,1.0\n"
    assert sagemaker(server, body, "visits") == (
        400,
        "column 'visits' must be int64, got 'abc' at row 3",
    )
    table = pa.table({"visits": [1.0, 2.0, 3.5], "spend": [1.0, 2.0, 3.0]})
    answer = server.client.post(
        "/v1/models/visits:predict",
        content=codecs.encode(table, codecs.ARROW),
        headers={"Content-Type": codecs.ARROW},
    )
    assert error(answer) == (422, "column 'visits' must be int64, got 3.5 at row 2")
    plans = ["basic", "pro", 3]
    rows = [{"age": 30, "income": 1.0, "plan": plan, "region": "north"} for plan in plans]
    answer = server.client.post("/v1/models/mixed:predict", json={"instances": rows})
    assert error(answer) == (
        422,
        "column 'plan' must be one type (numbers, strings or booleans), "
        "got a string then a number at row 2",
    )
    rows = [{"age": 30, "income": 1.0, "plan": None, "region": "north"}] * 3
    rows[2] = {**rows[2], "plan": 3}
    answer = server.client.post("/v1/models/mixed:predict", json={"instances": rows})
    assert error(answer) == (422, "column 'plan' must be string, got int64 at row 2")


def test_predict_names_a_file_it_cannot_read(server: Server, tmp_path: Path) -> None:
    env = {**os.environ, "MMSERVE_STORE_URL": server.registry.store.url}
    missing = tmp_path / "rows.csv"
    done = subprocess.run(
        [MMSERVE, "predict", "lr", "--input", str(missing)],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (
        1,
        f"error: cannot read {missing}: No such file or directory\n",
    )
    (tmp_path / "short.csv").write_text("f0,f1,f2,f3,f4\n1,2,3,4,5\n1,2\n")
    done = subprocess.run(
        [MMSERVE, "predict", "lr", "--input", str(tmp_path / "short.csv")],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: cannot read {tmp_path / 'short.csv'}: ")
