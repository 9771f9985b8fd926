"""The gRPC service's messages are the upstream proto's, field for field, and mmserve's
errors map to gRPC status codes from the one error tree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pyarrow as pa
import pytest
from tritonclient.grpc import service_pb2

from serving.codecs import v2
from serving.errors import (
    ConcurrentUpdate,
    InvalidName,
    ManagementDisabled,
    MMServeError,
    ModelError,
    ModelLoading,
    ModelNotFound,
    ModelTooLarge,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    StoreUnavailable,
    Unauthorized,
    UnsupportedFormat,
)
from serving.grpc import _proto, _status, _tensors


def _fields(descriptor: Any) -> dict[str, tuple[Any, ...]]:
    return {
        f.name: (
            f.number,
            f.type,
            f.is_repeated,
            f.message_type.full_name if f.message_type else None,
            f.containing_oneof.name if f.containing_oneof else None,
        )
        for f in descriptor.fields
    }


def _differences(ours: Any, theirs: Any, path: str) -> list[str]:
    found = [
        f"{path}.{name}: {_fields(ours).get(name)} != {_fields(theirs).get(name)}"
        for name in sorted(_fields(ours).keys() | _fields(theirs).keys())
        if _fields(ours).get(name) != _fields(theirs).get(name)
    ]
    for nested in ours.nested_types:
        found += _differences(nested, theirs.nested_types_by_name[nested.name], nested.full_name)
    return found


# KServe's load/unload responses: what a KServe client reads, and tritonclient keeps unknown.
KSERVE_ONLY = [
    "inference.RepositoryModelLoadResponse.isLoaded: (2, 8, False, None, None) != None",
    "inference.RepositoryModelLoadResponse.model_name: (1, 9, False, None, None) != None",
    "inference.RepositoryModelUnloadResponse.isUnloaded: (2, 8, False, None, None) != None",
    "inference.RepositoryModelUnloadResponse.model_name: (1, 9, False, None, None) != None",
]


def test_the_messages_are_tritons_field_for_field() -> None:
    differences = []
    for message in _proto.MESSAGES:
        ours = _proto.message(message.name).DESCRIPTOR
        theirs = service_pb2.DESCRIPTOR.message_types_by_name[message.name]
        differences += _differences(ours, theirs, ours.full_name)
    assert differences == KSERVE_ONLY


def test_the_methods_are_tritons_with_the_same_messages() -> None:
    theirs = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method, (request, response) in _proto.METHODS.items():
        rpc = theirs.methods_by_name[method]
        assert (rpc.input_type.name, rpc.output_type.name) == (request, response)


def test_the_pool_is_private() -> None:
    # tritonclient's own "inference" package, in the default pool, is untouched.
    assert _proto.message("ModelInferRequest") is not service_pb2.ModelInferRequest


def test_a_kserve_load_request_names_its_model_at_field_1() -> None:
    kserve_like = service_pb2.RepositoryModelLoadRequest(repository_name="churn")
    request = _proto.message("RepositoryModelLoadRequest").FromString(
        kserve_like.SerializeToString()
    )
    assert _proto.model_name(request) == "churn"
    triton = service_pb2.RepositoryModelLoadRequest(repository_name="models", model_name="lr")
    request = _proto.message("RepositoryModelLoadRequest").FromString(triton.SerializeToString())
    assert _proto.model_name(request) == "lr"


@pytest.mark.parametrize(
    ("err", "code"),
    [
        (v2.TensorError("x", "bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (InvalidName("model name", "A", "lowercase"), grpc.StatusCode.INVALID_ARGUMENT),
        (UnsupportedFormat("xml", ["csv"]), grpc.StatusCode.INVALID_ARGUMENT),
        (ModelNotFound("nope"), grpc.StatusCode.NOT_FOUND),
        (Unauthorized("admin token", "it"), grpc.StatusCode.UNAUTHENTICATED),
        (ManagementDisabled("MMSERVE_ADMIN_TOKEN"), grpc.StatusCode.PERMISSION_DENIED),
        (ConcurrentUpdate("key", 3), grpc.StatusCode.ABORTED),
        (PayloadTooLarge(10), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (Overloaded("model 'lr'", 4), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (ModelLoading("lr", 30), grpc.StatusCode.UNAVAILABLE),
        (StoreUnavailable("s3://b", OSError("down")), grpc.StatusCode.UNAVAILABLE),
        (RequestTimeout(60), grpc.StatusCode.DEADLINE_EXCEEDED),
        (ModelTooLarge("lr:1", 10, 5), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (ModelError("lr:1", ValueError("no")), grpc.StatusCode.INTERNAL),
        (MMServeError("anything else"), grpc.StatusCode.INTERNAL),
    ],
)
def test_errors_map_to_status_codes_by_their_http_status(
    err: MMServeError, code: grpc.StatusCode
) -> None:
    assert _status.code_of(err) == code


def _request(**fields: Any) -> Any:
    triton = service_pb2.ModelInferRequest(**fields)
    return _proto.message("ModelInferRequest").FromString(triton.SerializeToString())


def _input(name: str, datatype: str, shape: list[int], **contents: Any) -> Any:
    tensor = service_pb2.ModelInferRequest.InferInputTensor(
        name=name, datatype=datatype, shape=shape
    )
    for field, values in contents.items():
        getattr(tensor.contents, field).extend(values)
    return tensor


def test_typed_contents_decode_as_their_datatype() -> None:
    request = _request(
        inputs=[
            _input("a", "INT8", [2], int_contents=[-128, 127]),
            _input("b", "UINT16", [2], uint_contents=[0, 65535]),
            _input("c", "BOOL", [2], bool_contents=[True, False]),
            _input("d", "BYTES", [2], bytes_contents=[b"caf\xc3\xa9", b"x"]),
            _input("e", "BYTES", [2], bytes_contents=[b"\xff", b"x"]),  # not all UTF-8: bytes
        ]
    )
    columns = _tensors.decode(request).columns
    assert columns["a"].dtype == np.int8 and columns["a"].tolist() == [-128, 127]
    assert columns["b"].dtype == np.uint16 and columns["b"].tolist() == [0, 65535]
    assert columns["c"].tolist() == [True, False]
    assert columns["d"].tolist() == ["café", "x"]
    assert columns["e"].tolist() == [b"\xff", b"x"]


@pytest.mark.parametrize(
    ("inputs", "raw", "message"),
    [
        (
            [_input("a", "INT8", [2], int_contents=[1, 300])],
            [],
            "input tensor 'a': element 1: 300 is out of range for INT8",
        ),
        (
            [_input("a", "FP32", [2], fp64_contents=[1.0, 2.0])],
            [],
            "input tensor 'a': contents has fp64_contents; FP32 values go in fp32_contents",
        ),
        (
            [_input("a", "FP16", [1])],
            [],
            "input tensor 'a': FP16 is sent in raw_input_contents",
        ),
        (
            [_input("a", "FP32", [2, 2], fp32_contents=[1.0, 2.0, 3.0])],
            [],
            "input tensor 'a': has 3 values; shape [2, 2] needs 4",
        ),
        (
            [_input("a", "FP64", [1, 2]), _input("b", "FP64", [1])],
            [b"\0" * 16],
            "cannot read the application/grpc body: raw_input_contents has 1 entries for 2 "
            "input tensors (one per input, in their order)",
        ),
        (
            [_input("a", "INT32", [3])],
            [b"\0" * 8],
            "input tensor 'a': raw contents of 8 bytes; shape [3] of INT32 is 12 bytes",
        ),
        (
            [_input("a", "INT32", [1], int_contents=[1])],
            [b"\0" * 4],
            "input tensor 'a': has contents while the request has raw_input_contents: send one",
        ),
        (
            [_input("a", "BYTES", [1])],
            [b"\5\0\0\0ab"],
            "input tensor 'a': BYTES element 0 runs past its data",
        ),
        (
            [_input("a", "FP99", [1])],
            [b"\0"],
            "input tensor 'a': unknown datatype 'FP99'",
        ),
        (
            [],
            [],
            "cannot read the application/grpc body: inputs: at least one input tensor is required",
        ),
    ],
)
def test_a_bad_tensor_is_refused_naming_it(
    inputs: list[Any], raw: list[bytes], message: str
) -> None:
    with pytest.raises(MMServeError) as refused:
        _tensors.decode(_request(inputs=inputs, raw_input_contents=raw))
    assert (refused.value.message, _status.code_of(refused.value)) == (
        message,
        grpc.StatusCode.INVALID_ARGUMENT,
    )


def test_outputs_are_typed_unless_raw_was_sent_asked_for_or_needed() -> None:
    table = pa.table(
        {
            "label": pa.array(["a", "b"]),
            "score": pa.array([0.5, 1.5]),
            "half": pa.array(np.array([1, 2], dtype=np.float16)),
        }
    )
    request = v2.InferenceRequest(inputs=[], outputs=[{"name": "label"}, {"name": "score"}])
    typed = _proto.message("ModelInferResponse")()
    _tensors.encode(typed, v2.outputs(table, request), raw=False)
    assert [list(o.contents.bytes_contents) for o in typed.outputs] == [[b"a", b"b"], []]
    assert list(typed.outputs[1].contents.fp64_contents) == [0.5, 1.5]
    assert list(typed.raw_output_contents) == []
    half = _proto.message("ModelInferResponse")()  # FP16 has no typed field: all raw
    _tensors.encode(half, v2.outputs(table, v2.InferenceRequest(inputs=[])), raw=False)
    assert list(half.raw_output_contents) == [
        b"\1\0\0\0a\1\0\0\0b",
        np.array([0.5, 1.5]).tobytes(),
        np.array([1, 2], dtype=np.float16).tobytes(),
    ]


def _without_grpc(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python has no grpc: every ``import grpc`` fails, as uninstalled."""
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['grpc'] = None\n")
    return {**os.environ, "PYTHONPATH": str(tmp_path), "MMSERVE_STORE_URL": str(tmp_path)}


def test_grpc_port_without_the_extra_says_what_to_install(tmp_path: Path) -> None:
    mmserve = str(Path(sys.executable).with_name("mmserve"))
    argv = [mmserve, "serve", "--port", "1", "--grpc-port", "1"]
    done = subprocess.run(argv, env=_without_grpc(tmp_path), capture_output=True, text=True)
    assert (done.returncode, done.stderr.strip()) == (
        2,
        "error: --grpc-port: gRPC needs the grpc extra, which is not installed: "
        "pip install 'mmserve[grpc]'",
    )


def test_the_grpc_setting_without_the_extra_stops_the_app_factory(tmp_path: Path) -> None:
    code = "from serving.http import create_app; create_app()"
    env = {**_without_grpc(tmp_path), "MMSERVE_GRPC_PORT": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "serving.errors.MissingPackage: MMSERVE_GRPC_PORT needs the extra 'grpc', which is not "
        "installed: pip install 'mmserve[grpc]'"
    )
