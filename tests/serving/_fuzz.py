"""Random, truncated and mutated bodies for every decoder, decoded one after the other.

Run as ``python -m tests.serving._fuzz <decoder|all> <seed> <cases>`` (a child of the test,
so that a crash fails the test rather than pytest): it prints ``<decoder> case N`` before
each body (the last one printed is the one a crash died on; the same seed makes the same
bodies) and, at the end, each body whose decoding raised anything but an mmserve error (a
5xx), then exits 0 if there was none. Its memory is capped: a body that blows up past the
cap fails too.
"""

from __future__ import annotations

import json
import random
import resource
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from serving import codecs
from serving.codecs import raw, sagemaker, v1, v2
from serving.errors import MMServeError
from serving.metadata import Feature

FEATURES = ["a", "b", "c"]
MEMORY_CAP = 3 << 30
"""Address space of the child: a decode that needs more fails the test (it should be a 413)."""

_TABLE = pa.table(
    {
        "a": pa.array([1.5, None, -2.0, 1e308], pa.float64()),
        "b": pa.array([1, 2, None, 2**40], pa.int64()),
        "c": pa.array(["x", "", None, "ünï"], pa.string()),
        "d": pa.array([[1, 2], [], None, [3]], pa.list_(pa.int32())),
        "e": pa.array(["p", "q", "p", "p"]).dictionary_encode(),
    }
)
_TOKENS = [b"null", b"\n", b"\r", b"[", b"]" * 3, b"{", b"}", b'"', b"\\", b",", b"\x00",
           b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x00\x00\x80", b"1e999", b"-0",
           b"[" * 200, b'{"a":' * 200, b"\xef\xbb\xbf", b"\xed\xa0\x80",
           b"[" * 20_000 + b"]" * 20_000, b'{"a":' * 20_000 + b"1" + b"}" * 20_000]  # fmt: skip


def _v2_json() -> bytes:
    inputs = [{"name": "input-0", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}]
    return json.dumps({"inputs": inputs}).encode()


def _v2_binary() -> tuple[bytes, str]:
    blob = np.arange(6, dtype="<f4").tobytes()
    tensor = {"name": "input-0", "shape": [2, 3], "datatype": "FP32"}
    strings = b"".join(len(s).to_bytes(4, "little") + s for s in (b"ab", b"", b"c"))
    header = json.dumps(
        {
            "inputs": [
                {**tensor, "parameters": {"binary_data_size": len(blob)}},
                {
                    "name": "s",
                    "shape": [3],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(strings)},
                },
            ]
        }
    ).encode()
    return header + blob + strings, str(len(header))


def _parquet_zstd() -> bytes:
    """Row groups of one row, zstd pages, a page index: more of the reader to reach."""
    sink = pa.BufferOutputStream()
    pq.write_table(_TABLE, sink, row_group_size=1, compression="zstd", write_page_index=True)
    return bytes(sink.getvalue())


def _arrow_zstd() -> bytes:
    sink = pa.BufferOutputStream()
    options = ipc.IpcWriteOptions(compression="zstd")
    with ipc.new_stream(sink, _TABLE.schema, options=options) as writer:
        writer.write_table(_TABLE, max_chunksize=2)
    return bytes(sink.getvalue())


def _v2(body: bytes, header: str | None) -> Any:
    return v2.to_rows(v2.decode(body, header), FEATURES)


