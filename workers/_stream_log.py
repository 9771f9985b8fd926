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


@dataclass(frozen=True, slots=True)
class Names:
    """The streams and names a consumer works with."""

    source: str
    sink: str
    dead_letter: str
    group: str
    consumer: str


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the source stream."""

    id: str
    fields: dict[str, str] | None
    """``None`` when the entry was trimmed from the log while it was pending."""
    deliveries: int
    """How many times the entry was handed to a consumer, this time included."""
    time_ms: int
    """When it was written, in ms since the epoch, on the log's clock."""


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

    def claim(self, count: int, trimmed: Mapping[str, str]) -> Claimed:
        """Take over up to ``count`` entries pending too long on any consumer; those the log
        no longer holds are written to the dead letters (``source_id`` and the ``trimmed``
        fields) and acknowledged in the same atomic step."""
        ...

    def commit(self, outputs: Outputs, dead: Sequence[DeadLetter]) -> Committed:
        """In one atomic step, for the source entries still pending on this consumer: write
        their outputs and dead letters, and acknowledge them."""
        ...

    def pending(self) -> int:
        """Entries handed to the group's consumers and not committed yet."""
        ...
