"""Window features, computed: a batch of events and the state before it in, each event's
features and what it adds to the state out. Pure (no Redis), so the stream consumer and a
real-time request compute alike, and tests hold it against pandas.

What an event ``e`` (event time ``t``, key value ``k`` of a feature's key field) sees:

- the key's *prior* events: the earlier events of the stream (by entry id, so a batch's
  earlier events too) of the same key value that were added (not late);
- its *watermark*: the latest event time among them; ``e`` is **late** when ``t`` is more
  than ``allowed_lateness`` behind the watermark of any of its keys. A late event is
  scored (or dead-lettered, by choice) but added to no window;
- a feature over window ``w``: its aggregate over the prior events with time in
  ``(t - w, t]`` (and not older than the watermark minus the key's horizon, the longest
  window plus the lateness: state older than that is expired), and ``e`` itself.

Sums are exact (``math.fsum``), so neither the order state comes back in nor the order
events were added changes a bit of them.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from serving.errors import InvalidField, MissingField, MMServeError
from serving.features.spec import Feature, FeatureSpec

Group = tuple[str, str]
"""A key field and one of its values: ``("card_id", "c42")``, one window state."""
Value = float | str
_NUMERIC = {"sum", "mean", "min", "max"}


@dataclass(frozen=True, slots=True)
class Member:
    """An event as a key's state holds it: its time, entry id and aggregated fields."""

    time_ms: int
    order: tuple[int, int]
    """Its entry id, as what orders it: ``(ms, sequence)``."""
    values: Mapping[str, Value]

    @classmethod
    def of(cls, time_ms: int, entry: str, values: Mapping[str, Value]) -> Member:
        return cls(time_ms, entry_order(entry), values)

    @property
    def entry(self) -> str:
        return f"{self.order[0]}-{self.order[1]}"


class Base:
    """A key's state from before a batch, by event time, each aggregated field's values in
    a list beside the times: a window over it is a slice, found by bisection. A consumer
    may keep one across batches (:meth:`merge`), as the commit changes the state."""

    __slots__ = ("columns", "fields", "last", "members", "times")

    def __init__(self, members: Sequence[Member], fields: Sequence[str]):
        self.fields = fields
        self.members = sorted(members, key=_time)
        self.times = [m.time_ms for m in self.members]
        # A member written under an earlier features file may lack a field aggregated now
        # (None), or hold it as text where it is summed now: it counts, but is left out of
        # that field's aggregates (see _aggregate), never stopping the consumer.
        self.columns = {f: [m.values.get(f) for m in self.members] for f in fields}
        self.last = max((m.order for m in self.members), default=(-1, -1))
        """The latest entry among the members (or one expired since: never earlier)."""

    @property
    def mark(self) -> int | None:
        """The latest event time (``None``: no member)."""
        return self.times[-1] if self.times else None

    def merge(self, added: Sequence[Member], horizon: int) -> None:
        """Add ``added`` and expire what is at or past ``horizon`` behind the latest time, as
        the commit does in Redis."""
        times = self.times
        for member in added:
            k = bisect.bisect_right(times, member.time_ms)
            self.members.insert(k, member)
            times.insert(k, member.time_ms)
            for name, column in self.columns.items():
                column.insert(k, member.values[name])
            self.last = max(self.last, member.order)
        cut = bisect.bisect_right(times, times[-1] - horizon) if times else 0
        if cut:
            del self.members[:cut], times[:cut]
            for column in self.columns.values():
                del column[:cut]


class _Window:
    """One key's members in a batch: the state from before it (``base``) and the batch's
    own (``added``, in stream order, each with the running latest time)."""

    __slots__ = ("added", "base", "marks", "orders")

    def __init__(self, base: Base):
        self.base = base
        self.added: list[Member] = []
        self.orders: list[tuple[int, int]] = []
        self.marks: list[int] = []

    def add(self, member: Member) -> None:
        """Add a member of the batch, which comes after every one added before."""
        self.added.append(member)
        self.orders.append(member.order)
        self.marks.append(max(self.marks[-1], member.time_ms) if self.marks else member.time_ms)

    def before(self, order: tuple[int, int]) -> tuple[_Window, int, int | None]:
        """What an entry ``order`` sees: a window whose base it follows, how many of its
        added members come before it, and their latest time (``None``: none)."""
        base = self.base
        if base.last < order:  # the rule: the state is older than the batch
            n = len(self.orders)
            if n and self.orders[-1] >= order:
                n = bisect.bisect_left(self.orders, order)
            marks = [m for m in (base.mark, self.marks[n - 1] if n else None) if m is not None]
            return self, n, max(marks, default=None)
        # An entry older than some of the state (a batch claimed after later ones were
        # committed): the members before it, as a window of its own.
        prior = [m for m in (*base.members, *self.added) if m.order < order]
        window = _Window(Base(prior, base.fields))
        return window, 0, window.base.mark