def decoders() -> dict[str, tuple[bytes, Callable[[bytes], Any]]]:
    """Each decoder's name: a valid body to mutate, and how to decode one."""
    table = _TABLE.select(["a", "b", "c"])
    binary, header = _v2_binary()
    found: dict[str, tuple[bytes, Callable[[bytes], Any]]] = {
        name: (codecs.encode(_TABLE if name != "csv" else table, kind), _decode(kind))
        for name, kind in [
            ("csv", codecs.CSV),
            ("json", codecs.JSON),
            ("jsonl", codecs.JSONL),
            ("parquet", codecs.PARQUET),
            ("arrow", codecs.ARROW),
        ]
    }
    found["parquet-zstd"] = (_parquet_zstd(), _decode(codecs.PARQUET))
    found["arrow-zstd"] = (_arrow_zstd(), _decode(codecs.ARROW))
    found["sagemaker-csv"] = (
        b"1,2,x\n3,4,y\n",
        lambda b: sagemaker.decode(b, codecs.CSV, FEATURES),
    )
    found["sagemaker-jsonl"] = (
        b"[1, 2, 3]\n[4, 5, 6]\n",
        lambda b: sagemaker.decode(b, codecs.JSONL, FEATURES),
    )
    found["v1"] = (b'{"instances": [[1, 2, 3], {"a": 1}]}', lambda b: v1.decode(b, FEATURES))
    found["v2-json"] = (_v2_json(), lambda b: _v2(b, None))
    found["v2-binary"] = (binary, lambda b: _v2(b, header))
    # Files and tensors (issue 19): base64 cells, BYTES in base64, a shaped tensor, raw bodies
    cells = b'{"instances": [{"a": {"b64": "iVBORw0KGgo="}, "b": 1}, {"a": null, "b": 2}]}'
    found["v1-b64"] = (cells, lambda b: v1.decode(b, FEATURES))
    found["v2-base64"] = (_v2_base64(), lambda b: _v2(b, None))
    found["v2-tensor"] = (_v2_tensor(), _v2_shaped)
    found["raw-binary"] = (b"\x89PNG\r\n\x1a\n\x00", lambda b: _raw(b, "binary", "image/png"))
    found["raw-text"] = (b"un deux trois", lambda b: _raw(b, "string", "text/plain"))
    return found


def _v2_base64() -> bytes:
    data = ["iVBORw0KGgo=", "AAH/", ""]
    parameters = {"content_type": "base64"}
    tensor = {"name": "a", "shape": [3], "datatype": "BYTES", "parameters": parameters}
    return json.dumps({"inputs": [{**tensor, "data": data}]}).encode()


_PIXELS = Feature(name="a", dtype="float[12]", shape=[3, 2, 2])


def _v2_tensor() -> bytes:
    tensor = {"name": "a", "shape": [2, 3, 2, 2], "datatype": "FP32", "data": list(range(24))}
    return json.dumps({"inputs": [tensor]}).encode()


def _v2_shaped(body: bytes) -> Any:
    return v2.to_rows(v2.decode(body, None), ["a"], v2.declared([_PIXELS]))


def _raw(body: bytes, dtype: str, media_type: str) -> Any:
    return raw.table(raw.Raw(body, media_type), [Feature(name="a", dtype=dtype)])


def _decode(kind: str) -> Callable[[bytes], Any]:
    return lambda body: codecs.decode(body, kind)


def mutate(rng: random.Random, body: bytes) -> bytes:
    """``body`` truncated, flipped, spliced or replaced: a few edits of one kind or another."""
    data = bytearray(body)
    for _ in range(rng.choice([1, 1, 2, 3, 8])):
        edit = rng.randrange(7)
        at = rng.randrange(len(data) + 1)
        if edit == 0:
            del data[at:]
        elif edit == 1 and data:
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif edit == 2:
            data[at:at] = rng.choice(_TOKENS)
        elif edit == 3:
            data[at:at] = rng.randbytes(rng.randrange(1, 16))
        elif edit == 4 and len(data) >= 4:  # a length or an offset, made extreme
            at = min(at, len(data) - 4)
            data[at : at + 4] = rng.choice(_TOKENS[11:14])
        elif edit == 5:
            end = rng.randrange(at, len(data) + 1)
            data[at:at] = data[at:end] * rng.randrange(1, 4)
        else:
            del data[at : at + rng.randrange(1, 32)]
    if rng.random() < 0.05:
        return rng.randbytes(rng.randrange(64))
    return bytes(data)


def main(name: str, seed: int, cases: int) -> int:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    found = decoders()
    failures: list[str] = []
    for decoder in sorted(found) if name == "all" else [name]:
        failures += _fuzz(decoder, *found[decoder], seed, cases)
    print("\n".join(failures) or "no failures", flush=True)
    return 1 if failures else 0


def _fuzz(
    name: str, valid: bytes, decode: Callable[[bytes], Any], seed: int, cases: int
) -> list[str]:
    rng = random.Random(f"{name}:{seed}")
    failures = []
    for case in range(cases):
        body = mutate(rng, valid)
        print(f"{name} case {case}", flush=True)
        try:
            decode(body)
        except MMServeError:
            pass
        except Exception as err:  # anything else would be a 5xx
            failures.append(f"{name} case {case}: {type(err).__name__}: {err!s:.200}")
    return failures


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
