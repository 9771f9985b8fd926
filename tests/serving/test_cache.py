"""The loaded-model cache: LRU by count and memory, one load per key, idle eviction."""

from __future__ import annotations

import threading
import time

import pytest

from serving.cache import ModelCache
from serving.errors import ModelTooLarge


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
    evicted = cache.evict_idle(lambda key: None if key == "provisioned" else 0.04)
    assert (evicted, cache.keys()) == (["idle"], ["provisioned", "warm"])


def test_a_model_bigger_than_the_whole_bound_is_refused_and_evicts_nothing() -> None:
    cache = ModelCache(max_items=10, max_bytes=2**20)
    cache.get_or_load(("small", 1), lambda: ("S", 2**19))
    with pytest.raises(ModelTooLarge) as refused:
        cache.get_or_load(("lr", 1), lambda: ("L", 12 * 2**20 + 1))
    assert refused.value.message == (
        "model lr:1 needs ~12.0 MB but the model cache holds at most 1.0 MB "
        "(MMSERVE_CACHE__MAX_MEMORY_MB)"
    )
    assert refused.value.status == 507
    assert (cache.keys(), cache.used_bytes) == ([("small", 1)], 2**19)


def test_sizes_in_the_refusal_read_in_bytes_kb_or_mb() -> None:
    cache = ModelCache(max_bytes=1048)
    with pytest.raises(ModelTooLarge, match=r"^model k needs ~5\.5 KB .* at most 1\.0 KB "):
        cache.get_or_load("k", lambda: ("v", 5632))
    with pytest.raises(ModelTooLarge, match=r"needs ~900 bytes .* at most 800 bytes"):
        ModelCache(max_bytes=800).get_or_load("k", lambda: ("v", 900))


def test_a_refused_key_can_load_again_once_it_fits() -> None:
    cache = ModelCache(max_bytes=100)
    with pytest.raises(ModelTooLarge):
        cache.get_or_load("k", lambda: ("big", 101))
    assert cache.get_or_load("k", lambda: ("fits", 100)) == "fits"
    assert cache.entry("k") is not None


def test_a_model_exactly_the_bound_is_kept_alone() -> None:
    cache = ModelCache(max_bytes=100)
    cache.get_or_load("a", lambda: ("A", 40))
    cache.get_or_load("b", lambda: ("B", 100))
    assert (cache.keys(), cache.used_bytes) == (["b"], 100)


def test_discard_where_drops_every_matching_key() -> None:
    cache = ModelCache()
    for key in (("lr", 1), ("lr", 2), ("price", 1)):
        cache.get_or_load(key, lambda: (object(), 1))
    dropped = cache.discard_where(lambda key: key[0] == "lr")  # type: ignore[index]
    assert (dropped, cache.keys()) == ([("lr", 1), ("lr", 2)], [("price", 1)])


def test_concurrent_loads_and_reads_of_used_bytes_stay_consistent() -> None:
    cache = ModelCache(max_items=4, max_bytes=1000)
    errors: list[BaseException] = []

    def churn(worker: int) -> None:
        try:
            for i in range(300):
                cache.get_or_load((worker, i % 7), lambda: ("v", 100))
                assert cache.used_bytes <= 1000
        except BaseException as err:  # collected: a thread's failure must fail the test
            errors.append(err)

    threads = [threading.Thread(target=churn, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(cache.keys()) <= 4 and cache.used_bytes <= 400
