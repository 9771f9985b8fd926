"""The predictor's overhead over calling the model directly, per runtime, and the registry's
load times.

    .venv/bin/python benchmarks/predictor.py [--quick] [--cpu-time] [--runtimes sklearn,...]

Baseline: ``model.predict_proba(x)`` on a C-contiguous float32 numpy array. Predictor:
``predictor.predict(table)`` on a pyarrow Table holding the same rows as float32 columns.
Per runtime: the library's own call on what a user holds (a numpy array, a DataFrame, an
onnxruntime feed, the user's own model's table) against ``predictor.predict`` on a pyarrow
Table of the same rows, their answers checked equal first. The two are timed alternately
in one loop (which goes first alternates too) and the median of each is reported, so
drifts of a noisy machine hit both alike. BLAS and OpenMP run on one thread for both. See
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import os
import platform
import statistics
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import sklearn
from rich.console import Console
from rich.table import Table
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from serving.predictor import Predictor
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
    clock: Callable[[], float] = time.perf_counter
    """What a call is timed with: the wall clock, or the process's CPU time (--cpu-time)."""


FULL = Budget(seconds=4.0, min_reps=7, max_reps=3000)
QUICK = Budget(seconds=0.5, min_reps=3, max_reps=300)


def synthetic(
    rows: int, seed: int = 0, features: int = FEATURES, dtype: type = np.float32
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(dtype)
    signal = x[:, 0] + 0.5 * x[:, 1] - x[:, 2] * x[:, 3]
    return x, (signal + rng.normal(scale=0.5, size=rows) > 0).astype(np.int64)


def as_table(x: np.ndarray) -> pa.Table:
    return pa.table({f"f{i}": np.ascontiguousarray(x[:, i]) for i in range(x.shape[1])})


def median_pair(
    a: Callable[[], Any], b: Callable[[], Any], budget: Budget
) -> tuple[float, float, int]:
    """Median seconds per call of ``a`` and of ``b``, timed alternately; and the repetitions."""
    times = timed_pair(a, b, budget)
    return statistics.median(times[0]), statistics.median(times[1]), len(times[0])


def timed_pair(
    a: Callable[[], Any], b: Callable[[], Any], budget: Budget
) -> tuple[list[float], list[float]]:
    """Seconds of every call of ``a`` and of ``b``, timed alternately."""
    a(), b()  # warm up
    started = budget.clock()
    a(), b()
    reps = int(budget.seconds / max(budget.clock() - started, 1e-6))
    reps = max(budget.min_reps, min(budget.max_reps, reps))
    times: tuple[list[float], list[float]] = ([], [])
    gc.disable()
    try:
        for rep in range(reps):
            for i in (0, 1) if rep % 2 == 0 else (1, 0):
                call = (a, b)[i]
                started = budget.clock()
                call()
                times[i].append(budget.clock() - started)
    finally:
        gc.enable()
    return times


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


# -- per runtime ---------------------------------------------------------------------------

RUNTIMES = ("sklearn", "xgboost", "lightgbm", "onnx", "python")
RUNTIME_ROWS = (1, 100_000)
RUNTIME_TARGETS = {1: 1.3, 100_000: 1.1}  # issue 18's
RUNTIME_FEATURES = 25
RUNTIME_FLOATS = np.float64  # what a DataFrame holds; the ONNX graph takes float32


@dataclass(frozen=True)
class Rows:
    """One batch of rows in each form a caller may hold them."""

    frame: pd.DataFrame
    array: np.ndarray  # C-contiguous
    table: pa.Table


def rows_of(x: np.ndarray) -> Rows:
    names = [f"f{i}" for i in range(x.shape[1])]
    table = pa.table({name: np.ascontiguousarray(x[:, i]) for i, name in enumerate(names)})
    return Rows(pd.DataFrame(x, columns=names), np.ascontiguousarray(x), table)


@dataclass(frozen=True)
class Case:
    """One runtime's model against one of its library's own calls."""

    runtime: str
    model: str  # what was registered
    call: str  # the library's call, as the table shows it
    ref: str
    library: Callable[[Predictor, Rows], Callable[[], Any]]
    """The library's call on those rows, ready to time."""
    answer: Callable[[Any], np.ndarray]
    """The library's answer as the column ``output`` of the predictor's."""
    output: str = "proba_1"
    targeted: bool = True  # False: shown for information, without the target
    float32: bool = False  # the Table holds float32 columns (what the model takes)


def _proba_1(answer: Any) -> np.ndarray:
    return np.asarray(answer)[:, 1]


def sklearn_cases(registry: Registry, train: Rows, y: np.ndarray, folder: Path) -> list[Case]:
    model = HistGradientBoostingClassifier(random_state=0).fit(train.frame, y)
    registry.register(model, "rt-sklearn")
    return [
        Case(
            "sklearn",
            "HistGradientBoostingClassifier (DataFrame)",
            "predict_proba(DataFrame)",
            "rt-sklearn:1",
            lambda p, rows: partial(p.model.predict_proba, rows.frame),
            _proba_1,
        )
    ]


def xgboost_cases(registry: Registry, train: Rows, y: np.ndarray, folder: Path) -> list[Case]:
    import xgboost

    model = xgboost.XGBClassifier(n_estimators=100, max_depth=6, n_jobs=1, random_state=0)
    registry.register(model.fit(train.frame, y), "rt-xgboost")
    what = "XGBClassifier, 100 trees, depth 6 (DataFrame)"
    return [
        Case(
            "xgboost",
            what,
            "predict_proba(numpy)",
            "rt-xgboost:1",
            lambda p, rows: partial(p.model.predict_proba, rows.array),
            _proba_1,
        ),
        Case(
            "xgboost",
            what,
            "predict_proba(DataFrame)",
            "rt-xgboost:1",
            lambda p, rows: partial(p.model.predict_proba, rows.frame),
            _proba_1,
            targeted=False,
        ),
    ]


def lightgbm_cases(registry: Registry, train: Rows, y: np.ndarray, folder: Path) -> list[Case]:
    import lightgbm

    model = lightgbm.LGBMClassifier(
        n_estimators=100, max_depth=6, num_leaves=63, n_jobs=1, random_state=0, verbose=-1
    ).fit(train.frame, y)
    registry.register(model, "rt-lightgbm")
    what = "LGBMClassifier, 100 trees, depth 6 (DataFrame)"
    return [
        Case(  # what the runtime serves: the Booster it loaded
            "lightgbm",
            what,
            "Booster.predict(numpy)",
            "rt-lightgbm:1",
            lambda p, rows: partial(p.model.predict, rows.array),
            np.asarray,
        ),
        Case(  # what the user fitted, in-process
            "lightgbm",
            what,
            "LGBMClassifier.predict_proba(DataFrame)",
            "rt-lightgbm:1",
            lambda p, rows: partial(model.predict_proba, rows.frame),
            _proba_1,
            targeted=False,
        ),
    ]


def onnx_cases(registry: Registry, train: Rows, y: np.ndarray, folder: Path) -> list[Case]:
    from skl2onnx import to_onnx

    forest = RandomForestClassifier(n_estimators=100, max_depth=8, n_jobs=1, random_state=0)
    forest.fit(train.array.astype(np.float32), y)
    graph = to_onnx(forest, train.array[:1].astype(np.float32), options={"zipmap": False})
    registry.register(graph, "rt-onnx", input_example=_float32(train.table.slice(0, 16)))

    def library(p: Predictor, rows: Rows) -> Callable[[], Any]:
        x = rows.array.astype(np.float32)  # what the graph takes
        return partial(p.model.run, None, {p.model.get_inputs()[0].name: x})

    return [
        Case(
            "onnx",
            "RandomForestClassifier(100, depth 8) via skl2onnx",
            "session.run(float32 numpy)",
            "rt-onnx:1",
            library,
            lambda answer: np.asarray(answer[1], np.float64)[:, 1],
            float32=True,
        )
    ]


PYTHON_MODEL = """\
    import json

    import numpy as np
    import pyarrow as pa


    class Logistic:
        def load(self, path):
            self.weights = json.loads((path / "weights.json").read_text())

        def predict(self, table):
            z = sum(w * c.to_numpy() for w, c in zip(self.weights, table.columns))
            return pa.table({"score": 1 / (1 + np.exp(-z))})
"""


def python_cases(registry: Registry, train: Rows, y: np.ndarray, folder: Path) -> list[Case]:
    model = folder / "logistic"
    model.mkdir()
    (model / "logistic.py").write_text(textwrap.dedent(PYTHON_MODEL))
    weights = np.random.default_rng(3).normal(size=train.array.shape[1]).tolist()
    (model / "weights.json").write_text(json.dumps(weights))
    manifest = 'model = "logistic:Logistic"\ntask = "regressor"\n[outputs]\nscore = "double"\n'
    example = train.table.slice(0, 16)
    (model / "mmserve.toml").write_text(manifest)
    registry.register(model, "rt-python", trust_code=True, input_example=example)
    # The same model declaring its rows independent (row_block = 1): its calls are not padded.
    (model / "mmserve.toml").write_text("row_block = 1\n" + manifest)
    registry.register(model, "rt-python-rows", trust_code=True, input_example=example)
    what = "folder model: a numpy logistic score"
    return [
        Case(
            "python",
            what,
            call,
            ref,
            lambda p, rows: partial(p.model.predict, rows.table),
            lambda answer: answer["score"].to_numpy(),
            output="score",
            targeted=ref == "rt-python:1",
        )
        for ref, call in (
            ("rt-python:1", "model.predict(Table)"),
            ("rt-python-rows:1", "model.predict(Table); ours row_block = 1"),
        )
    ]


def libraries() -> str:
    """The runtime libraries' versions, those installed."""
    found = []
    for package in ("xgboost", "lightgbm", "onnxruntime", "skl2onnx", "pandas"):
        with contextlib.suppress(PackageNotFoundError):
            found.append(f"{package} {version(package)}")
    return " · ".join(found)


def _float32(table: pa.Table) -> pa.Table:
    return table.cast(pa.schema([(name, pa.float32()) for name in table.column_names]))


BUILDERS = {
    "sklearn": sklearn_cases,
    "xgboost": xgboost_cases,
    "lightgbm": lightgbm_cases,
    "onnx": onnx_cases,
    "python": python_cases,
}


def runtime_cases(
    registry: Registry, names: tuple[str, ...], folder: Path, console: Console
) -> list[Case]:
    """Each runtime's model, trained on the same rows and registered; a runtime whose module
    or library is not installed is skipped, with a line saying so."""
    x, y = synthetic(20_000, features=RUNTIME_FEATURES, dtype=RUNTIME_FLOATS)
    train = rows_of(x)
    cases: list[Case] = []
    for name in names:
        if importlib.util.find_spec(f"serving.runtimes.{name}") is None:
            console.print(f"{name}: skipped, serving/runtimes/{name}.py is not there")
            continue
        try:
            cases += BUILDERS[name](registry, train, y, folder)
        except ImportError as err:
            console.print(f"{name}: skipped, {err}")
    return cases


def per_runtime(registry: Registry, cases: list[Case], budget: Budget) -> Table:
    out = Table(
        "runtime",
        "rows",
        "reps",
        "library call",
        "library",
        "mmserve",
        "ratio",
        "best",
        "target",
        "result",
        title="Predictor.predict(Table) against the library's own call",
    )
    x_all, _ = synthetic(max(RUNTIME_ROWS), seed=1, features=RUNTIME_FEATURES, dtype=RUNTIME_FLOATS)
    for case in cases:
        predictor = registry.load(case.ref)
        for size in RUNTIME_ROWS:
            base, pred = timed_case(case, predictor, rows_of(x_all[:size]), budget)
            ratio = statistics.median(pred) / statistics.median(base)
            target = RUNTIME_TARGETS.get(size) if case.targeted else None
            goal = "" if target is None else f"<= {target:.2f}x"
            verdict = "" if target is None else ("PASS" if ratio <= target else "MISS")
            out.add_row(
                case.runtime,
                f"{size:,}",
                str(len(base)),
                case.call,
                fmt(statistics.median(base)),
                fmt(statistics.median(pred)),
                f"{ratio:.2f}x",
                f"{min(pred) / min(base):.2f}x",
                goal,
                verdict,
            )
        out.add_section()
    return out


def timed_case(
    case: Case, predictor: Predictor, rows: Rows, budget: Budget
) -> tuple[list[float], list[float]]:
    """Seconds of each library call and each predictor call on ``rows``, once their answers
    are found equal, bit for bit."""
    library = case.library(predictor, rows)
    ours = partial(predictor.predict, _float32(rows.table) if case.float32 else rows.table)
    if not np.array_equal(case.answer(library()), ours()[case.output].to_numpy()):
        raise SystemExit(
            f"{case.ref}: the answers differ from {case.call}'s at {len(rows.array)} rows"
        )
    return timed_pair(library, ours, budget)


def train() -> dict[str, Any]:
    x, y = synthetic(20_000)
    forest = RandomForestClassifier(n_estimators=100, max_depth=10, n_jobs=1, random_state=0)
    return {"lr": LogisticRegression(max_iter=1000).fit(x, y), "rf": forest.fit(x, y)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs; skips rf at 100k rows")
    parser.add_argument(
        "--runtimes",
        default=",".join(RUNTIMES),
        help=f"the per-runtime section's runtimes, of {', '.join(RUNTIMES)} ('' for none)",
    )
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time calls in the process's CPU time, not the wall clock (a loaded machine)",
    )
    args = parser.parse_args()
    quick, runtimes = args.quick, tuple(r for r in args.runtimes.split(",") if r)
    unknown = sorted(set(runtimes) - set(RUNTIMES))
    if unknown:
        parser.error(f"unknown runtime {', '.join(unknown)}; choose from {', '.join(RUNTIMES)}")
    budget = QUICK if quick else FULL
    if args.cpu_time:
        budget = replace(budget, clock=time.process_time)
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
        if runtimes:
            cases = runtime_cases(registry, runtimes, Path(tmp), console)
            threadpool_limits(
                1
            )  # again: the runtimes' libraries bring OpenMP runtimes of their own
            console.print(libraries(), "· timed in CPU time" if args.cpu_time else "")
            for runtime, model in dict.fromkeys((c.runtime, c.model) for c in cases):
                console.print(f"{runtime}: {model}")
            Console(width=140).print(per_runtime(registry, cases, budget))
            console.print(
                "ratio: median mmserve / median library; best: fastest mmserve / fastest "
                "library call. Rows without a target are for information."
            )


if __name__ == "__main__":
    main()
