"""The Open Inference Protocol (V2, as KServe, Triton and MLServer speak it), including the
binary tensor data extension that standard V2 clients use by default.

A request's tensors become a table in one of two shapes: one ``[N, K]`` tensor holding the
K features in registered order (Triton/MLServer style), or one ``[N]``/``[N, 1]`` tensor per
feature, named after it. Each output column goes back as one tensor of its type
(:func:`tensor_type`): ``[N]`` for a scalar output (a string label is BYTES, an int label
INT64), ``[N, K]`` for a fixed-size list of K values such as an embedding (its values
row-major, in JSON and binary alike), and a list of any length, which no tensor holds, as
``[N]`` BYTES, each row's list as JSON text (``[0.5,1.0]``). A tensor feature or output
(declared with a shape, issue 19) is ``[N, *shape]``: row i the i-th block, C order.

BYTES carry files too (a binary column, issue 19). In the binary extension an element is its
raw bytes; in JSON a string, read as base64 when the tensor's ``parameters`` say
``"content_type": "base64"`` (MLServer's convention), else as its UTF-8 bytes. A tensor of
bytes that are not all UTF-8, or of base64, is a binary column (the predictor casts text to
a binary feature's type, and refuses bytes as a string feature's); a binary output column is
BYTES of its raw bytes, or in JSON of base64 strings with ``"content_type": "base64"``.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ValidationError

from serving.codecs import (
    DecodeError,
    Matrix,
    Rows,
    _is_bytes,
    base64_texts,
    json_safe,
    json_texts,
)
from serving.errors import InputError, OutOfTypeRange

if TYPE_CHECKING:
    from serving.metadata import Feature

_NUMPY = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}  # fmt: skip
DATATYPES = [*_NUMPY, "BYTES"]
"""Every tensor datatype the codec reads, in the Open Inference Protocol's order."""
_ARROW_TO_V2 = {
    pa.bool_(): "BOOL", pa.int8(): "INT8", pa.int16(): "INT16", pa.int32(): "INT32",
    pa.int64(): "INT64", pa.uint8(): "UINT8", pa.uint16(): "UINT16", pa.uint32(): "UINT32",
    pa.uint64(): "UINT64", pa.float16(): "FP16", pa.float32(): "FP32", pa.float64(): "FP64",
    pa.string(): "BYTES", pa.large_string(): "BYTES",
}  # fmt: skip
MEDIA_TYPE = "application/json"
BINARY_MEDIA_TYPE = "application/octet-stream"
HEADER_LENGTH = "inference-header-content-length"
BASE64 = {"content_type": "base64"}
"""The parameters of a JSON BYTES tensor whose strings are base64 (MLServer's convention)."""


class TensorIn(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] = {}
    data: Any = None


class OutputRequest(BaseModel):
    name: str
    parameters: dict[str, Any] = {}


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] = {}
    inputs: list[TensorIn]
    outputs: list[OutputRequest] | None = None


class TensorError(InputError):
    def __init__(self, tensor: str, problem: str) -> None:
        super().__init__(f"input tensor {tensor!r}: {problem}")
        self.tensor = tensor


@dataclass
class Decoded:
    request: InferenceRequest
    columns: dict[str, np.ndarray]
    overflow: Overflow | None = None
    """The first JSON number its tensor's type cannot hold (read as infinite)."""


@dataclass(frozen=True)
class Overflow:
    tensor: TensorIn
    index: int  # in the tensor's values, flattened
    literal: str  # as the body spells it
    type_name: str


