"""The :class:`~workers._stream_log.EventLog` on Redis Streams and a consumer group.

Three Lua scripts do the work, each one atomic step on the Redis server:

- ``_READ``: XREADGROUP, the entries returned packed as one JSON string (redis-py's own
  parser costs ~50 µs of Python per 20-field entry; ``json.loads`` of the packed batch a
  fraction of that). Reading this consumer's own pending entries (id ``0``) also returns
  how many times each was delivered.
- ``_CLAIM``: XAUTOCLAIM of entries idle past the timeout on any consumer, with their
  delivery counts; the entries it reports deleted (trimmed from the stream while pending)
  are written to the dead-letter stream in the same step, so none is silently dropped.
- ``_COMMIT``: for each entry of the batch still pending on THIS consumer (XPENDING of
  what the consumer holds), XADD its output or dead letter (and ZADD its window state
  members, ``serving/features/state.py``), then XACK them all. An entry another
  consumer claimed meanwhile is skipped: its owner's commit writes it. So an output
  exists iff its input was acknowledged, and never twice, even when a commit is retried
  after a lost reply. (A Lua script is as atomic as MULTI/EXEC, and can check first.)

The source, sink and dead-letter keys must live on one Redis (a cluster: give them one
hash tag, ``{events}``, ``{events}:scores``...).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import redis

from serving.errors import RedisUnavailable
from serving.features.state import Changes, version
from workers._stream_log import Claimed, Committed, DeadLetter, Event, Names, Outputs

log = logging.getLogger("mmserve.stream")

_NO_CHANGES = Changes()
"""A stream without window features: its commits change no state."""

_CHECK_STREAMS = """
for n = 1, math.min(#KEYS, 3) do
  local key = KEYS[n]
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'stream' and kind ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. kind .. ', not a stream')
  end
end
"""

_READ = """
local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
  'STREAMS', KEYS[1], ARGV[4])
if not reply then return false end
local entries, counts = reply[1][2], {}
if ARGV[4] ~= '>' then
  for n, entry in ipairs(entries) do
    counts[n] = redis.call('XPENDING', KEYS[1], ARGV[1], entry[1], entry[1], 1, ARGV[2])[1][4]
  end
end
return cjson.encode({entries, counts})
"""
"""KEYS: source. ARGV: group, consumer, count, id (``>`` new entries, else own pending
after it). A trimmed pending entry comes back with ``false`` for its fields."""

_CLAIM = (
    _CHECK_STREAMS
    + """
local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4],
  'COUNT', ARGV[5])
local counts = {}
for n, entry in ipairs(claimed[2]) do
  counts[n] = redis.call('XPENDING', KEYS[1], ARGV[1], entry[1], entry[1], 1, ARGV[2])[1][4]
end
for _, id in ipairs(claimed[3]) do
  redis.call('XADD', KEYS[2], '*', 'source_id', id, unpack(ARGV, 6))
end
return cjson.encode({claimed[1], claimed[2], claimed[3], counts})
"""
)
"""KEYS: source, dead letters. ARGV: group, consumer, min idle ms, cursor, count, then the
dead letter's fields for a trimmed entry."""

