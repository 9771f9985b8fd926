"""An MLflow model's ``MLmodel`` file, read as data: its flavors, its run and its signature,
whose columns become mmserve features.

The file is YAML, its signature's inputs and outputs JSON texts inside it; both are parsed
here with ``yaml.safe_load`` and ``json`` rather than by MLflow, whose loaders unpickle.

Signature types and the Arrow types they become (``Feature.dtype``)::

    double -> double      long -> int64       boolean -> bool     binary -> binary
    float  -> float       integer -> int32    string -> string    datetime -> timestamp[ns]
    array of one of them -> list<item: ...>   a tensor [-1, d1, ...] -> a tensor feature
                                              (a fixed-size list, shape [d1, ...] per row)

Objects, maps, ``any`` and tensors of another shape have no feature type: they are
refused, naming the column.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from serving.errors import ImportRefused
from serving.metadata import tensor_dtype

NAME = "MLmodel"
_COLUMN_TYPES = {
    "double": "double",
    "float": "float",
    "long": "int64",
    "integer": "int32",
    "boolean": "bool",
    "string": "string",
    "binary": "binary",
    "datetime": "timestamp[ns]",  # MLflow's own numpy type for it: datetime64[ns]
}
_TENSOR_TYPES = {
    "float64": "double",
    "float32": "float",
    "int64": "int64",
    "int32": "int32",
    "int16": "int16",
    "int8": "int8",
    "uint64": "uint64",
    "uint32": "uint32",
    "uint16": "uint16",
    "uint8": "uint8",
    "bool": "bool",
}
_TAKEN = (
    "double, float, long, integer, boolean, string, binary, datetime, an array of one of "
    "them, or a tensor of numbers shaped [-1, d1, ...]"
)


@dataclass(frozen=True)
class MLmodel:
    """What an ``MLmodel`` file says."""

    flavors: dict[str, dict[str, Any]]
    inputs: list[dict[str, Any]] | None
    """The signature's input specs (ColSpec or TensorSpec dicts); ``None`` without one."""
    outputs: list[dict[str, Any]] | None
    run_id: str | None
    model_id: str | None
    """An MLflow 3 logged model's id (``m-...``)."""


@dataclass(frozen=True)
class Columns:
    """A signature's columns as mmserve features (or outputs), in order."""

    kind: Literal["frame", "tensor", "tensors"]
    """How MLflow hands them to a model: a DataFrame of columns (ColSpecs), one unnamed
    array (a single unnamed TensorSpec) or a dict of named arrays (TensorSpecs)."""
    named: bool
    """False when the signature names no column: the names here are mmserve's own."""
    types: dict[str, str]
    """Arrow type of each column; a tensor's is its values' type (``float``)."""
    shapes: dict[str, list[int]] = field(default_factory=dict)
    """Shape per row of tensor columns (not of a tensor shaped [-1], a plain column)."""
    nullable: list[str] = field(default_factory=list)
    """Columns the signature marks optional (``required: false``)."""

    def schema(self) -> dict[str, str]:
        """``{name: dtype}`` as the registry takes it: a tensor's as its fixed-size list."""
        return {
            name: tensor_dtype(dtype, self.shapes[name]) if name in self.shapes else dtype
            for name, dtype in self.types.items()
        }