def decode(body: bytes, header_length: str | None) -> Decoded:
    """Parse a V2 request: the JSON header, then (binary extension) the tensors' bytes."""
    split = _header_length(header_length, len(body))
    try:
        request = InferenceRequest.model_validate_json(body[:split])
    except ValidationError as err:
        problem = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in err.errors()
        )
        raise DecodeError(MEDIA_TYPE, problem) from None
    if not request.inputs:
        raise DecodeError(MEDIA_TYPE, "inputs: at least one input tensor is required")
    binary, offset, arrays = body[split:], 0, {}
    for tensor in request.inputs:
        size = _binary_size(tensor)
        if size is not None:
            chunk = binary[offset : offset + size]
            if len(chunk) != size:
                raise TensorError(tensor.name, f"binary_data_size {size} runs past the body")
            offset += size
            arrays[tensor.name] = _from_bytes(tensor, chunk)
        else:
            arrays[tensor.name] = _from_json(tensor)
    return Decoded(request, arrays, _overflow(body[:split], request, arrays))


def to_rows(
    decoded: Decoded, features: list[str], tensors: Mapping[str, Declared] | None = None
) -> Rows:
    """The request's rows for a model taking ``features``. A tensor named after one of
    ``tensors`` (the model's tensor features: :func:`declared`) must be ``[N, *shape]`` of its
    datatype, and is that feature's fixed-size list column (a row's block, C order)."""
    inputs, declared_tensors = decoded.request.inputs, tensors or {}
    if decoded.overflow is not None:
        _refuse_overflow(decoded.overflow, len(inputs), features, declared_tensors)
    if _one_matrix(inputs, declared_tensors):
        matrix = decoded.columns[inputs[0].name]
        if matrix.shape[1] != len(features):
            raise TensorError(
                inputs[0].name,
                f"has {matrix.shape[1]} columns; the model takes {len(features)} "
                f"({', '.join(features)})",
            )
        if matrix.dtype.kind == "f":
            return Matrix(matrix, features)
        return pa.table([matrix[:, i] for i in range(len(features))], names=features)
    for tensor in inputs:
        if tensor.name in declared_tensors:
            _check_declared(tensor, declared_tensors[tensor.name])
        elif len(tensor.shape) > 2 or tensor.shape[1:] not in ([], [1]):
            raise TensorError(
                tensor.name,
                f"shape {tensor.shape}: a tensor per feature is [N] or [N, 1] "
                "(or send one [N, K] tensor of all the features)",
            )
    rows = {decoded.columns[t.name].shape[0] for t in inputs}
    if len(rows) > 1:
        raise DecodeError(MEDIA_TYPE, "input tensors have different numbers of rows")
    return pa.table(
        {
            t.name: _tensor_column(t, decoded.columns[t.name])
            if t.name in declared_tensors
            else _arrow(t, decoded.columns[t.name].reshape(-1))
            for t in inputs
        }
    )


def reader(decoded: Decoded) -> Callable[[list[Feature]], Rows]:
    """The request's rows for a model of ``features`` (its tensor features by their shapes):
    what a V2 request, over HTTP or gRPC, hands the data plane."""

    def read(features: list[Feature]) -> Rows:
        return to_rows(decoded, [f.name for f in features], declared(features))

    return read


@dataclass(frozen=True)
class Declared:
    """A tensor feature as V2 takes it: its datatype and its shape per row."""

    datatype: str
    shape: list[int]


def declared(features: Iterable[Feature]) -> dict[str, Declared]:
    """The tensor features (``Feature.shape``) among ``features``, by name."""
    return {
        f.name: Declared(tensor_type(f.type)[0], f.shape) for f in features if f.shape is not None
    }


def _one_matrix(inputs: list[TensorIn], tensors: Mapping[str, Declared]) -> bool:
    """Whether the request is one ``[N, K]`` tensor of all the features (not a tensor's)."""
    only = inputs[0]
    single = len(inputs) == 1 and len(only.shape) == 2
    return single and only.shape[1] != 1 and only.name not in tensors


def _check_declared(tensor: TensorIn, expected: Declared) -> None:
    if tensor.shape[1:] != expected.shape:
        raise TensorError(
            tensor.name,
            f"shape {tensor.shape} does not match the model's {[-1, *expected.shape]}",
        )
    if tensor.datatype != expected.datatype:
        problem = f"datatype {tensor.datatype} does not match the model's {expected.datatype}"
        raise TensorError(tensor.name, problem)


