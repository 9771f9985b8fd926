"""What the registry records about a model version, and how it is inferred at registration."""

from __future__ import annotations

import platform
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field, field_validator

from serving.errors import InvalidName, MissingColumn
from serving.flavors import Flavor

Task = Literal["classifier", "regressor", "transformer"]
Approval = Literal["pending", "approved", "rejected"]
Method = Literal["predict", "predict_proba", "decision_function", "transform"]


class Feature(BaseModel):
    """One input column: its name, Arrow type and whether nulls/NaN are allowed."""

    name: str
    dtype: str
    nullable: bool = False

    @field_validator("dtype")
    @classmethod
    def _known_type(cls, value: str) -> str:
        return str(arrow_type(value))

    @property
    def type(self) -> pa.DataType:
        return arrow_type(self.dtype)


class ModelVersion(BaseModel):
    """The metadata of one registered version (``registry/<name>/<version>/model.json``)."""

    name: str
    version: int
    flavor: Flavor
    artifact: str
    sha256: str
    size_bytes: int
    task: Task
    method: Method
    inputs: list[Feature]
    outputs: list[str]
    classes: list[Any] | None = None
    row_block: int = Field(8, ge=1)
    """Model calls are padded to a multiple of this many rows, so that BLAS takes the same
    kernels whatever the batch size and a row's answer is bit-identical in every mode."""
    extra_columns: Literal["ignore", "reject"] = "ignore"
    """What to do with input columns the model does not take."""
    trusted_types: list[str] = []
    trust_pickle: bool = False
    libraries: dict[str, str]
    created: datetime
    description: str = ""
    tags: dict[str, str] = {}
    approval: Approval = "approved"

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


def arrow_type(name: str) -> pa.DataType:
    aliases = {"float64": "double", "float32": "float", "str": "string", "large_string": "string"}
    try:
        return pa.type_for_alias(aliases.get(name, name))
    except (ValueError, KeyError):
        raise InvalidName(
            "dtype", name, "use an Arrow type such as double, float, int64, string, bool"
        ) from None


def infer_inputs(
    model: Any,
    example: pa.Table | None,
    schema: dict[str, str] | None,
    nullable: Iterable[str] = (),
) -> list[Feature]:
    """The input schema, in the order the model was fitted with.

    From an explicit ``schema`` ({name: dtype}), else an input example's columns and types,
    else the model's ``feature_names_in_`` (as float64), else ``f0..f<n-1>`` positional.
    Features in ``nullable``, or missing somewhere in the example, may be null or NaN.
    """
    count = getattr(model, "n_features_in_", None)
    names = list(getattr(model, "feature_names_in_", []))
    if schema is not None:
        types = dict(schema)
    elif example is not None:
        types = {field.name: str(field.type) for field in example.schema}
    else:
        names = names or [f"f{i}" for i in range(count or 0)]
        types = dict.fromkeys(names, "double")
    names = names or list(types)
    if not names:
        raise InvalidName("input schema", "", "the model records no features; pass an example")
    if count is not None and len(names) != count:
        reason = f"the model takes {count} features, the schema names {len(names)}"
        raise InvalidName("input schema", ", ".join(names), reason)
    missing = set(nullable) | (
        set() if example is None else {n for n in names if _has_missing(example, n)}
    )
    for name in [*names, *missing]:
        if name not in types or name not in names:
            raise MissingColumn(name)
    return [Feature(name=n, dtype=types[n], nullable=n in missing) for n in names]


def _has_missing(example: pa.Table, name: str) -> bool:
    """Nulls, or NaN in a float column: the example shows the model copes with missing values."""
    if name not in example.column_names:
        return False
    column = example[name]
    if column.null_count:
        return True
    return pa.types.is_floating(column.type) and bool(pc.any(pc.is_nan(column)).as_py())


def infer_task(model: Any) -> tuple[Task, Method]:
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


def infer_outputs(model: Any, task: Task, method: Method, width: int | None) -> list[str]:
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


def library_versions() -> dict[str, str]:
    import numpy
    import sklearn
    import skops

    import serving

    return {
        "python": platform.python_version(),
        "mmserve": serving.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": numpy.__version__,
        "pyarrow": pa.__version__,
        "skops": skops.__version__,
    }
