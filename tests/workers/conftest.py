"""Each job test module gets its own broker and stack, so one module's faults (a Redis
restart, killed workers) never reach another's."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from serving.settings import AwsSettings
from tests.services import RedisServer, redis_server
from tests.workers.stack import Stack, async_stack


@pytest.fixture(scope="module")
def broker() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture
def client(broker: RedisServer) -> Iterator[Any]:
    """A client of the module's Redis, emptied first (the stream tests')."""
    with redis.Redis.from_url(broker.url, decode_responses=True) as c:
        c.flushdb()
        yield c


@pytest.fixture(scope="module")
def stack(
    broker: RedisServer, aws: AwsSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with async_stack(broker, aws, tmp_path_factory.mktemp("logs")) as stack:
        yield stack
