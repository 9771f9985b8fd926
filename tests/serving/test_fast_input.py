"""The fast input path answers as the checked path and as the library's own call, bit for bit,
for every model of the real-time benchmark's set (``benchmarks/realistic.py``).

The fast path is what a request that already fits takes: JSON rows of numbers decoded into
one matrix, or a table of exactly the registered columns and types. The checked path is
what any other request takes (columns in another order, an extra column): selection, casts,
per-column checks. A model fitted on a DataFrame is called with its matrix twin where that
answers as the DataFrame does (``serving/runtimes/sklearn.py``); the library's own call here
is always the DataFrame one. Calls are compared on 8 rows (a multiple of ``row_block``): a
one-row request is answered as the first of 8 copies of its row.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from benchmarks import realistic
from serving.codecs import Records, v1
from serving.errors import MissingColumn
from serving.predictor import Predictor
from serving.registry import Registry
from serving.runtimes import sklearn as sklearn_runtime
from serving.store import Store

MODELS = list(realistic.MODELS)


@pytest.fixture(scope="module")
def fitted() -> dict[str, realistic.Fitted]:
    return realistic.fit(tuple(MODELS), rows=2_000)


@pytest.fixture(scope="module")
def predictors(
    fitted: dict[str, realistic.Fitted], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Predictor]:
    registry = Registry(Store.from_url(str(tmp_path_factory.mktemp("store"))))
    for model in fitted.values():
        registry.register(model.model, model.name, input_example=model.example, **model.options)
    return {name: registry.load(f"{name}:1") for name in fitted}


def _rows(model: realistic.Fitted, count: int) -> pa.Table:
    """``count`` distinct rows of the registered schema."""
    if model.numeric:
        rng = np.random.default_rng(3)
        values = rng.standard_normal((count, realistic.FEATURES)).round(4).astype(np.float32)
        return pa.table(dict(zip(realistic.NAMES, values.T, strict=True)))
    from models import churn

    return churn.sample(count, seed=5).select(model.names).cast(model.example.schema)


def _checked(table: pa.Table) -> pa.Table:
    """The same rows as a request the fast path turns away: columns reversed, one extra."""
    reordered = table.select(table.column_names[::-1])
    return reordered.append_column("note", pa.array(["x"] * table.num_rows))


def _fast(predictor: Predictor, table: pa.Table, by_name: bool = False) -> pa.Table:
    """The rows as a V1 JSON body of instances (lists of numbers, else objects by name)
    becomes them on the server: decoded as the route decodes them, then predicted."""
    rows = table.to_pylist()
    numbers = len(table.column_names) == 20 and not by_name
    instances = [list(r.values()) for r in rows] if numbers else rows
    body = json.dumps({"instances": instances}).encode()
    decoded = v1.decode(body, [f.name for f in predictor.inputs], records=True)
    return predictor.predict(decoded)


def _library(
    model: realistic.Fitted, predictor: Predictor, table: pa.Table
) -> tuple[np.ndarray, np.ndarray]:
    """The library called as its users call it: with a DataFrame if it was fitted on one,
    else with a C-ordered matrix (rows as numpy makes them of a list); a compiled model's
    graph by onnxruntime's session, with one [N, 1] input per column."""
    if model.options.get("compile") == "onnx":
        session = predictor.model
        feeds = {
            i.name: table.column(i.name).to_numpy(zero_copy_only=False).reshape(-1, 1)
            for i in session.get_inputs()
        }
        for i in session.get_inputs():
            if i.type == "tensor(double)":
                feeds[i.name] = feeds[i.name].astype(np.float64)
        labels, proba = session.run(None, feeds)
        return proba.astype(np.float64), labels
    frame = table.to_pandas()
    native = model.model
    x: Any = frame if hasattr(native, "feature_names_in_") else np.ascontiguousarray(frame)
    return native.predict_proba(x), np.asarray(native.predict(x))


