"""SageMaker's inference container contract: ``GET /ping`` (in health) and
``POST /invocations``, with ``X-Amzn-SageMaker-Target-Model`` for multi-model endpoints.

Errors follow SageMaker's codes: 400 for a request that does not fit, 424 when the model
itself failed, 404 for an unknown model, 415 for a format it does not take, 503 (with
Retry-After) when the model or the server is at its concurrency limit.
"""

from __future__ import annotations

from http import HTTPStatus

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from serving import codecs
from serving.codecs import media_type, sagemaker
from serving.errors import InputError, InvalidName, MMServeError, ModelError, Overloaded
from serving.http import _openapi
from serving.http._body import read_body, score
from serving.http._errors import error_response
from serving.registry import Registry

router = APIRouter(tags=["sagemaker"])
TARGET_MODEL = "x-amzn-sagemaker-target-model"


@router.post(
    "/invocations",
    summary="Invoke (SageMaker)",
    openapi_extra=_openapi.SAGEMAKER_INVOCATIONS,
    responses=_openapi.SAGEMAKER_RESPONSES,
)
async def invocations(request: Request) -> Response:
    try:
        kind = media_type(request.headers.get("content-type"), codecs.CSV, sagemaker.ACCEPTED)
        answer = media_type(request.headers.get("accept"), kind, sagemaker.ACCEPTED)
        body = await read_body(request)
        ref = await _target(request)
        scored = await score(request, ref, lambda f: sagemaker.decode(body, kind, f), len(body))
    except MMServeError as err:
        return error_response(request, err, _status(err))
    return Response(
        sagemaker.encode(scored.table, answer),
        media_type=answer,
        headers={"x-mmserve-model": scored.predictor.ref},
    )


async def _target(request: Request) -> str:
    """The model the request names, else the only registered model."""
    target = request.headers.get(TARGET_MODEL)
    if target:
        return target.removesuffix(".tar.gz")  # SageMaker MME names artifacts model.tar.gz
    registry: Registry = request.app.state.registry
    models = await run_in_threadpool(registry.models)
    if len(models) != 1:
        raise InvalidName(
            "target model", "", f"name one of {models} in X-Amzn-SageMaker-Target-Model"
        )
    return models[0]


def _status(err: MMServeError) -> int:
    if isinstance(err, ModelError):
        return HTTPStatus.FAILED_DEPENDENCY  # 424: SageMaker's "the model failed"
    if isinstance(err, InputError) and err.status == HTTPStatus.UNPROCESSABLE_ENTITY:
        return HTTPStatus.BAD_REQUEST
    if isinstance(err, Overloaded):
        return HTTPStatus.SERVICE_UNAVAILABLE  # 503: SageMaker's "overloaded", Retry-After kept
    return err.status