def read(folder: Path, source: str) -> MLmodel:
    """The ``MLmodel`` file of the model downloaded into ``folder``."""
    path = folder / NAME
    if not path.is_file():
        raise ImportRefused(
            source,
            f"it holds no {NAME} file, so it is no MLflow model: name a model "
            "(models:/<name>/<version>) or the folder a run logged one in (runs:/<run_id>/model)",
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ImportRefused(source, f"its {NAME} file is not YAML: {err}") from None
    flavors = raw.get("flavors") if isinstance(raw, dict) else None
    if not isinstance(flavors, dict) or not all(isinstance(c, dict) for c in flavors.values()):
        raise ImportRefused(source, f"its {NAME} file lists no flavors")
    signature = raw.get("signature") or {}
    return MLmodel(
        flavors={str(k): v for k, v in flavors.items()},
        inputs=_specs(signature, "inputs", source),
        outputs=_specs(signature, "outputs", source),
        run_id=_text(raw.get("run_id")),
        model_id=_text(raw.get("model_id")),
    )


def columns(specs: list[dict[str, Any]], side: Literal["input", "output"], source: str) -> Columns:
    """The features (or outputs) ``specs`` describe; unnamed ones are called ``input``
    (``prediction``), or ``input_0``, ``input_1``... when there are several."""
    unnamed = "input" if side == "input" else "prediction"
    names = [_text(spec.get("name")) for spec in specs]
    named = all(names)
    if not named:
        names = [unnamed] if len(specs) == 1 else [f"{unnamed}_{i}" for i in range(len(specs))]
    tensors = [spec.get("type") == "tensor" for spec in specs]
    if any(tensors) and not all(tensors):
        raise ImportRefused(source, f"its {side} signature mixes columns and tensors")
    types: dict[str, str] = {}
    shapes: dict[str, list[int]] = {}
    nullable: list[str] = []
    for name, spec in zip(names, specs, strict=True):
        assert name is not None
        if all(tensors):
            types[name], shape = _tensor(spec, name, side, source)
            if shape:
                shapes[name] = shape
        else:
            types[name] = _column(spec, name, side, source)
            if spec.get("required", True) is False:
                nullable.append(name)
    kind: Literal["frame", "tensor", "tensors"] = "frame"
    if all(tensors):
        kind = "tensors" if named else "tensor"
    return Columns(kind, named, types, shapes, nullable)


def _specs(signature: Any, side: str, source: str) -> list[dict[str, Any]] | None:
    """One side of a signature: a JSON list of specs, in the YAML as a text."""
    text = signature.get(side) if isinstance(signature, dict) else None
    if text is None:
        return None
    try:
        specs = json.loads(text) if isinstance(text, str) else text
    except ValueError as err:
        raise ImportRefused(source, f"its signature's {side} are not JSON: {err}") from None
    if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
        raise ImportRefused(source, f"its signature's {side} are not a list of columns")
    return specs or None


def _column(spec: dict[str, Any], name: str, side: str, source: str) -> str:
    """The Arrow type of a ColSpec: a scalar type, or a list of one."""
    kind = spec.get("type")
    if kind == "array" and isinstance(spec.get("items"), dict):
        item = _COLUMN_TYPES.get(str(spec["items"].get("type")))
        if item is not None:
            return f"list<item: {item}>"
        kind = f"array of {spec['items'].get('type')}"
    if isinstance(kind, str) and kind in _COLUMN_TYPES:
        return _COLUMN_TYPES[kind]
    raise ImportRefused(
        source,
        f"its {side} column {name!r} is of MLflow type {kind!r}, which mmserve has no column "
        f"type for (it takes {_TAKEN})",
    )


def _tensor(spec: dict[str, Any], name: str, side: str, source: str) -> tuple[str, list[int]]:
    """A TensorSpec's values' Arrow type and its shape per row (empty: one value a row)."""
    tensor = spec.get("tensor-spec")
    tensor = tensor if isinstance(tensor, dict) else {}
    dtype, shape = tensor.get("dtype"), tensor.get("shape")
    item = _TENSOR_TYPES.get(str(dtype))
    if item is None and dtype in ("str", "object") and shape == [-1]:
        item = "string"
    dims = shape[1:] if isinstance(shape, list) and shape else None
    if (
        item is None
        or dims is None
        or any(type(d) is not int or d < 1 for d in dims)
        or (dims and (item == "string" or math.prod(dims) >= 2**31))
    ):
        raise ImportRefused(
            source,
            f"its {side} tensor {name!r} is of dtype {dtype!r} and shape {shape}, which mmserve "
            f"has no column type for (it takes {_TAKEN})",
        )
    return item, dims


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