_COMMIT = (
    _CHECK_STREAMS
    + """
local group, me, count = ARGV[1], ARGV[2], tonumber(ARGV[3])
local names, constant = cjson.decode(ARGV[4]), cjson.decode(ARGV[5])
local outputs, dead = cjson.decode(ARGV[6]), cjson.decode(ARGV[7])
-- Which of the batch's entries are still pending on this consumer: one read of the oldest
-- it holds (its batch, as a rule; the next batch, read ahead, is newer); if that many came
-- back, an entry not among them may still be pending here: ask for it alone.
local held = {}
local pending = redis.call('XPENDING', KEYS[1], group, '-', '+', count, me)
local function mine(id)
  if held[id] then return true end
  if #pending < count then return false end
  return #redis.call('XPENDING', KEYS[1], group, id, id, 1, me) == 1
end
for _, entry in ipairs(pending) do held[entry[1]] = true end
-- Window state (KEYS[4...]): an acknowledged entry's members are added with it; then each
-- key touched loses what is older than its latest event time minus its horizon.
local members, horizons = cjson.decode(ARGV[8]), cjson.decode(ARGV[9])
local touched = {}
local function add_state(id)
  local added = members[id]
  if not added then return end
  for _, m in ipairs(added) do
    redis.call('ZADD', KEYS[4 + m[1]], m[2], m[3])
    touched[m[1] + 1] = true
  end
end
local acks, skipped, width = {}, {}, #names
local entry = {}  -- one output's XADD arguments, refilled for each
for j = 1, width do entry[2 * j - 1] = names[j] end
for j = 1, #constant do entry[2 * width + j] = constant[j] end
for _, values in ipairs(outputs) do
  if mine(values[1]) then
    for j = 1, width do entry[2 * j] = values[j] end
    redis.call('XADD', KEYS[2], '*', unpack(entry))
    acks[#acks + 1] = values[1]
    add_state(values[1])
  else
    skipped[#skipped + 1] = values[1]
  end
end
for _, letter in ipairs(dead) do
  if mine(letter[1]) then
    redis.call('XADD', KEYS[3], '*', unpack(letter, 2))
    acks[#acks + 1] = letter[1]
    add_state(letter[1])
  else
    skipped[#skipped + 1] = letter[1]
  end
end
if #acks > 0 then redis.call('XACK', KEYS[1], group, unpack(acks)) end
-- Each key changed gets a new version (KEYS after the state keys); it was "fresh" if its
-- version was still the one the batch was computed from: the consumer's copy plus what
-- this commit added is the state.
local based, fresh, count = cjson.decode(ARGV[11]), {}, #horizons
for k in pairs(touched) do
  local name = KEYS[3 + k]
  local latest = redis.call('ZRANGE', name, -1, -1, 'WITHSCORES')[2]
  redis.call('ZREMRANGEBYSCORE', name, '-inf', string.format('%d', tonumber(latest) - horizons[k]))
  redis.call('PEXPIRE', name, ARGV[10])
  local version = KEYS[3 + count + k]
  if (redis.call('GET', version) or '') == based[k] then fresh[#fresh + 1] = k - 1 end
  redis.call('SET', version, ARGV[12], 'PX', ARGV[10])
end
local now = redis.call('TIME')
return {skipped, now[1], now[2], fresh}
"""
)
"""KEYS: source, sink, dead letters, then the window state's keys. ARGV: group, consumer,
how many of the consumer's pending entries to look at (a few more than the batch holds);
then, as JSON: the output field names (``source_id`` first), the constant fields' pairs,
each output's values (in the names' order), each dead letter (its source id, then its
fields' pairs), each entry's state members (``{id: [[key index from 0, time, member]]}``),
each state key's horizon (ms); then the state keys' idle TTL (ms), as JSON the version
each state key was read at, and the version the keys changed get. JSON, decoded by
the server's cjson, because redis-py packs each argument of a command in Python: a batch of
256 outputs as 1,300 arguments cost more than the model call."""


