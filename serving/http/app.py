"""``create_app``: the one place the HTTP front end is wired to the registry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.routing import Route

import serving
from serving.errors import MMServeError
from serving.http import health, repository, sagemaker, v1, v2
from serving.http._auth import SECURITY_SCHEMES
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
    app.add_middleware(RequestContext, metrics=metrics, settings=settings)
    app.router.routes.extend(_lean(v1.predict, v2.infer, sagemaker.invocations))
    for router in (health.router, v1.router, v2.router, sagemaker.router, repository.router):
        # The routes themselves, not include_router: FastAPI re-checks every included
        # router's routes on each request, which cost the predict path ~40 us.
        app.router.routes.extend(router.routes)
    if settings.api_key is not None:
        _declare_api_key(app)
    _add_error_handlers(app)
    return app


def _lean(*endpoints: Callable[..., Awaitable[Response]]) -> list[Route]:
    """Plain Starlette routes for the predict endpoints, matched before their FastAPI routes.

    These endpoints take only path parameters and the request (they read their bodies
    themselves, in several media types), so FastAPI's per-request work (dependency
    solving, two exit stacks) does nothing for them but cost ~35 us, a fifth of a one-row
    request. The FastAPI routes stay, and document them in the OpenAPI spec."""

    def lean(route: APIRoute) -> Route:
        async def endpoint(request: Request) -> Response:
            request.scope["route"] = route  # FastAPI's router only notes its own routes
            return await route.endpoint(request=request, **request.path_params)

        return Route(route.path, endpoint, methods=list(route.methods or ()), name=route.name)

    routers = (v1.router, v2.router, sagemaker.router)
    hot = [r for router in routers for r in router.routes if isinstance(r, APIRoute)]
    return [lean(route) for route in hot if route.endpoint in endpoints]


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
