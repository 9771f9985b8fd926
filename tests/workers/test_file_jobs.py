"""Async jobs of a file (an image, a scan): the upload is the one row of a model whose one
input is binary, and the answer is the model's binary output as it is (served with its
media type) or JSON. Real ``mmserve serve`` and ``mmserve worker`` processes on moto's S3
server, a throwaway Redis (the module's ``stack``), and the ``mmserve jobs`` CLI."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.registry import Registry
from tests import fixtures
from tests.services import mmserve_worker
from tests.serving.http.test_raw_bodies import PNG, register_file_models
from tests.serving.test_runtime_python import HASHER, HASHER_MANIFEST
from tests.workers.stack import Stack, wait

MMSERVE = str(Path(sys.executable).with_name("mmserve"))
FILE_MIB = int(os.environ.get("MMSERVE_TEST_FILE_MIB", "64"))  # 300 for the figure


@pytest.fixture(scope="module")
def worker(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A worker (its pid) with the models of files registered: ``digest``, ``mirror`` and
    ``hasher`` (which reads its input as a file, ``path = true``)."""
    folders = tmp_path_factory.mktemp("models")
    registry = Registry(stack.store)
    register_file_models(registry, folders, "digest", "mirror")
    hasher = fixtures.code_folder(folders, "hasher", HASHER_MANIFEST, **{"hasher.py": HASHER})
    registry.register(hasher, "hasher", trust_code=True)
    with mmserve_worker(stack.env, str(stack.logs / "worker.log"), "--concurrency", "1") as proc:
        yield proc.pid


def submit(stack: Stack, model: str, body: bytes, **headers: str) -> str:
    response = stack.client.post(f"/v1/models/{model}/async", content=body, headers=headers)
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def test_a_file_job_answers_with_the_models_binary_output(stack: Stack, worker: int) -> None:
    token = submit(stack, "mirror", PNG, **{"content-type": "image/png"})
    assert wait(stack, [token])[token]["status"] == "succeeded"
    result = stack.client.get(f"/v1/jobs/{token}/result")
    assert (result.status_code, result.headers["content-type"]) == (200, "image/png")
    assert result.content == PNG[::-1]


def test_a_file_job_answers_json_when_the_model_has_no_binary_output(
    stack: Stack, worker: int
) -> None:
    token = submit(stack, "digest", PNG, **{"content-type": "image/png"})
    assert wait(stack, [token])[token]["status"] == "succeeded"
    result = stack.client.get(f"/v1/jobs/{token}/result")
    assert result.headers["content-type"] == "application/json"
    expected = {"size": len(PNG), "sha256": hashlib.sha256(PNG).hexdigest()}
    assert result.json() == {"predictions": [expected]}


def test_a_file_for_a_model_that_takes_no_file_is_refused_at_submit(stack: Stack) -> None:
    response = stack.client.post(
        "/v1/models/lr/async", content=PNG, headers={"content-type": "image/png"}
    )
    assert response.status_code == 415
    assert response.json()["error"] == (
        "unsupported format 'image/png'; use one of text/csv, application/json, "
        "application/jsonlines, application/x-parquet, application/vnd.apache.arrow.stream"
    )


def test_the_cli_submits_a_file_by_its_own_type_and_writes_the_answer(
    stack: Stack, worker: int, tmp_path: Path
) -> None:
    image, answer = tmp_path / "big.png", tmp_path / "big-x2.png"
    image.write_bytes(PNG)
    done = subprocess.run(
        [MMSERVE, "jobs", "submit", "mirror", str(image), "-o", str(answer), "--url", stack.url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert answer.read_bytes() == PNG[::-1]


def test_an_answer_type_the_model_cannot_give_fails_the_job_naming_why(
    stack: Stack, worker: int
) -> None:
    token = submit(stack, "digest", PNG, **{"content-type": "image/png", "accept": "image/png"})
    record = wait(stack, [token])[token]
    assert (record["status"], record["error"]["type"]) == ("failed", "UnsupportedFormat")
    assert record["error"]["message"] == (
        "unsupported format 'image/png'; use one of text/csv, application/json, "
        "application/jsonlines, application/x-parquet, application/vnd.apache.arrow.stream"
    )


def _memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_a_big_file_is_read_by_the_model_from_disk_not_memory(stack: Stack, worker: int) -> None:
    """A model that reads its input as a file (``path = true``) gets the job's input
    downloaded in blocks: the pool process that runs it never holds it in memory."""
    first = submit(stack, "hasher", b"warm-up", **{"content-type": "application/octet-stream"})
    assert wait(stack, [first])[first]["status"] == "succeeded"  # imports done, model loaded
    (pool,) = Path(f"/proc/{worker}/task/{worker}/children").read_text().split()
    before = _memory_kib(int(pool), "VmRSS")
    payload = os.urandom(1 << 20) * FILE_MIB
    token = submit(stack, "hasher", payload, **{"content-type": "application/octet-stream"})
    assert wait(stack, [token])[token]["status"] == "succeeded"
    answer = stack.client.get(f"/v1/jobs/{token}/result").json()["predictions"][0]
    assert answer["sha256"].split()[0] == hashlib.sha256(payload).hexdigest()
    grown_kib = _memory_kib(int(pool), "VmHWM") - before
    print(f"{FILE_MIB} MiB file: the pool process grew by {grown_kib / 1024:.1f} MiB at its peak")
    assert grown_kib < 16 * 1024, f"the pool process grew by {grown_kib} KiB for {FILE_MIB} MiB"
