"""Schemathesis against a real ``mmserve serve``: whatever the spec allows, and much that it
does not, gets an answer below 500, and one the spec declares (status, media type, schema).

Every operation of the spec runs its examples, coverage and fuzzing phases, derandomized
(the same cases on every run). Model names in paths and in SageMaker's target header are
drawn from the good models: a random name stops at the 404 before any decoder runs, and
``broken`` raises by design (its 500/424 is pinned in test_v1/test_sagemaker); negative
cases still send other names. Bodies of the binary and text media types (Arrow, parquet,
CSV, JSON lines, V2's binary extension) come from the strategies below: tables that are
nearly right, with wrong types, NaNs, nulls, extra or missing columns, and broken bytes.
"""

from __future__ import annotations

import json
import math
import struct
import tempfile
from collections.abc import Iterator
from copy import deepcopy
from typing import Any

import hypothesis.strategies as st
import numpy as np
import pyarrow as pa
import pytest
import schemathesis
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from serving import codecs
from serving.codecs import v2
from serving.http import create_app
from serving.settings import Settings
from tests.serving.http.conftest import Server, serving_test_models

GOOD_REFS = ["lr", "lr:1", "lr:2", "lr@staging", "mixed", "price"]
GOOD_NAMES = ["lr", "mixed", "price"]
_NAMES = ["f0", "f1", "f2", "f3", "f4", "age", "income", "plan", "region", "id"]
_ENUMS = {
    ("path", "ref"): GOOD_REFS,
    ("path", "name"): GOOD_NAMES,
    ("path", "version"): ["1", "2"],
    ("header", "X-Amzn-SageMaker-Target-Model"): GOOD_NAMES,
}
_ODD_SIZES = ["8", 1.5, None, True, [1], 2**70]
CHECKS = [  # no 5xx, and every answer is one the spec declares, in its media type and shape
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
SEED = 20240601  # with derandomized Hypothesis: the same cases on every run
MAX_EXAMPLES = 30  # per operation and phase; about 25 s for the whole API

_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "double": st.floats(width=64),
    "int64": st.integers(-(2**63), 2**63 - 1),
    "string": st.text(max_size=8),
    "bool": st.booleans(),
}
_CELLS = st.one_of(
    st.floats(allow_nan=True).map(repr),
    st.integers().map(str),
    st.sampled_from(["", "nan", "inf", '""', "basic", "north", "true", "1e400", '"a,b"']),
    st.text(max_size=6),
)


@st.composite
def _tables(draw: st.DrawFn) -> pa.Table:
    """A few rows of columns named like the test models' features, of any of a few types."""
    rows = draw(st.integers(0, 4))
    names = draw(st.lists(st.sampled_from(_NAMES), min_size=1, max_size=6, unique=True))
    columns = {}
    for name in names:
        dtype = draw(st.sampled_from(sorted(_VALUES)))
        cells = st.one_of(st.none(), _VALUES[dtype])
        values = draw(st.lists(cells, min_size=rows, max_size=rows))
        columns[name] = pa.array(values, pa.type_for_alias(dtype))
    return pa.table(columns)


