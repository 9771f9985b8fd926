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


def version(name: str) -> str:
    """The key of the version of the state ``name``: a token each commit that changes the
    state sets anew, so a consumer knows whether its copy is still the state."""
    prefix, _, rest = name.partition(":")
    return f"{prefix}#v:{rest}"


_READ = """
local parts, n = {}, #KEYS / 2
for i = 1, n do
  local token = redis.call('GET', KEYS[n + i]) or ''
  if token ~= '' and token == ARGV[i] then
    parts[i] = 'null'
  else
    local members = table.concat(redis.call('ZRANGE', KEYS[i], 0, -1), ',')
    parts[i] = '[' .. cjson.encode(token) .. ',[' .. members .. ']]'
  end
end
return '[' .. table.concat(parts, ',') .. ']'
"""
"""KEYS: state keys, then their versions' keys. ARGV: the version of each that the caller
holds a copy of ('' none). For each key, ``null`` when the caller's copy is current, else
its version and members (JSON documents themselves) joined into one JSON document, read in
one ``json.loads``: redis-py's own parser costs ~10 µs of Python a member."""

Fetched = tuple[str, list[Member]]
"""A key's version ('' never written, or expired) and members."""


_JSON = json.JSONEncoder(separators=(",", ":"))  # one encoder: json.dumps makes one a call


def encode(member: Member) -> str:
    ms, sequence = member.order
    return _JSON.encode([ms, sequence, member.time_ms, member.values])


def read(
    client: Any, spec: FeatureSpec, groups: Iterable[Group], url: str
) -> dict[Group, list[Member]]:
    """The state of ``groups``, in one round trip; :class:`RedisUnavailable` if Redis is away."""
    fetched = fetch(client, spec, groups, url, {})
    return {group: got[1] for group, got in fetched.items() if got is not None}


def fetch(
    client: Any, spec: FeatureSpec, groups: Iterable[Group], url: str, held: Mapping[Group, str]
) -> dict[Group, Fetched | None]:
    """The version and members of each of ``groups``, or ``None`` for those whose version
    is the one ``held`` (the caller's copy is current); one round trip."""
    wanted = list(dict.fromkeys(groups))
    if not wanted:
        return {}
    names = [key(spec, g) for g in wanted]
    tokens = [held.get(g, "") for g in wanted]
    try:
        reply = client.eval(_READ, 2 * len(names), *names, *map(version, names), *tokens)
    except (redis.ConnectionError, redis.TimeoutError) as err:
        raise RedisUnavailable(url, err) from err
    found: dict[Group, Fetched | None] = {}
    for group, got in zip(wanted, json.loads(reply), strict=True):
        if got is None:
            found[group] = None
            continue
        token, members = got
        found[group] = (token, [Member(t, (ms, seq), values) for ms, seq, t, values in members])
    return found


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
    based_on: list[str] = field(default_factory=list)
    """For each key, the version its members were computed from ('' none)."""
    token: str = ""
    """The version each key this commit changes gets."""
    versions: dict[str, str] = field(default_factory=dict)
    """The version each key was read at (by name): its ``based_on`` once it is touched."""
    _index: dict[str, int] = field(default_factory=dict)

    def add(self, spec: FeatureSpec, entry: str, added: Sequence[tuple[Group, Member]]) -> None:
        """The members ``added`` by the entry ``entry``, for the commit to write with it."""
        for group, member in added:
            name = key(spec, group)
            index = self._index.get(name)
            if index is None:
                index = self._index[name] = len(self.keys)
                self.keys.append(name)
                self.horizons.append(spec.horizon(group[0]))
                self.based_on.append(self.versions.get(name, ""))
            item = (index, str(member.time_ms), encode(member))
            self.members.setdefault(entry, []).append(item)


def changes(spec: FeatureSpec, added: Mapping[str, Sequence[tuple[Group, Member]]]) -> Changes:
    """The :class:`Changes` of the members ``added`` by each entry id."""
    result = Changes(idle_ttl_ms=spec.idle_ttl)
    for entry, members in added.items():
        result.add(spec, entry, members)
    return result
