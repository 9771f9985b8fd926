"""``compile="onnx"`` (``--compile onnx``): a scikit-learn model registered as its skl2onnx
graph. Answers over the predictor equal onnxruntime's own ``session.run`` bit for bit and
the model's within the tolerance; what was compiled, and how closely it agreed, is in the
version's metadata; a model that cannot be compiled, or whose graph answers otherwise, is
refused before anything is stored."""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pytest
import skops.io as sio
import xgboost
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from models import churn
from serving import codecs
from serving.errors import CompiledDisagrees, NotCompilable
from serving.metadata import ModelVersion
from serving.registry import Registry
from serving.store import Store
from tests import fixtures
from tests.services import mmserve_server
from tests.serving.test_cli import run

X, Y = fixtures.numeric_data()
EXAMPLE = fixtures.numeric_table(X[:40])
CHURN, CHURN_EXAMPLE = churn.train()
ROWS = churn.sample(300, seed=11)  # the id column too: passed over, as a client sends it


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(Store.from_url(str(tmp_path / "store")))


def session(registry: Registry, mv: ModelVersion) -> ort.InferenceSession:
    """onnxruntime's own session of the stored graph, on one thread as mmserve runs it (on
    more, a tree ensemble sums its trees in an order that depends on the batch)."""
    data = registry.store.read(f"registry/{mv.name}/{mv.version}/{mv.artifact}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def churn_feeds(rows: pa.Table) -> dict[str, np.ndarray]:
    """One [N, 1] input per feature: numbers as doubles, strings as strings."""
    frame = rows.select(churn.FEATURES).to_pandas()
    return {
        name: frame[[name]].to_numpy().astype(object if name in churn.CATEGORICAL else np.float64)
        for name in churn.FEATURES
    }


def assert_answers_as_graph(answer: pa.Table, raw: list[Any]) -> None:
    labels, probabilities = raw
    assert answer["label"].to_pylist() == labels.tolist()
    for j in range(probabilities.shape[1]):
        want = probabilities[:, j].astype(np.float64)
        assert np.array_equal(answer[f"proba_{j}"].to_numpy(), want), j


def assert_near_the_model(answer: pa.Table, model: Any, frame: Any, tolerance: float) -> None:
    assert answer["label"].to_pylist() == model.predict(frame).tolist()
    proba = model.predict_proba(frame)
    for j in range(proba.shape[1]):
        assert np.abs(answer[f"proba_{j}"].to_numpy() - proba[:, j]).max() <= tolerance


# -- compiled models answer as their graphs ---------------------------------------------


def test_the_churn_pipeline_compiles_to_one_input_per_column(registry: Registry) -> None:
    sklearn_mv = registry.register(CHURN, "churn", input_example=CHURN_EXAMPLE)
    mv = registry.register(CHURN, "churn-onnx", input_example=CHURN_EXAMPLE, compile="onnx")
    assert (mv.flavor, mv.artifact, mv.task, mv.method) == (
        "onnx",
        "model.onnx",
        "classifier",
        "predict_proba",
    )
    # The same schema (strings stay strings, counts int64) and the same answer's columns.
    assert mv.inputs == sklearn_mv.inputs
    assert [(f.name, f.dtype) for f in mv.inputs] == [
        ("tenure_months", "int64"),
        ("monthly_charges", "double"),
        ("support_calls", "int64"),
        ("contract", "string"),
        ("payment_method", "string"),
    ]
    assert (mv.outputs, mv.classes) == (sklearn_mv.outputs, sklearn_mv.classes)
    assert mv.outputs == ["label", "proba_0", "proba_1"]
    graph = session(registry, mv)
    assert [(i.name, i.type, i.shape[1]) for i in graph.get_inputs()] == [
        ("tenure_months", "tensor(double)", 1),
        ("monthly_charges", "tensor(double)", 1),
        ("support_calls", "tensor(double)", 1),
        ("contract", "tensor(string)", 1),
        ("payment_method", "tensor(string)", 1),
    ]
    answer = registry.load(mv.ref).predict(ROWS, passthrough=[churn.ID_COLUMN])
    assert answer.column_names == [churn.ID_COLUMN, "label", "proba_0", "proba_1"]
    assert_answers_as_graph(answer, graph.run(None, churn_feeds(ROWS)))
    # Doubles all the way: the graph's probabilities are the pipeline's to about 1e-16.
    frame = ROWS.select(churn.FEATURES).to_pandas()
    assert_near_the_model(answer, CHURN, frame, 1e-15)
    served = registry.load(sklearn_mv.ref).predict(ROWS)
    assert served["label"].equals(answer["label"])


def gradient_boosting() -> GradientBoostingClassifier:
    return GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=0).fit(X, Y)


