"""Precomputed answers: what ``--publish-online`` costs a batch run, and what a lookup costs.

    .venv/bin/python benchmarks/precomputed.py [--rows 1000000] [--duration 10]

One throwaway redis-server on a free port; a LogisticRegression on 20 float32 features; a
parquet input of ``--rows`` rows. The same ``mmserve batch run`` twice, one process each:
without and with ``--publish-online`` (rows/s of the publishing itself, from the manifest).
Then ``mmserve serve`` pinned to core 0 and wrk pinned to core 1, c=1 and c=16, against the
server's emptiest route (``GET /v2/health/live``, the baseline), ``GET
/v1/models/lr/precomputed/{random id}`` and a one-row ``POST /v1/models/lr:predict``; and the
server's own time per request (the access log's ``ms``: from the request's arrival in the
app to its last byte). See benchmarks/README.md, "Precomputed answers".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.table import Table
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realtime import (
    HERE,
    ONE_THREAD,
    WORK,
    Server,
    _answers,
    console,
    ensure_wrk,
    free_port,
    running,
)

from serving.registry import Registry
from serving.store import Store

RESULTS = WORK / "precomputed.json"
MMSERVE = Path(sys.executable).parent / "mmserve"
FEATURES = 20
ROUTES = {  # name: method, path ({id}: a random id per request), the route in the access log
    "health (baseline)": ("GET", "/v2/health/live", "/v2/health/live"),
    "precomputed": ("GET", "/v1/models/lr/precomputed/{id}", "/v1/models/{ref}/precomputed/{id}"),
    "predict, 1 row": ("POST", "/v1/models/lr:predict", "/v1/models/{ref}:predict"),
}


def prepare(folder: Path, rows: int) -> list[float]:
    """The input, the model in a store, and the one row the predict route sends."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    columns = {f"f{i}": x[:, i] for i in range(FEATURES)}
    pq.write_table(pa.table({"id": np.arange(rows), **columns}), folder / "in.parquet")
    model = LogisticRegression(max_iter=1000).fit(x[:20_000], y[:20_000])
    example = pa.table({name: column[:8] for name, column in columns.items()})
    Registry(Store.from_url(str(folder / "store"))).register(model, "lr", input_example=example)
    return [round(float(v), 4) for v in x[0]]


def batch_runs(folder: Path, env: dict[str, str]) -> dict[str, Any]:
    argv = [str(MMSERVE), "batch", "run", "--model", "lr", "--input", str(folder / "in.parquet")]
    argv += ["--id-column", "id", "--partition-rows", "250000"]
    found: dict[str, Any] = {}
    for name, more in (("without", []), ("with", ["--publish-online"])):
        output = folder / f"out-{name}"
        started = time.perf_counter()
        done = subprocess.run([*argv, "--output", str(output), *more], env=env, capture_output=True)
        if done.returncode != 0:
            raise RuntimeError(f"batch run {name} --publish-online: {done.stderr.decode()[-300:]}")
        manifest = json.loads((output / "_manifest.json").read_text())
        found[name] = {"wall_s": time.perf_counter() - started, "manifest": manifest}
        console.print(f"batch run {name} --publish-online: {found[name]['wall_s']:.1f} s")
    return found


def lua(folder: Path, method: str, path: str, rows: int, body: str) -> Path:
    """A wrk script: ``{id}`` in the path becomes a random id on every request."""
    script = folder / f"{method.lower()}-{abs(hash(path))}.lua"
    script.write_text(
        f"wrk.method = {json.dumps(method)}\n"
        f"wrk.body = {json.dumps(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"math.randomseed(7)\nlocal template = {json.dumps(path)}\n"
        "request = function()\n"
        f"  local p = template:gsub('{{id}}', tostring(math.random(0, {rows - 1})))\n"
        "  return wrk.format(nil, p)\nend\n"
        "function done" + (HERE / "realtime" / "post.lua").read_text().split("function done")[1]
    )
    return script


