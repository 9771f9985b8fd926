"""What an async job hands back, as a demanding SageMaker user uses it: locations that are
absolute URIs (``s3://…`` a boto3 client reads, ``file:///…`` on a local store) and that are
taken back as inputs, while anything outside the store stays refused; CSV answers with their
header row and the id and kept columns the request named, as a batch run writes them; S3
objects stored with their content type; and a pointer job answering in its input's format.

Real ``mmserve serve`` and ``mmserve worker`` processes, a throwaway Redis per stack, and
moto's S3 server (the module's ``stack``) or a local folder named by a relative path."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pyarrow as pa
import pytest

from batch.runner import run_batch
from batch.spec import BatchSpec
from serving import codecs
from serving.codecs import sagemaker
from serving.registry import Registry
from serving.settings import Settings
from serving.store import Store
from tests import fixtures
from tests.services import free_port, mmserve_process, mmserve_worker, redis_server
from tests.serving.http.test_boto3 import runtime
from tests.workers.stack import ROW, Stack, s3_client, wait

BATCH_ROWS = 4  # the local stack's jobs read 4 rows at a time: a 10-row input is 3 batches


@pytest.fixture(scope="module")
def worker(stack: Stack) -> Iterator[None]:
    with mmserve_worker(stack.env, str(stack.logs / "worker.log"), "--concurrency", "2"):
        yield


@dataclass
class Local:
    """A server and a worker on a local store named by a path relative to their directory
    (as the default ``./.mmserve`` is), with their own Redis."""

    url: str
    client: httpx.Client
    root: Path  # the store's folder, absolute
    registry: Registry

    @property
    def uri(self) -> str:
        return self.root.as_uri()


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    root = tmp_path_factory.mktemp("local") / "store"
    registry = Registry(Store.from_url(str(root)))
    registry.register(fixtures.logistic(), "lr")
    logs = tmp_path_factory.mktemp("local-logs")
    with redis_server() as broker:
        env = {
            "MMSERVE_STORE_URL": os.path.relpath(root),
            "MMSERVE_BROKER_URL": broker.url,
            "MMSERVE_JOBS__BATCH_ROWS": str(BATCH_ROWS),
            "MMSERVE_JOBS__CALLBACK_ALLOWED": '["127.0.0.1"]',
        }
        with (
            mmserve_process(env) as (url, _),
            mmserve_worker(env, str(logs / "worker.log")),
            httpx.Client(base_url=url, timeout=60) as client,
        ):
            yield Local(url, client, root.resolve(), registry)


def finished(client: httpx.Client, token: str, seconds: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while (record := client.get(f"/v1/jobs/{token}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, record
        time.sleep(0.1)
    return dict(record)


def customers(rows: int = 10) -> pa.Table:
    """Rows with an id column first and a column the model does not take last."""
    x, _ = fixtures.numeric_data(rows, seed=41)
    table = fixtures.numeric_table(x)
    table = table.add_column(0, "customer_id", pa.array([f"C-{i:03d}" for i in range(rows)]))
    return table.append_column("segment", pa.array(["retail", "smb"] * (rows // 2)))


class Hook:
    """A callback receiver on loopback: the notifications it got, by job."""

    def __init__(self) -> None:
        received: dict[str, dict[str, Any]] = {}
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                received[body["jobId"]] = body
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/done"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, token: str, seconds: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while token not in self.received:
            assert time.monotonic() < deadline, f"no notification of {token}"
            time.sleep(0.1)
        return self.received[token]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    receiver = Hook()
    yield receiver
    receiver.close()


def s3_object(stack: Stack, uri: str) -> dict[str, Any]:
    """The object an ``s3://bucket/key`` URI names, read as a boto3 user reads it."""
    parsed = urlparse(uri)
    assert parsed.scheme == "s3", uri
    found: dict[str, Any] = s3_client(stack.env["AWS_ENDPOINT_URL"]).get_object(
        Bucket=parsed.netloc, Key=parsed.path.lstrip("/")
    )
    return found


