"""Typed outputs in every encoder: string and int labels stay strings and ints, an embedding
(a fixed-size list) is a JSON array, an ``[N, K]`` V2 tensor and K CSV columns, a list of
any length is a JSON array or, where no format holds it, its JSON text."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serving import codecs
from serving.codecs import sagemaker, v1, v2
from serving.errors import InvalidName
from serving.metadata import arrow_type
from workers import _job_batches, _stream_codec
from workers._stream_log import Event

EMBEDDING = pa.list_(pa.float32(), 4)
TABLE = pa.table(
    {
        "label": pa.array(["spam", "ham", "spam"]),
        "code": pa.array([2, 0, 2], pa.int64()),
        "score": pa.array([0.75, 0.125, 1.5]),
        "embedding": pa.array(
            [[0.5, -1.0, 0.25, 2.0], [0.0, 1.0, 0.0, -0.5], [0.1, 0.2, 0.3, 0.4]], EMBEDDING
        ),
        "tokens": pa.array([[1, 2], [], [3]], pa.list_(pa.int64())),
    }
)
# float32 values in JSON are their exact value (0.1f is 0.10000000149011612): a reader
# taking them as float32 gets the same bits back. CSV writes float32's shortest form.
ROW_2_EMBEDDING = [
    0.10000000149011612,
    0.20000000298023224,
    0.30000001192092896,
    0.4000000059604645,
]
ROWS = [
    {
        "label": "spam",
        "code": 2,
        "score": 0.75,
        "embedding": [0.5, -1.0, 0.25, 2.0],
        "tokens": [1, 2],
    },
    {"label": "ham", "code": 0, "score": 0.125, "embedding": [0.0, 1.0, 0.0, -0.5], "tokens": []},
    {"label": "spam", "code": 2, "score": 1.5, "embedding": ROW_2_EMBEDDING, "tokens": [3]},
]
CSV_VALUES = (
    '"spam",2,0.75,0.5,-1,0.25,2,"[1,2]"\n'
    '"ham",0,0.125,0,1,0,-0.5,"[]"\n'
    '"spam",2,1.5,0.1,0.2,0.3,0.4,"[3]"\n'
)
CSV_HEADER = (
    '"label","code","score","embedding_0","embedding_1","embedding_2","embedding_3","tokens"\n'
)


@pytest.mark.parametrize(
    ("spelled", "arrow"),
    [
        ("double", pa.float64()),
        ("float32", pa.float32()),
        ("string", pa.string()),
        ("int64", pa.int64()),
        ("fixed_size_list<item: float>[8]", pa.list_(pa.float32(), 8)),
        ("float[8]", pa.list_(pa.float32(), 8)),
        ("list<float>[8]", pa.list_(pa.float32(), 8)),
        ("fixed_size_list<element: double>[2]", pa.list_(pa.float64(), 2)),  # parquet's
        ("list<item: double>", pa.list_(pa.float64())),
        ("list<int64>", pa.list_(pa.int64())),
        ("fixed_size_list<item: string>[3]", pa.list_(pa.string(), 3)),
    ],
)
def test_arrow_types_parse_as_arrow_prints_them_and_round_trip(
    spelled: str, arrow: pa.DataType
) -> None:
    assert arrow_type(spelled) == arrow
    assert arrow_type(str(arrow)) == arrow


def test_arrow_prints_an_embedding_type_that_reads_back() -> None:
    assert str(pa.list_(pa.float32(), 8)) == "fixed_size_list<item: float>[8]"
    assert arrow_type(str(pa.list_(pa.float32(), 8))) == pa.list_(pa.float32(), 8)


TYPES = (
    "use an Arrow type such as double, float, int64, string, bool, a fixed-size list such as "
    "fixed_size_list<item: float>[8] (or float[8]), or list<item: double>"
)


@pytest.mark.parametrize(
    ("spelled", "rule"),
    [
        ("decimal", TYPES),
        ("list<list<float>>", TYPES),
        ("large_list<item: float>", TYPES),
        ("struct<a: int64>", TYPES),
        ("map<string, int64>", TYPES),
        ("list<item: float not null>", TYPES),
        ("list<item: blob>", TYPES),
        ("blob[4]", TYPES),
        ("fixed_size_list<item: float>", "a fixed-size list's size is from 1 to 2**31 - 1: [8]"),
        ("float[0]", "a fixed-size list's size is from 1 to 2**31 - 1: [8]"),
        ("float[2147483648]", "a fixed-size list's size is from 1 to 2**31 - 1: [8]"),
    ],
)
def test_other_types_are_refused_naming_them(spelled: str, rule: str) -> None:
    with pytest.raises(InvalidName) as refused:
        arrow_type(spelled)
    assert refused.value.message == f"invalid dtype {spelled!r}: {rule}"


def test_csv_has_an_embeddings_values_as_columns_and_a_ragged_list_as_json_text() -> None:
    assert codecs.encode(TABLE, codecs.CSV).decode() == CSV_HEADER + CSV_VALUES
    assert codecs.csv_table(TABLE).schema == pa.schema(
        [
            ("label", pa.string()),
            ("code", pa.int64()),
            ("score", pa.float64()),
            *[(f"embedding_{k}", pa.float32()) for k in range(4)],
            ("tokens", pa.string()),
        ]
    )


def test_csv_of_no_rows_still_has_every_column() -> None:
    assert codecs.encode(TABLE.slice(0, 0), codecs.CSV).decode() == CSV_HEADER


def test_json_and_json_lines_keep_types_and_lists() -> None:
    assert json.loads(codecs.encode(TABLE, codecs.JSON)) == ROWS
    lines = codecs.encode(TABLE, codecs.JSONL).decode().splitlines()
    assert [json.loads(line) for line in lines] == ROWS
    assert lines[1] == (
        '{"label": "ham", "code": 0, "score": 0.125, "embedding": [0.0, 1.0, 0.0, -0.5], '
        '"tokens": []}'
    )


def test_nan_in_an_embedding_is_null_in_json() -> None:
    table = pa.table(
        {
            "embedding": pa.array([[1.0, float("nan"), float("inf"), 2.0], None], EMBEDDING),
            "tokens": pa.array([[float("-inf")], [0.5]], pa.list_(pa.float64())),
        }
    )
    assert codecs.encode(table, codecs.JSON) == (
        b'[{"embedding": [1.0, null, null, 2.0], "tokens": [null]}, '
        b'{"embedding": null, "tokens": [0.5]}]'
    )
    assert v1.encode(table, "m", 1) == (
        b'{"predictions":[{"embedding":[1.0,null,null,2.0],"tokens":[null]},'
        b'{"embedding":null,"tokens":[0.5]}],"model":"m","version":1}'
    )
    assert codecs.encode(table, codecs.CSV) == (
        b'"embedding_0","embedding_1","embedding_2","embedding_3","tokens"\n'
        b'1,nan,inf,2,"[null]"\n'
        b',,,,"[0.5]"\n'
    )


def test_parquet_and_arrow_keep_the_list_columns() -> None:
    written = pq.read_table(io.BytesIO(codecs.encode(TABLE, codecs.PARQUET)))
    assert written.column("embedding").type == pa.list_(pa.field("element", pa.float32()), 4)
    assert written.to_pylist() == ROWS
    assert codecs.decode(codecs.encode(TABLE, codecs.ARROW), codecs.ARROW).equals(TABLE)


def test_v1_answers_strings_ints_and_arrays() -> None:
    assert json.loads(v1.encode(TABLE, "typed", 3)) == {
        "predictions": ROWS,
        "model": "typed",
        "version": 3,
    }
    assert v1.encode(TABLE.slice(1, 1), "typed", 3) == (
        b'{"predictions":[{"label":"ham","code":0,"score":0.125,'
        b'"embedding":[0.0,1.0,0.0,-0.5],"tokens":[]}],"model":"typed","version":3}'
    )


def test_sagemaker_json_and_headerless_csv() -> None:
    assert json.loads(sagemaker.encode(TABLE, codecs.JSON)) == {"predictions": ROWS}
    assert sagemaker.encode(TABLE, codecs.CSV).decode() == CSV_VALUES
    assert sagemaker.encode(TABLE, codecs.JSONL) == codecs.encode(TABLE, codecs.JSONL)


def test_async_answers_in_batches_equal_the_whole_answer() -> None:
    for kind, header in [(codecs.CSV, True), (codecs.CSV, False), (codecs.JSON, False)]:
        out = io.BytesIO()
        answers = _job_batches.Answers(kind, out, header)
        answers.write(TABLE.slice(0, 2))
        answers.write(TABLE.slice(2))
        answers.close()
        whole = _job_batches.encode(TABLE, kind, header)
        assert out.getvalue() == whole
    assert _job_batches.encode(TABLE, codecs.CSV, True).decode() == CSV_HEADER + CSV_VALUES
    assert json.loads(_job_batches.encode(TABLE, codecs.JSON, False)) == {"predictions": ROWS}


V2_OUTPUTS = [
    {"name": "label", "shape": [3], "datatype": "BYTES", "data": ["spam", "ham", "spam"]},
    {"name": "code", "shape": [3], "datatype": "INT64", "data": [2, 0, 2]},
    {"name": "score", "shape": [3], "datatype": "FP64", "data": [0.75, 0.125, 1.5]},
    {
        "name": "embedding",
        "shape": [3, 4],
        "datatype": "FP32",
        "data": [0.5, -1.0, 0.25, 2.0, 0.0, 1.0, 0.0, -0.5, *ROW_2_EMBEDDING],
    },
    {"name": "tokens", "shape": [3], "datatype": "BYTES", "data": ["[1,2]", "[]", "[3]"]},
]


def test_v2_json_has_typed_tensors_and_an_embedding_as_n_by_k() -> None:
    body, headers = v2.encode(TABLE, v2.InferenceRequest(inputs=[]), "typed", 3)
    assert headers == {"content-type": v2.MEDIA_TYPE}
    assert json.loads(body) == {"model_name": "typed", "model_version": "3", "outputs": V2_OUTPUTS}


def test_v2_binary_has_the_embedding_row_major_and_bytes_length_prefixed() -> None:
    request = v2.InferenceRequest(inputs=[], parameters={"binary_data_output": True})
    body, headers = v2.encode(TABLE.slice(1), request, "typed", 3)
    split = int(headers[v2.HEADER_LENGTH])
    header = json.loads(body[:split])
    assert [(o["name"], o["shape"], o["datatype"]) for o in header["outputs"]] == [
        ("label", [2], "BYTES"),
        ("code", [2], "INT64"),
        ("score", [2], "FP64"),
        ("embedding", [2, 4], "FP32"),
        ("tokens", [2], "BYTES"),
    ]
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
    assert sizes == [4 + 3 + 4 + 4, 16, 16, 32, 4 + 2 + 4 + 3]
    blobs, offset = [], split
    for size in sizes:
        blobs.append(body[offset : offset + size])
        offset += size
    assert offset == len(body)
    assert blobs[0] == struct.pack("<I", 3) + b"ham" + struct.pack("<I", 4) + b"spam"
    assert blobs[1] == np.array([0, 2], "<i8").tobytes()
    assert blobs[2] == np.array([0.125, 1.5], "<f8").tobytes()
    expected = np.array([[0.0, 1.0, 0.0, -0.5], [0.1, 0.2, 0.3, 0.4]], "<f4")
    assert blobs[3] == expected.tobytes()  # row-major: row 0's four values, then row 1's
    assert blobs[4] == struct.pack("<I", 2) + b"[]" + struct.pack("<I", 3) + b"[3]"


def test_v2_named_outputs_only_and_a_sliced_embedding_from_several_chunks() -> None:
    chunked = pa.concat_tables([TABLE.slice(0, 1), TABLE.slice(1, 2)]).slice(1)
    request = v2.InferenceRequest(
        inputs=[],
        outputs=[
            v2.OutputRequest(name="embedding", parameters={"binary_data": True}),
            v2.OutputRequest(name="label"),
        ],
    )
    body, headers = v2.encode(chunked, request, "typed", 3)
    split = int(headers[v2.HEADER_LENGTH])
    assert json.loads(body[:split])["outputs"] == [
        {
            "name": "embedding",
            "shape": [2, 4],
            "datatype": "FP32",
            "parameters": {"binary_data_size": 32},
        },
        {"name": "label", "shape": [2], "datatype": "BYTES", "data": ["ham", "spam"]},
    ]
    values = np.frombuffer(body[split:], "<f4").reshape(2, 4)
    expected = np.array([[0.0, 1.0, 0.0, -0.5], [0.1, 0.2, 0.3, 0.4]], np.float32)
    np.testing.assert_array_equal(values, expected)


@pytest.mark.parametrize(
    ("arrow", "datatype", "row_shape"),
    [
        (pa.string(), "BYTES", []),
        (pa.int64(), "INT64", []),
        (pa.int32(), "INT32", []),
        (pa.bool_(), "BOOL", []),
        (pa.float32(), "FP32", []),
        (pa.list_(pa.float32(), 8), "FP32", [8]),
        (pa.list_(pa.float64(), 2), "FP64", [2]),
        (pa.list_(pa.string(), 3), "BYTES", [3]),
        (pa.list_(pa.float64()), "BYTES", []),
    ],
)
def test_v2_tensor_types(arrow: pa.DataType, datatype: str, row_shape: list[int]) -> None:
    assert v2.tensor_type(arrow) == (datatype, row_shape)


def test_stream_entries_have_an_embedding_as_a_json_array() -> None:
    events = [Event(f"1-{i}", {"x": "1"}, 1, 0) for i in range(3)]
    entries = _stream_codec.outputs(TABLE, events, ["a", "b", "c"], "txn", "typed:3")
    assert entries.source_ids == ["1-0", "1-1", "1-2"]
    assert entries.constant == {"model": "typed", "version": "3"}
    assert entries.columns == {
        "txn": ["a", "b", "c"],
        "label": ["spam", "ham", "spam"],
        "code": ["2", "0", "2"],
        "score": ["0.75", "0.125", "1.5"],
        "embedding": [
            "[0.5,-1.0,0.25,2.0]",
            "[0.0,1.0,0.0,-0.5]",
            "[0.10000000149011612,0.20000000298023224,0.30000001192092896,0.4000000059604645]",
        ],
        "tokens": ["[1,2]", "[]", "[3]"],
    }
