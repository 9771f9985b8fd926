"""The one predict path: exact answers, schema checks, errors that name the column.

Exactness against scikit-learn is checked on batches of a multiple of 8 rows: OpenBLAS
makes sklearn's own answer for a linear model vary in the last bit with the batch size
otherwise, and the predictor pads every call to such a batch (see the README).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.linear_model import LogisticRegression

from serving.codecs import Matrix
from serving.errors import (
    MissingColumn,
    ModelError,
    NullValue,
    OutOfRange,
    OutOfTypeRange,
    UnexpectedColumns,
    WrongType,
)
from serving.registry import Registry
from serving.store import Store
from tests import fixtures


@pytest.fixture
def local_registry(tmp_path) -> Registry:
    return Registry(Store.from_url(str(tmp_path / "store")))


@pytest.mark.parametrize("make", [fixtures.logistic, fixtures.forest])
def test_classifier_answers_equal_sklearn_exactly(local_registry: Registry, make) -> None:
    model = make()
    local_registry.register(model, "m")
    x, _ = fixtures.numeric_data(1000, seed=7)
    out = local_registry.load("m").predict(fixtures.numeric_table(x))
    proba = model.predict_proba(x)
    assert out.column_names == ["label", "proba_0", "proba_1"]
    np.testing.assert_array_equal(out["proba_0"].to_numpy(), proba[:, 0])
    np.testing.assert_array_equal(out["proba_1"].to_numpy(), proba[:, 1])
    np.testing.assert_array_equal(out["label"].to_numpy(), model.predict(x))


def test_regressor_answers_equal_sklearn_exactly(local_registry: Registry) -> None:
    model = fixtures.regressor()
    local_registry.register(model, "price")
    x, _ = fixtures.numeric_data(1000, seed=3)
    out = local_registry.load("price").predict(fixtures.numeric_table(x))
    assert out.column_names == ["prediction"]
    np.testing.assert_array_equal(out["prediction"].to_numpy(), model.predict(x))


def test_mixed_pipeline_answers_equal_sklearn_exactly(local_registry: Registry) -> None:
    model = fixtures.mixed_pipeline()
    frame, _ = fixtures.mixed_frame(512, seed=9)
    local_registry.register(model, "mixed", input_example=frame.head(3))
    shuffled = frame[["region", "income", "plan", "age"]]  # columns are matched by name
    out = local_registry.load("mixed").predict(pa.Table.from_pandas(shuffled, preserve_index=False))
    np.testing.assert_array_equal(out["proba_1"].to_numpy(), model.predict_proba(frame)[:, 1])
    np.testing.assert_array_equal(out["label"].to_numpy(), model.predict(frame))


@pytest.mark.parametrize("make", [fixtures.logistic, fixtures.regressor])
def test_a_rows_answer_does_not_depend_on_its_batch(local_registry: Registry, make) -> None:
    local_registry.register(make(), "m")
    predictor = local_registry.load("m")
    x, _ = fixtures.numeric_data(203, seed=5)
    whole = predictor.predict(fixtures.numeric_table(x))
    for start, size in [(0, 1), (17, 1), (40, 3), (100, 9), (5, 64)]:
        part = predictor.predict(fixtures.numeric_table(x[start : start + size]))
        assert part.equals(whole.slice(start, size)), (start, size)


def test_input_is_selected_and_cast_by_name(local_registry: Registry) -> None:
    model = fixtures.logistic()
    local_registry.register(model, "m")
    x, _ = fixtures.numeric_data(20)
    columns = {name: x[:, i] for i, name in reversed(list(enumerate(fixtures.FEATURES)))}
    columns["f2"] = np.round(x[:, 2] * 4).astype(np.int64)  # an int column for a double feature
    columns["note"] = ["ignored"] * 20
    out = local_registry.load("m").predict(pa.table(columns))
    expected = x.copy()
    expected[:, 2] = np.round(x[:, 2] * 4)
    np.testing.assert_array_equal(out["proba_1"].to_numpy(), model.predict_proba(expected)[:, 1])


def test_id_columns_pass_through_untouched(local_registry: Registry) -> None:
    local_registry.register(fixtures.logistic(), "m")
    x, _ = fixtures.numeric_data(4)
    table = fixtures.numeric_table(x).append_column("customer_id", pa.array(["a", "b", "c", "d"]))
    out = local_registry.load("m").predict(table, passthrough=["customer_id"])
    assert out.column_names == ["customer_id", "label", "proba_0", "proba_1"]
    assert out["customer_id"].to_pylist() == ["a", "b", "c", "d"]


def test_passthrough_columns_are_not_extra_columns(local_registry: Registry) -> None:
    local_registry.register(fixtures.logistic(), "m", extra_columns="reject")
    table = _table(customer_id=list("abcde"))
    out = local_registry.load("m").predict(table, passthrough=["customer_id"])
    assert out["customer_id"].to_pylist() == list("abcde")


def test_threshold_classifier_labels_follow_its_threshold(local_registry: Registry) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import FixedThresholdClassifier

    x, y = fixtures.numeric_data()
    model = FixedThresholdClassifier(LogisticRegression(), threshold=0.2).fit(x, y)
    local_registry.register(model, "thr")
    out = local_registry.load("thr").predict(fixtures.numeric_table(x))
    assert (model.predict(x) != model.predict_proba(x).argmax(axis=1)).sum() > 0
    np.testing.assert_array_equal(out["label"].to_numpy(), model.predict(x))
    np.testing.assert_array_equal(out["proba_1"].to_numpy(), model.predict_proba(x)[:, 1])


def test_float32_models_keep_one_output_schema(local_registry: Registry) -> None:
    from sklearn.linear_model import LogisticRegression

    x, y = fixtures.numeric_data()
    x32 = x.astype(np.float32)
    model = LogisticRegression().fit(x32, y)
    local_registry.register(model, "f32", input_example=fixtures.numeric_table(x32))
    predictor = local_registry.load("f32")
    full = predictor.predict(fixtures.numeric_table(x32[:16]))
    empty = predictor.predict(fixtures.numeric_table(x32[:0]))
    assert full.schema == empty.schema
    assert full["proba_1"].type == pa.float64()
    np.testing.assert_array_equal(full["proba_1"].to_numpy(), model.predict_proba(x32[:16])[:, 1])


def test_empty_input_gives_empty_typed_output(local_registry: Registry) -> None:
    local_registry.register(fixtures.logistic(), "m")
    x, _ = fixtures.numeric_data(1)
    out = local_registry.load("m").predict(fixtures.numeric_table(x).slice(0, 0))
    assert out.num_rows == 0
    assert out.schema == pa.schema(
        [("label", pa.int64()), ("proba_0", pa.float64()), ("proba_1", pa.float64())]
    )


def _table(**overrides: Any) -> pa.Table:
    x, _ = fixtures.numeric_data(5)
    columns: dict[str, Any] = {name: x[:, i] for i, name in enumerate(fixtures.FEATURES)}
    columns.update(overrides)
    return pa.table({k: v for k, v in columns.items() if v is not None})


@pytest.mark.parametrize(
    ("table", "error", "message"),
    [
        (_table(f3=None), MissingColumn, "missing column 'f3'"),
        (
            _table(f1=["1", "2", "c", "d", "e"]),
            WrongType,
            "column 'f1' must be double, got 'c' at row 2",
        ),
        (_table(f0=[1.0, None, 2.0, 3.0, 4.0]), NullValue, "column 'f0' has a null value at row 1"),
        (
            _table(f4=[1.0, 2.0, 3.0, float("nan"), 4.0]),
            NullValue,
            "column 'f4' has a NaN value at row 3",
        ),
        (
            _table(f2=[1.0, float("inf"), 2.0, 3.0, 4.0]),
            NullValue,
            "column 'f2' has an infinite value at row 1",
        ),
    ],
)
def test_bad_input_names_the_column(local_registry: Registry, table, error, message) -> None:
    local_registry.register(fixtures.logistic(), "m")
    with pytest.raises(error) as info:
        local_registry.load("m").predict(table)
    assert info.value.message == message
    assert info.value.status == 422


def test_bad_categorical_input_names_the_column(local_registry: Registry) -> None:
    frame, _ = fixtures.mixed_frame(5)
    local_registry.register(fixtures.mixed_pipeline(), "mixed", input_example=frame)
    bad = frame.assign(income=[1.0, 2.0, np.nan, 4.0, 5.0])
    with pytest.raises(NullValue) as info:
        local_registry.load("mixed").predict(pa.Table.from_pandas(bad, preserve_index=False))
    assert info.value.message == "column 'income' has a null value at row 2"  # pandas NaN -> null


def test_extra_columns_can_be_rejected(local_registry: Registry) -> None:
    local_registry.register(fixtures.logistic(), "m", extra_columns="reject")
    with pytest.raises(UnexpectedColumns) as info:
        local_registry.load("m").predict(_table(zeta=[1] * 5, alpha=[2] * 5))
    assert (
        info.value.message == "unexpected columns ['alpha', 'zeta']: the model does not take them"
    )


def test_nullable_features_pass_nan_to_the_model(local_registry: Registry) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    x, y = fixtures.numeric_data()
    x[::7, 0] = np.nan
    model = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(x, y)
    local_registry.register(model, "hgb", input_example=fixtures.numeric_table(x))
    out = local_registry.load("hgb").predict(_table(f0=[None, 1.0, float("nan"), 0.0, 2.0]))
    expected_x = _table(f0=[np.nan, 1.0, np.nan, 0.0, 2.0]).to_pandas().to_numpy()
    np.testing.assert_array_equal(out["proba_1"].to_numpy(), model.predict_proba(expected_x)[:, 1])


def test_a_model_that_raises_is_a_model_error(local_registry: Registry) -> None:
    x, y = fixtures.numeric_data(10)
    local_registry.register(
        fixtures.ErrorModel().fit(x, y), "broken", flavor="sklearn-pickle", trust_pickle=True
    )
    with pytest.raises(ModelError) as info:
        local_registry.load("broken").predict(fixtures.numeric_table(x))
    assert info.value.message == "model broken:1 failed: RuntimeError: weights are corrupt"
    assert info.value.status == 500


def test_predict_method_can_be_chosen_at_registration(local_registry: Registry) -> None:
    model = fixtures.forest()
    mv = local_registry.register(model, "labels", method="predict")
    assert mv.outputs == ["label"]
    x, _ = fixtures.numeric_data(30, seed=2)
    out = local_registry.load("labels").predict(fixtures.numeric_table(x))
    assert out.column_names == ["label"]
    np.testing.assert_array_equal(out["label"].to_numpy(), model.predict(x))


def test_string_labels_keep_their_type(local_registry: Registry) -> None:
    x, y = fixtures.numeric_data()
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit(x, np.where(y == 1, "churn", "stay"))
    mv = local_registry.register(model, "named")
    assert mv.outputs == ["label", "proba_churn", "proba_stay"]
    out = local_registry.load("named").predict(fixtures.numeric_table(x[:6]))
    assert out["label"].type == pa.string()
    assert out["label"].to_pylist() == model.predict(x[:6]).tolist()


def test_frame_models_get_a_frame(local_registry: Registry) -> None:
    frame = pd.DataFrame(fixtures.numeric_data(50)[0], columns=fixtures.FEATURES)
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit(frame, (frame["f0"] > 0).astype(int))
    local_registry.register(model, "framed")
    out = local_registry.load("framed").predict(pa.Table.from_pandas(frame, preserve_index=False))
    np.testing.assert_array_equal(out["proba_1"].to_numpy(), model.predict_proba(frame)[:, 1])


@pytest.mark.parametrize("rows", [40, 30_000])  # 30,000 rows of 5 doubles: built column-wise
def test_a_frame_model_of_floats_answers_as_on_the_frame_of_its_table(
    local_registry: Registry, rows: int
) -> None:
    """Its DataFrame is made of the checked matrix: the values, names and column-major layout
    that Table.to_pandas gives, so a linear model's bits are the same."""
    x, y = fixtures.numeric_data(rows, seed=4)
    model = LogisticRegression().fit(pd.DataFrame(x, columns=fixtures.FEATURES), y)
    local_registry.register(model, "framed")
    table = fixtures.numeric_table(x)
    out = local_registry.load("framed").predict(table)
    proba = model.predict_proba(table.to_pandas())
    np.testing.assert_array_equal(out["proba_0"].to_numpy(), proba[:, 0])
    np.testing.assert_array_equal(out["proba_1"].to_numpy(), proba[:, 1])