def _damaged(data: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Whole bodies mostly; sometimes cut short, or plain noise."""
    cut = st.tuples(data, st.integers(0, 64)).map(lambda pair: pair[0][: -pair[1] or None])
    return st.one_of(data, data, cut, st.binary(max_size=64))


def _encoded(media_type: str) -> st.SearchStrategy[bytes]:
    return _damaged(_tables().map(lambda table: codecs.encode(table, media_type)))


def _csv_bodies() -> st.SearchStrategy[bytes]:
    width = st.integers(1, 6)
    line = width.flatmap(lambda n: st.lists(_CELLS, min_size=n, max_size=n)).map(",".join)
    header = st.sampled_from(["f0,f1,f2,f3,f4", "age,income,plan,region", "f0,f0,f1,f2,f3,f4"])
    lines = st.tuples(st.one_of(st.just(""), header.map(lambda h: h + "\n")), st.lists(line))
    return lines.map(lambda pair: (pair[0] + "\n".join(pair[1])).encode())


def _jsonl_bodies() -> st.SearchStrategy[bytes]:
    row = st.one_of(  # Hypothesis draws the first branch's simplest value early: "null"
        st.sampled_from(["null", "not json", ""]),
        st.dictionaries(st.sampled_from(_NAMES), st.one_of(*_VALUES.values(), st.none())),
        st.lists(st.one_of(*_VALUES.values()), max_size=6),
    )
    dumped = row.map(lambda r: r if isinstance(r, str) else json.dumps(r))
    return st.lists(dumped, min_size=1, max_size=4).map(lambda lines: "\n".join(lines).encode())


@st.composite
def _binary_tensor(draw: st.DrawFn) -> tuple[dict[str, Any], bytes]:
    """A V2 tensor of the binary extension, and its bytes: mostly the size its shape needs."""
    datatype = draw(st.sampled_from(v2.DATATYPES))
    shape = draw(st.lists(st.integers(0, 3), min_size=1, max_size=3))
    if datatype == "BYTES":
        items = draw(st.lists(st.text(max_size=5).map(str.encode), max_size=math.prod(shape) + 1))
        exact = b"".join(struct.pack("<I", len(item)) + item for item in items)
    else:
        size = math.prod(shape) * np.dtype(v2._NUMPY[datatype]).itemsize
        exact = draw(st.binary(min_size=size, max_size=size))
    blob = draw(st.one_of(st.just(exact), st.binary(max_size=24)))
    size = draw(st.one_of(st.just(len(blob)), st.integers(-2, 80), st.sampled_from(_ODD_SIZES)))
    name = draw(st.sampled_from([*_NAMES, "input0"]))
    tensor = {"name": name, "shape": shape, "datatype": datatype}
    return {**tensor, "parameters": {"binary_data_size": size}}, blob


def _binary_requests() -> st.SearchStrategy[bytes]:
    """Binary extension bodies: the JSON header, then the tensors' bytes."""

    def join(tensors: list[tuple[dict[str, Any], bytes]]) -> bytes:
        header = json.dumps({"inputs": [tensor for tensor, _ in tensors]}).encode()
        return header + b"".join(blob for _, blob in tensors)

    return st.lists(_binary_tensor(), min_size=1, max_size=4).map(join)


def _fit_header_length(case: schemathesis.Case) -> None:
    """Point Inference-Header-Content-Length at the end of the body's JSON header.

    Drawn at random it cuts the JSON anywhere, and hardly a request got past parsing. Values
    that are not a length at all (negative cases) are sent as drawn."""
    if not case.operation.path.endswith("/infer"):
        return
    value = case.headers.get(v2.HEADER_LENGTH)
    if value is not None and not str(value).isdigit():
        return
    if not isinstance(case.body, bytes):  # a JSON body: the header is all of it
        case.headers.pop(v2.HEADER_LENGTH, None)
        return
    try:
        _, end = json.JSONDecoder().raw_decode(case.body.decode("latin-1"))
    except ValueError:
        return
    case.headers[v2.HEADER_LENGTH] = str(end)


schemathesis.openapi.media_type(v2.BINARY_MEDIA_TYPE, _binary_requests())
for _media_type in (codecs.ARROW, codecs.PARQUET):
    schemathesis.openapi.media_type(_media_type, _encoded(_media_type))
schemathesis.openapi.media_type(codecs.CSV, _csv_bodies())
schemathesis.openapi.media_type(codecs.JSONL, _jsonl_bodies())


def _served_spec() -> dict[str, Any]:
    """The spec ``mmserve serve`` serves, from the same app built here: schemathesis' pytest
    integration wants it at collection, before the session's server has a port (its lazy
    loader, ``from_fixture``, does not run on pytest 9.2: it sets ``Node._nodeid``)."""
    with tempfile.TemporaryDirectory() as store:
        return json.loads(json.dumps(create_app(Settings(store_url=store)).openapi()))


def _aim_at_good_models(spec: dict[str, Any]) -> dict[str, Any]:
    spec = deepcopy(spec)
    for path in spec["paths"].values():
        for operation in path.values():
            for parameter in operation.get("parameters", []):
                enum = _ENUMS.get((parameter["in"], parameter["name"]))
                if enum:
                    parameter["schema"] = {"type": "string", "enum": enum}
    return spec


SPEC = _served_spec()
schema = schemathesis.openapi.from_dict(_aim_at_good_models(SPEC))
schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True, database="none")
schema.config.seed = SEED


ADMIN_TOKEN = "schemathesis-admin-token"


@pytest.fixture(scope="module")
def admin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of its own, with management routes on: the run loads, unloads and moves
    aliases, which the other tests' server must not see."""
    with serving_test_models(tmp_path_factory, MMSERVE_ADMIN_TOKEN=ADMIN_TOKEN) as server:
        yield server


def test_the_spec_tested_is_the_served_one(server: Server) -> None:
    assert server.client.get("/openapi.json").json() == SPEC


@pytest.mark.slow
@schema.parametrize()
def test_no_request_gets_a_server_error(case: schemathesis.Case, admin_server: Server) -> None:
    _fit_header_length(case)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    case.call_and_validate(base_url=admin_server.url, checks=CHECKS, headers=headers, timeout=30)
