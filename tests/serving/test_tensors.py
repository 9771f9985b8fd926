"""Fixed-shape tensor features and outputs (issue 19): declared in ``mmserve.toml`` with a
shape, recorded as fixed-size list columns, read from and answered as V2 ``[N, *shape]``
tensors."""

from __future__ import annotations

import json
import struct
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from serving.codecs import v2
from serving.errors import InputError, InvalidName
from serving.metadata import Feature
from serving.registry import Registry
from serving.runtimes import _manifest
from serving.store import Store

MEANS = """\
    import numpy as np
    import pyarrow as pa


    class Means:
        def load(self, path):
            pass

        def predict(self, table):
            pixels = table["pixels"].combine_chunks().flatten().to_numpy()
            means = pixels.reshape(-1, 3, 16).mean(axis=2, dtype=np.float32)
            return pa.table({"means": pa.FixedSizeListArray.from_arrays(means.reshape(-1), 3)})
"""
MANIFEST = """\
    model = "means:Means"
    [inputs]
    pixels = { type = "float", shape = [3, 4, 4] }
    [outputs]
    means = { type = "float", shape = [3] }
"""
PIXELS = v2.Declared("FP32", [3, 4, 4])


def parse(inputs: str) -> _manifest.Manifest:
    text = f'model = "m:M"\n[inputs]\n{inputs}\n[outputs]\ny = "double"\n'
    return _manifest.parse(text.encode(), "m")


def test_a_shape_declares_a_fixed_size_list_of_its_product() -> None:
    manifest = parse(
        'pixels = { type = "float", shape = [3, 224, 224] }\n'
        'depth = { type = "double", shape = [2, 2] }\n'
        'mask = { type = "bool", shape = [5] }'
    )
    assert manifest.inputs == {
        "pixels": "fixed_size_list<item: float>[150528]",
        "depth": "fixed_size_list<item: double>[4]",
        "mask": "fixed_size_list<item: bool>[5]",
    }
    assert manifest.shapes == {"pixels": [3, 224, 224], "depth": [2, 2], "mask": [5]}


SHAPE_RULE = (
    "a list of 1 to 8 positive whole numbers such as [3, 224, 224], whose product is below 2**31"
)


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ("shape = []", f"invalid mmserve.toml [inputs] p shape '[]': {SHAPE_RULE}"),
        ("shape = [3, 0]", f"invalid mmserve.toml [inputs] p shape '[3, 0]': {SHAPE_RULE}"),
        ("shape = [-3]", f"invalid mmserve.toml [inputs] p shape '[-3]': {SHAPE_RULE}"),
        ("shape = [1.5]", f"invalid mmserve.toml [inputs] p shape '[1.5]': {SHAPE_RULE}"),
        ("shape = 3", f"invalid mmserve.toml [inputs] p shape '3': {SHAPE_RULE}"),
        (
            "shape = [1, 1, 1, 1, 1, 1, 1, 1, 1]",
            f"invalid mmserve.toml [inputs] p shape '[1, 1, 1, 1, 1, 1, 1, 1, 1]': {SHAPE_RULE}",
        ),
        (
            "shape = [65536, 32768]",
            f"invalid mmserve.toml [inputs] p shape '[65536, 32768]': {SHAPE_RULE}",
        ),
    ],
)
def test_a_shape_is_refused_naming_what_it_cannot_mean(declared: str, message: str) -> None:
    with pytest.raises(InvalidName) as refused:
        parse(f'p = {{ type = "float", {declared} }}')
    assert refused.value.message == message


@pytest.mark.parametrize("dtype", ["string", "binary", "float[4]", "decimal"])
def test_a_tensor_is_of_numbers(dtype: str) -> None:
    with pytest.raises(InvalidName) as refused:
        parse(f'p = {{ type = "{dtype}", shape = [2, 2] }}')
    assert refused.value.message == (
        f"invalid mmserve.toml [inputs] p type '{dtype}': a tensor's type is a number type "
        "such as float, double or int64"
    )


def test_a_features_shape_must_fit_its_type() -> None:
    feature = Feature(name="p", dtype="float[48]", shape=[3, 4, 4])
    assert (feature.dtype, feature.shape) == ("fixed_size_list<item: float>[48]", [3, 4, 4])
    with pytest.raises(InvalidName) as refused:
        Feature(name="p", dtype="float[47]", shape=[3, 4, 4])
    assert refused.value.message == (
        "invalid type of p 'fixed_size_list<item: float>[47]': a shape [3, 4, 4] is of a "
        "fixed-size list of 48 numbers"
    )
    with pytest.raises(InvalidName) as refused:
        Feature(name="p", dtype="float[48]", shape=[48, 0])
    assert refused.value.message == f"invalid shape '[48, 0]': {SHAPE_RULE}"


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(Store.from_url(str(tmp_path / "store")))


def register(registry: Registry, tmp_path: Path) -> None:
    folder = tmp_path / "means"
    folder.mkdir()
    (folder / "means.py").write_text(textwrap.dedent(MEANS))
    (folder / "mmserve.toml").write_text(textwrap.dedent(MANIFEST))
    registry.register(folder, "means", trust_code=True)


