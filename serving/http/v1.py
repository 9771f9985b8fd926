"""Native / KServe V1 routes: predict by model reference, list and describe models.

Bodies are JSON (``{"instances": ...}`` or ``{"inputs": ...}``) or Arrow IPC streams; the
answer is JSON, or Arrow IPC when the ``Accept`` header asks for it. A body labelled a form
(``curl -d``'s default) or not labelled is read as JSON, as KServe reads it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from serving import codecs
from serving.codecs import Rows, v1
from serving.http import _openapi
from serving.http._auth import require_admin
from serving.http._body import decode_bounds, read_body, score
from serving.metadata import Feature, names
from serving.registry import Registry

router = APIRouter(tags=["v1"])


@router.post(
    "/v1/models/{ref}:predict",
    summary="Predict (native / KServe V1)",
    operation_id="v1_predict_colon",
    openapi_extra=_openapi.V1_PREDICT,
    responses=_openapi.V1_RESPONSES,
)
@router.post(
    "/v1/models/{ref}/predict",
    summary="Predict (native / KServe V1)",
    operation_id="v1_predict_slash",
    openapi_extra=_openapi.V1_PREDICT,
    responses=_openapi.V1_RESPONSES,
)
async def predict(ref: str, request: Request) -> Response:
    """Score the rows in the body with the model ``ref`` (``name``, ``name:3``, ``name@alias``)."""
    kind = v1.body_type(request.headers.get("content-type"))
    as_arrow = codecs.ARROW in request.headers.get("accept", "")
    body = await read_body(request)
    bounds = decode_bounds(request) if kind == codecs.ARROW else None

    def decode(features: list[Feature]) -> Rows:
        if bounds is not None:
            return codecs.decode(body, codecs.ARROW, bounds)
        return v1.decode(body, names(features), records=True)

    scored = await score(request, ref, decode, len(body), as_rows=not as_arrow)
    if as_arrow:
        return Response(codecs.encode(scored.table, codecs.ARROW), media_type=codecs.ARROW)
    version = scored.predictor.version
    answer = v1.encode(scored.table, version.name, version.version, scored.rows)
    return Response(answer, media_type=codecs.JSON)


@router.get("/v1/models", dependencies=[Depends(require_admin)])
async def list_models(request: Request) -> dict[str, Any]:
    """Every registered model, its versions and aliases (a listing: the admin token)."""
    registry: Registry = request.app.state.registry

    def listing() -> list[dict[str, Any]]:
        return [
            {"name": n, "versions": registry.version_numbers(n), "aliases": registry.aliases(n)}
            for n in registry.models()
        ]

    return {"models": await run_in_threadpool(listing)}


@router.get("/v1/models/{ref}")
async def describe(ref: str, request: Request) -> dict[str, Any]:
    registry: Registry = request.app.state.registry
    mv = await run_in_threadpool(registry.get, ref)
    loaded = registry.cache.entry((mv.name, mv.version)) is not None
    return {**mv.model_dump(mode="json"), "ready": loaded}