# -- locations are absolute URIs --------------------------------------------------------------


def test_a_local_store_answers_file_uris_everywhere(local: Local, hook: Hook) -> None:
    submitted = local.client.post(
        "/v1/models/lr/async",
        content=ROW,
        headers={"content-type": "text/csv", "x-callback-url": hook.url},
    )
    assert submitted.status_code == 202, submitted.text
    token = submitted.json()["job_id"]
    job = f"{local.uri}/jobs/{token}"
    locations = {
        "output_location": f"{job}/output",
        "failure_location": f"{job}/error.json",
        "input_location": f"{job}/input",
    }
    assert {k: submitted.json()[k] for k in locations} == locations
    record = finished(local.client, token)
    assert record["status"] == "succeeded", record["error"]
    assert {k: record[k] for k in locations} == locations
    # The URI is the file: what a client reads there is the answer.
    answer = local.client.get(f"/v1/jobs/{token}/result").content
    assert Path(urlparse(record["output_location"]).path).read_bytes() == answer
    notified = hook.of(token)
    assert notified["requestParameters"]["inputLocation"] == f"{job}/input"
    assert notified["responseParameters"]["outputLocation"] == f"{job}/output"


def test_sagemakers_async_answer_is_a_file_uri_on_a_local_store(local: Local) -> None:
    (local.root / "inputs").mkdir(exist_ok=True)
    (local.root / "inputs" / "one.csv").write_text(ROW)
    answered = local.client.post(
        "/endpoints/lr/async-invocations",
        headers={"X-Amzn-SageMaker-InputLocation": "inputs/one.csv"},
    )
    assert answered.status_code == 202, answered.text
    token = answered.headers["location"].rsplit("/", 1)[1]
    output = f"{local.uri}/jobs/{token}/output"
    assert answered.headers["x-amzn-sagemaker-outputlocation"] == output
    assert answered.headers["x-amzn-sagemaker-failurelocation"] == (
        f"{local.uri}/jobs/{token}/error.json"
    )
    assert answered.json()["OutputLocation"] == output


def test_boto3_reads_the_output_location_of_an_async_invocation(stack: Stack, worker: None) -> None:
    stack.store.write("inputs/boto3.csv", ROW.encode())
    answer = runtime(stack.url).invoke_endpoint_async(
        EndpointName="lr", InputLocation=f"{stack.store.url}/inputs/boto3.csv"
    )
    assert answer["OutputLocation"].startswith(f"s3://{stack.bucket}/root/jobs/")
    assert answer["FailureLocation"] == answer["OutputLocation"].replace("/output", "/error.json")
    token = answer["OutputLocation"].split("/")[-2]
    assert wait(stack, [token])[token]["status"] == "succeeded"
    found = s3_object(stack, answer["OutputLocation"])
    assert found["Body"].read() == stack.client.get(f"/v1/jobs/{token}/result").content


# -- locations are taken back, confined to the store ------------------------------------------


def test_a_local_store_takes_back_its_uris_and_absolute_paths(local: Local) -> None:
    (local.root / "inputs").mkdir(exist_ok=True)
    (local.root / "inputs" / "rows.csv").write_text(ROW)
    first = local.client.post("/v1/models/lr/async", json={"input_location": "inputs/rows.csv"})
    assert first.status_code == 202, first.text
    answered = finished(local.client, first.json()["job_id"])["input_location"]
    rows = f"{local.uri}/inputs/rows.csv"
    for where, canonical in {
        rows: rows,
        str(local.root / "inputs" / "rows.csv"): rows,
        answered: answered,  # a location a job answered is an input
    }.items():
        again = local.client.post(
            "/v1/models/lr/async", json={"input_location": where, "content_type": "text/csv"}
        )
        assert again.status_code == 202, (where, again.text)
        record = finished(local.client, again.json()["job_id"])
        assert record["status"] == "succeeded", (where, record["error"])
        assert record["input_location"] == canonical
    sagemaker_way = local.client.post(
        "/endpoints/lr/async-invocations",
        headers={"X-Amzn-SageMaker-InputLocation": f"{local.uri}/inputs/rows.csv"},
    )
    assert sagemaker_way.status_code == 202, sagemaker_way.text


