"""Streaming: ``mmserve stream`` against a floor consumer that reads and acknowledges only.

    .venv/bin/python benchmarks/stream.py [--quick]

One throwaway redis-server (no persistence) on a free port, a local-folder store in a
temporary directory, a LogisticRegression and a RandomForest (100 trees, depth 10) on 20
float32 features. Every consumer is its own process (one BLAS thread), batches of 256
events, waiting at most 5 ms to fill one. Two sections:

1. saturation: a stream pre-filled with N events; the consumers (1, then 2) wait on their
   group, which is then set back to the stream's start: events/s is N over the time until
   the group has every event delivered and nothing pending. Floors: ``_floor plain``
   (redis-py's XREADGROUP and XACK, what a hand-written consumer does) and ``_floor packed``
   (mmserve's own read, the Lua script that packs a batch as JSON, and XACK).
2. lag: a producer process adds events at a fixed rate (2,000/s) to one ``mmserve stream``
   (lr and rf waiting up to 5 ms to fill a batch, and lr with ``--max-wait-ms 0``); each
   output's lag is its entry id's time minus its source entry id's time (Redis' clock, 1 ms
   resolution).

See benchmarks/README.md, "Streaming".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import redis

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "benchmarks"
WORK = HERE / ".work"
LOGS = WORK / "logs"
RESULTS = WORK / "stream.json"
MMSERVE = Path(sys.executable).parent / "mmserve"
FEATURES = [f"f{i}" for i in range(20)]
BATCH, MAX_WAIT_MS = 256, 5
SOURCE = "sat"
CHECK = 2_000  # outputs of each saturation run compared with the predictor's answers
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SPEED_TARGET, LAG_TARGET_MS = 0.7, 50.0


@dataclass(frozen=True)
class Options:
    events: int  # pre-filled for the saturation runs
    rate: int  # events/s of the lag runs
    seconds: float  # length of each lag run


@dataclass(frozen=True)
class Saturation:
    side: str  # floor-plain, floor-packed, mmserve-lr, mmserve-rf
    consumers: int
    events: int
    seconds: float
    per_s: float


@dataclass(frozen=True)
class Lag:
    model: str
    max_wait_ms: float
    rate: int
    events: int
    sent_per_s: float  # the producer's own achieved rate
    p50_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    met: bool


@dataclass
class Results:
    saturation: list[Saturation] = field(default_factory=list)
    lag: list[Lag] = field(default_factory=list)


# -- models and events -----------------------------------------------------------------------


def register_models(store: Path) -> dict[str, Any]:
    """``lr`` and ``rf`` registered with a float32 example (so no cast); the predictors."""
    import pyarrow as pa
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    from serving.registry import Registry
    from serving.store import Store

    x, y = make_classification(n_samples=20_000, n_features=20, random_state=0)
    x = x.astype(np.float32)
    example = pa.table({name: x[:16, i] for i, name in enumerate(FEATURES)})
    registry = Registry(Store.from_url(str(store)))
    models = {
        "lr": LogisticRegression(max_iter=1000),
        "rf": RandomForestClassifier(n_estimators=100, max_depth=10, n_jobs=1, random_state=0),
    }
    for name, model in models.items():
        registry.register(model.fit(x, y), name=name, input_example=example)
    return {name: registry.load(name) for name in models}


def event_rows(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, len(FEATURES))).astype(np.float32)


def event(i: int, row: np.ndarray) -> dict[str, str]:
    """An event: its id and each float32 as the shortest text that reads back to it."""
    return {"txn_id": str(i), **{name: str(v) for name, v in zip(FEATURES, row, strict=True)}}


def prefill(client: Any, stream: str, x: np.ndarray) -> None:
    for start in range(0, len(x), 2_000):
        with client.pipeline(transaction=False) as pipe:
            for i in range(start, min(start + 2_000, len(x))):
                pipe.xadd(stream, event(i, x[i]))
            pipe.execute()


# -- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def started(name: str, argv: list[str], env: dict[str, str], mark: bytes) -> Iterator[Any]:
    """A process in its own group, once its log shows ``mark``; its group killed however
    the block ends."""
    log = LOGS / f"stream-{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            env={**os.environ, **ONE_THREAD, **env},
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait(lambda: mark in log.read_bytes() or process.poll() is not None, f"{name} ready")
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}; see {log}")
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def wait(check: Callable[[], object], what: str, seconds: float = 600, every: float = 0.05) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {seconds:.0f} s")
        time.sleep(every)


def ensure_redis_server() -> None:
    if shutil.which("redis-server"):
        return
    install = ["apt-get", "install", "-y", "-q", "redis-server"]
    if subprocess.run(install, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True)
        subprocess.run(install, capture_output=True, check=True)


def redis_server(port: int) -> contextlib.AbstractContextManager[Any]:
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    return started("redis", [*argv, "--save", "", "--appendonly", "no"], {}, b"Ready to accept")


def mmserve(stack: Stack, name: str, model: str, source: str, group: str, *more: str) -> Any:
    """``mmserve stream`` (``more`` options last: they override the defaults before them)."""
    argv = [str(MMSERVE), "stream", "--model", model, "--source", source, "--group", group]
    argv += ["--sink", f"{group}-out", "--consumer", name, "--batch-size", str(BATCH)]
    argv += ["--max-wait-ms", str(MAX_WAIT_MS), "--id-field", "txn_id", *more]
    return started(f"{group}-{name}", argv, stack.env, b'"consuming ')


def floor(stack: Stack, name: str, mode: str, group: str) -> Any:
    argv = [sys.executable, __file__, "_floor", mode, stack.url, SOURCE, group, name]
    return started(f"{group}-{name}", argv, {"PYTHONPATH": str(ROOT)}, b"ready")


@dataclass(frozen=True)
class Stack:
    url: str
    env: dict[str, str]


# -- 1. saturation ---------------------------------------------------------------------------


def saturate(client: Any, stack: Stack, side: str, consumers: int) -> Saturation:
    """Start the consumers on a group placed at the stream's end, then set it back to the
    start and add one event (which wakes them): the clock runs until every entry is
    delivered and acknowledged."""
    group = f"{side}-c{consumers}"
    client.xgroup_create(SOURCE, group, "$")
    with contextlib.ExitStack() as running:
        for k in range(consumers):
            name = f"c{k + 1}"
            if side.startswith("floor"):
                running.enter_context(floor(stack, name, side.removeprefix("floor-"), group))
            else:
                model = side.removeprefix("mmserve-")
                running.enter_context(mmserve(stack, name, model, SOURCE, group, "--start", "$"))
        client.xgroup_setid(SOURCE, group, "0")
        start = time.perf_counter()
        last = client.xadd(SOURCE, event(-1, event_rows(1, seed=99)[0]))
        wait(lambda: drained(client, group, last), f"{group} drained", every=0.002)
        seconds = time.perf_counter() - start
    total = client.xlen(SOURCE)
    return Saturation(side, consumers, total, seconds, total / seconds)


def drained(client: Any, group: str, last: str) -> bool:
    (info,) = [g for g in client.xinfo_groups(SOURCE) if g["name"] == group]
    return bool(info["last-delivered-id"] == last and info["pending"] == 0)


def check_outputs(client: Any, sink: str, predictor: Any, x: np.ndarray) -> None:
    """The first outputs of the sink equal the predictor's answers for their rows, exactly."""
    import pyarrow as pa

    outputs = [f for _, f in client.xrange(sink, count=CHECK) if f["txn_id"] != "-1"]
    rows = [int(o["txn_id"]) for o in outputs]
    table = pa.table({name: x[rows, i] for i, name in enumerate(FEATURES)})
    expected = predictor.predict(table).column("proba_1").to_pylist()
    if [float(o["proba_1"]) for o in outputs] != expected:
        raise RuntimeError(f"{sink}: outputs differ from the predictor's answers")


