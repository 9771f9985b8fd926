"""A real ``mmserve serve`` process over a store holding the test models."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest

from serving.registry import Registry
from serving.store import Store
from tests import fixtures
from tests.services import mmserve_server

PAYLOAD_LIMIT = 64 * 1024


@dataclass
class Server:
    url: str
    registry: Registry
    client: httpx.Client


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving_test_models(tmp_path_factory) as server:
        yield server


@contextmanager
def serving_test_models(
    tmp_path_factory: pytest.TempPathFactory, **env: str
) -> Iterator[Server]:
    """A real ``mmserve serve`` over a new store of the test models; ``env`` adds settings."""
    store_dir = tmp_path_factory.mktemp("served")
    registry = Registry(Store.from_url(str(store_dir)))
    registry.register(fixtures.logistic(), "lr", alias="production")
    registry.register(fixtures.forest(), "lr", alias="staging")
    frame, _ = fixtures.mixed_frame()
    registry.register(fixtures.mixed_pipeline(), "mixed", input_example=frame.head(5))
    registry.register(fixtures.regressor(), "price")
    x, y = fixtures.numeric_data(10)
    registry.register(
        fixtures.ErrorModel().fit(x, y), "broken", flavor="sklearn-pickle", trust_pickle=True
    )
    env = {
        "MMSERVE_STORE_URL": str(store_dir),
        "MMSERVE_MAX_PAYLOAD_BYTES": str(PAYLOAD_LIMIT),
        # The server unpickles tests.fixtures.ErrorModel: it must be importable there.
        "PYTHONPATH": os.getcwd(),
        **env,
    }
    with mmserve_server(env) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield Server(url, registry, client)
