"""What the registry records about a model version, and how it is inferred at registration."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field, field_validator, model_validator

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
    content_type: str | None = None
    """A binary or string feature's media type or range (``image/png``, ``image/*``): a raw
    request body of that type is the model's one row (see :mod:`serving.codecs.raw`)."""
    path: bool = False
    """A binary feature the model reads as a file: its column holds the path of a local
    copy mmserve made of the bytes (an async job's input, downloaded, is never read into
    memory), deleted after the call. Callers still send bytes: never a path."""
    shape: list[int] | None = None
    """A tensor feature's shape, per row (``[3, 224, 224]``): its column is a fixed-size list
    of their product, a row's values in C order; V2 takes it as one ``[N, *shape]`` tensor."""

    @field_validator("dtype")
    @classmethod
    def _known_type(cls, value: str) -> str:
        return str(arrow_type(value))

    @field_validator("shape")
    @classmethod
    def _valid_shape(cls, value: list[int] | None) -> list[int] | None:
        return None if value is None else check_shape(value)

    @model_validator(mode="after")
    def _shape_fits_type(self) -> Feature:
        if self.shape is not None:
            check_fits(self.type, self.shape, self.name)
        return self

    @property
    def type(self) -> pa.DataType:
        return arrow_type(self.dtype)


class Compilation(BaseModel):
    """How a compiled version (``register(..., compile="onnx")``) was made from the model
    handed to registration, and how closely their answers agreed on its input example."""

    source_flavor: Flavor
    """The model's own flavor (``sklearn-skops``): what was compiled."""
    source_type: str
    """The model's class (``sklearn.pipeline.Pipeline``)."""
    source_sha256: str
    """The sha256 of the model's own artifact (not stored: the graph is what is served)."""
    converter: str
    """The converter (``skl2onnx``); its version is ``converter_version``."""
    converter_version: str
    numbers: Literal["double", "float"]
    """The graph's numeric inputs: double where the converter's graph loads, else float."""
    rows_checked: int
    """Rows of the input example both answered: labels equal on every one."""
    labels_equal: bool = True
    tolerance: float
    """The largest absolute difference allowed between the model's and the graph's
    probabilities (or predictions) on any row."""
    max_difference: float
    """The largest absolute difference measured on those rows."""


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
    output_content_types: dict[str, str] = {}
    """Media types of binary outputs (``image/png``): one answered alone is the raw body."""
    output_shapes: dict[str, list[int]] = {}
    """Shapes, per row, of tensor outputs (a fixed-size list in ``output_types``): V2
    answers one as an ``[N, *shape]`` tensor."""
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
    compiled: Compilation | None = None
    """Set when the artifact is a graph compiled from the registered model (``--compile``)."""
    libraries: dict[str, str]
    created: datetime
    description: str = ""
    tags: dict[str, str] = {}
    approval: Approval = "approved"

    @model_validator(mode="after")
    def _shapes_fit_types(self) -> ModelVersion:
        for name, shape in self.output_shapes.items():
            check_fits(arrow_type(self.output_types.get(name, "double")), check_shape(shape), name)
        return self

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


_ARROW_LIST = re.compile(
    r"(?:(?P<fixed>fixed_size_list)|list)<(?:(?:item|element): )?(?P<item>[^<>\[\]]+)>"
    r"(?:\[(?P<size>\d+)\])?|(?P<short>[^<>\[\]]+)\[(?P<short_size>\d+)\]"
)


def arrow_type(name: str) -> pa.DataType:
    """The Arrow type ``name`` spells: a scalar (``double``, ``int64``, ``string``...), a
    fixed-size list of K scalars as Arrow prints it (``fixed_size_list<item: float>[8]``) or
    as ``float[8]`` or ``list<float>[8]``, or a list of any length (``list<item: double>``
    or ``list<double>``); anything else is :class:`InvalidName` naming it."""
    listed = _ARROW_LIST.fullmatch(name)
    if listed is None:
        return _scalar_type(name, name)
    size = listed["size"] or listed["short_size"]
    if (listed["fixed"] and size is None) or (size is not None and not 0 < int(size) < 2**31):
        raise InvalidName("dtype", name, "a fixed-size list's size is from 1 to 2**31 - 1: [8]")
    item = _scalar_type(listed["item"] or listed["short"], name)
    return pa.list_(item) if size is None else pa.list_(item, int(size))


