"""Batch transform: ``mmserve batch run`` against the limit, one plain pyarrow + numpy process.

    .venv/bin/python benchmarks/batch.py [--quick] [--rows N] [--rf-rows N] [--models lr,rf]

One parquet input of 5,000,000 rows (``--quick``: 500,000) with an int64 ``id`` and 20 float32
features, in row groups of 250,000 rows, in a local temporary folder. For each model (a
LogisticRegression and a RandomForest of 100 trees, depth 10), three runs, each its own
process, one at a time: the limit (read the whole table, to numpy, ``predict_proba``, write
parquet), then ``mmserve batch run`` with 1 and with 2 workers (``--partition-rows 250000``: one
partition per row group). rows/s is the input's rows over the process's wall time. Peak RSS
is exact for one process (``wait4``); for ``--workers 2`` it is the peak of the process group's
summed VmRSS, sampled every 50 ms. See benchmarks/README.md, "Batch".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

# scikit-learn and mmserve are imported where the parent process needs them (training and
# registering): this file is also the limit's process (``limit`` below), which should carry
# only what a plain script would import.

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "benchmarks"
WORK = HERE / ".work"
LOGS = WORK / "logs"
RESULTS = WORK / "batch.json"
MMSERVE = Path(sys.executable).parent / "mmserve"
FEATURES = 20
MODELS = ("lr", "rf")
ROW_GROUP = 250_000  # rows per row group of the input, and --partition-rows
WORKERS = (1, 2)
SAMPLE_S = 0.05  # how often the process group's RSS is summed
TIMEOUT_S = 1800  # one measured process; killed (with its group) after that
CHECK_ROWS = 10_000  # rows of each mmserve output compared with the limit's
PROBA_TOLERANCE = 1e-6
LIMIT_MARK = "LIMIT_JSON "
MIB = 1024 * 1024
# One BLAS/OpenMP thread per process, for every run alike: with 2 workers on 2 cores, a
# second BLAS thread per process could only wait. pyarrow keeps its own thread pool.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# The targets: (model, workers) -> at least this many times the limit's rows/s.
SPEED_TARGETS = {("lr", 1): 0.9, ("rf", 1): 0.9, ("lr", 2): 1.6, ("rf", 2): 2.0}
RSS_TARGET = 0.25  # one worker: at most this share of the limit's peak RSS

console = Console(width=120)


@dataclass(frozen=True)
class Options:
    rows: int
    rf_rows: int
    models: tuple[str, ...]

    def rows_of(self, model: str) -> int:
        return self.rf_rows if model == "rf" else self.rows


@dataclass(frozen=True)
class Usage:
    """What one measured process (and the processes it started) used."""

    wall_s: float  # Popen → exit
    cpu_s: float  # user + system: wait4's, or the group's sampled sum if larger (helpers)
    largest_mib: float  # wait4's ru_maxrss: the largest peak among them (exact, not a sum)
    group_peak_mib: float  # the peak of the group's summed VmRSS, sampled every 50 ms
    processes: int  # processes seen in its group


@dataclass(frozen=True)
class Measure:
    """One run: the limit, or ``mmserve batch run`` with some workers."""

    model: str
    run: str  # "limit" or "mmserve, N worker(s)"
    workers: int  # 0 for the limit
    rows: int
    usage: Usage
    work_s: float  # the process's own measure of its work: the limit's phases, the manifest's
    phases: dict[str, float] = field(default_factory=dict)  # the limit's, in seconds

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.usage.wall_s

    @property
    def peak_mib(self) -> float:
        """One process: its exact peak. A group: the sampled peak of its sum (which the
        largest single peak also bounds from below)."""
        return max(self.usage.largest_mib, self.usage.group_peak_mib)


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    met: bool


# -- the limit (its own process) -------------------------------------------------------------


def limit(model_path: str, input_path: str, output_path: str) -> None:
    """The limit: the whole table in memory, one model call, one parquet write. Prints the
    seconds of each phase as one line of JSON."""
    import joblib

    times = [time.perf_counter()]
    model = joblib.load(model_path)
    times.append(time.perf_counter())
    table = pq.read_table(input_path)
    times.append(time.perf_counter())
    x = np.column_stack([table.column(f"f{i}").to_numpy() for i in range(FEATURES)])
    times.append(time.perf_counter())
    proba = model.predict_proba(x)
    times.append(time.perf_counter())
    columns = {"id": table.column("id"), "label": model.classes_.take(proba.argmax(axis=1))}
    columns |= {f"proba_{c}": proba[:, j] for j, c in enumerate(model.classes_)}
    pq.write_table(pa.table(columns), output_path)
    times.append(time.perf_counter())
    names = ("load", "read", "to numpy", "predict_proba", "write")
    phases = {name: b - a for name, a, b in zip(names, times, times[1:], strict=False)}
    print(LIMIT_MARK + json.dumps(phases), flush=True)


# -- data and models -------------------------------------------------------------------------


def synthetic(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, FEATURES), dtype=np.float32)
    signal_ = x[:, 0] + 0.5 * x[:, 1] - x[:, 2] * x[:, 3]
    return x, (signal_ + rng.normal(scale=0.5, size=rows) > 0).astype(np.int64)


def write_input(path: Path, rows: int) -> None:
    """``rows`` rows (an int64 id, 20 float32 features) in row groups of ROW_GROUP rows,
    written a row group at a time."""
    rng = np.random.default_rng(1)
    schema = pa.schema([("id", pa.int64()), *((f"f{i}", pa.float32()) for i in range(FEATURES))])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, ROW_GROUP):
            n = min(ROW_GROUP, rows - start)
            x = rng.standard_normal((n, FEATURES), dtype=np.float32)
            columns = [pa.array(np.arange(start, start + n, dtype=np.int64))]
            columns += [pa.array(x[:, i]) for i in range(FEATURES)]
            writer.write_table(pa.Table.from_arrays(columns, schema=schema), ROW_GROUP)


def register_models(names: tuple[str, ...], folder: Path) -> None:
    """Train on 20,000 rows; register each model in ``folder/store`` with a float32 input
    example (so the predictor does no cast), and write it with joblib for the limit."""
    import joblib
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    from serving.registry import Registry
    from serving.store import Store

    x, y = synthetic(20_000, seed=0)
    estimators = {
        "lr": LogisticRegression(max_iter=1000),
        "rf": RandomForestClassifier(n_estimators=100, max_depth=10, n_jobs=1, random_state=0),
    }
    registry = Registry(Store.from_url(str(folder / "store")))
    example = pa.table({f"f{i}": x[:8, i] for i in range(FEATURES)})
    for name in names:
        model = estimators[name].fit(x, y)
        registry.register(model, name=name, input_example=example)
        joblib.dump(model, folder / f"{name}.joblib")


# -- measured processes ----------------------------------------------------------------------


class GroupSampler:
    """Every 50 ms, in a thread: the summed VmRSS of every process in one process group, and
    the CPU time each member had used when last seen (``--workers 2``'s helpers are children
    of multiprocessing's fork server, which the measured process never waits for, so
    ``wait4`` does not count them)."""

    def __init__(self, pgid: int):
        self.pgid = pgid
        self.peak_kib = 0
        self.cpu_ticks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    @property
    def pids(self) -> set[int]:
        return set(self.cpu_ticks)

    @property
    def cpu_s(self) -> float:
        return sum(self.cpu_ticks.values()) / os.sysconf("SC_CLK_TCK")

    def _run(self) -> None:
        while not self._stop.is_set():
            members = _group_members(self.pgid)
            self.cpu_ticks.update(members)
            self.peak_kib = max(self.peak_kib, sum(_rss_kib(pid) for pid in members))
            self._stop.wait(SAMPLE_S)

    def __enter__(self) -> GroupSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def _group_members(pgid: int) -> dict[int, int]:
    """The group's processes, each with the CPU ticks (user + system) it has used."""
    members = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ... utime stime: comm may hold spaces, so split after ")".
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:
            members[int(entry)] = int(fields[11]) + int(fields[12])
    return members


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0  # gone, or a zombie (which has no VmRSS line)


