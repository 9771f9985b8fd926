"""Settings come from MMSERVE_* and the standard AWS_* variables."""

from __future__ import annotations

import pytest

from serving.registry import Registry
from serving.settings import Settings


def test_defaults() -> None:
    settings = Settings()
    assert settings.store_url == "./.mmserve"
    assert (settings.cache.max_models, settings.registry.default_approval) == (32, "approved")
    assert (settings.broker_url, settings.redis, settings.admin_token) == (None, None, None)
    assert (settings.max_payload_bytes, settings.request_timeout_s) == (6 * 1024 * 1024, 60.0)


def test_redis_defaults_to_the_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMSERVE_BROKER_URL", "redis://127.0.0.1:6379/0")
    assert Settings().redis == "redis://127.0.0.1:6379/0"
    monkeypatch.setenv("MMSERVE_REDIS_URL", "redis://127.0.0.1:6379/3")
    assert Settings().redis == "redis://127.0.0.1:6379/3"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("MMSERVE_STORE_URL", str(tmp_path))
    monkeypatch.setenv("MMSERVE_CACHE__MAX_MODELS", "3")
    monkeypatch.setenv("MMSERVE_REGISTRY__DEFAULT_APPROVAL", "pending")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cret")
    settings = Settings()
    assert settings.store_url == str(tmp_path)
    assert (settings.cache.max_models, settings.registry.default_approval) == (3, "pending")
    assert (settings.aws.endpoint_url, settings.aws.region) == (
        "http://127.0.0.1:9000",
        "eu-west-1",
    )
    assert "s3cret" not in repr(settings)
    registry = Registry.from_settings(settings)
    assert (registry.store.url, registry.cache.max_items) == (str(tmp_path), 3)


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMSERVE_CACHE__MAX_MODELS", "0")
    with pytest.raises(ValueError, match="max_models"):
        Settings()
    monkeypatch.delenv("MMSERVE_CACHE__MAX_MODELS")
    monkeypatch.setenv("MMSERVE_MAX_PAYLOAD_BYTES", "lots")
    with pytest.raises(ValueError, match="max_payload_bytes"):
        Settings()
