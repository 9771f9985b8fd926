"""LightGBM: the native text model (``model_to_string``), read back with
``Booster(model_str=...)``; no pickle, nothing in it runs.

A scikit-learn wrapper (``LGBMClassifier``, ``LGBMRegressor``, ``LGBMRanker``) is saved as its
booster's text, which does not hold a classifier's labels: registration records them and every
load takes them from the version. A bare ``Booster`` is a classifier when its objective is
``binary`` (classes 0 and 1) or ``multiclass``/``multiclassova`` (classes 0..K-1), else a
regressor. The answers are the library's own, bit for bit: a binary model's probabilities
are ``[1 - p, p]`` as ``LGBMClassifier.predict_proba`` builds them, and LightGBM compares
features in float64, so no float32 bound applies. Features trained as pandas ``category``
columns are taken as their categories' values (text or integers) and coded with the
categories the model stores; the version records them, so that a value the model never saw
is refused rather than taken for a missing one (a null is missing, as in-process).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import lightgbm
import numpy as np
import pandas as pd
import pyarrow as pa

from serving.errors import InvalidName, UntrustedArtifact
from serving.runtimes import Description, Flavor, Trust, argmax_labels

if TYPE_CHECKING:
    from serving.metadata import Method, ModelVersion

PACKAGES = ("lightgbm",)
_CLASSIFYING = ("binary", "multiclass", "multiclassova")
_CATEGORY_TYPES = ("string", "int64")  # what a version records of a feature's categories
_Classifier = lightgbm.LGBMClassifier


def dump(native: Any, flavor: Flavor) -> bytes:
    # Up to the best iteration when early stopping found one: what the model answers with.
    return _booster(native).model_to_string().encode()


def untrusted_types(data: bytes, flavor: Flavor) -> list[str]:
    return []  # a text format: nothing in it runs


def load(data: bytes, flavor: Flavor, trust: Trust, what: str) -> lightgbm.Booster:
    """The Booster in ``data``; bytes that are no LightGBM text model are refused."""
    if not data.startswith(b"tree"):
        reason = "it does not start with a 'tree' line"
    else:
        try:
            return lightgbm.Booster(model_str=data.decode())
        except UnicodeDecodeError:
            reason = "it is not UTF-8 text"
        except (lightgbm.basic.LightGBMError, ValueError) as err:
            reason = (str(err).strip().splitlines() or ["LightGBM cannot read it"])[-1][:200]
    raise UntrustedArtifact(what, f"it is not a LightGBM text model: {reason}")


def describe(native: Any, method: Method | None) -> Description:
    booster = _booster(native)
    names = booster.feature_name()
    positional = all(name == f"Column_{i}" for i, name in enumerate(names))  # fitted on numpy
    served = [f"f{i}" for i in range(len(names))] if positional else names
    width = booster.num_model_per_iteration()
    categorical = {served[j]: c for j, c in _categorical(booster).items()}
    about = Description(
        "regressor",
        "predict",
        ["prediction"] if width == 1 else [f"prediction_{i}" for i in range(width)],
        features=[] if positional else names,
        count=len(names),
        feature_types={name: _category_type(name, c) for name, c in categorical.items()},
        categories={name: [_plain(c) for c in values] for name, values in categorical.items()},
        row_block=1,  # each row walks the trees alone (a linear tree's leaf too): no BLAS
    )
    objective = _header(booster).get("objective", "").split(" ")[0]  # none: a custom one
    wrapper = isinstance(native, lightgbm.LGBMModel)  # a wrapper says what it is
    if objective not in _CLASSIFYING or (wrapper and not isinstance(native, _Classifier)):
        if method not in (None, "predict"):
            raise InvalidName("method", str(method), "a LightGBM regressor answers predict")
        return about
    if method not in (None, "predict_proba", "predict"):
        reason = "a LightGBM classifier answers predict_proba or predict"
        raise InvalidName("method", str(method), reason)
    classes = _classes(native) if wrapper else list(range(max(width, 2)))
    method = method or "predict_proba"
    outputs = (
        ["label", *(f"proba_{c}" for c in classes)] if method == "predict_proba" else ["label"]
    )
    return replace(about, task="classifier", method=method, outputs=outputs, classes=classes)


class LightGBMModel:
    """A LightGBM Booster (or a wrapper's, when registering the wrapper) behind the seam."""

    float32 = False  # LightGBM compares features with float64 thresholds
    column_major = True
    table = False

    def __init__(self, native: Any, version: ModelVersion, threads: int):
        self.native = native
        self._booster = _booster(native)
        self._threads = threads
        self.classes = None if version.classes is None else np.asarray(version.classes)
        self._label = version.method == "predict"
        self._categories = {
            j: pd.CategoricalDtype(c) for j, c in _categorical(self._booster).items()
        }
        self.frame = bool(self._categories)

    def scores(self, x: Any) -> np.ndarray:
        if self._categories:
            x = _coded(x, self._categories)
        scores = np.asarray(self._booster.predict(x, num_threads=self._threads))
        if self.classes is None:
            return scores
        if scores.ndim == 1:  # as LGBMClassifier.predict_proba widens a binary model's P(1)
            scores = np.vstack((1.0 - scores, scores)).transpose()
        return argmax_labels(self.classes, scores) if self._label else scores

    def labels(self, x: Any, scores: np.ndarray) -> np.ndarray:
        """LGBMClassifier.predict's rule: the first class of largest probability."""
        assert self.classes is not None
        return argmax_labels(self.classes, scores)


def wrap(native: Any, version: ModelVersion, threads: int = 1) -> LightGBMModel:
    return LightGBMModel(native, version, threads)


def _booster(native: Any) -> lightgbm.Booster:
    if isinstance(native, lightgbm.Booster):
        return native
    if not native.__sklearn_is_fitted__():
        raise InvalidName("model", type(native).__name__, "it is not fitted")
    return native.booster_


def _classes(wrapper: Any) -> list[Any]:
    return [_plain(c) for c in wrapper.classes_]


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value a version's JSON records."""
    return value.item() if hasattr(value, "item") else value


def _header(booster: lightgbm.Booster) -> dict[str, str]:
    """The ``key=value`` lines before the trees (objective, feature_infos...), from the text
    of one iteration: the header is the same, and cheap however large the model."""
    header = {}
    for line in booster.model_to_string(num_iteration=1).splitlines():
        if line.startswith("Tree=") or line == "end of trees":
            break
        key, _, value = line.partition("=")
        header[key] = value
    return header


def _categorical(booster: lightgbm.Booster) -> dict[int, list[Any]]:
    """The features trained as pandas ``category`` columns, by position, with their
    categories. The model stores the categories of every such column, in order, but not
    which features they were: they are its categorical features (``feature_infos`` lists
    their codes), when there are as many and each one's codes fit its categories; a model
    with ordered categories, or other categorical features besides, is refused."""
    lists = booster.pandas_categorical or []
    if not lists:
        return {}  # categorical features, if any, take their integer codes as numbers
    infos = _header(booster).get("feature_infos", "").split(" ")
    positions = [j for j, info in enumerate(infos) if info not in ("", "none") and info[0] != "["]
    if len(positions) != len(lists) or not all(
        _codes_fit(infos[j], len(c)) for j, c in zip(positions, lists, strict=True)
    ):
        names = booster.feature_name()
        raise InvalidName(
            "categorical features",
            ", ".join(names[j] for j in positions),
            f"the model's {len(lists)} pandas category columns cannot be matched with them: "
            "only unordered pandas categories, and no other categorical feature, are served",
        )
    return dict(zip(positions, lists, strict=True))


def _codes_fit(info: str, count: int) -> bool:
    """Whether every code in a categorical ``feature_infos`` entry is a category's (or -1)."""
    codes = info.split(":")
    return all(c.lstrip("-").isdigit() and -1 <= int(c) < count for c in codes)


def _category_type(name: str, categories: list[Any]) -> str:
    """The Arrow type a categorical feature's values arrive in: its categories' type."""
    try:
        kind = str(pa.array(categories).type)
    except (pa.ArrowException, TypeError, ValueError):
        kind = "mixed"
    if kind not in _CATEGORY_TYPES:
        reason = f"its categories are {kind}: only text or integer categories are served"
        raise InvalidName("categorical feature", name, reason)
    return kind


def _coded(x: pd.DataFrame, categories: dict[int, pd.CategoricalDtype]) -> pd.DataFrame:
    """``x`` with its categorical columns as the model's categories (a null as -1: missing,
    as LightGBM codes it in-process)."""
    x = x.copy(deep=False)
    for j, dtype in categories.items():
        codes = dtype.categories.get_indexer(x.iloc[:, j])
        x.isetitem(j, pd.Categorical.from_codes(codes, dtype=dtype))
    return x
