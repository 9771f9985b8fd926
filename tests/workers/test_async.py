"""Asynchronous jobs end to end: real ``mmserve serve`` and ``mmserve worker`` processes, a
throwaway Redis as the broker, and moto's S3 server as the store."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import httpx
import pytest

from serving.registry import Registry
from serving.settings import AwsSettings
from serving.store import Store
from tests import fixtures
from tests.services import (
    RedisServer,
    free_port,
    kill_group,
    mmserve_process,
    mmserve_worker,
    redis_server,
)

ROW = "0.5,-1.25,2.0,0.0,3.5"
FINISHED = {"succeeded", "failed", "cancelled"}


@dataclass
class Stack:
    url: str
    client: httpx.Client
    store: Store
    bucket: str
    env: dict[str, str]
    broker: RedisServer
    server_pid: int
    logs: Path


@pytest.fixture(scope="module")
def broker() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture(scope="module")
def stack(
    broker: RedisServer, aws: AwsSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    bucket = f"jobs-{uuid.uuid4().hex[:12]}"
    s3 = _s3(aws)
    s3.create_bucket(Bucket=bucket)
    # Versions show how many times an object was written.
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    store_url = f"s3://{bucket}/root"
    store = Store.from_url(store_url, aws)
    registry = Registry(store)
    registry.register(fixtures.logistic(), "lr")
    x, y = fixtures.numeric_data(10)
    for name, model in {
        "slow": fixtures.SlowModel(0.05),
        "sleepy": fixtures.SlowModel(2.0),
        "crash": fixtures.CrashingModel(),
    }.items():
        registry.register(model.fit(x, y), name, flavor="sklearn-pickle", trust_pickle=True)
    env = {
        "MMSERVE_STORE_URL": store_url,
        "MMSERVE_BROKER_URL": broker.url,
        "AWS_ENDPOINT_URL": str(aws.endpoint_url),
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "MMSERVE_JOBS__LEASE_S": "2",
        "MMSERVE_JOBS__SWEEP_INTERVAL_S": "1",
        "MMSERVE_JOBS__SWEEP_GRACE_S": "1",
        "PYTHONPATH": os.getcwd(),  # the workers unpickle tests.fixtures models
    }
    logs = tmp_path_factory.mktemp("logs")
    with (
        mmserve_process(env) as (url, proc),
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        yield Stack(url, client, store, bucket, env, broker, proc.pid, logs)


@pytest.fixture(scope="module")
def worker(stack: Stack) -> Iterator[None]:
    """One worker for the tests that need one running (not the recovery tests)."""
    with mmserve_worker(stack.env, str(stack.logs / "worker.log"), "--concurrency", "2"):
        yield


def submit(stack: Stack, model: str, body: str | bytes = ROW, **headers: str) -> str:
    response = stack.client.post(
        f"/v1/models/{model}/async",
        content=body,
        headers={"content-type": "text/csv", "accept": "application/json", **headers},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def wait(stack: Stack, tokens: list[str], seconds: float = 90) -> dict[str, dict]:
    """Every job's record once all are finished."""
    deadline = time.monotonic() + seconds
    records: dict[str, dict] = {}
    while True:
        for token in tokens:
            if records.get(token, {}).get("status") not in FINISHED:
                records[token] = stack.client.get(f"/v1/jobs/{token}").json()
        pending = [t for t in tokens if records[t]["status"] not in FINISHED]
        if not pending:
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(pending)} jobs unfinished, e.g. {records[pending[0]]}")
        time.sleep(0.2)


# -- the contract -------------------------------------------------------------------------------


def test_a_job_answers_what_real_time_answers(stack: Stack, worker: None) -> None:
    succeeded = _metric(stack, 'mmserve_jobs_finished_total{kind="",status="succeeded"}')
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
    assert _metric(stack, 'mmserve_jobs_finished_total{kind="",status="succeeded"}') == (
        succeeded + 1
    )
    assert _metric(stack, "mmserve_job_seconds_count") >= 1
    assert _metric(stack, "mmserve_jobs_queued") == 0


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
    again = submit(stack, "lr", "9,9,9", **{"idempotency-key": key})
    assert again == first
    assert submit(stack, "lr", **{"idempotency-key": uuid.uuid4().hex}) != first


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


