"""Model repository control: load and unload models, and move aliases, over HTTP.

Three protocols' routes, one cache (the registry's):

- Open Inference Protocol repository extension (Triton, KServe, MLServer):
  ``POST /v2/repository/index``, ``POST /v2/repository/models/{name}/load|unload``.
- SageMaker's multi-model endpoint container contract: ``GET|POST /models``,
  ``GET|DELETE /models/{name}``, ``POST /models/{name}/invoke``.
- Registry aliases: ``PUT|DELETE /v1/models/{name}/aliases/{alias}``.

Changing routes need the admin token (and are off without one). The index is read-only,
like ``GET /v1/models``, and so is guarded like the model routes: by the API key when one is
set. ``/models/{name}/invoke`` predicts, so it needs the API key, not the admin token.

A multi-model endpoint's ``model_name`` is SageMaker's opaque key: it is kept with the
version its ``url`` (a model reference; empty means ``model_name`` itself) resolved to when
loaded. That bookkeeping is per server process, like the cache. The cache may drop the
version later (LRU, idle eviction): the name stays listed and its next invoke loads it
again, as SageMaker expects of a model it was told is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from serving.errors import MMServeError, ModelAlreadyLoaded, ModelNotFound, ModelNotLoaded
from serving.http import _openapi, sagemaker
from serving.http._auth import require_admin
from serving.http._body import read_body
from serving.refs import validate_name
from serving.registry import Registry

router = APIRouter()
_ADMIN = [Depends(require_admin)]
Key = tuple[str, int]  # a cache key: (name, version)
M = TypeVar("M", bound=BaseModel)


def _registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


def _ref(key: Key) -> str:
    return f"{key[0]}:{key[1]}"


async def _parsed(request: Request, model: type[M]) -> M:
    """The JSON body as ``model`` (an empty body is ``{}``). Read here, not by FastAPI from
    the signature: FastAPI reads a declared body before the auth dependency runs, and
    without a limit; this reads it after, within ``max_payload_bytes``."""
    body = await read_body(request)
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as err:
        errors = err.errors(include_url=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


def _body_of(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads ``model`` with :func:`_parsed`."""
    schema = {"schema": model.model_json_schema()}
    return {"requestBody": {"required": required, "content": {"application/json": schema}}}


# -- Open Inference Protocol repository extension --------------------------------------------


