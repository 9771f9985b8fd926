"""The models people deploy, as the real-time benchmark serves them and a test checks them.

Eight models, each with the one row every request sends:

- ``lr``: ``LogisticRegression`` fitted on a numpy array (no feature names);
- ``lr-df``: the same fitted on a pandas DataFrame (``f0..f19``), as most teams fit;
- ``hgb``: ``HistGradientBoostingClassifier`` on the DataFrame;
- ``rf``: ``RandomForestClassifier(100, max_depth=10)`` on the DataFrame;
- ``xgb``, ``lgbm``: XGBoost and LightGBM classifiers on the DataFrame;
- ``churn``: the demo's pipeline (``ColumnTransformer``: one-hot on two string columns, a
  scaler on three numbers; ``LogisticRegression``), fitted on a DataFrame;
- ``churn-onnx``: the same pipeline registered with ``compile="onnx"``: served as the ONNX
  graph skl2onnx makes of it.

The numeric models share one synthetic problem, ``make_classification(rows, 20 features,
random_state=0)`` in float32, and are registered with a float32 input example.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.datasets import make_classification

FEATURES = 20
NAMES = [f"f{i}" for i in range(FEATURES)]
MODELS = ("lr", "lr-df", "hgb", "rf", "xgb", "lgbm", "churn", "churn-onnx")


@dataclass
class Fitted:
    """A fitted model of the set and how it is registered and asked."""

    name: str
    model: Any
    example: pa.Table
    """The registration's input example: it sets the input schema."""
    row: dict[str, Any]
    """The one row every request sends, by feature name."""
    options: dict[str, Any] = field(default_factory=dict)
    """More arguments to ``Registry.register`` (``compile="onnx"``)."""

    @property
    def names(self) -> list[str]:
        return list(self.row)

    @property
    def numeric(self) -> bool:
        """Whether the row is 20 floats, sent as a list (else as an object by name)."""
        return self.names == NAMES

    def frame(self, rows: int = 1) -> pd.DataFrame:
        """The row, ``rows`` times, as the library is called with it: a DataFrame of the
        registered types (float32 for the numeric set)."""
        return pa.Table.from_pylist([self.row] * rows, schema=self.example.schema).to_pandas()

    def expected(self) -> list[float]:
        """The library's own probabilities for the row (the ONNX graph's are within
        the registration's tolerance of these)."""
        frame = self.frame()
        x: Any = frame if hasattr(self.model, "feature_names_in_") else np.ascontiguousarray(frame)
        return [float(p) for p in self.model.predict_proba(x)[0]]


def fit(names: tuple[str, ...] = MODELS, rows: int = 20_000) -> dict[str, Fitted]:
    """The models of ``names``, trained on ``rows`` rows (fewer make a quick test)."""
    x, y = make_classification(
        n_samples=rows, n_features=FEATURES, n_informative=10, random_state=0
    )
    x = x.astype(np.float32)
    frame = pd.DataFrame(x, columns=NAMES)
    example = pa.table({n: np.zeros(16, dtype=np.float32) for n in NAMES})
    row = dict(zip(NAMES, request_row(), strict=True))
    fitted = {}
    for name in names:
        if name in _NUMERIC:
            model = _NUMERIC[name]()
            model.fit(x if name == "lr" else frame, y)
            fitted[name] = Fitted(name, model, example, row)
        else:
            fitted[name] = _churn(name)
    return fitted


def request_row() -> list[float]:
    """The numeric row; 4 decimals, so every server parses the same floats."""
    x, _ = make_classification(n_samples=1, n_features=FEATURES, random_state=1)
    return [round(float(v), 4) for v in x[0]]


def _lr() -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=1000)


def _hgb() -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(random_state=0)


def _rf() -> Any:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=100, max_depth=10, n_jobs=1, random_state=0)


def _xgb() -> Any:
    import xgboost

    return xgboost.XGBClassifier(n_estimators=100, max_depth=6, n_jobs=1, random_state=0)


def _lgbm() -> Any:
    import lightgbm

    return lightgbm.LGBMClassifier(
        n_estimators=100, max_depth=6, num_leaves=63, n_jobs=1, random_state=0, verbose=-1
    )


_NUMERIC: dict[str, Callable[[], Any]] = {
    "lr": _lr,
    "lr-df": _lr,
    "hgb": _hgb,
    "rf": _rf,
    "xgb": _xgb,
    "lgbm": _lgbm,
}


def _churn(name: str) -> Fitted:
    from models import churn

    model, example = churn.train()
    row = churn.sample(1, seed=1).select(churn.FEATURES).to_pylist()[0]
    options = {"compile": "onnx"} if name == "churn-onnx" else {}
    return Fitted(name, model, example, row, options)