# -- 2. lag ----------------------------------------------------------------------------------


def lag(client: Any, stack: Stack, model: str, max_wait_ms: float, options: Options) -> Lag:
    source = f"lag-{model}-{max_wait_ms:g}"
    more = ["--start", "0", "--max-wait-ms", str(max_wait_ms)]
    with mmserve(stack, "c1", model, source, source, *more):
        argv = [sys.executable, __file__, "_produce", stack.url, source]
        argv += [str(options.rate), str(options.seconds)]
        producer = subprocess.run(argv, env={**os.environ, **ONE_THREAD}, capture_output=True)
        if producer.returncode:
            raise RuntimeError(f"producer failed: {producer.stderr.decode()[-500:]}")
        sent, seconds = json.loads(producer.stdout)
        wait(lambda: client.xlen(f"{source}-out") == sent, f"{source}: every output")
    lags = np.asarray([_ms(i) - _ms(f["source_id"]) for i, f in client.xrange(f"{source}-out")])
    p50, p99 = np.percentile(lags, [50, 99])
    return Lag(
        model, max_wait_ms, options.rate, sent, sent / seconds,
        float(p50), float(p99), float(lags.max()),
    )  # fmt: skip


def _ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


# -- the helper processes --------------------------------------------------------------------


def floor_main(mode: str, url: str, source: str, group: str, name: str) -> None:
    """Read batches as mmserve does (up to 256 events, at most 5 ms more once one is in)
    and acknowledge them, nothing else, until SIGTERM."""
    client = redis.Redis.from_url(url, decode_responses=True)
    read = _packed_reader(client, source, group, name) if mode == "packed" else None

    def plain(count: int, block_ms: int) -> list[str]:
        reply = client.xreadgroup(group, name, {source: ">"}, count, block_ms or None)
        return [entry_id for entry_id, _ in reply[0][1]] if reply else []

    batch = read or plain
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    while True:
        ids = batch(BATCH, 500)
        deadline = time.monotonic() + MAX_WAIT_MS / 1000
        while ids and len(ids) < BATCH and time.monotonic() < deadline:
            more = batch(BATCH - len(ids), 0)
            ids += more
            if not more:
                time.sleep(0.001)
        if ids:
            client.xack(source, group, *ids)


