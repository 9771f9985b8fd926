"""Where jobs wait and who runs them: Celery on Redis, or threads inside the server.

Beside the queue itself, a running job holds a *lease* (renewed while it runs; it lapses
when its worker dies). A job that is not finished, has no message waiting and no lease
has lost its message (a Redis restart without persistence, a publish that failed, a worker
killed with the job): the sweep enqueues it again. Redis holds only these hints and
counters, never the only copy of anything: the store has the job.

Celery messages carry task ids ``<unit>.<random>`` (a job's token, a batch part), so the
sweep finds the waiting units in one read of the queue.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from serving.errors import QueueUnavailable
from serving.settings import JobSettings
from workers.jobs import Job

RUN_TASK = "mmserve.jobs.run"
NOTIFY_TASK = "mmserve.jobs.notify"
SWEEP_TASK = "mmserve.jobs.sweep"
FINISHED_CHANNEL = "mmserve:jobs:finished"
"""Redis channel on which a worker publishes the token of each job it finished."""
SENT_HEADER = "mmserve_sent_at"
"""Message header: when the message was sent (Unix time), read back by :meth:`Queue.age`."""
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0)


class Queue(Protocol):
    def enqueue(self, job: Job) -> None:
        """Hand the job to a worker; :class:`QueueUnavailable` if the queue is away."""

    def notify(self, token: str) -> None:
        """Deliver the finished job's notification apart from the job (its own task or
        thread): a callback that hangs holds no job's slot."""

    def claim(self, token: str) -> contextlib.AbstractContextManager[None] | None:
        """The lease of the job for as long as the block runs; ``None`` if a live worker
        holds it."""

    def waiting(self) -> set[str]:
        """The units (job tokens, batch parts) with a message waiting in the queue."""

    def leased(self, token: str) -> bool:
        """Whether a live worker runs the job."""

    def depth(self) -> int:
        """Messages waiting."""

    def age(self) -> float:
        """Seconds the oldest message waiting has waited (0 when none waits): a queue whose
        workers are too few or stuck grows old before it grows long."""

    def count(self, amounts: dict[str, float]) -> None:
        """Add to job counters (``succeeded``, ``failed:<type>``, ``retries``...), at once."""

    def counters(self) -> dict[str, float]:
        """The job counters, across every process sharing this queue."""

    def finished(self, job: Job, amounts: dict[str, float]) -> None:
        """Count a job that finished (:meth:`count`) and tell whoever waits for it
        (:meth:`subscribe`) its record, as stored, at once."""

    def subscribe(self, listener: Callable[[str, str], None]) -> None:
        """Call ``listener`` with the token and the record (JSON) of every job that finishes
        from now on, in any process sharing this queue (from a thread of the queue's: it
        must not block). A hint only: a listener missing one (Redis away) still has the
        store."""


def owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def latency_counts(seconds: float) -> dict[str, float]:
    """A finished job's submit-to-done time, as counts of the latency histogram."""
    counts = {"latency_sum": seconds, "latency_count": 1.0}
    counts |= {f"latency_le:{b}": 1.0 for b in LATENCY_BUCKETS if seconds <= b}
    return counts