@pytest.mark.parametrize(
    ("make", "numbers"),
    [(fixtures.logistic, "double"), (fixtures.forest, "double"), (gradient_boosting, "float")],
)
def test_a_classifier_answers_as_its_graph(registry: Registry, make: Any, numbers: str) -> None:
    model = make()
    mv = registry.register(model, "m", input_example=EXAMPLE, compile="onnx")
    assert mv.flavor == "onnx" and mv.compiled is not None
    # Doubles where skl2onnx's graph loads; its double graph of a gradient boosting does not.
    assert mv.compiled.numbers == numbers
    assert [f.name for f in mv.inputs] == fixtures.FEATURES
    graph = session(registry, mv)
    assert [(i.name, i.type, i.shape[1]) for i in graph.get_inputs()] == [
        ("X", f"tensor({numbers})", 5)
    ]
    rows = fixtures.numeric_table(X[100:337])
    answer = registry.load(mv.ref).predict(rows)
    x = X[100:337].astype(np.float64 if numbers == "double" else np.float32)
    assert_answers_as_graph(answer, graph.run(None, {"X": x}))
    assert_near_the_model(answer, model, X[100:337], 1e-5)


def test_a_regressor_answers_as_its_graph(registry: Registry) -> None:
    model = fixtures.regressor()
    mv = registry.register(model, "price", input_example=EXAMPLE, compile="onnx")
    assert (mv.flavor, mv.task, mv.outputs) == ("onnx", "regressor", ["prediction"])
    answer = registry.load(mv.ref).predict(fixtures.numeric_table(X[:50]))
    (raw,) = session(registry, mv).run(None, {"X": X[:50]})
    assert np.array_equal(answer["prediction"].to_numpy(), raw[:, 0].astype(np.float64))
    assert np.abs(answer["prediction"].to_numpy() - model.predict(X[:50])).max() <= 1e-5


# -- what the version records -----------------------------------------------------------


def test_the_version_records_what_was_compiled_and_how_closely_it_agreed(
    registry: Registry, tmp_path: Path
) -> None:
    sio.dump(CHURN, tmp_path / "churn.skops")
    source = hashlib.sha256((tmp_path / "churn.skops").read_bytes()).hexdigest()
    mv = registry.register(
        tmp_path / "churn.skops",
        "churn",
        input_example=CHURN_EXAMPLE,
        compile="onnx",
        compile_tolerance=1e-9,
    )
    assert mv.compiled is not None
    assert registry.get(mv.ref) == mv  # as stored in model.json
    stored = json.loads(registry.store.read("registry/churn/1/model.json"))["compiled"]
    plain = registry.register(tmp_path / "churn.skops", "plain", input_example=CHURN_EXAMPLE)
    model_answer = registry.load(plain.ref).predict(CHURN_EXAMPLE)
    graph_answer = registry.load(mv.ref).predict(CHURN_EXAMPLE)
    measured = max(
        np.abs(model_answer[c].to_numpy() - graph_answer[c].to_numpy()).max()
        for c in ("proba_0", "proba_1")
    )
    assert stored == {
        "source_flavor": "sklearn-skops",
        "source_type": "sklearn.pipeline.Pipeline",
        "source_sha256": source,
        "converter": "skl2onnx",
        "converter_version": version("skl2onnx"),
        "numbers": "double",
        "rows_checked": 16,
        "labels_equal": True,
        "tolerance": 1e-9,
        "max_difference": measured,
    }
    assert (
        mv.sha256 == hashlib.sha256(registry.store.read("registry/churn/1/model.onnx")).hexdigest()
    )
    assert mv.libraries["skl2onnx"] == version("skl2onnx")
    assert plain.compiled is None
    assert registry.store.walk("registry/churn/1") == [".claim", "model.json", "model.onnx"]


