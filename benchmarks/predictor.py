"""The predictor's overhead over calling the model directly, and the registry's load times.

    .venv/bin/python benchmarks/predictor.py [--quick]

Baseline: ``model.predict_proba(x)`` on a C-contiguous float32 numpy array. Predictor:
``predictor.predict(table)`` on a pyarrow Table holding the same rows as float32 columns.
The two are timed alternately in one loop (which goes first alternates too) and the median
of each is reported, so drifts of a noisy machine hit both alike. BLAS runs on one thread
for both. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import sklearn
from rich.console import Console
from rich.table import Table
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from serving.registry import Registry
from serving.store import Store

FEATURES = 20
BATCHES = (1, 100, 10_000, 100_000)
TARGETS = {1: 1.5, 100_000: 1.10}  # the targets; other sizes are for information


@dataclass(frozen=True)
class Budget:
    """How long to spend on each case, and the bounds on its repetitions."""

    seconds: float
    min_reps: int
    max_reps: int


FULL = Budget(seconds=4.0, min_reps=7, max_reps=3000)
QUICK = Budget(seconds=0.5, min_reps=3, max_reps=300)


def synthetic(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    signal = x[:, 0] + 0.5 * x[:, 1] - x[:, 2] * x[:, 3]
    return x, (signal + rng.normal(scale=0.5, size=rows) > 0).astype(np.int64)


def as_table(x: np.ndarray) -> pa.Table:
    return pa.table({f"f{i}": np.ascontiguousarray(x[:, i]) for i in range(x.shape[1])})


def median_pair(
    a: Callable[[], Any], b: Callable[[], Any], budget: Budget
) -> tuple[float, float, int]:
    """Median seconds per call of ``a`` and of ``b``, timed alternately; and the repetitions."""
    a(), b()  # warm up
    started = time.perf_counter()
    a(), b()
    reps = int(budget.seconds / (time.perf_counter() - started))
    reps = max(budget.min_reps, min(budget.max_reps, reps))
    times: tuple[list[float], list[float]] = ([], [])
    gc.disable()
    try:
        for rep in range(reps):
            for i in (0, 1) if rep % 2 == 0 else (1, 0):
                call = (a, b)[i]
                started = time.perf_counter()
                call()
                times[i].append(time.perf_counter() - started)
    finally:
        gc.enable()
    return statistics.median(times[0]), statistics.median(times[1]), reps


def median_call(call: Callable[[], Any], reps: int) -> float:
    call()
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    return f"{seconds * 1e3:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


def overhead(registry: Registry, names: list[str], budget: Budget, quick: bool) -> Table:
    out = Table("model", "rows", "reps", "baseline", "predictor", "ratio", "target", "result")
    x_all, _ = synthetic(max(BATCHES), seed=1)
    for name in names:
        predictor = registry.load(f"{name}:1")
        model = predictor.model  # the same loaded estimator the predictor calls
        for rows in BATCHES:
            if quick and name == "rf" and rows > 10_000:
                out.add_row(name, f"{rows:,}", "", "skipped (--quick)")
                continue
            x = np.ascontiguousarray(x_all[:rows])
            base, pred, reps = median_pair(
                partial(model.predict_proba, x), partial(predictor.predict, as_table(x)), budget
            )
            ratio, target = pred / base, TARGETS.get(rows)
            goal = "" if target is None else f"<= {target:.2f}x"
            verdict = "" if target is None else ("PASS" if ratio <= target else "MISS")
            cells = (fmt(base), fmt(pred), f"{ratio:.2f}x", goal, verdict)
            out.add_row(name, f"{rows:,}", str(reps), *cells)
    return out


def loads(registry: Registry, budget: Budget) -> Table:
    out = Table("call", "what it does", "median per call")
    cached = {
        "lr:1": "pinned version: cache hit, no store read",
        "lr@production": "reads aliases.json, cache hit",
        "lr": "reads aliases.json, cache hit",
    }
    for ref, what in cached.items():
        seconds = median_call(partial(registry.load, ref), budget.max_reps)
        out.add_row(f'load("{ref}")', what, fmt(seconds))
    for name in ("lr", "rf"):
        seconds = median_call(partial(cold_load, registry, name), budget.min_reps)
        out.add_row(f'load("{name}:1")', "cold: store read, sha256, skops load", fmt(seconds))
    return out


def cold_load(registry: Registry, name: str) -> None:
    registry.cache.discard((name, 1))
    registry.load(f"{name}:1")


def train() -> dict[str, Any]:
    x, y = synthetic(20_000)
    forest = RandomForestClassifier(n_estimators=100, max_depth=10, n_jobs=1, random_state=0)
    return {"lr": LogisticRegression(max_iter=1000).fit(x, y), "rf": forest.fit(x, y)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs; skips rf at 100k rows")
    quick = parser.parse_args().quick
    budget = QUICK if quick else FULL
    console = Console(width=100)
    console.print(
        f"{platform.node()} · {os.cpu_count()} cores · Python {platform.python_version()} · "
        f"numpy {np.__version__} · pyarrow {pa.__version__} · scikit-learn {sklearn.__version__}"
    )
    # One BLAS thread for baseline and predictor alike: on a shared 2-core machine a second
    # BLAS thread waiting for a busy core made single calls up to 8x slower, at random.
    threadpool_limits(1)
    models = train()
    with tempfile.TemporaryDirectory() as tmp:
        registry = Registry(Store.from_url(tmp))
        example = as_table(synthetic(16, seed=2)[0])  # float32 columns: a float32 input schema
        for name, model in models.items():
            registry.register(model, name=name, alias="production", input_example=example)
        console.print(overhead(registry, list(models), budget, quick))
        console.print("The predictor pads every call to a multiple of 8 rows (1 row runs as 8).")
        console.print(loads(registry, budget))


if __name__ == "__main__":
    main()
