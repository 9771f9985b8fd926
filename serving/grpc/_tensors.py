"""A ``ModelInferRequest``'s tensors as the V2 codec's, and an answer's outputs as a
``ModelInferResponse``'s: the gRPC spelling of what :mod:`serving.codecs.v2` reads and writes.

A request carries each input's values either in ``raw_input_contents`` (one entry per
input, in order: the binary extension's bytes, sized by shape and datatype alone) or in its
typed ``contents`` (``fp32_contents`` for FP32...), never both. The answer is raw
(``raw_output_contents``) when the request was, when it asked for binary outputs, or when
an output has no typed field (FP16); otherwise each output's typed ``contents``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from serving.codecs import DecodeError, v2
from serving.codecs.v2 import TensorError

MEDIA_TYPE = "application/grpc"

_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""The typed field of each datatype's values (FP16 has none: it is sent raw)."""


def decode(message: Any) -> v2.Decoded:
    """The request's tensors, each checked against its shape and datatype."""
    inputs, raw = message.inputs, message.raw_input_contents
    if not inputs:
        raise DecodeError(MEDIA_TYPE, "inputs: at least one input tensor is required")
    if raw and len(raw) != len(inputs):
        raise DecodeError(
            MEDIA_TYPE,
            f"raw_input_contents has {len(raw)} entries for {len(inputs)} input tensors "
            "(one per input, in their order)",
        )
    tensors, columns = [], {}
    for index, given in enumerate(inputs):
        tensor = v2.TensorIn.model_construct(
            name=given.name,
            shape=list(given.shape),
            datatype=given.datatype,
            parameters=_parameters(given.parameters),
            data=None,
        )
        if raw:
            if given.contents.ListFields():
                raise TensorError(
                    tensor.name, "has contents while the request has raw_input_contents: send one"
                )
            columns[tensor.name] = v2.from_raw(tensor, raw[index])
        else:
            columns[tensor.name] = _from_contents(tensor, given.contents)
        tensors.append(tensor)
    outputs = [
        v2.OutputRequest.model_construct(name=o.name, parameters=_parameters(o.parameters))
        for o in message.outputs
    ]
    request = v2.InferenceRequest.model_construct(
        id=message.id or None,
        parameters=_parameters(message.parameters),
        inputs=tensors,
        outputs=outputs or None,
    )
    return v2.Decoded(request, columns)


def _from_contents(tensor: v2.TensorIn, contents: Any) -> np.ndarray:
    field = _CONTENTS.get(tensor.datatype)
    if field is None:
        if tensor.datatype in v2.DATATYPES:  # FP16
            raise TensorError(tensor.name, f"{tensor.datatype} is sent in raw_input_contents")
        raise TensorError(tensor.name, f"unknown datatype {tensor.datatype!r}")
    others = [f.name for f, _ in contents.ListFields() if f.name != field]
    if others:
        raise TensorError(
            tensor.name, f"contents has {others[0]}; {tensor.datatype} values go in {field}"
        )
    return v2.from_values(tensor, getattr(contents, field))


def _parameters(parameters: Any) -> dict[str, Any]:
    """An ``InferParameter`` map as the values it holds."""
    found = {}
    for key, parameter in parameters.items():
        kind = parameter.WhichOneof("parameter_choice")
        if kind is not None:
            found[key] = getattr(parameter, kind)
    return found


def encode(response: Any, outputs: list[v2.Output], raw: bool) -> None:
    """Add ``outputs`` to ``response``: raw if ``raw``, asked for or needed, else typed."""
    raw = raw or any(o.binary or o.datatype not in _CONTENTS for o in outputs)
    for output in outputs:
        tensor = response.outputs.add(
            name=output.name, datatype=output.datatype, shape=output.shape
        )
        if raw:
            response.raw_output_contents.append(v2.tensor_bytes(output.column))
        else:
            getattr(tensor.contents, _CONTENTS[output.datatype]).extend(_values(output))


def _values(output: v2.Output) -> list[Any]:
    column = v2.flat(output.column)
    if output.datatype == "BYTES":  # V2 has no null: an empty element, as in raw
        return [v.encode() if isinstance(v, str) else v or b"" for v in column.to_pylist()]
    dtype = np.dtype(column.type.to_pandas_dtype())
    values: list[Any] = np.asarray(column.to_numpy(), dtype=dtype).tolist()
    return values
