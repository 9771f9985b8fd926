"""scikit-learn: skops artifacts (safe, the default) or pickles (explicitly trusted).

Loading never runs before the caller has verified the artifact's sha256.
"""

from __future__ import annotations

import io
import logging
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.errors import InvalidName, UntrustedArtifact
from serving.runtimes import Description, Flavor, Trust, argmax_labels

if TYPE_CHECKING:
    import pyarrow as pa

    from serving.metadata import Feature, Method, ModelVersion, Task

log = logging.getLogger(__name__)

# skops and joblib are imported where used: importing skops imports all of scikit-learn
# (about a second), which commands that never load a model should not pay.

PACKAGES = ("scikit-learn", "skops")


def dump(native: Any, flavor: Flavor) -> bytes:
    if flavor == "sklearn-skops":
        import skops.io as sio

        return bytes(sio.dumps(native))
    import joblib

    buffer = io.BytesIO()
    joblib.dump(native, buffer)
    return buffer.getvalue()


def untrusted_types(data: bytes, flavor: Flavor) -> list[str]:
    """Types in a skops artifact that skops does not trust by default."""
    if flavor != "sklearn-skops":
        return []
    import skops.io as sio

    return sorted(sio.get_untrusted_types(data=data))


def check_trusted(what: str, data: bytes, flavor: Flavor, trust: Trust) -> None:
    """Raise :class:`UntrustedArtifact` unless loading ``data`` was explicitly allowed."""
    if flavor == "sklearn-pickle":
        if not trust.pickle:
            raise UntrustedArtifact(
                what,
                "pickle runs arbitrary code when loaded; register it with --trust-pickle "
                "(trust_pickle=True) only if you trust its author",
            )
        return
    missing = sorted(set(untrusted_types(data, flavor)) - set(trust.types))
    if missing:
        raise UntrustedArtifact(
            what,
            f"it contains types that are not trusted: {', '.join(missing)}; "
            "trust them explicitly with --trust-type (trusted_types=[...])",
        )


def load(data: bytes, flavor: Flavor, trust: Trust, what: str) -> Any:
    """The estimator in ``data``; refuses anything not explicitly trusted."""
    check_trusted(what, data, flavor, trust)
    if flavor == "sklearn-pickle":
        import joblib

        return joblib.load(io.BytesIO(data))
    import skops.io as sio

    return sio.loads(data, trusted=list(trust.types))


def describe(native: Any, method: Method | None) -> Description:
    task, default = _task(native)
    method = method or default
    return Description(
        task=task,
        method=method,
        outputs=_outputs(native, task, method, _output_width(native)),
        classes=_classes(native) if task == "classifier" else None,
        features=[str(n) for n in getattr(native, "feature_names_in_", [])],
        count=getattr(native, "n_features_in_", None),
    )


class SklearnModel:
    """A scikit-learn estimator (or pipeline) behind the seam."""

    table = False

    def __init__(self, native: Any, method: Method, inputs: list[Feature] | None = None):
        self.native = native
        # A model fitted on a DataFrame wants one back (with the same column names), unless
        # its twin takes the matrix the DataFrame stands for, with the same answers.
        self.frame = hasattr(native, "feature_names_in_")
        twin = _matrix_twin(native, method, inputs) if self.frame and inputs else None
        # BLAS may take other kernels for another layout; a twin is called with the
        # column-major matrix its DataFrame would have handed to the model, so it takes one.
        self.column_major = twin is not None
        self.table = False
        self.float32 = _computes_in_float32(native)
        classes = getattr(native, "classes_", None)
        self.classes = None if classes is None else np.asarray(classes)
        # Threshold classifiers decide labels with their own cut-off, not the largest
        # probability: ask them (a second call, only for them).
        self._by_predict = method == "predict_proba" and _own_threshold(native)
        self.scores = getattr(native, method)
        self._predict: Any = getattr(native, "predict", None)
        if twin is not None:
            self.frame = False
            self.scores = _by_columns(getattr(twin, method))
            predict = getattr(twin, "predict", None)  # a transformer has none
            self._predict = predict and _by_columns(predict)
        elif self.frame and inputs and not self._by_predict:
            columns = _table_twin(native, inputs)
            if columns is not None:  # the checked feature table, not its DataFrame
                self.frame, self.table = False, True
                self.scores = _Checked(getattr(native, method), getattr(columns, method))

    def labels(self, x: Any, scores: np.ndarray) -> np.ndarray:
        if self._by_predict or self.classes is None:
            return np.asarray(self._predict(x))
        return argmax_labels(self.classes, scores)


def wrap(native: Any, version: ModelVersion, threads: int = 1) -> SklearnModel:
    return SklearnModel(native, version.method, version.inputs)


def _by_columns(method: Any) -> Any:
    """``method`` called with its matrix in column-major order (a copy only if it is not)."""
    return lambda x: method(np.asfortranarray(x))


