"""Streaming with window features: ``mmserve stream --features`` against the same stream
without them.

    .venv/bin/python benchmarks/stream_windows.py [--quick]

One throwaway redis-server (no persistence), a local-folder store in a temporary directory,
card payments (``txn_id``, ``card_id`` of 1,000 cards, ``account_id`` of 200, ``payee``,
``amount``, ``ts``). Two LogisticRegressions: ``plain`` on ``amount``, ``windowed`` on
``amount`` and three window features (a card's payments in 60 s, its amount in 10 min, its
account's distinct payees in 5 min). One consumer process, one BLAS thread, batches of 256,
waiting up to 5 ms to fill one. Two sections:

1. saturation: a stream pre-filled with N payments (event times 0.5 ms apart); events/s is
   N over the time until the group has every event delivered and nothing pending, for
   ``plain`` and for ``windowed`` (whose outputs are checked against the offline features);
2. lag: a producer adds payments (event time: when sent) at 2,000/s to ``windowed``; each
   output's lag is its entry id's time minus its source entry id's (Redis' clock, 1 ms).

See benchmarks/README.md, "Streaming with window features".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import redis

ROOT = Path(__file__).resolve().parent.parent
if sys.path[0] == str(ROOT / "benchmarks"):  # this folder's batch.py would hide the package
    sys.path[0] = str(ROOT)
from benchmarks import stream as base  # noqa: E402

RESULTS = base.WORK / "stream_windows.json"
SPEC = """\
features:
  card_txn_count_60s: {key: card_id, agg: count, window: 60s}
  card_amount_sum_10m: {key: card_id, field: amount, agg: sum, window: 10m}
  account_distinct_payees_5m: {key: account_id, field: payee, agg: count_distinct, window: 5m}
