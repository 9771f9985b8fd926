"""XGBoost: native models (UBJSON or JSON, as ``save_model`` writes them), no pickle.

A scikit-learn wrapper (``XGBClassifier``, ``XGBRegressor``) is saved with the attribute
XGBoost itself writes for it and loaded back as that wrapper, so it answers as the user's
own object does (its best iteration after early stopping included); a bare ``Booster``
answers with ``inplace_predict``, its objective telling a classifier from a regressor.
Categorical features (``enable_categorical``) are taken as text: XGBoost (3.1 and later)
keeps the categories it was trained with and maps values by name, a value it never saw
counting as missing, exactly as the library does in-process.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import xgboost

from serving.errors import UntrustedArtifact
from serving.runtimes import Description, Flavor, Trust

if TYPE_CHECKING:
    from serving.metadata import Method, ModelVersion

PACKAGES = ("xgboost",)
_MISSING = "mmserve_missing"
_WRAPPERS: dict[str, type[xgboost.XGBModel]] = {
    "classifier": xgboost.XGBClassifier,
    "regressor": xgboost.XGBRegressor,
}


def dump(native: Any, flavor: Flavor) -> bytes:
    if isinstance(native, xgboost.Booster):
        return bytes(native.save_raw("ubj"))
    # The wrapper writes its own attribute (what it is) only into a file it saves; its
    # missing value, a parameter, it does not write at all: it goes in an attribute of ours.
    missing = native.missing
    booster = native.get_booster()
    if not np.isnan(missing):
        booster.set_attr(**{_MISSING: repr(float(missing))})
    try:
        with tempfile.TemporaryDirectory(prefix="mmserve-xgboost-") as folder:
            path = os.path.join(folder, "model.ubj")
            native.save_model(path)
            with open(path, "rb") as file:
                return file.read()
    finally:
        booster.set_attr(**{_MISSING: None})


def untrusted_types(data: bytes, flavor: Flavor) -> list[str]:
    return []  # a data format: nothing in it runs


def load(data: bytes, flavor: Flavor, trust: Trust, what: str) -> Any:
    """The wrapper the artifact was saved from, else its Booster."""
    booster = xgboost.Booster()
    try:
        booster.load_model(bytearray(data))
        kind = json.loads(booster.attr("scikit_learn") or "{}").get("_estimator_type")
        if kind not in _WRAPPERS:
            return booster
        wrapper = _WRAPPERS[kind]()
        wrapper.load_model(bytearray(data))
        missing = wrapper.get_booster().attr(_MISSING)
        if missing is not None:
            wrapper.set_params(missing=float(missing))
        return wrapper
    except Exception as err:  # XGBoostError, and its own errors decoding its errors
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        reason = re.sub(r"^\[[\d:]+\] \S+: ", "", first)[:200]  # "[hh:mm:ss] file.cc:12: "
        raise UntrustedArtifact(what, f"it is not an XGBoost model: {reason}") from None


def describe(native: Any, method: Method | None) -> Description:
    booster = _booster(native)
    objective, classes, targets = _learner(booster)
    categories = _categories(booster)
    about = Description(
        "regressor",
        "predict",
        ["prediction"] if targets == 1 else [f"prediction_{i}" for i in range(targets)],
        features=list(booster.feature_names or []),
        count=booster.num_features(),
        feature_types={name: str(values.type) for name, values in categories.items()},
        categories={name: values.to_pylist() for name, values in categories.items()},
        row_block=1,  # trees, or a linear booster's own per-row loop: no BLAS
    )
    if classes is None:
        return about
    if objective == "multi:softmax":  # a Booster answering with the class itself
        return replace(
            about,
            task="classifier",
            outputs=["label"],
            classes=classes,
            output_types={"label": "int64"},
        )
    outputs = ["label", *(f"proba_{c}" for c in classes)]
    return replace(
        about, task="classifier", method="predict_proba", outputs=outputs, classes=classes
    )


class XGBoostModel:
    """An XGBoost wrapper or Booster behind the seam."""

    float32 = True  # XGBoost casts every feature to float32
    column_major = True
    table = False

    def __init__(self, native: Any, version: ModelVersion, threads: int):
        self.native = native
        self._categorical = [f.name for f in version.inputs if f.categories is not None]
        self.frame = bool(self._categorical)
        self.classes = None if version.classes is None else np.asarray(version.classes)
        self._binary = version.classes is not None and len(version.classes) == 2
        self._trees = _booster(native)
        self._trees.set_param({"nthread": threads})
        if isinstance(native, xgboost.XGBModel):
            native.set_params(n_jobs=threads)  # its own calls set the booster's again
        self._range, self._missing = (0, 0), np.nan
        self._call: Callable[[Any], np.ndarray] = self._inplace
        if isinstance(native, xgboost.XGBModel) and _predicts_inplace(native):
            # The call the wrapper's predict_proba (predict) makes, made directly: the same
            # inplace_predict, at its best iteration, with its missing value. Its config
            # context and lookups cost about 50 µs of a 250 µs one-row call.
            self._range, self._missing = _iteration_range(native), native.missing
        elif isinstance(native, xgboost.XGBClassifier):
            self._call = native.predict_proba
        elif isinstance(native, xgboost.XGBModel):
            self._call = native.predict
        if self._call != self._inplace and self._trees.feature_names:
            self.frame = True  # the wrapper's own call checks the features' names

    def scores(self, x: Any) -> np.ndarray:
        if self._categorical:
            x = x.astype(dict.fromkeys(self._categorical, "category"))
        scores = self._call(x)
        if self._binary and scores.ndim == 1:  # as XGBClassifier.predict_proba widens P(1)
            return np.vstack((1 - scores, scores)).T
        return scores

    def labels(self, x: Any, scores: np.ndarray) -> np.ndarray:
        """XGBClassifier.predict's rule: P(1) > 0.5 for two classes, else the argmax."""
        assert self.classes is not None
        if self._binary:
            return self.classes.take((scores[:, 1] > 0.5).astype(np.intp))
        return self.classes.take(np.argmax(scores, axis=1))

    def _inplace(self, x: Any) -> np.ndarray:
        return self._trees.inplace_predict(x, iteration_range=self._range, missing=self._missing)