def _time(member: Member) -> int:
    return member.time_ms


@dataclass(slots=True)
class Computed:
    """A batch's features and the state it adds."""

    columns: dict[str, list[float | int | None]]
    """Each feature's value for each event (``None``: the event is in ``bad``)."""
    late: list[bool]
    added: list[list[tuple[Group, Member]]]
    """What each event adds to the state (nothing when late or bad)."""
    bad: dict[int, list[MMServeError]] = field(default_factory=dict)
    """Events whose key, time or aggregated field is missing or unreadable."""


def entry_order(entry: str) -> tuple[int, int]:
    """A stream entry id (``1700000000000-3``) as what orders it."""
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq or 0)


LAST = "18446744073709551615-18446744073709551615"
"""The entry id of a real-time request's row: after every event of the state."""


def compute(
    spec: FeatureSpec,
    state: Mapping[Group, Sequence[Member] | Base],
    events: Sequence[tuple[str, Mapping[str, Any]]],
    now_ms: int | None = None,
) -> Computed:
    """The features of ``events`` (entry id and fields, in stream order) given the ``state``
    of their keys before the batch (see the module docstring). ``now_ms``: the time of an
    event that gives none (a real-time request's row, entry id :data:`LAST`)."""
    names = list(spec.features)
    out = Computed({n: [None] * len(events) for n in names}, [False] * len(events), [])
    working: dict[Group, _Window] = {}
    kinds = _kinds(spec)
    horizons = {key: spec.horizon(key) for key in spec.by_key()}
    kept = {key: spec.fields(key) for key in spec.by_key()}
    for i, (entry, fields) in enumerate(events):
        out.added.append([])
        try:
            time_ms, groups, values = _read(spec, kinds, entry, fields, now_ms)
        except _Bad as bad:
            out.bad[i] = bad.errors
            continue
        order = entry_order(entry)
        prior: dict[str, tuple[_Window, int, int | None]] = {}
        late = False
        for key, group in groups.items():
            window = working.get(group)
            if window is None:
                given = state.get(group, ())
                base = given if isinstance(given, Base) else Base(given, kept[key])
                window = working[group] = _Window(base)
            prior[key] = seen = window.before(order)
            mark = seen[2]
            late = late or (mark is not None and time_ms < mark - spec.time.allowed_lateness)
        for name, feature in spec.features.items():
            own = values[feature.field] if feature.field else 0.0
            horizon = horizons[feature.key]
            out.columns[name][i] = _aggregate(feature, horizon, *prior[feature.key], time_ms, own)
        out.late[i] = late
        if not late:
            for key, group in groups.items():
                member = Member(time_ms, order, {f: values[f] for f in kept[key]})
                working[group].add(member)
                out.added[i].append((group, member))
    return out


def _aggregate(
    feature: Feature,
    horizon: int,
    window: _Window,
    n: int,
    mark: int | None,
    time_ms: int,
    own: Value,
) -> float | int:
    """``feature`` of an event at ``time_ms`` over ``window``'s base and its first ``n``
    added members, whose latest time is ``mark`` (``horizon``: its key's, see
    :meth:`FeatureSpec.horizon`). The base's members in the window are a slice of its
    lists (found by bisection, copied and aggregated in C); the batch's, a few, are scanned."""
    low = (
        time_ms - feature.window if mark is None else max(time_ms - feature.window, mark - horizon)
    )
    times = window.base.times
    lo, hi = bisect.bisect_right(times, low), bisect.bisect_right(times, time_ms)
    extra = [m for m in window.added[:n] if low < m.time_ms <= time_ms]
    if feature.agg == "count":
        return max(hi - lo, 0) + len(extra) + 1  # a late event's low may pass its time
    name = feature.field or ""  # set for every agg but count
    values = window.base.columns[name][lo:hi]
    values.extend(m.values[name] for m in extra)
    values.append(own)
    if feature.agg == "count_distinct":
        distinct = set(values)
        distinct.discard(None)  # a member from before the field was counted (see Base)
        return len(distinct)
    numbers = cast("list[float]", values)  # a sum's, mean's, min's or max's field: numbers
    try:
        return _numeric(feature.agg, numbers)
    except TypeError:  # a member from before the field was summed (see Base): left out
        return _numeric(feature.agg, [v for v in numbers if isinstance(v, float)])


