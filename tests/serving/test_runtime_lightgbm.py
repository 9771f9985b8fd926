"""The LightGBM runtime: native text models, answered as the library answers in-process."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from serving.errors import InvalidName, UntrustedArtifact, WrongType
from serving.registry import Registry
from serving.runtimes import Trust, runtime
from serving.store import Store

MMSERVE = str(Path(sys.executable).with_name("mmserve"))
NAMES = ["age", "income", "tenure", "visits"]


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(Store.from_url(str(tmp_path / "store")))


def data(rows: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(NAMES)))
    return x, x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.5, size=rows)


def frame(x: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(x, columns=NAMES)


def table(x: np.ndarray, names: list[str] = NAMES) -> pa.Table:
    return pa.table({name: x[:, i] for i, name in enumerate(names)})


def probabilities(answer: pa.Table, classes: list[Any]) -> np.ndarray:
    return np.column_stack([answer[f"proba_{c}"].to_numpy() for c in classes])


def risk_classifier() -> lightgbm.LGBMClassifier:
    x, y = data()
    labels = np.where(y > 0, "yes", "no")
    return lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(frame(x), labels)


def test_classifier_with_string_classes_answers_as_the_wrapper(registry: Registry) -> None:
    clf = risk_classifier()
    mv = registry.register(clf, "risk")
    assert (mv.flavor, mv.artifact, mv.task, mv.method) == (
        "lightgbm",
        "model.txt",
        "classifier",
        "predict_proba",
    )
    assert (mv.classes, mv.outputs) == (["no", "yes"], ["label", "proba_no", "proba_yes"])
    assert [(f.name, f.dtype) for f in mv.inputs] == [(n, "double") for n in NAMES]
    assert mv.trust_pickle is False and mv.trusted_types == []
    assert "lightgbm" in mv.libraries and mv.libraries["lightgbm"] == lightgbm.__version__
    recorded = json.loads(registry.store.read("registry/risk/1/model.json"))
    assert (recorded["flavor"], recorded["artifact"]) == ("lightgbm", "model.txt")
    artifact = registry.store.read("registry/risk/1/model.txt")
    assert artifact == clf.booster_.model_to_string().encode()
    assert artifact.startswith(b"tree\nversion=")

    x, _ = data(37, seed=5)
    predictor = registry.load("risk")
    assert isinstance(predictor.model, lightgbm.Booster)  # loaded from the text
    answer = predictor.predict(table(x))
    np.testing.assert_array_equal(probabilities(answer, ["no", "yes"]), clf.predict_proba(frame(x)))
    np.testing.assert_array_equal(
        answer["label"].to_numpy(zero_copy_only=False), clf.predict(frame(x))
    )
    assert answer.schema.field("label").type == pa.string()


def test_classifier_file_is_detected_by_its_content(registry: Registry, tmp_path: Path) -> None:
    clf = risk_classifier()
    path = tmp_path / "risk.txt"
    path.write_text(clf.booster_.model_to_string())
    mv = registry.register(path, "risk")
    # The text holds no labels: a file's classes are LightGBM's own 0 and 1.
    assert (mv.flavor, mv.task, mv.classes) == ("lightgbm", "classifier", [0, 1])
    assert mv.outputs == ["label", "proba_0", "proba_1"]
    x, _ = data(21, seed=6)
    answer = registry.load("risk").predict(table(x))
    np.testing.assert_array_equal(probabilities(answer, [0, 1]), clf.predict_proba(frame(x)))
    expected = (clf.predict(frame(x)) == "yes").astype(np.int64)
    np.testing.assert_array_equal(answer["label"].to_numpy(), expected)


def test_multiclass_classifier_answers_as_the_wrapper(registry: Registry) -> None:
    x, y = data()
    labels = np.digitize(y, [-0.5, 0.5]) * 2 + 3  # classes 3, 5, 7
    clf = lightgbm.LGBMClassifier(n_estimators=15, verbose=-1).fit(x, labels)
    mv = registry.register(clf, "tiers")
    assert (mv.classes, mv.outputs) == ([3, 5, 7], ["label", "proba_3", "proba_5", "proba_7"])
    # Fitted on a matrix: LightGBM names the features Column_<i>, served as f0...
    assert [f.name for f in mv.inputs] == ["f0", "f1", "f2", "f3"]
    test, _ = data(40, seed=7)
    answer = registry.load("tiers").predict(table(test, ["f0", "f1", "f2", "f3"]))
    np.testing.assert_array_equal(probabilities(answer, [3, 5, 7]), clf.predict_proba(test))
    np.testing.assert_array_equal(answer["label"].to_numpy(), clf.predict(test))


def test_classifier_labels_alone_with_method_predict(registry: Registry) -> None:
    clf = risk_classifier()
    mv = registry.register(clf, "risk", method="predict")
    assert (mv.method, mv.outputs) == ("predict", ["label"])
    x, _ = data(19, seed=8)
    answer = registry.load("risk").predict(table(x))
    np.testing.assert_array_equal(
        answer["label"].to_numpy(zero_copy_only=False), clf.predict(frame(x))
    )
    with pytest.raises(InvalidName) as refused:
        registry.register(clf, "risk", method="transform")
    assert refused.value.message == (
        "invalid method 'transform': a LightGBM classifier answers predict_proba or predict"
    )


def test_early_stopped_regressor_answers_with_its_best_iteration(registry: Registry) -> None:
    x, y = data()
    reg = lightgbm.LGBMRegressor(n_estimators=200, learning_rate=0.3, verbose=-1).fit(
        frame(x[:200]),
        y[:200],
        eval_X=frame(x[200:]),
        eval_y=y[200:],
        callbacks=[lightgbm.early_stopping(3, verbose=False)],
    )
    assert 0 < reg.best_iteration_ < 200
    mv = registry.register(reg, "price")
    assert (mv.task, mv.method, mv.outputs, mv.classes) == (
        "regressor",
        "predict",
        ["prediction"],
        None,
    )
    test, _ = data(33, seed=9)
    answer = registry.load("price").predict(table(test))
    np.testing.assert_array_equal(answer["prediction"].to_numpy(), reg.predict(frame(test)))


def test_an_unfitted_wrapper_is_refused(registry: Registry) -> None:
    with pytest.raises(InvalidName) as refused:
        registry.register(lightgbm.LGBMRegressor(), "price")
    assert refused.value.message == "invalid model 'LGBMRegressor': it is not fitted"


def test_ranker_answers_its_scores(registry: Registry) -> None:
    x, y = data(120)
    ranker = lightgbm.LGBMRanker(n_estimators=10, min_child_samples=5, verbose=-1)
    ranker.fit(frame(x), np.digitize(y, [-1, 0, 1]), group=[30, 30, 30, 30])
    mv = registry.register(ranker, "rank")
    assert (mv.task, mv.outputs) == ("regressor", ["prediction"])
    answer = registry.load("rank").predict(table(x[:25]))
    np.testing.assert_array_equal(answer["prediction"].to_numpy(), ranker.predict(frame(x[:25])))


@pytest.mark.parametrize(
    ("params", "target", "task", "classes", "outputs"),
    [
        ({"objective": "binary"}, "binary", "classifier", [0, 1], ["label", "proba_0", "proba_1"]),
        (
            {"objective": "multiclass", "num_class": 3},
            "tiers",
            "classifier",
            [0, 1, 2],
            ["label", "proba_0", "proba_1", "proba_2"],
        ),
        (
            {"objective": "multiclassova", "num_class": 3},
            "tiers",
            "classifier",
            [0, 1, 2],
            ["label", "proba_0", "proba_1", "proba_2"],
        ),
        ({"objective": "regression"}, "value", "regressor", None, ["prediction"]),
        ({"objective": "cross_entropy"}, "binary", "regressor", None, ["prediction"]),
    ],
)
def test_booster_is_told_by_its_objective(
    registry: Registry,
    params: dict[str, Any],
    target: str,
    task: str,
    classes: list[int] | None,
    outputs: list[str],
) -> None:
    x, y = data()
    labels = {"binary": y > 0, "tiers": np.digitize(y, [-0.5, 0.5]), "value": y}[target]
    booster = lightgbm.train(
        {**params, "verbose": -1}, lightgbm.Dataset(frame(x), labels.astype(float)), 10
    )
    mv = registry.register(booster, "model")
    assert (mv.task, mv.classes, mv.outputs) == (task, classes, outputs)
    test, _ = data(29, seed=3)
    answer = registry.load("model").predict(table(test))
    expected = booster.predict(test)
    if classes is None:
        np.testing.assert_array_equal(answer["prediction"].to_numpy(), expected)
        return
    if expected.ndim == 1:  # as LGBMClassifier widens P(1)
        expected = np.vstack((1.0 - expected, expected)).T
    np.testing.assert_array_equal(probabilities(answer, classes), expected)
    np.testing.assert_array_equal(answer["label"].to_numpy(), expected.argmax(axis=1))


def test_answers_do_not_depend_on_the_thread_count(registry: Registry) -> None:
    x, y = data(2000)
    booster = lightgbm.train(
        {"objective": "binary", "verbose": -1}, lightgbm.Dataset(x, (y > 0).astype(float)), 30
    )
    assert registry.register(booster, "model").row_block == 1  # calls are not padded
    predictor = registry.load("model")
    served = predictor.predict(table(x, ["f0", "f1", "f2", "f3"]))["proba_1"]
    for threads in (1, 2):
        np.testing.assert_array_equal(served.to_numpy(), booster.predict(x, num_threads=threads))
    alone = predictor.predict(table(x[7:8], ["f0", "f1", "f2", "f3"]))["proba_1"]
    assert alone.to_pylist() == served.to_pylist()[7:8]


def test_values_beyond_float32_are_compared_in_float64(registry: Registry) -> None:
    x, y = data()
    reg = lightgbm.LGBMRegressor(n_estimators=10, verbose=-1).fit(frame(x), y)
    registry.register(reg, "price")
    predictor = registry.load("price")
    assert predictor.runtime.float32 is False
    test = np.array([[1e300, -1e300, 3.5e38, 0.0], [1e-300, 2.0, -1.0, 1e39]])
    answer = predictor.predict(table(test))  # not refused as out of float32's range
    np.testing.assert_array_equal(answer["prediction"].to_numpy(), reg.predict(frame(test)))
    assert answer["prediction"][0].as_py() == reg.predict(frame(test[:1]))[0]


def categorical_frame(rows: int = 400, seed: int = 1) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(
        {
            "income": rng.normal(50_000, 15_000, rows),
            "plan": pd.Categorical(rng.choice(["basic", "plus", "pro"], rows)),
            "zone": pd.Categorical(rng.choice([3, 7, 9], rows)),
        }
    )
    y = (table["plan"] == "pro") | (table["income"] > 60_000) | (table["zone"] == 9)
    return table, y.to_numpy()


def test_pandas_categories_are_taken_as_their_values(registry: Registry) -> None:
    train, y = categorical_frame()
    clf = lightgbm.LGBMClassifier(n_estimators=15, min_child_samples=5, verbose=-1)
    clf.fit(train, y)
    mv = registry.register(clf, "plans", nullable=["plan"])
    assert [(f.name, f.dtype, f.nullable, f.categories) for f in mv.inputs] == [
        ("income", "double", False, None),
        ("plan", "string", True, ["basic", "plus", "pro"]),
        ("zone", "int64", False, [3, 7, 9]),
    ]
    predictor = registry.load("plans")
    assert predictor.runtime.frame is True
    test, _ = categorical_frame(30, seed=2)
    test.loc[[4, 11], "plan"] = np.nan  # missing, in-process as served
    rows = pa.table(
        {
            "income": test["income"].to_numpy(),
            "plan": [None if pd.isna(v) else str(v) for v in test["plan"]],
            "zone": [int(v) for v in test["zone"]],
        }
    )
    answer = predictor.predict(rows)
    np.testing.assert_array_equal(probabilities(answer, [False, True]), clf.predict_proba(test))
    np.testing.assert_array_equal(answer["label"].to_numpy(zero_copy_only=False), clf.predict(test))


def test_a_category_the_model_never_saw_is_refused(registry: Registry) -> None:
    train, y = categorical_frame()
    registry.register(lightgbm.LGBMRegressor(n_estimators=5, verbose=-1).fit(train, y), "plans")
    rows = pa.table({"income": [1.0, 2.0], "plan": ["pro", "gold"], "zone": [3, 7]})
    with pytest.raises(WrongType) as refused:
        registry.load("plans").predict(rows)
    assert refused.value.message == (
        "column 'plan' must be one of the 3 categories it was trained with (basic, plus, pro), "
        "got 'gold' at row 1"
    )


def test_float_categories_are_refused_naming_the_feature(registry: Registry) -> None:
    train, y = categorical_frame()
    train["zone"] = train["zone"].cat.rename_categories([0.5, 1.5, 2.5])
    reg = lightgbm.LGBMRegressor(n_estimators=5, verbose=-1).fit(train, y)
    with pytest.raises(InvalidName) as refused:
        registry.register(reg, "plans")
    assert refused.value.message == (
        "invalid categorical feature 'zone': its categories are double: only text or integer "
        "categories are served"
    )


def test_ordered_categories_are_refused_naming_the_features(registry: Registry) -> None:
    train, y = categorical_frame()
    train["plan"] = train["plan"].cat.as_ordered()  # LightGBM takes its codes as numbers
    clf = lightgbm.LGBMClassifier(n_estimators=5, min_child_samples=5, verbose=-1)
    clf.fit(train, y)
    with pytest.raises(InvalidName) as refused:
        registry.register(clf, "plans")
    assert refused.value.message == (
        "invalid categorical features 'zone': the model's 2 pandas category columns cannot be "
        "matched with them: only unordered pandas categories, and no other categorical "
        "feature, are served"
    )
    assert registry.models() == []


def test_integer_coded_categorical_features_are_numbers(registry: Registry) -> None:
    x, y = data()
    x[:, 1] = np.digitize(x[:, 1], [-1, 0, 1])  # codes 0..3
    booster = lightgbm.train(
        {"objective": "regression", "verbose": -1},
        lightgbm.Dataset(x, y, categorical_feature=[1]),
        10,
    )
    mv = registry.register(booster, "coded")
    assert [(f.name, f.dtype) for f in mv.inputs] == [(f"f{i}", "double") for i in range(4)]
    predictor = registry.load("coded")
    assert predictor.runtime.frame is False
    answer = predictor.predict(table(x[:50], ["f0", "f1", "f2", "f3"]))
    np.testing.assert_array_equal(answer["prediction"].to_numpy(), booster.predict(x[:50]))


def test_a_txt_file_that_is_no_lightgbm_model_needs_its_flavor_named(
    registry: Registry, tmp_path: Path
) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    with pytest.raises(UntrustedArtifact) as refused:
        registry.register(path, "notes")
    assert refused.value.message == (
        "refusing to load notes.txt: its flavor cannot be told from its name or content: name "
        "it with --flavor (one of sklearn-skops, sklearn-pickle, xgboost, lightgbm, onnx, python)"
    )


def test_a_pickle_named_txt_is_refused_as_no_lightgbm_model(
    registry: Registry, tmp_path: Path
) -> None:
    path = tmp_path / "risk.txt"
    path.write_bytes(pickle.dumps(risk_classifier()))
    with pytest.raises(UntrustedArtifact) as refused:
        registry.register(path, "risk", flavor="lightgbm")
    assert refused.value.message == (
        f"refusing to load {path}: it is not a LightGBM text model: "
        "it does not start with a 'tree' line"
    )
    assert registry.models() == []


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"tree\nversion=v4\nhello\n", "Model file doesn't specify the number of classes"),
        (b"tree\nversion=v4\n\xff\xfe\n", "it is not UTF-8 text"),
        (b"", "it does not start with a 'tree' line"),
    ],
)
def test_a_broken_model_text_is_refused_with_the_reason(content: bytes, reason: str) -> None:
    with pytest.raises(UntrustedArtifact) as refused:
        runtime("lightgbm").load(content, "lightgbm", Trust(), "risk:1")
    assert refused.value.message == (
        f"refusing to load risk:1: it is not a LightGBM text model: {reason}"
    )


def test_cli_registers_a_lightgbm_text_file(tmp_path: Path) -> None:
    (tmp_path / "risk.txt").write_text(risk_classifier().booster_.model_to_string())
    env = {**os.environ, "MMSERVE_STORE_URL": str(tmp_path / "store"), "NO_COLOR": "1"}
    command = [MMSERVE, "models", "register", "risk.txt", "--name", "risk", "--flavor", "lightgbm"]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    mv = Registry(Store.from_url(str(tmp_path / "store"))).get("risk:1")
    assert (mv.flavor, mv.task, mv.classes) == ("lightgbm", "classifier", [0, 1])
    assert done.stdout.split() == [
        "registered",
        "risk:1",
        "(lightgbm,",
        "classifier,",
        "sha256",
        f"{mv.sha256})",
    ]
