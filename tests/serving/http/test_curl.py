"""V1 bodies as ``curl -d`` sends them, to a real ``mmserve serve``: labelled
``application/x-www-form-urlencoded`` unless told otherwise, and read as JSON, as KServe
reads them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serving.endpoints.catalog import Endpoints
from serving.endpoints.config import Endpoint, Variant
from tests import fixtures
from tests.serving.http.conftest import Server

CURL = shutil.which("curl")
pytestmark = pytest.mark.skipif(CURL is None, reason="curl is not installed")


def curl(url: str, *args: str) -> tuple[int, Any]:
    """The status and JSON answer of ``curl <args> <url>``."""
    assert CURL is not None
    done = subprocess.run(
        [CURL, "-sS", "-w", "\n%{http_code}", *args, url],
        capture_output=True,
        check=True,
        timeout=60,
    )
    answer, _, status = done.stdout.decode().rpartition("\n")
    return int(status), json.loads(answer)


@pytest.fixture(scope="module")
def body(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    x, _ = fixtures.numeric_data(3, seed=31)
    path = tmp_path_factory.mktemp("curl") / "body.json"
    path.write_text(json.dumps({"instances": x.tolist()}))
    return path, x


@pytest.fixture(scope="module")
def curled(server: Server) -> str:
    """An endpoint of lr:1, applied in the store the server follows."""
    endpoint = Endpoint(variants=[Variant(name="main", model="lr:1")])
    Endpoints(server.registry.store).apply_one("curled", endpoint)
    return "curled"


@pytest.mark.parametrize(
    "route", ["/v1/models/lr:predict", "/v1/models/lr/predict", "/v1/endpoints/curled:predict"]
)
@pytest.mark.parametrize("label", [[], ["-H", "content-type:"]])  # curl's form type, or none
def test_a_json_body_sent_with_curl_d_is_read_as_json(
    server: Server, curled: str, body: tuple[Path, np.ndarray], route: str, label: list[str]
) -> None:
    path, x = body
    status, answer = curl(server.url + route, "-d", f"@{path}", *label)
    want = server.registry.load("lr:1").predict(fixtures.numeric_table(x)).to_pylist()
    assert (status, answer["predictions"]) == (200, want)


def test_a_form_that_is_not_json_is_a_422_naming_the_problem(server: Server) -> None:
    status, answer = curl(server.url + "/v1/models/lr:predict", "-d", "f0=1&f1=2")
    assert (status, answer) == (
        422,
        {
            "error": "cannot read the application/json body: "
            "Expecting value: line 1 column 1 (char 0)"
        },
    )
