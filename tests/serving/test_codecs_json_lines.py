"""JSON lines are checked before pyarrow's reader sees them: lines it would crash on (a
top-level null at a block's start, deep nesting: apache/arrow#47409) are refused naming the
line, in a body and in a streamed file. Each crashing body is decoded in a child process."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.json as pajson
import pytest

from serving import codecs
from serving.codecs import _jsonl
from serving.errors import InputError
from tests.serving._isolated import decode_in_child

ROW = b'{"a": 1.0, "b": "x"}\n'
BLOCK = 1 << 20  # pyarrow's JSON reader's default block


def at_second_block(line: bytes) -> tuple[bytes, int]:
    """1 MiB of rows (padded with spaces to the block's end), then ``line`` at the start of
    the second block, then rows: the issue's body. Returns it and ``line``'s number."""
    rows = ROW * (BLOCK // len(ROW))
    body = rows + b" " * (BLOCK - len(rows))
    return body + line + b"\n" + ROW * 100, BLOCK // len(ROW) + 1


MESSAGE = (
    "cannot read the application/jsonlines body: line {} is not a JSON object "
    "(one object per line)"
)
REFUSED = "DecodeError 422 " + MESSAGE  # as the child prints it


@pytest.mark.parametrize(
    "line", [b"null", b" null", b"\tnull", b"[]", b"1", b'"x"', b"true", b"[null]", b"{} x"]
)
def test_a_line_that_is_not_an_object_at_a_blocks_start_is_refused_naming_it(
    line: bytes,
) -> None:
    body, number = at_second_block(line)
    assert decode_in_child(body) == REFUSED.format(number)


def test_a_null_after_a_carriage_return_is_a_line_of_its_own() -> None:
    # pyarrow cuts blocks at "\r" too: a null after one can start a block.
    body, number = at_second_block(b"")
    body = body[: BLOCK - 1] + b"\r" + b"null\n" + ROW
    assert decode_in_child(body) == REFUSED.format(number)  # lines count line feeds


@pytest.mark.parametrize(
    ("body", "number"),
    [(b"null\n" + ROW, 1), (ROW + b"null\n", 2), (b"\n\n" + ROW + b"  [1]\n", 4)],
)
def test_any_line_that_is_not_an_object_is_refused(body: bytes, number: int) -> None:
    with pytest.raises(InputError) as info:
        codecs.decode(body, codecs.JSONL)
    assert (info.value.status, info.value.message) == (422, MESSAGE.format(number))


def test_an_object_spread_over_lines_is_refused() -> None:
    # Objects over several lines would let nesting grow past any one line's brackets.
    with pytest.raises(InputError, match="line 1 is not a JSON object"):
        codecs.decode(b'{"a":\n[1]}\n', codecs.JSONL)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"a": ' + b"[" * 65 + b"]" * 65 + b"}",
    ],
    ids=["objects", "lists", "just-too-deep"],
)
def test_nesting_past_the_bound_is_refused(body: bytes) -> None:
    assert decode_in_child(body + b"\n") == (
        "DecodeError 422 cannot read the application/jsonlines body: "
        "line 1 is nested deeper than 64 levels"
    )


def test_valid_lines_read_as_pyarrow_reads_them() -> None:
    body = (
        b'{"a": 1, "b": [[1, 2], [3]]}\r\n'
        b"\n"
        b'  \t{"a": 2, "b": []}  \n'
        b'{"a": 3, "d": ' + b"[" * 63 + b"]" * 63 + b"}\n"
        b'{"a": 4, "e": [' + b", ".join([b"[1]"] * 100) + b"]}\n"  # many brackets, shallow
        b'{"a": 5, "b": [[5], [6, 7]], "c": "{[[[{"}'
    )
    expected = pajson.read_json(pa.BufferReader(body))
    assert codecs.decode(body, codecs.JSONL).equals(expected)
    assert expected.num_rows == 5


def test_a_streamed_file_is_checked_chunk_by_chunk_naming_the_files_line() -> None:
    rows = ROW * 50
    stream = io.BytesIO(rows + b"\r\n" + rows + b"null\n" + rows)
    batches = codecs.read_json_lines(_Chunks(stream), "/data/in.jsonl")
    with pytest.raises(InputError) as info:
        list(batches)
    assert info.value.message == (
        "cannot read /data/in.jsonl: line 102 is not a JSON object "
        "(one object per line)"
    )


def test_a_streamed_file_reads_whole() -> None:
    body = ROW * 10_000 + b'{"a": 2.5, "b": "y"}'  # no line feed at the end
    batches = list(codecs.read_json_lines(io.BytesIO(body), "in.jsonl"))
    assert pa.Table.from_batches(batches).equals(pajson.read_json(pa.BufferReader(body)))


def test_lines_are_checked_across_small_chunks() -> None:
    body = ROW * 30 + b"[1]\n"
    lines = _jsonl.CheckedLines(io.BytesIO(body), chunk_bytes=7)
    with pytest.raises(_jsonl.NotJsonLines, match=r"^line 31 is not a JSON object"):
        while lines.read(5):
            pass


def test_a_line_too_long_to_hold_is_refused() -> None:
    lines = _jsonl.CheckedLines(io.BytesIO(ROW + b"{" + b" " * 100), 16, max_line_bytes=64)
    with pytest.raises(_jsonl.NotJsonLines, match=r"^line 2 is longer than 64 bytes"):
        while lines.read():
            pass


class _Chunks(io.RawIOBase):
    """A stream that hands out at most 1000 bytes a read (a file read in small pieces)."""

    def __init__(self, raw: io.BytesIO) -> None:
        self.raw = raw

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        return self.raw.read(min(1000, size if size and size > 0 else 1000))
