"""Fixtures the batch tests share."""

from __future__ import annotations

import pytest

from tests.batch import engine_runs


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> engine_runs.World:
    """The churn registry, the 100,000-row dataset and the batch runner's answers to it,
    made once for the engine tests (Spark, Ray): a test that moves the alias moves it back."""
    return engine_runs.world(tmp_path_factory.mktemp("engines"))
