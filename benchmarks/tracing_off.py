"""What tracing costs a fast-lane predict: CPU time per one-row V1 request, the app driven
over ASGI in this process (no sockets, no load generator: on a busy machine, throughput
under wrk moves by more than the few hundred nanoseconds in question; CPU time moves less).

    .venv/bin/python benchmarks/tracing_off.py [--requests 4000] [--rounds 7] [--on] [--calls]

Run it against two trees to compare them (the one on ``PYTHONPATH`` is measured)::

    PYTHONPATH=/path/to/before .venv/bin/python benchmarks/tracing_off.py
    PYTHONPATH=/path/to/after  .venv/bin/python benchmarks/tracing_off.py

It prints the best round's microseconds of CPU per request (the least disturbed), and the
median. ``--on`` turns MMSERVE_OPENTELEMETRY on, spans made and dropped
(``OTEL_TRACES_EXPORTER=none``): what a traced request costs over an untraced one.
``--calls`` counts the function calls a request makes on the event loop's thread instead
(cProfile): a figure that does not move with the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from typing import Any

# This folder first on the path would make benchmarks/batch.py the package ``batch``.
sys.path.pop(0)
# One BLAS thread, as the real-time benchmark's servers: idle BLAS threads spin, on the CPU
# clock, and moved every figure by hundreds of microseconds.
os.environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")

BODY = b'{"instances": [[0.5, -1.25, 2.0, 0.0, 3.5]]}'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--on", action="store_true", help="MMSERVE_OPENTELEMETRY=true")
    parser.add_argument("--calls", action="store_true", help="count calls (cProfile) instead")
    args = parser.parse_args()
    os.environ["OTEL_TRACES_EXPORTER"] = "none"
    import numpy as np  # after the BLAS settings above
    from sklearn.linear_model import LogisticRegression

    import serving
    from serving.http.app import create_app
    from serving.registry import Registry
    from serving.settings import Settings
    from serving.store import Store

    with tempfile.TemporaryDirectory() as folder:
        store = Store.from_url(folder)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(400, 5))
        Registry(store).register(LogisticRegression().fit(x, x[:, 0] > 0), "lr")
        app = create_app(Settings(store_url=folder, opentelemetry=args.on))
        if args.calls:
            calls = asyncio.run(_calls(app, args.requests))
            print(f"{serving.__file__.rsplit('/', 2)[0]}  tracing {'on' if args.on else 'off'}: "
                  f"{calls:.2f} function calls a request on the event loop's thread")  # fmt: skip
            return
        per_request = asyncio.run(_rounds(app, args.requests, args.rounds))
    print(
        f"{serving.__file__.rsplit('/', 2)[0]}  tracing {'on' if args.on else 'off'}: "
        f"{min(per_request):.1f} us CPU a request (best of {args.rounds} rounds of "
        f"{args.requests}), median {statistics.median(per_request):.1f} us"
    )


async def _rounds(app: Any, requests: int, rounds: int) -> list[float]:
    """Microseconds of CPU per request in each round (after a warm-up round)."""
    for _ in range(200):
        await _predict(app)
    measured = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(requests):
            await _predict(app)
        measured.append((time.process_time() - started) / requests * 1e6)
    return measured


async def _calls(app: Any, requests: int) -> float:
    """Function calls (Python and built-in) a request makes on this thread, as cProfile
    counts them: the same figure run after run, where CPU time moves by tens of percent on
    a shared machine."""
    for _ in range(200):
        await _predict(app)
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(requests):
        await _predict(app)
    profile.disable()
    return pstats.Stats(profile).total_calls / requests  # type: ignore[attr-defined, no-any-return]


async def _predict(app: Any) -> None:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/models/lr:predict",
        "raw_path": b"/v1/models/lr:predict",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8080"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(BODY)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    assert status == 200, status


if __name__ == "__main__":
    main()
