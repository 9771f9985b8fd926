"""``create_app``: the one place the HTTP front end is wired to the registry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

import serving
from serving.errors import MMServeError
from serving.http import health, repository, sagemaker, v1, v2
from serving.http._auth import require_api_key
from serving.http._dataplane import DataPlane
from serving.http._errors import error_response, log_failure
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
    app = FastAPI(title="mmserve", version=serving.__version__, lifespan=_lifespan)
    app.state.settings = settings
    app.state.registry = registry
    app.state.metrics = metrics
    app.state.dataplane = dataplane
    app.add_middleware(RequestContext, metrics=metrics)
    app.include_router(health.router)
    keyed = [Depends(require_api_key)]  # MMSERVE_API_KEY, when set; health stays open
    app.include_router(v1.router, dependencies=keyed)
    app.include_router(v2.router, dependencies=keyed)
    app.include_router(sagemaker.router, dependencies=keyed)
    app.include_router(repository.router)  # guards each of its routes itself
    _add_error_handlers(app)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Warm the provisioned models and, when serverless, unload idle ones, in the background."""
    dataplane: DataPlane = app.state.dataplane
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
        request.app.state.metrics.errors.labels(type(err).__name__).inc()
        return JSONResponse(
            {"error": "internal error; see the server log", "error_id": log_failure(request, err)},
            status_code=500,
        )
