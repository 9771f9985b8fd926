"""Bytes in and out (issue 19): a V1 cell ``{"b64": "<base64>"}`` decodes to a binary column
of its bytes, and a binary column is ``{"b64": ...}`` in every JSON answer, its base64 text
in CSV, and binary in parquet and Arrow."""

from __future__ import annotations

import base64
import json

import pyarrow as pa
import pytest

from serving import codecs
from serving.codecs import Bounds, DecodeError, sagemaker, v1
from serving.errors import DecodedTooLarge

ALL_BYTES = bytes(range(256))
PREFIX = "cannot read the application/json body: "
OTHERS = 'where the field\'s other values are {"b64": ...} objects'


def v1_table(document: object, features: list[str]) -> pa.Table:
    rows = v1.decode(json.dumps(document).encode(), features)
    assert isinstance(rows, pa.Table)
    return rows


def test_instance_b64_cells_decode_to_their_bytes_and_nulls_stay_null() -> None:
    document = {
        "instances": [
            {"image": {"b64": "AP8="}, "x": 1.5},
            {"image": None, "x": 2.0},
            {"image": {"b64": ""}, "x": 3.0},
        ]
    }
    table = v1_table(document, ["image", "x"])
    assert table.schema == pa.schema({"image": pa.binary(), "x": pa.float64()})
    assert table.column("image").to_pylist() == [b"\x00\xff", None, b""]


def test_inputs_as_instances_decode_to_their_bytes() -> None:
    table = v1_table({"inputs": [{"image": {"b64": "aGk="}}]}, ["image"])
    assert table.column("image").type == pa.binary()
    assert table.column("image").to_pylist() == [b"hi"]


def test_columnar_b64_cells_decode_to_their_bytes() -> None:
    table = v1_table({"instances": {"image": [None, {"b64": "aGk="}], "x": [1, 2]}}, ["x"])
    assert table.column("image").type == pa.binary()
    assert table.column("image").to_pylist() == [None, b"hi"]
    assert table.column("x").to_pylist() == [1, 2]


def test_positional_b64_cells_decode_to_their_bytes() -> None:
    document = {"instances": [[{"b64": "aGk="}, 1.5], [None, 2.5]]}
    table = v1_table(document, ["image", "x"])
    assert table.schema == pa.schema({"image": pa.binary(), "x": pa.float64()})
    assert table.to_pylist() == [{"image": b"hi", "x": 1.5}, {"image": None, "x": 2.5}]


def test_sagemaker_json_decodes_b64_cells() -> None:
    body = json.dumps([{"image": {"b64": "aGk="}}]).encode()
    rows = sagemaker.decode(body, codecs.JSON, ["image"])
    assert isinstance(rows, pa.Table)
    assert rows.column("image").to_pylist() == [b"hi"]


def test_text_that_is_not_base64_is_refused_naming_row_and_field() -> None:
    cells = [{"image": {"b64": "aGk="}}] * 3 + [{"image": {"b64": "abc$"}}]
    with pytest.raises(DecodeError) as caught:
        v1_table({"instances": cells}, ["image"])
    assert str(caught.value) == PREFIX + "instance 3 field 'image': 'abc$' is not base64"


def test_long_text_that_is_not_base64_is_quoted_only_so_far() -> None:
    with pytest.raises(DecodeError) as caught:
        v1_table({"instances": [{"image": {"b64": "A" * 41 + "!"}}]}, ["image"])
    quoted = repr("A" * 40) + "..."
    assert str(caught.value) == PREFIX + f"instance 0 field 'image': {quoted} is not base64"


@pytest.mark.parametrize(
    ("cells", "problem"),
    [
        (
            [{"b64": "aGk="}, 1.5],
            f"instance 1 field 'image': a number {OTHERS}",
        ),
        (
            [None, 7, {"b64": "aGk="}],
            f"instance 1 field 'image': a number {OTHERS}",
        ),
        (
            [{"b64": "aGk="}, "aGk="],
            f"instance 1 field 'image': a string {OTHERS}",
        ),
        ([{"b64": 5}], "instance 0 field 'image': \"b64\" holds a number, not base64 text"),
        (
            [{"b64": "aGk="}, {"b64": "aGk=", "mime": "image/png"}],
            "instance 1 field 'image': an object with keys 'b64', 'mime'; bytes are "
            '{"b64": "<base64>"} alone',
        ),
    ],
)
def test_a_field_mixing_b64_cells_and_other_values_is_refused(
    cells: list[object], problem: str
) -> None:
    with pytest.raises(DecodeError) as caught:
        v1_table({"instances": [{"image": cell} for cell in cells]}, ["image"])
    assert str(caught.value) == PREFIX + problem


