"""Errors as HTTP answers: ``{"error": message}``, never a stack trace."""

from __future__ import annotations

import logging
import uuid

from fastapi import Request
from fastapi.responses import JSONResponse

from serving.errors import MMServeError, ModelError

log = logging.getLogger("mmserve.http")


def error_response(request: Request, err: MMServeError, status: int) -> JSONResponse:
    """``{"error": message}`` (and an ``error_id`` to find a model failure in the log), with
    ``Retry-After`` when the error says when to try again; counted by kind in the metrics."""
    request.app.state.metrics.errors.labels(type(err).__name__).inc()
    body = {"error": err.message}
    if isinstance(err, ModelError):
        body["error_id"] = log_failure(request, err)
    headers = {"retry-after": str(err.retry_after)} if err.retry_after is not None else None
    return JSONResponse(body, status_code=status, headers=headers)


def unexpected_response(request: Request, err: Exception) -> JSONResponse:
    """A failure nobody foresaw: 500 with an error id, the traceback only in the log."""
    request.app.state.metrics.errors.labels(type(err).__name__).inc()
    return JSONResponse(
        {"error": "internal error; see the server log", "error_id": log_failure(request, err)},
        status_code=500,
    )


def log_failure(request: Request, err: BaseException) -> str:
    """Log ``err`` with its traceback under a new error id (and the request's id)."""
    error_id = uuid.uuid4().hex
    log.error(
        "error %s on %s %s (request %s)",
        error_id,
        request.method,
        request.url.path,
        getattr(request.state, "request_id", None),
        exc_info=err,
    )
    return error_id
