"""The messages and service of the Open Inference Protocol over gRPC, built at import time.

Field names and numbers are those of KServe's ``grpc_predict_v2.proto`` and Triton's
``grpc_service.proto`` (package ``inference``), so tritonclient and KServe's clients speak to
it unchanged. No generated ``*_pb2.py``: gencode pins the protobuf version it was made
with, and warns under any other. The descriptors go into a pool of their own, not the
default one, where tritonclient registers package ``inference`` itself.

The repository messages are Triton's (``repository_name`` = 1, ``model_name`` = 2). KServe's
load/unload requests put the model name at field 1: a request with field 1 alone is read as
KServe's (:func:`model_name`). The load/unload responses carry KServe's fields, which
tritonclient's empty messages keep as unknown fields.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "inference"
SERVICE = f"{PACKAGE}.GRPCInferenceService"

_F = descriptor_pb2.FieldDescriptorProto
_TYPES = {
    "bool": _F.TYPE_BOOL,
    "string": _F.TYPE_STRING,
    "bytes": _F.TYPE_BYTES,
    "int32": _F.TYPE_INT32,
    "int64": _F.TYPE_INT64,
    "uint32": _F.TYPE_UINT32,
    "uint64": _F.TYPE_UINT64,
    "float": _F.TYPE_FLOAT,
    "double": _F.TYPE_DOUBLE,
}

Field = tuple[str, str, int]
"""A field as the .proto file spells it: ``("repeated int64", "shape", 3)``; a message type
is named in full (``.inference.InferParameter``); ``map<string, .inference.X>`` is a map."""


def _message(
    name: str,
    fields: list[Field],
    nested: list[descriptor_pb2.DescriptorProto] | None = None,
    oneof: str | None = None,
) -> descriptor_pb2.DescriptorProto:
    """A message; ``oneof``: every field is a member of that one ``oneof``."""
    message = descriptor_pb2.DescriptorProto(name=name, nested_type=nested or [])
    if oneof is not None:
        message.oneof_decl.add(name=oneof)
    for kind, field_name, number in fields:
        field = message.field.add(name=field_name, number=number, json_name=_camel(field_name))
        field.label = _F.LABEL_REPEATED if kind.startswith("repeated ") else _F.LABEL_OPTIONAL
        kind = kind.removeprefix("repeated ")
        if kind.startswith("map<string, "):
            entry = f"{_camel(field_name)[0].upper()}{_camel(field_name)[1:]}Entry"
            value = kind.removeprefix("map<string, ").removesuffix(">")
            map_entry = _message(entry, [("string", "key", 1), (value, "value", 2)])
            map_entry.options.map_entry = True
            message.nested_type.append(map_entry)
            field.label, field.type = _F.LABEL_REPEATED, _F.TYPE_MESSAGE
            field.type_name = entry  # resolved relative to the message
        elif kind.startswith("."):
            field.type, field.type_name = _F.TYPE_MESSAGE, kind
        else:
            field.type = _TYPES[kind]
        if oneof is not None:
            field.oneof_index = 0
    return message


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


_P = f".{PACKAGE}"
_PARAMETERS = f"map<string, {_P}.InferParameter>"
_TENSOR_META = _message(
    "TensorMetadata",
    [("string", "name", 1), ("string", "datatype", 2), ("repeated int64", "shape", 3)],
)
_INPUT = _message(
    "InferInputTensor",
    [
        ("string", "name", 1),
        ("string", "datatype", 2),
        ("repeated int64", "shape", 3),
        (_PARAMETERS, "parameters", 4),
        (f"{_P}.InferTensorContents", "contents", 5),
    ],
)
_REQUESTED = _message(
    "InferRequestedOutputTensor", [("string", "name", 1), (_PARAMETERS, "parameters", 2)]
)
_OUTPUT = _message(
    "InferOutputTensor",
    [
        ("string", "name", 1),
        ("string", "datatype", 2),
        ("repeated int64", "shape", 3),
        (_PARAMETERS, "parameters", 4),
        (f"{_P}.InferTensorContents", "contents", 5),
    ],
)
_MODEL_INDEX = _message(
    "ModelIndex",
    [
        ("string", "name", 1),
        ("string", "version", 2),
        ("string", "state", 3),
        ("string", "reason", 4),
    ],
)
_REPOSITORY_CHANGE = [
    ("string", "repository_name", 1),
    ("string", "model_name", 2),
    (f"map<string, {_P}.ModelRepositoryParameter>", "parameters", 3),
]

MESSAGES = [
    _message("ServerLiveRequest", []),
    _message("ServerLiveResponse", [("bool", "live", 1)]),
    _message("ServerReadyRequest", []),
    _message("ServerReadyResponse", [("bool", "ready", 1)]),
    _message("ModelReadyRequest", [("string", "name", 1), ("string", "version", 2)]),
    _message("ModelReadyResponse", [("bool", "ready", 1)]),
    _message("ServerMetadataRequest", []),
    _message(
        "ServerMetadataResponse",
        [("string", "name", 1), ("string", "version", 2), ("repeated string", "extensions", 3)],
    ),
    _message("ModelMetadataRequest", [("string", "name", 1), ("string", "version", 2)]),
    _message(
        "ModelMetadataResponse",
        [
            ("string", "name", 1),
            ("repeated string", "versions", 2),
            ("string", "platform", 3),
            (f"repeated {_P}.ModelMetadataResponse.TensorMetadata", "inputs", 4),
            (f"repeated {_P}.ModelMetadataResponse.TensorMetadata", "outputs", 5),
        ],
        [_TENSOR_META],
    ),
    _message(
        "InferParameter",
        [
            ("bool", "bool_param", 1),
            ("int64", "int64_param", 2),
            ("string", "string_param", 3),
            ("double", "double_param", 4),
            ("uint64", "uint64_param", 5),
        ],
        oneof="parameter_choice",
    ),
    _message(
        "InferTensorContents",
        [
            ("repeated bool", "bool_contents", 1),
            ("repeated int32", "int_contents", 2),
            ("repeated int64", "int64_contents", 3),
            ("repeated uint32", "uint_contents", 4),
            ("repeated uint64", "uint64_contents", 5),
            ("repeated float", "fp32_contents", 6),
            ("repeated double", "fp64_contents", 7),
            ("repeated bytes", "bytes_contents", 8),
        ],
    ),
    _message(
        "ModelInferRequest",
        [
            ("string", "model_name", 1),
            ("string", "model_version", 2),
            ("string", "id", 3),
            (_PARAMETERS, "parameters", 4),
            (f"repeated {_P}.ModelInferRequest.InferInputTensor", "inputs", 5),
            (f"repeated {_P}.ModelInferRequest.InferRequestedOutputTensor", "outputs", 6),
            ("repeated bytes", "raw_input_contents", 7),
        ],
        [_INPUT, _REQUESTED],
    ),
    _message(
        "ModelInferResponse",
        [
            ("string", "model_name", 1),
            ("string", "model_version", 2),
            ("string", "id", 3),
            (_PARAMETERS, "parameters", 4),
            (f"repeated {_P}.ModelInferResponse.InferOutputTensor", "outputs", 5),
            ("repeated bytes", "raw_output_contents", 6),
        ],
        [_OUTPUT],
    ),
    _message(
        "ModelRepositoryParameter",
        [
            ("bool", "bool_param", 1),
            ("int64", "int64_param", 2),
            ("string", "string_param", 3),
            ("bytes", "bytes_param", 4),
        ],
        oneof="parameter_choice",
    ),
    _message("RepositoryIndexRequest", [("string", "repository_name", 1), ("bool", "ready", 2)]),
    _message(
        "RepositoryIndexResponse",
        [(f"repeated {_P}.RepositoryIndexResponse.ModelIndex", "models", 1)],
        [_MODEL_INDEX],
    ),
    _message("RepositoryModelLoadRequest", _REPOSITORY_CHANGE),
    _message("RepositoryModelLoadResponse", [("string", "model_name", 1), ("bool", "isLoaded", 2)]),
    _message("RepositoryModelUnloadRequest", _REPOSITORY_CHANGE),
    _message(
        "RepositoryModelUnloadResponse", [("string", "model_name", 1), ("bool", "isUnloaded", 2)]
    ),
]

METHODS = {
    "ServerLive": ("ServerLiveRequest", "ServerLiveResponse"),
    "ServerReady": ("ServerReadyRequest", "ServerReadyResponse"),
    "ModelReady": ("ModelReadyRequest", "ModelReadyResponse"),
    "ServerMetadata": ("ServerMetadataRequest", "ServerMetadataResponse"),
    "ModelMetadata": ("ModelMetadataRequest", "ModelMetadataResponse"),
    "ModelInfer": ("ModelInferRequest", "ModelInferResponse"),
    "RepositoryIndex": ("RepositoryIndexRequest", "RepositoryIndexResponse"),
    "RepositoryModelLoad": ("RepositoryModelLoadRequest", "RepositoryModelLoadResponse"),
    "RepositoryModelUnload": ("RepositoryModelUnloadRequest", "RepositoryModelUnloadResponse"),
}
"""Each RPC of the service this server answers: its request and response messages."""


def _file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(
        name="mmserve/grpc_predict_v2.proto", package=PACKAGE, syntax="proto3"
    )
    proto.message_type.extend(MESSAGES)
    service = proto.service.add(name=SERVICE.rpartition(".")[2])
    for method, (request, response) in METHODS.items():
        service.method.add(
            name=method, input_type=f"{_P}.{request}", output_type=f"{_P}.{response}"
        )
    return proto


_pool = descriptor_pool.DescriptorPool()
_pool.Add(_file())


def message(name: str) -> Any:
    """The class of message ``name`` (``ModelInferRequest``) of this pool."""
    return message_factory.GetMessageClass(_pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))


def model_name(request: Any) -> str:
    """The model a repository load/unload request names: Triton's ``model_name``, else the
    name KServe's request sends at field 1 (Triton's ``repository_name``)."""
    return str(request.model_name or request.repository_name)
