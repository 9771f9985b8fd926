"""The loaded-model cache: LRU by count and memory, one load per key, idle eviction."""

from __future__ import annotations

import threading
import time

import pytest

from serving.cache import ModelCache


def test_least_recently_used_goes_first_when_full() -> None:
    cache = ModelCache(max_items=2)
    for key in ("a", "b"):
        cache.get_or_load(key, lambda k=key: (k.upper(), 1))
    assert cache.get("a") == "A"  # a is now the most recent
    cache.get_or_load("c", lambda: ("C", 1))
    assert cache.keys() == ["a", "c"]


def test_memory_bound_evicts_until_it_fits() -> None:
    cache = ModelCache(max_items=10, max_bytes=100)
    cache.get_or_load("a", lambda: ("A", 60))
    cache.get_or_load("b", lambda: ("B", 30))
    cache.get_or_load("c", lambda: ("C", 50))
    assert cache.keys() == ["b", "c"]
    assert cache.used_bytes == 80


def test_concurrent_requests_for_one_key_load_it_once() -> None:
    cache = ModelCache()
    calls = []

    def slow_load() -> tuple[str, int]:
        calls.append(1)
        time.sleep(0.2)
        return "model", 1

    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_load("k", slow_load)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (len(calls), results) == (1, ["model"] * 8)
    entry = cache.entry("k")
    assert entry is not None and entry.load_seconds >= 0.2 and entry.hits == 7


def test_a_request_arriving_while_the_value_is_stored_does_not_load_again() -> None:
    class SlowToStore(ModelCache):
        def _put(self, key, entry) -> None:  # type: ignore[no-untyped-def]
            time.sleep(0.2)
            super()._put(key, entry)

    cache, calls = SlowToStore(), []

    def load() -> tuple[str, int]:
        calls.append(1)
        return "model", 1

    first = threading.Thread(target=cache.get_or_load, args=("k", load))
    first.start()
    time.sleep(0.1)
    assert cache.get_or_load("k", load) == "model"
    first.join()
    assert len(calls) == 1


def test_a_failed_load_is_not_cached() -> None:
    cache = ModelCache()

    def broken() -> tuple[str, int]:
        raise OSError("store down")

    with pytest.raises(OSError):
        cache.get_or_load("k", broken)
    assert cache.get_or_load("k", lambda: ("ok", 1)) == "ok"


def test_idle_entries_are_evicted_unless_kept() -> None:
    cache = ModelCache()
    for key in ("idle", "warm", "provisioned"):
        cache.get_or_load(key, lambda: (object(), 1))
    time.sleep(0.05)
    cache.get("warm")
    evicted = cache.evict_idle(0.04, keep=lambda key: key == "provisioned")
    assert (evicted, cache.keys()) == (["idle"], ["provisioned", "warm"])
