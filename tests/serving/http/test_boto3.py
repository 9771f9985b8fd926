"""SageMaker's runtime as boto3's ``sagemaker-runtime`` client sees it, against a real
``mmserve serve``: errors it parses into its own exception classes, endpoint names that are
models, and the target-model header."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from serving.endpoints.catalog import Endpoints
from serving.endpoints.config import Endpoint, Variant
from serving.errors import (
    MissingColumn,
    MMServeError,
    ModelError,
    ModelLoading,
    ModelNotFound,
    ModelTooLarge,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    StoreUnavailable,
    TamperedArtifact,
    UnsupportedFormat,
)
from serving.http._errors import sagemaker_error
from serving.registry import Registry
from serving.store import Store
from tests import fixtures
from tests.services import mmserve_server
from tests.serving.http.conftest import Server

ROW = [[0.5, -1.0, 2.0, 0.25, 1.5]]


def runtime(url: str) -> Any:
    """boto3's client of SageMaker's runtime, at ``url``, retrying nothing (an answer is
    seen as it was sent)."""
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )


@pytest.fixture(scope="module")
def rt(server: Server) -> Any:
    # An endpoint of the price model, applied in the store the server follows.
    endpoint = Endpoint(variants=[Variant(name="main", model="price")])
    Endpoints(server.registry.store).apply_one("houses", endpoint)
    return runtime(server.url)


def invoke(rt: Any, endpoint: str, rows: list[list[float]] = ROW, **kwargs: Any) -> Any:
    body = json.dumps(rows).encode()
    return rt.invoke_endpoint(
        EndpointName=endpoint, Body=body, ContentType="application/json", **kwargs
    )


def predictions(answer: dict[str, Any]) -> list[dict[str, Any]]:
    predicted: list[dict[str, Any]] = json.loads(answer["Body"].read())["predictions"]
    return predicted


def expected(server: Server, ref: str, rows: list[list[float]] = ROW) -> list[dict[str, Any]]:
    return server.registry.load(ref).predict(fixtures.numeric_table(np.array(rows))).to_pylist()


def error_of(caught: pytest.ExceptionInfo[ClientError]) -> tuple[int, dict[str, str]]:
    response = caught.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]


def test_a_request_that_does_not_fit_is_a_validation_error(server: Server, rt: Any) -> None:
    with pytest.raises(rt.exceptions.ValidationError) as caught:
        rt.invoke_endpoint(EndpointName="lr", Body=b"1,2,3,4,x\n", ContentType="text/csv")
    assert error_of(caught) == (
        400,
        {"Code": "ValidationError", "Message": "column 'f4' must be double, got 'x' at row 0"},
    )
    with pytest.raises(rt.exceptions.ValidationError) as caught:
        rt.invoke_endpoint(EndpointName="lr", Body=b"1", ContentType="text/plain")
    assert error_of(caught) == (
        415,
        {
            "Code": "ValidationError",
            "Message": "unsupported format 'text/plain'; use one of text/csv, application/json, "
            "application/jsonlines, application/x-parquet, application/vnd.apache.arrow.stream",
        },
    )


def test_a_model_that_raises_is_a_model_error_with_its_original_status(
    server: Server, rt: Any
) -> None:
    message = "model broken:1 failed: RuntimeError: weights are corrupt"
    with pytest.raises(rt.exceptions.ModelError) as caught:
        invoke(rt, "broken")
    assert error_of(caught) == (424, {"Code": "ModelError", "Message": message})
    response = caught.value.response
    assert (response["OriginalStatusCode"], response["OriginalMessage"]) == (500, message)


def test_a_model_name_is_an_endpoint_of_one_variant(server: Server, rt: Any) -> None:
    answer = invoke(rt, "price")
    assert predictions(answer) == expected(server, "price")
    assert answer["ResponseMetadata"]["HTTPHeaders"]["x-mmserve-model"] == "price:1"
    assert predictions(invoke(rt, "lr@staging")) == expected(server, "lr:2")


def test_the_target_model_picks_the_model_where_no_endpoint_is_applied(
    server: Server, rt: Any
) -> None:
    # The server stands for a multi-model endpoint, as on /invocations.
    answer = invoke(rt, "models", TargetModel="lr.tar.gz")
    assert predictions(answer) == expected(server, "lr")
    assert predictions(invoke(rt, "price", TargetModel="lr:2")) == expected(server, "lr:2")


def test_an_applied_endpoint_answers_with_its_variant_and_refuses_a_target_model(
    server: Server, rt: Any
) -> None:
    answer = invoke(rt, "houses")
    assert (answer["InvokedProductionVariant"], predictions(answer)) == (
        "main",
        expected(server, "price"),
    )
    with pytest.raises(rt.exceptions.ValidationError) as caught:
        invoke(rt, "houses", TargetModel="lr")
    assert error_of(caught) == (
        400,
        {
            "Code": "ValidationError",
            "Message": "X-Amzn-SageMaker-Target-Model 'lr' on endpoint 'houses': it is not a "
            "multi-model endpoint, its variants (main) fix its models; pin a variant with "
            "X-Amzn-SageMaker-Target-Variant, or invoke the model by its own name",
        },
    )


def test_a_name_of_no_endpoint_and_no_model_is_a_validation_error(server: Server, rt: Any) -> None:
    with pytest.raises(rt.exceptions.ValidationError) as caught:
        invoke(rt, "ghost")
    status, error = error_of(caught)
    assert (status, error["Code"]) == (404, "ValidationError")
    assert error["Message"].startswith("endpoint 'ghost' does not exist (endpoints: ")
    assert "houses" in error["Message"]


# -- a server whose models load slowly and answer late ----------------------------------------


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    store_dir = tmp_path_factory.mktemp("boto3-slow")
    registry = Registry(Store.from_url(str(store_dir)))
    x, y = fixtures.numeric_data(10)
    pickled: dict[str, Any] = {"flavor": "sklearn-pickle", "trust_pickle": True}
    registry.register(fixtures.SlowLoadingModel(load_seconds=5.0).fit(x, y), "lazy", **pickled)
    registry.register(fixtures.SlowModel(5.0).fit(x, y), "sleepy", **pickled)
    env = {
        "MMSERVE_STORE_URL": str(store_dir),
        "MMSERVE_REQUEST_TIMEOUT_S": "1",
        "MMSERVE_MODEL_LOAD_WAIT_S": "0.5",
        "PYTHONPATH": os.getcwd(),  # the server unpickles tests.fixtures models
    }
    with mmserve_server(env) as url:
        yield runtime(url)


@pytest.mark.slow
def test_a_model_still_loading_is_model_not_ready_with_retry_after(slow: Any) -> None:
    with pytest.raises(slow.exceptions.ModelNotReadyException) as caught:
        invoke(slow, "lazy")
    assert error_of(caught) == (
        429,
        {
            "Code": "ModelNotReadyException",
            "Message": "model lazy is still loading after 0.5 s; retry shortly",
        },
    )
    assert caught.value.response["ResponseMetadata"]["HTTPHeaders"]["retry-after"] == "1"


@pytest.mark.slow
def test_a_model_past_the_timeout_is_a_model_error_of_status_504(slow: Any) -> None:
    # As SageMaker answers a container that did not answer in time.
    message = "the request took longer than the 1 s limit"
    with pytest.raises(slow.exceptions.ModelError) as caught:
        for _ in range(150):  # its first load (importing libraries) may outlast the load wait
            try:
                invoke(slow, "sleepy")
            except slow.exceptions.ModelNotReadyException:
                time.sleep(0.2)
                continue
            break
    assert error_of(caught) == (424, {"Code": "ModelError", "Message": message})
    response = caught.value.response
    assert (response["OriginalStatusCode"], response["OriginalMessage"]) == (504, message)


@pytest.mark.parametrize(
    ("err", "answer"),
    [
        (ModelError("m:1", RuntimeError("x")), (424, "ModelError")),
        (RequestTimeout(60), (424, "ModelError")),
        (ModelLoading("m:1", 30), (429, "ModelNotReadyException")),
        (Overloaded("model 'm'", 8), (503, "ServiceUnavailable")),
        (StoreUnavailable("s3://b", OSError("refused")), (503, "ServiceUnavailable")),
        (TamperedArtifact("k", "a", "b"), (500, "InternalFailure")),
        (ModelTooLarge("m:1", 2, 1), (507, "InternalFailure")),
        (MissingColumn("f0"), (400, "ValidationError")),
        (UnsupportedFormat("text/plain", ["text/csv"]), (415, "ValidationError")),
        (PayloadTooLarge(1), (413, "ValidationError")),
        (ModelNotFound("m"), (404, "ValidationError")),
    ],
)
def test_every_error_has_sagemakers_status_and_type(
    err: MMServeError, answer: tuple[int, str]
) -> None:
    assert sagemaker_error(err) == answer
