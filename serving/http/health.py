"""Liveness, readiness and metrics: Open Inference Protocol names, SageMaker's ``/ping``,
Prometheus' ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

import serving
from serving.http import _metrics

router = APIRouter(tags=["health"])


@router.get("/v2/health/live")
async def live() -> dict[str, bool]:
    """The server process answers."""
    return {"live": True}


@router.get("/v2/health/ready")
async def ready(request: Request) -> JSONResponse:
    """Ready once the provisioned models are loaded (503 until then); other models load on
    their first request."""
    is_ready = request.app.state.dataplane.provisioned
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@router.get("/ping")
async def ping(request: Request) -> Response:
    """SageMaker's health check: 200 when ready."""
    return Response(status_code=200 if request.app.state.dataplane.provisioned else 503)


@router.get("/v2")
async def server_metadata() -> dict[str, object]:
    return {"name": "mmserve", "version": serving.__version__, "extensions": ["model_repository"]}


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus metrics."""
    return Response(request.app.state.metrics.render(), media_type=_metrics.CONTENT_TYPE)
