"""``create_app``: the one place the HTTP front end is wired to the registry."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

import serving
from serving.errors import MMServeError
from serving.http import health, multimodel, repository, sagemaker, v1, v2
from serving.http._auth import SECURITY_SCHEMES
from serving.http._dataplane import DataPlane
from serving.http._errors import error_response, unexpected_response
from serving.http._fastlane import FastLane
from serving.http._metrics import Metrics
from serving.http._middleware import RequestContext
from serving.registry import Registry
from serving.settings import Settings


def create_app(settings: Settings | None = None, registry: Registry | None = None) -> FastAPI:
    """The application; with no arguments, settings come from the environment."""
    settings = settings or Settings()
    registry = registry or Registry.from_settings(settings)
    metrics = Metrics(loaded_models=lambda: len(registry.cache.keys()))
    dataplane = DataPlane(registry, settings, metrics)
    otel = settings.opentelemetry
    app = FastAPI(
        title="mmserve",
        version=serving.__version__,
        lifespan=_lifespan,
        telemetry={"tracing": otel, "metrics": otel, "logs": otel},
    )
    app.state.settings = settings
    app.state.registry = registry
    app.state.metrics = metrics
    app.state.dataplane = dataplane
    lane = FastLane(
        [*v1.router.routes, *v2.router.routes, *sagemaker.router.routes],
        [v1.predict, v2.infer, sagemaker.invocations],
    )
    app.add_middleware(RequestContext, metrics=metrics, settings=settings, lane=lane)
    routers = [health, v1, v2, sagemaker, repository, multimodel]
    for router in (module.router for module in routers):
        # The routes themselves, not include_router: FastAPI re-checks every included
        # router's routes on each request, which cost the predict path ~40 us.
        app.router.routes.extend(router.routes)
    if settings.api_key is not None:
        _declare_api_key(app)
    _add_error_handlers(app)
    return app


def _declare_api_key(app: FastAPI) -> None:
    """State in the spec that the API key is the default security (the middleware checks it;
    management routes state their admin token themselves)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        spec = build()
        schemes = spec.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes.update(SECURITY_SCHEMES)
        spec["security"] = [{name: []} for name in SECURITY_SCHEMES]
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Warm the provisioned models and, when serverless, unload idle ones, in the background."""
    dataplane: DataPlane = app.state.dataplane
    # Everything imported and built so far lives as long as the server: out of the
    # collector's way, so no full collection walks it (pauses of tens of ms, seen as p99).
    gc.freeze()
    tasks = [
        asyncio.create_task(dataplane.provision()),
        asyncio.create_task(dataplane.unload_idle_forever()),
    ]
    yield
    for task in tasks:
        task.cancel()


def _add_error_handlers(app: FastAPI) -> None:
    """Every failure becomes ``{"error": message}`` with its status; never a stack trace."""

    @app.exception_handler(MMServeError)
    async def mmserve_error(request: Request, err: MMServeError) -> JSONResponse:
        return error_response(request, err, err.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        return JSONResponse({"error": problems}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        return JSONResponse({"error": err.detail}, status_code=err.status_code, headers=err.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> JSONResponse:
        return unexpected_response(request, err)
