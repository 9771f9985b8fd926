"""Pipelines: each model's outputs merged over its inputs feed the next; the answer equals
applying the models by hand, bit for bit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from serving.endpoints.pipeline import Pipeline, merge
from serving.errors import MissingColumn
from serving.registry import Registry
from tests import fixtures


def register_pair(registry: Registry) -> None:
    """``prep`` scales f0..f4 (its outputs keep their names); ``scored`` takes the scaled
    features and ``bonus``, a request column no step outputs."""
    x, y = fixtures.numeric_data()
    frame = pd.DataFrame(x, columns=fixtures.FEATURES)
    scaler = StandardScaler().fit(frame)
    scaled = pd.DataFrame(scaler.transform(frame), columns=fixtures.FEATURES)
    scaled["bonus"] = np.linspace(-1, 1, len(scaled))
    registry.register(scaler, "prep")
    registry.register(LogisticRegression().fit(scaled, y), "scored")


def request(rows: int, seed: int = 5) -> pa.Table:
    x, _ = fixtures.numeric_data(rows, seed=seed)
    table = fixtures.numeric_table(x)
    return table.append_column("bonus", pa.array(np.linspace(0, 1, rows))).append_column(
        "customer_id", pa.array([f"c{i}" for i in range(rows)])
    )


def test_a_pipeline_equals_its_models_applied_by_hand(registry: Registry) -> None:
    register_pair(registry)
    prep, scored = registry.load("prep"), registry.load("scored")
    pipeline = Pipeline([prep, scored])
    assert [f.name for f in pipeline.inputs] == [*fixtures.FEATURES, "bonus"]
    assert pipeline.outputs == ["label", "proba_0", "proba_1"]
    assert pipeline.ref == "prep:1,scored:1"
    table = request(13)
    by_hand = scored.predict(merge(table, prep.predict(table)), passthrough=["customer_id"])
    assert pipeline.predict(table, passthrough=["customer_id"]).equals(by_hand)
    with pytest.raises(MissingColumn, match="missing column 'account'"):
        pipeline.predict(table, passthrough=["account"])


def test_merge_replaces_same_named_columns_and_adds_the_others() -> None:
    inputs = pa.table({"a": [1.0, 2.0], "b": ["x", "y"]})
    merged = merge(inputs, pa.table({"a": [10.0, 20.0], "c": [0, 1]}))
    assert merged.to_pydict() == {"a": [10.0, 20.0], "b": ["x", "y"], "c": [0, 1]}
