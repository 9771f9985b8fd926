"""What the registry records about a model version, and how it is inferred at registration."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field, field_validator

from serving.errors import InvalidName, MissingColumn
from serving.runtimes import Flavor

Task = Literal["classifier", "regressor", "transformer"]
Approval = Literal["pending", "approved", "rejected"]
Method = Literal["predict", "predict_proba", "decision_function", "transform"]


class Feature(BaseModel):
    """One input column: its name, Arrow type and whether nulls/NaN are allowed."""

    name: str
    dtype: str
    nullable: bool = False
    categories: list[str] | list[int] | None = None
    """A categorical feature's categories, as the model was trained with: any other value
    is refused (a tree model would only take it for a missing one)."""

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
    output_types: dict[str, str] = {}
    """Arrow types of the outputs that are not float64 (``label`` takes its classes' type
    unless named here): string or int labels, an embedding's fixed-size list..."""
    classes: list[Any] | None = None
    row_block: int = Field(8, ge=1)
    """Model calls are padded to a multiple of this many rows, so that BLAS takes the same
    kernels whatever the batch size and a row's answer is bit-identical in every mode."""
    extra_columns: Literal["ignore", "reject"] = "ignore"
    """What to do with input columns the model does not take."""
    trusted_types: list[str] = []
    trust_pickle: bool = False
    trust_code: bool = False
    files: dict[str, str] = {}
    """A folder artifact's files (a ``python`` model's code and weights) and their sha256."""
    requirements: list[str] = []
    """Packages the model needs beyond its runtime's own (a ``python`` model's)."""
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
    features: list[str],
    count: int | None,
    example: pa.Table | None,
    schema: dict[str, str] | None,
    nullable: Iterable[str] = (),
    types: Mapping[str, str] | None = None,
    categories: Mapping[str, list[Any]] | None = None,
) -> list[Feature]:
    """The input schema, in the order the model was fitted with.

    From an explicit ``schema`` ({name: dtype}), else an input example's columns and types,
    else the model's own ``features`` (typed as in ``types``, else float64), else
    ``f0..f<count-1>`` positional.
    Features in ``nullable``, or missing somewhere in the example, may be null or NaN.
    """
    names = list(features)
    if schema is not None:
        types = dict(schema)
    elif example is not None:
        types = {field.name: str(field.type) for field in example.schema}
    else:
        names = names or [f"f{i}" for i in range(count or 0)]
        types = {name: (types or {}).get(name, "double") for name in names}
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
    categories = categories or {}
    return [
        Feature(name=n, dtype=types[n], nullable=n in missing, categories=categories.get(n))
        for n in names
    ]


def _has_missing(example: pa.Table, name: str) -> bool:
    """Nulls, or NaN in a float column: the example shows the model copes with missing values."""
    if name not in example.column_names:
        return False
    column = example[name]
    if column.null_count:
        return True
    return pa.types.is_floating(column.type) and bool(pc.any(pc.is_nan(column)).as_py())
