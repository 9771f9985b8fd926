"""``mmserve models delete`` and ``mmserve endpoints delete``, run as a user runs them, against
a local store and the S3 server."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner, Result

from serving.cli import app
from serving.endpoints import files
from serving.endpoints.catalog import Endpoints
from serving.endpoints.state import Rollout
from serving.errors import VersionInUse, VersionNotFound
from serving.registry import Registry
from serving.settings import AwsSettings
from serving.store import Store
from tests import fixtures

ENDPOINTS = """
endpoints:
  churn:
    variants:
      - {name: blue, model: lr@production, weight: 90}
      - {name: green, model: lr:3, weight: 10}
  other:
    variants: [{name: only, model: lr@production}]
"""


def mmserve(store: Store, request: pytest.FixtureRequest, *args: str) -> Result:
    env: dict[str, str | None] = {"MMSERVE_STORE_URL": store.url, "COLUMNS": "200"}
    if not store.is_local:
        aws: AwsSettings = request.getfixturevalue("aws")
        env |= {"AWS_ENDPOINT_URL": aws.endpoint_url, "AWS_ACCESS_KEY_ID": "test",
                "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}  # fmt: skip
    return CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def versions(registry: Registry) -> Registry:
    """lr:1 production, lr:2 no alias, lr:3 staging (and an endpoint's variant)."""
    registry.register(fixtures.logistic(), "lr", alias="production")
    registry.register(fixtures.forest(), "lr")
    registry.register(fixtures.logistic(), "lr", alias="staging")
    return registry


def test_models_delete_removes_a_version_no_alias_points_at(
    versions: Registry, request: pytest.FixtureRequest
) -> None:
    store = versions.store
    deleted = mmserve(store, request, "models", "delete", "lr:2")
    assert (deleted.exit_code, deleted.stdout) == (0, "deleted lr:2\n")
    assert versions.version_numbers("lr") == [1, 3]
    # Its objects are gone; the claim stays, so the number is never given to another model.
    assert store.walk("registry/lr/2") == [".claim"]
    shown = mmserve(store, request, "models", "show", "lr:2")
    assert (shown.exit_code, shown.stderr) == (1, "error: model 'lr' has no version 2\n")
    assert versions.register(fixtures.forest(), "lr").version == 4
    again = mmserve(store, request, "models", "delete", "lr:2")
    assert (again.exit_code, again.stderr) == (1, "error: model 'lr' has no version 2\n")


def test_models_delete_refuses_a_version_aliases_point_at(
    versions: Registry, request: pytest.FixtureRequest
) -> None:
    versions.set_alias("lr", "champion", 1)
    refused = mmserve(versions.store, request, "models", "delete", "lr:1")
    assert (refused.exit_code, refused.stderr) == (
        1,
        "error: lr:1 is in use, by alias 'champion' and alias 'production': point them at "
        "another version first\n",
    )
    assert versions.version_numbers("lr") == [1, 2, 3]
    assert versions.load("lr@production").ref == "lr:1"


def test_models_delete_refuses_a_version_an_endpoint_names(
    versions: Registry, request: pytest.FixtureRequest
) -> None:
    Endpoints(versions.store).apply(files.parse(ENDPOINTS))
    versions.remove_alias("lr", "staging")
    refused = mmserve(versions.store, request, "models", "delete", "lr:3")
    assert (refused.exit_code, refused.stderr) == (
        1,
        "error: lr:3 is in use, by endpoint 'churn' (variant green): point it at another "
        "version first\n",
    )
    assert versions.version_numbers("lr") == [1, 2, 3]


def test_models_delete_takes_a_version_only(
    versions: Registry, request: pytest.FixtureRequest
) -> None:
    for ref in ("lr", "lr@staging"):
        refused = mmserve(versions.store, request, "models", "delete", ref)
        assert (refused.exit_code, refused.stderr) == (
            2,
            f"error: give NAME:VERSION (lr:3), not {ref!r}: a version is deleted by its number\n",
        )
    assert versions.version_numbers("lr") == [1, 2, 3]


def test_a_deleted_version_leaves_the_cache_of_the_process_that_deleted_it(
    versions: Registry,
) -> None:
    assert versions.load("lr:2").ref == "lr:2"
    versions.delete_version("lr", 2)
    assert versions.cache.entry(("lr", 2)) is None
    with pytest.raises(VersionNotFound):
        versions.load("lr:2")
    with pytest.raises(VersionInUse):
        versions.delete_version("lr", 1)


def test_endpoints_delete_removes_an_endpoint(
    registry: Registry, request: pytest.FixtureRequest
) -> None:
    registry.register(fixtures.logistic(), "lr", alias="production")
    registry.register(fixtures.logistic(), "lr", alias="staging")
    registry.register(fixtures.logistic(), "lr")
    endpoints = Endpoints(registry.store)
    endpoints.apply(files.parse(ENDPOINTS))
    deleted = mmserve(registry.store, request, "endpoints", "delete", "churn")
    assert (deleted.exit_code, deleted.stdout) == (0, "deleted endpoint churn\n")
    assert endpoints.names() == ["other"]
    assert registry.store.walk("endpoints/churn") == []
    listed = mmserve(registry.store, request, "endpoints", "list")
    assert " other " in listed.stdout and " churn " not in listed.stdout
    unknown = mmserve(registry.store, request, "endpoints", "delete", "churn")
    assert (unknown.exit_code, unknown.stderr) == (
        1,
        "error: endpoint 'churn' does not exist (endpoints: other)\n",
    )
    # The version it pinned is free to delete now.
    assert mmserve(registry.store, request, "models", "delete", "lr:3").exit_code == 0


def test_endpoints_delete_refuses_an_endpoint_in_a_rollout(
    registry: Registry, request: pytest.FixtureRequest
) -> None:
    registry.register(fixtures.logistic(), "lr", alias="production")
    registry.register(fixtures.logistic(), "lr")
    registry.register(fixtures.logistic(), "lr")
    endpoints = Endpoints(registry.store)
    endpoints.apply(files.parse(ENDPOINTS))
    rollout = Rollout(id="r1", kind="variant", strategy="canary:10%,wait=5m", target="green",
                      before={"blue": 90, "green": 10}, steps=2)  # fmt: skip
    endpoints.update_state("churn", lambda state: state.changed(rollout=rollout))
    refused = mmserve(registry.store, request, "endpoints", "delete", "churn")
    assert (refused.exit_code, refused.stderr) == (
        1,
        "error: endpoint 'churn' is in a rollout (variant to green): wait for it, or end it "
        "with `mmserve endpoints rollback churn`\n",
    )
    assert endpoints.names() == ["churn", "other"]
