"""Loaded models, kept in an LRU bounded by count and by estimated memory."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any


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
    time; loads of different keys run in parallel."""

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
        """The cached value, or ``load()``'s ``(value, estimated size in bytes)`` kept."""
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
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > 1 and (
                len(self._entries) > self.max_items or self.used_bytes > self.max_bytes
            ):
                self._entries.popitem(last=False)

    @property
    def used_bytes(self) -> int:
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

    def evict_idle(
        self, idle_seconds: float, keep: Callable[[Hashable], bool] = lambda _: False
    ) -> list[Hashable]:
        """Drop entries unused for ``idle_seconds`` (unless ``keep(key)``); returns their keys."""
        cutoff = time.monotonic() - idle_seconds
        with self._lock:
            idle = [k for k, e in self._entries.items() if e.last_used < cutoff and not keep(k)]
            for key in idle:
                del self._entries[key]
        return idle
