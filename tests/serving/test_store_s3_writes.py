"""Writes to an S3 store, as the S3 server saw them (moto's own request log): one PUT for a
small object, one multipart upload completed in one step for a large one, never a copy of a
temporary key; a failed write leaves no object and no incomplete upload behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import boto3
import httpx
import pytest

from serving.errors import AlreadyExists
from serving.settings import AwsSettings
from serving.store import Store
from tests.services import moto_s3_server

MIB = 1 << 20


class S3:
    """A moto server of this module's own, recording every request it gets."""

    def __init__(self, endpoint: str, log: Path):
        self.endpoint, self.log = endpoint, log
        self.aws = AwsSettings(
            endpoint_url=endpoint, access_key_id="test", secret_access_key="test", part_mb=5
        )
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        )

    def store(self) -> tuple[Store, str]:
        bucket = f"w-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=bucket)
        httpx.post(f"{self.endpoint}/moto-api/recorder/reset-recording").raise_for_status()
        return Store.from_url(f"s3://{bucket}/root", self.aws), bucket

    def requests(self) -> list[str]:
        """Each request since the store was made, as ``OPERATION key``."""
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [_operation(json.loads(line)) for line in lines]

    def uploads(self, bucket: str) -> list[str]:
        listed = self.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        return [upload["Key"] for upload in listed]

    def keys(self, bucket: str) -> list[str]:
        listed = self.client.list_objects_v2(Bucket=bucket).get("Contents", [])
        return sorted(o["Key"] for o in listed)


def _operation(entry: dict[str, Any]) -> str:
    url = urlparse(entry["url"])
    query, key = parse_qs(url.query, keep_blank_values=True), url.path.split("/", 2)[2]
    method, headers = entry["method"], {k.lower(): v for k, v in entry["headers"].items()}
    if method == "PUT" and "x-amz-copy-source" in headers:
        name = "CopyObject"
    elif method == "PUT":
        name = "UploadPart" if "partNumber" in query else "PutObject"
    elif method == "POST":
        name = "CreateMultipartUpload" if "uploads" in query else "CompleteMultipartUpload"
    elif method == "DELETE":
        name = "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    else:
        name = f"{method}Object"
    if "if-none-match" in headers:
        name += "(If-None-Match)"
    return f"{name} {key}"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    log = tmp_path_factory.mktemp("moto") / "requests.jsonl"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MOTO_RECORDER_FILEPATH", str(log))
        env.setenv("MOTO_ENABLE_RECORDING", "1")
        with moto_s3_server() as endpoint:
            yield S3(endpoint, log)


def test_a_small_object_is_one_put(s3: S3) -> None:
    store, _ = s3.store()
    store.write("jobs/t1/output", b"answer")
    with store.open_output("jobs/t1/input") as out:
        out.write(b"a,b\n1,2\n")
    assert s3.requests() == ["PutObject root/jobs/t1/output", "PutObject root/jobs/t1/input"]
    assert store.read("jobs/t1/input") == b"a,b\n1,2\n"


def test_a_large_object_is_one_multipart_upload_without_a_copy(s3: S3) -> None:
    store, bucket = s3.store()
    data = os.urandom(11 * MIB)
    with store.open_output("out/part-00000.parquet") as out:
        for start in range(0, len(data), 3 * MIB):
            out.write(data[start : start + 3 * MIB])
    key = "root/out/part-00000.parquet"
    assert s3.requests() == [
        f"CreateMultipartUpload {key}",
        f"UploadPart {key}",
        f"UploadPart {key}",
        f"UploadPart {key}",
        f"CompleteMultipartUpload {key}",
    ]
    assert store.read("out/part-00000.parquet") == data
    assert s3.uploads(bucket) == []


def test_a_failed_large_write_leaves_no_object_and_no_upload(s3: S3) -> None:
    store, bucket = s3.store()
    with pytest.raises(RuntimeError), store.open_output("out/part-00001.parquet") as out:
        out.write(os.urandom(7 * MIB))
        raise RuntimeError("the scorer failed mid-part")
    key = "root/out/part-00001.parquet"
    assert s3.requests() == [
        f"CreateMultipartUpload {key}",
        f"UploadPart {key}",
        f"AbortMultipartUpload {key}",
    ]
    assert s3.keys(bucket) == []
    assert s3.uploads(bucket) == []


