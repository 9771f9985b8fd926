"""Loaded models, kept in an LRU bounded by count and by estimated memory.

Keys are ``(name, version)`` in the registry; any hashable works.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from serving.errors import ModelTooLarge


@dataclass
class Entry:
    """A cached value and what the serverless mode wants to know about it."""

    value: Any
    size_bytes: int
    load_seconds: float
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    hits: int = 0


class ModelCache:
    """Thread-safe LRU. Loads of one key happen once however many threads ask at the same
    time; loads of different keys run in parallel. A value bigger than ``max_bytes`` on its
    own is refused (:class:`ModelTooLarge`) rather than kept over the bound."""

    def __init__(self, max_items: int = 32, max_bytes: int = 4 << 30):
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[Hashable, threading.Lock] = {}

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            entry.hits += 1
            entry.last_used = time.monotonic()
            return entry.value

    def get_or_load(self, key: Hashable, load: Callable[[], tuple[Any, int]]) -> Any:
        """The cached value, or ``load()``'s ``(value, estimated size in bytes)`` kept; raises
        :class:`ModelTooLarge` (and keeps nothing) when that size exceeds ``max_bytes``."""
        value = self.get(key)
        if value is not None:
            return value
        with self._lock:
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            value = self.get(key)  # another thread may have loaded it meanwhile
            if value is not None:
                return value
            started = time.perf_counter()
            try:
                value, size = load()
                self._put(key, Entry(value, size, time.perf_counter() - started))
            finally:
                # Only once the value is in (or the load failed): a thread arriving before
                # this must find the key lock, not make a new one and load again.
                with self._lock:
                    self._loading.pop(key, None)
            return value

    def _put(self, key: Hashable, entry: Entry) -> None:
        if entry.size_bytes > self.max_bytes:
            # Checked before anything is evicted: a model that can never fit must not empty
            # the cache of the ones that do.
            raise ModelTooLarge(_label(key), entry.size_bytes, self.max_bytes)
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > 1 and (
                len(self._entries) > self.max_items or self._used_bytes() > self.max_bytes
            ):
                self._entries.popitem(last=False)

    @property
    def used_bytes(self) -> int:
        """Estimated memory of the values kept."""
        with self._lock:
            return self._used_bytes()

    def _used_bytes(self) -> int:
        return sum(e.size_bytes for e in self._entries.values())

    def entry(self, key: Hashable) -> Entry | None:
        with self._lock:
            return self._entries.get(key)

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._entries)

    def discard(self, key: Hashable) -> bool:
        with self._lock:
            return self._entries.pop(key, None) is not None

    def discard_where(self, match: Callable[[Hashable], bool]) -> list[Hashable]:
        """Drop every entry whose key ``match``es, at once; returns their keys."""
        with self._lock:
            keys = [k for k in self._entries if match(k)]
            for key in keys:
                del self._entries[key]
        return keys

    def evict_idle(self, ttl: Callable[[Hashable], float | None]) -> list[Hashable]:
        """Drop the entries unused for longer than ``ttl(key)`` seconds (``None``: never);
        returns their keys."""
        now = time.monotonic()
        with self._lock:
            idle = []
            for key, entry in self._entries.items():
                limit = ttl(key)
                if limit is not None and now - entry.last_used > limit:
                    idle.append(key)
            for key in idle:
                del self._entries[key]
        return idle


def _label(key: Hashable) -> str:
    """A registry key ``(name, version)`` as the reference ``name:version``."""
    if isinstance(key, tuple) and len(key) == 2:
        return f"{key[0]}:{key[1]}"
    return str(key)
