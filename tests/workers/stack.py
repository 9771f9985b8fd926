"""The async stack the job tests share: a real ``mmserve serve`` on moto's S3 server as the
store and a throwaway Redis as the broker, and the helpers that drive it over HTTP."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx

from serving.registry import Registry
from serving.settings import AwsSettings
from serving.store import Store
from tests import fixtures
from tests.services import RedisServer, mmserve_process

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


@contextmanager
def async_stack(broker: RedisServer, aws: AwsSettings, logs: Path) -> Iterator[Stack]:
    """A versioned bucket (versions show how many times an object was written) with the
    test models registered, and a server on it."""
    bucket = f"jobs-{uuid.uuid4().hex[:12]}"
    s3 = s3_client(str(aws.endpoint_url))
    s3.create_bucket(Bucket=bucket)
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
        "MMSERVE_JOBS__CALLBACK_ALLOWED": '["127.0.0.1"]',  # the tests' hooks; not 127.0.0.2
        "PYTHONPATH": os.getcwd(),  # the workers unpickle tests.fixtures models
    }
    with (
        mmserve_process(env) as (url, proc),
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        yield Stack(url, client, store, bucket, env, broker, proc.pid, logs)


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


def metric(stack: Stack, sample: str) -> float:
    """The value of one sample (name and labels, as exposed) on ``/metrics``; 0 if absent."""
    for line in stack.client.get("/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def succeeded(stack: Stack, tokens: list[str]) -> int:
    return sum(stack.client.get(f"/v1/jobs/{t}").json()["status"] == "succeeded" for t in tokens)


def output_writes(stack: Stack) -> dict[str, int]:
    """How many times each job's output was written (versions of ``jobs/<token>/output``),
    from one listing: moto reads a versioned bucket whole for every listing call."""
    counts: dict[str, int] = {}
    pages = s3_client(stack.env["AWS_ENDPOINT_URL"]).get_paginator("list_object_versions")
    for page in pages.paginate(Bucket=stack.bucket, Prefix="root/jobs/"):
        for version in page.get("Versions", []):
            *_, token, name = version["Key"].split("/")
            if name == "output":
                counts[token] = counts.get(token, 0) + 1
    return counts


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc")


def s3_client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
