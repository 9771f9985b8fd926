"""A store that is down or hangs: every call ends within the store's timeouts with a 503
naming the store, and loaded models keep answering from their last known resolution for
``stale_resolution_s`` (item 13 of issue 16). The S3 server is real; a proxy in front of
it refuses or hangs its connections."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from serving.errors import StoreUnavailable
from serving.registry import Registry
from serving.settings import AwsSettings, RegistrySettings
from serving.store import Store
from tests import fixtures
from tests.proxy import Proxy, proxy

FAST = {"connect_timeout_s": 0.5, "request_timeout_s": 0.5, "max_attempts": 1}


@pytest.fixture
def cut(s3_endpoint: str) -> Iterator[Proxy]:
    with proxy(s3_endpoint) as p:
        yield p


def _store(s3_url: str, cut: Proxy) -> Store:
    aws = AwsSettings(endpoint_url=cut.url, access_key_id="test", secret_access_key="test", **FAST)
    return Store.from_url(s3_url, aws)


def test_store_settings_take_field_names_and_environment(monkeypatch) -> None:
    assert AwsSettings(region="eu-west-1", **FAST).model_dump(
        include={"region", *FAST}
    ) == {"region": "eu-west-1", **FAST}
    monkeypatch.setenv("MMSERVE_STORE_CONNECT_TIMEOUT_S", "1.5")
    monkeypatch.setenv("MMSERVE_STORE_REQUEST_TIMEOUT_S", "7")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    aws = AwsSettings()
    assert (aws.connect_timeout_s, aws.request_timeout_s, aws.max_attempts) == (1.5, 7.0, 2)


@pytest.mark.parametrize("mode", ["down", "hang"])
def test_every_store_call_ends_with_503_naming_the_store(s3_url, cut, mode) -> None:
    store = _store(s3_url, cut)
    store.write("k", b"v")
    cut.set(mode)
    calls = {
        "read": lambda: store.read("k"),  # boto3
        "exists": lambda: store.exists("k"),  # pyarrow
        "list": lambda: store.list(""),
        "stream": lambda: b"".join(store.stream("k")),
    }
    for call in calls.values():
        with pytest.raises(StoreUnavailable) as info:
            call()
        assert info.value.status == 503
        assert info.value.message.startswith(f"object store {s3_url} is unavailable: ")


def test_store_errors_never_show_credentials() -> None:
    err = StoreUnavailable("s3://AKIDEXAMPLE:secret@bucket/root", OSError("refused"))
    assert err.message == "object store s3://bucket/root is unavailable: refused"
    assert err.url == "s3://bucket/root"


def test_loaded_models_answer_from_their_last_resolution_while_the_store_is_away(
    s3_url, cut
) -> None:
    store = _store(s3_url, cut)
    settings = RegistrySettings(alias_ttl_s=0, stale_resolution_s=600)
    registry = Registry(store, settings)
    registry.register(fixtures.logistic(), "m", alias="production")
    registry.register(fixtures.logistic(), "never-loaded")
    loaded = registry.load("m@production")
    assert registry.load("m") is loaded
    rows = fixtures.numeric_table(fixtures.numeric_data(3)[0])
    for mode in ("down", "hang"):
        cut.set(mode)
        for ref in ("m@production", "m", "m:1"):
            assert registry.load(ref) is loaded
            assert registry.load(ref).predict(rows).num_rows == 3
        age = registry.staleness("m@production")
        assert age is not None and age >= 0
        assert registry.staleness("m:1") is None  # a pinned version needs no resolution
        for ref in ("never-loaded", "m:2", "m@staging"):
            with pytest.raises(StoreUnavailable) as info:
                registry.load(ref)
            assert info.value.message.startswith(f"object store {s3_url} is unavailable: ")
    cut.set("up")
    assert registry.load("m@production") is loaded
    assert registry.staleness("m@production") is None  # confirmed again


def test_past_the_bound_a_stale_resolution_is_a_503_naming_the_store(s3_url, cut) -> None:
    store = _store(s3_url, cut)
    registry = Registry(store, RegistrySettings(alias_ttl_s=0, stale_resolution_s=0))
    registry.register(fixtures.logistic(), "m", alias="production")
    loaded = registry.load("m@production")
    cut.set("down")
    with pytest.raises(StoreUnavailable) as info:
        registry.load("m@production")
    assert info.value.message.startswith(f"object store {s3_url} is unavailable: ")
    assert registry.load("m:1") is loaded  # the version itself is still loaded