# -- nothing lost -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_worker_loses_no_job_and_writes_no_output_twice(stack: Stack) -> None:
    tokens = [submit(stack, "slow", f"{i / 100},1,2,3,4") for i in range(200)]
    with mmserve_worker(stack.env, str(stack.logs / "first.log"), "--concurrency", "2") as proc:
        deadline = time.monotonic() + 60
        while _succeeded(stack, tokens[:60]) < 30 and time.monotonic() < deadline:
            time.sleep(0.2)
        kill_group(proc, signal.SIGKILL)  # the worker and its pool: jobs die mid-run
        proc.wait(10)
    with mmserve_worker(stack.env, str(stack.logs / "second.log"), "--concurrency", "2", "--beat"):
        records = wait(stack, tokens, seconds=180)
    assert [r["status"] for r in records.values()].count("succeeded") == 200
    s3 = _s3_of(stack)
    for i, token in enumerate(tokens):
        answer = json.loads(stack.store.read(f"jobs/{token}/output"))["predictions"][0]
        assert answer["proba_1"] == pytest.approx(1 / (1 + pow(2.718281828459045, -i / 100)))
        versions = s3.list_object_versions(Bucket=stack.bucket, Prefix=f"root/jobs/{token}/output")
        assert len(versions["Versions"]) == 1, token


@pytest.mark.slow
def test_jobs_queued_in_a_redis_that_restarts_are_run_after_the_sweep(stack: Stack) -> None:
    tokens = [submit(stack, "lr") for _ in range(20)]  # no worker: they wait in Redis
    stack.broker.stop()  # the messages are gone
    started = time.monotonic()
    refused = stack.client.post(
        "/v1/models/lr/async", content=ROW, headers={"content-type": "text/csv"}
    )
    assert refused.status_code == 503
    assert time.monotonic() - started < 20  # no request hangs on a dead Redis
    assert refused.headers["retry-after"] == "5"
    stored = re.search(r"job ([0-9a-f]{32}) is stored", refused.json()["error"])
    assert stored is not None, refused.json()
    record = stack.client.get(f"/v1/jobs/{stored[1]}").json()
    assert record["status"] == "queued"
    assert record["queue_error"]
    tokens.append(stored[1])
    stack.broker.start()
    tokens.append(submit(stack, "lr"))  # the API publishes again once Redis is back
    with mmserve_worker(stack.env, str(stack.logs / "after-restart.log"), "--beat"):
        records = wait(stack, tokens, seconds=120)
    assert {r["status"] for r in records.values()} == {"succeeded"}


@pytest.mark.slow
def test_a_job_that_kills_its_worker_fails_after_max_deliveries(stack: Stack) -> None:
    with mmserve_worker(stack.env, str(stack.logs / "crash.log"), "--concurrency", "1", "--beat"):
        doomed = submit(stack, "crash")
        fine = submit(stack, "lr")
        records = wait(stack, [doomed, fine], seconds=120)
    assert records[fine]["status"] == "succeeded"
    assert records[doomed]["status"] == "failed"
    assert records[doomed]["error"]["type"] == "WorkerLost"
    assert records[doomed]["lost"] == 3
    assert "died 3 times" in records[doomed]["error"]["message"]


@pytest.mark.slow
def test_a_300_mb_payload_passes_with_bounded_api_memory(stack: Stack, worker: None) -> None:
    line = b"0.123456789,-1.23456789,2.3456789,0.5,-0.5\n"
    count = 300 * 1024 * 1024 // len(line)

    def body() -> Iterator[bytes]:
        block = line * 8192
        for _ in range(count // 8192):
            yield block
        yield line * (count % 8192)

    before = _rss_mb(stack.server_pid)
    peak = [before]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.05):
            peak.append(_rss_mb(stack.server_pid))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        response = stack.client.post(
            "/v1/models/lr/async",
            content=body(),
            headers={"content-type": "text/csv", "accept": "text/csv"},
            timeout=300,
        )
    finally:
        done.set()
        watcher.join()
    assert response.status_code == 202, response.text
    grew = max(peak) - before
    assert grew < 64, f"the API grew by {grew:.0f} MB while it took a 300 MB body"
    token = response.json()["job_id"]
    assert wait(stack, [token], seconds=300)[token]["status"] == "succeeded"
    with stack.client.stream("GET", f"/v1/jobs/{token}/result") as result:
        lines = sum(chunk.count(b"\n") for chunk in result.iter_bytes())
    assert lines == count


def _metric(stack: Stack, sample: str) -> float:
    """The value of one sample (name and labels, as exposed) on ``/metrics``; 0 if absent."""
    for line in stack.client.get("/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _succeeded(stack: Stack, tokens: list[str]) -> int:
    return sum(stack.client.get(f"/v1/jobs/{t}").json()["status"] == "succeeded" for t in tokens)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc")


def _s3(aws: AwsSettings):  # type: ignore[no-untyped-def]
    return boto3.client(
        "s3",
        endpoint_url=aws.endpoint_url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )


def _s3_of(stack: Stack):  # type: ignore[no-untyped-def]
    return boto3.client(
        "s3",
        endpoint_url=stack.env["AWS_ENDPOINT_URL"],
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
