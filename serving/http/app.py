"""``create_app``: the one place the HTTP front end is wired to the registry."""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

import serving
from serving.errors import MMServeError, ModelError
from serving.http import health, sagemaker, v1, v2
from serving.registry import Registry
from serving.settings import Settings

log = logging.getLogger("mmserve.http")


def create_app(settings: Settings | None = None, registry: Registry | None = None) -> FastAPI:
    """The application; with no arguments, settings come from the environment."""
    settings = settings or Settings()
    app = FastAPI(title="mmserve", version=serving.__version__)
    app.state.settings = settings
    app.state.registry = registry or Registry.from_settings(settings)
    app.include_router(health.router)
    app.include_router(v1.router)
    app.include_router(v2.router)
    app.include_router(sagemaker.router)
    _add_error_handlers(app)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every failure becomes ``{"error": message}`` with its status; never a stack trace."""

    @app.exception_handler(MMServeError)
    async def mmserve_error(request: Request, err: MMServeError) -> JSONResponse:
        body = {"error": err.message}
        if isinstance(err, ModelError):
            body["error_id"] = _log_failure(request, err)
        return JSONResponse(body, status_code=err.status)

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
        error_id = _log_failure(request, err)
        return JSONResponse(
            {"error": "internal error; see the server log", "error_id": error_id}, status_code=500
        )


def _log_failure(request: Request, err: BaseException) -> str:
    error_id = uuid.uuid4().hex
    log.error("error %s on %s %s", error_id, request.method, request.url.path, exc_info=err)
    return error_id