def test_the_default_tolerance_is_1e_5(registry: Registry) -> None:
    mv = registry.register(fixtures.forest(), "m", input_example=EXAMPLE, compile="onnx")
    assert mv.compiled is not None
    assert mv.compiled.tolerance == 1e-5
    assert 0 < mv.compiled.max_difference <= 1e-5  # trees: float32 probabilities
    assert mv.compiled.rows_checked == 40


# -- refusals ---------------------------------------------------------------------------


def test_compiling_without_an_input_example_is_refused(registry: Registry) -> None:
    with pytest.raises(NotCompilable) as refused:
        registry.register(CHURN, "churn", compile="onnx")
    assert refused.value.status == 422
    assert refused.value.message == (
        "cannot compile sklearn.pipeline.Pipeline to onnx: it needs an input example, whose "
        "rows both must answer alike (--input-example)"
    )
    assert registry.models() == []


def test_a_model_skl2onnx_has_no_converter_for_is_refused_naming_its_type(
    registry: Registry,
) -> None:
    mine = fixtures.ErrorModel().fit(X, Y)
    with pytest.raises(NotCompilable) as refused:
        registry.register(mine, "mine", input_example=EXAMPLE, compile="onnx")
    assert refused.value.message == (
        "cannot compile tests.fixtures.ErrorModel to onnx: skl2onnx has no converter for "
        "tests.fixtures.ErrorModel"
    )
    inside = Pipeline([("scale", StandardScaler()), ("mine", fixtures.ErrorModel())]).fit(X, Y)
    with pytest.raises(NotCompilable) as refused:
        registry.register(inside, "mine", input_example=EXAMPLE, compile="onnx")
    assert refused.value.message == (
        "cannot compile sklearn.pipeline.Pipeline to onnx: skl2onnx has no converter for "
        "tests.fixtures.ErrorModel"
    )
    assert registry.models() == []


def test_a_model_skl2onnx_fails_to_convert_is_refused_naming_its_type(
    registry: Registry,
) -> None:
    # skl2onnx 1.20 has a converter, which fails on scikit-learn 1.9's fitted trees.
    model = HistGradientBoostingClassifier(max_iter=5).fit(X, Y)
    with pytest.raises(NotCompilable) as refused:
        registry.register(model, "hgb", input_example=EXAMPLE, compile="onnx")
    assert refused.value.message.startswith(
        "cannot compile sklearn.ensemble.HistGradientBoostingClassifier to onnx: skl2onnx "
        "failed: ValueError: Unable to create node 'TreeEnsembleClassifier'"
    )
    assert registry.models() == []


def test_only_scikit_learn_models_compile(registry: Registry) -> None:
    model = xgboost.XGBClassifier(n_estimators=3, max_depth=2).fit(X, Y)
    with pytest.raises(NotCompilable) as refused:
        registry.register(model, "credit", input_example=EXAMPLE, compile="onnx")
    assert refused.value.message == (
        "cannot compile xgboost.sklearn.XGBClassifier to onnx: only scikit-learn models "
        "compile (skl2onnx), not xgboost ones"
    )


def test_a_negative_tolerance_is_refused(registry: Registry) -> None:
    with pytest.raises(NotCompilable) as refused:
        registry.register(
            fixtures.logistic(),
            "m",
            input_example=EXAMPLE,
            compile="onnx",
            compile_tolerance=-1,
        )
    assert refused.value.message == (
        "cannot compile sklearn.linear_model.LogisticRegression to onnx: a tolerance is a "
        "finite number >= 0, not -1"
    )


