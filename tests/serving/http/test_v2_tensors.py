"""Tensor features and outputs through the Open Inference Protocol on a real ``mmserve
serve`` (issue 19): tritonclient sends an ``[N, 3, 4, 4]`` tensor of a feature declared
``shape = [3, 4, 4]`` and reads an output declared ``shape = [3]`` as ``[N, 3]``."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from serving.registry import Registry
from serving.store import Store
from tests.services import mmserve_server
from tests.serving.test_tensors import MANIFEST, MEANS

ENDPOINTS = "endpoints:\n  averages:\n    variants: [{name: a, model: means:1}]\n"


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("v2-tensors")
    registry = Registry(Store.from_url(str(root / "store")))
    folder = root / "means"
    folder.mkdir()
    (folder / "means.py").write_text(textwrap.dedent(MEANS))
    (folder / "mmserve.toml").write_text(textwrap.dedent(MANIFEST))
    registry.register(folder, "means", trust_code=True)
    (root / "endpoints.yaml").write_text(ENDPOINTS)
    env = {
        "MMSERVE_STORE_URL": str(root / "store"),
        "MMSERVE_ENDPOINTS": str(root / "endpoints.yaml"),
        "PYTHONPATH": os.getcwd(),
    }
    with mmserve_server(env) as base:
        yield base


@pytest.fixture(scope="module")
def triton(url: str) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url.removeprefix("http://"))


def pixels(x: np.ndarray, binary_data: bool) -> httpclient.InferInput:
    tensor = httpclient.InferInput("pixels", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary_data)
    return tensor


@pytest.mark.parametrize("binary_data", [True, False])
def test_tritonclient_sends_a_tensor_and_reads_a_shaped_answer(
    triton: httpclient.InferenceServerClient, binary_data: bool
) -> None:
    x = np.arange(96, dtype=np.float32).reshape(2, 3, 4, 4) / 4  # means exact in float32
    wanted = [httpclient.InferRequestedOutput("means", binary_data=binary_data)]
    answer = triton.infer("means", [pixels(x, binary_data)], outputs=wanted)
    means = answer.as_numpy("means")
    assert (means.shape, means.dtype) == ((2, 3), np.float32)
    np.testing.assert_array_equal(means, x.mean(axis=(2, 3)))


@pytest.mark.parametrize("binary_data", [True, False])
def test_a_tensor_of_another_shape_is_refused_naming_both_shapes(
    triton: httpclient.InferenceServerClient, binary_data: bool
) -> None:
    x = np.zeros((2, 3, 4, 5), np.float32)
    with pytest.raises(InferenceServerException) as refused:
        triton.infer("means", [pixels(x, binary_data)])
    assert refused.value.status() == "422"
    assert refused.value.message() == (
        "input tensor 'pixels': shape [2, 3, 4, 5] does not match the model's [-1, 3, 4, 4]"
    )


def test_metadata_and_configuration_show_the_shapes(
    triton: httpclient.InferenceServerClient,
) -> None:
    metadata = triton.get_model_metadata("means")
    assert metadata["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 3, 4, 4]}]
    assert metadata["outputs"] == [{"name": "means", "datatype": "FP32", "shape": [-1, 3]}]
    config = triton.get_model_config("means")
    assert config["input"] == [{"name": "pixels", "data_type": "TYPE_FP32", "dims": [-1, 3, 4, 4]}]
    assert config["output"] == [{"name": "means", "data_type": "TYPE_FP32", "dims": [-1, 3]}]


@pytest.mark.parametrize("binary_data", [True, False])
def test_an_endpoint_takes_tensors_as_its_model_does(
    triton: httpclient.InferenceServerClient, binary_data: bool
) -> None:
    """Through the endpoint ``averages`` (its name on the model routes, as a Triton client
    calls it), with the same shapes checked and answered."""
    x = np.arange(96, dtype=np.float32).reshape(2, 3, 4, 4) / 4
    wanted = [httpclient.InferRequestedOutput("means", binary_data=binary_data)]
    answer = triton.infer("averages", [pixels(x, binary_data)], outputs=wanted)
    np.testing.assert_array_equal(answer.as_numpy("means"), x.mean(axis=(2, 3)))
    with pytest.raises(InferenceServerException) as refused:
        triton.infer("averages", [pixels(np.zeros((1, 3, 4), np.float32), binary_data)])
    assert refused.value.message() == (
        "input tensor 'pixels': shape [1, 3, 4] does not match the model's [-1, 3, 4, 4]"
    )
