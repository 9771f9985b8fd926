"""Open Inference Protocol (V2) routes: model metadata, readiness and inference."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from serving.codecs import v2
from serving.http import _openapi
from serving.http._body import read_body, score
from serving.http._dataplane import off_loop_if_large
from serving.metadata import ModelVersion
from serving.registry import Registry

router = APIRouter(tags=["v2"])


def _ref(name: str, version: str | None) -> str:
    return f"{name}:{version}" if version is not None else name


@router.get("/v2/models/{name}")
@router.get("/v2/models/{name}/versions/{version}")
async def model_metadata(name: str, request: Request, version: str | None = None) -> dict[str, Any]:
    registry: Registry = request.app.state.registry
    mv = await run_in_threadpool(registry.get, _ref(name, version))
    versions = await run_in_threadpool(registry.version_numbers, mv.name)
    return _metadata(mv, versions)


@router.get("/v2/models/{name}/ready")
@router.get("/v2/models/{name}/versions/{version}/ready")
async def model_ready(name: str, request: Request, version: str | None = None) -> JSONResponse:
    """200 when the model is loaded; 503 (``"ready": false``) while it is not, e.g. before
    its first request or after an idle unload: an infer request would then load it."""
    registry: Registry = request.app.state.registry
    key = await run_in_threadpool(registry.resolve, _ref(name, version))
    ready = registry.cache.entry(key) is not None
    return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)


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
    body = await read_body(request)
    decoded = await off_loop_if_large(
        len(body), v2.decode, body, request.headers.get(v2.HEADER_LENGTH)
    )
    scored = await score(
        request, _ref(name, version), lambda features: v2.to_rows(decoded, features), len(body)
    )
    version_of = scored.predictor.version
    content, headers = v2.encode(scored.table, decoded.request, version_of.name, version_of.version)
    return Response(content, headers=headers)


def _metadata(mv: ModelVersion, versions: list[int]) -> dict[str, Any]:
    def tensor(name: str, datatype: str) -> dict[str, Any]:
        return {"name": name, "datatype": datatype, "shape": [-1]}

    return {
        "name": mv.name,
        "versions": [str(v) for v in versions],
        "platform": mv.flavor,
        "inputs": [tensor(f.name, _V2_TYPES.get(f.dtype, "BYTES")) for f in mv.inputs],
        "outputs": [tensor(o, _output_datatype(mv, o)) for o in mv.outputs],
    }


def _output_datatype(mv: ModelVersion, output: str) -> str:
    if output != "label":
        return "FP64"  # the predictor widens every float output to float64
    first = (mv.classes or [""])[0]
    return "BOOL" if isinstance(first, bool) else "INT64" if isinstance(first, int) else "BYTES"


_V2_TYPES = {"double": "FP64", "float": "FP32", "int64": "INT64", "int32": "INT32", "bool": "BOOL"}