def _tensor_column(tensor: TensorIn, values: np.ndarray) -> pa.Array:
    """An ``[N, *shape]`` tensor as a fixed-size list column: row i, the i-th block of
    ``prod(shape)`` values, C order."""
    size = math.prod(tensor.shape[1:])
    if tensor.datatype == "BYTES" or size == 0:
        raise TensorError(tensor.name, f"shape {tensor.shape}: a tensor feature is of numbers")
    flat = np.ascontiguousarray(values).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(_arrow(tensor, flat), size)


@dataclass(frozen=True)
class Output:
    """One output tensor of an answer, whatever carries it (JSON, binary, gRPC)."""

    name: str
    datatype: str
    shape: list[int]
    column: pa.ChunkedArray
    """Its values as the tensor holds them: a list of any length as its JSON text."""
    binary: bool
    """The request asked for its raw bytes (``binary_data``)."""
    ragged: bool
    """A list of any length in the answer (its values are JSON texts)."""


def outputs(
    table: pa.Table, request: InferenceRequest, shapes: Mapping[str, list[int]] | None = None
) -> list[Output]:
    """The tensors the request asked for (every column, if it named none), in its order. An
    output of a shape in ``shapes`` (``ModelVersion.output_shapes``) is ``[N, *shape]``."""
    wanted = [o.name for o in request.outputs] if request.outputs else table.column_names
    unknown = [n for n in wanted if n not in table.column_names]
    if unknown:
        raise InputError(f"unknown outputs {unknown}; the model gives {table.column_names}")
    binary_default = bool(request.parameters.get("binary_data_output", False))
    asked = {o.name: o.parameters.get("binary_data", binary_default) for o in request.outputs or []}
    found = []
    for column_name in wanted:
        column = table.column(column_name)
        ragged = pa.types.is_list(column.type)
        if ragged:
            column = json_texts(column)  # no tensor holds it
        datatype, row_shape = tensor_type(column.type)
        if shapes and column_name in shapes and row_shape == [math.prod(shapes[column_name])]:
            row_shape = list(shapes[column_name])
        shape = [table.num_rows, *row_shape]
        binary = bool(asked.get(column_name, binary_default))
        found.append(Output(column_name, datatype, shape, column, binary, ragged))
    return found


