"""The streaming consumer: events from a log, scored in micro-batches, committed once.

    mmserve stream --model fraud@production --source events --sink scores --group scorers

``--model`` may be a chain, ``fraud-prep,fraud@production``: each event is scored by the
steps in turn, each step followed (or pinned) on its own.

Each turn gathers a batch (up to ``batch_size`` events, or what came until the oldest of
them has waited ``max_wait_ms``), scores it in ONE predict call and commits outputs, dead
letters and acknowledgements in one atomic step of the log (``workers/_stream_redis.py``),
which writes only the entries still pending on this consumer: an output exists iff its
input was acknowledged, and exists once. What becomes of an event:

- it fits the model: an output in the sink (source entry id, id field, outputs, model,
  version; for a chain, the steps' names and versions, ``fraud-prep,fraud`` and ``1,7``);
- it does not (a missing field, not a number, bad JSON, a NaN the model refuses, a file
  field that is not base64 or names a missing object): a dead letter at once, its reason
  naming the field (``workers/_stream_files.py``);
- the model raised: the batch is halved until the failing events stand alone (the others
  are scored); those stay pending, are delivered again after ``claim_idle_ms``, and on
  their ``max_deliveries``-th failure go to the dead letters with the model's error (so
  does an event whose file's store was away);
- it was delivered more than ``max_deliveries`` times (consumers died with it), or it was
  trimmed from the stream while pending: a dead letter, unscored.

Redis away: each call is tried again with backoff, and the batch in hand is committed when
Redis is back (a commit repeated after a lost reply writes nothing twice).

With ``--features features.yaml``, each event's per-key window features are computed from
the window state in Redis (and the batch's earlier events) before the model sees it, and the
state the batch adds is written by the same commit (``workers/_stream_features.py``).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from opentelemetry.trace import SpanKind, Tracer

from serving import scorers, tracing
from serving.errors import (
    EntryTrimmed,
    InputError,
    InvalidName,
    MMServeError,
    RedisUnavailable,
    TooManyDeliveries,
)
from serving.features.spec import FeatureSpec
from serving.registry import Registry
from serving.settings import BatchSettings, Settings, StreamSettings
from workers._stream_codec import dead_letter, decode, outputs
from workers._stream_features import Featured, StreamFeatures
from workers._stream_files import Files
from workers._stream_log import Committed, DeadLetter, Event, EventLog, Names, Outputs
from workers._stream_metrics import StreamMetrics
from workers._stream_redis import RedisEventLog
from workers._stream_scoring import LiveModel, score
from workers.queue import backoff

__all__ = ["Consumer", "EventLog", "LiveModel", "Names", "RedisEventLog", "serve"]

log = logging.getLogger("mmserve.stream")
T = TypeVar("T")
_POLL_S = 0.001
"""How often a batch that has begun looks for more events (Redis times blocking reads out
in steps of its ``hz``, 100 ms by default: too coarse to wait a few ms with)."""
SOURCE = "mmserve.stream.source"
EVENTS = "mmserve.stream.events"
DEAD = "mmserve.stream.dead_letters"


class Consumer:
    """Scores a log's events with a model, batch after batch (see the module docstring)."""

    def __init__(
        self,
        log: EventLog,
        model: LiveModel,
        settings: StreamSettings,
        metrics: StreamMetrics | None = None,
        source: str = "the source",
        max_file_bytes: int = BatchSettings().max_file_bytes,
        tracer: Tracer | None = None,
        features: StreamFeatures | None = None,
    ):
        self.log = log
        self.features = features
        """With window features: computed before the model sees the batch."""
        self.tracer = tracer
        """With tracing on: a span a batch."""
        self.model = model
        self.settings = settings
        self.metrics = metrics or StreamMetrics()
        reserved = {"source_id", "model", "version", *model.scorer.outputs}
        if settings.id_field in reserved:
            raise InvalidName("id field", settings.id_field, "every output has a field so named")
        self._source = source
        trimmed = EntryTrimmed(source)
        self._trimmed = {"error": type(trimmed).__name__, "reason": trimmed.message}
        self._next_claim = self._next_gauge = 0.0
        self._files = Files(model.registry.store, max_file_bytes, "MMSERVE_BATCH__MAX_FILE_BYTES")

    def open(self, stop: threading.Event) -> bool:
        """Get the log ready (Redis may be away: tried until it answers); False if stopped."""

        def opened() -> bool:
            self.log.open()
            return True

        return self._retrying(opened, stop) is not None

    def run(self, stop: threading.Event) -> None:
        """Score batches until ``stop`` is set; every batch read is committed first."""
        while not stop.is_set():
            self.step(stop)
        ahead = self._retrying(self.log.take_ahead, None)  # a read begun: its events too
        if ahead:
            self._process(ahead)

    def step(self, stop: threading.Event | None = None) -> int:
        """Gather a batch, score it, commit it; the number of events it held.

        While a full batch scores, the next one is asked for already (``read_ahead``): the
        log reads it while this process scores, so their times overlap instead of adding
        up. It is pending on this consumer like any batch read: if the process dies with
        it, it is delivered again (claimed, or read back at the next start), and a commit
        writes only what is still pending here."""
        stop = stop or threading.Event()
        events = self._retrying(lambda: self._gather(stop), stop)
        if not events:
            return 0
        if len(events) >= self.settings.batch_size and not stop.is_set():
            self._retrying(lambda: self.log.read_ahead(self.settings.batch_size), None)
        self._process(events)
        return len(events)

    def _process(self, events: list[Event]) -> None:
        if self.tracer is None:
            self._commit(events)
            return
        attributes: dict[str, Any] = {SOURCE: self._source, EVENTS: len(events)}
        with self.tracer.start_as_current_span(
            "stream batch", kind=SpanKind.CONSUMER, attributes=attributes
        ) as span:
            batch, dead, ref = self._commit(events)
            span.set_attributes({**tracing.pinned(ref, len(batch)), DEAD: len(dead)})

    def _commit(self, events: list[Event]) -> tuple[Outputs, list[DeadLetter], str]:
        """Score the batch and commit it; its outputs, dead letters and model version."""
        batch, dead, ref, featured = self._score(events)

        def commit() -> Committed:
            if featured is None:
                return self.log.commit(batch, dead)
            return self.log.commit(batch, dead, featured.changes)

        # Committed however long Redis is away, even once asked to stop: the work is done.
        committed = self._retrying(commit, None)
        assert committed is not None  # never given up on without a stop event
        self._account(events, batch, dead, committed, ref)
        if featured is not None:
            assert self.features is not None
            written = {*batch.source_ids, *(letter.source_id for letter in dead)}
            acknowledged = written - committed.skipped  # not those left pending: see committed
            self.features.committed(featured, committed, acknowledged)
            if featured.late:
                self._account_late(featured.late & acknowledged, dead)
        return batch, dead, ref

    # -- gathering -------------------------------------------------------------------------

    def _gather(self, stop: threading.Event) -> list[Event]:
        now = time.monotonic()
        if now >= self._next_gauge:
            self.metrics.pending.set(self.log.pending())
            self._next_gauge = now + 1.0
        if now >= self._next_claim:
            claimed = self._claim(now)
            if claimed:
                return claimed
        events = self.log.read(self.settings.batch_size, self.settings.block_ms)
        if events and self.settings.max_wait_ms > 0:
            self._fill(events, stop)
        return events

    def _claim(self, now: float) -> list[Event]:
        """Entries other consumers left pending past ``claim_idle_ms`` (they died)."""
        claimed = self.log.claim(self.settings.batch_size, self._trimmed)
        if claimed.trimmed:
            self.metrics.dead_lettered.labels("EntryTrimmed").inc(claimed.trimmed)
        if claimed.done:  # a whole scan: the next when more entries could have gone idle
            self._next_claim = now + self.settings.claim_idle_ms / 2000
        return claimed.events

    def _fill(self, events: list[Event], stop: threading.Event) -> None:
        """Add to ``events`` what arrives, up to ``batch_size``, until the oldest of them
        has waited ``max_wait_ms``: events that queued up during the last model call (a
        slow model's) are scored at once. Their age is read on Redis' clock; a consumer
        whose clock is ahead only batches less, one behind never waits more than that."""
        size = self.settings.batch_size
        waited = max(0.0, time.time() - events[0].time_ms / 1000)
        deadline = time.monotonic() + self.settings.max_wait_ms / 1000 - waited
        while len(events) < size and not stop.is_set():
            more = self.log.read(size - len(events), 0)
            events += more
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if not more:
                time.sleep(min(left, _POLL_S))

    # -- scoring ---------------------------------------------------------------------------

    def _score(
        self, events: Sequence[Event]
    ) -> tuple[Outputs, list[DeadLetter], str, Featured | None]:
        """The batch's outputs and dead letters, the model version (a chain: each step's)
        that scored it, and its window features (if any)."""
        scorer = self.model.current()
        id_field = self.settings.id_field
        live, dead = self._unscorable(events)
        featured = self._featured(live) if live else None
        if featured is not None:
            live = featured.events
            dead += [self._letter(e, errs, _given(e, id_field)) for e, errs in featured.bad]
        decoded = decode(live, scorer.inputs, self.settings.json_field, id_field, self._files)
        for i, errs in decoded.bad.items():
            if any(e.retryable for e in errs) and live[i].deliveries < self.settings.max_deliveries:
                # a referenced file's store away: left pending, as on a model's error
                log.warning("entry %s, delivery %d: %s", live[i].id, live[i].deliveries, errs[0])
            else:
                dead.append(self._letter(live[i], errs, decoded.ids[i]))
        scored = score(scorer, decoded.table)
        for row, err in scored.failed:
            event, event_id = live[decoded.rows[row]], decoded.ids[decoded.rows[row]]
            if isinstance(err, InputError) or event.deliveries >= self.settings.max_deliveries:
                dead.append(self._letter(event, [err], event_id))
            else:  # left pending: delivered again (and counted) after claim_idle_ms
                log.warning("entry %s, delivery %d: %s", event.id, event.deliveries, err.message)
        if len(dead) > 1:
            position = {e.id: k for k, e in enumerate(events)}
            dead.sort(key=lambda letter: position[letter.source_id])
        rows = [decoded.rows[row] for row in scored.rows]
        scored_events, ids = [live[i] for i in rows], [decoded.ids[i] for i in rows]
        # outputs() takes "name:version"; a chain's is "prep,fraud:1,7", its fields step by step.
        name, version = scorers.labels(scorer.ref)
        batch = outputs(scored.table, scored_events, ids, id_field, f"{name}:{version}")
        return batch, dead, scorer.ref, featured

    def _featured(self, events: list[Event]) -> Featured | None:
        """The window features of ``events`` (their state read from Redis, however long it
        is away: the batch is in hand); ``None`` without features."""
        features = self.features
        if features is None:
            return None
        featured = self._retrying(lambda: features.apply(events), None)
        assert featured is not None  # never given up on without a stop event
        return featured

    def _unscorable(self, events: Sequence[Event]) -> tuple[list[Event], list[DeadLetter]]:
        """The events to score, and the dead letters of those trimmed from the log or
        delivered past the limit."""
        limit, id_field = self.settings.max_deliveries, self.settings.id_field
        live: list[Event] = []
        dead: list[DeadLetter] = []
        for event in events:
            if event.trimmed:
                dead.append(self._letter(event, [EntryTrimmed(self._source)]))
            elif event.deliveries > limit:
                error = TooManyDeliveries(event.deliveries, limit)
                dead.append(self._letter(event, [error], _given(event, id_field)))
            else:
                live.append(event)
        return live, dead

    def _letter(
        self, event: Event, errors: Sequence[MMServeError], event_id: str | None = None
    ) -> DeadLetter:
        return dead_letter(event, errors, self.settings.id_field, event_id)

    def _account(
        self,
        events: Sequence[Event],
        batch: Outputs,
        dead: Sequence[DeadLetter],
        committed: Committed,
        ref: str,
    ) -> None:
        skipped = committed.skipped
        ids = [i for i in batch.source_ids if i not in skipped] if skipped else batch.source_ids
        self.metrics.scored(*scorers.labels(ref), committed.time_s - _entry_times_s(ids))
        self.metrics.batch_size.observe(len(events))
        for letter in dead:
            if letter.source_id not in skipped:
                self.metrics.dead_lettered.labels(letter.fields["error"]).inc()
        if skipped:
            log.info("%d entries of the batch were claimed by another consumer first", len(skipped))

    def _account_late(self, late: set[str], dead: Sequence[DeadLetter]) -> None:
        """Count the late events acknowledged (one left pending counts when scored again)."""
        lettered = {letter.source_id for letter in dead}
        for entry in late:
            self.metrics.late.labels("dead_lettered" if entry in lettered else "scored").inc()

    # -- Redis away ------------------------------------------------------------------------

    def _retrying(self, call: Callable[[], T], stop: threading.Event | None) -> T | None:
        """``call()``, tried again with jittered backoff (a random wait up to 0.1 s, doubling
        to 5 s: consumers cut off together do not all come back together) while Redis is away;
        ``None`` if ``stop`` is set meanwhile (never, without one)."""
        attempt = 0
        while True:
            try:
                return call()
            except RedisUnavailable as err:
                delay = backoff(attempt, 0.1, 5.0)
                log.warning("%s; trying again in %.1f s", err.message, delay)
                self.metrics.retries.inc()
                attempt += 1
                if stop is None:
                    time.sleep(delay)
                elif stop.wait(delay):
                    return None


