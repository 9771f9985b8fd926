"""The registry, on a local folder and on an S3 server over HTTP."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import joblib
import numpy as np
import pyarrow as pa
import pytest
import skops.io as sio

from serving import runtimes
from serving.errors import (
    AliasInUse,
    AliasNotFound,
    InvalidName,
    InvalidReference,
    MissingColumn,
    ModelNotFound,
    NotApproved,
    TamperedArtifact,
    UntrustedArtifact,
    VersionNotFound,
)
from serving.registry import Registry
from serving.settings import RegistrySettings
from serving.store import Store
from tests import fixtures


def test_versions_are_numbered_in_order_with_full_metadata(registry: Registry) -> None:
    first = registry.register(
        fixtures.logistic(), "churn", description="first", tags={"team": "growth"}
    )
    second = registry.register(fixtures.forest(), "churn")
    assert (first.version, second.version) == (1, 2)
    assert registry.version_numbers("churn") == [1, 2]
    assert registry.models() == ["churn"]
    mv = registry.get("churn:1")
    artifact = registry.store.read("registry/churn/1/model.skops")
    assert mv.sha256 == hashlib.sha256(artifact).hexdigest()
    assert mv.size_bytes == len(artifact)
    assert (mv.flavor, mv.task, mv.method, mv.approval) == (
        "sklearn-skops",
        "classifier",
        "predict_proba",
        "approved",
    )
    assert [(f.name, f.dtype) for f in mv.inputs] == [(n, "double") for n in fixtures.FEATURES]
    assert mv.outputs == ["label", "proba_0", "proba_1"]
    assert mv.classes == [0, 1]
    assert (mv.description, mv.tags) == ("first", {"team": "growth"})
    assert set(mv.libraries) >= {"python", "scikit-learn", "numpy", "pyarrow", "skops"}


def test_references_resolve_to_production_then_newest(registry: Registry) -> None:
    for _ in range(3):
        registry.register(fixtures.logistic(), "churn")
    assert registry.resolve("churn") == ("churn", 3)
    registry.set_alias("churn", "production", 2)
    registry.set_alias("churn", "staging", 1)
    assert registry.resolve("churn") == ("churn", 2)
    assert registry.resolve("churn@staging") == ("churn", 1)
    assert registry.resolve("churn:3") == ("churn", 3)
    assert registry.aliases("churn") == {"production": 2, "staging": 1}
    registry.remove_alias("churn", "staging")
    assert registry.aliases("churn") == {"production": 2}


def test_regressor_metadata(registry: Registry) -> None:
    mv = registry.register(fixtures.regressor(), "price")
    assert (mv.task, mv.method, mv.outputs, mv.classes) == (
        "regressor",
        "predict",
        ["prediction"],
        None,
    )


def test_mixed_pipeline_schema_comes_from_the_example(registry: Registry) -> None:
    frame, _ = fixtures.mixed_frame()
    mv = registry.register(fixtures.mixed_pipeline(), "mixed", input_example=frame.head(5))
    assert [(f.name, f.dtype) for f in mv.inputs] == [
        ("age", "double"),
        ("income", "double"),
        ("plan", "string"),
        ("region", "string"),
    ]


def test_explicit_schema_and_nullable_features(registry: Registry) -> None:
    schema = {name: "float32" for name in fixtures.FEATURES}
    mv = registry.register(fixtures.logistic(), "m", schema=schema, nullable=["f3"])
    assert [(f.name, f.dtype, f.nullable) for f in mv.inputs] == [
        (n, "float", n == "f3") for n in fixtures.FEATURES
    ]


def test_a_schema_that_does_not_fit_the_model_is_refused(registry: Registry) -> None:
    x, _ = fixtures.numeric_data(4)
    example = fixtures.numeric_table(x).append_column("customer_id", codecs_ids(4))
    with pytest.raises(InvalidName) as info:
        registry.register(fixtures.logistic(), "m", input_example=example)
    assert info.value.message == (
        "invalid input schema 'f0, f1, f2, f3, f4, customer_id': "
        "the model takes 5 features, the schema names 6"
    )
    with pytest.raises(MissingColumn) as missing:
        registry.register(fixtures.logistic(), "m", nullable=["nope"])
    assert missing.value.message == "missing column 'nope'"
    assert registry.models() == []


def codecs_ids(rows: int) -> pa.Array:
    return pa.array([f"c{i}" for i in range(rows)])


@pytest.mark.parametrize(
    ("ref", "error", "message"),
    [
        ("ghost", ModelNotFound, "model 'ghost' is not registered"),
        ("ghost:1", ModelNotFound, "model 'ghost' is not registered"),
        ("ghost@production", ModelNotFound, "model 'ghost' is not registered"),
        ("churn:9", VersionNotFound, "model 'churn' has no version 9"),
        ("churn@canary", AliasNotFound, "model 'churn' has no alias 'canary'"),
    ],
)
def test_unknown_models_versions_and_aliases_each_say_so(registry, ref, error, message) -> None:
    registry.register(fixtures.logistic(), "churn")
    with pytest.raises(error) as info:
        registry.load(ref)
    assert info.value.message == message
    assert info.value.status == 404


RULE = "use 1-64 characters: a-z, 0-9, '.', '_', '-', starting with a letter or digit"


@pytest.mark.parametrize("name", ["../x", "a/b", "", "x" * 200, "Churn", "-x", ".."])
def test_bad_names_are_refused_before_touching_the_store(registry: Registry, name: str) -> None:
    with pytest.raises(InvalidName) as info:
        registry.register(fixtures.logistic(), name)
    assert info.value.message == f"invalid model name {name!r}: {RULE}"
    assert registry.store.list("registry") == []


@pytest.mark.parametrize("ref", ["churn:0", "churn:x", "churn:", "churn:-1"])
def test_malformed_references_are_refused(registry: Registry, ref: str) -> None:
    with pytest.raises(InvalidReference) as info:
        registry.resolve(ref)
    assert info.value.message == (
        f"invalid model reference {ref!r}: expected 'name', 'name:<version>' or 'name@<alias>'"
    )


def test_bad_alias_names_are_refused(registry: Registry) -> None:
    registry.register(fixtures.logistic(), "churn")
    with pytest.raises(InvalidName) as info:
        registry.set_alias("churn", "../prod", 1)
    assert info.value.message == f"invalid alias '../prod': {RULE}"


def test_tampered_artifact_is_refused(registry: Registry) -> None:
    mv = registry.register(fixtures.logistic(), "churn")
    other = sio.dumps(fixtures.forest())
    registry.store.write("registry/churn/1/model.skops", other)
    with pytest.raises(TamperedArtifact) as info:
        registry.load("churn:1")
    assert info.value.message == (
        "artifact 'registry/churn/1/model.skops' fails its integrity check: sha256 is "
        f"{hashlib.sha256(other).hexdigest()}, registered as {mv.sha256}"
    )


def test_untrusted_pickle_is_refused_and_trusted_pickle_loads(registry: Registry, tmp_path) -> None:
    path = tmp_path / "legacy.joblib"
    joblib.dump(fixtures.logistic(), path)
    with pytest.raises(UntrustedArtifact) as info:
        registry.register(path, "legacy")
    assert info.value.message == (
        f"refusing to load {path}: pickle runs arbitrary code when loaded; register it with "
        "--trust-pickle (trust_pickle=True) only if you trust its author"
    )
    assert registry.models() == []
    mv = registry.register(path, "legacy", trust_pickle=True)
    assert (mv.flavor, mv.artifact, mv.trust_pickle) == ("sklearn-pickle", "model.joblib", True)
    x, _ = fixtures.numeric_data(10)
    out = registry.load("legacy").predict(fixtures.numeric_table(x))
    assert out["label"].to_pylist() == fixtures.logistic().predict(x).tolist()


def test_pickle_whose_trust_was_removed_from_metadata_is_refused(
    registry: Registry, tmp_path
) -> None:
    path = tmp_path / "legacy.pkl"
    joblib.dump(fixtures.logistic(), path)
    registry.register(path, "legacy", trust_pickle=True)
    meta = json.loads(registry.store.read("registry/legacy/1/model.json"))
    registry.store.write(
        "registry/legacy/1/model.json", json.dumps({**meta, "trust_pickle": False}).encode()
    )
    with pytest.raises(UntrustedArtifact) as info:
        registry.load("legacy:1")
    assert info.value.message.startswith("refusing to load legacy:1: pickle runs arbitrary code")


def test_skops_types_must_be_trusted_explicitly(registry: Registry, tmp_path) -> None:
    path = tmp_path / "neg.skops"
    sio.dump(fixtures.negating_pipeline(), path)
    with pytest.raises(UntrustedArtifact) as info:
        registry.register(path, "neg")
    assert info.value.message == (
        f"refusing to load {path}: it contains types that are not trusted: _operator.neg; "
        "trust them explicitly with --trust-type (trusted_types=[...])"
    )
    mv = registry.register(path, "neg", trusted_types=["_operator.neg"])
    assert mv.trusted_types == ["_operator.neg"]
    x, _ = fixtures.numeric_data(8)
    np.testing.assert_array_equal(
        registry.load("neg").predict(fixtures.numeric_table(x))["proba_1"].to_numpy(),
        fixtures.negating_pipeline().predict_proba(x)[:, 1],
    )


def test_files_that_are_not_model_artifacts_are_refused(registry: Registry, tmp_path) -> None:
    path = tmp_path / "model.bin"
    path.write_text("hello")
    with pytest.raises(UntrustedArtifact) as info:
        registry.register(path, "bin")
    assert info.value.message == (
        "refusing to load model.bin: its flavor cannot be told from its name or content: "
        f"name it with --flavor (one of {', '.join(runtimes.FLAVORS)})"
    )


def test_production_needs_an_approved_version(store: Store) -> None:
    registry = Registry(store, RegistrySettings(default_approval="pending"))
    registry.register(fixtures.logistic(), "churn")
    with pytest.raises(NotApproved) as info:
        registry.set_alias("churn", "production", 1)
    assert info.value.message == (
        "churn:1 is pending, not approved: alias 'production' only points at approved "
        "versions (approve it first, or force)"
    )
    with pytest.raises(NotApproved):
        registry.register(fixtures.logistic(), "churn", alias="production")
    assert registry.version_numbers("churn") == [1]
    registry.set_alias("churn", "staging", 1)  # unprotected aliases take any version
    assert registry.set_approval("churn:1", "approved").approval == "approved"
    registry.set_alias("churn", "production", 1)
    assert registry.resolve("churn") == ("churn", 1)


def test_forcing_production_onto_a_pending_version(store: Store) -> None:
    registry = Registry(store, RegistrySettings(default_approval="pending"))
    mv = registry.register(fixtures.logistic(), "churn", alias="production", force=True)
    assert (mv.approval, registry.aliases("churn")) == ("pending", {"production": 1})


def test_rejecting_the_production_version_needs_force(registry: Registry) -> None:
    registry.register(fixtures.logistic(), "churn", alias="production")
    with pytest.raises(AliasInUse) as info:
        registry.set_approval("churn:1", "rejected")
    assert (
        info.value.message
        == "churn:1 is the target of alias 'production': move the alias first, or force"
    )
    assert registry.set_approval("churn:1", "rejected", force=True).approval == "rejected"
    assert registry.get("churn:1").approval == "rejected"


def test_loads_are_cached_per_version(registry: Registry) -> None:
    registry.register(fixtures.logistic(), "churn", alias="production")
    first = registry.load("churn@production")
    assert registry.load("churn:1") is first
    assert registry.load("churn") is first
    entry = registry.cache.entry(("churn", 1))
    assert entry is not None and entry.load_seconds > 0 and entry.hits == 2
    registry.register(fixtures.forest(), "churn", alias="production")
    assert registry.load("churn").ref == "churn:2"


REGISTER_MANY = textwrap.dedent("""
    import sys
    from serving.registry import Registry
    from serving.settings import AwsSettings
    from serving.store import Store
    from tests.fixtures import logistic
    registry = Registry(Store.from_url(sys.argv[1], AwsSettings()))
    model = logistic()
    print(" ".join(str(registry.register(model, "race").version) for _ in range(6)))
