"""The capture flusher: captured records written to the store in batches, off the event loop.

Records wait in a bounded buffer; the flusher writes them every ``capture_flush_s``, or as
soon as ``capture_flush_rows`` wait, and once more at shutdown. A full buffer drops new
records (``mmserve_capture_dropped_rows_total{reason="buffer_full"}``): a request never
waits for the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from serving.endpoints import capture
from serving.http._metrics import Metrics
from serving.settings import DeploymentSettings
from serving.store import Store

log = logging.getLogger("mmserve.capture")


class CaptureWriter:
    """The buffer the routes add to, and the task that empties it into the store."""

    def __init__(self, store: Store, settings: DeploymentSettings, metrics: Metrics):
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.buffer = capture.Buffer(settings.capture_max_rows)
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def add(self, record: capture.Record) -> None:
        """Keep ``record`` for the next flush, or drop and count it if the buffer is full."""
        if not self.buffer.add(record):
            self.metrics.capture_dropped.labels(record.endpoint, "buffer_full").inc(record.rows)
            return
        if self.buffer.rows >= self.settings.capture_flush_rows:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Write what is left, then end the task."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.capture_flush_s)
            self._wake.clear()
            await self.flush()
        await self.flush()

    async def flush(self) -> None:
        records = self.buffer.drain()
        if not records:
            return
        try:
            written = await asyncio.to_thread(capture.write, self.store, records)
        except Exception:
            log.exception("captured rows could not be written; they are dropped")
            for record in records:
                self.metrics.capture_dropped.labels(record.endpoint, "store_error").inc(record.rows)
            return
        for endpoint, rows in written.items():
            self.metrics.capture_rows.labels(endpoint).inc(rows)