def encode(
    table: pa.Table,
    request: InferenceRequest,
    name: str,
    version: int,
    shapes: Mapping[str, list[int]] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The response body and its extra headers; binary when the request asked for it. An
    output of a shape in ``shapes`` (``ModelVersion.output_shapes``) is ``[N, *shape]``."""
    answered = outputs(table, request, shapes)
    binary = [f.name for f in table.schema if _is_bytes(f.type)]
    tensors, blobs, listed = [], [], json_safe(table.drop_columns(binary))
    for output in answered:
        tensor: dict[str, Any] = {
            "name": output.name,
            "shape": output.shape,
            "datatype": output.datatype,
        }
        if output.binary:
            blob = tensor_bytes(output.column)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif output.ragged:
            tensor["data"] = output.column.to_pylist()
        elif output.name in binary:  # not json_safe's {"b64": ...} objects: V1's spelling
            tensor["data"] = base64_texts(output.column).to_pylist()
            tensor["parameters"] = dict(BASE64)
        else:
            tensor["data"] = _data(listed.column(output.name))
        tensors.append(tensor)
    document: dict[str, Any] = {
        "model_name": name,
        "model_version": str(version),
        "outputs": tensors,
    }
    if request.id is not None:
        document["id"] = request.id
    header = json.dumps(document, separators=(",", ":")).encode()
    if not blobs:
        return header, {"content-type": MEDIA_TYPE}
    return header + b"".join(blobs), {
        "content-type": BINARY_MEDIA_TYPE,
        HEADER_LENGTH: str(len(header)),
    }


def tensor_type(column: pa.DataType) -> tuple[str, list[int]]:
    """The V2 datatype of a column of type ``column`` and the shape of one row's tensor:
    ``[]`` for a scalar, ``[K]`` for a fixed-size list of K values (the column is then an
    ``[N, K]`` tensor). A list of any length is BYTES (its JSON text), as is any type V2
    has no datatype for."""
    if pa.types.is_fixed_size_list(column):
        return _ARROW_TO_V2.get(column.value_type, "BYTES"), [column.list_size]
    return _ARROW_TO_V2.get(column, "BYTES"), []


def _data(column: pa.ChunkedArray) -> list[Any]:
    """A column's JSON data: its values, an ``[N, K]`` tensor's flattened row-major (a null
    row as K nulls)."""
    if not pa.types.is_fixed_size_list(column.type):
        return column.to_pylist()
    empty = [None] * column.type.list_size
    return [value for row in column.to_pylist() for value in (empty if row is None else row)]


def tensor_bytes(column: pa.ChunkedArray) -> bytes:
    """An output column's tensor in the binary extension's bytes (gRPC's raw contents too):
    its values row-major, little-endian; a BYTES element as its 4-byte length, then itself."""
    return _to_bytes(flat(column))


def flat(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A fixed-size list column's values, row-major (the ``[N, K]`` tensor's ``N * K``
    elements); any other column as it is."""
    if not pa.types.is_fixed_size_list(column.type):
        return column
    lists = column.combine_chunks()
    size = column.type.list_size
    return pa.chunked_array([lists.values.slice(lists.offset * size, len(lists) * size)])


def _refuse_overflow(
    overflow: Overflow, tensors: int, features: list[str], declared: Mapping[str, Declared]
) -> None:
    """Raise :class:`OutOfTypeRange` naming the overflowing value's column and row: a
    feature's own tensor (a tensor feature's row, its block), or a column of the one
    ``[N, K]`` tensor of them all. (A tensor of another shape leaves its refusal to the
    shape checks.)"""
    tensor, index = overflow.tensor, overflow.index
    column, row = tensor.name, index
    if tensor.name in declared:
        if tensor.shape[1:] != declared[tensor.name].shape:
            return
        row = index // max(math.prod(tensor.shape[1:]), 1)
    elif tensors == 1 and len(tensor.shape) == 2 and tensor.shape[1] != 1:
        if tensor.shape[1] != len(features):
            return
        row, j = divmod(index, tensor.shape[1])
        column = features[j]
    elif len(tensor.shape) > 2 or tensor.shape[1:] not in ([], [1]):
        return
    raise OutOfTypeRange(column, row, overflow.literal, overflow.type_name)


class _Spelled(float):
    """A JSON number that remembers how the body spelled it."""

    text: str


def _spelled(text: str) -> float:
    number = _Spelled(text)
    number.text = text
    return number


def _overflow(
    header: bytes, request: InferenceRequest, arrays: dict[str, np.ndarray]
) -> Overflow | None:
    """The first number of a JSON float tensor its type cannot hold (``1e400`` as FP64,
    ``1e39`` as FP32), which reading made infinite; ``None`` if none (one vectorised check:
    only then is the header read again, for the number's spelling). ``Infinity`` itself is
    no overflow: the predictor refuses it as infinite."""
    suspects = [
        (i, t)
        for i, t in enumerate(request.inputs)
        if t.data is not None
        and arrays[t.name].dtype.kind == "f"
        and np.isinf(arrays[t.name]).any()
    ]
    if not suspects:
        return None
    try:
        document = json.loads(header, parse_float=_spelled)
    except (ValueError, RecursionError):
        return None
    for i, tensor in suspects:
        values = np.asarray(document["inputs"][i]["data"], dtype=object).reshape(-1)
        for index in np.flatnonzero(np.isinf(arrays[tensor.name].reshape(-1))):
            value = values[index]
            if isinstance(value, _Spelled):
                name = str(pa.from_numpy_dtype(arrays[tensor.name].dtype))
                return Overflow(tensor, int(index), value.text, name)
    return None


def _header_length(value: str | None, body_size: int) -> int:
    if value is None:
        return body_size
    # isdigit() alone takes "²", which int() refuses.
    if not (value.isascii() and value.isdigit()) or int(value) > body_size:
        raise DecodeError(
            MEDIA_TYPE, f"Inference-Header-Content-Length {value!r} does not fit the body"
        )
    return int(value)


def _binary_size(tensor: TensorIn) -> int | None:
    size = tensor.parameters.get("binary_data_size")
    if size is not None and (type(size) is not int or size < 0):
        raise TensorError(tensor.name, f"binary_data_size {size!r} is not a byte count")
    return size


_MAX_ELEMENTS = 2**31 - 1
"""Most elements of one tensor: far more than a request within any payload limit carries."""


def _elements(tensor: TensorIn) -> int:
    if any(d < 0 for d in tensor.shape) or not tensor.shape:
        raise TensorError(tensor.name, f"shape {tensor.shape} must be non-negative dimensions")
    # A zero dimension makes any shape empty, but numpy still refuses to describe one whose
    # other dimensions overflow its sizes: bound them all, zero or not.
    if math.prod(d for d in tensor.shape if d) > _MAX_ELEMENTS:
        raise TensorError(
            tensor.name,
            f"shape {tensor.shape} is too large: at most {_MAX_ELEMENTS} elements in its "
            "non-zero dimensions",
        )
    return math.prod(tensor.shape)  # exact: numpy's product wraps around past 2**63


def _dtype(tensor: TensorIn) -> Any:
    if tensor.datatype == "BYTES":
        return object
    try:
        return _NUMPY[tensor.datatype]
    except KeyError:
        raise TensorError(tensor.name, f"unknown datatype {tensor.datatype!r}") from None


def _from_json(tensor: TensorIn) -> np.ndarray:
    if tensor.data is None:
        raise TensorError(tensor.name, "has neither data nor binary_data_size")
    if tensor.datatype == "BYTES" and not _all_strings(tensor.data):
        raise TensorError(tensor.name, "data are not all BYTES (strings, in JSON)")
    try:
        with np.errstate(over="ignore"):  # a number past FP32's range: see _overflow
            flat = np.asarray(tensor.data, dtype=_dtype(tensor)).reshape(-1)
    except (ValueError, TypeError, OverflowError):
        raise TensorError(tensor.name, f"data are not all {tensor.datatype}") from None
    if tensor.datatype == "BYTES" and tensor.parameters.get("content_type") == "base64":
        flat = _from_base64(tensor, flat)
    return _shaped(tensor, flat)


def _from_bytes(tensor: TensorIn, chunk: bytes) -> np.ndarray:
    if tensor.datatype != "BYTES":
        dtype = np.dtype(_dtype(tensor)).newbyteorder("<")
        if len(chunk) % dtype.itemsize:
            raise TensorError(
                tensor.name, f"{len(chunk)} bytes is not a whole number of {tensor.datatype}"
            )
        return _shaped(tensor, np.frombuffer(chunk, dtype=dtype))
    items: list[bytes] = []
    offset = 0
    while offset < len(chunk):  # each element: 4-byte little-endian length, then the bytes
        if offset + 4 > len(chunk):
            raise TensorError(tensor.name, "truncated BYTES element")
        (length,) = struct.unpack_from("<I", chunk, offset)
        if offset + 4 + length > len(chunk):
            raise TensorError(tensor.name, f"BYTES element {len(items)} runs past its data")
        items.append(chunk[offset + 4 : offset + 4 + length])
        offset += 4 + length
    try:
        texts: list[str] | list[bytes] = [item.decode() for item in items]
    except UnicodeDecodeError:  # a file, not text: the elements stay bytes (a binary column)
        texts = items
    return _shaped(tensor, np.asarray(texts, dtype=object))


def from_raw(tensor: TensorIn, chunk: bytes) -> np.ndarray:
    """A tensor from its raw bytes alone (gRPC's ``raw_input_contents``, which carries no
    size of its own): exactly its shape's elements of its datatype, little-endian; BYTES
    elements each a 4-byte length, then the bytes."""
    if tensor.datatype != "BYTES":
        needed = _elements(tensor) * np.dtype(_dtype(tensor)).itemsize
        if len(chunk) != needed:
            raise TensorError(
                tensor.name,
                f"raw contents of {len(chunk)} bytes; shape {tensor.shape} of "
                f"{tensor.datatype} is {needed} bytes",
            )
    return _from_bytes(tensor, chunk)


def from_values(tensor: TensorIn, values: Sequence[Any]) -> np.ndarray:
    """A tensor from its values, flattened (gRPC's typed ``contents``): numbers of a type
    that holds the datatype's (an INT8 in an int32), each within the datatype's range; BYTES
    elements as bytes, text where every one is UTF-8 (as :func:`from_raw` reads them)."""
    if tensor.datatype == "BYTES":
        items = [bytes(item) for item in values]
        try:
            texts: list[str] | list[bytes] = [item.decode() for item in items]
        except UnicodeDecodeError:  # a file, not text: a binary column
            texts = items
        return _shaped(tensor, np.asarray(texts, dtype=object))
    dtype = np.dtype(_dtype(tensor))
    given = np.asarray(values)
    if dtype.kind in "iu" and given.size:
        limits = np.iinfo(dtype)
        outside = np.flatnonzero((given < limits.min) | (given > limits.max))
        if outside.size:
            index = int(outside[0])
            raise TensorError(
                tensor.name,
                f"element {index}: {given[index]} is out of range for {tensor.datatype}",
            )
    return _shaped(tensor, given.astype(dtype, copy=False))


def _from_base64(tensor: TensorIn, texts: np.ndarray) -> np.ndarray:
    """Each base64 string of a JSON BYTES tensor as its bytes; refused at the first that is
    not base64, naming its index among the tensor's elements (flattened)."""
    decoded = []
    for index, text in enumerate(texts):
        if not isinstance(text, str):  # ragged nesting: a list where a string was due
            raise TensorError(tensor.name, "data are not all BYTES (strings, in JSON)")
        try:
            decoded.append(base64.b64decode(text, validate=True))
        except ValueError:  # binascii.Error, or text that is not ASCII
            quoted = repr(text) if len(text) <= 40 else f"{text[:40]!r}..."
            raise TensorError(tensor.name, f"element {index}: {quoted} is not base64") from None
    return np.asarray(decoded, dtype=object)


def _all_strings(data: Any) -> bool:
    if isinstance(data, list):
        return all(_all_strings(item) for item in data)
    return isinstance(data, str)


def _arrow(tensor: TensorIn, values: np.ndarray) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError):
        raise TensorError(tensor.name, f"data are not all {tensor.datatype}") from None


def _shaped(tensor: TensorIn, flat: np.ndarray) -> np.ndarray:
    expected = _elements(tensor)
    if flat.size != expected:
        raise TensorError(
            tensor.name, f"has {flat.size} values; shape {tensor.shape} needs {expected}"
        )
    return flat.reshape(tensor.shape if len(tensor.shape) > 1 else (-1,))


def _to_bytes(column: pa.ChunkedArray) -> bytes:
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        raw = [(value or "").encode() for value in column.to_pylist()]  # V2 has no null
        return b"".join(struct.pack("<I", len(item)) + item for item in raw)
    if _is_bytes(column.type):
        files = [value or b"" for value in column.to_pylist()]
        return b"".join(struct.pack("<I", len(item)) + item for item in files)
    little_endian = np.dtype(column.type.to_pandas_dtype()).newbyteorder("<")
    return np.asarray(column.to_numpy(), dtype=little_endian).tobytes()