def test_a_failed_small_write_sends_nothing(s3: S3) -> None:
    store, bucket = s3.store()
    with pytest.raises(RuntimeError), store.open_output("jobs/t2/input") as out:
        out.write(b"partial")
        raise RuntimeError("the client went away")
    assert s3.requests() == []
    assert s3.keys(bucket) == []


def test_exclusive_creates_are_conditional_whatever_their_size(s3: S3) -> None:
    store, bucket = s3.store()
    big = os.urandom(6 * MIB)
    store.create("jobs/t3/output", big)
    with pytest.raises(AlreadyExists):
        store.create("jobs/t3/output", os.urandom(6 * MIB))
    store.create("jobs/t3/job.json", b"{}")
    with pytest.raises(AlreadyExists):
        store.create("jobs/t3/job.json", b"{ }")
    key = "root/jobs/t3/output"
    assert s3.requests() == [
        f"CreateMultipartUpload {key}",
        f"UploadPart {key}",
        f"UploadPart {key}",
        f"CompleteMultipartUpload(If-None-Match) {key}",
        f"CreateMultipartUpload {key}",
        f"UploadPart {key}",
        f"UploadPart {key}",
        f"CompleteMultipartUpload(If-None-Match) {key}",
        f"AbortMultipartUpload {key}",
        "PutObject(If-None-Match) root/jobs/t3/job.json",
        "PutObject(If-None-Match) root/jobs/t3/job.json",
    ]
    assert (store.read("jobs/t3/output"), store.read("jobs/t3/job.json")) == (big, b"{}")
    assert s3.uploads(bucket) == []


def test_clean_removes_old_temporaries_and_incomplete_uploads(s3: S3) -> None:
    store, bucket = s3.store()
    s3.client.put_object(Bucket=bucket, Key="root/out/.tmp-0a1b-part-00000.parquet", Body=b"x")
    s3.client.create_multipart_upload(Bucket=bucket, Key="root/out/part-00002.parquet")
    s3.client.create_multipart_upload(Bucket=bucket, Key="elsewhere/not-ours")
    store.write("out/part-00000.parquet", b"kept")
    # The temporary is too young; moto says every upload was initiated in 2010.
    assert store.clean(older_than_s=3600) == (0, 1)
    time.sleep(1.1)
    assert store.clean(older_than_s=1) == (1, 0)
    assert s3.keys(bucket) == ["root/out/part-00000.parquet"]
    assert s3.uploads(bucket) == ["elsewhere/not-ours"]


def test_clean_removes_old_local_temporaries(tmp_path: Path) -> None:
    store = Store.from_url(str(tmp_path / "store"))
    store.write("out/part-00000.parquet", b"kept")
    orphan = tmp_path / "store" / "out" / ".tmp-0a1b-part-00001.parquet"
    orphan.write_bytes(b"half")
    assert store.clean(older_than_s=3600) == (0, 0)
    os.utime(orphan, (time.time() - 7200, time.time() - 7200))
    assert store.clean(older_than_s=3600) == (1, 0)
    assert sorted(p.name for p in (tmp_path / "store" / "out").iterdir()) == ["part-00000.parquet"]


def test_mmserve_store_clean_removes_what_killed_writes_left(tmp_path: Path) -> None:
    root = tmp_path / "store"
    Store.from_url(str(root)).write("jobs/t4/input", b"kept")
    orphan = root / "jobs" / "t4" / ".tmp-0a1b-output"
    orphan.write_bytes(b"half")
    os.utime(orphan, (time.time() - 2 * 86400, time.time() - 2 * 86400))
    mmserve = Path(sys.executable).parent / "mmserve"
    done = subprocess.run(
        [str(mmserve), "store", "clean", str(root)], capture_output=True, text=True, check=True
    )
    assert done.stdout == (
        f"removed 1 temporary files and aborted 0 incomplete uploads older than 24 h in {root}\n"
    )
    assert sorted(p.name for p in (root / "jobs" / "t4").iterdir()) == ["input"]
