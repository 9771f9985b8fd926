"""Asynchronous jobs, the contract: real ``mmserve serve`` and ``mmserve worker`` processes,
a throwaway Redis as the broker, and moto's S3 server as the store. The faults (killed
workers, a Redis restart, a huge payload) are in ``test_recovery``."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from serving.registry import Registry
from serving.store import Store
from tests import fixtures
from tests.services import free_port, mmserve_process, mmserve_worker
from tests.workers.stack import FINISHED, ROW, Stack, metric, submit, wait


@pytest.fixture(scope="module")
def worker(stack: Stack) -> Iterator[None]:
    """One worker for the tests that need one running."""
    with mmserve_worker(stack.env, str(stack.logs / "worker.log"), "--concurrency", "2"):
        yield


# -- the contract -------------------------------------------------------------------------------


def test_a_job_answers_what_real_time_answers(stack: Stack, worker: None) -> None:
    succeeded = metric(stack, 'mmserve_jobs_finished_total{kind="",status="succeeded"}')
    token = submit(stack, "lr")
    record = wait(stack, [token])[token]
    assert record["status"] == "succeeded", record["error"]
    assert record["model"] == "lr:1"
    assert record["attempts"] == 1
    assert record["error"] is None
    result = stack.client.get(f"/v1/jobs/{token}/result")
    assert result.status_code == 200
    assert result.headers["content-type"] == "application/json"
    real_time = stack.client.post(
        "/v1/models/lr:predict", json={"instances": [[float(v) for v in ROW.split(",")]]}
    )
    assert result.json()["predictions"] == real_time.json()["predictions"]
    # The output object is where the 202 said it would be.
    output = record["output_location"].removeprefix(stack.store.url + "/")
    assert json.loads(stack.store.read(output)) == result.json()
    assert metric(stack, 'mmserve_jobs_finished_total{kind="",status="succeeded"}') == (
        succeeded + 1
    )
    assert metric(stack, "mmserve_job_seconds_count") >= 1
    assert metric(stack, "mmserve_jobs_queued") == 0


def test_a_job_past_its_time_limit_fails_saying_so(stack: Stack, worker: None) -> None:
    stack.store.write("inputs/sleepy.csv", ROW.encode())
    response = stack.client.post(
        "/endpoints/sleepy/async-invocations",
        headers={
            "X-Amzn-SageMaker-InputLocation": "inputs/sleepy.csv",
            "X-Amzn-SageMaker-InvocationTimeoutSeconds": "1",
        },
    )
    assert response.status_code == 202, response.text
    token = response.headers["location"].rsplit("/", 1)[1]
    record = wait(stack, [token])[token]
    assert record["status"] == "failed"
    assert record["error"] == {
        "type": "TimeLimit",
        "message": "the job ran past its time limit of 1 s",
    }


def test_without_a_broker_the_server_runs_jobs_itself(tmp_path: Path) -> None:
    Registry(Store.from_url(str(tmp_path))).register(fixtures.logistic(), "lr")
    with (
        mmserve_process({"MMSERVE_STORE_URL": str(tmp_path), "MMSERVE_BROKER_URL": ""}) as (url, _),
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        response = client.post(
            "/v1/models/lr/async", content=ROW, headers={"content-type": "text/csv"}
        )
        assert response.status_code == 202
        status_url = response.headers["location"]
        deadline = time.monotonic() + 30
        while (record := client.get(status_url).json())["status"] not in FINISHED:
            assert time.monotonic() < deadline, record
            time.sleep(0.1)
        assert record["status"] == "succeeded"
        answer = client.get(f"{status_url}/result").text
    # Text/csv in, text/csv out (the format of the body, unless Accept says otherwise).
    assert answer.count("\n") == 1


def test_submit_answers_202_with_the_job_and_where_its_answer_goes(stack: Stack) -> None:
    response = stack.client.post(
        "/v1/models/lr/async", content=ROW, headers={"content-type": "text/csv"}
    )
    assert response.status_code == 202
    body = response.json()
    token = body["job_id"]
    assert len(token) == 32 and int(token, 16) >= 0
    assert response.headers["location"] == f"{stack.url}/v1/jobs/{token}"
    assert body["status_url"] == f"{stack.url}/v1/jobs/{token}"
    assert body["output_location"] == f"{stack.store.url}/jobs/{token}/output"
    assert body["failure_location"] == f"{stack.store.url}/jobs/{token}/error.json"
    # The input is in the store before the 202.
    assert stack.store.read(f"jobs/{token}/input") == ROW.encode()


def test_refusals_at_submit_and_poll(stack: Stack) -> None:
    client = stack.client
    unknown = client.post(
        "/v1/models/nope/async", content=ROW, headers={"content-type": "text/csv"}
    )
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "model 'nope' is not registered"}
    assert client.get("/v1/jobs/not-a-token").status_code == 404
    missing = client.get(f"/v1/jobs/{'0' * 32}")
    assert missing.status_code == 404
    assert missing.json() == {"error": f"no job '{'0' * 32}'"}
    assert client.get(f"/v1/jobs/{'0' * 32}/result").status_code == 404
    pickle = client.post(
        "/v1/models/lr/async", content=b"x", headers={"content-type": "application/x-pickle"}
    )
    assert pickle.status_code == 415
    empty = client.post("/v1/models/lr/async", content=b"", headers={"content-type": "text/csv"})
    assert empty.status_code == 422
    assert "empty" in empty.json()["error"]
    callback = client.post(
        "/v1/models/lr/async",
        content=ROW,
        headers={"content-type": "text/csv", "x-callback-url": "file:///etc/passwd"},
    )
    assert callback.status_code == 400
    assert "callback URL" in callback.json()["error"]


def test_result_before_the_end_is_409_and_a_queued_job_can_be_cancelled(
    stack: Stack, worker: None
) -> None:
    running = submit(stack, "sleepy")
    queued = [submit(stack, "sleepy") for _ in range(3)]  # two workers: one of these waits
    early = stack.client.get(f"/v1/jobs/{running}/result")
    assert early.status_code == 409
    assert early.json()["error"].startswith(f"job {running} is ")
    cancelled = [t for t in queued if stack.client.delete(f"/v1/jobs/{t}").status_code == 200]
    assert cancelled, "no job was still queued to cancel"
    records = wait(stack, [running, *queued])
    assert records[running]["status"] == "succeeded"
    for token in cancelled:
        assert records[token]["status"] == "cancelled"
        assert stack.client.delete(f"/v1/jobs/{token}").status_code == 409


def test_a_bad_payload_fails_the_job_naming_the_problem(stack: Stack, worker: None) -> None:
    token = submit(stack, "lr", "1,2\n")
    record = wait(stack, [token])[token]
    assert record["status"] == "failed"
    assert record["attempts"] == 1  # not retried
    assert record["error"]["type"] == "DecodeError"
    assert "rows have 2 values; the model takes 5" in record["error"]["message"]
    error = json.loads(stack.store.read(f"jobs/{token}/error.json"))
    assert error["error"] == record["error"]
    result = stack.client.get(f"/v1/jobs/{token}/result")
    assert result.status_code == 409
    assert "DecodeError" in result.json()["error"]


def test_a_job_can_name_an_input_already_in_the_store(stack: Stack, worker: None) -> None:
    stack.store.write("inputs/named.csv", ROW.encode())
    response = stack.client.post(
        "/v1/models/lr/async",
        json={"input_location": f"{stack.store.url}/inputs/named.csv", "content_type": "text/csv"},
    )
    assert response.status_code == 202, response.text
    token = response.json()["job_id"]
    record = wait(stack, [token])[token]
    assert record["status"] == "succeeded", record["error"]
    assert record["input_location"] == f"{stack.store.url}/inputs/named.csv"
    assert record["content_type"] == "text/csv"
    wrong = stack.client.post("/v1/models/lr/async", json={"input_location": 5})
    assert wrong.status_code == 422
    assert wrong.json()["error"].startswith("body.input_location: ")
    missing = stack.client.post("/v1/models/lr/async", json={"input_location": "inputs/none.csv"})
    assert missing.status_code == 422
    assert missing.json() == {
        "error": "cannot read the request body: no object at the input location 'inputs/none.csv'"
    }


def test_the_same_idempotency_key_gives_the_same_job(stack: Stack) -> None:
    key = uuid.uuid4().hex
    first = submit(stack, "lr", **{"idempotency-key": key})
    again = submit(stack, "lr", **{"idempotency-key": key})
    assert again == first
    assert submit(stack, "lr", **{"idempotency-key": uuid.uuid4().hex}) != first
    # Another request under the same key is refused (tests/workers/test_idempotency.py).
    other = stack.client.post(
        "/v1/models/lr/async",
        content="9,9,9",
        headers={"content-type": "text/csv", "accept": "application/json", "idempotency-key": key},
    )
    assert other.status_code == 409


def test_callbacks_arrive_once_per_job(stack: Stack, worker: None) -> None:
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["content-length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    hook = ThreadingHTTPServer(("127.0.0.1", free_port()), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{hook.server_port}/done"
        tokens = [submit(stack, "lr", **{"x-callback-url": url}) for _ in range(4)]
        tokens.append(submit(stack, "lr", "1,2\n", **{"x-callback-url": url}))
        records = wait(stack, tokens)
        deadline = time.monotonic() + 30
        while len(received) < len(tokens) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)  # any duplicate would arrive now
    finally:
        hook.shutdown()
        hook.server_close()
    assert sorted(n["jobId"] for n in received) == sorted(tokens)
    by_job = {n["jobId"]: n for n in received}
    assert by_job[tokens[0]]["invocationStatus"] == "Completed"
    assert (
        by_job[tokens[0]]["responseParameters"]["outputLocation"]
        == (records[tokens[0]]["output_location"])
    )
    assert by_job[tokens[-1]]["invocationStatus"] == "Failed"
    assert "rows have 2 values" in by_job[tokens[-1]]["failureReason"]


def test_sagemaker_async_invocation(stack: Stack, worker: None) -> None:
    stack.store.write("inputs/one.csv", ROW.encode())
    response = stack.client.post(
        "/endpoints/lr/async-invocations",
        headers={
            "X-Amzn-SageMaker-InputLocation": f"{stack.store.url}/inputs/one.csv",
            "X-Amzn-SageMaker-Content-Type": "text/csv",
            "X-Amzn-SageMaker-Accept": "text/csv",
            "X-Amzn-SageMaker-Inference-Id": "inference-1",
        },
    )
    assert response.status_code == 202, response.text
    output = response.headers["x-amzn-sagemaker-outputlocation"]
    assert response.json() == {"InferenceId": "inference-1", "OutputLocation": output}
    assert response.headers["x-amzn-sagemaker-failurelocation"].endswith("/error.json")
    token = response.headers["location"].rsplit("/", 1)[1]
    assert wait(stack, [token])[token]["status"] == "succeeded"
    # A client may read the answer from the store itself.
    answer = stack.store.read(output.removeprefix(stack.store.url + "/")).decode()
    label, p0, p1 = answer.strip().split(",")
    assert label in ("0", "1") and abs(float(p0) + float(p1) - 1) < 1e-12
    outside = stack.client.post(
        "/endpoints/lr/async-invocations",
        headers={"X-Amzn-SageMaker-InputLocation": "s3://elsewhere/x.csv"},
    )
    assert outside.status_code == 400