def _given(event: Event, id_field: str | None) -> str | None:
    """The event's id field, if asked for and given."""
    return event.fields.get(id_field) if id_field and event.fields else None


def _entry_times_s(ids: Sequence[str]) -> np.ndarray:
    """When the entries ``ids`` were written (seconds since the epoch): their ids' ms part,
    read in one Arrow call rather than an int() per event."""
    if not ids:
        return np.zeros(0)
    ms = pc.list_element(pc.split_pattern(pa.array(ids, pa.string()), "-", max_splits=1), 0)
    return pc.cast(ms, pa.int64()).to_numpy() / 1000


def serve(
    settings: Settings,
    options: StreamSettings,
    names: Names,
    ref: str,
    stop: threading.Event,
    features: FeatureSpec | None = None,
) -> None:
    """Run a consumer of ``names`` with the model ``ref`` on ``settings.redis`` until
    ``stop`` is set; the batch begun when it is set is committed first. With ``features``,
    each event's window features are computed before the model sees it."""
    import redis

    url = str(settings.redis)
    client: Any = redis.Redis.from_url(
        url,
        decode_responses=True,
        encoding_errors="replace",  # a binary value is a bad event, not a stuck consumer
        socket_connect_timeout=2,
        socket_timeout=options.block_ms / 1000 + 10,
        health_check_interval=10,
    )
    model = LiveModel(Registry.from_settings(settings), ref, options.follow)
    entries = RedisEventLog(
        client, names, start=options.start, claim_idle_ms=options.claim_idle_ms, url=url
    )
    metrics = StreamMetrics()
    limit = settings.batch.max_file_bytes
    tracer = tracing.tracer(settings)
    windows = None
    if features is not None:
        windows = StreamFeatures(features, client, url, options.json_field)
    consumer = Consumer(entries, model, options, metrics, names.source, limit, tracer, windows)
    if options.metrics_port is not None:
        metrics.serve(options.metrics_host, options.metrics_port)
    try:
        if not consumer.open(stop):
            return
        log.info(
            "consuming %r as %s/%s with %s: outputs to %r, dead letters to %r",
            names.source, names.group, names.consumer, model.scorer.ref,
            names.sink, names.dead_letter,
        )  # fmt: skip
        # What the start made (the imports, the model) lives as long as the process: out
        # of the collector's sight, a full collection scans only what batches made, in ms,
        # not the ~100 ms that stalled a batch's events now and then.
        gc.freeze()
        consumer.run(stop)
    finally:
        metrics.close()
        client.close()
    log.info("stopped: every batch read was committed")
