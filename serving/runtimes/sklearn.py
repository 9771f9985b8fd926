"""scikit-learn: skops artifacts (safe, the default) or pickles (explicitly trusted).

Loading never runs before the caller has verified the artifact's sha256.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.errors import InvalidName, UntrustedArtifact
from serving.runtimes import Description, Flavor, Trust, argmax_labels

if TYPE_CHECKING:
    from serving.metadata import Method, ModelVersion, Task

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
    column_major = False  # BLAS may take other kernels for another layout

    def __init__(self, native: Any, method: Method):
        self.native = native
        # A model fitted on a DataFrame wants one back (with the same column names).
        self.frame = hasattr(native, "feature_names_in_")
        self.float32 = _computes_in_float32(native)
        classes = getattr(native, "classes_", None)
        self.classes = None if classes is None else np.asarray(classes)
        self.scores = getattr(native, method)
        # Threshold classifiers decide labels with their own cut-off, not the largest
        # probability: ask them (a second call, only for them).
        self._by_predict = method == "predict_proba" and _own_threshold(native)

    def labels(self, x: Any, scores: np.ndarray) -> np.ndarray:
        if self._by_predict or self.classes is None:
            return np.asarray(self.native.predict(x))
        return argmax_labels(self.classes, scores)


def wrap(native: Any, version: ModelVersion, threads: int = 1) -> SklearnModel:
    return SklearnModel(native, version.method)


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
