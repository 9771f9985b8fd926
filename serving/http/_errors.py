"""Errors as HTTP answers: ``{"error": message}``, never a stack trace.

On SageMaker's routes (its runtime API, which boto3's ``sagemaker-runtime`` calls, and its
container contract) the answer is also SageMaker's, what its SDKs parse: the error type in
``X-Amzn-ErrorType`` and ``__type``, the text in ``message``, SageMaker's status, and for a
``ModelError`` the status and message the failure had here (``OriginalStatusCode``,
``OriginalMessage``):

    mmserve                                 SageMaker
    ModelError (the model raised)           424 ModelError
    RequestTimeout                          424 ModelError (a container past its time)
    ModelLoading                            429 ModelNotReadyException (with Retry-After)
    Overloaded, other 503s                  503 ServiceUnavailable
    other 5xx, unexpected failures          their status, InternalFailure
    InputError (422)                        400 ValidationError
    other 4xx (404, 413, 415, ...)          their status, ValidationError
"""

from __future__ import annotations

import logging
import uuid
from http import HTTPStatus
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from serving.errors import MMServeError, ModelError, ModelLoading, Overloaded, RequestTimeout

log = logging.getLogger("mmserve.http")

SAGEMAKER_ROUTES = frozenset(
    [
        "/invocations",
        "/models/{name}/invoke",
        "/endpoints/{name}/invocations",
        "/endpoints/{name}/async-invocations",
        "/v1/endpoints/{name}/invocations",
    ]
)
"""The routes whose errors are SageMaker's (by their path templates)."""


def error_response(request: Request, err: MMServeError) -> JSONResponse:
    """``{"error": message}`` with the error's status (and an ``error_id`` to find a model
    failure in the log), with ``Retry-After`` when the error says when to try again;
    SageMaker's answer on its routes. Counted by kind in the metrics."""
    request.app.state.metrics.errors.labels(type(err).__name__).inc()
    body: dict[str, Any] = {"error": err.message}
    if isinstance(err, ModelError):
        body["error_id"] = log_failure(request, err)
    headers = {"retry-after": str(err.retry_after)} if err.retry_after is not None else {}
    status = int(err.status)
    if _is_sagemaker(request):
        status, kind = sagemaker_error(err)
        body |= _sagemaker_body(kind, err.message)
        if kind == "ModelError":
            body |= {"OriginalStatusCode": int(err.status), "OriginalMessage": err.message}
        headers["x-amzn-errortype"] = kind
    return JSONResponse(body, status_code=status, headers=headers)


def unexpected_response(request: Request, err: Exception) -> JSONResponse:
    """A failure nobody foresaw: 500 with an error id, the traceback only in the log."""
    request.app.state.metrics.errors.labels(type(err).__name__).inc()
    message = "internal error; see the server log"
    body: dict[str, Any] = {"error": message, "error_id": log_failure(request, err)}
    headers = {}
    if _is_sagemaker(request):
        body |= _sagemaker_body("InternalFailure", message)
        headers["x-amzn-errortype"] = "InternalFailure"
    return JSONResponse(body, status_code=500, headers=headers)


def sagemaker_error(err: MMServeError) -> tuple[int, str]:
    """The status and error type SageMaker's runtime answers ``err`` with (the table above)."""
    if isinstance(err, ModelError | RequestTimeout):
        return HTTPStatus.FAILED_DEPENDENCY, "ModelError"
    if isinstance(err, ModelLoading):
        return HTTPStatus.TOO_MANY_REQUESTS, "ModelNotReadyException"
    if isinstance(err, Overloaded) or err.status == HTTPStatus.SERVICE_UNAVAILABLE:
        return HTTPStatus.SERVICE_UNAVAILABLE, "ServiceUnavailable"
    if err.status >= HTTPStatus.INTERNAL_SERVER_ERROR:
        return err.status, "InternalFailure"
    if err.status == HTTPStatus.UNPROCESSABLE_ENTITY:
        return HTTPStatus.BAD_REQUEST, "ValidationError"
    return err.status, "ValidationError"


def _is_sagemaker(request: Request) -> bool:
    return getattr(request.scope.get("route"), "path", None) in SAGEMAKER_ROUTES


def _sagemaker_body(kind: str, message: str) -> dict[str, Any]:
    # botocore reads the type from the header (else __type), the text from message.
    return {"message": message, "__type": kind}


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
