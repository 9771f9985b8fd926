"""The batch runner: plan -> partitions -> parts -> manifest.

The run's identity (``_run.json``: id, spec, model version pinned at the start; each
step's, for a chain of models such as ``prep:1,fraud@production``) is written first;
running it again resumes it: done parts are skipped, the others written, and the output is
the same as one uninterrupted run's, byte for byte. ``_manifest.json`` (the model
version, the spec, every part) is written last, after the answers are published online when
the spec asks for it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from batch import files
from batch.parts import (
    Partition,
    PartResult,
    done_part,
    plan,
    plan_document,
    plan_of,
    write_part,
)
from batch.places import Roots
from batch.spec import BatchSpec
from serving import scorers, tracing
from serving.errors import (
    AlreadyExists,
    InputError,
    MMServeError,
    ObjectNotFound,
    RedisUnavailable,
)
from serving.registry import Registry
from serving.settings import Settings
from serving.store import Store

RUN = "_run.json"
MANIFEST = "_manifest.json"
ERROR = "_error.json"  # why a run started elsewhere (API, schedule) stopped
RUN_ID = "mmserve.batch.run"
PARTS = "mmserve.batch.parts"


class RunConflict(MMServeError):
    status = 409  # type: ignore[assignment]


@dataclass
class Run:
    run_id: str
    spec: BatchSpec
    model: str  # name:version, pinned (a chain: each step's, joined by commas)
    out: Store
    started: str
    partitions: list[Partition] = field(default_factory=list)  # planned once, at the start


def start(
    spec: BatchSpec,
    registry: Registry,
    settings: Settings,
    run_id: str | None,
    resume: bool,
    roots: Roots | None = None,
) -> Run:
    """The run writing to ``spec.output``: resumed if its ``_run.json`` is there (with the same
    spec and its plan), else a new one with the model version (each step's, for a chain)
    pinned and the input listed and planned now. ``roots``: where a confined run (started
    over HTTP, a queue or a schedule) may read, links resolved."""
    if spec.publish_online and settings.redis is None:
        raise InputError("publish_online needs Redis: set MMSERVE_REDIS_URL (or a broker)")
    out = Store.from_url(spec.output, settings.aws)
    try:
        record = json.loads(out.read(RUN))
    except ObjectNotFound:
        record = None
    if record is not None:
        if not resume and record["run_id"] != run_id:
            raise RunConflict(
                f"{spec.output} holds run {record['run_id']}: resume it (--resume or its "
                "run id) or write to another output"
            )
        if BatchSpec.model_validate(record["spec"]) != spec:
            raise RunConflict(f"run {record['run_id']} was started with another spec")
        # A run started before plans were recorded is planned again.
        partitions = plan_of(record["plan"]) if "plan" in record else plan(spec, settings, roots)
        return Run(record["run_id"], spec, record["model"], out, record["started"], partitions)
    model = scorers.pin(registry, spec.model)
    partitions = plan(spec, settings, roots)
    steps = [registry.get(step) for step in scorers.steps(model)]
    files.check(spec, [p.file for p in partitions], model, steps)
    run = Run(run_id or uuid.uuid4().hex, spec, model, out, _now(), partitions)
    document = {
        "run_id": run.run_id,
        "model": run.model,
        "spec": spec.model_dump(),
        "started": run.started,
        "plan": plan_document(partitions),
    }
    try:
        out.create(RUN, json.dumps(document, indent=1).encode())
    except AlreadyExists:  # a concurrent start: take that one
        return start(spec, registry, settings, None, True, roots)
    registry.store.write(f"batch/{run.run_id}.json", json.dumps({"output": spec.output}).encode())
    return run


def run_batch(
    spec: BatchSpec,
    registry: Registry,
    settings: Settings,
    *,
    run_id: str | None = None,
    resume: bool = False,
    workers: int = 1,
    distributed: bool = False,
    on_plan: Callable[[Run, int, int], None] | None = None,
    on_part: Callable[[PartResult], None] | None = None,
    roots: Roots | None = None,
) -> dict[str, Any]:
    """Run (or resume) the batch; returns the manifest once every part is written.
    ``roots``: where a confined run may read (see :func:`start`). With tracing on, in a
    span whose children are its parts', wherever they are written."""
    with tracing.span(tracing.tracer(settings), "batch run") as span:
        manifest = _run(
            spec, registry, settings, run_id, resume, workers, distributed, on_plan, on_part, roots
        )
        if span is not None:
            run = {RUN_ID: manifest["run_id"], PARTS: len(manifest["parts"])}
            span.set_attributes({**tracing.pinned(manifest["model"], manifest["rows"]), **run})
        return manifest


def _run(
    spec: BatchSpec,
    registry: Registry,
    settings: Settings,
    run_id: str | None,
    resume: bool,
    workers: int,
    distributed: bool,
    on_plan: Callable[[Run, int, int], None] | None,
    on_part: Callable[[PartResult], None] | None,
    roots: Roots | None,
) -> dict[str, Any]:
    started = time.perf_counter()
    if workers > 1 and not distributed:
        from batch.local import fork_server

        fork_server()  # its imports overlap this process's start
    run = start(spec, registry, settings, run_id, resume, roots)
    run.out.delete(ERROR)
    # What a killed run left (temporary parts): all of it, unless workers elsewhere may be
    # writing a part of this run now.
    run.out.clean(settings.jobs.lease_s if distributed else 0)
    partitions = run.partitions
    done = {p.name: r for p in partitions if (r := done_part(run.out, p.name)) is not None}
    todo = [p for p in partitions if p.name not in done]
    if on_plan is not None:
        on_plan(run, len(partitions), len(done))
    for result in _execute(run, todo, registry, settings, workers, distributed):
        done[result.name] = result
        if on_part is not None:
            on_part(result)
    parts = [done[p.name] for p in partitions]
    manifest = {
        "run_id": run.run_id,
        "model": run.model,
        "spec": spec.model_dump(),
        "parts": [asdict(p) for p in parts],
        "rows": sum(p.rows for p in parts),
        "rejected": sum(p.rejected for p in parts),
    }
    if spec.publish_online:
        manifest["published"] = _publish(run, parts, registry, settings)
    manifest["finished"] = _now()
    manifest["seconds"] = round(time.perf_counter() - started, 3)
    run.out.write(MANIFEST, json.dumps(manifest, indent=1).encode())
    return manifest


def _publish(
    run: Run, parts: list[PartResult], registry: Registry, settings: Settings
) -> dict[str, Any]:
    import redis

    from batch.online import publish

    url = str(settings.redis)
    client = redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=5)
    files = [f"{p.name}.{run.spec.format}" for p in parts]
    # A chain's answers are its last model's outputs (read from metadata: no model loaded).
    outputs = registry.get(scorers.steps(run.model)[-1]).outputs
    started = time.perf_counter()
    try:
        with client:
            published = publish(client, run, files, outputs)
    except redis.RedisError as err:
        raise RedisUnavailable(url, err) from err
    seconds = round(time.perf_counter() - started, 3)
    return {"rows": published.rows, "current": published.current, "seconds": seconds}


