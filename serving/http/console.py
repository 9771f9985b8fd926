"""The web console at ``/ui``, and the JSON routes its pages read that no other route answers.

The console is static files shipped in the package (``serving/ui/static``: HTML, CSS and
JavaScript modules, no build step, nothing fetched from elsewhere) that read these routes and
the existing ones (aliases, endpoints, jobs' results). Who may read what:

- anyone: ``GET /v1/console/session``, which credential a request carries (the console asks
  it first: it tells whether a key is wanted, which any refused request tells too);
- the API key (when one is set): ``/v1/console/models`` (every version's metadata, as
  ``GET /v1/models/{ref}`` answers each) and ``/v1/console/endpoints`` (variants, weights,
  the rollout and its decisions, per-variant figures and their short history; the config
  and the rollout's owner only to the admin token): so the models
  and endpoints pages are readable, and read-only, without the admin token;
- the admin token: what lists jobs, batch runs and streams (``GET /v1/jobs``,
  ``/v1/batch-jobs``, ``/v1/streams``: a job's token reads its result, a run names its
  output), and the shadow report (``GET /v1/endpoints/{name}/compare``: it reads the whole
  capture), as every management route; the actions (approve, reject, move an alias) are the
  registry's admin routes.

The pages themselves (``/ui``) are open, as ``/docs`` is: they hold no data, and ask for a
token once, kept in the browser's session storage.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.types import Message, Receive, Scope, Send

from serving.endpoints.compare import compare
from serving.http import _openapi
from serving.http._auth import ADMIN, credential, require_admin
from serving.http._history import History
from serving.http._overview import RecentJobs, batch_runs, streams, unreadable
from serving.http.endpoints import described, plane_of
from serving.metadata import ModelVersion
from serving.registry import Registry
from serving.settings import Settings

log = logging.getLogger("mmserve.http")
STATIC = Path(__file__).resolve().parent.parent / "ui" / "static"
router = APIRouter(tags=["console"])
_ADMIN = [Depends(require_admin)]


# The pages run only their own files: no script, style sheet or connection elsewhere, no
# plugin, never framed by another site (whose page could trick an admin into clicking an
# action), nothing sniffed as another type. Styles set as attributes (the weights' widths,
# the plots' colours) need 'unsafe-inline' for style-src, which runs no code.
PAGE_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; style-src 'self' 'unsafe-inline'; object-src 'none'; "
        b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class _Pages(StaticFiles):
    """The console's files, each answer with :data:`PAGE_HEADERS`."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *PAGE_HEADERS]
            await send(message)

        await super().__call__(scope, receive, with_headers)


def mount(app: FastAPI) -> None:
    """Serve the console's files at ``/ui`` (``/ui`` itself redirects to ``/ui/``)."""
    app.mount("/ui", _Pages(directory=STATIC, html=True), name="ui")


@router.get("/v1/console/session", summary="Which credential this request carries")
async def session(request: Request) -> dict[str, Any]:
    """``credential``: ``admin``, ``api-key`` or ``none``; ``api_key``: whether the other
    routes want a key (``MMSERVE_API_KEY`` set); ``management``: whether the admin routes are
    on (``MMSERVE_ADMIN_TOKEN`` set). The console offers its actions only to ``admin``."""
    settings: Settings = request.app.state.settings
    return {
        "credential": credential(request.scope["headers"], settings),
        "api_key": settings.api_key is not None,
        "management": settings.admin_token is not None,
    }


@router.get("/v1/console/models", summary="Every model with its versions' metadata")
async def models(request: Request) -> dict[str, Any]:
    """Per model: its aliases and every version's runtime, approval, sha256, input schema,
    outputs and creation time (newest version first); ``error`` instead, for a model whose
    records cannot be read."""
    registry: Registry = request.app.state.registry
    return {"models": await run_in_threadpool(_models, registry)}


def _models(registry: Registry) -> list[dict[str, Any]]:
    return [_model(registry, name) for name in registry.models()]


def _model(registry: Registry, name: str) -> dict[str, Any]:
    """A model whose records cannot be read is listed with its ``error``, and the others
    still are (one bad ``model.json`` is no reason to show none)."""
    try:
        versions = [_version(v) for v in reversed(registry.versions(name))]
        return {"name": name, "aliases": registry.aliases(name), "versions": versions}
    except Exception as err:
        log.debug("model %s: its records cannot be read", name, exc_info=True)
        return {"name": name, "aliases": {}, "versions": [], "error": unreadable(err)}


