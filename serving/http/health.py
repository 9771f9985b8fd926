"""Liveness, readiness and metrics: Open Inference Protocol names, SageMaker's ``/ping``,
Prometheus' ``/metrics``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

import serving
from serving.errors import without_credentials
from serving.http import _metrics
from serving.http._dataplane import DataPlane

router = APIRouter(tags=["health"])


@router.get("/")
async def root_live() -> dict[str, str]:
    """KServe V1's liveness (the KServe SDK's ``is_server_live``): the process answers."""
    return {"status": "alive"}


@router.get("/v2/health/live")
async def live() -> dict[str, bool]:
    """The server process answers."""
    return {"live": True}


@router.get("/v2/health/ready", responses={503: {"description": "nothing can be served"}})
async def ready(request: Request) -> JSONResponse:
    """Ready (200) when this server can answer predictions: its provisioned models are
    loaded, and the store answers or, while it is away, some model is still loaded (those
    keep answering: by version, and by reference for ``stale_resolution_s``). Else 503, so a
    load balancer sends nothing here that only a 503 would answer. The body says what can
    be served and how the store is: ``store.available``, its last ``error``, the loaded
    ``models`` and, while the store is away, the ``references`` served stale."""
    report = await readiness(request.app.state.dataplane)
    return JSONResponse(report, status_code=200 if report["ready"] else 503)


@router.get(
    "/ping",
    response_class=Response,  # no body: SageMaker reads the status alone
    responses={
        200: {"description": "ready", "content": None},
        503: {"description": "nothing can be served"},
    },
)
async def ping(request: Request) -> Response:
    """SageMaker's health check: 200 when ready (as ``/v2/health/ready``)."""
    report = await readiness(request.app.state.dataplane)
    return Response(status_code=200 if report["ready"] else 503)


async def readiness(dataplane: DataPlane) -> dict[str, Any]:
    """What ``/v2/health/ready`` answers (gRPC's ``ServerReady`` too): ``ready`` and why."""
    registry = dataplane.registry
    store = await dataplane.store_check.first()
    keys = registry.cache.keys()  # (name, version)
    loaded = sorted(f"{k[0]}:{k[1]}" for k in keys if isinstance(k, tuple))
    report: dict[str, Any] = {
        "ready": dataplane.provisioned and (store.available or bool(loaded)),
        "store": {
            "url": without_credentials(registry.store.url),
            "available": store.available,
            "checked_s": round(store.checked_s, 3),
            "error": store.error,
        },
        "models": loaded,
    }
    if not store.available:
        report["references"] = {
            ref: {"model": f"{key[0]}:{key[1]}", "stale_s": round(age, 3)}
            for ref, (key, age) in sorted(registry.servable_references().items())
            if registry.cache.entry(key) is not None
        }
    return report


@router.get("/v2")
async def server_metadata() -> dict[str, object]:
    return {"name": "mmserve", "version": serving.__version__, "extensions": ["model_repository"]}


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus metrics, gathered off the event loop: the jobs' figures are Redis round
    trips (a broker that hangs would stall every request for its timeouts) and, with
    ``--workers``, every process's counters are files to read."""
    body = await run_in_threadpool(request.app.state.metrics.render)
    return Response(body, media_type=_metrics.CONTENT_TYPE)
