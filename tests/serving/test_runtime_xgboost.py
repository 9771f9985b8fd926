"""The XGBoost runtime: native files (no pickle), wrappers and Boosters, answered exactly as
the library answers in-process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import xgboost

from serving.errors import OutOfRange, UntrustedArtifact, WrongType
from serving.registry import Registry
from serving.store import Store

FEATURES = ["income", "debt", "age", "tenure"]


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(Store.from_url(str(tmp_path / "store")))


def data(rows: int = 400, seed: int = 0, classes: int = 2) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(rows, len(FEATURES))), columns=FEATURES)
    score = x["income"] - x["debt"] + 0.3 * rng.normal(size=rows)
    y = np.digitize(score, np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1]))
    return x, y


def table(x: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(x, preserve_index=False)


def test_a_classifier_answers_its_own_probabilities_and_labels(registry: Registry) -> None:
    x, y = data()
    model = xgboost.XGBClassifier(n_estimators=30, max_depth=3).fit(x, y)
    mv = registry.register(model, "credit")
    assert (mv.flavor, mv.artifact, mv.task, mv.method) == (
        "xgboost",
        "model.ubj",
        "classifier",
        "predict_proba",
    )
    assert mv.outputs == ["label", "proba_0", "proba_1"] and mv.classes == [0, 1]
    assert mv.row_block == 1  # trees answer each row alone: calls are not padded
    assert [(f.name, f.dtype) for f in mv.inputs] == [(n, "double") for n in FEATURES]
    assert mv.libraries["xgboost"] == xgboost.__version__
    answer = registry.load("credit").predict(table(x))
    np.testing.assert_array_equal(answer["proba_1"].to_numpy(), model.predict_proba(x)[:, 1])
    np.testing.assert_array_equal(answer["proba_0"].to_numpy(), model.predict_proba(x)[:, 0])
    np.testing.assert_array_equal(answer["label"].to_numpy(), model.predict(x))
    # one row alone answers as it does among the others
    alone = registry.load("credit").predict(table(x.iloc[[7]]))
    assert alone.to_pylist() == answer.slice(7, 1).to_pylist()


def test_early_stopping_serves_the_best_iteration(registry: Registry) -> None:
    x, y = data(600)
    model = xgboost.XGBClassifier(n_estimators=300, early_stopping_rounds=5, learning_rate=0.5)
    model.fit(x[:400], y[:400], eval_set=[(x[400:], y[400:])], verbose=False)
    assert model.best_iteration < 299
    registry.register(model, "stopped")
    answer = registry.load("stopped").predict(table(x))
    np.testing.assert_array_equal(answer["proba_1"].to_numpy(), model.predict_proba(x)[:, 1])


def test_a_multiclass_classifier(registry: Registry) -> None:
    x, y = data(classes=3)
    model = xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(x, y)
    mv = registry.register(model, "tiers")
    assert mv.outputs == ["label", "proba_0", "proba_1", "proba_2"]
    answer = registry.load("tiers").predict(table(x))
    proba = model.predict_proba(x)
    for k in range(3):
        np.testing.assert_array_equal(answer[f"proba_{k}"].to_numpy(), proba[:, k])
    np.testing.assert_array_equal(answer["label"].to_numpy(), model.predict(x))


def test_a_regressor_on_a_numpy_matrix_takes_positional_features(registry: Registry) -> None:
    x, _ = data()
    target = x["income"] * 2 - x["age"]
    model = xgboost.XGBRegressor(n_estimators=25).fit(x.to_numpy(), target)
    mv = registry.register(model, "limit")
    assert (mv.task, mv.outputs) == ("regressor", ["prediction"])
    assert [f.name for f in mv.inputs] == ["f0", "f1", "f2", "f3"]
    rows = pa.table({f"f{i}": x.iloc[:, i] for i in range(4)})
    answer = registry.load("limit").predict(rows)
    np.testing.assert_array_equal(answer["prediction"].to_numpy(), model.predict(x.to_numpy()))


@pytest.mark.parametrize(
    ("params", "classes"),
    [
        ({"objective": "binary:logistic"}, 2),
        ({"objective": "multi:softprob", "num_class": 3}, 3),
        ({"objective": "reg:squarederror"}, None),
    ],
)
def test_boosters_answer_as_inplace_predict(
    registry: Registry, params: dict, classes: int | None
) -> None:
    x, y = data(classes=classes or 2)
    booster = xgboost.train(params, xgboost.DMatrix(x, label=y), num_boost_round=15)
    mv = registry.register(booster, "booster")
    expected = booster.inplace_predict(x)
    answer = registry.load("booster").predict(table(x))
    if classes is None:
        assert mv.outputs == ["prediction"]
        np.testing.assert_array_equal(answer["prediction"].to_numpy(), expected)
    elif classes == 2:
        assert mv.outputs == ["label", "proba_0", "proba_1"]
        np.testing.assert_array_equal(answer["proba_1"].to_numpy(), expected)
        np.testing.assert_array_equal(answer["proba_0"].to_numpy(), 1 - expected)
        np.testing.assert_array_equal(answer["label"].to_numpy(), (expected > 0.5).astype(int))
    else:
        np.testing.assert_array_equal(answer["proba_2"].to_numpy(), expected[:, 2])
        np.testing.assert_array_equal(answer["label"].to_numpy(), expected.argmax(axis=1))


def test_a_softmax_booster_answers_the_class_as_an_integer(registry: Registry) -> None:
    x, y = data(classes=3)
    params = {"objective": "multi:softmax", "num_class": 3}
    booster = xgboost.train(params, xgboost.DMatrix(x, label=y), num_boost_round=10)
    mv = registry.register(booster, "softmax")
    assert (mv.method, mv.outputs, mv.output_types) == ("predict", ["label"], {"label": "int64"})
    answer = registry.load("softmax").predict(table(x))
    assert answer.schema.field("label").type == pa.int64()
    assert answer["label"].to_pylist() == booster.inplace_predict(x).astype(int).tolist()


@pytest.mark.parametrize("suffix", [".ubj", ".json"])
def test_a_saved_file_is_registered_by_its_name_and_content(
    registry: Registry, tmp_path: Path, suffix: str
) -> None:
    x, y = data()
    model = xgboost.XGBClassifier(n_estimators=10).fit(x, y)
    path = tmp_path / f"credit{suffix}"
    model.save_model(path)
    mv = registry.register(path, "credit")
    assert mv.flavor == "xgboost" and mv.trust_pickle is False
    loaded = registry.load("credit")
    assert isinstance(loaded.model, xgboost.XGBClassifier)
    answer = loaded.predict(table(x))
    np.testing.assert_array_equal(answer["proba_1"].to_numpy(), model.predict_proba(x)[:, 1])


def test_files_that_are_not_xgboost_models_are_refused(registry: Registry, tmp_path) -> None:
    disguised = tmp_path / "fraud.ubj"
    disguised.write_bytes(b"\x80\x04\x95\x00cos\nsystem\n.")  # a pickle named .ubj
    with pytest.raises(UntrustedArtifact) as info:
        registry.register(disguised, "fraud")
    assert info.value.message.startswith("refusing to load ")
    assert "fraud.ubj: it is not an XGBoost model: " in info.value.message
    other = tmp_path / "settings.json"
    other.write_text('{"threshold": 0.5}')
    with pytest.raises(UntrustedArtifact) as info:
        registry.register(other, "settings")
    assert "settings.json: its flavor cannot be told from its name or content" in (
        info.value.message
    )
    assert registry.models() == []


def test_categorical_features_are_taken_as_text(registry: Registry) -> None:
    x, y = data()
    x["region"] = pd.Categorical(np.random.default_rng(3).choice(["north", "south", "east"], 400))
    model = xgboost.XGBClassifier(n_estimators=10, enable_categorical=True).fit(x, y)
    mv = registry.register(model, "regional")
    assert [(f.name, f.dtype) for f in mv.inputs][-1] == ("region", "string")
    rows = table(x.astype({"region": str}))
    answer = registry.load("regional").predict(rows)
    np.testing.assert_array_equal(answer["proba_1"].to_numpy(), model.predict_proba(x)[:, 1])
    assert mv.inputs[-1].categories == ["east", "north", "south"]
    # a region it never saw is refused, naming it (XGBoost would fail the whole call)
    unseen = x.iloc[:3].astype({"region": str}).assign(region=["east", "west", "east"])
    with pytest.raises(WrongType) as info:
        registry.load("regional").predict(table(unseen))
    assert info.value.message == (
        "column 'region' must be one of the 3 categories it was trained with "
        "(east, north, south), got 'west' at row 1"
    )


def test_values_beyond_float32_are_refused_not_rounded(registry: Registry) -> None:
    x, y = data()
    registry.register(xgboost.XGBClassifier(n_estimators=5).fit(x, y), "credit")
    rows = table(x.iloc[:2]).set_column(1, "debt", pa.array([1.0, 1e39]))
    with pytest.raises(OutOfRange) as info:
        registry.load("credit").predict(rows)
    assert info.value.message == (
        "column 'debt' has 1e+39, beyond the float32 range the model computes in (±3.4e+38), "
        "at row 1"
    )


def test_corrupted_files_are_refused_without_crashing_the_process(tmp_path: Path) -> None:
    """XGBoost's own parser dies (SIGSEGV) on some corrupted files: registering them must
    refuse each one, in a process that lives on (run here as a child, to see it live)."""
    script = textwrap.dedent(
        """
        import random, sys
        from pathlib import Path
        import numpy as np, xgboost
        from serving.errors import UntrustedArtifact
        from serving.registry import Registry
        from serving.store import Store

        folder = Path(sys.argv[1])
        x = np.random.default_rng(0).normal(size=(200, 3))
        booster = xgboost.train(
            {"objective": "binary:logistic"}, xgboost.DMatrix(x, label=x[:, 0] > 0), 5
        )
        good = bytes(booster.save_raw("ubj"))
        registry = Registry(Store.from_url(str(folder / "store")))
        pick = random.Random(1)
        for i in range(10):
            data = bytearray(good)
            for _ in range(pick.randint(1, 8)):
                data[pick.randrange(len(data))] = pick.randrange(256)
            if pick.random() < 0.3:
                data = data[: pick.randrange(len(data))]
            path = folder / f"m{i}.ubj"
            path.write_bytes(data)
            try:
                registry.register(path, f"m{i}")
                print("registered")
            except UntrustedArtifact as err:
                print("crashed" if "crashed" in err.message else "refused")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    outcomes = done.stdout.split()
    assert len(outcomes) == 10 and set(outcomes) <= {"registered", "refused", "crashed"}