def test_the_version_records_input_and_output_shapes(registry: Registry, tmp_path: Path) -> None:
    register(registry, tmp_path)
    mv = registry.get("means")
    (pixels,) = mv.inputs
    assert (pixels.dtype, pixels.shape) == ("fixed_size_list<item: float>[48]", [3, 4, 4])
    assert mv.output_types == {"means": "fixed_size_list<item: float>[3]"}
    assert mv.output_shapes == {"means": [3]}
    assert v2.declared(mv.inputs) == {"pixels": PIXELS}


def test_a_list_of_another_size_is_refused_naming_column_and_row(
    registry: Registry, tmp_path: Path
) -> None:
    register(registry, tmp_path)
    rows = pa.table({"pixels": pa.array([[0.0] * 48, [0.0] * 47], pa.list_(pa.float32()))})
    with pytest.raises(InputError) as refused:
        registry.load("means").predict(rows)
    assert refused.value.status == 422
    assert refused.value.message.startswith(
        "column 'pixels' must be fixed_size_list<item: float>[48], got "
    )
    assert refused.value.message.endswith(" at row 1")


def tensor(x: np.ndarray, name: str = "pixels", **extra: Any) -> dict[str, Any]:
    datatype = {"float32": "FP32", "float64": "FP64"}[str(x.dtype)]
    return {"name": name, "shape": list(x.shape), "datatype": datatype, **extra}


def test_an_n_d_tensor_is_a_fixed_size_list_column_a_row_a_block() -> None:
    x = np.arange(96, dtype=np.float32).reshape(2, 3, 4, 4)
    flat = json.dumps({"inputs": [{**tensor(x), "data": x.reshape(-1).tolist()}]})
    nested = json.dumps({"inputs": [{**tensor(x), "data": x.tolist()}]})
    header = json.dumps({"inputs": [tensor(x, parameters={"binary_data_size": x.nbytes})]})
    binary = (header.encode() + x.tobytes(), str(len(header)))
    for body, length in [(flat.encode(), None), (nested.encode(), None), binary]:
        rows = v2.to_rows(v2.decode(body, length), ["pixels"], {"pixels": PIXELS})
        assert isinstance(rows, pa.Table)
        assert rows.schema.field("pixels").type == pa.list_(pa.float32(), 48)
        assert rows["pixels"].to_pylist() == x.reshape(2, 48).tolist()


@pytest.mark.parametrize(
    ("shape", "datatype", "message"),
    [
        (
            [2, 3, 4, 5],
            "FP32",
            "input tensor 'pixels': shape [2, 3, 4, 5] does not match the model's [-1, 3, 4, 4]",
        ),
        (
            [2, 48],
            "FP32",
            "input tensor 'pixels': shape [2, 48] does not match the model's [-1, 3, 4, 4]",
        ),
        (
            [2, 3, 4, 4],
            "FP64",
            "input tensor 'pixels': datatype FP64 does not match the model's FP32",
        ),
    ],
)
def test_a_tensor_of_another_shape_or_datatype_is_refused(
    shape: list[int], datatype: str, message: str
) -> None:
    size = int(np.prod(shape))
    body = {
        "inputs": [{"name": "pixels", "shape": shape, "datatype": datatype, "data": [0] * size}]
    }
    decoded = v2.decode(json.dumps(body).encode(), None)
    with pytest.raises(InputError) as refused:
        v2.to_rows(decoded, ["pixels"], {"pixels": PIXELS})
    assert (refused.value.status, refused.value.message) == (422, message)


def test_an_overflow_in_a_tensor_names_its_row() -> None:
    body = '{"inputs": [{"name": "pixels", "shape": [2, 3, 4, 4], "datatype": "FP32", "data": ['
    body += ", ".join(["0"] * 50 + ["1e39"] + ["0"] * 45) + "]}]}"
    with pytest.raises(InputError) as refused:
        v2.to_rows(v2.decode(body.encode(), None), ["pixels"], {"pixels": PIXELS})
    assert refused.value.message == "column 'pixels' has 1e39, out of range for float, at row 1"


def test_a_shaped_output_is_answered_n_by_its_shape() -> None:
    means = np.arange(6, dtype=np.float32)
    table = pa.table({"means": pa.FixedSizeListArray.from_arrays(means, 3)})
    request = v2.InferenceRequest.model_validate(
        {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}
    )
    body, _ = v2.encode(table, request, "means", 1, {"means": [3]})
    (output,) = json.loads(body)["outputs"]
    assert output == {"name": "means", "shape": [2, 3], "datatype": "FP32", "data": means.tolist()}
    request.parameters = {"binary_data_output": True}
    body, headers = v2.encode(table, request, "means", 1, {"means": [3]})
    split = int(headers[v2.HEADER_LENGTH])
    (output,) = json.loads(body[:split])["outputs"]
    assert (output["shape"], output["parameters"]) == ([2, 3], {"binary_data_size": 24})
    assert struct.unpack("<6f", body[split:]) == tuple(means.tolist())
