"""Batch transform over HTTP: ``POST /v1/batch-jobs`` starts a run, ``GET`` follows it.

The run is started at once (the model version pinned, the input listed and planned,
``_run.json`` written: an unknown model is 404, an output holding another run 409) and then
written elsewhere: by an ``mmserve worker`` when a broker is configured, else by a thread of
this server.

A run that fails once started is no mistake of the caller's: its status answers 200, with
``"status": "failed"`` and the error (its type and message); 4xx are for the request itself.

A batch run reads and writes data at scale, so both routes need the admin token, as the
other management routes do (a run's status names its output). Its input and output are
store keys or URLs under the store or ``MMSERVE_BATCH__ROOTS`` (:mod:`batch.places`): 400
naming the field otherwise.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from batch.places import Roots
from batch.runner import start, status
from batch.spec import BatchSpec, confined
from serving.http import _openapi
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


class RunError(BaseModel):
    type: str
    """The error's class (``MissingColumn``, ``UnreadableInput``...)."""
    message: str
    """What went wrong, naming file, row and column (never the input's bytes)."""


class RunStatus(BaseModel):
    """Where a run stands: ``failed`` (with its ``error``) is an answer, not an error."""

    run_id: str
    status: Literal["running", "succeeded", "failed"]
    error: RunError | None
    model: str
    output: str
    started: str
    finished: str | None
    parts_done: int
    parts: int | None
    rows: int
    rows_per_s: int | None
    rejected: int
    published: dict[str, Any] | None


@router.post(
    "/v1/batch-jobs",
    status_code=202,
    summary="Start a batch transform",
    openapi_extra=json_body(BatchRequest),
    responses={
        400: _openapi.error(
            "The input or output is not under the store or an allowed root, or names no file.",
            "invalid batch input 'in/*.parquet': its folder does not exist",
        ),
        404: _openapi.error("The model does not exist.", "model 'ghost' is not registered"),
        409: _openapi.error(
            "The output holds another run.",
            "s3://scores/out holds run 3f2a...: resume it (--resume or its run id) or write "
            "to another output",
        ),
    },
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


@router.get(
    "/v1/batch-jobs/{run_id}",
    summary="A batch run's progress",
    response_model=RunStatus,
    responses={404: _openapi.error("No run has that id.", "no object at key 'batch/x.json'")},
)
async def follow(run_id: str, request: Request) -> dict[str, Any]:
    registry: Registry = request.app.state.registry
    settings: Settings = request.app.state.settings
    return await run_in_threadpool(status, registry, settings, run_id)
