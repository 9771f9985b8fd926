"""Tables to and from every body format."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pytest

from serving import codecs
from serving.codecs import sagemaker, v1, v2
from serving.errors import InputError, UnsupportedFormat

TABLE = pa.table({"id": ["a", "b"], "x": [1.5, -2.0], "n": [3, 4]})


@pytest.mark.parametrize("media_type", codecs.MEDIA_TYPES)
def test_every_format_round_trips(media_type: str) -> None:
    assert codecs.decode(codecs.encode(TABLE, media_type), media_type).equals(TABLE)


@pytest.mark.parametrize(
    ("media_type", "body", "message"),
    [
        (codecs.CSV, b"", "cannot read the text/csv body: the body is empty"),
        (
            codecs.JSON,
            b"{not json",
            "cannot read the application/json body: "
            "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        ),
        (
            codecs.JSON,
            b'{"a": 1}',
            "cannot read the application/json body: expected a JSON array of objects, one per row",
        ),
    ],
)
def test_malformed_bodies_are_input_errors(media_type: str, body: bytes, message: str) -> None:
    with pytest.raises(InputError) as info:
        codecs.decode(body, media_type)
    assert info.value.message == message
    assert info.value.status == 422


@pytest.mark.parametrize(
    ("media_type", "body"),
    [
        (codecs.CSV, b"a,b\n1,2\n3\n"),
        (codecs.PARQUET, b"PAR1garbage"),
        (codecs.ARROW, b"\x00" * 12),
    ],
)
def test_arrow_parse_errors_keep_arrows_reason(media_type: str, body: bytes) -> None:
    with pytest.raises(InputError) as info:
        codecs.decode(body, media_type)
    prefix = f"cannot read the {media_type} body: "
    assert info.value.message.startswith(prefix) and len(info.value.message) > len(prefix)


def test_unknown_formats_are_415() -> None:
    with pytest.raises(UnsupportedFormat) as info:
        codecs.decode(b"\x80\x04", "application/python-pickle")
    assert info.value.status == 415
    with pytest.raises(UnsupportedFormat):
        codecs.media_type_of(__import__("pathlib").Path("rows.xlsx"))


def test_files_by_extension(tmp_path) -> None:
    for suffix in (".csv", ".jsonl", ".json", ".parquet", ".arrow"):
        path = tmp_path / f"rows{suffix}"
        codecs.write_file(TABLE, path)
        assert codecs.read_file(path).equals(TABLE)


# -- bodies that once got a 5xx (found by tests/serving/http/test_schemathesis.py and fuzzing)


@pytest.mark.parametrize("media_type", [codecs.ARROW, codecs.PARQUET])
def test_a_truncated_arrow_or_parquet_body_is_an_input_error(media_type: str) -> None:
    body = codecs.encode(TABLE, media_type)[:-10]  # pyarrow raised a bare OSError
    with pytest.raises(InputError, match=f"^cannot read the {media_type} body: "):
        codecs.decode(body, media_type)


@pytest.mark.parametrize(
    ("body", "line"), [(b"null", 1), (b"null\n{}", 1), (b'\n  [1, 2]\n{"x": 1}', 2)]
)
def test_json_lines_must_start_with_an_object(body: bytes, line: int) -> None:
    # pyarrow's JSON reader segfaults on a first row of null: it killed the server process.
    # (Every line is checked: tests/serving/test_codecs_json_lines.py.)
    with pytest.raises(InputError) as info:
        codecs.decode(body, codecs.JSONL)
    assert info.value.message == (
        f"cannot read the application/jsonlines body: line {line} is not a JSON object "
        "(one object per line)"
    )


def test_a_json_integer_past_int64_is_an_input_error() -> None:
    body = b'[{"a": 1}, {"a": 100000000000000000000000}]'  # found by tests/serving/_fuzz.py
    with pytest.raises(InputError) as info:  # pyarrow raised a bare OverflowError: a 500
        codecs.decode(body, codecs.JSON)
    assert info.value.message == (
        "column 'a' has 100000000000000000000000, out of range for int64, at row 1"
    )


def test_json_nested_past_the_stack_is_an_input_error() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000  # json.loads raised RecursionError
    with pytest.raises(InputError, match="maximum recursion depth exceeded"):
        codecs.decode(deep, codecs.JSON)
    with pytest.raises(InputError, match="maximum recursion depth exceeded"):
        v1.decode(b'{"instances": ' + deep + b"}", ["x"])
    with pytest.raises(InputError, match="maximum recursion depth exceeded"):
        sagemaker.decode(deep, codecs.JSON, ["x"])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            rb'{"inputs": {"\ud800": [1.0]}}',
            "cannot read the application/json body: column name '\\ud800' is not valid Unicode "
            "text",
        ),
        (
            rb'{"instances": [{"plan": "\udfff"}]}',
            "cannot read the application/json body: column 'plan' has text that is not valid "
            "Unicode",
        ),
    ],
)
def test_v1_text_that_is_not_unicode_is_an_input_error(body: bytes, message: str) -> None:
    with pytest.raises(InputError) as info:  # JSON escapes lone surrogates; Arrow refused them
        v1.decode(body, ["plan"])
    assert info.value.message == message


def _v2(*tensors: dict[str, Any]) -> bytes:
    return json.dumps({"inputs": list(tensors)}).encode()


@pytest.mark.parametrize("size", [[8], "8", -1, 1.5, True])
def test_v2_binary_data_size_must_be_a_byte_count(size: object) -> None:
    tensor = {"name": "x", "shape": [1], "datatype": "FP64"}
    body = _v2({**tensor, "parameters": {"binary_data_size": size}})
    with pytest.raises(InputError) as info:  # int() of it raised, or took 1.5 and True
        v2.decode(body + b"\0" * 8, str(len(body)))
    assert info.value.message == f"input tensor 'x': binary_data_size {size!r} is not a byte count"


def test_v2_header_length_must_be_ascii_digits() -> None:
    with pytest.raises(InputError, match="Inference-Header-Content-Length '²' does not fit"):
        v2.decode(_v2({"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}), "²")


def test_v2_a_huge_shape_is_an_input_error() -> None:
    body = _v2({"name": "x", "shape": [2**40, 2**40], "datatype": "FP64", "data": []})
    with pytest.raises(InputError) as info:  # numpy's product wrapped around to 0
        v2.decode(body, None)
    assert info.value.message == (
        f"input tensor 'x': shape [{2**40}, {2**40}] is too large: at most 2147483647 "
        "elements in its non-zero dimensions"
    )


def test_v2_tensors_per_feature_are_one_column_each() -> None:
    decoded = v2.decode(
        _v2(
            {"name": "a", "shape": [2, 3], "datatype": "FP64", "data": [1.0] * 6},
            {"name": "b", "shape": [2], "datatype": "FP64", "data": [1.0] * 2},
        ),
        None,
    )
    with pytest.raises(InputError) as info:  # pyarrow refused columns of 6 and 2 rows
        v2.to_rows(decoded, ["a", "b"])
    assert info.value.message == (
        "input tensor 'a': shape [2, 3]: a tensor per feature is [N] or [N, 1] "
        "(or send one [N, K] tensor of all the features)"
    )


def test_v2_bytes_tensors_hold_strings() -> None:
    body = _v2({"name": "plan", "shape": [2], "datatype": "BYTES", "data": [1, "pro"]})
    with pytest.raises(InputError) as info:  # pyarrow refused the mixed column
        v2.decode(body, None)
    assert info.value.message == "input tensor 'plan': data are not all BYTES (strings, in JSON)"


def test_nan_and_infinite_outputs_are_null_in_json() -> None:
    # Starlette's JSONResponse refuses NaN (a 500); json.dumps wrote the invalid token NaN.
    out = pa.table({"label": [1, 0, 1], "prediction": [float("nan"), 2.5, float("-inf")]})
    rows = [{"label": 1, "prediction": None}, {"label": 0, "prediction": 2.5}]
    rows.append({"label": 1, "prediction": None})
    strict = {"parse_constant": _refuse}
    assert json.loads(v1.encode(out, "m", 1))["predictions"] == rows
    assert json.loads(sagemaker.encode(out, codecs.JSON), **strict) == {"predictions": rows}
    assert json.loads(codecs.encode(out, codecs.JSON), **strict) == rows
    request = v2.InferenceRequest.model_validate({"inputs": []})
    body, _ = v2.encode(out, request, "m", 1)
    assert json.loads(body, **strict)["outputs"][1]["data"] == [None, 2.5, None]


def _refuse(token: str) -> None:
    raise AssertionError(f"{token} is not JSON")


def test_a_reason_is_never_empty() -> None:
    assert codecs.reason(ValueError("first\nsecond")) == "first"
    assert codecs.reason(OSError()) == "OSError"
