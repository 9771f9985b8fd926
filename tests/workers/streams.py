"""What the stream tests share: events in and out of Redis, models that stop or fail where
a test wants them to, and real ``mmserve stream`` processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import redis
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

from tests import fixtures
from tests.services import kill_group, redis_server


class GatedLogistic(LogisticRegression):
    """A LogisticRegression that, after ``free_calls`` calls, waits while the file ``gate``
    exists (and touches ``<gate>.held`` meanwhile): a consumer stopped inside a batch,
    with the batch pending, exactly when a test wants it."""

    def gated(self, gate: Path, free_calls: int) -> GatedLogistic:
        self.gate, self.free_calls = str(gate), free_calls
        return self

    def predict_proba(self, x: Any) -> np.ndarray:
        self.calls = getattr(self, "calls", 0) + 1
        gate = getattr(self, "gate", None)
        if gate is not None and self.calls > self.free_calls:
            while os.path.exists(gate):
                Path(f"{gate}.held").touch()
                time.sleep(0.01)
        return super().predict_proba(x)


class PickyModel(ClassifierMixin, BaseEstimator):
    """Answers ``proba_1 = sigmoid(f0)``, and raises for a whole call when any row has
    ``f0 > 1000``: the one bad event that makes a model call fail."""

    def fit(self, x: Any, y: Any) -> PickyModel:
        self.classes_ = np.unique(y)
        self.n_features_in_ = np.asarray(x).shape[1]
        return self

    def predict_proba(self, x: Any) -> np.ndarray:
        x = np.asarray(x)
        if (x[:, 0] > 1000).any():
            raise ValueError("f0 out of range")
        p = 1 / (1 + np.exp(-x[:, 0]))
        return np.column_stack([1 - p, p])


def rows(n: int, seed: int = 7) -> np.ndarray:
    return fixtures.numeric_data(n, seed)[0]


def table(x: np.ndarray) -> pa.Table:
    return fixtures.numeric_table(x)


def fields(row: np.ndarray) -> dict[str, str]:
    """An event's feature fields: each float as the shortest text that reads back to it."""
    return {name: repr(float(v)) for name, v in zip(fixtures.FEATURES, row, strict=True)}


def produce(client: Any, stream: str, events: list[dict[str, str]]) -> list[str]:
    """XADD every event, in order; their entry ids."""
    ids: list[str] = []
    for start in range(0, len(events), 1000):
        with client.pipeline(transaction=False) as pipe:
            for event in events[start : start + 1000]:
                pipe.xadd(stream, event)
            ids += pipe.execute()
    return ids


def entries(client: Any, stream: str) -> list[dict[str, str]]:
    """Every entry of ``stream``, oldest first, as its fields."""
    return [f for _, f in client.xrange(stream)]


def wait_for(check: Callable[[], object], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds:.0f} s")
        time.sleep(0.02)


@contextmanager
def mmserve_stream(env: dict[str, str], log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``mmserve stream`` (its own process group), once it consumes; SIGTERMed (and
    SIGKILLed if it will not go) when the block ends, if it still runs."""
    mmserve = os.path.join(os.path.dirname(sys.executable), "mmserve")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [mmserve, "stream", *args],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: b'"consuming ' in log.read_bytes() or proc.poll() is not None, str(log))
        if proc.poll() is not None:
            raise RuntimeError(f"mmserve stream exited with {proc.returncode}: {log.read_text()}")
        yield proc
    finally:
        if proc.poll() is None:
            kill_group(proc, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                kill_group(proc, signal.SIGKILL)
                proc.wait(10)


def scored_by_a_stream(
    store_url: str, model: str, events: list[dict[str, str]], log: Path
) -> list[dict[str, str]]:
    """The output entries of ``events`` (each with an ``id`` field) scored by a real
    ``mmserve stream`` of ``model`` on a throwaway Redis, in order."""
    with redis_server() as broker, redis.Redis.from_url(broker.url, decode_responses=True) as r:
        produce(r, "events", events)
        env = {"MMSERVE_STORE_URL": store_url, "MMSERVE_REDIS_URL": broker.url}
        args = ["--model", model, "--source", "events", "--sink", "outputs"]
        args += ["--group", "g", "--start", "0", "--id-field", "id"]
        with mmserve_stream(env, log, *args):
            wait_for(lambda: r.xlen("outputs") == len(events), f"{len(events)} outputs")
        return entries(r, "outputs")