class RedisQueue:
    """Celery messages on Redis; markers, leases and counters in Redis keys."""

    def __init__(self, celery: Any, redis_url: str, settings: JobSettings):
        import redis

        self.celery = celery
        self.settings = settings
        self.redis = redis.Redis.from_url(
            redis_url,
            decode_responses=True,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=10,
        )
        self._release = self.redis.register_script(
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end"
        )
        self._finished = self.redis.register_script(
            "for i = 3, #ARGV, 2 do redis.call('hincrbyfloat', KEYS[1], ARGV[i], ARGV[i + 1]) end "
            "redis.call('publish', ARGV[1], ARGV[2])"
        )
        self._renew = self.redis.register_script(
            "if redis.call('get', KEYS[1]) == ARGV[1] then "
            "return redis.call('pexpire', KEYS[1], ARGV[2]) end"
        )

    def enqueue(self, job: Job) -> None:
        limits = {"soft_time_limit": job.time_limit_s, "time_limit": job.time_limit_s + 30}
        self.publish(RUN_TASK, job.id, [job.id], **limits)

    def notify(self, token: str) -> None:
        self.publish(NOTIFY_TASK, f"notify-{token}", [token])

    def publish(self, task: str, unit: str, args: list[Any], **options: Any) -> None:
        """Send ``task`` for a unit of work (a job token, a batch part); its task id carries
        ``unit``, which :meth:`waiting` reads back."""
        from kombu.exceptions import OperationalError

        try:
            self.celery.send_task(
                task,
                args=args,
                task_id=f"{unit}.{uuid.uuid4().hex[:12]}",
                queue=self.settings.queue,
                headers={SENT_HEADER: time.time()},
                retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
                **options,
            )
        except (OperationalError, OSError) as err:
            raise QueueUnavailable(unit, err) from err

    def claim(self, token: str) -> contextlib.AbstractContextManager[None] | None:
        me, lease_ms = owner(), int(self.settings.lease_s * 1000)
        if not self.redis.set(_lease(token), me, nx=True, px=lease_ms):
            return None
        return self._leased(token, me)

    @contextlib.contextmanager
    def _leased(self, token: str, me: str) -> Iterator[None]:
        self._renewer.hold(_lease(token), me)
        try:
            yield
        finally:
            self._renewer.drop(_lease(token))
            with contextlib.suppress(Exception):
                self._release(keys=[_lease(token)], args=[me])

    @functools.cached_property
    def _renewer(self) -> _Renewer:
        lease_ms = int(self.settings.lease_s * 1000)
        return _Renewer(lambda key, me: self._renew(keys=[key], args=[me, lease_ms]), lease_ms)

    def waiting(self) -> set[str]:
        messages = self.redis.lrange(self.settings.queue, 0, -1)
        return {m.group(1) for raw in messages if (m := _TASK_ID.search(str(raw)))}

    def leased(self, token: str) -> bool:
        return bool(self.redis.exists(_lease(token)))

    def depth(self) -> int:
        return int(self.redis.llen(self.settings.queue))

    def age(self) -> float:
        # Kombu pushes on the left and takes from the right: the oldest is the last.
        oldest = self.redis.lindex(self.settings.queue, -1)
        if oldest is None:
            return 0.0
        try:
            sent = float(json.loads(oldest)["headers"][SENT_HEADER])
        except (ValueError, KeyError, TypeError):  # sent by an mmserve without the header
            return 0.0
        return max(0.0, time.time() - sent)

    def count(self, amounts: dict[str, float]) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            for field, amount in amounts.items():
                pipe.hincrbyfloat(_STATS, field, amount)
            pipe.execute()

    def counters(self) -> dict[str, float]:
        return {str(k): float(v) for k, v in self.redis.hgetall(_STATS).items()}

    def finished(self, job: Job, amounts: dict[str, float]) -> None:
        # One call (a job's ~16 counters packed by redis-py cost more than the round trip).
        pairs = [str(v) for field, amount in amounts.items() for v in (field, amount)]
        message = f"{job.id} {job.model_dump_json()}"
        self._finished(keys=[_STATS], args=[FINISHED_CHANNEL, message, *pairs])

    def subscribe(self, listener: Callable[[str, str], None]) -> None:
        def heard(message: dict[str, Any]) -> None:
            token, _, record = str(message["data"]).partition(" ")
            listener(token, record)

        def lost(err: BaseException, pubsub: Any, thread: Any) -> None:
            # Redis away: the next read reconnects and subscribes again (meanwhile waits end
            # on their records); nothing is raised out of the thread.
            time.sleep(1.0)

        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(**{FINISHED_CHANNEL: heard})
        pubsub.run_in_thread(sleep_time=1.0, daemon=True, exception_handler=lost)


class _Renewer:
    """One thread per process renews the leases it holds, a few times per lease period (a
    thread per job cost each job its start and join)."""

    def __init__(self, renew: Callable[[str, str], object], lease_ms: int):
        self._renew = renew
        self._every_s = lease_ms / 3000
        self._held: dict[str, str] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def hold(self, key: str, me: str) -> None:
        with self._lock:
            self._held[key] = me
            if self._thread is None or not self._thread.is_alive():  # none yet, or forked
                self._thread = threading.Thread(target=self._run, name="leases", daemon=True)
                self._thread.start()

    def drop(self, key: str) -> None:
        with self._lock:
            self._held.pop(key, None)

    def _run(self) -> None:
        while True:
            time.sleep(self._every_s)
            with self._lock:
                held = list(self._held.items())
            for key, me in held:
                with contextlib.suppress(Exception):  # Redis away: the lease may lapse
                    self._renew(key, me)


