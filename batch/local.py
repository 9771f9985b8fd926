"""Batch runs on this machine: this process and ``--workers N - 1`` helper processes.

The helpers take partitions from the front of the list and this process from the back,
until they meet: this process has the model loaded and starts at once, while the helpers
start from a fork server that imports the predict path and skops (scikit-learn) once. A
spawned process would spend ~2 s of CPU on those imports before its first row, and a fork
of this process would copy its pyarrow and BLAS threads mid-state. The helpers get the
run's settings, not the environment the fork server happened to start with.

Killed, the run takes its helpers, the fork server and the resource tracker with it, and
leaves no socket behind for long (:mod:`batch._lifeline`).
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from batch import _lifeline
from batch.parts import Partition, PartResult, write_part
from batch.runner import Run
from batch.spec import BatchSpec
from serving import scorers, tracing
from serving.predictor import Scorer
from serving.registry import Registry
from serving.settings import Settings
from serving.store import Store


def execute(
    run: Run,
    todo: list[Partition],
    load: Callable[[], Scorer],
    settings: Settings,
    helpers: int,
) -> Iterator[PartResult]:
    """Write ``todo`` here (with the scorer ``load`` gives for ``run.model``) and in
    ``helpers`` processes (each loading ``run.model`` itself); yields each part's record.
    ``load`` is called once the helpers are starting: the model loads of all the processes
    overlap (a forest's takes a second or more, before any row)."""
    context = fork_server()
    lifeline, held = context.Pipe(duplex=False)  # the helpers watch it; this process holds it
    spec = run.spec.model_dump_json()
    ends = _Ends(len(todo))
    futures: list[Future[PartResult]] = []
    slots = threading.Semaphore(helpers + 1)  # each helper busy, and one part queued
    trace = tracing.carrier() if settings.opentelemetry else {}  # the helpers' parts join it

    def feed() -> None:  # a thread: the first submit waits for the fork server's imports
        while slots.acquire() and (index := ends.front()) is not None:
            future: Future[PartResult] = Future()
            try:
                part = todo[index]
                future = pool.submit(_part_in_worker, spec, run.model, part, settings, trace)
            except Exception as err:  # no helper could start: the part fails the run
                future.set_exception(err)
                ends.close()
            future.add_done_callback(lambda _: slots.release())
            futures.append(future)

    pool = ProcessPoolExecutor(
        helpers, mp_context=context, initializer=_lifeline.watch, initargs=(lifeline,)
    )
    feeder = threading.Thread(target=feed, name="batch-feeder", daemon=True)
    feeder.start()
    reported: set[int] = set()
    try:
        scorer = load()
        while (index := ends.back()) is not None:
            yield write_part(run.spec, todo[index], scorer, run.out, settings)
            yield from _reported(futures, reported, block=False)
        slots.release()  # the feeder may wait for a slot to learn that nothing is left
        feeder.join()
        yield from _reported(futures, reported, block=True)
    finally:
        ends.close()
        slots.release()
        pool.shutdown(cancel_futures=True)
        lifeline.close()
        held.close()


def fork_server() -> Any:
    """The context of the helpers' fork server, which is started now if it is not running:
    its imports (~2 s) overlap this process's own start (resolve, plan, load)."""
    import tempfile
    from multiprocessing import forkserver

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["batch.runner", "skops.io"])
    # Its socket goes to multiprocessing's temporary folder, made now in this process's
    # scratch folder (unless this process made one before): removed by the next start. A
    # socket's path has at most 107 bytes: a scratch folder too deep for it is not used.
    scratch = str(_lifeline.scratch())
    default = tempfile.tempdir
    if len(scratch.encode()) <= _SOCKET_PATH - len("/pymp-12345678/listener-12345678"):
        tempfile.tempdir = scratch
    try:
        forkserver.ensure_running()
    finally:
        tempfile.tempdir = default
    return context


_SOCKET_PATH = 107  # the longest path of a Unix socket (sun_path, less its final NUL)


class _Ends:
    """Indexes handed out from both ends of ``range(n)``, each once."""

    def __init__(self, n: int):
        self._low, self._high = 0, n
        self._lock = threading.Lock()

    def front(self) -> int | None:
        with self._lock:
            if self._low >= self._high:
                return None
            self._low += 1
            return self._low - 1

    def back(self) -> int | None:
        with self._lock:
            if self._low >= self._high:
                return None
            self._high -= 1
            return self._high

    def close(self) -> None:
        with self._lock:
            self._high = self._low


def _reported(
    futures: list[Future[PartResult]], reported: set[int], block: bool
) -> Iterator[PartResult]:
    """The helpers' parts not reported yet: the finished ones, or (``block``) all."""
    for index, future in enumerate(list(futures)):
        if index not in reported and (block or future.done()):
            reported.add(index)
            yield future.result()


def _part_in_worker(
    spec_json: str, model: str, partition: Partition, settings: Settings, trace: dict[str, str]
) -> PartResult:
    """A helper's part, with the settings of the process that started the run (not the
    environment the fork server happened to start with), in the run's trace (``trace``)."""
    spec = BatchSpec.model_validate_json(spec_json)
    out = Store.from_url(spec.output, settings.aws)
    with tracing.within(trace):
        result = write_part(spec, partition, _scorer(model, settings), out, settings)
    if settings.opentelemetry:
        tracing.flush()  # a helper ends without its exit hooks: its spans would be lost
    return result


_loaded: dict[str, Scorer] = {}  # a helper's model (or chain), loaded with its first part


def _scorer(model: str, settings: Settings) -> Scorer:
    if model not in _loaded:
        _loaded[model] = scorers.load(Registry.from_settings(settings), model)
    return _loaded[model]
