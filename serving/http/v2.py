"""Open Inference Protocol (V2) routes: model metadata, readiness and inference."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from serving.codecs import v2
from serving.errors import MMServeError, ModelLoading, NotFound
from serving.http import _openapi, endpoints
from serving.http._body import read_body, score
from serving.http._dataplane import DataPlane, off_loop_if_large
from serving.http._endpoints import EndpointPlane
from serving.metadata import ModelVersion
from serving.predictor import output_type
from serving.registry import Registry

router = APIRouter(tags=["v2"])


def _ref(name: str, version: str | None) -> str:
    return f"{name}:{version}" if version is not None else name


@router.get("/v2/models/{name}")
@router.get("/v2/models/{name}/versions/{version}")
async def model_metadata(name: str, request: Request, version: str | None = None) -> dict[str, Any]:
    return await metadata_of(request.app.state.registry, _ref(name, version))


async def metadata_of(registry: Registry, ref: str) -> dict[str, Any]:
    """The model's V2 metadata (every protocol's): name, versions, platform, tensors."""
    mv = await run_in_threadpool(registry.get, ref)
    versions = await run_in_threadpool(registry.version_numbers, mv.name)
    return _metadata(mv, versions)


_READY_WAIT_S = 1.0
"""How long a readiness call waits for the load it started before answering 503."""


@router.get("/v2/models/{name}/ready")
@router.get("/v2/models/{name}/versions/{version}/ready")
async def model_ready(name: str, request: Request, version: str | None = None) -> JSONResponse:
    """200 when the model is loaded. Otherwise asking loads it (the load an infer request
    would start): 200 if it loads within a second, else 503 with ``Retry-After`` while it
    loads; a model that cannot load is 503 with the reason (``error``), an unknown one 404.
    So clients that wait for readiness before inferring (tritonclient, the KServe SDK, a
    probe) see a registered model become ready without sending it a request."""
    readiness = await readiness_of(request.app.state.dataplane, _ref(name, version))
    if readiness.ready:
        return JSONResponse({"name": name, "ready": True})
    retry_after = readiness.retry_after
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    body = {"name": name, "ready": False, "error": readiness.error}
    return JSONResponse(body, status_code=503, headers=headers)


@dataclass(frozen=True)
class Readiness:
    ready: bool
    error: str | None = None
    """Why not: ``loading``, or why it cannot load."""
    retry_after: int | None = None


async def readiness_of(dataplane: DataPlane, ref: str) -> Readiness:
    """Whether the model is loaded, asking it to load (every protocol's readiness); an
    unknown model raises :class:`NotFound`."""
    registry = dataplane.registry
    key = await run_in_threadpool(registry.resolve, ref)
    if registry.cache.entry(key) is not None:  # not cache.get: a probe is not a use
        return Readiness(True)
    try:
        await asyncio.wait_for(dataplane.predictor(ref), _READY_WAIT_S)
    except (TimeoutError, ModelLoading):
        return Readiness(False, "loading", retry_after=1)
    except NotFound:
        raise
    except MMServeError as err:
        return Readiness(False, err.message, err.retry_after if err.retryable else None)
    return Readiness(True)


@router.post(
    "/v2/models/{name}/infer",
    summary="Infer (Open Inference Protocol)",
    openapi_extra=_openapi.V2_INFER,
    responses=_openapi.V2_RESPONSES,
)
@router.post(
    "/v2/models/{name}/versions/{version}/infer",
    summary="Infer with a version (Open Inference Protocol)",
    openapi_extra=_openapi.V2_INFER,
    responses=_openapi.V2_RESPONSES,
)
async def infer(name: str, request: Request, version: str | None = None) -> Response:
    """Score the request's tensors with the model ``name``; an applied endpoint's name is
    answered by the endpoint (its variant, or its chain), as ``/v2/endpoints/{name}/infer``
    would: a Triton client, which only knows model routes, reaches a pipeline that way."""
    plane: EndpointPlane = request.app.state.endpoints
    if version is None and name in plane.snapshot:  # what the server last read: no store read
        return await endpoints.infer(name, request)
    body = await read_body(request)
    decoded = await off_loop_if_large(
        len(body), v2.decode, body, request.headers.get(v2.HEADER_LENGTH)
    )
    scored = await score(request, _ref(name, version), v2.reader(decoded), len(body))
    mv = scored.predictor.version
    content, headers = v2.encode(
        scored.table, decoded.request, mv.name, mv.version, mv.output_shapes
    )
    return Response(content, headers=headers)


@router.get("/v2/models/{name}/config")
@router.get("/v2/models/{name}/versions/{version}/config")
async def model_config(name: str, request: Request, version: str | None = None) -> dict[str, Any]:
    """Triton's model configuration extension (what perf_analyzer and Triton's clients read):
    one tensor per feature and output, of any number of rows (``dims: [-1]``; an output of
    K values, ``[-1, K]``)."""
    registry: Registry = request.app.state.registry
    mv = await run_in_threadpool(registry.get, _ref(name, version))
    metadata = _metadata(mv, [mv.version])

    def tensor(meta: dict[str, Any]) -> dict[str, Any]:
        datatype = "STRING" if meta["datatype"] == "BYTES" else meta["datatype"]
        return {"name": meta["name"], "data_type": f"TYPE_{datatype}", "dims": meta["shape"]}

    return {
        "name": mv.name,
        "platform": mv.flavor,
        "backend": "mmserve",
        "max_batch_size": 0,  # the row dimension is the tensors' own, of any size
        "input": [tensor(t) for t in metadata["inputs"]],
        "output": [tensor(t) for t in metadata["outputs"]],
    }


@router.get("/v2/models/{name}/stats")
@router.get("/v2/models/{name}/versions/{version}/stats")
async def model_statistics(
    name: str, request: Request, version: str | None = None
) -> dict[str, Any]:
    """Triton's statistics extension, from the server's own counters (every process's):
    ``success`` counts the requests answered and the time of every request, ``fail`` those
    that failed once their model was known (a request refused before, such as one whose
    rows do not fit, is counted without a model), ``queue`` the wait for a model call,
    ``execution_count`` the model calls (a micro-batch is one). Triton's compute split and
    batch table are not kept: zeros and an empty list."""
    registry: Registry = request.app.state.registry
    mv = await run_in_threadpool(registry.get, _ref(name, version))
    figures = request.app.state.metrics.model_figures(mv.name, str(mv.version))

    def duration(count: float, seconds: float = 0.0) -> dict[str, int]:
        return {"count": int(count), "ns": int(seconds * 1e9)}

    nothing = duration(0)
    stats = {
        "name": mv.name,
        "version": str(mv.version),
        "last_inference": 0,
        "inference_count": int(figures["answered"]),
        "execution_count": int(figures["calls"]),
        "inference_stats": {
            "success": duration(figures["answered"], figures["request_seconds"]),
            "fail": duration(figures["failed"]),
            "queue": duration(figures["queued"], figures["queue_seconds"]),
            "compute_input": nothing,
            "compute_infer": nothing,
            "compute_output": nothing,
        },
        "batch_stats": [],
    }
    return {"model_stats": [stats]}


def _metadata(mv: ModelVersion, versions: list[int]) -> dict[str, Any]:
    """Each input and output as the codec reads and answers it: its datatype, and shape
    ``[-1]`` (any number of rows), ``[-1, K]`` for an output of K values (an embedding), or
    ``[-1, *shape]`` for a tensor declared with a shape."""

    def tensor(name: str, arrow: pa.DataType, shape: list[int] | None) -> dict[str, Any]:
        datatype, row_shape = v2.tensor_type(arrow)
        return {"name": name, "datatype": datatype, "shape": [-1, *(shape or row_shape)]}

    return {
        "name": mv.name,
        "versions": [str(v) for v in versions],
        "platform": mv.flavor,
        "inputs": [tensor(f.name, f.type, f.shape) for f in mv.inputs],
        "outputs": [tensor(o, output_type(mv, o), mv.output_shapes.get(o)) for o in mv.outputs],
    }
