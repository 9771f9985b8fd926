"""SageMaker's inference container contract: ``GET /ping`` (in health) and
``POST /invocations``, with ``X-Amzn-SageMaker-Target-Model`` for multi-model endpoints;
and what the endpoint names of its runtime API stand for here (:func:`as_model`).

Errors are SageMaker's on these routes (:mod:`serving.http._errors`): 400 ValidationError for
a request that does not fit, 424 ModelError when the model itself failed, 429
ModelNotReadyException while it loads, 503 ServiceUnavailable (with Retry-After) at the
concurrency limit; a model that does not exist or a format not taken keep their 404 and 415.
"""

from __future__ import annotations

import pyarrow as pa
from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from serving import codecs
from serving.codecs import media_type, raw, sagemaker
from serving.errors import InvalidName, InvalidReference, ModelNotFound, UnsupportedOperation
from serving.http import _openapi
from serving.http._body import decode_bounds, read_body, score
from serving.http._dataplane import Decode
from serving.http._endpoints import EndpointPlane
from serving.metadata import ModelVersion, names
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
    return await invoke(request, None)


async def invoke(request: Request, ref: str | None) -> Response:
    """Score the body with the model ``ref``; ``None``: the one the target-model header
    names, else the only registered model. A body that is no table (an image, a text) is
    the one row of a model whose one input takes it."""
    body = await read_body(request)
    ref = ref or await _target(request)
    decode, kind = body_decoder(request, body)
    scored = await score(request, ref, decode, len(body))
    content, answer = answer_of(request, scored.table, scored.predictor.version, kind)
    return Response(content, media_type=answer, headers={"x-mmserve-model": scored.predictor.ref})


def body_decoder(request: Request, body: bytes) -> tuple[Decode, str]:
    """How the body becomes rows (a table format, or a raw file or text), and its type."""
    kind = raw.content_type(request.headers.get("content-type"), codecs.CSV, sagemaker.ACCEPTED)
    if kind not in sagemaker.ACCEPTED:
        whole = raw.Raw(body, kind)
        return (lambda _: whole), kind
    bounds = decode_bounds(request)
    return (lambda features: sagemaker.decode(body, kind, names(features), bounds)), kind


def answer_of(
    request: Request, table: pa.Table, version: ModelVersion, kind: str
) -> tuple[bytes, str]:
    """The answer's body and media type: the model's one binary output as it is, when the
    client accepts its media type; else the table in the format ``Accept`` names (by
    default the request's own, or JSON for a raw body)."""
    accept = request.headers.get("accept")
    found = raw.answer(table, version.outputs, version.output_content_types, accept)
    if found is not None:
        return found
    default = kind if kind in sagemaker.ACCEPTED else codecs.JSON
    answer = media_type(accept, default, sagemaker.ACCEPTED)
    return sagemaker.encode(table, answer), answer


async def as_model(request: Request, name: str) -> Response | None:
    """SageMaker's endpoint ``name`` answered by a model when no endpoint ``name`` is applied:
    the model the target-model header names (this server is then a multi-model endpoint, as
    on ``/invocations``), else the model ``name`` (an endpoint of one variant). ``None`` for
    an applied endpoint, whose variants answer: they fix its models, so the header is refused,
    as SageMaker refuses it on an endpoint that is not multi-model. A name that is neither
    is :class:`EndpointNotFound`, naming the endpoints."""
    plane: EndpointPlane = request.app.state.endpoints
    target = request.headers.get(TARGET_MODEL)
    # The snapshot holds every applied endpoint (read every state_ttl_s): no store read here.
    if name not in plane.snapshot and (target or await _is_model(request, name)):
        return await invoke(request, None if target else name)
    served = await plane.served(name)  # one applied since the last read, or 404
    if target:
        variants = ", ".join(v.name for v in served.config.production_variants)
        raise UnsupportedOperation(
            f"X-Amzn-SageMaker-Target-Model {target!r} on endpoint {name!r}",
            f"it is not a multi-model endpoint, its variants ({variants}) fix its models; pin "
            "a variant with X-Amzn-SageMaker-Target-Variant, or invoke the model by its own name",
        )
    return None


async def _is_model(request: Request, ref: str) -> bool:
    """Whether ``ref`` names a registered model (a version or alias it lacks is its 404)."""
    registry: Registry = request.app.state.registry
    if registry.resolved(ref) is not None:
        return True
    try:
        await run_in_threadpool(registry.resolve, ref)
    except (InvalidName, InvalidReference, ModelNotFound):
        return False
    return True


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
