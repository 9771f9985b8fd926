"""Long polls of jobs: ``GET /v1/jobs/{token}?wait=S`` answers as soon as the job finishes.

A worker announces every job it finished (:meth:`workers.queue.Queue.finished`: a Redis
publish in the pipeline that counts it, or a call in embedded mode); one subscription per
API process (:meth:`workers.queue.Queue.subscribe`, opened on the first long poll) wakes the
requests waiting for that token. The announcement carries the finished record the worker
wrote to the store just before, so a woken request answers it without reading the store;
a request that heard nothing (Redis away, a job failed by a path that announces nothing)
reads the record every :data:`RECHECK_S` until its wait is over, then answers it as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable

from workers.jobs import Job
from workers.queue import Queue

RECHECK_S = 1.0
"""Longest a waiting request goes without reading its job's record."""


class _Waiter:
    """One waiting request: its loop, what wakes it, the record it was woken with."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.woken = asyncio.Event()
        self.record: str | None = None

    def wake(self, record: str) -> None:
        self.record = record
        self.woken.set()


class Waits:
    """The requests of this process waiting for jobs to finish, by token."""

    def __init__(self, queue: Queue):
        self._queue = queue
        self._waiting: dict[str, set[_Waiter]] = {}
        self._lock = threading.Lock()
        self._subscribed = False

    async def until_finished(
        self, token: str, seconds: float, read: Callable[[], Awaitable[Job]]
    ) -> Job:
        """The job's record once it finished, or as it is after ``seconds``."""
        await self._subscribe()
        waiter = _Waiter()
        deadline = waiter.loop.time() + seconds
        with self._lock:
            self._waiting.setdefault(token, set()).add(waiter)
        try:
            job = await read()  # after registering: a finish from now on wakes this request
            while not job.status.finished and (left := deadline - waiter.loop.time()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.woken.wait(), min(left, RECHECK_S))
                waiter.woken.clear()
                job = _announced(waiter) or await read()
            return job
        finally:
            with self._lock:
                waiters = self._waiting.get(token, set())
                waiters.discard(waiter)
                if not waiters:
                    self._waiting.pop(token, None)

    def _heard(self, token: str, record: str) -> None:
        """A job finished (called from the queue's thread, or a job's in embedded mode)."""
        with self._lock:
            waiters = list(self._waiting.get(token, ()))
        for waiter in waiters:
            with contextlib.suppress(RuntimeError):  # its loop closed meanwhile
                waiter.loop.call_soon_threadsafe(waiter.wake, record)

    async def _subscribe(self) -> None:
        if self._subscribed:
            return
        with self._lock:
            if self._subscribed:
                return
            self._subscribed = True
        try:
            await asyncio.to_thread(self._queue.subscribe, self._heard)
        except Exception:
            self._subscribed = False  # Redis away: this wait rechecks; the next subscribes


def _announced(waiter: _Waiter) -> Job | None:
    """The finished record the worker announced (written to the store before it was), or
    ``None``: the store is read instead."""
    record, waiter.record = waiter.record, None
    if record is None:
        return None
    with contextlib.suppress(ValueError):
        job = Job.model_validate_json(record)
        return job if job.status.finished else None
    return None