def _packed_reader(client: Any, source: str, group: str, name: str) -> Any:
    from workers._stream_redis import Names, RedisEventLog

    log = RedisEventLog(client, Names(source, "-", "-", group, name), start="$")
    log.read(1, 0)  # past its own pending entries (none): the packed reads of new ones
    return lambda count, block_ms: [e.id for e in log.read(count, block_ms)]


def produce_main(url: str, stream: str, rate: int, seconds: float) -> None:
    """XADD one event every 1/rate s, on an absolute schedule; print (sent, seconds)."""
    client = redis.Redis.from_url(url, decode_responses=True)
    x = event_rows(int(rate * seconds), seed=2)
    start = time.perf_counter()
    for i, row in enumerate(x):
        ahead = start + i / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
        client.xadd(stream, event(i, row))
    print(json.dumps([len(x), time.perf_counter() - start]))


# -- report ----------------------------------------------------------------------------------


def saturation_table(results: Results) -> Any:
    from rich.table import Table

    floors = {(s.side, s.consumers): s.per_s for s in results.saturation if "floor" in s.side}
    table = Table(
        "side", "consumers", "events", "seconds", "events/s", "÷ packed floor", "÷ plain floor",
        title="1. saturation: a pre-filled stream drained",
    )  # fmt: skip
    for s in results.saturation:
        ratios = [
            f"{s.per_s / floors[(side, s.consumers)]:.2f}x" if (side, s.consumers) in floors else ""
            for side in ("floor-packed", "floor-plain")
        ]
        table.add_row(
            s.side, str(s.consumers), f"{s.events:,}", f"{s.seconds:.2f}", f"{s.per_s:,.0f}",
            *ratios,
        )  # fmt: skip
    return table


def lag_table(results: Results) -> Any:
    from rich.table import Table

    table = Table("model", "max wait ms", "rate", "events", "sent/s", "p50 ms", "p99 ms",
                  "max ms", title="2. lag at a fixed rate, 1 consumer")  # fmt: skip
    for p in results.lag:
        table.add_row(p.model, f"{p.max_wait_ms:g}", f"{p.rate:,}", f"{p.events:,}",
                      f"{p.sent_per_s:,.0f}", f"{p.p50_ms:.0f}", f"{p.p99_ms:.0f}",
                      f"{p.max_ms:.0f}")  # fmt: skip
    return table


