"""Decoding is bounded: bodies whose rows, decoded, pass ``max_decoded_bytes`` or
``max_decoded_cells`` are a 413 as soon as the rows read show it (a few KB of parquet once
decoded to GBs), and a decode past its request's deadline stops."""

from __future__ import annotations

import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serving import codecs
from serving.codecs import Bounds, sagemaker
from serving.errors import DecodedTooLarge, RequestTimeout
from serving.settings import Settings

TOO_MANY_BYTES = (
    "the body's rows, decoded, exceed the limit of 268435456 bytes (MMSERVE_MAX_DECODED_BYTES)"
)
TOO_MANY_CELLS = (
    "the body's rows, decoded, exceed the limit of 16777216 cells (MMSERVE_MAX_DECODED_CELLS)"
)


def parquet(table: pa.Table, **options: object) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **options)  # type: ignore[arg-type]
    return bytes(sink.getvalue())


def parquet_bomb() -> bytes:
    """100 KB of parquet that decode to 1 GB: a million rows of one 1000-byte value."""
    column = pa.DictionaryArray.from_arrays(
        pa.array([0] * 1_000_000, pa.int32()), pa.array(["x" * 1000])
    )
    # Without the Arrow schema, the column reads as plain strings: a GB of them.
    return parquet(pa.table({"a": column}), compression="zstd", store_schema=False)


def test_a_parquet_bomb_is_a_413_before_it_is_decoded_whole() -> None:
    body = parquet_bomb()
    assert len(body) < 128 * 1024
    # In a child: its memory pool's peak shows how much the decode held before it stopped.
    child = subprocess.run(
        [sys.executable, "-c", _PEAK],
        input=body,
        capture_output=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr.decode()
    error, peak = child.stdout.decode().strip().rsplit("\n", 1)
    assert error == f"413 {TOO_MANY_BYTES}"
    assert int(peak) < 2 * 268435456  # a batch past the bound, not the 1 GB


_PEAK = """
import sys
import pyarrow as pa
from serving import codecs
from serving.errors import MMServeError
try:
    codecs.decode(sys.stdin.buffer.read(), codecs.PARQUET)
except MMServeError as err:
    print(err.status, err.message)
print(pa.default_memory_pool().max_memory())
"""


@pytest.mark.parametrize("media_type", [codecs.PARQUET, codecs.ARROW])
def test_rows_of_nulls_count_as_cells(media_type: str) -> None:
    # A column of nulls takes no bytes, in the body or decoded; scored, a float a row.
    body = codecs.encode(pa.table({"a": pa.nulls(20_000_000)}), media_type)
    with pytest.raises(DecodedTooLarge) as info:
        codecs.decode(body, media_type)
    assert (info.value.status, info.value.message) == (413, TOO_MANY_CELLS)


def test_an_arrow_dictionary_counts_as_decoded() -> None:
    # Read, the table holds the value once; scored, the model takes it a row at a time.
    column = pa.DictionaryArray.from_arrays(pa.array([0] * 300, pa.int32()), ["x" * 1_000_000])
    body = codecs.encode(pa.table({"a": column}), codecs.ARROW)
    with pytest.raises(DecodedTooLarge) as info:
        codecs.decode(body, codecs.ARROW)
    assert info.value.message == TOO_MANY_BYTES


def test_the_settings_set_the_bounds() -> None:
    bounds = Bounds.of(Settings(max_decoded_bytes=1000, max_decoded_cells=50))
    table = pa.table({"a": list(range(10)), "b": [0.5] * 10})
    for media_type in codecs.MEDIA_TYPES:
        body = codecs.encode(table, media_type)
        assert codecs.decode(body, media_type, bounds).equals(table)
        with pytest.raises(DecodedTooLarge, match=r"of 50 cells \(MMSERVE_MAX_DECODED_CELLS\)"):
            codecs.decode(
                codecs.encode(pa.concat_tables([table] * 3), media_type), media_type, bounds
            )
    big = pa.table({"a": ["y" * 2000]})
    with pytest.raises(DecodedTooLarge, match=r"of 1000 bytes \(MMSERVE_MAX_DECODED_BYTES\)"):
        sagemaker.decode(codecs.encode(big, codecs.CSV), codecs.CSV, ["a"], bounds)


def test_a_decode_past_its_deadline_stops() -> None:
    bounds = Bounds(deadline=time.monotonic() - 1, timeout_s=5)
    body = codecs.encode(pa.table({"a": [1.0, 2.0]}), codecs.PARQUET)
    with pytest.raises(RequestTimeout) as info:
        codecs.decode(body, codecs.PARQUET, bounds)
    assert (info.value.status, info.value.message) == (
        504,
        "the request took longer than the 5 s limit",
    )


def test_local_files_are_not_bounded(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The CLI reads the machine's own user's files.
    path = tmp_path / "rows.parquet"
    path.write_bytes(codecs.encode(pa.table({"a": pa.nulls(20_000_000)}), codecs.PARQUET))
    assert codecs.read_file(path).num_rows == 20_000_000
