"""Model repository control over HTTP: the Open Inference Protocol repository extension
(``POST /v2/repository/index``, ``POST /v2/repository/models/{name}/load|unload``) and
registry aliases (``PUT|DELETE /v1/models/{name}/aliases/{alias}``) and versions
(``DELETE /v1/models/{name}/versions/{version}``, ``PUT …/{version}/approval``).

Every route here needs the admin token (and is off without one): they load, change or list
what is served; the index lists it, like ``GET /v1/models``. SageMaker's multi-model routes
are in :mod:`serving.http.multimodel`.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from serving.endpoints.catalog import Endpoints
from serving.errors import InvalidReference, MMServeError, ModelNotFound
from serving.http import _openapi
from serving.http._auth import require_admin
from serving.http._body import json_body, parsed, registry_of
from serving.metadata import Approval
from serving.refs import ModelRef, validate_name
from serving.registry import Registry

router = APIRouter()
_ADMIN = [Depends(require_admin)]
Key = tuple[str, int]  # a cache key: (name, version)


def _ref(key: Key) -> str:
    return f"{key[0]}:{key[1]}"


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
    dependencies=_ADMIN,
    openapi_extra=json_body(IndexRequest, required=False),
)
async def repository_index(request: Request) -> list[IndexEntry]:
    """Every registered model with the version a bare name resolves to: ``READY`` when that
    version is loaded, else ``UNAVAILABLE``. ``{"ready": true}`` lists only the ready ones."""
    ready_only = (await parsed(request, IndexRequest)).ready
    return await run_in_threadpool(index, registry_of(request), ready_only)


def index(registry: Registry, ready_only: bool = False) -> list[IndexEntry]:
    """The repository index (every protocol's); ``ready_only``: the loaded models alone."""
    entries = [_index_entry(registry, name) for name in registry.models()]
    return [e for e in entries if e.state == "READY" or not ready_only]


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
    await run_in_threadpool(load, registry_of(request), name)
    return {}


def load(registry: Registry, name: str) -> None:
    """Load (again) the version ``name`` resolves to (every protocol's repository load)."""
    key = registry.resolve(validate_name(name))
    registry.cache.discard(key)
    registry.load(_ref(key))


@router.post(
    "/v2/repository/models/{name}/unload",
    tags=["repository"],
    summary="Unload a model (V2)",
    dependencies=_ADMIN,
)
async def repository_unload(name: str, request: Request) -> dict[str, Any]:
    """Drop every loaded version of the model (the next request loads it again)."""
    await run_in_threadpool(unload, registry_of(request), name)
    return {}


def unload(registry: Registry, name: str) -> None:
    """Drop every loaded version of ``name`` (every protocol's repository unload)."""
    validate_name(name)
    dropped = registry.cache.discard_where(lambda key: _is_version_of(key, name))
    if not dropped and not registry.version_numbers(name):
        raise ModelNotFound(name)


def _is_version_of(key: object, name: str) -> bool:
    return isinstance(key, tuple) and len(key) == 2 and key[0] == name


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
    openapi_extra=json_body(AliasChange),
)
async def set_alias(name: str, alias: str, request: Request) -> Aliases:
    """Point ``alias`` at a version (409 for a protected alias and an unapproved version,
    unless forced). This server answers from the new version at once; other processes
    within ``MMSERVE_REGISTRY__ALIAS_TTL_S``."""
    change = await parsed(request, AliasChange)
    registry = registry_of(request)

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
    registry = registry_of(request)

    def remove() -> dict[str, int]:
        if not registry.version_numbers(validate_name(name)):
            raise ModelNotFound(name)
        registry.remove_alias(name, validate_name(alias, "alias"))
        return registry.aliases(name)

    return Aliases(name=name, aliases=await run_in_threadpool(remove))


# -- registry versions -------------------------------------------------------------------------


class Versions(BaseModel):
    name: str
    versions: list[int]


@router.delete(
    "/v1/models/{name}/versions/{version}",
    tags=["registry"],
    summary="Delete a version",
    dependencies=_ADMIN,
    responses={
        409: _openapi.error(
            "An alias or an endpoint points at the version.",
            "churn:2 is in use, by alias 'staging': point it at another version first",
        )
    },
)
async def delete_version(name: str, version: str, request: Request) -> Versions:
    """Delete a version no alias nor endpoint points at (409 naming them otherwise): its
    artifact and metadata leave the store and this server's cache; its number is never given
    again. Other servers that have it loaded keep it until they unload it."""
    registry = registry_of(request)
    endpoints: Endpoints = request.app.state.endpoints.endpoints

    def delete() -> list[int]:
        ref = _version_ref(name, version)
        assert ref.version is not None
        users = endpoints.naming(ref.name, ref.version)
        registry.delete_version(ref.name, ref.version, users=users)
        return registry.version_numbers(ref.name)

    return Versions(name=name, versions=await run_in_threadpool(delete))


class ApprovalChange(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    approval: Approval
    """``approved``, ``rejected`` or ``pending``."""
    force: bool = False
    """Take the approval from a version a protected alias (``production``) points at."""


class VersionApproval(BaseModel):
    name: str
    version: int
    approval: Approval


@router.put(
    "/v1/models/{name}/versions/{version}/approval",
    tags=["registry"],
    summary="Approve or reject a version",
    dependencies=_ADMIN,
    openapi_extra=json_body(ApprovalChange),
    responses={
        409: _openapi.error(
            "A protected alias points at the version (unless forced).",
            "churn:2 is the target of alias 'production': move the alias first, or force",
        )
    },
)
async def set_approval(name: str, version: str, request: Request) -> VersionApproval:
    """Set a version's approval (``mmserve models approve|reject``): only an approved
    version may be aliased ``production`` (unless forced)."""
    change = await parsed(request, ApprovalChange)
    registry = registry_of(request)

    def approve() -> VersionApproval:
        mv = registry.set_approval(
            str(_version_ref(name, version)), change.approval, force=change.force
        )
        return VersionApproval(name=mv.name, version=mv.version, approval=mv.approval)

    return await run_in_threadpool(approve)


def _version_ref(name: str, version: str) -> ModelRef:
    """The version a route's path names (``/v1/models/{name}/versions/{version}``): anything
    but a number is refused as the reference it makes (``1@x`` would be read as an alias of
    a model named ``lr:1``, and refused for that name)."""
    ref = f"{validate_name(name)}:{version}"
    if not version.isdigit():
        raise InvalidReference(ref)
    return ModelRef.parse(ref)
