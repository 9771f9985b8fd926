"""The demo's stream consumers: one real ``mmserve stream`` process per model on the
demo's Redis, and the two things the demo does with one: add rows as events, and read
the outputs back as the answers' rows."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from subprocess import STDOUT, Popen
from typing import IO, Any

import pyarrow as pa
import redis

from models._server import JOB_TIMEOUT_S, DemoError, Predictions
from models._server import _stop as stop
from models._server import _tail as tail
from serving.settings import Settings

GROUP = "demo"
READY = b'"consuming '
"""What a consumer logs once its group is made and it reads (JSON log lines)."""


@dataclass(frozen=True)
class Consumer:
    """What one consumer is started for: a model reference and the id field of its rows."""

    name: str
    ref: str
    id_field: str

    @property
    def source(self) -> str:
        return f"demo.{self.name}.events"

    @property
    def sink(self) -> str:
        return f"demo.{self.name}.scores"

    @property
    def dead_letter(self) -> str:
        return f"{self.sink}-dlq"


class Streamer:
    """A running consumer, seen from the producer's side."""

    def __init__(self, client: Any, consumer: Consumer):
        self.client = client
        self.consumer = consumer
        self._seen = {consumer.sink: "0", consumer.dead_letter: "0"}

    def score(self, rows: pa.Table, outputs: pa.Schema) -> tuple[Predictions, float]:
        """Add each row as an event (its features as one JSON field, its id beside them)
        and wait for every output: the answers in the rows' order, read back as
        ``outputs`` types, and the seconds from the first event added to the last output
        read."""
        id_field = self.consumer.id_field
        features = rows.drop_columns([id_field]).to_pylist()
        events = [
            {id_field: str(i), "data": json.dumps(row)}
            for i, row in zip(rows[id_field].to_pylist(), features, strict=True)
        ]
        started = time.perf_counter()
        with self.client.pipeline(transaction=False) as pipe:
            for event in events:
                pipe.xadd(self.consumer.source, event)
            ids: list[str] = pipe.execute()
        found = self._wait(set(ids))
        seconds = time.perf_counter() - started
        texts = {name: [found[i][name] for i in ids] for name in outputs.names}
        return pa.table(texts).cast(outputs).to_pylist(), seconds

    def _wait(self, ids: set[str]) -> dict[str, dict[str, str]]:
        """The output of each source entry in ``ids``, by its id; a dead letter of one of
        them, or a wait past the timeout, is a :class:`DemoError`."""
        found: dict[str, dict[str, str]] = {}
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while len(found) < len(ids):
            for fields in self._new(self.consumer.dead_letter):
                if fields["source_id"] in ids:
                    raise DemoError(f"{self.consumer.ref}: event dead-lettered: {fields['reason']}")
            found.update((f["source_id"], f) for f in self._new(self.consumer.sink))
            if time.monotonic() > deadline:
                raise DemoError(
                    f"{self.consumer.ref}: {len(ids) - len(found)} of {len(ids)} events "
                    f"unscored after {JOB_TIMEOUT_S:.0f} s"
                )
            if len(found) < len(ids):
                time.sleep(0.005)
        return found

    def _new(self, stream: str) -> list[dict[str, str]]:
        """The entries added to ``stream`` since the last look."""
        entries = self.client.xrange(stream, min=f"({self._seen[stream]}")
        if entries:
            self._seen[stream] = entries[-1][0]
        return [fields for _, fields in entries]


@contextmanager
def streamers(
    settings: Settings, url: str, consumers: list[Consumer]
) -> Iterator[dict[str, Streamer]]:
    """One ``mmserve stream`` per consumer on the Redis at ``url``, started together and
    each consuming by the time the block begins; stopped (SIGTERM) when it ends."""
    client = redis.Redis.from_url(url, decode_responses=True)
    with ExitStack() as stack:
        stack.callback(client.close)
        started = []
        for consumer in consumers:
            log = stack.enter_context(tempfile.TemporaryFile())
            process = _start(settings, url, consumer, log)
            stack.callback(stop, process)
            started.append((consumer, process, log))
        for consumer, process, log in started:
            _wait_ready(consumer, process, log)
        yield {c.name: Streamer(client, c) for c in consumers}


def _start(settings: Settings, url: str, consumer: Consumer, log: IO[bytes]) -> Popen[bytes]:
    # The demo's own Redis, whatever the environment names; the demo's store.
    env = {
        k: v for k, v in os.environ.items() if k not in ("MMSERVE_BROKER_URL", "MMSERVE_REDIS_URL")
    }
    env.update(MMSERVE_STORE_URL=settings.store_url, MMSERVE_REDIS_URL=url)
    mmserve = os.path.join(os.path.dirname(sys.executable), "mmserve")
    argv = [
        mmserve, "stream", "--model", consumer.ref, "--source", consumer.source,
        "--sink", consumer.sink, "--group", GROUP, "--consumer", f"demo-{consumer.name}",
        "--id-field", consumer.id_field, "--start", "0",
    ]  # fmt: skip
    return Popen(argv, env=env, stdout=log, stderr=STDOUT)


def _wait_ready(consumer: Consumer, process: Popen[bytes], log: IO[bytes]) -> None:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while process.poll() is None:
        log.seek(0)
        if READY in log.read():
            return
        if time.monotonic() > deadline:
            raise DemoError(f"mmserve stream ({consumer.ref}) did not start consuming{tail(log)}")
        time.sleep(0.05)
    raise DemoError(
        f"mmserve stream ({consumer.ref}) exited with code {process.returncode} at start{tail(log)}"
    )