def test_a_wrappers_own_missing_value_is_kept(registry: Registry, tmp_path: Path) -> None:
    """XGBoost's file does not hold the wrapper's ``missing`` parameter: kept beside it."""
    x, y = data()
    x.iloc[::7, 1] = -999.0
    model = xgboost.XGBClassifier(n_estimators=20, missing=-999.0).fit(x, y)
    registry.register(model, "sentinel")
    answer = registry.load("sentinel").predict(table(x))
    np.testing.assert_array_equal(answer["proba_1"].to_numpy(), model.predict_proba(x)[:, 1])
    assert registry.load("sentinel").model.missing == -999.0
    assert model.get_booster().attr("mmserve_missing") is None  # the user's object unchanged
    nan_missing = xgboost.XGBClassifier(n_estimators=20).fit(x, y).predict_proba(x)[:, 1]
    assert not np.array_equal(nan_missing, model.predict_proba(x)[:, 1])  # it matters


def test_a_linear_booster_fitted_on_a_dataframe(registry: Registry) -> None:
    x, y = data()
    model = xgboost.XGBClassifier(booster="gblinear", n_estimators=10).fit(x, y)
    registry.register(model, "linear")
    answer = registry.load("linear").predict(table(x))
    np.testing.assert_array_equal(answer["proba_1"].to_numpy(), model.predict_proba(x)[:, 1])
    np.testing.assert_array_equal(answer["label"].to_numpy(), model.predict(x))
