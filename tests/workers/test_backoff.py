"""Backoff with full jitter: after a Redis restart, workers and consumers come back spread
out, not in lock-step."""

from __future__ import annotations

import random

from workers.queue import backoff


def test_backoff_is_jittered_within_its_bounds() -> None:
    for attempt in range(8):
        bound = min(5.0, 0.1 * 2**attempt)
        delays = {backoff(attempt, 0.1, 5.0, random.Random(seed)) for seed in range(20)}
        assert len(delays) == 20  # the same attempt waits differently in each process
        assert all(0 <= delay <= bound for delay in delays)


def test_backoff_never_passes_its_cap() -> None:
    assert max(backoff(60, 1.0, 30.0, random.Random(seed)) for seed in range(100)) <= 30.0