time: {field: ts, allowed_lateness: 30s}
"""
WINDOWED = ["amount", "card_txn_count_60s", "card_amount_sum_10m", "account_distinct_payees_5m"]
SOURCE = "payments"


@dataclass(frozen=True)
class Point:
    side: str
    events: int
    seconds: float
    per_s: float


@dataclass(frozen=True)
class LagPoint:
    rate: int
    sent: int
    sent_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float


def payment(i: int, rng: np.random.Generator, ts: float) -> dict[str, str]:
    card = int(rng.integers(1000))
    return {
        "txn_id": str(i),
        "card_id": f"c{card}",
        "account_id": f"a{card % 200}",
        "payee": f"p{int(rng.integers(500))}",
        "amount": f"{int(rng.integers(100, 50_000)) / 100:.2f}",
        "ts": f"{ts:.3f}",
    }


def register(store: Path) -> None:
    import pyarrow as pa
    from sklearn.linear_model import LogisticRegression

    from serving.registry import Registry
    from serving.store import Store

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, len(WINDOWED))) * [100, 3, 1000, 5] + [250, 4, 3000, 10]
    y = (x[:, 0] + 50 * x[:, 1] > 450).astype(np.int64)
    registry = Registry(Store.from_url(str(store)))
    example = pa.table({name: x[:16, i] for i, name in enumerate(WINDOWED)})
    model = LogisticRegression(max_iter=1000).fit(x, y)
    registry.register(model, name="windowed", input_example=example)
    plain = LogisticRegression(max_iter=1000).fit(x[:, :1], y)
    registry.register(plain, name="plain", input_example=example.select(["amount"]))


def prefill(client: Any, n: int) -> list[dict[str, str]]:
    rng = np.random.default_rng(1)
    start = time.time() - 3600
    events = [payment(i, rng, start + i / 2000) for i in range(n)]
    for k in range(0, n, 2_000):
        with client.pipeline(transaction=False) as pipe:
            for e in events[k : k + 2_000]:
                pipe.xadd(SOURCE, e)
            pipe.execute()
    return events


def consumer(stack: base.Stack, side: str, source: str, group: str, *more: str) -> Any:
    model = "windowed" if side == "windowed" else "plain"
    if side == "windowed":
        more = ("--features", str(Path(stack.env["FEATURES"])), *more)
    return base.mmserve(stack, "c1", model, source, group, *more)


def saturate(client: Any, stack: base.Stack, side: str) -> Point:
    group = f"sat-{side}"
    client.xgroup_create(SOURCE, group, "$")
    with consumer(stack, side, SOURCE, group, "--start", "$"):
        client.xgroup_setid(SOURCE, group, "0")
        begin = time.perf_counter()
        last = client.xadd(SOURCE, payment(-1, np.random.default_rng(9), time.time() - 3600))
        base.wait(lambda: _drained(client, group, last), f"{group} drained", every=0.002)
        seconds = time.perf_counter() - begin
    total = client.xlen(SOURCE)
    return Point(side, total, seconds, total / seconds)


def _drained(client: Any, group: str, last: str) -> bool:
    (info,) = [g for g in client.xinfo_groups(SOURCE) if g["name"] == group]
    return bool(info["last-delivered-id"] == last and info["pending"] == 0)


def check(client: Any, events: list[dict[str, str]]) -> None:
    """The windowed run's outputs are the model's answers on the offline features."""
    import pyarrow as pa

    from serving.features import spec, windows
    from serving.registry import Registry
    from serving.store import Store

    computed = windows.compute(
        spec.parse(SPEC), {}, [(f"{i + 1}-0", e) for i, e in enumerate(events)]
    )
    columns = {"amount": [float(e["amount"]) for e in events]}
    columns |= {n: [float(v) for v in computed.columns[n]] for n in WINDOWED[1:]}  # type: ignore[arg-type]
    store = Path(os.environ["BENCH_STORE"])
    expected = Registry(Store.from_url(str(store))).load("windowed").predict(pa.table(columns))
    answers = expected.column("proba_1").to_pylist()
    outputs = {f["txn_id"]: float(f["proba_1"]) for _, f in client.xrange("sat-windowed-out")}
    if any(outputs[str(i)] != answers[i] for i in range(len(events))):
        raise RuntimeError("the windowed run's outputs differ from the offline features' answers")


def lag(client: Any, stack: base.Stack, rate: int, seconds: float) -> LagPoint:
    source = "lag-windowed"
    with consumer(stack, "windowed", source, source, "--start", "0"):
        argv = [sys.executable, __file__, "_produce", stack.url, source, str(rate), str(seconds)]
        env = {**os.environ, **base.ONE_THREAD}
        producer = subprocess.run(argv, env=env, capture_output=True)
        if producer.returncode:
            raise RuntimeError(f"producer failed: {producer.stderr.decode()[-500:]}")
        sent, took = json.loads(producer.stdout)
        base.wait(lambda: client.xlen(f"{source}-out") == sent, f"{source}: every output")
    lags = np.asarray(
        [base._ms(i) - base._ms(f["source_id"]) for i, f in client.xrange(f"{source}-out")]
    )
    p50, p99 = np.percentile(lags, [50, 99])
    return LagPoint(rate, sent, sent / took, float(p50), float(p99), float(lags.max()))


def produce_main(url: str, stream: str, rate: int, seconds: float) -> None:
    client = redis.Redis.from_url(url, decode_responses=True)
    rng = np.random.default_rng(2)
    n = int(rate * seconds)
    start = time.perf_counter()
    for i in range(n):
        ahead = start + i / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
        client.xadd(stream, payment(i, rng, time.time()))
    print(json.dumps([n, time.perf_counter() - start]))


def run(events: int, seconds: float, folder: Path) -> dict[str, Any]:
    base.ensure_redis_server()
    port = base.free_port()
    url = f"redis://127.0.0.1:{port}/0"
    (folder / "features.yaml").write_text(SPEC)
    os.environ["BENCH_STORE"] = str(folder / "store")
    with base.redis_server(port):
        register(folder / "store")
        env = {"MMSERVE_STORE_URL": str(folder / "store"), "MMSERVE_REDIS_URL": url}
        stack = base.Stack(url, {**env, "FEATURES": str(folder / "features.yaml")})
        client = redis.Redis.from_url(url, decode_responses=True)
        prefilled = prefill(client, events)
        points = []
        for side in ("plain", "windowed"):
            points.append(point := saturate(client, stack, side))
            print(f"1. {side}: {point.per_s:,.0f} events/s", flush=True)
        check(client, prefilled)
        delay = lag(client, stack, 2_000, seconds)
        print(
            f"2. windowed at 2,000 events/s: p50 {delay.p50_ms:.0f} ms, p99 {delay.p99_ms:.0f} ms"
        )
    return {"saturation": [asdict(p) for p in points], "lag": asdict(delay)}


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 events, 5 s of lag")
    args = parser.parse_args()
    events, seconds = (20_000, 5.0) if args.quick else (60_000, 15.0)
    base.LOGS.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores, load average {load:.2f}")
    with tempfile.TemporaryDirectory(prefix="stream-windows-") as tmp:
        results = run(events, seconds, Path(tmp))
    plain, windowed = results["saturation"]
    print(f"windowed / plain events/s: {windowed['per_s'] / plain['per_s']:.2f}")
    document = {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "load_average_1m_at_start": round(load, 2),
        **results,
    }
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")
    print(f"written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        if sys.argv[1:2] == ["_produce"]:
            produce_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
        else:
            main()