@pytest.mark.parametrize("kind", ["numeric", "framed", "mixed"])
def test_one_call_for_many_requests_splits_back_exactly(local_registry: Registry, kind) -> None:
    if kind in ("numeric", "framed"):
        table = fixtures.numeric_table(fixtures.numeric_data(23, seed=5)[0])
        model = fixtures.logistic()
        if kind == "framed":
            x, y = fixtures.numeric_data()
            model = LogisticRegression().fit(pd.DataFrame(x, columns=fixtures.FEATURES), y)
        local_registry.register(model, "m")
    else:
        frame, _ = fixtures.mixed_frame(23, seed=5)
        local_registry.register(fixtures.mixed_pipeline(), "m", input_example=frame.head(3))
        table = pa.Table.from_pandas(frame, preserve_index=False)
    predictor = local_registry.load("m")
    requests = [table.slice(0, 1), table.slice(1, 9), table.slice(10, 0), table.slice(10, 13)]
    answers = predictor.run([predictor.prepare(r, as_rows=True) for r in requests])
    assert [a.table.num_rows for a in answers] == [1, 9, 0, 13]
    for request, answer in zip(requests, answers, strict=True):
        assert answer.table.equals(predictor.predict(request))
        assert answer.rows == answer.table.to_pylist()  # made once for the batch