def _version(mv: ModelVersion) -> dict[str, Any]:
    return {
        "version": mv.version,
        "runtime": mv.flavor,
        "task": mv.task,
        "approval": mv.approval,
        "sha256": mv.sha256,
        "size_bytes": mv.size_bytes,
        "created": mv.created.isoformat(),
        "inputs": [{"name": f.name, "dtype": f.dtype, "nullable": f.nullable} for f in mv.inputs],
        "outputs": mv.outputs,
        "description": mv.description,
    }


@router.get("/v1/console/endpoints", summary="Every endpoint with its figures' history")
async def endpoints(request: Request) -> dict[str, Any]:
    """Each endpoint as ``GET /v1/endpoints/{name}`` describes it, with ``history``: per
    variant, requests per second, error rate and p50/p99 (ms) of the last minutes, a point
    every few seconds (the server's own counters, kept in memory)."""
    plane = plane_of(request)
    history: History = request.app.state.history
    views = [described(plane, served) for _, served in sorted(plane.snapshot.items())]
    if credential(request.scope["headers"], request.app.state.settings) != ADMIN:
        views = [_for_key_holders(view) for view in views]
    # Off the loop: ten minutes of points of every variant of every endpoint add up.
    series = await run_in_threadpool(lambda: [history.series(v["name"]) for v in views])
    for view, points in zip(views, series, strict=True):
        view["history"] = points
    return {"endpoints": views}


def _for_key_holders(view: dict[str, Any]) -> dict[str, Any]:
    """What the API key reads of an endpoint: its variants, weights, rollout, decisions and
    figures. Its config (the traffic seed, capture and serverless settings) and who runs its
    rollout (``host:pid``) are the admin's, as ``GET /v1/endpoints/{name}`` is."""
    view = {key: value for key, value in view.items() if key != "config"}
    view["state"] = {"history": view["state"].get("history", [])}
    if view["rollout"] is not None:
        view["rollout"] = {k: v for k, v in view["rollout"].items() if k != "owner"}
    return view


@router.get(
    "/v1/endpoints/{name}/compare",
    summary="An endpoint's shadow report (mmserve endpoints compare)",
    dependencies=_ADMIN,
)
async def shadow_report(name: str, request: Request) -> dict[str, Any]:
    """Primary and shadow answers joined by inference id and row, from the capture: the
    share of labels they agree on, score deltas, each side's requests, errors and latency."""
    plane = plane_of(request)
    served = await plane.served(name)  # 404 for an endpoint this server does not know
    return await run_in_threadpool(compare, plane.endpoints.store, served.name)


@router.get("/v1/jobs", summary="Recent async jobs", dependencies=_ADMIN)
async def jobs(request: Request) -> dict[str, Any]:
    """The newest jobs not finished yet (50 at most) and the last ones this server heard
    finish (since its first listing), newest first, each with its result's path once it
    succeeded; ``counts`` of them by status."""
    recent: RecentJobs = request.app.state.recent_jobs
    listed = await run_in_threadpool(recent.listing)
    return {"jobs": listed, "counts": dict(Counter(job["status"] for job in listed))}


@router.get("/v1/batch-jobs", summary="Recent batch runs", dependencies=_ADMIN)
async def batch_jobs(request: Request) -> dict[str, Any]:
    """The newest batch runs' progress (as ``GET /v1/batch-jobs/{run_id}``), newest first."""
    registry: Registry = request.app.state.registry
    settings: Settings = request.app.state.settings
    return {"runs": await run_in_threadpool(batch_runs, registry, settings)}


@router.get(
    "/v1/streams",
    summary="Redis streams and their consumer groups",
    dependencies=_ADMIN,
    responses={503: _openapi.error("Redis is away.", "Redis at 127.0.0.1:6379/0 is unavailable")},
)
async def stream_groups(request: Request) -> dict[str, Any]:
    """The streams of ``MMSERVE_REDIS_URL`` (else the broker's Redis): each one's length and
    its consumer groups' consumers, pending entries and lag; ``dead_letters`` marks a
    dead-letter stream (``*-dlq``), whose length is its dead letters. One listing looks at
    the first 10,000 keys at most: ``complete`` is false when Redis holds more. ``redis`` is
    false when no Redis is configured."""
    settings: Settings = request.app.state.settings
    return await run_in_threadpool(streams, settings.redis)