""")


@pytest.mark.slow
def test_concurrent_registration_never_reuses_a_version(store: Store, tmp_path) -> None:
    env = dict(os.environ)
    aws = store._aws
    if aws is not None:
        env.update(
            AWS_ENDPOINT_URL=aws.endpoint_url,
            AWS_ACCESS_KEY_ID="test",
            AWS_SECRET_ACCESS_KEY="test",
        )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", REGISTER_MANY, store.url],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
            cwd=os.getcwd(),
        )
        for _ in range(3)
    ]
    versions = [int(v) for p in procs for v in p.communicate(timeout=120)[0].split()]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(versions) == list(range(1, 19))
    assert Registry(store).version_numbers("race") == list(range(1, 19))


def test_resolved_references_are_reused_for_the_alias_ttl(tmp_path) -> None:
    store = Store.from_url(str(tmp_path))
    server = Registry(store, RegistrySettings(alias_ttl_s=60))
    other = Registry(store)  # another process, e.g. the CLI
    other.register(fixtures.logistic(), "m", alias="production")
    other.register(fixtures.logistic(), "m")
    assert server.resolved("m") is None  # never asked: not known without the store
    assert server.resolve("m") == ("m", 1)
    other.set_alias("m", "production", 2)
    assert (server.resolve("m"), server.resolved("m")) == (("m", 1), ("m", 1))  # within the TTL
    server.set_alias("m", "production", 2)  # through this registry: seen at once
    assert server.resolve("m") == ("m", 2)
    assert Registry(store, RegistrySettings(alias_ttl_s=0)).resolve("m") == ("m", 2)
