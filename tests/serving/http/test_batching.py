"""The micro-batcher on its own: when it joins, what it joins, how failures travel."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from serving.errors import InvalidInput
from serving.http._batching import Deadlines, MicroBatcher


class Recorder:
    """A ``run`` that answers ``item * 10`` and remembers each call's items."""

    def __init__(self, seconds: float = 0.0, fail: bool = False):
        self.calls: list[list[int]] = []
        self.threads: list[int] = []
        self.seconds, self.fail = seconds, fail
        self.started = threading.Event()

    def __call__(self, items: Sequence[int]) -> list[int]:
        self.calls.append(list(items))
        self.threads.append(threading.get_ident())
        self.started.set()
        threading.Event().wait(self.seconds)
        if self.fail:
            raise RuntimeError("model failed")
        return [i * 10 for i in items]


def test_an_idle_batcher_dispatches_at_once() -> None:
    async def main() -> None:
        run = Recorder()
        batcher: MicroBatcher[int, int] = MicroBatcher(max_wait_s=10.0)  # never waited for
        assert await asyncio.wait_for(batcher.submit(run, 1), 1.0) == 10
        assert await asyncio.wait_for(batcher.submit(run, 2), 1.0) == 20
        assert run.calls == [[1], [2]]

    asyncio.run(main())


async def _burst(batcher: MicroBatcher[int, int], run: Recorder, items: range) -> list[int]:
    """One item while the batcher is idle, the rest while its call runs."""
    first = asyncio.ensure_future(batcher.submit(run, items[0]))
    await asyncio.get_running_loop().run_in_executor(None, run.started.wait)
    rest = [batcher.submit(run, i) for i in items[1:]]
    return [await first, *await asyncio.gather(*rest)]


def test_requests_that_queue_during_a_call_share_the_next_call_in_order() -> None:
    async def main() -> None:
        run = Recorder(seconds=0.2)
        answers = await _burst(MicroBatcher(max_batch_size=4), run, range(1, 11))
        assert answers == [i * 10 for i in range(1, 11)]
        assert run.calls == [[1], [2, 3, 4, 5], [6, 7, 8, 9], [10]]

    asyncio.run(main())


def test_a_failed_call_fails_each_of_its_requests() -> None:
    async def main() -> None:
        run = Recorder(seconds=0.1, fail=True)
        batcher: MicroBatcher[int, int] = MicroBatcher()
        results = await asyncio.gather(
            *[batcher.submit(run, i) for i in range(3)], return_exceptions=True
        )
        assert [str(r) for r in results] == ["model failed"] * 3

    asyncio.run(main())


class Refusing(Recorder):
    """A ``run`` whose model refuses item 7 (InvalidInput), as a corrupt file."""

    def __call__(self, items: Sequence[int]) -> list[int]:
        answers = super().__call__(items)
        if 7 in items:
            raise InvalidInput("item 7 is not a PNG file")
        return answers


def test_an_input_the_model_refuses_fails_its_own_request_alone() -> None:
    async def gathered() -> list[object]:
        run = Refusing(seconds=0.2)
        batcher: MicroBatcher[int, int] = MicroBatcher(max_batch_size=4)
        first = asyncio.ensure_future(batcher.submit(run, 5))
        await asyncio.get_running_loop().run_in_executor(None, run.started.wait)
        rest = [batcher.submit(run, i) for i in (6, 7, 8)]
        results = [await first, *await asyncio.gather(*rest, return_exceptions=True)]
        # the joined call [6, 7, 8] was refused; each then ran alone
        assert run.calls == [[5], [6, 7, 8], [6], [7], [8]]
        return [r if isinstance(r, int) else str(r) for r in results]

    assert asyncio.run(gathered()) == [50, 60, "item 7 is not a PNG file", 80]