def test_a_location_outside_a_local_store_is_refused_naming_the_field(
    local: Local, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.csv"
    outside.write_text(ROW)
    (local.root / "inputs").mkdir(exist_ok=True)
    link = local.root / "inputs" / "link.csv"
    link.unlink(missing_ok=True)
    link.symlink_to(outside)  # inside the store, leading out of it
    (local.root / "inputs" / "rows.csv").write_text(ROW)
    refused = [
        "/etc/passwd",
        "file:///etc/passwd",
        str(outside),
        outside.as_uri(),
        f"{local.root}/../outside.csv",
        str(link),
        link.as_uri(),
        "inputs/link.csv",
        "s3://bucket/inputs/rows.csv",
        f"file://elsewhere{local.root}/inputs/rows.csv",
        "http://example.com/rows.csv",
    ]
    rule = f"must name an object in the store: a key, or {local.uri}/<key>"
    for where in refused:
        pointer = local.client.post("/v1/models/lr/async", json={"input_location": where})
        assert (pointer.status_code, pointer.json()) == (
            400,
            {"error": f"invalid input_location {where!r}: {rule}"},
        ), where
        sagemaker_way = local.client.post(
            "/endpoints/lr/async-invocations",
            headers={"X-Amzn-SageMaker-InputLocation": where},
        )
        assert sagemaker_way.status_code == 400, where
        assert sagemaker_way.json()["message"] == (
            f"invalid X-Amzn-SageMaker-InputLocation {where!r}: {rule}"
        )


def test_an_s3_location_outside_the_stores_prefix_is_refused(stack: Stack) -> None:
    stack.store.write("inputs/mine.csv", ROW.encode())
    rule = f"must name an object in the store: a key, or s3://{stack.bucket}/root/<key>"
    for where in [
        f"s3://{stack.bucket}/rootless/inputs/mine.csv",
        f"s3://{stack.bucket}/inputs/mine.csv",
        f"s3://other-{stack.bucket}/root/inputs/mine.csv",
        f"s3://{stack.bucket}/root/inputs/../../secret.csv",
        "/etc/passwd",
        "file:///etc/passwd",
    ]:
        pointer = stack.client.post("/v1/models/lr/async", json={"input_location": where})
        assert (pointer.status_code, pointer.json()) == (
            400,
            {"error": f"invalid input_location {where!r}: {rule}"},
        ), where


# -- CSV answers keep their header, and the id and kept columns ----------------------------------


def batch_answer(local: Local, key: str, id_column: str, keep: list[str]) -> bytes:
    """The CSV a batch run writes for the object ``key`` of the local store."""
    spec = BatchSpec(
        model="lr:1",
        input=str(local.root / key),
        output=str(local.root / "batch" / key.replace("/", "-")),
        id_column=id_column,
        keep_columns=keep,
        format="csv",
    )
    run_batch(spec, local.registry, Settings(store_url=str(local.root)))
    return (Path(spec.output) / "part-00000.csv").read_bytes()


def test_a_csv_job_answers_with_its_header_and_the_columns_it_keeps(local: Local) -> None:
    table = customers()
    (local.root / "inputs").mkdir(exist_ok=True)
    body = codecs.encode(table, codecs.CSV)
    (local.root / "inputs" / "customers.csv").write_bytes(body)
    keep = {"x-mmserve-id-column": "customer_id", "x-mmserve-keep-columns": "segment"}
    uploaded = local.client.post(
        "/v1/models/lr/async", content=body, headers={"content-type": "text/csv", **keep}
    )
    pointed = local.client.post(
        "/v1/models/lr/async",
        json={
            "input_location": "inputs/customers.csv",
            "id_column": "customer_id",
            "keep_columns": ["segment"],
        },
    )
    expected = batch_answer(local, "inputs/customers.csv", "customer_id", ["segment"])
    assert expected.startswith(b'"customer_id","segment","label","proba_0","proba_1"\n')
    scored = local.registry.load("lr:1").predict(table, passthrough=["customer_id", "segment"])
    for submitted in (uploaded, pointed):
        assert submitted.status_code == 202, submitted.text
        token = submitted.json()["job_id"]
        record = finished(local.client, token)
        assert record["status"] == "succeeded", record["error"]
        assert (record["id_column"], record["keep_columns"]) == ("customer_id", ["segment"])
        result = local.client.get(f"/v1/jobs/{token}/result")
        assert result.headers["content-type"].startswith("text/csv")
        # A batch run's part, byte for byte; the one predict path's values.
        assert result.content == expected
        assert codecs.decode(result.content, codecs.CSV).equals(scored)


def csv_job_answer(local: Local, body: bytes) -> bytes:
    """The result of a CSV job of ``body``, which must succeed."""
    submitted = local.client.post(
        "/v1/models/lr/async", content=body, headers={"content-type": "text/csv"}
    )
    token = submitted.json()["job_id"]
    assert finished(local.client, token)["status"] == "succeeded"
    return local.client.get(f"/v1/jobs/{token}/result").content


def test_a_csv_with_a_header_answers_with_one_whatever_the_batches(local: Local) -> None:
    x, _ = fixtures.numeric_data(10, seed=42)  # three batches of BATCH_ROWS
    table = fixtures.numeric_table(x)
    answer = csv_job_answer(local, codecs.encode(table, codecs.CSV))
    assert answer == codecs.encode(local.registry.load("lr:1").predict(table), codecs.CSV)
    # A headerless body (SageMaker's way) still answers values only, as /invocations does.
    answer = csv_job_answer(local, sagemaker.encode(table, codecs.CSV))
    invoked = local.client.post(
        "/invocations",
        content=sagemaker.encode(table, codecs.CSV),
        headers={"content-type": "text/csv"},
    )
    assert answer == invoked.content


def test_a_column_to_keep_that_the_input_lacks_fails_the_job_naming_it(local: Local) -> None:
    submitted = local.client.post(
        "/v1/models/lr/async",
        content=codecs.encode(customers(), codecs.CSV),
        headers={"content-type": "text/csv", "x-mmserve-id-column": "account"},
    )
    record = finished(local.client, submitted.json()["job_id"])
    assert record["status"] == "failed"
    assert record["error"] == {"type": "MissingColumn", "message": "missing column 'account'"}


def test_the_same_idempotency_key_with_other_kept_columns_is_a_conflict(local: Local) -> None:
    body = codecs.encode(customers(), codecs.CSV)
    headers = {"content-type": "text/csv", "idempotency-key": uuid.uuid4().hex}
    kept = {**headers, "x-mmserve-id-column": "customer_id"}
    first = local.client.post("/v1/models/lr/async", content=body, headers=kept)
    again = local.client.post("/v1/models/lr/async", content=body, headers=kept)
    assert first.status_code == again.status_code == 202
    assert again.json()["job_id"] == first.json()["job_id"]
    more = {**kept, "x-mmserve-keep-columns": "segment"}
    other = local.client.post("/v1/models/lr/async", content=body, headers=more)
    assert other.status_code == 409
    assert "(its passthrough differ)" in other.json()["error"]


def test_boto3_keeps_columns_through_custom_attributes(stack: Stack, worker: None) -> None:
    table = customers(6)
    stack.store.write("inputs/customers.csv", codecs.encode(table, codecs.CSV))
    answer = runtime(stack.url).invoke_endpoint_async(
        EndpointName="lr",
        InputLocation=f"{stack.store.url}/inputs/customers.csv",
        ContentType="text/csv",
        CustomAttributes="id_column=customer_id; keep_columns=segment",
    )
    token = answer["OutputLocation"].split("/")[-2]
    assert wait(stack, [token])[token]["status"] == "succeeded"
    found = s3_object(stack, answer["OutputLocation"])
    assert found["ContentType"] == "text/csv"
    scored = Registry(stack.store).load("lr:1").predict(table, ["customer_id", "segment"])
    assert found["Body"].read() == codecs.encode(scored, codecs.CSV)


# -- S3 objects carry their content type -------------------------------------------------------


@pytest.mark.parametrize("accept", [codecs.CSV, codecs.JSON, codecs.JSONL, codecs.PARQUET])
def test_s3_outputs_are_stored_with_their_content_type(
    stack: Stack, worker: None, accept: str
) -> None:
    submitted = stack.client.post(
        "/v1/models/lr/async",
        content=codecs.encode(fixtures.numeric_table(fixtures.numeric_data(4)[0]), codecs.CSV),
        headers={"content-type": "text/csv", "accept": accept},
    )
    token = submitted.json()["job_id"]
    assert wait(stack, [token])[token]["status"] == "succeeded"
    assert s3_object(stack, submitted.json()["output_location"])["ContentType"] == accept
    assert s3_object(stack, submitted.json()["input_location"])["ContentType"] == codecs.CSV


def test_an_s3_failure_is_stored_as_json(stack: Stack, worker: None) -> None:
    submitted = stack.client.post(
        "/v1/models/lr/async", content="1,2\n", headers={"content-type": "text/csv"}
    )
    token = submitted.json()["job_id"]
    assert wait(stack, [token])[token]["status"] == "failed"
    found = s3_object(stack, submitted.json()["failure_location"])
    assert found["ContentType"] == codecs.JSON
    assert json.loads(found["Body"].read())["error"]["type"] == "DecodeError"


# -- a pointer job answers in its input's format -----------------------------------------------


def test_a_pointer_job_answers_in_its_inputs_format(stack: Stack, worker: None) -> None:
    x, _ = fixtures.numeric_data(5, seed=43)
    table = fixtures.numeric_table(x)
    stack.store.write("inputs/five.csv", codecs.encode(table, codecs.CSV))
    stack.store.write("inputs/five.parquet", codecs.encode(table, codecs.PARQUET))
    stack.store.write("inputs/five.jsonl", codecs.encode(table, codecs.JSONL))
    expected = Registry(stack.store).load("lr:1").predict(table)
    pointers: dict[str, dict[str, str]] = {
        codecs.CSV: {"input_location": "inputs/five.csv", "content_type": "text/csv"},
        codecs.PARQUET: {"input_location": f"{stack.store.url}/inputs/five.parquet"},
        codecs.JSONL: {"input_location": "inputs/five.jsonl"},
    }
    for kind, pointer in pointers.items():
        submitted = stack.client.post("/v1/models/lr/async", json=pointer)
        assert submitted.status_code == 202, submitted.text
        token = submitted.json()["job_id"]
        record = wait(stack, [token])[token]
        assert (record["status"], record["content_type"], record["accept"]) == (
            "succeeded",
            kind,
            kind,
        ), record
        result = stack.client.get(f"/v1/jobs/{token}/result")
        assert result.headers["content-type"].split(";")[0] == kind
        assert codecs.decode(result.content, kind).equals(expected)
    # An explicit format still wins.
    asked = stack.client.post(
        "/v1/models/lr/async",
        json={"input_location": "inputs/five.csv", "accept": "application/json"},
    )
    assert asked.status_code == 202, asked.text
    token = asked.json()["job_id"]
    assert wait(stack, [token])[token]["accept"] == codecs.JSON
    assert stack.client.get(f"/v1/jobs/{token}/result").json() == {
        "predictions": codecs.json_safe(expected).to_pylist()
    }