def wrap(native: Any, version: ModelVersion, threads: int = 1) -> XGBoostModel:
    return XGBoostModel(native, version, threads)


def _booster(native: Any) -> xgboost.Booster:
    return native if isinstance(native, xgboost.Booster) else native.get_booster()


def _predicts_inplace(wrapper: xgboost.XGBModel) -> bool:
    """Whether the wrapper's own predict_proba (predict) answers inplace_predict's values:
    not for a linear booster, nor for softmax probabilities made of margins."""
    softmax = isinstance(wrapper, xgboost.XGBClassifier) and wrapper.objective == "multi:softmax"
    return wrapper.booster != "gblinear" and not softmax


def _iteration_range(wrapper: xgboost.XGBModel) -> tuple[int, int]:
    """The trees the wrapper predicts with: up to its best iteration after early stopping."""
    try:
        return (0, wrapper.best_iteration + 1)
    except AttributeError:
        return (0, 0)


def _learner(booster: xgboost.Booster) -> tuple[str, list[int] | None, int]:
    """The objective, a classifier's classes (``None`` for anything else), and how many
    targets a regressor predicts."""
    learner = json.loads(booster.save_config())["learner"]
    objective = learner["objective"]["name"]
    params = learner["learner_model_param"]
    if objective == "binary:logistic":
        return objective, [0, 1], 1
    if objective in ("multi:softprob", "multi:softmax"):
        return objective, list(range(int(params["num_class"]))), 1
    return objective, None, max(1, int(params.get("num_target", "1")))


def _categories(booster: xgboost.Booster) -> dict[str, pa.Array]:
    """The categories of each categorical feature, as the booster was trained with."""
    if "c" not in (booster.feature_types or []):
        return {}
    found = booster.get_categories(export_to_arrow=True).to_arrow() or []
    return {name: values for name, values in found if values is not None}
