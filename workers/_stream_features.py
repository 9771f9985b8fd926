"""Window features in a stream consumer (``mmserve stream --features features.yaml``): a
batch's features computed from the state in Redis before the model sees it, added to each
event as fields (the model's input schema names them like any other), and the state the
batch adds handed to the commit, which writes it with the outputs and acknowledgements.
"""

from __future__ import annotations

import json
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from serving.errors import LateEvent, MMServeError
from serving.features import state, windows
from serving.features.spec import FeatureSpec
from workers._stream_log import Committed, Event


@dataclass(slots=True)
class Featured:
    """A batch with its features."""

    events: list[Event]
    """The events to score, each with its features added to its fields."""
    bad: list[tuple[Event, list[MMServeError]]]
    """Events to dead-letter: a key, time or aggregated field missing or unreadable, or
    late (when late events are dead-lettered)."""
    changes: state.Changes
    late: set[str] = field(default_factory=set)
    """The entry ids of the late events (scored or dead-lettered)."""
    added: dict[str, list[tuple[str, windows.Member]]] = field(default_factory=dict)
    """State key -> the members the batch adds to it, with their entry ids."""


class StreamFeatures:
    """The features of a features file, over the state on ``client``'s Redis.

    It keeps a copy of the state of the keys it saw last (up to ``held_keys`` keys and
    ``held_members`` members in all, ~0.5 KB each: the least recently used go first), each
    with its version: a batch reads only the keys whose version changed since (another
    consumer wrote them), not every member of every key it touches; and a commit that finds
    a key as it was read tells it that its copy plus the batch's members is the state."""

    def __init__(
        self,
        spec: FeatureSpec,
        client: Any,
        url: str,
        json_field: str,
        held_keys: int = 100_000,
        held_members: int = 1_000_000,
    ):
        self.spec = spec
        self.client = client
        self.url = url
        self.json_field = json_field
        self.held_keys = held_keys
        self.held_members = held_members
        self._held: OrderedDict[str, tuple[str, windows.Base]] = OrderedDict()
        self._members = 0
        """How many members the copies hold in all."""

    def apply(self, events: Sequence[Event]) -> Featured:
        """Read the state of the batch's keys, compute the features (see
        ``serving/features/windows.py``); :class:`RedisUnavailable` if Redis is away."""
        spec = self.spec
        rows = [(e.id, self._fields(e)) for e in events]
        before = self._state(windows.groups(spec, (fields for _, fields in rows)))
        computed = windows.compute(spec, before, rows)
        names = [state.key(spec, group) for group in before]
        versions = {name: self._held[name][0] for name in names}
        changes = state.Changes(
            idle_ttl_ms=spec.idle_ttl, token=uuid.uuid4().hex, versions=versions
        )
        out = Featured([], [], changes)
        late_error = LateEvent(spec.time.allowed_lateness)
        for i, event in enumerate(events):
            if i in computed.bad:
                out.bad.append((event, computed.bad[i]))
                continue
            if computed.late[i]:
                out.late.add(event.id)
                if spec.time.late == "dead_letter":
                    out.bad.append((event, [late_error]))
                    continue
            values = [(n, _text(computed.columns[n][i])) for n in spec.features]
            out.events.append(_with(event, values))
            out.changes.add(spec, event.id, computed.added[i])
            for group, member in computed.added[i]:
                out.added.setdefault(state.key(spec, group), []).append((event.id, member))
        return out

    def committed(self, featured: Featured, committed: Committed, acknowledged: set[str]) -> None:
        """Bring the copy of each key the commit changed up to date (the commit found it
        as read: the copy plus the members of the entries it acknowledged, expired as the
        commit expires them) or drop it (another consumer changed it meanwhile).

        ``acknowledged``: the entries the commit wrote an output or dead letter for. An
        entry left pending (a model's error, a file's store away) added nothing to Redis,
        so nothing to the copy: it adds its members when it is delivered again, and the
        copy must not then hold them twice."""
        changes = featured.changes
        for name, horizon in zip(changes.keys, changes.horizons, strict=True):
            held = self._drop(name)
            if held is None or name not in committed.fresh:
                continue
            ours = [m for entry, m in featured.added.get(name, ()) if entry in acknowledged]
            held.merge(ours, horizon)
            self._hold(name, changes.token, held)
        while self._held and (
            len(self._held) > self.held_keys or self._members > self.held_members
        ):
            self._drop(next(iter(self._held)))

    def _hold(self, name: str, token: str, base: windows.Base) -> None:
        """Keep ``base`` as the copy of ``name`` at version ``token`` (the most recent)."""
        self._drop(name)
        self._held[name] = (token, base)
        self._members += len(base.times)

    def _drop(self, name: str) -> windows.Base | None:
        """Drop the copy of ``name``; it, if one was held."""
        held = self._held.pop(name, None)
        if held is None:
            return None
        self._members -= len(held[1].times)
        return held[1]

    def _state(self, groups: list[windows.Group]) -> dict[windows.Group, windows.Base]:
        """The state of ``groups``: the copies held where still current, else read."""
        spec = self.spec
        names = {group: state.key(spec, group) for group in groups}
        held = {g: self._held[n][0] for g, n in names.items() if n in self._held}
        fetched = state.fetch(self.client, spec, names, self.url, held)
        before: dict[windows.Group, windows.Base] = {}
        for group, got in fetched.items():
            name = names[group]
            if got is None:
                self._held.move_to_end(name)
            else:
                token, members = got
                self._hold(name, token, windows.Base(members, spec.fields(group[0])))
            before[group] = self._held[name][1]
        return before

    def _fields(self, event: Event) -> dict[str, Any]:
        """An event's fields, with those of its JSON document (unreadable: left to the
        decoder, which names the problem)."""
        fields: dict[str, Any] = dict(event.fields or {})
        document = fields.get(self.json_field)
        if document is not None:
            try:
                parsed = json.loads(document)
            except ValueError:
                return fields
            if isinstance(parsed, dict):
                fields.update(parsed)
        return fields


def _text(value: float | int | None) -> str:
    """A feature as an event field: an integer as such, a float in its shortest form that
    reads back to the same bits."""
    return str(value) if isinstance(value, int) else repr(value)


def _with(event: Event, values: list[tuple[str, str]]) -> Event:
    """``event`` with the fields ``values`` added (after its own, which they replace)."""
    names = {n for n, _ in values}
    flat = event.flat
    if flat is None:
        flat = [x for pair in (event.fields or {}).items() for x in pair]
    if names.intersection(flat[::2]):
        kept = [(n, v) for n, v in zip(flat[::2], flat[1::2], strict=True) if n not in names]
        flat = [x for pair in kept for x in pair]
    added = [x for pair in values for x in pair]
    return Event(event.id, None, event.deliveries, flat=[*flat, *added])