# -- a DataFrame model's matrix twin -----------------------------------------------------------
#
# scikit-learn turns a DataFrame of one float dtype into the matrix np.asarray(frame) (a
# column-major view of its one block) and checks its column names against feature_names_in_:
# most of a small call's time (LogisticRegression, 8 rows of 20 columns: 800 of 950 us).
# The predictor builds that DataFrame from a column-major matrix it already has; the twin is
# called with the matrix itself. It is a shallow copy (sharing every fitted array) of the
# estimator, or of a pipeline's first step, without feature_names_in_, so that scikit-learn
# neither checks nor warns. The predictor's own checks stand in for the name check: it hands
# over exactly the registered columns, in feature_names_in_'s order.

_PROBE_ROWS = 16


def _matrix_twin(native: Any, method: Method, inputs: list[Feature]) -> Any | None:
    """The twin of a DataFrame model whose inputs are all float32 or all float64, if on probe
    rows it answers as the model does on their DataFrame, bit for bit and without a warning;
    ``None`` otherwise (a ColumnTransformer selecting columns by name, say), and the model
    keeps its DataFrame."""
    import pyarrow as pa

    names = [f.name for f in inputs]
    types = {f.type for f in inputs}
    if names != [str(n) for n in native.feature_names_in_] or len(types) != 1:
        return None
    (arrow,) = types
    if arrow not in (pa.float32(), pa.float64()):
        return None
    twin = _without_names(native)
    if twin is None:
        return None
    x = np.asfortranarray(_probe_rows(len(names), np.dtype(arrow.to_pandas_dtype())))
    try:
        import pandas as pd

        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a warning (a step still holding names): no twin
            calls = [method, "predict"] if _own_threshold(native) else [method]
            for call in calls:
                expected = getattr(native, call)(pd.DataFrame(x, columns=names, copy=False))
                if not _identical(getattr(twin, call)(x), expected):
                    return None
    except Exception:  # the model needs its DataFrame
        return None
    return twin


def _table_twin(native: Any, inputs: list[Feature]) -> Any | None:
    """A twin that takes the checked feature table, of a pipeline whose first step is a
    ColumnTransformer (string and number columns, say): the pipeline with that step's
    :class:`_Columns` in its place. ``None`` where one cannot be made; and where a feature
    may be null (a null's form in a DataFrame, None or NaN, is the DataFrame's to choose)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if not isinstance(native, Pipeline) or any(f.nullable for f in inputs):
        return None
    name, first = native.steps[0]
    if not isinstance(first, ColumnTransformer) or first.transformer_weights is not None:
        return None
    columns = _Columns.of(first, inputs)
    if columns is None:
        return None
    twin = _shallow(native)
    twin.steps = [(name, columns), *native.steps[1:]]
    return twin


class _Columns:
    """A fitted ColumnTransformer's twin: each of its transformers' twins called on a matrix
    of its own columns, made of the table as ``np.asarray`` makes it of the DataFrame's
    columns (numbers in their common type; strings as objects), and their outputs stacked
    by the ColumnTransformer itself. Its own column selection and checks on the DataFrame
    took most of a call (the churn pipeline: 2 of 4 ms, one row or 64)."""

    def __init__(self, transformer: Any, parts: list[tuple[Any, list[str]]]):
        self._transformer = transformer
        self._parts = parts

    @classmethod
    def of(cls, transformer: Any, inputs: list[Feature]) -> _Columns | None:
        types = {f.name: f.type for f in inputs}
        if getattr(transformer, "_sklearn_output_config", {}).get("transform") not in (
            None,
            "default",
        ):
            return None  # pandas or polars output: stacked by name
        parts: list[tuple[Any, list[str]]] = []
        for _, step, columns in transformer.transformers_:
            if isinstance(step, str) and step == "drop":
                continue
            if not all(isinstance(c, str) and c in types for c in columns):
                return None
            kinds = {_kind(types[c]) for c in columns}
            if len(kinds) != 1 or None in kinds:
                return None
            if isinstance(step, str):  # passthrough
                if step != "passthrough" or kinds == {"text"}:
                    return None
                parts.append((step, list(columns)))
                continue
            twin = _without_names(step)
            if twin is None:
                return None
            parts.append((twin, list(columns)))
        return cls(transformer, parts) if parts else None

    def transform(self, table: pa.Table) -> Any:
        outputs = []
        for step, columns in self._parts:
            x = _columns_matrix(table, columns)
            outputs.append(x if isinstance(step, str) else step.transform(x))
        self._transformer._validate_output(outputs)
        return self._transformer._hstack(outputs, n_samples=table.num_rows)


def _kind(t: Any) -> str | None:
    import pyarrow as pa

    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "number"
    return None


def _columns_matrix(table: pa.Table, columns: list[str]) -> np.ndarray:
    """What ``np.asarray(frame[columns])`` is, for columns of one kind and no null."""
    arrays = [table.column(c).to_numpy() for c in columns]
    if arrays[0].dtype == object:
        return np.column_stack(arrays) if len(arrays) > 1 else arrays[0].reshape(-1, 1)
    return np.column_stack(arrays).astype(np.result_type(*arrays), copy=False)


_CHECKED_CALLS = 3


class _Checked:
    """A table twin's call, checked against the model's own call on the table's DataFrame
    (what the predictor hands a DataFrame model) on its first three calls: their answers
    are the model's own, and one that differs (or a twin that fails) leaves the model its
    DataFrame for good."""

    def __init__(self, model: Any, twin: Any):
        self._model, self._twin = model, twin
        self._left: int | None = _CHECKED_CALLS  # None: the twin differed, never again

    def __call__(self, table: pa.Table) -> Any:
        if self._left == 0:
            return self._twin(table)
        expected = self._model(table.to_pandas())
        if self._left is None:
            return expected
        try:
            same = _identical(self._twin(table), expected)
        except Exception:
            same = False
        if same:
            self._left -= 1
        else:
            self._left = None
            log.warning(
                "a ColumnTransformer's twin answered otherwise: the model keeps its DataFrame"
            )
        return expected


def _without_names(native: Any) -> Any | None:
    """A shallow copy of ``native`` without ``feature_names_in_`` where the input first
    arrives: the estimator itself, or a pipeline's first step (later steps get its output)."""
    from sklearn.pipeline import Pipeline

    if isinstance(native, Pipeline):
        name, first = native.steps[0]
        inner = _without_names(first)
        if inner is None:
            return None
        twin = _shallow(native)
        twin.steps = [(name, inner), *native.steps[1:]]
        return twin
    if "feature_names_in_" not in getattr(native, "__dict__", {}):
        return None
    twin = _shallow(native)
    del twin.feature_names_in_
    return twin


