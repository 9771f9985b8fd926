"""Batch transform over HTTP: ``POST /v1/batch-jobs`` starts a run, ``GET`` follows it.

The run is started at once (the model version pinned, the input listed and planned,
``_run.json`` written: an unknown model is 404, an output holding another run 409) and then
written elsewhere: by an ``mmserve worker`` when a broker is configured, else by a thread of
this server.

A batch run reads and writes data at scale, so both routes need the admin token, as the
other management routes do (a run's status names its output). Its input and output are
store keys or URLs under the store or ``MMSERVE_BATCH__ROOTS`` (:mod:`batch.places`): 400
naming the field otherwise.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from batch.places import Roots
from batch.runner import start, status
from batch.spec import BatchSpec, confined
from serving.http._auth import require_admin
from serving.http._body import json_body, parsed
from serving.registry import Registry
from serving.settings import Settings
from workers.batch import launch

router = APIRouter(tags=["batch"], dependencies=[Depends(require_admin)])


class BatchRequest(BatchSpec):
    distributed: bool = False
    """One task per partition over the workers (needs a broker, and a free worker slot for
    the run itself)."""


@router.post(
    "/v1/batch-jobs",
    status_code=202,
    summary="Start a batch transform",
    openapi_extra=json_body(BatchRequest),
)
async def submit(request: Request) -> JSONResponse:
    body = await parsed(request, BatchRequest)
    registry: Registry = request.app.state.registry
    settings: Settings = request.app.state.settings
    roots = Roots.of(settings)
    spec = confined(BatchSpec.model_validate(body.model_dump(exclude={"distributed"})), roots)
    run = await run_in_threadpool(start, spec, registry, settings, None, False, roots)
    queue = request.app.state.jobs.queue
    await run_in_threadpool(launch, queue, settings, registry, spec, run.run_id, body.distributed)
    url = str(request.url_for("follow", run_id=run.run_id))
    answer = {"run_id": run.run_id, "model": run.model, "status_url": url}
    return JSONResponse(answer, status_code=202, headers={"Location": url})


@router.get("/v1/batch-jobs/{run_id}", summary="A batch run's progress")
async def follow(run_id: str, request: Request) -> dict[str, Any]:
    registry: Registry = request.app.state.registry
    settings: Settings = request.app.state.settings
    return await run_in_threadpool(status, registry, settings, run_id)