def test_rows_are_made_only_for_the_requests_that_ask(local_registry: Registry) -> None:
    local_registry.register(fixtures.logistic(), "m")
    predictor = local_registry.load("m")
    x, _ = fixtures.numeric_data(5, seed=5)
    table = fixtures.numeric_table(x).append_column("id", pa.array(range(5)))
    asked = [
        predictor.prepare(table.slice(0, 2), as_rows=True),
        predictor.prepare(table.slice(2, 2)),
        predictor.prepare(table.slice(4, 1), ["id"], as_rows=True),  # its rows need the ids
    ]
    answers = predictor.run(asked)
    assert [a.rows is None for a in answers] == [False, True, True]
    assert answers[0].rows == predictor.predict(table.slice(0, 2)).to_pylist()
    assert answers[2].table.column_names[0] == "id"
    assert [predictor.run([p])[0].rows for p in asked] == [None, None, None]  # alone: no gain


def test_a_bad_request_is_refused_before_it_joins_a_batch(local_registry: Registry) -> None:
    local_registry.register(fixtures.logistic(), "m")
    predictor = local_registry.load("m")
    x, _ = fixtures.numeric_data(4, seed=5)
    x[2, 1] = np.nan
    with pytest.raises(NullValue) as caught:
        predictor.prepare(fixtures.numeric_table(x))
    assert caught.value.message == "column 'f1' has a NaN value at row 2"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_matrix_gets_the_answers_its_table_gets(local_registry: Registry, dtype) -> None:
    x, y = fixtures.numeric_data(37, seed=11)
    schema = {name: "float" if dtype == np.float32 else "double" for name in fixtures.FEATURES}
    local_registry.register(LogisticRegression().fit(x, y), "m", schema=schema)
    predictor = local_registry.load("m")
    matrix = Matrix(x, fixtures.FEATURES)
    assert predictor.predict(matrix).equals(predictor.predict(fixtures.numeric_table(x)))
    split = predictor.run(
        [
            predictor.prepare(Matrix(x[:5], fixtures.FEATURES)),
            predictor.prepare(fixtures.numeric_table(x[5:])),
        ]
    )
    assert pa.concat_tables([a.table for a in split]).equals(predictor.predict(matrix))


