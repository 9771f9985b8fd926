"""Tiny models and data for the tests, trained deterministically."""

from __future__ import annotations

import os
import signal
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

FEATURES = [f"f{i}" for i in range(5)]


def numeric_data(rows: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(FEATURES)))
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.5, size=rows) > 0).astype(np.int64)
    return x, y


def numeric_table(x: np.ndarray) -> pa.Table:
    return pa.table({name: x[:, i] for i, name in enumerate(FEATURES)})


def logistic() -> LogisticRegression:
    x, y = numeric_data()
    return LogisticRegression().fit(x, y)


def forest() -> RandomForestClassifier:
    x, y = numeric_data()
    return RandomForestClassifier(n_estimators=20, max_depth=5, random_state=0).fit(x, y)


def regressor() -> LinearRegression:
    x, y = numeric_data()
    return LinearRegression().fit(x, x @ np.arange(1.0, 6.0) + y)


def mixed_frame(rows: int = 300, seed: int = 1) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, rows).astype(np.float64),
            "income": rng.normal(50_000, 15_000, rows),
            "plan": rng.choice(["basic", "plus", "pro"], rows),
            "region": rng.choice(["north", "south"], rows),
        }
    )
    y = ((frame["plan"] == "pro") | (frame["income"] > 60_000)).astype(np.int64).to_numpy()
    return frame, y


def mixed_pipeline() -> Pipeline:
    frame, y = mixed_frame()
    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), ["age", "income"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan", "region"]),
        ]
    )
    return Pipeline([("prep", prep), ("clf", LogisticRegression())]).fit(frame, y)


def negating_pipeline() -> Pipeline:
    """A model whose skops artifact holds a type skops does not trust by default."""
    import operator

    from sklearn.preprocessing import FunctionTransformer

    x, y = numeric_data()
    return Pipeline(
        [("neg", FunctionTransformer(operator.neg)), ("clf", LogisticRegression())]
    ).fit(x, y)


class ErrorModel(ClassifierMixin, BaseEstimator):
    """Fits like a classifier, then raises when asked to predict (registered as a pickle)."""

    def fit(self, x: Any, y: Any) -> ErrorModel:
        self.classes_ = np.unique(y)
        self.n_features_in_ = np.asarray(x).shape[1]
        return self

    def predict_proba(self, x: Any) -> np.ndarray:
        raise RuntimeError("weights are corrupt")


class SlowModel(ClassifierMixin, BaseEstimator):
    """Takes ``seconds`` per call however many rows it gets, like a model whose per-call
    cost dominates; answers ``proba_1 = sigmoid(f0)`` (registered as a pickle)."""

    def __init__(self, seconds: float = 0.3):
        self.seconds = seconds

    def fit(self, x: Any, y: Any) -> SlowModel:
        self.classes_ = np.unique(y)
        self.n_features_in_ = np.asarray(x).shape[1]
        return self

    def predict_proba(self, x: Any) -> np.ndarray:
        time.sleep(self.seconds)
        p = 1 / (1 + np.exp(-np.asarray(x)[:, 0]))
        return np.column_stack([1 - p, p])


class SlowLoadingModel(SlowModel):
    """Takes ``load_seconds`` to unpickle, like a large artifact."""

    def __init__(self, seconds: float = 0.0, load_seconds: float = 2.0):
        super().__init__(seconds)
        self.load_seconds = load_seconds

    def __setstate__(self, state: dict[str, Any]) -> None:
        time.sleep(state["load_seconds"])
        self.__dict__.update(state)


class CrashingModel(SlowModel):
    """Kills the process that calls it, like a model that runs out of memory or segfaults."""

    def predict_proba(self, x: Any) -> np.ndarray:
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")


class CallRows(RegressorMixin, BaseEstimator):
    """Answers, for every row, how many rows its model call had (padding included): how a
    mode batched the rows it scored, seen from the outside (registered as a pickle)."""

    def fit(self, x: Any, y: Any) -> CallRows:
        self.n_features_in_ = np.asarray(x).shape[1]
        return self

    def predict(self, x: Any) -> np.ndarray:
        return np.full(len(x), float(len(x)))


TYPED_MANIFEST = """\
model = "typed:Typed"
task = "classifier"
classes = ["ham", "spam"]

[inputs]
x = "double"

[outputs]
label = "string"
code = "int64"
score = "double"
embedding = "float[4]"
tokens = "list<int64>"
"""
TYPED_CODE = """\
import numpy as np


class Typed:
    def load(self, path):
        pass

    def predict(self, table):
        x = table["x"].to_numpy()
        return {
            "label": np.where(x > 0, "spam", "ham"),
            "code": np.where(x > 0, 2, 0),
            "score": x * 0.5,
            "embedding": np.stack([x, 2 * x, -x, x / 4], axis=1),  # [N, 4]
            "tokens": [list(range(int(abs(v)) % 3)) for v in x],  # of any length
        }
"""


def typed_model(folder: Path) -> Path:
    """A ``python`` model folder whose answers are typed (register with ``trust_code``): a
    string label, an int code, a float score, an embedding of 4 float32 values (answered as
    an ``[N, 4]`` array) and a list of ints of any length, each from its input ``x``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mmserve.toml").write_text(TYPED_MANIFEST)
    (folder / "typed.py").write_text(TYPED_CODE)
    return folder


def typed_answers(xs: list[float]) -> list[dict[str, Any]]:
    """What :func:`typed_model` answers for rows of ``x``, as Python values."""
    return [
        {
            "label": "spam" if x > 0 else "ham",
            "code": 2 if x > 0 else 0,
            "score": x * 0.5,
            "embedding": [float(np.float32(v)) for v in (x, 2 * x, -x, x / 4)],
            "tokens": list(range(int(abs(x)) % 3)),
        }
        for x in xs
    ]


def code_folder(root: Path, name: str, manifest: str, **files: str) -> Path:
    """A ``python`` model's folder ``root/name``: its ``mmserve.toml`` and ``files`` (a file
    name and its text), each dedented."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for file, text in {"mmserve.toml": manifest, **files}.items():
        (folder / file).write_text(textwrap.dedent(text))
    return folder
