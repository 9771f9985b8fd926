"""The same rows scored in every mode a running deployment offers — real time, async
jobs, batch transform, streaming — each through its real front door (HTTP to ``mmserve
serve``, events to ``mmserve stream``), timed from the first byte sent to the last answer
read."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from models._server import DemoError, Predictions, Reply, Server
from models._stream import Streamer

MODES = ("real time", "async", "batch", "streaming")


@dataclass(frozen=True)
class Scored:
    """One mode's answers (rows of outputs by name, in the rows' order) and its time."""

    answers: Predictions
    seconds: float


def every_mode(
    server: Server,
    streamer: Streamer,
    ref: str,
    rows: pa.Table,
    id_column: str,
    outputs: pa.Schema,
    folder: Path,
) -> dict[str, Scored]:
    """``rows`` (the id column, then the features) scored by ``ref`` in every mode; the
    answers are read back as ``outputs`` types."""
    features = rows.drop_columns([id_column])
    return {
        "real time": real_time(server, ref, features),
        "async": asynchronous(server, ref, features),
        "batch": batch(server, ref, rows, id_column, folder),
        "streaming": Scored(*streamer.score(rows, outputs)),
    }


def real_time(server: Server, ref: str, features: pa.Table) -> Scored:
    """One V1 request holding every row."""
    reply, answers = server.predict_v1(ref, features)
    if answers is None:
        raise DemoError(f"{ref} in real time answered {_error(reply)}")
    return Scored(answers, reply.ms / 1000)


def asynchronous(server: Server, ref: str, features: pa.Table) -> Scored:
    """One CSV job: submitted, waited for, its result fetched."""
    started = time.perf_counter()
    reply = server.submit_job(ref, features)
    if reply.status != 202:
        raise DemoError(f"submitting the {ref} job answered {_error(reply)}")
    job_id = reply.json()["job_id"]
    job = server.wait_job(job_id)
    result, answers = server.job_result(job_id)
    if answers is None:
        raise DemoError(f"the {ref} job {job_id} ended {job['status']}: {_error(result)}")
    return Scored(answers, time.perf_counter() - started)


def batch(server: Server, ref: str, rows: pa.Table, id_column: str, folder: Path) -> Scored:
    """A batch transform of the rows as a parquet file, started over HTTP; its parts read."""
    name = ref.replace("@", "-").replace(":", "-")
    source, scores = folder / f"{name}-parity.parquet", folder / f"{name}-parity-scores"
    pq.write_table(rows, source)
    started = time.perf_counter()
    spec = {"model": ref, "input": str(source), "output": str(scores), "id_column": id_column}
    reply = server.start_batch(spec)
    if reply.status != 202:
        raise DemoError(f"starting the {ref} batch run answered {_error(reply)}")
    run = server.wait_batch(reply.json()["status_url"])
    if run["status"] != "succeeded":
        raise DemoError(f"the {ref} batch run {run['run_id']} {run['status']}: {run['error']}")
    answers = pq.read_table(scores).drop_columns([id_column]).to_pylist()
    return Scored(answers, time.perf_counter() - started)


def _error(reply: Reply) -> str:
    return f"HTTP {reply.status}: {reply.body.decode('utf-8', 'replace')[:500]}"
