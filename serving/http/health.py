"""Liveness and readiness: Open Inference Protocol names, and SageMaker's ``/ping``."""

from __future__ import annotations

from fastapi import APIRouter, Response

import serving

router = APIRouter(tags=["health"])


@router.get("/v2/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/v2/health/ready")
async def ready() -> dict[str, bool]:
    return {"ready": True}


@router.get("/ping")
async def ping() -> Response:
    return Response(status_code=200)


@router.get("/v2")
async def server_metadata() -> dict[str, object]:
    return {"name": "mmserve", "version": serving.__version__, "extensions": []}