class IndexRequest(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    ready: bool = False
    """Only list the models that are ready (loaded)."""


class IndexEntry(BaseModel):
    name: str
    version: str
    state: Literal["READY", "UNAVAILABLE"]
    reason: str


@router.post(
    "/v2/repository/index",
    tags=["repository"],
    summary="Repository index (V2)",
    openapi_extra=_body_of(IndexRequest, required=False),
)
async def repository_index(request: Request) -> list[IndexEntry]:
    """Every registered model with the version a bare name resolves to: ``READY`` when that
    version is loaded, else ``UNAVAILABLE``. ``{"ready": true}`` lists only the ready ones."""
    ready_only = (await _parsed(request, IndexRequest)).ready
    entries = await run_in_threadpool(_index, _registry(request))
    return [e for e in entries if e.state == "READY" or not ready_only]


def _index(registry: Registry) -> list[IndexEntry]:
    return [_index_entry(registry, name) for name in registry.models()]


def _index_entry(registry: Registry, name: str) -> IndexEntry:
    try:
        _, version = registry.resolve(name)
    except MMServeError as err:  # e.g. an alias aimed at a version deleted meanwhile
        return IndexEntry(name=name, version="", state="UNAVAILABLE", reason=err.message)
    if registry.cache.entry((name, version)) is None:
        return IndexEntry(name=name, version=str(version), state="UNAVAILABLE", reason="unloaded")
    return IndexEntry(name=name, version=str(version), state="READY", reason="")


@router.post(
    "/v2/repository/models/{name}/load",
    tags=["repository"],
    summary="Load a model (V2)",
    dependencies=_ADMIN,
)
async def repository_load(name: str, request: Request) -> dict[str, Any]:
    """Load the version the bare name resolves to; a loaded one is dropped and loaded again
    from the store (integrity-checked anew). 404 for an unknown model, 507 for one bigger
    than the whole model cache."""
    registry = _registry(request)

    def reload() -> None:
        key = registry.resolve(validate_name(name))
        registry.cache.discard(key)
        registry.load(_ref(key))

    await run_in_threadpool(reload)
    return {}


@router.post(
    "/v2/repository/models/{name}/unload",
    tags=["repository"],
    summary="Unload a model (V2)",
    dependencies=_ADMIN,
)
async def repository_unload(name: str, request: Request) -> dict[str, Any]:
    """Drop every loaded version of the model (the next request loads it again)."""
    registry = _registry(request)

    def unload() -> None:
        validate_name(name)
        dropped = registry.cache.discard_where(lambda key: _is_version_of(key, name))
        if not dropped and not registry.version_numbers(name):
            raise ModelNotFound(name)

    await run_in_threadpool(unload)
    return {}


def _is_version_of(key: object, name: str) -> bool:
    return isinstance(key, tuple) and len(key) == 2 and key[0] == name


# -- SageMaker multi-model endpoint ------------------------------------------------------------


@dataclass
class _Endpoint:
    """The multi-model endpoint's bookkeeping: ``model_name`` -> the version loaded for it."""

    loaded: dict[str, Key] = field(default_factory=dict)
    loading: dict[str, str] = field(default_factory=dict)  # model_name -> reference asked


def _endpoint(request: Request) -> _Endpoint:
    # Only touched on the event loop thread, so needs no lock.
    state = request.app.state
    if not hasattr(state, "multi_model_endpoint"):
        state.multi_model_endpoint = _Endpoint()
    endpoint: _Endpoint = state.multi_model_endpoint
    return endpoint


class LoadModelRequest(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    model_name: str
    """SageMaker's key for the model; later routes name it in their path."""
    url: str = ""
    """A model reference (``churn``, ``churn:3``, ``churn@staging``); empty: ``model_name``."""


class LoadedModel(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    modelName: str
    modelUrl: str
    """The version loaded, as ``name:version``."""


class LoadedModels(BaseModel):
    models: list[LoadedModel]
    nextPageToken: str | None = None


def _described(name: str, key: Key) -> LoadedModel:
    return LoadedModel(modelName=name, modelUrl=_ref(key))


@router.get(
    "/models",
    tags=["sagemaker"],
    summary="List loaded models (SageMaker)",
    dependencies=_ADMIN,
    response_model_exclude_none=True,
)
async def list_loaded(
    request: Request,
    next_page_token: str | None = None,
    max_results: Annotated[int | None, Query(ge=1)] = None,
) -> LoadedModels:
    """The loaded models by name; with ``max_results``, a page of them and the
    ``nextPageToken`` to pass as ``next_page_token`` for the next."""
    loaded = _endpoint(request).loaded
    names = sorted(n for n in loaded if next_page_token is None or n > next_page_token)
    page = names[:max_results] if max_results else names
    token = page[-1] if len(page) < len(names) else None
    return LoadedModels(models=[_described(n, loaded[n]) for n in page], nextPageToken=token)


@router.post(
    "/models",
    tags=["sagemaker"],
    summary="Load a model (SageMaker)",
    dependencies=_ADMIN,
    openapi_extra=_body_of(LoadModelRequest),
)
async def load(request: Request) -> LoadedModel:
    """Load the model ``url`` names and keep it as ``model_name``: 409 if that name is
    loaded, 404 for an unknown model, 507 for one bigger than the whole model cache."""
    body = await _parsed(request, LoadModelRequest)
    name = validate_name(body.model_name, "model_name")
    ref = body.url or name
    endpoint = _endpoint(request)
    if name in endpoint.loaded:
        raise ModelAlreadyLoaded(name, _ref(endpoint.loaded[name]))
    if name in endpoint.loading:
        raise ModelAlreadyLoaded(name, endpoint.loading[name])
    endpoint.loading[name] = ref
    try:
        predictor = await run_in_threadpool(_registry(request).load, ref)
    finally:
        del endpoint.loading[name]
    key = (predictor.version.name, predictor.version.version)
    endpoint.loaded[name] = key
    return _described(name, key)


@router.get(
    "/models/{name}",
    tags=["sagemaker"],
    summary="Describe a loaded model (SageMaker)",
    dependencies=_ADMIN,
)
async def describe_loaded(name: str, request: Request) -> LoadedModel:
    """The loaded model ``name``; 404 if it is not loaded."""
    key = _endpoint(request).loaded.get(name)
    if key is None:
        raise ModelNotLoaded(name)
    return _described(name, key)


@router.delete(
    "/models/{name}", tags=["sagemaker"], summary="Unload a model (SageMaker)", dependencies=_ADMIN
)
async def unload(name: str, request: Request) -> dict[str, Any]:
    """Unload the model ``name``; 404 if it is not loaded. Its version leaves the cache
    unless another loaded name holds it too."""
    loaded = _endpoint(request).loaded
    key = loaded.pop(name, None)
    if key is None:
        raise ModelNotLoaded(name)
    if key not in loaded.values():
        _registry(request).cache.discard(key)
    return {}


@router.post(
    "/models/{name}/invoke",
    tags=["sagemaker"],
    summary="Invoke a loaded model (SageMaker multi-model endpoint)",
    openapi_extra={"requestBody": _openapi.SAGEMAKER_INVOCATIONS["requestBody"]},
    responses=_openapi.SAGEMAKER_RESPONSES,
)
async def invoke(name: str, request: Request) -> Response:
    """``/invocations`` with the model ``name`` as target: the version loaded as ``name``,
    else ``name`` taken as a model reference (loaded on first use)."""
    key = _endpoint(request).loaded.get(name)
    return await sagemaker.invocations(_targeting(request, _ref(key) if key else name))


def _targeting(request: Request, ref: str) -> Request:
    """``request`` with its target-model header set to ``ref``: /invocations reads its target
    from there, so this route reuses it whole (formats, Accept, SageMaker's error codes)."""
    target = sagemaker.TARGET_MODEL.encode()
    headers = [(k, v) for k, v in request.scope["headers"] if k != target]
    request.scope.setdefault("state", {})  # shared: what scoring learns reaches the middleware
    scope = {**request.scope, "headers": [*headers, (target, ref.encode())]}
    return Request(scope, request.receive)


# -- registry aliases --------------------------------------------------------------------------


class AliasChange(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    version: int = Field(ge=1)
    """The version the alias points at from now on."""
    force: bool = False
    """Point a protected alias (``production``) at a version that is not approved."""


class Aliases(BaseModel):
    name: str
    aliases: dict[str, int]


@router.put(
    "/v1/models/{name}/aliases/{alias}",
    tags=["registry"],
    summary="Point an alias at a version",
    dependencies=_ADMIN,
    openapi_extra=_body_of(AliasChange),
)
async def set_alias(name: str, alias: str, request: Request) -> Aliases:
    """Point ``alias`` at a version (409 for a protected alias and an unapproved version,
    unless forced). This server answers from the new version at once; other processes
    within ``MMSERVE_REGISTRY__ALIAS_TTL_S``."""
    change = await _parsed(request, AliasChange)
    registry = _registry(request)

    def change_alias() -> dict[str, int]:
        registry.set_alias(name, alias, change.version, force=change.force)
        return registry.aliases(name)

    return Aliases(name=name, aliases=await run_in_threadpool(change_alias))


@router.delete(
    "/v1/models/{name}/aliases/{alias}",
    tags=["registry"],
    summary="Remove an alias",
    dependencies=_ADMIN,
)
async def remove_alias(name: str, alias: str, request: Request) -> Aliases:
    """Remove ``alias``; a bare name without ``production`` then means the newest version."""
    registry = _registry(request)

    def remove() -> dict[str, int]:
        if not registry.version_numbers(validate_name(name)):
            raise ModelNotFound(name)
        registry.remove_alias(name, validate_name(alias, "alias"))
        return registry.aliases(name)

    return Aliases(name=name, aliases=await run_in_threadpool(remove))
