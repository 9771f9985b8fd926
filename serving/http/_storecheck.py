"""What readiness knows of the store: the outcome of its last look, taken again in a worker
thread when older than a few seconds. Readiness never waits on the store (except for the
very first look, which the store's own timeouts bound): a hanging store cannot hang the
probes of a server that still has models to serve."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from serving.errors import StoreUnavailable
from serving.store import Store


@dataclass(frozen=True, slots=True)
class StoreState:
    available: bool
    checked_s: float
    """Seconds since the store was looked at."""
    error: str | None


class StoreCheck:
    """The store's availability as last seen, looked at again every ``every`` seconds at
    most (and only when asked)."""

    def __init__(self, store: Store, every: float):
        self.store = store
        self.every = every
        self._last: tuple[float, str | None] | None = None  # (monotonic time, error or None)
        self._looking: asyncio.Future[None] | None = None

    def state(self) -> StoreState | None:
        """The last look's outcome (``None``: no look has ended yet); starts a new look in
        the background when it is older than ``every``."""
        last = self._last
        if self._looking is None and (last is None or time.monotonic() - last[0] >= self.every):
            self._looking = asyncio.get_running_loop().run_in_executor(None, self._look)
            self._looking.add_done_callback(self._looked)
        if last is None:
            return None
        return StoreState(last[1] is None, time.monotonic() - last[0], last[1])

    async def first(self) -> StoreState:
        """The state, after waiting for the first look to end if none has yet."""
        state = self.state()
        if state is None:
            assert self._looking is not None
            await asyncio.shield(self._looking)
            state = self.state()
        assert state is not None
        return state

    def _look(self) -> None:
        error: str | None = None
        try:
            self.store.exists("registry")
        except StoreUnavailable as err:
            error = err.message
        except Exception as err:  # whatever it is, the store did not answer
            error = StoreUnavailable(self.store.url, err).message
        self._last = (time.monotonic(), error)

    def _looked(self, _: asyncio.Future[None]) -> None:
        self._looking = None