def test_a_request_given_up_on_is_left_out_of_the_next_call() -> None:
    async def main() -> None:
        run = Recorder(seconds=0.2)
        batcher: MicroBatcher[int, int] = MicroBatcher()
        first = asyncio.ensure_future(batcher.submit(run, 1))
        await asyncio.get_running_loop().run_in_executor(None, run.started.wait)
        gone = asyncio.ensure_future(batcher.submit(run, 2))
        kept = asyncio.ensure_future(batcher.submit(run, 3))
        await asyncio.sleep(0)
        gone.cancel()
        assert (await first, await kept) == (10, 30)
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert run.calls == [[1], [3]]

    asyncio.run(main())


def test_a_different_model_object_is_never_joined() -> None:
    async def main() -> None:
        old, new = Recorder(seconds=0.2), Recorder()
        batcher: MicroBatcher[int, int] = MicroBatcher()
        first = asyncio.ensure_future(batcher.submit(old, 1))
        await asyncio.get_running_loop().run_in_executor(None, old.started.wait)
        answers = await asyncio.gather(batcher.submit(old, 2), batcher.submit(new, 3))
        assert (await first, answers) == (10, [20, 30])
        assert (old.calls, new.calls) == ([[1], [2]], [[3]])

    asyncio.run(main())


def test_under_load_a_batch_waits_up_to_max_wait_to_fill() -> None:
    async def main() -> None:
        run = Recorder(seconds=0.2)
        batcher: MicroBatcher[int, int] = MicroBatcher(max_batch_size=4, max_wait_s=0.3)
        first = asyncio.ensure_future(batcher.submit(run, 1))
        await asyncio.get_running_loop().run_in_executor(None, run.started.wait)
        second = asyncio.ensure_future(batcher.submit(run, 2))
        await asyncio.sleep(0.3)  # the first call is over; the second batch is still waiting
        answers = await asyncio.gather(first, second, batcher.submit(run, 3))
        assert (answers, run.calls) == ([10, 20, 30], [[1], [2, 3]])

    asyncio.run(main())


def test_a_cheap_model_runs_on_the_event_loop_once_tried_there() -> None:
    async def main() -> None:
        run = Recorder()
        batcher: MicroBatcher[int, int] = MicroBatcher()
        for i in range(5):
            await batcher.submit(run, i)
        loop_thread = threading.get_ident()
        # The first call's cost is unknown: a thread. It used little CPU: the next is tried
        # on the loop, took little there, and so the rest stay there.
        assert run.threads[0] != loop_thread
        assert run.threads[1:] == [loop_thread] * 4

    asyncio.run(main())


def test_a_model_that_waits_never_runs_on_the_event_loop() -> None:
    async def main() -> None:
        run = Recorder(seconds=0.05)  # no CPU, but it would stall the loop 50 ms a call
        batcher: MicroBatcher[int, int] = MicroBatcher()
        for i in range(4):
            await batcher.submit(run, i)
        assert threading.get_ident() not in run.threads

    asyncio.run(main())


def test_requests_past_their_deadline_fail_and_are_not_run() -> None:
    """One timer for all requests: the one whose call runs too long and those queued behind
    it fail with the deadlines' error; the queued ones are never run."""

    async def main() -> None:
        run = Recorder(seconds=2.0)
        deadlines = Deadlines(0.5, lambda: TimeoutError("past its time"))
        batcher: MicroBatcher[int, int] = MicroBatcher(deadlines=deadlines)
        first = asyncio.ensure_future(batcher.submit(run, 1, timed=True))
        await asyncio.get_running_loop().run_in_executor(None, run.started.wait)
        queued = [asyncio.ensure_future(batcher.submit(run, i, timed=True)) for i in (2, 3)]
        outcomes = await asyncio.gather(first, *queued, return_exceptions=True)
        assert [str(o) for o in outcomes] == ["past its time"] * 3
        run.seconds = 0.0
        assert await batcher.submit(run, 4) == 40  # untimed: after the first call ends
        assert await batcher.submit(run, 5, timed=True) == 50  # in time
        assert run.calls == [[1], [4], [5]]

    asyncio.run(main())