def test_a_matrix_with_a_nan_is_refused_like_its_table(local_registry: Registry) -> None:
    local_registry.register(fixtures.logistic(), "m")
    x, _ = fixtures.numeric_data(4, seed=5)
    x[3, 2] = np.inf
    with pytest.raises(NullValue) as caught:
        local_registry.load("m").predict(Matrix(x, fixtures.FEATURES))
    assert caught.value.message == "column 'f2' has an infinite value at row 3"


def test_bad_rows_are_set_aside_and_the_rest_scored_as_whole(local_registry: Registry) -> None:
    local_registry.register(fixtures.logistic(), "m")
    predictor = local_registry.load("m")
    x, _ = fixtures.numeric_data(40, seed=5)
    table = fixtures.numeric_table(x).append_column("id", pa.array(range(40)))
    f2 = table.column("f2").to_pylist()
    f2[3] = f2[31] = float("nan")
    bad_table = table.set_column(2, "f2", pa.array(f2))
    scored, bad = predictor.predict_valid(bad_table, passthrough=["id"])
    assert [row for row, _ in bad] == [3, 31]
    assert all(reason == "column 'f2' has a NaN value" for _, reason in bad)
    kept = [i for i in range(40) if i not in (3, 31)]
    assert scored.column("id").to_pylist() == kept
    whole = predictor.predict(table.take(kept), passthrough=["id"])
    assert scored.to_pylist() == whole.to_pylist()


@pytest.mark.parametrize("as_matrix", [False, True])
def test_a_value_beyond_float32_is_refused_by_a_float32_model(
    local_registry: Registry, as_matrix: bool
) -> None:
    local_registry.register(fixtures.forest(), "m")  # trees compare in float32
    x, _ = fixtures.numeric_data(4, seed=5)
    x[2, 1] = 1e39  # finite in float64, infinite in float32: sklearn raises on it
    rows = Matrix(x, fixtures.FEATURES) if as_matrix else fixtures.numeric_table(x)
    with pytest.raises(OutOfRange) as caught:
        local_registry.load("m").predict(rows)
    assert caught.value.message == (
        "column 'f1' has 1e+39, beyond the float32 range the model computes in (±3.4e+38), "
        "at row 2"
    )
    assert caught.value.status == 422


