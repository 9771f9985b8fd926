"""Session-wide real services and per-test stores (local folder and S3 over HTTP)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from serving.registry import Registry
from serving.settings import AwsSettings
from serving.store import Store
from tests.services import ensure_redis, moto_s3_server


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The test Redis; what the session added to its database is deleted at the end (Celery's
    bindings, the jobs' counters), so a run leaves the database as it found it."""
    url = ensure_redis()
    client = redis.Redis.from_url(url)
    before = set(client.keys("*"))
    yield url
    added = set(client.keys("*")) - before
    if added:
        client.delete(*added)
    client.close()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with moto_s3_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def aws(s3_endpoint: str) -> AwsSettings:
    return AwsSettings(
        endpoint_url=s3_endpoint, access_key_id="test", secret_access_key="test", region="us-east-1"
    )


@pytest.fixture
def s3_url(aws: AwsSettings) -> str:
    """A fresh bucket on the S3 server, as an ``s3://`` store URL."""
    import boto3

    bucket = f"mmserve-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=aws.endpoint_url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/root"


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path) -> Store:
    """The same tests against a local folder and against the S3 server over HTTP."""
    if request.param == "local":
        return Store.from_url(str(tmp_path / "store"))
    return Store.from_url(request.getfixturevalue("s3_url"), request.getfixturevalue("aws"))


@pytest.fixture
def registry(store: Store) -> Registry:
    return Registry(store)