def targets(results: Results) -> list[Target]:
    rate = {(s.side, s.consumers): s.per_s for s in results.saturation}
    found = []
    for floor_side in ("floor-packed", "floor-plain"):
        if ("mmserve-lr", 1) in rate and (floor_side, 1) in rate:
            ratio = rate[("mmserve-lr", 1)] / rate[(floor_side, 1)]
            name = f"lr, 1 consumer: events/s >= {SPEED_TARGET}x the {floor_side}'s"
            found.append(Target(name, f"{ratio:.2f}x", ratio >= SPEED_TARGET))
    for p in results.lag:
        if p.max_wait_ms != MAX_WAIT_MS:
            continue
        name = f"{p.model}: p99 lag < {LAG_TARGET_MS:g} ms at {p.rate:,} events/s"
        found.append(Target(name, f"{p.p99_ms:.0f} ms", p.p99_ms < LAG_TARGET_MS))
    return found


def targets_table(found: list[Target]) -> Any:
    from rich.table import Table

    table = Table("target", "measured", "result", title="the issue's targets")
    for t in found:
        table.add_row(t.name, t.measured, "PASS" if t.met else "[bold red]MISS[/bold red]")
    return table


def machine() -> dict[str, Any]:
    import pyarrow as pa
    import sklearn

    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
    return {
        "host": platform.node(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pyarrow": pa.__version__,
        "scikit-learn": sklearn.__version__,
        "redis-py": redis.__version__,
        "redis-server": version.stdout.split()[2].removeprefix("v="),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
    }


# -- main ------------------------------------------------------------------------------------


def run(options: Options, folder: Path, console: Any) -> Results:
    ensure_redis_server()
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    results = Results()
    with redis_server(port):
        predictors = register_models(folder / "store")
        stack = Stack(url, {"MMSERVE_STORE_URL": str(folder / "store"), "MMSERVE_REDIS_URL": url})
        client = redis.Redis.from_url(url, decode_responses=True)
        x = event_rows(options.events)
        prefill(client, SOURCE, x)
        console.print(f"redis-server on port {port}: {options.events:,} events in {SOURCE!r}")
        for side in ("floor-plain", "floor-packed", "mmserve-lr", "mmserve-rf"):
            for consumers in (1, 2):
                point = saturate(client, stack, side, consumers)
                results.saturation.append(point)
                console.print(f"1. {side}, {consumers}: {point.per_s:,.0f} events/s")
                if side.startswith("mmserve"):
                    check_outputs(client, f"{side}-c{consumers}-out", predictors[side[-2:]], x)
                    client.delete(f"{side}-c{consumers}-out")
        for model, max_wait_ms in (("lr", MAX_WAIT_MS), ("rf", MAX_WAIT_MS), ("lr", 0)):
            results.lag.append(point := lag(client, stack, model, max_wait_ms, options))
            console.print(f"2. {model}, max wait {max_wait_ms} ms: p99 {point.p99_ms:.0f} ms")
    return results


def main() -> None:
    from rich.console import Console

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds through ``started``
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 events, 5 s of lag runs")
    args = parser.parse_args()
    options = Options(20_000, 2_000, 5.0) if args.quick else Options(100_000, 2_000, 15.0)
    console = Console(width=120)
    LOGS.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    console.print(f"{platform.node()} · {os.cpu_count()} cores · load average {load:.2f}")
    with tempfile.TemporaryDirectory(prefix="stream-") as tmp:
        results = run(options, Path(tmp), console)
    found = targets(results)
    for table in (saturation_table(results), lag_table(results), targets_table(found)):
        console.print(table)
    document = {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "machine": {**machine(), "load_average_1m_at_start": round(load, 2)},
        "options": asdict(options),
        "saturation": [asdict(s) for s in results.saturation],
        "lag": [asdict(p) for p in results.lag],
        "targets": [asdict(t) for t in found],
    }
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")
    console.print(f"written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    if sys.path[0] == str(HERE):  # this folder's batch.py would hide the batch package
        sys.path[0] = str(ROOT)
    if sys.argv[1:2] == ["_floor"]:
        floor_main(*sys.argv[2:7])
    elif sys.argv[1:2] == ["_produce"]:
        produce_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    else:
        main()
