"""The trust root outside the store: whoever can write the store can rewrite an artifact and
the sha256 recorded beside it; hashes pinned in the server's own settings refuse that artifact
before any byte of it is deserialized."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from pathlib import Path

import httpx
import joblib
import pytest
import skops.io as sio
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from serving.errors import UntrustedArtifact
from serving.registry import Registry
from serving.settings import RegistrySettings, Settings
from serving.store import Store
from tests import fixtures
from tests.services import mmserve_server


class _Payload:
    """A pickle that creates ``marker`` when it is loaded: what a store writer would plant."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.mkdir, (str(self.marker),))


def _register_pickle(registry: Registry, tmp_path: Path) -> str:
    path = tmp_path / "legit.joblib"
    joblib.dump(fixtures.logistic(), path)
    return registry.register(path, "legacy", trust_pickle=True).sha256


def _plant(store: Store, name: str, artifact: str, data: bytes, **meta: object) -> str:
    """Rewrite version 1's artifact *and* its recorded sha256, as a store writer can."""
    sha = hashlib.sha256(data).hexdigest()
    store.write(f"registry/{name}/1/{artifact}", data)
    old = json.loads(store.read(f"registry/{name}/1/model.json"))
    new = {**old, "sha256": sha, "size_bytes": len(data), **meta}
    store.write(f"registry/{name}/1/model.json", json.dumps(new).encode())
    return sha


def _malicious_pickle(marker: Path) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(_Payload(marker), buffer)
    return buffer.getvalue()


def test_without_a_trust_root_a_store_writer_runs_code_in_the_server(
    store: Store, tmp_path: Path
) -> None:
    """The risk the trust root closes (documented in SECURITY.md)."""
    registry = Registry(store)
    _register_pickle(registry, tmp_path)
    marker = tmp_path / "pwned"
    _plant(store, "legacy", "model.joblib", _malicious_pickle(marker))
    with contextlib.suppress(Exception):
        registry.load("legacy:1")
    assert marker.exists()


def test_pinned_hashes_refuse_a_rewritten_pickle_before_loading_it(
    store: Store, tmp_path: Path
) -> None:
    legit = _register_pickle(Registry(store), tmp_path)
    pinned = Registry(store, RegistrySettings(trusted_sha256=[legit.upper()]))
    x, _ = fixtures.numeric_data(4)
    assert pinned.load("legacy:1").predict(fixtures.numeric_table(x)).num_rows == 4
    marker = tmp_path / "pwned"
    planted = _plant(store, "legacy", "model.joblib", _malicious_pickle(marker))
    pinned = Registry(store, RegistrySettings(trusted_sha256=[legit]))  # a fresh cache
    with pytest.raises(UntrustedArtifact) as info:
        pinned.load("legacy:1")
    assert info.value.status == 403
    assert info.value.message == (
        f"refusing to load legacy:1: its sha256 {planted} is not among the trusted hashes "
        "(MMSERVE_REGISTRY__TRUSTED_SHA256, MMSERVE_REGISTRY__TRUSTED_SHA256_FILE)"
    )
    assert not marker.exists()


def test_a_rewritten_skops_artifact_and_its_trusted_types_are_refused(
    store: Store, tmp_path: Path
) -> None:
    """skops' trusted types live in the store too: a writer can trust ``posix.system``."""
    legit = Registry(store).register(fixtures.logistic(), "churn").sha256
    evil = make_pipeline(FunctionTransformer(os.system), fixtures.logistic())
    data = sio.dumps(evil)
    types = sio.get_untrusted_types(data=data)
    _plant(store, "churn", "model.skops", data, trusted_types=types)
    loaded = Registry(store).load("churn:1")  # no trust root: it loads, os.system and all
    assert loaded is not None
    pinned = Registry(store, RegistrySettings(trusted_sha256=[legit]))
    with pytest.raises(UntrustedArtifact) as info:
        pinned.load("churn:1")
    assert "is not among the trusted hashes" in info.value.message


def test_a_file_of_hashes_is_a_trust_root_and_an_unreadable_one_refuses_all(
    store: Store, tmp_path: Path
) -> None:
    legit = Registry(store).register(fixtures.logistic(), "churn").sha256
    pins = tmp_path / "trusted.txt"
    pins.write_text(f"# approved by the model review board\n\n{legit}  churn:1\n")
    assert Registry(store, RegistrySettings(trusted_sha256_file=pins)).load("churn:1")
    pins.write_text("not-a-hash\n")
    with pytest.raises(UntrustedArtifact) as info:
        Registry(store, RegistrySettings(trusted_sha256_file=pins)).load("churn:1")
    assert info.value.message == (
        f"refusing to load churn:1: the trusted hashes file {pins} line 1 is not a sha256: "
        "'not-a-hash'"
    )
    missing = tmp_path / "absent.txt"
    with pytest.raises(UntrustedArtifact) as info:
        Registry(store, RegistrySettings(trusted_sha256_file=missing)).load("churn:1")
    assert info.value.message == (
        f"refusing to load churn:1: the trusted hashes file {missing} cannot be read "
        "(No such file or directory)"
    )


def test_malformed_pinned_hashes_are_refused_at_startup() -> None:
    with pytest.raises(ValueError, match="not a sha256: 'abc'"):
        RegistrySettings(trusted_sha256=["abc"])


def test_pinned_hashes_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    sha = "ab" * 32
    monkeypatch.setenv("MMSERVE_REGISTRY__TRUSTED_SHA256", json.dumps([sha]))
    assert Settings().registry.trusted_sha256 == [sha]


@pytest.mark.slow
def test_a_server_with_a_trust_root_answers_403_for_a_planted_artifact(tmp_path: Path) -> None:
    store = Store.from_url(str(tmp_path / "store"))
    legit = _register_pickle(Registry(store), tmp_path)
    marker = tmp_path / "pwned"
    planted = _plant(store, "legacy", "model.joblib", _malicious_pickle(marker))
    env = {"MMSERVE_STORE_URL": store.url, "MMSERVE_REGISTRY__TRUSTED_SHA256": f'["{legit}"]'}
    with mmserve_server(env) as url:
        answer = httpx.post(
            f"{url}/v1/models/legacy:predict", json={"instances": [[0.1] * 5]}, timeout=30
        )
    assert answer.status_code == 403
    assert answer.json() == {
        "error": f"refusing to load legacy:1: its sha256 {planted} is not among the trusted "
        "hashes (MMSERVE_REGISTRY__TRUSTED_SHA256, MMSERVE_REGISTRY__TRUSTED_SHA256_FILE)"
    }
    assert not marker.exists()