class RedisEventLog:
    """A consumer of a Redis stream's consumer group: see the module's docstring."""

    def __init__(
        self,
        client: Any,
        names: Names,
        *,
        start: Literal["$", "0"] = "$",
        claim_idle_ms: int = 30_000,
        url: str = "redis://",
    ):
        self.redis = client
        self.names = names
        self.claim_idle_ms = claim_idle_ms
        self._url = url
        self._read = client.register_script(_READ)
        self._claim = client.register_script(_CLAIM)
        self._commit = client.register_script(_COMMIT)
        self._own: str | None = "0"  # reading this consumer's own pending entries, after this id
        self._ahead: Any = None  # the connection a read was sent on by read_ahead, unanswered
        self._early: list[Event] | None = None  # that read's events, taken during a commit
        self._cursor = "0-0"  # where the claim scan goes on
        self._start = start

    def open(self) -> None:
        try:
            self._create_group(self._start)
        except (redis.ConnectionError, redis.TimeoutError) as err:
            raise RedisUnavailable(self._url, err) from err

    def read(self, count: int, block_ms: int) -> list[Event]:
        if (self._ahead is not None or self._early is not None) and (events := self.take_ahead()):
            return events
        try:
            with self._errors():
                if self._own is not None:
                    events = self._packed(count, self._own)
                    if events:
                        self._own = events[-1].id
                        return events
                    self._own = None  # drained: new entries from now on
                events = self._packed(count, ">")
                if events or block_ms <= 0:
                    return events
                return self._blocking(block_ms)
        except _GroupLost:
            return []

    def read_ahead(self, count: int) -> None:
        """Send the packed read of up to ``count`` new entries on a connection of its own,
        not waiting for the reply (:meth:`take_ahead` or the next commit reads it): Redis
        runs the script while the caller scores. Not while this consumer's own pending
        entries are read back."""
        if self._ahead is not None or self._early is not None or self._own is not None:
            return
        n = self.names
        self._ahead = self._send(self._read.sha, [n.source], [n.group, n.consumer, count, ">"])

    def take_ahead(self) -> list[Event]:
        early, self._early = self._early, None
        if early is not None:
            return early
        connection, self._ahead = self._ahead, None
        if connection is None:
            return []
        try:
            raw = self._receive(connection)
        except redis.exceptions.NoScriptError:  # a Redis without the script: nothing was read
            return []
        except _GroupLost:
            return []
        return self._unpacked(raw, ">")

    def claim(self, count: int, trimmed: Mapping[str, str]) -> Claimed:
        n = self.names
        args = [n.group, n.consumer, self.claim_idle_ms, self._cursor, count]
        try:
            with self._errors():
                raw = self._claim(keys=[n.source, n.dead_letter], args=args + _flat(trimmed))
        except _GroupLost:
            return Claimed([], 0, True)
        cursor, entries, gone, counts = json.loads(raw)
        self._cursor, gone = cursor, _list(gone)
        events = [_event(e, c) for e, c in zip(_list(entries), _list(counts), strict=True)]
        if gone:
            log.warning(
                "%d entries of %r were trimmed while pending: dead-lettered to %r",
                len(gone), n.source, n.dead_letter,
            )  # fmt: skip
        return Claimed(events, len(gone), cursor == "0-0")

    def commit(
        self, outputs: Outputs, dead: Sequence[DeadLetter], changes: Changes | None = None
    ) -> Committed:
        n = self.names
        changes = changes if changes is not None else _NO_CHANGES
        rows = zip(outputs.source_ids, *outputs.columns.values(), strict=True)
        ids = [*outputs.source_ids, *(d.source_id for d in dead)]
        if not ids:
            return Committed(frozenset(), 0.0)
        args = [
            n.group,
            n.consumer,
            len(ids) + 64,
            _json(["source_id", *outputs.columns]),
            _json(_flat(outputs.constant)),
            _json(list(rows)),
            _json([[d.source_id, *_flat(d.fields)] for d in dead]),
            _json(changes.members) if changes.members else "{}",
            _json(changes.horizons),
            changes.idle_ttl_ms,
            _json(changes.based_on),
            changes.token,
        ]
        versions = [version(k) for k in changes.keys]
        keys = [n.source, n.sink, n.dead_letter, *changes.keys, *versions]
        try:
            if self._ahead is None:
                with self._errors():
                    reply = self._commit(keys=keys, args=args)
            else:
                reply = self._commit_reading_ahead(keys, args)
        except _GroupLost:  # the batch went with the group
            return Committed(frozenset(ids), 0.0)
        skipped, seconds, micros, fresh = reply
        current = frozenset(changes.keys[k] for k in fresh)
        return Committed(frozenset(skipped), int(seconds) + int(micros) / 1e6, current)

    def pending(self) -> int:
        try:
            with self._errors():
                summary = self.redis.xpending(self.names.source, self.names.group)
        except _GroupLost:
            return 0
        return int(summary["pending"])

    # -- helpers ---------------------------------------------------------------------------

    def _commit_reading_ahead(self, keys: list[str], args: list[Any]) -> Any:
        """The commit script's reply; the read ahead's taken (into ``_early``, for the next
        read) while Redis runs it."""
        connection = self._send(self._commit.sha, keys, args)
        try:
            self._early = self.take_ahead()
        except BaseException:  # its reply is lost with its connection; the commit's too
            self._drop(connection)
            raise
        try:
            return self._receive(connection)
        except redis.exceptions.NoScriptError:  # a Redis without the script: it did nothing
            with self._errors():
                return self._commit(keys=keys, args=args)

    def _send(self, sha: str, keys: list[str], args: list[Any]) -> Any:
        """``EVALSHA`` sent on a connection of the pool taken for it; the reply not read."""
        pool = self.redis.connection_pool
        with self._errors():
            connection = pool.get_connection()
        try:
            with self._errors():
                connection.send_command("EVALSHA", sha, len(keys), *keys, *args)
        except BaseException:
            self._drop(connection)
            raise
        return connection

    def _receive(self, connection: Any) -> Any:
        """The reply of what :meth:`_send` sent; the connection back to the pool (closed
        first when the reply is lost: what else it held is unknown)."""
        try:
            with self._errors():
                reply = connection.read_response()
        except redis.ResponseError:  # a reply (NOSCRIPT): the connection is sound
            self.redis.connection_pool.release(connection)
            raise
        except _GroupLost:
            self.redis.connection_pool.release(connection)
            raise
        except BaseException:
            self._drop(connection)
            raise
        self.redis.connection_pool.release(connection)
        return reply

    def _drop(self, connection: Any) -> None:
        connection.disconnect()
        self.redis.connection_pool.release(connection)

    def _packed(self, count: int, after: str) -> list[Event]:
        n = self.names
        raw = self._read(keys=[n.source], args=[n.group, n.consumer, count, after])
        return self._unpacked(raw, after)

    def _unpacked(self, raw: str | None, after: str) -> list[Event]:
        if raw is None:
            return []
        entries, counts = json.loads(raw)
        if after == ">":  # the common case, without a call per entry
            return [Event(i, None, 1, flat=flat or None) for i, flat in entries]
        return [_event(e, c) for e, c in zip(entries, _list(counts), strict=True)]

    def _blocking(self, block_ms: int) -> list[Event]:
        """Wait for the next entry (the server wakes this read the moment one is added);
        one entry only: redis-py's parser is slow, the rest of the batch is read packed."""
        n = self.names
        reply = self.redis.xreadgroup(n.group, n.consumer, {n.source: ">"}, 1, block_ms)
        if not reply:
            return []
        return [_event([i, _flat(f)], 1) for i, f in reply[0][1]]

    def _create_group(self, start: str) -> None:
        try:
            self.redis.xgroup_create(self.names.source, self.names.group, start, mkstream=True)
        except redis.ResponseError as err:
            if not str(err).startswith("BUSYGROUP"):  # the group exists: keep its place
                raise

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Redis errors as the error tree's. A group that vanished (a Redis restarted
        without persistence) is made again, at the stream's start: what producers wrote
        since the restart is new. The call then raises :class:`_GroupLost`."""
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as err:
            raise RedisUnavailable(self._url, err) from err
        except redis.ResponseError as err:
            # NOGROUP is Redis's own error code (the reply's first word), not a class name.
            if not str(err).startswith("NOGROUP"):
                raise
            log.warning(
                "consumer group %r of %r is gone (Redis restarted without persistence?): "
                "made again; entries in flight went with it",
                self.names.group, self.names.source,
            )  # fmt: skip
            self._own, self._cursor, self._early = "0", "0-0", None
            try:
                self._create_group("0")
            except (redis.ConnectionError, redis.TimeoutError) as again:
                raise RedisUnavailable(self._url, again) from again
            raise _GroupLost from err


class _GroupLost(Exception):
    """The consumer group was gone (and is made again): the call's work is void."""


def _event(entry: list[Any], deliveries: int) -> Event:
    """An entry as read: its fields' flat list is kept, made a dict only if asked for; a
    trimmed entry's fields are ``false`` (or, from redis-py, empty)."""
    entry_id, flat = entry
    return Event(entry_id, None, int(deliveries), flat=flat if flat else None)


def _flat(fields: Mapping[str, str]) -> list[str]:
    return [x for pair in fields.items() for x in pair]


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _list(value: Any) -> list[Any]:
    """A Lua array from cjson: an empty Lua table is encoded ``{}``, not ``[]``."""
    return value if isinstance(value, list) else []
