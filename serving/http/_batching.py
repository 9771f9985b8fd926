"""Adaptive micro-batching: concurrent requests for one model joined into one model call.

This is the one place where async requests are gathered into one synchronous call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from serving.errors import InputError

T = TypeVar("T")
R = TypeVar("R")

Run = Callable[[Sequence[Any]], list[Any]]

# Calls that take less than this on average run on the event loop (see _Placement).
_INLINE_SECONDS = 0.001
_PROBE_INTERVAL_S = 1.0  # how often a call that looked cheap in a thread is tried on the loop
_PROBE_LIMIT_S = 0.02  # never tried on the loop: calls that took longer than this in a thread


@dataclass
class _Pending:
    run: Run
    item: Any
    future: asyncio.Future[Any]
    queued: float = field(default_factory=time.perf_counter)


class MicroBatcher(Generic[T, R]):
    """Joins the items submitted for one model into calls of ``run(items) -> answers``.

    An item that finds no call running is dispatched at once: an idle model pays nothing
    for batching. Items that arrive while a call runs queue up, and the next call takes them
    all (up to ``max_batch_size``; with ``max_wait_s``, after waiting that long at most for a
    full batch). So batches grow with the load by themselves. Calls run one at a time, in a
    worker thread.

    Items are joined only with items of the same ``run`` (the same loaded model), so a
    model reloaded meanwhile never answers for the one the request was checked against.
    """

    def __init__(
        self,
        max_batch_size: int = 64,
        max_wait_s: float = 0.0,
        on_call: Callable[[int, list[float]], None] | None = None,
        deadlines: Deadlines | None = None,
    ):
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._on_call = on_call  # (batch size, each item's seconds in the queue)
        self._deadlines = deadlines
        self._queue: deque[_Pending] = deque()
        self._full = asyncio.Event()
        self._draining: asyncio.Task[None] | None = None
        self._placement = _Placement()

    async def submit(
        self, run: Callable[[Sequence[T]], list[R]], item: T, timed: bool = False
    ) -> R:
        """``run([item, ...])``'s answer for ``item``, from a call it may share; ``timed``:
        or the deadlines' error once its time is up."""
        pending = _Pending(run, item, asyncio.get_running_loop().create_future())
        if timed and self._deadlines is not None:
            self._deadlines.add(pending.future)
        self._queue.append(pending)
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain())
        elif len(self._queue) >= self.max_batch_size:
            self._full.set()
        return await pending.future  # type: ignore[no-any-return]

    async def _drain(self) -> None:
        try:
            under_load = False  # the first call was asked for by an idle model: no wait
            while self._queue:
                if under_load and self.max_wait_s and len(self._queue) < self.max_batch_size:
                    await self._wait_for_more()
                under_load = True
                batch = self._take()
                if batch:
                    await self._call(batch)
        finally:
            self._draining = None

    async def _wait_for_more(self) -> None:
        self._full.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._full.wait(), self.max_wait_s)

    def _take(self) -> list[_Pending]:
        """The next batch: queued items of one ``run``, skipping requests given up on."""
        batch: list[_Pending] = []
        while self._queue and len(batch) < self.max_batch_size:
            if batch and self._queue[0].run != batch[0].run:  # bound methods: equal, not same
                break
            pending = self._queue.popleft()
            if not pending.future.done():  # done: cancelled (timed out, client gone)
                batch.append(pending)
        return batch

    async def _call(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        if self._on_call is not None:
            self._on_call(len(batch), [started - p.queued for p in batch])
        items = [p.item for p in batch]
        try:
            if self._placement.inline():
                answers = batch[0].run(items)
                self._placement.ran_inline(time.perf_counter() - started)
            else:
                loop = asyncio.get_running_loop()
                answers, cpu = await loop.run_in_executor(None, _timed, batch[0].run, items)
                self._placement.ran_in_thread(time.perf_counter() - started, cpu)
        except InputError as err:  # a model refused a request's input: the others still stand
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(err)
            else:
                await self._alone(batch)
            return
        except Exception as err:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(err)
            return
        for pending, answer in zip(batch, answers, strict=True):
            if not pending.future.done():
                pending.future.set_result(answer)

    async def _alone(self, batch: list[_Pending]) -> None:
        """Each request of ``batch`` in a call of its own (one of them holds an input the
        model refused): its answer, or its own refusal, is the same as in any batch."""
        loop = asyncio.get_running_loop()
        for pending in batch:
            if pending.future.done():
                continue
            try:
                answer = (await loop.run_in_executor(None, pending.run, [pending.item]))[0]
            except Exception as err:
                pending.future.set_exception(err)
            else:
                pending.future.set_result(answer)


class Deadlines:
    """Futures failed with ``error()`` once ``seconds`` have passed since each was added, on
    one timer for them all: they are added in the order they fall due, so the timer only
    ever waits for the oldest one still pending."""

    def __init__(self, seconds: float, error: Callable[[], BaseException]):
        self.seconds = seconds
        self._error = error
        self._due: deque[tuple[float, asyncio.Future[Any]]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, future: asyncio.Future[Any]) -> None:
        loop = asyncio.get_running_loop()
        while self._due and self._due[0][1].done():  # answered: nothing to fail
            self._due.popleft()
        self._due.append((loop.time() + self.seconds, future))
        if self._timer is None:
            self._timer = loop.call_at(self._due[0][0], self._expire)

    def _expire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._due:
            due, future = self._due[0]
            if not future.done():
                if due > now:
                    self._timer = loop.call_at(due, self._expire)
                    return
                future.set_exception(self._error())
            self._due.popleft()


class _Placement:
    """Where one model's calls run: on the event loop, or in a worker thread.

    Calls that take less than ``_INLINE_SECONDS`` run on the loop: for them the hop to a
    thread (two wake-ups) and the GIL hand-offs it causes cost more than the call. Costly
    calls (forests) go to a thread, so the loop goes on reading requests while the model
    runs without the GIL; so do calls that wait (on I/O, a sleep), whatever their CPU.

    What a call costs on the loop is known only by running it there: in a thread, its wall
    time includes waiting for the GIL that the busy loop holds (up to the interpreter's
    5 ms switch interval), so a cheap model measured there would look costly for good. A
    call that used little CPU in the thread and was not long is tried on the loop again,
    at most once a second.
    """

    def __init__(self) -> None:
        self.seconds: float | None = None
        """Moving average of a call's wall time on the loop; ``None``: not tried there."""
        self._may_probe = False
        self._next_probe = 0.0

    def inline(self) -> bool:
        if self.seconds is not None and self.seconds < _INLINE_SECONDS:
            return True
        return self._may_probe and time.monotonic() >= self._next_probe

    def ran_inline(self, wall: float) -> None:
        if self.seconds is None or self.seconds >= _INLINE_SECONDS:  # a probe: start over
            self.seconds = wall
            self._next_probe = time.monotonic() + _PROBE_INTERVAL_S
        else:
            self.seconds = 0.8 * self.seconds + 0.2 * wall

    def ran_in_thread(self, wall: float, cpu: float) -> None:
        self._may_probe = cpu < _INLINE_SECONDS and wall < _PROBE_LIMIT_S


def _timed(run: Run, items: list[Any]) -> tuple[list[Any], float]:
    """``run(items)`` and the CPU seconds it took the thread that ran it."""
    started = time.thread_time()
    answers = run(items)
    return answers, time.thread_time() - started
