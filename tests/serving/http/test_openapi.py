"""The OpenAPI spec's examples are real: each request example is answered by the demo models
(``make demo``) as documented, and each response example is what they answer."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from models import churn, house_prices, register
from serving.http import _openapi
from serving.registry import Registry
from serving.store import Store
from tests.services import mmserve_server

ROUTES = {
    "v1": ("/v1/models/{model}:predict", _openapi.V1_PREDICT, _openapi.V1_RESPONSES),
    "v2": ("/v2/models/{model}/infer", _openapi.V2_INFER, _openapi.V2_RESPONSES),
    "sagemaker": ("/invocations", _openapi.SAGEMAKER_INVOCATIONS, _openapi.SAGEMAKER_RESPONSES),
}
# The spec's own example names a model "mymodel" and tensors no model here has.
REFUSED = {"oip_spec": "input tensor 'input1': has 1 values; shape [3] needs 3"}


def _examples() -> Iterator[Any]:
    for route, (_, extra, _) in ROUTES.items():
        for media_type, content in extra["requestBody"]["content"].items():
            for key, example in content.get("examples", {}).items():
                yield pytest.param(route, media_type, key, example, id=f"{route}-{key}")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    store = tmp_path_factory.mktemp("demo")
    registry = Registry(Store.from_url(str(store)))
    for recipe in (churn, house_prices):
        register(recipe, registry)
    with (
        mmserve_server({"MMSERVE_STORE_URL": str(store)}) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield client


def ask(demo: httpx.Client, route: str, media_type: str, example: dict[str, Any]) -> httpx.Response:
    named = re.search(r"\((\w+)\)$", example["summary"])  # "... (churn)"
    model = named.group(1) if named else "house_prices"
    value = example["value"]
    body = value.encode() if isinstance(value, str) else json.dumps(value).encode()
    headers = {"content-type": media_type, "x-amzn-sagemaker-target-model": model}
    return demo.post(ROUTES[route][0].format(model=model), content=body, headers=headers)


@pytest.mark.parametrize(("route", "media_type", "key", "example"), list(_examples()))
def test_every_request_example_is_answered(
    demo: httpx.Client, route: str, media_type: str, key: str, example: dict[str, Any]
) -> None:
    response = ask(demo, route, media_type, example)
    if key in REFUSED:
        assert (response.status_code, response.json()) == (422, {"error": REFUSED[key]})
    else:
        assert response.status_code == 200, response.text


def _request(route: str, media_type: str, key: str) -> dict[str, Any]:
    content = ROUTES[route][1]["requestBody"]["content"][media_type]
    return content["examples"][key]  # type: ignore[no-any-return]


def _answer(route: str, media_type: str, key: str | None = None) -> Any:
    content = ROUTES[route][2][200]["content"][media_type]
    return content["examples"][key]["value"] if key else content["example"]


@pytest.mark.parametrize(
    ("route", "media_type", "request_key", "answer_key"),
    [
        ("v1", "application/json", "by_position", "house_prices"),
        ("v1", "application/json", "by_name", "churn"),
        ("v2", "application/json", "matrix", None),
        ("sagemaker", "application/json", "rows", None),
    ],
)
def test_json_response_examples_are_the_answers(
    demo: httpx.Client, route: str, media_type: str, request_key: str, answer_key: str | None
) -> None:
    response = ask(demo, route, media_type, _request(route, media_type, request_key))
    assert _rounded(response.json()) == _rounded(_answer(route, media_type, answer_key))


def test_the_csv_response_example_is_the_answer(demo: httpx.Client) -> None:
    response = ask(demo, "sagemaker", "text/csv", _request("sagemaker", "text/csv", "headerless"))
    answer = _answer("sagemaker", "text/csv")
    assert _rounded(response.text.splitlines()) == _rounded(answer.splitlines())


def _rounded(value: Any) -> Any:
    """``value`` with its numbers to 9 digits: another scikit-learn build may change the last."""
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    if isinstance(value, str) and re.fullmatch(r"-?\d+\.\d+", value):
        value = float(value)
    return float(f"{value:.9g}") if isinstance(value, float) else value
