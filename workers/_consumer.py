"""Celery's consumer, made to outlive its broker (``worker_consumer`` of the app).

Two changes, both about losing Redis while a worker runs:

- Losing the connection never stops the worker. kombu's Redis channel of a lost connection
  raises ``AttributeError`` (its transport already let go of the connection details) when
  it is closed and hands its unacknowledged messages back, and when the job in flight
  ends and its message is acknowledged on it; Celery took either for an unrecoverable
  error, and the worker stopped. Here they count as what they are, the connection's loss:
  the close is quiet, and an acknowledgement that fails is logged ("Couldn't ack") and
  the worker goes on. Nothing is lost with them: a restarted Redis without persistence has
  none of those messages anyway, and a message delivered again finds its job finished in
  the store (the runner runs a job once); the store has the jobs, the sweep the lost ones.
- Reconnecting waits with full jitter (:func:`workers.queue.backoff`), and never gives up:
  Celery's own schedule (2, 4, 6... s) brings every worker of a fleet back at the same
  instants.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer
from celery.worker.state import maybe_shutdown
from kombu.exceptions import OperationalError

from workers.queue import backoff

log = logging.getLogger("mmserve.worker")

RECONNECT_BASE_S = 1.0
RECONNECT_CAP_S = 30.0


class Consumer(CeleryConsumer):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # How kombu's Redis channels of a lost connection fail (see the module's docstring).
        self.connection_errors = (*self.connection_errors, AttributeError)  # type: ignore[has-type]

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        connection = self.connection
        if connection is not None:
            close = connection.close

            def close_quietly() -> None:
                with contextlib.suppress(Exception):  # see the module's docstring
                    close()

            # Celery closes it through ``connection.close``, ignoring connection errors only.
            connection.close = close_quietly
        super().on_connection_error_after_connected(exc)

    def ensure_connected(self, conn: Any) -> Any:
        """Connect, trying again with jittered backoff until it works (or the worker is
        asked to stop)."""
        for attempt in itertools.count():
            maybe_shutdown()
            try:
                conn.ensure_connection(max_retries=0)
            except (OperationalError, *conn.recoverable_connection_errors) as err:
                delay = backoff(attempt, RECONNECT_BASE_S, RECONNECT_CAP_S)
                log.error(
                    "cannot connect to the broker %s: %s; trying again in %.1f s (attempt %d)",
                    conn.as_uri(),
                    err,
                    delay,
                    attempt + 1,
                )
                _sleep(delay)
                continue
            self.first_connection_attempt = False
            self.broker_connection_retry_attempt = 0
            return conn
        raise AssertionError("unreachable")


def _sleep(seconds: float) -> None:
    """Sleep in short steps, so a worker asked to stop meanwhile stops at once."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        maybe_shutdown()
        time.sleep(min(left, 0.5))
