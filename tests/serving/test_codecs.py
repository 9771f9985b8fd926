"""Tables to and from every body format."""

from __future__ import annotations

import pyarrow as pa
import pytest

from serving import codecs
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
