"""The issue's other examples of payloads that are no rows, on a real ``mmserve serve``: an
upscaler (a PNG in, a PNG twice as large out) in real time and as an async job, and a text
classifier of support messages (a text in, a team out) as a raw text body, as V1 JSON and
over a stream."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from models import support
from models.upscale.upscale import upscale
from serving.registry import Registry
from serving.store import Store
from tests.services import mmserve_server
from tests.workers.streams import scored_by_a_stream

UPSCALE = Path(__file__).resolve().parents[2] / "models" / "upscale"
HELD_OUT = 200
RIGHT = 200  # of HELD_OUT held-out messages routed to their team (deterministic)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    registry = Registry(Store.from_url(str(tmp_path_factory.mktemp("store"))))
    registry.register(UPSCALE, "upscale", trust_code=True)
    support.register(registry)
    return registry


@pytest.fixture(scope="module")
def client(registry: Registry) -> Iterator[httpx.Client]:
    env = {"MMSERVE_STORE_URL": registry.store.url, "PYTHONPATH": os.getcwd()}
    with mmserve_server(env) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client


def png(width: int, height: int, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    sink = io.BytesIO()
    Image.fromarray(pixels).save(sink, format="PNG")
    return sink.getvalue()


def invoke(client: httpx.Client, model: str, body: bytes, content_type: str) -> httpx.Response:
    headers = {"content-type": content_type, "x-amzn-sagemaker-target-model": model}
    return client.post("/invocations", content=body, headers=headers)


def test_the_upscaler_answers_a_png_twice_as_large_in_real_time(client: httpx.Client) -> None:
    image = png(40, 30)
    response = invoke(client, "upscale", image, "image/png")
    assert (response.status_code, response.headers["content-type"]) == (200, "image/png")
    assert response.content == upscale(image)  # the same bytes as in process
    answered, sent = Image.open(io.BytesIO(response.content)), Image.open(io.BytesIO(image))
    assert answered.size == (80, 60)
    expected = sent.resize((80, 60), Image.Resampling.LANCZOS)
    assert np.array_equal(np.asarray(answered), np.asarray(expected))


def test_the_upscaler_as_an_async_job_serves_its_result_as_png(client: httpx.Client) -> None:
    image = png(64, 48, seed=1)
    submitted = client.post(
        "/v1/models/upscale/async", content=image, headers={"content-type": "image/png"}
    )
    assert submitted.status_code == 202, submitted.text
    token = submitted.json()["job_id"]
    deadline = time.monotonic() + 60
    while (view := client.get(f"/v1/jobs/{token}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, view
        time.sleep(0.05)
    assert view["status"] == "succeeded", view
    result = client.get(f"/v1/jobs/{token}/result")
    assert (result.headers["content-type"], result.content) == ("image/png", upscale(image))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"GIF89a....", "not a PNG file: it does not start with the PNG signature"),
        (png(4096, 1)[:33] + png(1, 1)[33:], "the image is 4096x1 pixels; at most 2048 a side"),
    ],
)
def test_the_upscaler_refuses_what_is_no_png_it_can_draw(
    client: httpx.Client, body: bytes, reason: str
) -> None:
    response = invoke(client, "upscale", body, "image/png")
    assert (response.status_code, response.json()["message"]) == (400, f"row 0: {reason}")


def test_a_support_message_is_routed_alike_as_text_and_as_json(
    client: httpx.Client, registry: Registry
) -> None:
    texts, teams = support.messages(HELD_OUT, seed=99)  # never trained on
    local = registry.load("support").predict(pa.table({"text": texts})).to_pylist()
    assert sum(row["label"] == team for row, team in zip(local, teams, strict=True)) == RIGHT
    v1 = client.post("/v1/models/support:predict", json={"instances": [{"text": t} for t in texts]})
    assert v1.json()["predictions"] == local
    for text, expected in list(zip(texts, local, strict=True))[:10]:
        raw = invoke(client, "support", text.encode(), "text/plain; charset=utf-8")
        assert raw.json()["predictions"] == [expected]


@pytest.mark.slow
def test_support_messages_over_a_stream_are_routed_as_in_process(
    registry: Registry, tmp_path: Path
) -> None:
    """Events whose ``text`` field is the message, scored by a real ``mmserve stream``."""
    texts, _ = support.messages(30, seed=7)
    local = registry.load("support").predict(pa.table({"text": texts})).to_pylist()
    events = [{"id": str(i), "text": text} for i, text in enumerate(texts)]
    answers = scored_by_a_stream(registry.store.url, "support", events, tmp_path / "stream.log")
    assert [a["label"] for a in answers] == [row["label"] for row in local]
    assert [float(a["proba_shipping"]) for a in answers] == [row["proba_shipping"] for row in local]
