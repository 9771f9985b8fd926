"""``create_app``: the one place the HTTP front end is wired to the registry."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

import serving
import serving.grpc
from serving import tracing
from serving.endpoints.catalog import Endpoints
from serving.errors import MissingPackage, MMServeError
from serving.http import (
    batch,
    console,
    endpoints,
    health,
    jobs,
    multimodel,
    precomputed,
    repository,
    sagemaker,
    v1,
    v2,
)
from serving.http._auth import SECURITY_SCHEMES, needs_key
from serving.http._dataplane import DataPlane
from serving.http._endpoints import EndpointPlane
from serving.http._errors import error_response, unexpected_response
from serving.http._fastlane import FastLane
from serving.http._follow import EndpointCollector, Follower
from serving.http._history import History
from serving.http._metrics import Metrics
from serving.http._middleware import RequestContext
from serving.http._openapi import declare_errors
from serving.http._overview import RecentJobs
from serving.registry import Registry
from serving.settings import Settings
from workers import job_runner
from workers.queue import LocalQueue
from workers.runner import Runner

log = logging.getLogger("mmserve.http")


def create_app(settings: Settings | None = None, registry: Registry | None = None) -> FastAPI:
    """The application; with no arguments, settings come from the environment."""
    settings = settings or Settings()
    if settings.grpc_port is not None and not serving.grpc.available():
        raise MissingPackage("MMSERVE_GRPC_PORT", "extra", "grpc", "pip install 'mmserve[grpc]'")
    registry = registry or Registry.from_settings(settings)
    metrics = Metrics(loaded_models=lambda: len(registry.cache.keys()))
    dataplane = DataPlane(registry, settings, metrics)
    otel = settings.opentelemetry
    app = _App(
        title="mmserve",
        version=serving.__version__,
        lifespan=_lifespan,
        # Exporters are set up by serving.tracing, once: FastAPI's own (FASTAPI_OTEL_AUTO_CONFIGURE)
        # would add a second to the same provider, and every span would be sent twice.
        telemetry={"tracing": otel, "metrics": otel, "logs": otel, "auto_configure": False},
    )
    app.state.tracer = tracing.tracer(settings)
    app.state.settings = settings
    app.state.registry = registry
    app.state.metrics = metrics
    app.state.dataplane = dataplane
    app.state.jobs = job_runner(settings, registry)
    app.state.online = precomputed.Online(settings.redis)
    metrics.watch_jobs(app.state.jobs.queue)
    app.state.endpoints = EndpointPlane(dataplane, Endpoints(registry.store), settings, metrics)
    app.state.endpoint_follower = Follower(app.state.endpoints)
    metrics.watch(EndpointCollector(app.state.endpoints))
    app.state.history = History(metrics)  # the console's plots
    app.state.recent_jobs = RecentJobs(app.state.jobs.jobs, app.state.jobs.queue)
    lane = FastLane(
        [
            *v1.router.routes,
            *v2.router.routes,
            *sagemaker.router.routes,
            *precomputed.router.routes,
            *endpoints.router.routes,
        ],
        [
            v1.predict,
            v2.infer,
            sagemaker.invocations,
            precomputed.precomputed,
            endpoints.invocations,
            endpoints.predict,
            endpoints.infer,
        ],
    )
    app.front = RequestContext(app.inner, metrics=metrics, settings=settings, lane=lane)
    routers = [health, v1, v2, sagemaker, jobs, batch, precomputed, repository, multimodel]
    routers += [endpoints, console]
    for router in (module.router for module in routers):
        # The routes themselves, not include_router: FastAPI re-checks every included
        # router's routes on each request, which cost the predict path ~40 us.
        app.router.routes.extend(router.routes)
    console.mount(app)
    _document(app, api_key=settings.api_key is not None)
    _add_error_handlers(app)
    return app


class _App(FastAPI):
    """FastAPI with the request context in front of its whole stack rather than inside it
    (where ``add_middleware`` puts it): the predict requests it answers itself skip the
    error, telemetry and body-limit layers, a tenth of a one-row request. The rest go
    through the whole stack as usual."""

    front: RequestContext

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self  # as Starlette sets it: routes find the state through it
        await self.front(scope, receive, send)

    async def inner(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)


def _document(app: FastAPI, api_key: bool) -> None:
    """Complete the spec FastAPI builds: the error answers of every route and, with an API
    key, that the key is the default security (the middleware checks it; management routes
    state their admin token themselves)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = declare_errors(build(), lambda path: not needs_key(path), api_key)
        if api_key:
            schemes = spec.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes.update(SECURITY_SCHEMES)
            spec["security"] = [{name: []} for name in SECURITY_SCHEMES]
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Warm the provisioned models and, when serverless, unload idle ones, in the background."""
    dataplane: DataPlane = app.state.dataplane
    runner: Runner = app.state.jobs
    follower: Follower = app.state.endpoint_follower
    # Everything imported and built so far lives as long as the server: out of the
    # collector's way, so no full collection walks it (pauses of tens of ms, seen as p99).
    gc.freeze()
    tasks = [
        asyncio.create_task(dataplane.provision()),
        asyncio.create_task(dataplane.unload_idle_forever()),
        asyncio.create_task(app.state.history.sample_forever()),
    ]
    if isinstance(runner.queue, LocalQueue):  # embedded mode: this process sweeps its jobs
        tasks.append(asyncio.create_task(_sweep_forever(runner)))
    await follower.start()  # endpoints file applied and the store read before any request
    grpc_server = await _start_grpc(app) if app.state.settings.grpc_port is not None else None
    yield
    if grpc_server is not None:
        await grpc_server.stop(_GRPC_GRACE_S)
    await follower.stop()  # shadows finished, captured rows written
    for task in tasks:
        task.cancel()
    if isinstance(runner.queue, LocalQueue):
        runner.queue.close()


_GRPC_GRACE_S = 5.0
"""How long a stopping gRPC server lets the RPCs in flight finish."""


async def _start_grpc(app: FastAPI) -> Any:
    """The gRPC server beside HTTP, over the same planes (imported here: grpc is an extra)."""
    from serving.grpc.server import start

    return await start(app.state.dataplane, app.state.endpoints, app.state.metrics)


async def _sweep_forever(runner: Runner) -> None:
    """Embedded mode's beat: the sweep, at start (jobs a stopped server left) and then
    every ``sweep_interval_s``."""
    while True:
        try:
            await asyncio.to_thread(runner.sweep)
        except Exception:
            log.exception("the job sweep failed; trying again later")
        await asyncio.sleep(runner.settings.sweep_interval_s)


def _add_error_handlers(app: FastAPI) -> None:
    """Every failure becomes ``{"error": message}`` with its status; never a stack trace."""

    @app.exception_handler(MMServeError)
    async def mmserve_error(request: Request, err: MMServeError) -> JSONResponse:
        return error_response(request, err)

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