def _numeric(agg: str, numbers: list[float]) -> float:
    """A sum, mean, min or max of ``numbers`` (never empty: the event's own is there)."""
    if agg == "sum":
        return math.fsum(numbers)
    if agg == "mean":
        return math.fsum(numbers) / len(numbers)
    return min(numbers) if agg == "min" else max(numbers)


class _Bad(Exception):
    def __init__(self, errors: list[MMServeError]):
        self.errors = errors


def _kinds(spec: FeatureSpec) -> dict[str, str]:
    """Each aggregated field: ``number`` when a sum, mean, min or max reads it, else text."""
    kinds: dict[str, str] = {}
    for feature in spec.features.values():
        if feature.field:
            numeric = feature.agg in _NUMERIC or kinds.get(feature.field) == "number"
            kinds[feature.field] = "number" if numeric else "text"
    return kinds


def _read(
    spec: FeatureSpec,
    kinds: Mapping[str, str],
    entry: str,
    fields: Mapping[str, Any],
    now_ms: int | None,
) -> tuple[int, dict[str, Group], dict[str, Value]]:
    """An event's time, its groups (by key field) and aggregated values; :class:`_Bad`
    naming every field that is missing or unreadable."""
    errors: list[MMServeError] = []
    time_ms = _event_time(spec.time.field, entry, fields, now_ms, errors)
    groups: dict[str, Group] = {}
    for key in spec.by_key():
        value = fields.get(key)
        if value is None:
            errors.append(MissingField(key))
        else:
            groups[key] = (key, text(value))
    values: dict[str, Value] = {}
    for name, kind in kinds.items():
        raw = fields.get(name)
        if raw is None:
            errors.append(MissingField(name))
        elif kind == "text":
            values[name] = text(raw)
        else:
            try:
                number = float(raw)
            except (TypeError, ValueError, OverflowError):  # OverflowError: a huge int
                number = math.nan
            if not math.isfinite(number) or isinstance(raw, bool):
                errors.append(InvalidField(name, raw, "a finite number"))
            values[name] = number
    if errors:
        raise _Bad(errors)
    return time_ms, groups, values


def _event_time(
    field: str | None,
    entry: str,
    fields: Mapping[str, Any],
    now_ms: int | None,
    errors: list[MMServeError],
) -> int:
    """An event's time (ms): its time ``field``'s, else its entry id's, or ``now_ms`` for a
    real-time request's row that gives none; a field missing or unreadable is added to
    ``errors``."""
    time_ms = entry_order(entry)[0] if now_ms is None else now_ms
    given = None if field is None else fields.get(field)
    if field is None or (given is None and now_ms is not None):
        return time_ms
    if given is None:
        errors.append(MissingField(field))
        return time_ms
    try:
        return event_time_ms(given)
    except ValueError:
        wanted = "a time from 1970 to 9999 (seconds since the epoch, or ISO 8601)"
        errors.append(InvalidField(field, given, wanted))
        return time_ms


LATEST_MS = 253_402_300_799_999
"""The last ms of the year 9999: an event time must lie from 1970 to it. A time past it
(ms read as seconds, 1e300) would become its key's watermark, so every later event would be
late, and it is no longer an exact integer to Redis's scores and Lua."""


def groups(spec: FeatureSpec, rows: Iterable[Mapping[str, Any]]) -> list[Group]:
    """The groups of the keys ``rows`` give: the state to read for them."""
    keys = spec.by_key()
    return [(k, text(row[k])) for row in rows for k in keys if row.get(k) is not None]


def text(value: Any) -> str:
    """A key's value, or a distinct-counted field's, as text that is the same however it
    came: a stream field's "42", a JSON document's 42 or 42.0, a V2 FP64 tensor's 42.0 are
    one card (``str`` made "42.0" of the float, a key of its own with no history)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def event_time_ms(value: Any) -> int:
    """An event time as ms since the epoch: a number of seconds (or its text), or an ISO
    8601 time (UTC when it names no zone), from 1970 to 9999. ``ValueError`` when it is
    none of these."""
    if isinstance(value, bool):
        raise ValueError(value)
    try:
        seconds = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int past a float's
        if not isinstance(value, str):
            raise ValueError(value) from None
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = moment.timestamp()
    if not 0 <= seconds * 1000 <= LATEST_MS:  # NaN too
        raise ValueError(value)
    return round(seconds * 1000)