def test_a_value_beyond_float32_is_scored_by_a_float64_model(local_registry: Registry) -> None:
    local_registry.register(fixtures.logistic(), "m")
    x, _ = fixtures.numeric_data(8, seed=5)
    x[2, 1] = 1e39
    answer = local_registry.load("m").predict(fixtures.numeric_table(x))
    assert answer.num_rows == 8


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        (
            "income",
            [None, True, False, True, False],
            "column 'income' must be double, got bool at row 1",
        ),
        ("plan", [None, None, None, 1, 2], "column 'plan' must be string, got int64 at row 3"),
        ("plan", [1.5, 2.0, 3.0, 1.0, 2.0], "column 'plan' must be string, got double at row 0"),
    ],
)
def test_types_that_do_not_convert_losslessly_are_refused(
    local_registry: Registry, column: str, values: list[Any], message: str
) -> None:
    frame, _ = fixtures.mixed_frame(5)
    local_registry.register(fixtures.mixed_pipeline(), "mixed", input_example=frame)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.set_column(table.schema.get_field_index(column), column, pa.array(values))
    with pytest.raises(WrongType) as info:
        local_registry.load("mixed").predict(table)
    assert info.value.message == message


def test_text_and_whole_numbers_convert_where_nothing_is_lost(local_registry: Registry) -> None:
    frame, _ = fixtures.mixed_frame(5)
    local_registry.register(fixtures.mixed_pipeline(), "mixed", input_example=frame)
    predictor = local_registry.load("mixed")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    as_text = table.set_column(
        table.schema.get_field_index("age"), "age", pa.array([str(v) for v in frame["age"]])
    )
    assert predictor.predict(as_text).equals(predictor.predict(table))


@pytest.fixture
def visits(local_registry: Registry) -> Registry:
    """A model of an int64 column (``visits``) and a double one (``spend``)."""
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({"visits": rng.integers(0, 50, 200), "spend": rng.normal(100, 30, 200)})
    model = LogisticRegression().fit(frame, frame["spend"] > 100)
    local_registry.register(model, "visits", input_example=frame.head(5))
    return local_registry


def _visits(cells: list[Any]) -> pa.Table:
    return pa.table({"visits": cells, "spend": [1.0] * len(cells)})


@pytest.mark.parametrize(
    ("bad_row", "cell", "message"),
    [
        (3, "abc", "column 'visits' must be int64, got 'abc' at row 3"),
        (70_001, "3.5", "column 'visits' must be int64, got '3.5' at row 70001"),
        (99_999, "12x" * 30, f"column 'visits' must be int64, got '{'12x' * 12}1...' at row 99999"),
    ],
)
def test_text_that_is_no_number_is_refused_naming_its_row_and_value(
    visits: Registry, bad_row: int, cell: str, message: str
) -> None:
    values = [str(i % 50) for i in range(100_000)]
    values[bad_row] = cell
    if bad_row < 99_999:
        values[99_999] = "later-bad"  # only the first is named
    with pytest.raises(WrongType) as caught:
        visits.load("visits").predict(_visits(values))
    assert caught.value.message == message
    assert caught.value.row == bad_row


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        (
            ["1", "123456789012345678901234567890"],
            "column 'visits' has 123456789012345678901234567890, out of range for int64, at row 1",
        ),
        (
            [1.0, 2.0, 1.2345678901234568e29],
            "column 'visits' has 1.2345678901234568e+29, out of range for int64, at row 2",
        ),
        ([1.0, 2.5], "column 'visits' must be int64, got 2.5 at row 1"),
    ],
)
def test_a_number_its_columns_type_cannot_hold_is_out_of_range(
    visits: Registry, cells: list[Any], message: str
) -> None:
    table = _visits(cells)
    with pytest.raises((OutOfTypeRange, WrongType)) as caught:
        visits.load("visits").predict(table)
    assert caught.value.message == message
    assert caught.value.status == 422


def test_rows_set_aside_for_their_type_say_why_without_their_row(visits: Registry) -> None:
    cells = ["1", "abc", "2", "123456789012345678901234567890", "3"]
    table = _visits(cells)
    scored, bad = visits.load("visits").predict_valid(table)
    assert bad == [
        (1, "column 'visits' must be int64, got 'abc'"),
        (3, "column 'visits' has 123456789012345678901234567890, out of range for int64"),
    ]
    assert scored.num_rows == 3
