"""What the console's jobs, batch and streams pages list, read from where it already is.

- jobs: the store's open jobs (``jobs/open/``: every job not finished, whichever server took
  it) and the jobs this server heard finish (:meth:`workers.queue.Queue.subscribe`, from its
  first listing on), newest first;
- batch runs: the newest runs the store records (``batch/<run>.json``), each one's progress
  as ``GET /v1/batch-jobs/{run}`` answers it;
- streams: every Redis stream of ``MMSERVE_REDIS_URL`` (or the broker's) with its consumer
  groups (``XINFO GROUPS``: consumers, pending, lag); a stream named ``*-dlq`` is a
  dead-letter stream, its length the dead letters, shown with the newest one's error.

No secret leaves: locations are shown without a user or password, Redis without its URL.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pyarrow.fs as pafs

from batch.runner import status as run_status
from serving.errors import MMServeError, RedisUnavailable
from serving.registry import Registry
from serving.settings import Settings
from serving.store import Store
from workers.jobs import OPEN, Job, Jobs
from workers.queue import Queue

LISTED = 50
"""Most jobs, batch runs or streams one listing reads."""
DEAD_LETTERS = "-dlq"


class RecentJobs:
    """The jobs the console lists: the open ones and those this server heard finish."""

    def __init__(self, jobs: Jobs, queue: Queue, kept: int = LISTED):
        self._jobs, self._queue = jobs, queue
        self._finished: deque[Job] = deque(maxlen=kept)
        self._lock = threading.Lock()
        self._subscribed = False

    def listing(self) -> list[dict[str, Any]]:
        """Newest first, at most ``kept`` open ones and ``kept`` finished ones."""
        self._subscribe()
        open_jobs = [j for j in map(self._read, _newest(self._jobs.store, OPEN, "")) if j]
        with self._lock:
            finished = list(self._finished)
        seen = {j.id for j in open_jobs}
        every = open_jobs + [j for j in finished if j.id not in seen]
        return [_job_view(j) for j in sorted(every, key=lambda j: j.created_at, reverse=True)]

    def _subscribe(self) -> None:
        with self._lock:
            if self._subscribed:
                return
            self._subscribed = True
        try:
            self._queue.subscribe(self._heard)
        except Exception:  # Redis away: the next listing tries again
            self._subscribed = False

    def _heard(self, token: str, record: str) -> None:
        try:
            job = Job.model_validate_json(record)
        except ValueError:  # not a record this version reads: the store still has it
            return
        with self._lock:
            self._finished.appendleft(job)

    def _read(self, token: str) -> Job | None:
        try:
            return self._jobs.get(token)
        except MMServeError:  # finished and closed meanwhile, or an odd marker
            return None


def _job_view(job: Job) -> dict[str, Any]:
    succeeded = job.status == "succeeded"
    return {
        "id": job.id,
        "model": job.model,
        "requested": job.requested,
        "status": str(job.status),
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "attempts": job.attempts,
        "error": job.error.model_dump() if job.error else None,
        "result": f"/v1/jobs/{job.id}/result" if succeeded else None,
    }


def batch_runs(registry: Registry, settings: Settings) -> list[dict[str, Any]]:
    """The newest runs' progress, newest first; a run whose output cannot be read is
    listed with its error (the others still are)."""
    runs = []
    for run_id in _newest(registry.store, "batch", ".json"):
        try:
            run = run_status(registry, settings, run_id)
        except MMServeError as err:
            run = {"run_id": run_id, "status": "unknown", "error": {"message": err.message}}
        if isinstance(run.get("output"), str):
            run["output"] = without_password(run["output"])
        runs.append(run)
    return runs


def _newest(store: Store, prefix: str, suffix: str) -> list[str]:
    """The names of the :data:`LISTED` newest objects directly under ``prefix`` that end in
    ``suffix`` and have no other dot (``<run>.json``, not ``<run>.refused.json``), without
    it, newest first (one listing call, with the objects' times)."""
    selector = pafs.FileSelector(store.path(prefix), allow_not_found=True)
    named = [
        (info.mtime_ns or 0, info.base_name.removesuffix(suffix))
        for info in store.filesystem.get_file_info(selector)
        if info.type == pafs.FileType.File
        and info.base_name.endswith(suffix)
        and info.base_name.count(".") == suffix.count(".")
    ]
    return [name for _, name in sorted(named, reverse=True)[:LISTED]]


def without_password(url: str) -> str:
    """``url`` without the user and password it may carry."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def streams(url: str | None) -> dict[str, Any]:
    """Every stream of the Redis at ``url`` (at most :data:`LISTED`) with its groups;
    ``{"redis": false}`` when there is none to read."""
    if url is None:
        return {"redis": False, "streams": []}
    import redis
    from redis.exceptions import RedisError

    client: Any = redis.Redis.from_url(
        url, decode_responses=True, socket_connect_timeout=2, socket_timeout=5
    )
    try:
        keys = sorted(client.scan_iter(_type="stream", count=1000))[:LISTED]
        return {"redis": True, "streams": [_stream(client, key) for key in keys]}
    except RedisError as err:
        raise RedisUnavailable(url, err) from err
    finally:
        client.close()


def _stream(client: Any, key: str) -> dict[str, Any]:
    groups = [
        {
            "name": g["name"],
            "consumers": g["consumers"],
            "pending": g["pending"],
            "lag": g.get("lag"),
            "last_delivered_id": g["last-delivered-id"],
        }
        for g in client.xinfo_groups(key)
    ]
    view = {
        "name": key,
        "length": client.xlen(key),
        "dead_letters": key.endswith(DEAD_LETTERS),
        "groups": groups,
    }
    if view["dead_letters"]:
        view["latest"] = _latest_dead_letter(client, key)
    return view


def _latest_dead_letter(client: Any, key: str) -> dict[str, str] | None:
    """The newest dead letter's id, kind of error and reason (never the event's fields)."""
    for entry_id, fields in client.xrevrange(key, count=1):
        return {
            "id": entry_id,
            "error": fields.get("error", ""),
            "reason": fields.get("reason", ""),
        }
    return None