MAX_DIMS = 8
"""Most dimensions of a tensor feature's (or output's) shape, per row."""


def check_shape(shape: object, where: str = "shape") -> list[int]:
    """``shape`` as a tensor's shape per row: 1 to :data:`MAX_DIMS` positive whole numbers
    whose product is below 2**31 (a fixed-size list's size); else :class:`InvalidName`."""
    dims = shape if isinstance(shape, list) else None
    if (
        dims is None
        or not 0 < len(dims) <= MAX_DIMS
        or any(type(d) is not int or d < 1 for d in dims)
        or math.prod(dims) >= 2**31
    ):
        rule = (
            f"a list of 1 to {MAX_DIMS} positive whole numbers such as [3, 224, 224], "
            "whose product is below 2**31"
        )
        raise InvalidName(where, str(shape), rule)
    return list(dims)


def tensor_dtype(item: str, shape: list[int]) -> str:
    """The Arrow type of a tensor column of ``item`` values (``float``) shaped ``shape`` per
    row: a fixed-size list of their product (``fixed_size_list<item: float>[150528]``)."""
    return str(arrow_type(f"{item}[{math.prod(shape)}]"))


def check_fits(dtype: pa.DataType, shape: list[int], name: str) -> None:
    """Refuse (:class:`InvalidName`) a shape ``dtype`` cannot hold: a tensor's column is a
    fixed-size list of numbers (or booleans) as many as the shape's product."""
    numeric = pa.types.is_fixed_size_list(dtype) and (
        pa.types.is_integer(dtype.value_type)
        or pa.types.is_floating(dtype.value_type)
        or pa.types.is_boolean(dtype.value_type)
    )
    if not numeric or dtype.list_size != math.prod(shape):
        rule = f"a shape {shape} is of a fixed-size list of {math.prod(shape)} numbers"
        raise InvalidName(f"type of {name}", str(dtype), rule)


def _scalar_type(alias: str, name: str) -> pa.DataType:
    aliases = {"float64": "double", "float32": "float", "str": "string", "large_string": "string"}
    try:
        return pa.type_for_alias(aliases.get(alias, alias))
    except (ValueError, KeyError):
        raise InvalidName(
            "dtype",
            name,
            "use an Arrow type such as double, float, int64, string, bool, a fixed-size list "
            "such as fixed_size_list<item: float>[8] (or float[8]), or list<item: double>",
        ) from None


def names(features: Iterable[Feature]) -> list[str]:
    """The features' names, in order."""
    return [f.name for f in features]


def infer_inputs(
    features: list[str],
    count: int | None,
    example: pa.Table | None,
    schema: dict[str, str] | None,
    nullable: Iterable[str] = (),
    types: Mapping[str, str] | None = None,
    categories: Mapping[str, list[Any]] | None = None,
    content_types: Mapping[str, str] | None = None,
    paths: Iterable[str] = (),
    shapes: Mapping[str, list[int]] | None = None,
) -> list[Feature]:
    """The input schema, in the order the model was fitted with.

    From an explicit ``schema`` ({name: dtype}), else an input example's columns and types,
    else the model's own ``features`` (typed as in ``types``, else float64), else
    ``f0..f<count-1>`` positional.
    Features in ``nullable``, or missing somewhere in the example, may be null or NaN;
    those in ``shapes`` are tensors of that shape per row.
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
    categories, content_types, shapes = categories or {}, content_types or {}, shapes or {}
    return [
        Feature(
            name=n,
            dtype=types[n],
            nullable=n in missing,
            categories=categories.get(n),
            content_type=content_types.get(n),
            path=n in set(paths),
            shape=shapes.get(n),
        )
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
