"""What a stream consumer reads and commits, and the interface a transport provides.

An :class:`EventLog` is the whole contract between the scoring loop and the event log it
runs on (Redis Streams today, in ``workers/_stream_redis.py``; Kafka or NATS could follow
without touching the scoring): read events, take over the ones a dead consumer left, and
commit outputs, dead letters and acknowledgements in ONE atomic step, so an output exists
if and only if its input was acknowledged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from serving.features.state import Changes


@dataclass(frozen=True, slots=True)
class Names:
    """The streams and names a consumer works with."""

    source: str
    sink: str
    dead_letter: str
    group: str
    consumer: str


class Event:
    """One entry of the source stream.

    A log may hand over an entry's fields as the flat list it read (``flat``: name, value,
    name, value...): the dict of :attr:`fields` is then made only if asked for, since a batch
    of events that share one field layout is decoded by position (``decode``), and a dict
    per event was a tenth of a cheap model's whole time."""

    __slots__ = ("_fields", "_time_ms", "deliveries", "flat", "id")

    def __init__(
        self,
        id: str,
        fields: dict[str, str] | None,
        deliveries: int,
        time_ms: int | None = None,
        *,
        flat: list[str] | None = None,
    ):
        self.id = id
        self.deliveries = deliveries
        """How many times the entry was handed to a consumer, this time included."""
        self.flat = flat
        self._fields = fields
        self._time_ms = time_ms

    @property
    def fields(self) -> dict[str, str] | None:
        """``None`` when the entry was trimmed from the log while it was pending."""
        if self._fields is None and self.flat is not None:
            flat = self.flat
            self._fields = dict(zip(flat[::2], flat[1::2], strict=True))
        return self._fields

    @property
    def trimmed(self) -> bool:
        """The entry was trimmed from the log while it was pending: it has no fields."""
        return self.flat is None and self._fields is None

    @property
    def time_ms(self) -> int:
        """When it was written, in ms since the epoch, on the log's clock (its id's time)."""
        if self._time_ms is None:
            self._time_ms = int(self.id.split("-", 1)[0])
        return self._time_ms

    def __repr__(self) -> str:
        return f"Event({self.id!r}, {self.fields!r}, {self.deliveries}, {self.time_ms})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        mine = (self.id, self.fields, self.deliveries, self.time_ms)
        return mine == (other.id, other.fields, other.deliveries, other.time_ms)

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass it replaced


@dataclass(frozen=True, slots=True)
class Outputs:
    """The output entries of a batch, by column: output ``i`` has the field ``name`` set
    to ``columns[name][i]``, and every ``constant`` field (the model and its version)."""

    source_ids: list[str]
    columns: dict[str, list[str]]
    constant: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.source_ids)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An entry for the dead-letter stream, standing for the source entry ``source_id``."""

    source_id: str
    fields: dict[str, str]


@dataclass(frozen=True, slots=True)
class Committed:
    """What a commit did."""

    skipped: frozenset[str]
    """Source entries that were no longer pending on this consumer (another one claimed
    them): nothing was written for them here; the other consumer's commit counts."""
    time_s: float
    """The log's clock when the commit ran (seconds since the epoch)."""
    fresh: frozenset[str] = frozenset()
    """Window state keys the commit changed that no one else had changed since the batch
    read them: the consumer's copy of each, plus what it added, is the state."""


@dataclass(frozen=True, slots=True)
class Claimed:
    """Entries taken over from consumers that left them pending too long."""

    events: list[Event]
    trimmed: int
    """Entries gone from the log while pending: dead-lettered and acknowledged already."""
    done: bool
    """The scan went through every pending entry (start it again later)."""


class EventLog(Protocol):
    """Where a consumer's events come from and its outputs go; every call raises
    :class:`~serving.errors.RedisUnavailable` (or its like) while the log is away."""

    def open(self) -> None:
        """Get ready to read (make the consumer group, if there is none)."""
        ...

    def read(self, count: int, block_ms: int) -> list[Event]:
        """Up to ``count`` events for this consumer: first the ones it was given before and
        never committed (a previous run's), then new ones, waiting up to ``block_ms`` for
        the first of them (0: not at all)."""
        ...

    def read_ahead(self, count: int) -> None:
        """Begin reading up to ``count`` new events without waiting for them: the next
        :meth:`read` (or :meth:`take_ahead`) returns them first. A log that cannot read
        ahead does nothing."""
        ...

    def take_ahead(self) -> list[Event]:
        """The events of a read begun by :meth:`read_ahead` (none: ``[]``)."""
        ...

    def claim(self, count: int, trimmed: Mapping[str, str]) -> Claimed:
        """Take over up to ``count`` entries pending too long on any consumer; those the log
        no longer holds are written to the dead letters (``source_id`` and the ``trimmed``
        fields) and acknowledged in the same atomic step."""
        ...

    def commit(
        self, outputs: Outputs, dead: Sequence[DeadLetter], changes: Changes | None = None
    ) -> Committed:
        """In one atomic step, for the source entries still pending on this consumer: write
        their outputs and dead letters (and their window ``changes``), and acknowledge
        them."""
        ...

    def pending(self) -> int:
        """Entries handed to the group's consumers and not committed yet."""
        ...