def test_decoded_bytes_count_against_the_decode_bounds() -> None:
    body = json.dumps({"instances": [{"image": {"b64": base64.b64encode(b"x" * 1000).decode()}}]})
    rows = v1.decode(body.encode(), ["image"], Bounds(max_bytes=2000))
    assert isinstance(rows, pa.Table)
    assert rows.column("image").to_pylist() == [b"x" * 1000]
    with pytest.raises(DecodedTooLarge) as caught:
        v1.decode(body.encode(), ["image"], Bounds(max_bytes=1000))
    assert str(caught.value) == (
        "the body's rows, decoded, exceed the limit of 1000 bytes (MMSERVE_MAX_DECODED_BYTES)"
    )


ANSWER = pa.table(
    {
        "label": pa.array(["spam", None]),
        "blob": pa.array([b"\x00\xff", None], pa.binary()),
        "large": pa.array([b"hi", b""], pa.large_binary()),
    }
)
ROWS_JSON = (
    '{"label": "spam", "blob": {"b64": "AP8="}, "large": {"b64": "aGk="}}',
    '{"label": null, "blob": null, "large": {"b64": ""}}',
)


@pytest.mark.parametrize("premade", [False, True])
def test_v1_answers_bytes_as_b64_objects(premade: bool) -> None:
    rows = ANSWER.to_pylist() if premade else None  # a shared call's rows hold bytes
    assert v1.encode(ANSWER, "m", 3, rows) == (
        b'{"predictions":[{"label":"spam","blob":{"b64":"AP8="},"large":{"b64":"aGk="}},'
        b'{"label":null,"blob":null,"large":{"b64":""}}],"model":"m","version":3}'
    )


def test_v1_answers_bytes_and_nan_together() -> None:
    table = pa.table({"score": [float("nan")], "blob": pa.array([b"hi"], pa.binary())})
    assert v1.encode(table, "m", 1) == (
        b'{"predictions":[{"score":null,"blob":{"b64":"aGk="}}],"model":"m","version":1}'
    )


def test_sagemaker_json_answers_bytes_as_b64_objects() -> None:
    expected = '{"predictions": [' + ", ".join(ROWS_JSON) + "]}"
    assert sagemaker.encode(ANSWER, codecs.JSON) == expected.encode()


def test_json_records_and_lines_answer_bytes_as_b64_objects() -> None:
    assert codecs.encode(ANSWER, codecs.JSON) == ("[" + ", ".join(ROWS_JSON) + "]").encode()
    assert codecs.encode(ANSWER, codecs.JSONL) == "".join(r + "\n" for r in ROWS_JSON).encode()


def test_csv_answers_bytes_as_base64_text() -> None:
    assert codecs.encode(ANSWER, codecs.CSV) == (
        b'"label","blob","large"\n"spam","AP8=","aGk="\n,,""\n'
    )
    assert sagemaker.encode(ANSWER, codecs.CSV) == b'"spam","AP8=","aGk="\n,,""\n'


@pytest.mark.parametrize("kind", [codecs.PARQUET, codecs.ARROW])
def test_parquet_and_arrow_answers_keep_bytes_binary(kind: str) -> None:
    assert codecs.decode(codecs.encode(ANSWER, kind), kind).equals(ANSWER)


def test_a_table_without_bytes_is_left_as_it_is() -> None:
    table = pa.table({"label": ["aGk="], "score": [0.5]})
    assert codecs.json_safe(table) is table
    assert codecs.csv_table(table) is table
    assert v1.encode(table, "m", 1) == (
        b'{"predictions":[{"label":"aGk=","score":0.5}],"model":"m","version":1}'
    )


def test_every_byte_value_makes_the_round_trip() -> None:
    document = {"instances": [{"blob": {"b64": base64.b64encode(ALL_BYTES).decode()}}]}
    table = v1_table(document, ["blob"])
    assert table.column("blob").to_pylist() == [ALL_BYTES]
    answered = json.loads(v1.encode(table, "m", 1))["predictions"][0]["blob"]["b64"]
    assert base64.b64decode(answered, validate=True) == ALL_BYTES
    lines = json.loads(codecs.encode(table, codecs.JSONL))["blob"]["b64"]
    assert base64.b64decode(lines, validate=True) == ALL_BYTES
    text = codecs.encode(table, codecs.CSV).decode().splitlines()[1].strip('"')
    assert base64.b64decode(text, validate=True) == ALL_BYTES
    assert codecs.decode(codecs.encode(table, codecs.ARROW), codecs.ARROW).equals(table)
