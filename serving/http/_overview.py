"""What the console's jobs, batch and streams pages list, read from where it already is.

- jobs: the store's open jobs (``jobs/open/``: every job not finished, whichever server took
  it) and the jobs this server heard finish (:meth:`workers.queue.Queue.subscribe`, from its
  first listing on), newest first;
- batch runs: the newest runs the store records (``batch/<run>.json``), each one's progress
  as ``GET /v1/batch-jobs/{run}`` answers it;
- streams: the Redis streams of ``MMSERVE_REDIS_URL`` (or the broker's; those among the
  first :data:`SCANNED` keys of a SCAN, so a listing stays cheap) with their consumer
  groups (``XINFO GROUPS``: consumers, pending, lag); a stream named ``*-dlq`` is a
  dead-letter stream, its length the dead letters, shown with the newest one's error.

No secret leaves: locations are shown without a user or password, Redis without its URL.
"""

from __future__ import annotations

import logging
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

log = logging.getLogger("mmserve.http")

LISTED = 50
"""Most jobs, batch runs or streams one listing reads."""
SCANNED = 10_000
"""Most Redis keys one streams listing looks at."""
_SCAN_COUNT = 1_000
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
    """The newest runs' progress, newest first; a run whose records cannot be read (gone,
    not JSON, an output store that refuses us) is listed with its error (:func:`unreadable`),
    and the others still are."""
    runs = []
    for run_id in _newest(registry.store, "batch", ".json"):
        try:
            run = run_status(registry, settings, run_id)
        except Exception as err:
            log.debug("batch run %s: its status cannot be read", run_id, exc_info=True)
            run = {"run_id": run_id, "status": "unknown", "error": {"message": unreadable(err)}}
        if isinstance(run.get("output"), str):
            run["output"] = without_password(run["output"])
        runs.append(run)
    return runs


def unreadable(err: Exception) -> str:
    """Why a record could not be read, for a listing that shows the others anyway: an
    mmserve error's message (which names keys, never their bytes), else only the error's
    type (its text may quote what it read; the log has it)."""
    return err.message if isinstance(err, MMServeError) else type(err).__name__


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
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def streams(url: str | None) -> dict[str, Any]:
    """The streams of the Redis at ``url`` (at most :data:`LISTED`, among the first
    :data:`SCANNED` keys) with their groups; ``complete`` is false when Redis holds more keys
    than one listing looks at; ``{"redis": false}`` when there is none to read."""
    if url is None:
        return {"redis": False, "streams": []}
    import redis
    from redis.exceptions import RedisError

    client: Any = redis.Redis.from_url(
        url, decode_responses=True, socket_connect_timeout=2, socket_timeout=5
    )
    try:
        keys, complete = _stream_keys(client)
        return {"redis": True, "complete": complete, "streams": _described(client, keys)}
    except RedisError as err:
        raise RedisUnavailable(url, err) from err
    finally:
        client.close()


def _stream_keys(client: Any) -> tuple[list[str], bool]:
    """The first :data:`LISTED` stream keys by name among those a SCAN finds in its first
    :data:`SCANNED` keys, and whether that was every key. A broker's Redis may hold millions
    of keys (results, features' state): a listing a few seconds apart must not walk them all."""
    found: list[str] = []
    cursor = 0
    for _ in range(SCANNED // _SCAN_COUNT):
        cursor, keys = client.scan(cursor, count=_SCAN_COUNT, _type="stream")
        found += keys
        if cursor == 0:
            return sorted(found)[:LISTED], True
    return sorted(found)[:LISTED], False


def _described(client: Any, keys: list[str]) -> list[dict[str, Any]]:
    """Each stream's length, groups and newest entry in one round trip; a stream deleted
    since the scan is left out (its replies are errors), not taken for Redis being away."""
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.xlen(key)
            pipe.xinfo_groups(key)
            pipe.xrevrange(key, count=1)
        replies = pipe.execute(raise_on_error=False)
    views = []
    for i, key in enumerate(keys):
        length, groups, newest = replies[3 * i : 3 * i + 3]
        if not any(isinstance(r, Exception) for r in (length, groups, newest)):
            views.append(_stream(key, length, groups, newest))
    return views


def _stream(
    key: str, length: int, groups: list[dict[str, Any]], newest: list[Any]
) -> dict[str, Any]:
    view: dict[str, Any] = {
        "name": key,
        "length": length,
        "dead_letters": key.endswith(DEAD_LETTERS),
        "groups": [
            {
                "name": g["name"],
                "consumers": g["consumers"],
                "pending": g["pending"],
                "lag": g.get("lag"),
                "last_delivered_id": g["last-delivered-id"],
            }
            for g in groups
        ],
    }
    if view["dead_letters"]:
        view["latest"] = _dead_letter(newest)
    return view


def _dead_letter(newest: list[tuple[str, dict[str, str]]]) -> dict[str, str] | None:
    """The newest dead letter's id, kind of error and reason (never the event's fields)."""
    for entry_id, fields in newest:
        return {
            "id": entry_id,
            "error": fields.get("error", ""),
            "reason": fields.get("reason", ""),
        }
    return None