def wrk_point(wrk: str, url: str, script: Path, c: int, seconds: int) -> dict[str, Any]:
    argv = ["taskset", "-c", "1", wrk, "-t1", f"-c{c}", f"-d{seconds}s", "-s", str(script), url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    line = next(x for x in done.stdout.splitlines() if x.startswith("WRK_JSON "))
    out = json.loads(line.removeprefix("WRK_JSON "))
    return {
        "rps": out["requests"] / (out["duration_us"] / 1e6),
        "p50_ms": out["p50_us"] / 1e3,
        "p99_ms": out["p99_us"] / 1e3,
        "errors": out["non_2xx"] + sum(out[k] for k in ("connect", "read", "write", "timeout")),
    }


def server_ms(log: Path, route: str) -> float:
    """The median of the access log's ``ms`` for a route (the server's own time)."""
    times = []
    for line in log.read_text().splitlines():
        record = json.loads(line) if line.startswith("{") else {}
        if record.get("route") == route and "ms" in record:
            times.append(float(record["ms"]))
    return statistics.median(times) if times else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--duration", type=int, default=10)
    options = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "logs").mkdir(exist_ok=True)
    wrk = ensure_wrk()
    results: dict[str, Any] = {"rows": options.rows, "load_at_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="mmserve-precomputed-") as tmp:
        folder = Path(tmp)
        row = prepare(folder, options.rows)
        port = free_port()
        redis = subprocess.Popen(
            ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        try:
            env = {"MMSERVE_STORE_URL": str(folder / "store")}
            env["MMSERVE_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
            results["batch"] = batch_runs(folder, {**os.environ, **ONE_THREAD, **env})
            results["lookups"] = lookups(folder, env, wrk, row, options)
        finally:
            redis.kill()
            redis.wait()
    report(results)
    RESULTS.write_text(json.dumps(results, indent=1, default=str))
    console.print(f"written to {RESULTS.relative_to(HERE.parent)}")


def lookups(
    folder: Path, env: dict[str, str], wrk: str, row: list[float], options: Any
) -> dict[str, Any]:
    port = free_port()
    argv = [str(MMSERVE), "serve", "--port", str(port), "--log-level", "warning"]
    points: dict[str, Any] = {}
    body = json.dumps({"instances": [row]})
    for access_log in (False, True):  # throughput without the log; the server's time with it
        server = Server("mmserve", [*argv, *(["--access-log"] if access_log else [])], port,
                        "v1", None, env)  # fmt: skip
        with running(server, pin=True):
            for name, (method, path, _) in ROUTES.items():
                script = lua(folder, method, path, options.rows, body if method == "POST" else "")
                url = server.url(path.replace("{id}", "0"))
                assert _answers(url) or method == "POST", f"{url} does not answer 200"
                for c in (1, 16) if not access_log else (1,):
                    wrk_point(wrk, server.url("/"), script, c, 2)  # warm-up
                    point = wrk_point(wrk, server.url("/"), script, c, options.duration)
                    key = f"{name} · c={c}" + (" · logged" if access_log else "")
                    points[key] = point
                    console.print(f"{key}: {point['rps']:,.0f} req/s, p50 {point['p50_ms']} ms")
        if access_log:
            log = WORK / "logs" / "mmserve.log"
            for name, (_, _, route) in ROUTES.items():
                points[f"{name} · server ms"] = server_ms(log, route)
    return points


def report(results: dict[str, Any]) -> None:
    batch = results["batch"]
    published = batch["with"]["manifest"]["published"]
    table = Table(title=f"batch run of {results['rows']:,} rows, 1 worker")
    for column in ("", "seconds", "÷ without", "published rows/s"):
        table.add_column(column, justify="right")
    base = batch["without"]["wall_s"]
    table.add_row("without --publish-online", f"{base:.1f}", "1.00x", "")
    rate = published["rows"] / published["seconds"]
    wall = batch["with"]["wall_s"]
    table.add_row("with --publish-online", f"{wall:.1f}", f"{wall / base:.2f}x", f"{rate:,.0f}")
    console.print(table)
    points = results["lookups"]
    table = Table(title="lookups: mmserve serve on core 0, wrk on core 1")
    for column in ("route", "c", "req/s", "p50 ms", "p99 ms", "errors", "server ms (median)"):
        table.add_column(column, justify="right" if column != "route" else "left")
    for name in ROUTES:
        for c in (1, 16):
            p = points[f"{name} · c={c}"]
            server = f"{points[f'{name} · server ms']:.3f}" if c == 1 else ""
            table.add_row(name, str(c), f"{p['rps']:,.0f}", f"{p['p50_ms']:.3f}",
                          f"{p['p99_ms']:.3f}", str(p["errors"]), server)  # fmt: skip
    console.print(table)
    extra = points["precomputed · server ms"] - points["health (baseline) · server ms"]
    console.print(f"a precomputed lookup adds {extra:.3f} ms of server time to the emptiest route")


if __name__ == "__main__":
    main()
