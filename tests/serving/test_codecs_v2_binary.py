"""Files in the Open Inference Protocol (issue 19): a BYTES tensor of raw bytes (the binary
extension) or of base64 strings (JSON, ``"content_type": "base64"``) decodes to a binary
column of the bytes, and a binary output column is BYTES of them."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pyarrow as pa
import pytest

from serving.codecs import v2
from serving.errors import InputError

ALL_BYTES = bytes(range(256))


def binary_body(name: str, elements: list[bytes]) -> tuple[bytes, str]:
    """A binary-extension request of one ``[N]`` BYTES tensor, and its header length."""
    blob = b"".join(struct.pack("<I", len(e)) + e for e in elements)
    tensor = {
        "name": name,
        "shape": [len(elements)],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": len(blob)},
    }
    header = json.dumps({"inputs": [tensor]}).encode()
    return header + blob, str(len(header))


def json_body(*tensors: dict[str, Any]) -> bytes:
    return json.dumps({"inputs": list(tensors)}).encode()


def rows(body: bytes, header: str | None, features: list[str]) -> pa.Table:
    table = v2.to_rows(v2.decode(body, header), features)
    assert isinstance(table, pa.Table)
    return table


def test_binary_extension_bytes_that_are_not_utf8_are_a_binary_column() -> None:
    body, header = binary_body("scan", [ALL_BYTES, b"", b"\xff\xd8\xff"])
    table = rows(body, header, ["scan"])
    assert table.schema == pa.schema({"scan": pa.binary()})
    assert table.column("scan").to_pylist() == [ALL_BYTES, b"", b"\xff\xd8\xff"]


def test_binary_extension_utf8_elements_stay_strings() -> None:
    body, header = binary_body("plan", ["café".encode(), b"pro"])
    table = rows(body, header, ["plan"])
    assert table.schema == pa.schema({"plan": pa.string()})
    assert table.column("plan").to_pylist() == ["café", "pro"]


def test_binary_extension_element_past_its_data_is_refused() -> None:
    blob = struct.pack("<I", 2) + b"ok" + struct.pack("<I", 9) + b"abc"
    tensor = {"name": "scan", "shape": [2], "datatype": "BYTES"}
    header = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": len(blob)}}]})
    with pytest.raises(InputError) as caught:
        v2.decode(header.encode() + blob, str(len(header)))
    assert caught.value.message == "input tensor 'scan': BYTES element 1 runs past its data"


def test_json_base64_strings_are_a_binary_column_of_their_bytes() -> None:
    tensor = {
        "name": "scan",
        "shape": [2, 1],
        "datatype": "BYTES",
        "parameters": {"content_type": "base64"},
        "data": [[base64.b64encode(ALL_BYTES).decode()], ["aGk="]],
    }
    table = rows(json_body(tensor), None, ["scan"])
    assert table.schema == pa.schema({"scan": pa.binary()})
    assert table.column("scan").to_pylist() == [ALL_BYTES, b"hi"]


def test_json_base64_matrix_of_all_features_is_binary_columns() -> None:
    tensor = {
        "name": "input0",
        "shape": [1, 2],
        "datatype": "BYTES",
        "parameters": {"content_type": "base64"},
        "data": ["AP8=", ""],
    }
    table = rows(json_body(tensor), None, ["front", "back"])
    assert table.schema == pa.schema({"front": pa.binary(), "back": pa.binary()})
    assert table.to_pylist() == [{"front": b"\x00\xff", "back": b""}]


def test_json_strings_without_base64_are_their_text() -> None:
    for parameters in ({}, {"content_type": "str"}):
        tensor = {"name": "plan", "shape": [1], "datatype": "BYTES", "data": ["aGk="]}
        table = rows(json_body({**tensor, "parameters": parameters}), None, ["plan"])
        assert table.schema == pa.schema({"plan": pa.string()})
        assert table.column("plan").to_pylist() == ["aGk="]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (["aGk=", "abc$"], "element 1: 'abc$' is not base64"),
        (["aGk=", "aGk=", "aGk"], "element 2: 'aGk' is not base64"),
        (["é"], "element 0: 'é' is not base64"),
        (["A" * 41 + "!"], f"element 0: {'A' * 40!r}... is not base64"),
        ([["aGk="], ["aGk=", "aGk="]], "data are not all BYTES (strings, in JSON)"),
    ],
)
def test_json_text_that_is_not_base64_is_refused_naming_tensor_and_element(
    data: list[Any], problem: str
) -> None:
    tensor = {
        "name": "scan",
        "shape": [len(data)],
        "datatype": "BYTES",
        "parameters": {"content_type": "base64"},
        "data": data,
    }
    with pytest.raises(InputError) as caught:
        v2.decode(json_body(tensor), None)
    assert (caught.value.status, caught.value.message) == (422, f"input tensor 'scan': {problem}")


OUT = pa.table(
    {
        "image": pa.array([ALL_BYTES, None, b"\x89PNG"], pa.binary()),
        "size": pa.array([256, 0, 4], pa.int64()),
    }
)


def test_a_binary_output_is_raw_bytes_in_the_binary_extension() -> None:
    request = v2.InferenceRequest(inputs=[], parameters={"binary_data_output": True})
    body, headers = v2.encode(OUT, request, "mirror", 2)
    split = int(headers[v2.HEADER_LENGTH])
    header = json.loads(body[:split])
    image = struct.pack("<I", 256) + ALL_BYTES + struct.pack("<I", 0)
    image += struct.pack("<I", 4) + b"\x89PNG"  # V2 has no null: an empty element
    assert header["outputs"][0] == {
        "name": "image",
        "shape": [3],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": len(image)},
    }
    assert body[split : split + len(image)] == image
    assert headers["content-type"] == v2.BINARY_MEDIA_TYPE


def test_a_binary_output_is_base64_strings_in_json() -> None:
    body, headers = v2.encode(OUT, v2.InferenceRequest(inputs=[]), "mirror", 2)
    assert headers == {"content-type": v2.MEDIA_TYPE}
    assert json.loads(body) == {
        "model_name": "mirror",
        "model_version": "2",
        "outputs": [
            {
                "name": "image",
                "shape": [3],
                "datatype": "BYTES",
                "parameters": {"content_type": "base64"},
                "data": [base64.b64encode(ALL_BYTES).decode(), None, "iVBORw=="],
            },
            {"name": "size", "shape": [3], "datatype": "INT64", "data": [256, 0, 4]},
        ],
    }
    assert b'"b64"' not in body  # not V1's {"b64": ...} objects


def test_json_base64_round_trips_through_decode() -> None:
    body, _ = v2.encode(OUT.slice(0, 1), v2.InferenceRequest(inputs=[]), "mirror", 2)
    tensor = {**json.loads(body)["outputs"][0], "name": "image"}
    assert rows(json_body(tensor), None, ["image"]).column(0).to_pylist() == [ALL_BYTES]


@pytest.mark.parametrize("arrow", [pa.binary(), pa.large_binary(), pa.binary(4)])
def test_a_binary_column_is_a_bytes_tensor(arrow: pa.DataType) -> None:
    assert v2.tensor_type(arrow) == ("BYTES", [])