class LocalQueue:
    """Embedded mode: jobs run in a few threads of this process (no broker), and their
    notifications in a few others."""

    def __init__(
        self,
        run: Callable[[str], object],
        threads: int = 2,
        notify: Callable[[str, int], float | None] | None = None,
    ):
        self._run = run
        self._notify = notify
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="mmserve-job")
        self._notifier = ThreadPoolExecutor(threads, thread_name_prefix="mmserve-notify")
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._queued: dict[str, float] = {}  # token: when it was queued (monotonic)
        self._leased: set[str] = set()
        self._counters: dict[str, float] = {}
        self._listeners: list[Callable[[str, str], None]] = []

    def enqueue(self, job: Job) -> None:
        with self._lock:
            self._queued.setdefault(job.id, time.monotonic())
        self._pool.submit(self._run_logged, job.id)

    def _run_logged(self, token: str) -> None:
        try:
            self._run(token)
        except Exception:  # the runner recorded what it could; the sweep retries the rest
            import logging

            logging.getLogger("mmserve.jobs").exception("job %s", token)
        finally:
            with self._lock:
                self._queued.pop(token, None)

    def notify(self, token: str) -> None:
        if self._notify is not None:
            self._notifier.submit(self._notify_logged, self._notify, token)

    def _notify_logged(self, notify: Callable[[str, int], float | None], token: str) -> None:
        """Every attempt at the notification, in this thread, waiting between them."""
        attempt = 0
        try:
            while (delay := notify(token, attempt)) is not None and not self._closed.wait(delay):
                attempt += 1
        except Exception:
            import logging

            logging.getLogger("mmserve.jobs").exception("notification of job %s", token)

    def claim(self, token: str) -> contextlib.AbstractContextManager[None] | None:
        with self._lock:
            if token in self._leased:
                return None
            self._leased.add(token)
            self._queued.pop(token, None)
        return self._held(token)

    @contextlib.contextmanager
    def _held(self, token: str) -> Iterator[None]:
        try:
            yield
        finally:
            with self._lock:
                self._leased.discard(token)

    def waiting(self) -> set[str]:
        with self._lock:
            return set(self._queued)

    def leased(self, token: str) -> bool:
        with self._lock:
            return token in self._leased

    def depth(self) -> int:
        with self._lock:
            return len(self._queued)

    def age(self) -> float:
        with self._lock:
            oldest = min(self._queued.values(), default=None)
        return 0.0 if oldest is None else time.monotonic() - oldest

    def count(self, amounts: dict[str, float]) -> None:
        with self._lock:
            for field, amount in amounts.items():
                self._counters[field] = self._counters.get(field, 0) + amount

    def counters(self) -> dict[str, float]:
        with self._lock:
            return dict(self._counters)

    def finished(self, job: Job, amounts: dict[str, float]) -> None:
        self.count(amounts)
        if self._listeners:
            record = job.model_dump_json()
            for listener in list(self._listeners):
                listener(job.id, record)

    def subscribe(self, listener: Callable[[str, str], None]) -> None:
        self._listeners.append(listener)

    def close(self, wait: bool = False) -> None:
        """Stop; with ``wait``, after every job handed over so far ran (else drop the queued)."""
        self._closed.set()  # notifications waiting for their next attempt give up
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
        self._notifier.shutdown(wait=wait, cancel_futures=not wait)


def visibility_timeout(settings: JobSettings) -> float:
    """How long Redis waits for an unacknowledged message before handing it out again:
    longer than the longest job, so a running job is never delivered twice at once."""
    return settings.time_limit_s + 2 * settings.lease_s + 300


def backoff(
    attempt: int, base: float = 1.0, cap: float = 60.0, rng: random.Random | None = None
) -> float:
    """How long to wait before retry ``attempt`` (0 for the first): a random time up to
    ``base * 2**attempt`` (at most ``cap``). Full jitter, so the workers and consumers a
    Redis restart cut off come back spread out, not all at once at each step."""
    return (rng or random).uniform(0, min(cap, base * 2 ** min(attempt, 64)))


_STATS = "mmserve:jobs:stats"
_TASK_ID = re.compile(r'"id": "([A-Za-z0-9._-]+)\.[0-9a-f]{12}"')


def _lease(token: str) -> str:
    return f"mmserve:job:{token}:lease"