def test_a_graph_beyond_the_tolerance_is_refused_naming_the_row_and_values(
    registry: Registry,
) -> None:
    model = fixtures.forest()  # its graph's probabilities are float32: about 1e-8 off
    answer = registry.load(registry.register(model, "plain").ref).predict(EXAMPLE)
    compiled = registry.register(model, "m", input_example=EXAMPLE, compile="onnx")
    _, raw = session(registry, compiled).run(None, {"X": X[:40]})
    gaps = {c: np.abs(answer[f"proba_{c}"].to_numpy() - raw[:, c]) for c in (0, 1)}
    column = 0 if gaps[0].max() >= gaps[1].max() else 1
    row = int(gaps[column].argmax())
    with pytest.raises(CompiledDisagrees) as refused:
        registry.register(model, "m", input_example=EXAMPLE, compile="onnx", compile_tolerance=0)
    assert refused.value.status == 422
    want, got = answer[f"proba_{column}"][row].as_py(), float(raw[row, column])
    assert refused.value.message == (
        f"the compiled graph disagrees with the model on row {row} of the input example: "
        f"proba_{column} is {want!r} by the model, {got!r} by the graph (tolerance 0)"
    )
    assert registry.version_numbers("m") == [1]


# -- the command line and a real server -------------------------------------------------


@pytest.mark.slow
def test_the_cli_compiles_a_skops_file(tmp_path: Path) -> None:
    sio.dump(CHURN, tmp_path / "churn.skops")
    codecs.write_file(churn.sample(5, seed=3), tmp_path / "rows.csv")
    source = hashlib.sha256((tmp_path / "churn.skops").read_bytes()).hexdigest()
    store = tmp_path / "store"
    args = ["models", "register", str(tmp_path / "churn.skops"), "--name", "churn-onnx"]
    refused = run(store, *args, "--compile", "onnx", ok=False)
    assert refused.stderr == (
        "error: cannot compile sklearn.pipeline.Pipeline to onnx: it needs an input example, "
        "whose rows both must answer alike (--input-example)\n"
    )
    example = ["--input-example", str(tmp_path / "rows.csv")]
    registered = run(store, *args, *example, "--compile", "onnx", "--compile-tolerance", "1e-6")
    first, second = registered.stdout.splitlines()
    assert first.startswith("registered churn-onnx:1 (onnx, classifier, sha256 ")
    assert second.startswith(
        f"compiled from sklearn.pipeline.Pipeline (sklearn-skops, sha256 {source}) by skl2onnx "
        f"{version('skl2onnx')}: 5 rows checked, labels equal, max difference "
    )
    assert second.endswith(" <= tolerance 1e-06")
    shown = json.loads(run(store, "models", "show", "churn-onnx").stdout)
    assert shown["flavor"] == "onnx"
    assert (shown["compiled"]["rows_checked"], shown["compiled"]["tolerance"]) == (5, 1e-6)
    out = tmp_path / "out.parquet"
    run(store, "predict", "churn-onnx", "-i", str(tmp_path / "rows.csv"), "-o", str(out))
    registry = Registry(Store.from_url(str(store)))
    rows = codecs.read_file(tmp_path / "rows.csv")
    assert codecs.read_file(out).equals(registry.load("churn-onnx").predict(rows))


@pytest.mark.slow
def test_a_compiled_churn_model_answers_over_v1_as_the_predictor(tmp_path: Path) -> None:
    registry = Registry(Store.from_url(str(tmp_path / "store")))
    registry.register(CHURN, "churn", input_example=CHURN_EXAMPLE, compile="onnx")
    rows = ROWS.slice(0, 37)
    instances = rows.select(churn.FEATURES).to_pylist()
    local = registry.load("churn").predict(rows).to_pylist()
    with mmserve_server({"MMSERVE_STORE_URL": str(tmp_path / "store")}) as url:
        reply = httpx.post(
            f"{url}/v1/models/churn:predict", json={"instances": instances}, timeout=30
        )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert (body["model"], body["version"]) == ("churn", 1)
    assert body["predictions"] == local