@pytest.mark.parametrize("name", MODELS)
def test_fast_path_answers_as_checked_path_and_library(
    name: str, fitted: dict[str, realistic.Fitted], predictors: dict[str, Predictor]
) -> None:
    model, predictor = fitted[name], predictors[name]
    table = _rows(model, 8)
    for _ in range(4):  # a table twin's first three calls are checked against the DataFrame's
        fast = _fast(predictor, table)
    checked = predictor.predict(_checked(table))
    assert _fast(predictor, table, by_name=True).equals(fast)
    proba, labels = _library(model, predictor, table)
    assert fast.equals(checked)
    assert fast.column_names == ["label", "proba_0", "proba_1"]
    np.testing.assert_array_equal(fast["proba_0"].to_numpy(), proba[:, 0])
    np.testing.assert_array_equal(fast["proba_1"].to_numpy(), proba[:, 1])
    np.testing.assert_array_equal(fast["label"].to_numpy(), labels)


@pytest.mark.parametrize("name", MODELS)
def test_one_row_is_answered_as_in_any_batch(
    name: str, fitted: dict[str, realistic.Fitted], predictors: dict[str, Predictor]
) -> None:
    predictor = predictors[name]
    table = _rows(fitted[name], 8)
    alone = [_fast(predictor, table.slice(i, 1)) for i in range(8)]
    together = _fast(predictor, table)
    assert pa.concat_tables(alone).equals(together)


def test_dataframe_models_are_called_with_their_twins(predictors: dict[str, Predictor]) -> None:
    """No model of the set gets a DataFrame: the float ones get their matrix, the churn
    pipeline (a ColumnTransformer first) its checked feature table."""
    runtimes = {name: predictors[name].runtime for name in ("lr-df", "hgb", "rf", "churn")}
    assert {name: (r.frame, r.table) for name, r in runtimes.items()} == {
        "lr-df": (False, False),
        "hgb": (False, False),
        "rf": (False, False),
        "churn": (False, True),
    }


def test_a_table_twin_that_answers_otherwise_leaves_the_model_its_dataframe() -> None:
    calls: list[str] = []

    def model(frame: Any) -> np.ndarray:
        calls.append("model")
        return np.array([[0.25, 0.75]])

    def twin(table: pa.Table) -> np.ndarray:
        calls.append("twin")
        return np.array([[0.25, 0.75 + 1e-16 if len(calls) > 3 else 0.75]])

    checked = sklearn_runtime._Checked(model, twin)
    table = pa.table({"a": [1.0]})
    answers = [checked(table).tolist() for _ in range(4)]
    assert answers == [[[0.25, 0.75]]] * 4
    assert calls == ["model", "twin", "model", "twin", "model", "model"]


def test_rows_by_name_that_fit_take_the_record_lane_and_others_the_table_path(
    predictors: dict[str, Predictor],
) -> None:
    """The churn pipeline's rows by name go into their columns as they are, a batch at a
    time; a row with an int where a double is registered too (the table path casts it, to
    the same number). A string where a number goes, a missing key or an extra one: the table
    path, and its answer or refusal."""
    predictor = predictors["churn"]
    row = {"tenure_months": 7, "monthly_charges": 70.0, "support_calls": 1,
           "contract": "one-year", "payment_method": "credit-card"}  # fmt: skip
    as_int = {**row, "monthly_charges": 70}
    named = [predictor.prepare(Records([r], lambda: pa.table({}))) for r in (row, as_int)]
    assert [type(p.x).__name__ for p in named] == ["_Named", "_Named"]
    answers = predictor.run(named)
    assert answers[0].table.equals(answers[1].table)
    assert answers[0].table.equals(predictor.predict(pa.Table.from_pylist([row])))
    for odd in ({**row, "tenure_months": "7"}, {**row, "note": "x"}):
        decoded = v1.decode(json.dumps({"instances": [odd]}).encode(), [], records=True)
        prepared = predictor.prepare(decoded)
        assert isinstance(prepared.x, pa.Table)
        assert predictor.run([prepared])[0].table.equals(answers[0].table)
    missing = v1.decode(b'{"instances": [{"tenure_months": 7}]}', [], records=True)
    with pytest.raises(MissingColumn, match="monthly_charges"):
        predictor.prepare(missing)
