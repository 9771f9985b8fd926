"""Window state in Redis: one sorted set per key value, ``<prefix>:<key field>:<value>``,
each member an event added to it, ``[<entry id's ms>,<its sequence>,<event time ms>,
{"amount":12.5}]``, scored by its event time in ms. A member is named by its entry id, so
adding it again (a commit retried after a lost reply, another consumer group) adds nothing.
The stream's commit writes members (``workers/_stream_redis.py``); this module names keys,
encodes members and reads state.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from serving.errors import RedisUnavailable
from serving.features.spec import FeatureSpec
from serving.features.windows import Group, Member


def key(spec: FeatureSpec, group: Group) -> str:
    """The Redis key of one key value's state."""
    return f"{spec.prefix}:{group[0]}:{group[1]}"


_READ = """
local parts = {}
for n, key in ipairs(KEYS) do
  parts[n] = '[' .. table.concat(redis.call('ZRANGE', key, 0, -1), ',') .. ']'
end
return '[' .. table.concat(parts, ',') .. ']'
"""
"""KEYS: state keys. Their members (JSON documents themselves) joined into one JSON
document, read in one ``json.loads``: redis-py's own parser costs ~10 µs of Python a member,
most of a windowed batch's time."""


def encode(member: Member) -> str:
    ms, sequence = member.order
    return json.dumps([ms, sequence, member.time_ms, member.values], separators=(",", ":"))


def read(
    client: Any, spec: FeatureSpec, groups: Iterable[Group], url: str
) -> dict[Group, list[Member]]:
    """The state of ``groups``, in one round trip; :class:`RedisUnavailable` if Redis is away."""
    wanted = list(dict.fromkeys(groups))
    if not wanted:
        return {}
    try:
        reply = client.eval(_READ, len(wanted), *(key(spec, g) for g in wanted))
    except (redis.ConnectionError, redis.TimeoutError) as err:
        raise RedisUnavailable(url, err) from err
    return {
        group: [Member(t, (ms, sequence), values) for ms, sequence, t, values in members]
        for group, members in zip(wanted, json.loads(reply), strict=True)
    }


@dataclass(slots=True)
class Changes:
    """What a batch adds to the window state, for the commit to write with its outputs:
    each entry's members go in only if that entry is acknowledged in the same step."""

    keys: list[str] = field(default_factory=list)
    """The state keys the batch touches."""
    horizons: list[int] = field(default_factory=list)
    """For each key, how far behind its latest event time state is still needed (ms)."""
    members: dict[str, list[tuple[int, str, str]]] = field(default_factory=dict)
    """Entry id -> its members: (index in ``keys``, event time in ms as text, member)."""
    idle_ttl_ms: int = 0

    def add(self, spec: FeatureSpec, entry: str, added: Sequence[tuple[Group, Member]]) -> None:
        for group, member in added:
            name = key(spec, group)
            index = self._index.get(name)
            if index is None:
                index = self._index[name] = len(self.keys)
                self.keys.append(name)
                self.horizons.append(spec.horizon(group[0]))
            item = (index, str(member.time_ms), encode(member))
            self.members.setdefault(entry, []).append(item)

    _index: dict[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.members)


def changes(spec: FeatureSpec, added: Mapping[str, Sequence[tuple[Group, Member]]]) -> Changes:
    """The :class:`Changes` of the members ``added`` by each entry id."""
    result = Changes(idle_ttl_ms=spec.idle_ttl)
    for entry, members in added.items():
        result.add(spec, entry, members)
    return result