def _execute(
    run: Run,
    todo: list[Partition],
    registry: Registry,
    settings: Settings,
    workers: int,
    distributed: bool,
) -> Iterator[PartResult]:
    if distributed:
        from batch.distributed import execute as on_workers

        yield from on_workers(run, todo, settings)
        return
    if workers <= 1 or len(todo) <= 1:
        scorer = scorers.load(registry, run.model)
        for partition in todo:
            yield write_part(run.spec, partition, scorer, run.out, settings)
        return
    from batch.local import execute as here_and_helpers

    # Loaded once the helpers start: their loads of the model overlap this process's.
    yield from here_and_helpers(
        run, todo, lambda: scorers.load(registry, run.model), settings, workers - 1
    )


def failure_message(err: BaseException) -> str:
    """What a run's status may say about ``err``: an mmserve error's message (it names
    files, rows and columns, never their bytes), only the type of any other error (its text
    may quote the input; the log has it)."""
    if isinstance(err, MMServeError):
        return err.message
    return f"unexpected {type(err).__name__} (the log of the process that ran it has details)"


def _since(moment: str) -> float:
    return (datetime.now(UTC) - datetime.fromisoformat(moment)).total_seconds()


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def refusal(run_id: str) -> str:
    """Where, in the store, a worker records why it refused a run it was sent (its output
    is then no place it may write)."""
    return f"batch/{run_id}.refused.json"


def _error(store: Store, key: str = ERROR) -> dict[str, Any] | None:
    try:
        error: dict[str, Any] = json.loads(store.read(key))
    except ObjectNotFound:
        return None
    return error


_read_parts: dict[tuple[str, str], PartResult] = {}
"""Part records this process has read, by run id and name: a record is written once, when
its part is, so the status of a running or failed run (which the console asks for every
few seconds, for up to 50 runs) reads only the records new since it last asked."""
READ_PARTS = 100_000
"""Most part records kept (then the memo starts over)."""


def _part(out: Store, run_id: str, name: str) -> PartResult:
    """The record ``_parts/<name>`` of run ``run_id`` (whose output is ``out``)."""
    part = _read_parts.get((run_id, name))
    if part is None:
        part = PartResult(**json.loads(out.read(f"_parts/{name}")))
        if len(_read_parts) >= READ_PARTS:
            _read_parts.clear()
        _read_parts[(run_id, name)] = part
    return part


def status(registry: Registry, settings: Settings, run_id: str) -> dict[str, Any]:
    """A run's progress, from its output alone: parts done of all, rows, rejects."""
    if not run_id.isalnum():
        raise ObjectNotFound(f"batch/{run_id}.json")
    output = json.loads(registry.store.read(f"batch/{run_id}.json"))["output"]
    out = Store.from_url(output, settings.aws)
    record = json.loads(out.read(RUN))
    # The manifest first: it is written once every part is, and names them all (so a
    # finished run's status reads no part's record: the console lists 50 runs every few
    # seconds); without it, the parts listed after it are all there are (listed before it, a
    # run finishing meanwhile was 'succeeded' with the rows of the parts done before).
    try:
        manifest = json.loads(out.read(MANIFEST))
    except ObjectNotFound:
        manifest = None
    parts = (
        [PartResult(**part) for part in manifest["parts"]]  # all of them, in one read
        if manifest
        else [_part(out, run_id, name) for name in out.list("_parts") if name.endswith(".json")]
    )
    # The plan recorded at the start: a status never lists the input (None: an older run).
    total = len(record["plan"]["partitions"]) if "plan" in record else None
    error = _error(out) or _error(registry.store, refusal(run_id))
    state = "succeeded" if manifest else "failed" if error else "running"
    rows = sum(p.rows for p in parts)
    seconds = manifest["seconds"] if manifest else _since(record["started"])
    return {
        "run_id": run_id,
        "status": state,
        "error": error,
        "model": record["model"],
        "output": output,
        "started": record["started"],
        "finished": manifest["finished"] if manifest else None,
        "parts_done": len(parts),
        "parts": total,
        "rows": rows,
        "rows_per_s": round(rows / seconds) if seconds > 0 else None,
        "rejected": sum(p.rejected for p in parts),
        "published": manifest.get("published") if manifest else None,
    }
