"""The real services the suite relies on: Redis answers, moto's S3 server speaks S3."""

from __future__ import annotations

import boto3
import redis

from tests.services import ensure_redis, free_port


def test_the_test_redis_answers(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    assert client.ping() is True
    client.set("mmserve:test:ping", "pong", ex=5)
    assert client.get("mmserve:test:ping") == b"pong"


def test_ensure_redis_starts_a_server_when_none_answers() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    assert ensure_redis(url) == url
    client = redis.Redis.from_url(url)
    try:
        assert client.ping() is True
    finally:
        client.shutdown(nosave=True)


def test_moto_serves_s3_over_http(s3_endpoint: str) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="t",
        aws_secret_access_key="t",
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket="services-check")
    s3.put_object(Bucket="services-check", Key="k", Body=b"v")
    assert s3.get_object(Bucket="services-check", Key="k")["Body"].read() == b"v"