@contextlib.contextmanager
def started(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start a process in its own group; kill the whole group however we leave (the group
    also holds the workers ``--workers 2`` spawns)."""
    with log.open("w") as out:
        process = subprocess.Popen(
            argv,
            env={**os.environ, **ONE_THREAD, **env},
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def measure(argv: list[str], env: dict[str, str], log: Path) -> Usage:
    """Run one process to its end; what it used. ``wait4`` gives its own rusage, which
    includes the children it waited for (the spawned workers) but not our other runs'."""
    start = time.perf_counter()
    with started(argv, env, log) as process, GroupSampler(process.pid) as sampler:
        watchdog = threading.Timer(TIMEOUT_S, os.killpg, (process.pid, signal.SIGKILL))
        watchdog.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            watchdog.cancel()
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    if process.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited with {process.returncode}; {_tail_of(log)}")
    return Usage(
        wall_s=wall,
        cpu_s=max(usage.ru_utime + usage.ru_stime, sampler.cpu_s),
        largest_mib=usage.ru_maxrss / 1024,  # KiB on Linux
        group_peak_mib=sampler.peak_kib / 1024,
        processes=len(sampler.pids),
    )


def _tail_of(log: Path, lines: int = 3) -> str:
    last = log.read_text(errors="replace").strip().splitlines()[-lines:]
    return f"{log} ends: " + " | ".join(last) if last else f"{log} is empty"


# -- the runs --------------------------------------------------------------------------------


def run_limit(model: str, rows: int, source: Path, folder: Path) -> Measure:
    out = folder / f"limit-{model}.parquet"
    log = LOGS / f"batch-limit-{model}.log"
    argv = [sys.executable, str(Path(__file__).resolve()), "_limit"]
    argv += [str(folder / f"{model}.joblib"), str(source), str(out)]
    usage = measure(argv, {}, log)
    lines = [line for line in log.read_text().splitlines() if line.startswith(LIMIT_MARK)]
    phases = json.loads(lines[-1].removeprefix(LIMIT_MARK))
    written = pq.ParquetFile(out).metadata.num_rows
    if written != rows:
        raise RuntimeError(f"the limit wrote {written} rows of {rows}")
    return Measure(model, "limit", 0, rows, usage, sum(phases.values()), phases)


def run_mmserve(model: str, workers: int, rows: int, source: Path, folder: Path) -> Measure:
    out = folder / f"out-{model}-w{workers}"
    argv = [str(MMSERVE), "batch", "run", "--model", model, "--input", str(source)]
    argv += ["--output", str(out), "--id-column", "id", "--workers", str(workers)]
    argv += ["--partition-rows", str(ROW_GROUP)]
    env = {"MMSERVE_STORE_URL": str(folder / "store")}
    usage = measure(argv, env, LOGS / f"batch-mmserve-{model}-w{workers}.log")
    manifest = json.loads((out / "_manifest.json").read_text())
    if manifest["rows"] != rows or manifest["rejected"]:
        raise RuntimeError(f"{out}: {manifest['rows']} rows, {manifest['rejected']} rejected")
    check_output(out, folder / f"limit-{model}.parquet")
    label = f"mmserve, {workers} worker" + ("s" if workers > 1 else "")
    return Measure(model, label, workers, rows, usage, float(manifest["seconds"]))


def check_output(out: Path, limit_out: Path) -> None:
    """mmserve's first rows against the limit's: the same ids, labels and probabilities."""
    ours = _head(out / "part-00000.parquet")
    theirs = _head(limit_out)
    if ours.column_names != theirs.column_names:
        raise RuntimeError(f"{out}: columns {ours.column_names}, the limit's {theirs.column_names}")
    for name in ours.column_names:
        a, b = ours.column(name).to_numpy(), theirs.column(name).to_numpy()
        same = np.allclose(a, b, rtol=0, atol=PROBA_TOLERANCE) if a.dtype.kind == "f" else a == b
        if not np.all(same):
            raise RuntimeError(f"{out}: column {name} differs from the limit's")


def _head(path: Path) -> pa.Table:
    return pa.Table.from_batches([next(pq.ParquetFile(path).iter_batches(CHECK_ROWS))])


def run(options: Options, folder: Path) -> list[Measure]:
    console.print(f"training and registering {', '.join(options.models)} ...")
    register_models(options.models, folder)
    inputs: dict[int, Path] = {}
    measures: list[Measure] = []
    for model in options.models:
        rows = options.rows_of(model)
        if rows not in inputs:
            inputs[rows] = folder / f"input-{rows}.parquet"
            started_at = time.perf_counter()
            write_input(inputs[rows], rows)
            size = inputs[rows].stat().st_size / MIB
            took = time.perf_counter() - started_at
            console.print(f"input: {rows:,} rows, {size:,.0f} MiB, written in {took:.1f} s")
        measures.append(run_limit(model, rows, inputs[rows], folder))
        console.print(progress(measures[-1]))
        for workers in WORKERS:
            measures.append(run_mmserve(model, workers, rows, inputs[rows], folder))
            console.print(progress(measures[-1]))
    return measures


def progress(m: Measure) -> str:
    return (
        f"{m.model} · {m.run:<19} {m.rows_per_s:>9,.0f} rows/s  {m.usage.wall_s:6.1f} s"
        f"  peak {m.peak_mib:7,.0f} MiB  load {os.getloadavg()[0]:.2f}"
    )


# -- report ----------------------------------------------------------------------------------


def results_table(model: str, measures: list[Measure]) -> Table:
    ours = [m for m in measures if m.model == model]
    base = ours[0]
    table = Table(
        "run",
        "rows/s",
        "÷ limit",
        "seconds",
        "of which startup + exit",
        "CPU s",
        "peak RSS MiB",
        "÷ limit",
        "processes",
        title=f"{model}: {base.rows:,} rows, {FEATURES} float32 features",
    )
    for m in ours:
        table.add_row(
            m.run,
            f"{m.rows_per_s:,.0f}",
            f"{m.rows_per_s / base.rows_per_s:.2f}x",
            f"{m.usage.wall_s:.1f}",
            f"{m.usage.wall_s - m.work_s:.1f}",
            f"{m.usage.cpu_s:.1f}",
            f"{m.peak_mib:,.0f}",
            f"{m.peak_mib / base.peak_mib:.0%}",
            str(m.usage.processes),
        )
    return table


def phases_table(measures: list[Measure]) -> Table:
    limits = [m for m in measures if m.workers == 0]
    table = Table("phase", *(f"{m.model} s" for m in limits), title="the limit's phases")
    for phase in limits[0].phases:
        cells = [f"{m.phases[phase]:.2f} ({m.phases[phase] / m.work_s:.0%})" for m in limits]
        table.add_row(phase, *cells)
    outside = [f"{m.usage.wall_s - m.work_s:.2f}" for m in limits]
    table.add_row("startup + exit (interpreter, imports)", *outside)
    return table


def targets(measures: list[Measure]) -> list[Target]:
    index = {(m.model, m.workers): m for m in measures}
    found = []
    for (model, workers), times in SPEED_TARGETS.items():
        base, ours = index.get((model, 0)), index.get((model, workers))
        if base is None or ours is None:
            continue
        ratio = ours.rows_per_s / base.rows_per_s
        plural = "s" if workers > 1 else ""
        name = f"{model}, {workers} worker{plural}: rows/s ≥ {times:g}x the limit's"
        measured = f"{ratio:.2f}x ({ours.rows_per_s:,.0f} vs {base.rows_per_s:,.0f})"
        found.append(Target(name, measured, ratio >= times))
        if workers == 1:
            share = ours.peak_mib / base.peak_mib
            name = f"{model}, 1 worker: peak RSS ≤ {RSS_TARGET:.0%} of the limit's"
            measured = f"{share:.0%} ({ours.peak_mib:,.0f} vs {base.peak_mib:,.0f} MiB)"
            found.append(Target(name, measured, share <= RSS_TARGET))
    return sorted(found, key=lambda t: t.name)


def targets_table(found: list[Target]) -> Table:
    table = Table("target", "measured", "result", title="the issue's targets for mmserve")
    for target in found:
        verdict = "PASS" if target.met else "[bold red]MISS[/bold red]"
        table.add_row(target.name, target.measured, verdict)
    return table


def machine() -> dict[str, Any]:
    import sklearn

    return {
        "host": platform.node(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pyarrow": pa.__version__,
        "scikit-learn": sklearn.__version__,
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
    }


def write_json(options: Options, measures: list[Measure], found: list[Target], load: float) -> None:
    document = {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "machine": {**machine(), "load_average_1m_at_start": round(load, 2)},
        "options": {**asdict(options), "row_group_rows": ROW_GROUP, "partition_rows": ROW_GROUP},
        "runs": [
            {**asdict(m), "rows_per_s": m.rows_per_s, "peak_mib": m.peak_mib} for m in measures
        ],
        "targets": [asdict(t) for t in found],
    }
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")


# -- main ------------------------------------------------------------------------------------


def parse_options() -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500,000 rows")
    parser.add_argument("--rows", type=int, help="rows of the input (default 5,000,000)")
    parser.add_argument("--rf-rows", type=int, help="rows of the input for rf (default: --rows)")
    parser.add_argument("--models", default=",".join(MODELS), help="of: lr, rf")
    args = parser.parse_args()
    names = {n.strip() for n in args.models.split(",") if n.strip()}
    if not names or names - set(MODELS):
        parser.error(f"--models: choose from {', '.join(MODELS)}")
    rows = args.rows or (500_000 if args.quick else 5_000_000)
    models = tuple(m for m in MODELS if m in names)
    return Options(rows=rows, rf_rows=args.rf_rows or rows, models=models)


def main() -> None:
    # Ctrl-C and SIGTERM unwind through ``started``, which kills every process group it started
    # (SIGINT too, as a shell starting us in the background may have set it to be ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    options = parse_options()
    LOGS.mkdir(parents=True, exist_ok=True)
    console.print(f"{platform.node()} · {os.cpu_count()} cores")
    if options.rf_rows != options.rows and "rf" in options.models:
        rows = f"rf runs on {options.rf_rows:,} rows, lr on {options.rows:,}"
        console.print(f"[yellow]{rows}[/yellow]")
    load = os.getloadavg()[0]
    if load > 0.5:
        console.print(f"[yellow]load average {load:.2f}: something else is using the CPUs[/yellow]")
    with tempfile.TemporaryDirectory(prefix="batch-") as tmp:
        measures = run(options, Path(tmp))
    for model in options.models:
        console.print(results_table(model, measures))
    console.print(phases_table(measures))
    found = targets(measures)
    console.print(targets_table(found))
    write_json(options, measures, found, load)
    console.print(f"written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["_limit"]:
        limit(*sys.argv[2:5])
        sys.exit(0)
    try:
        main()
    except KeyboardInterrupt:
        console.print("interrupted; every process it started is stopped")
        sys.exit(130)
