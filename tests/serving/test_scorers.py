"""Chain references: pinned step by step, loaded as a pipeline (one model stays the
registry's own predictor), bad steps named, bad rows set aside with the step that refused
them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from sklearn.linear_model import LogisticRegression

from serving import scorers
from serving.endpoints.pipeline import Pipeline, merge
from serving.errors import (
    AliasNotFound,
    InvalidName,
    InvalidReference,
    ModelNotFound,
    NullValue,
    VersionNotFound,
)
from serving.registry import Registry
from serving.settings import RegistrySettings
from serving.store import Store
from tests import fixtures
from tests.serving.endpoints.test_pipeline import register_pair, request


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    """``prep:1`` and ``scored:1`` (see ``register_pair``), ``scored:2`` (another fit),
    ``scored@champion`` -> 1: the bare name and the alias name different versions."""
    registry = Registry(Store.from_url(str(tmp_path / "store")), RegistrySettings(alias_ttl_s=0))
    register_pair(registry)
    x, y = fixtures.numeric_data()
    frame = fixtures.numeric_table(x).append_column("bonus", pa.array(np.zeros(len(x))))
    registry.register(LogisticRegression(C=0.01).fit(frame.to_pandas(), y), "scored")
    registry.set_alias("scored", "champion", 1)
    return registry


def by_hand(registry: Registry, table: pa.Table, scored: str = "scored:1") -> pa.Table:
    prep = registry.load("prep:1")
    return registry.load(scored).predict(merge(table, prep.predict(table)))


def test_a_chain_is_pinned_step_by_step_and_an_alias_step_is_pinned(registry: Registry) -> None:
    assert scorers.pin(registry, "prep,scored@champion") == "prep:1,scored:1"
    assert scorers.pin(registry, "prep, scored") == "prep:1,scored:2"
    assert scorers.pin(registry, "scored@champion") == "scored:1"
    assert scorers.pin(registry, "prep:1,scored:1") == "prep:1,scored:1"  # pinned stays
    registry.set_alias("scored", "champion", 2)
    assert scorers.pin(registry, "prep,scored@champion") == "prep:1,scored:2"


def test_a_bad_step_names_itself(registry: Registry) -> None:
    with pytest.raises(ModelNotFound, match="'nope'"):
        scorers.pin(registry, "prep:1,nope")
    with pytest.raises(VersionNotFound) as missing:
        scorers.load(registry, "prep:9,scored:1")
    assert (missing.value.name, missing.value.version) == ("prep", 9)
    with pytest.raises(AliasNotFound, match="gone"):
        scorers.pin(registry, "prep,scored@gone")
    with pytest.raises(InvalidReference, match="'scored:x'"):
        scorers.load(registry, "prep,scored:x")
    with pytest.raises(InvalidName, match="'Scored'"):
        scorers.pin(registry, "prep,Scored")
    with pytest.raises(InvalidReference, match="'prep,,scored'"):
        scorers.pin(registry, "prep,,scored")
    with pytest.raises(InvalidReference):
        scorers.load(registry, "prep,")


def test_one_model_loads_as_its_predictor_and_a_chain_as_a_pipeline(registry: Registry) -> None:
    assert scorers.load(registry, "scored:1") is registry.load("scored:1")
    chain = scorers.load(registry, "prep,scored@champion")
    assert isinstance(chain, Pipeline)
    assert chain.ref == "prep:1,scored:1"
    assert [f.name for f in chain.inputs] == [*fixtures.FEATURES, "bonus"]
    assert chain.outputs == ["label", "proba_0", "proba_1"]
    table = request(11)
    assert chain.predict(table).equals(by_hand(registry, table))


def test_a_chain_sets_bad_rows_aside_naming_the_step_that_refused_them(
    registry: Registry,
) -> None:
    table = request(10)
    f0, bonus = table.column("f0").to_pylist(), table.column("bonus").to_pylist()
    f0[2], bonus[7] = None, float("nan")  # prep refuses row 2; only scored takes bonus
    bad = table.set_column(0, "f0", pa.array(f0)).set_column(5, "bonus", pa.array(bonus))
    chain = scorers.load(registry, "prep:1,scored:1")
    scored, rejected = chain.predict_valid(bad, passthrough=["customer_id"])
    assert rejected == [
        (2, "step 1 (prep:1): column 'f0' has a null value"),
        (7, "step 2 (scored:1): column 'bonus' has a NaN value"),
    ]
    good = [i for i in range(10) if i not in (2, 7)]
    expected = by_hand(registry, table.take(good))
    assert scored.column("customer_id").to_pylist() == [f"c{i}" for i in good]
    assert scored.drop_columns(["customer_id"]).equals(expected)
    with pytest.raises(NullValue, match=r"^step 2 \(scored:1\): column 'bonus' has a NaN value"):
        chain.predict(bad.slice(7))


def test_labels_split_a_pinned_chain_into_names_and_versions() -> None:
    assert scorers.labels("fraud:7") == ("fraud", "7")
    assert scorers.labels("fraud-prep:1,fraud:7") == ("fraud-prep,fraud", "1,7")
    with pytest.raises(InvalidReference):
        scorers.labels("fraud-prep,fraud:7")