def _shallow(native: Any) -> Any:
    """A copy of ``native`` sharing its attributes' values, made without its ``__setstate__``
    (which warns when the model was saved by another scikit-learn version)."""
    twin = object.__new__(type(native))
    twin.__dict__.update(native.__dict__)
    return twin


def _probe_rows(width: int, dtype: np.dtype) -> np.ndarray:
    """Rows for the probe: fixed, of varied sign and scale."""
    rng = np.random.default_rng(0)
    scales = np.logspace(-2, 3, _PROBE_ROWS)[:, None]
    return (rng.standard_normal((_PROBE_ROWS, width)) * scales).astype(dtype)


def _identical(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def _task(model: Any) -> tuple[Task, Method]:
    from sklearn.base import is_classifier, is_regressor

    if is_classifier(model):
        return "classifier", "predict_proba" if hasattr(model, "predict_proba") else "predict"
    if is_regressor(model):
        return "regressor", "predict"
    if hasattr(model, "transform"):
        return "transformer", "transform"
    raise InvalidName(
        "model",
        type(model).__name__,
        "expected a scikit-learn classifier, regressor or transformer",
    )


def _outputs(model: Any, task: Task, method: Method, width: int | None) -> list[str]:
    """Output column names: ``label`` + ``proba_<class>``, ``prediction``, ``score``..."""
    if task == "classifier":
        classes = [str(c) for c in model.classes_]
        if method == "predict_proba":
            return ["label"] + [f"proba_{c}" for c in classes]
        if method == "decision_function":
            return ["score"] if len(classes) == 2 else [f"score_{c}" for c in classes]
        return ["label"]
    if method == "transform" and hasattr(model, "get_feature_names_out"):
        return [str(n) for n in model.get_feature_names_out()]
    prefix = "prediction" if method == "predict" else "output"
    if width is None or (width == 1 and method == "predict"):
        return [prefix] if method == "predict" else [f"{prefix}_0"]
    return [f"{prefix}_{i}" for i in range(width)]


def _final_step(model: Any) -> Any:
    steps = getattr(model, "steps", None)
    return steps[-1][1] if steps else model


def _output_width(model: Any) -> int | None:
    final = _final_step(model)
    if getattr(final, "n_outputs_", None):
        return int(final.n_outputs_)
    coef = getattr(final, "coef_", None)
    return int(coef.shape[0]) if coef is not None and coef.ndim == 2 else None


def _classes(model: Any) -> list[Any]:
    return [c.item() if hasattr(c, "item") else c for c in model.classes_]


def _computes_in_float32(model: Any) -> bool:
    """Whether the model (a pipeline's last step) is a tree model: scikit-learn's trees and
    their ensembles compare features in float32."""
    final = _final_step(model)
    if hasattr(final, "tree_"):
        return True
    members = getattr(final, "estimators_", None)
    if members is None:
        return False
    first = np.ravel(np.asarray(members, dtype=object))[:1]
    return len(first) == 1 and hasattr(first[0], "tree_")


def _own_threshold(model: Any) -> bool:
    from sklearn.model_selection import FixedThresholdClassifier, TunedThresholdClassifierCV

    return isinstance(_final_step(model), FixedThresholdClassifier | TunedThresholdClassifierCV)
