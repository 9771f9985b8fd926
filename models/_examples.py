"""The files the README's commands use, left by the demo in ``demo/`` (in the folder it ran
from, ``make demo``'s being the repository's; git ignores it): a churn model artifact to
register (``churn.skops``, ``legacy.joblib`` for ``--trust-pickle``, the XGBoost
``credit.ubj``), rows to predict or
use as an input example (``rows.csv``), a job's input (``scans.csv``) and a batch input
(``customers.parquet``), all churn customers but the pickle, a house-price model."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from models import churn, credit
from models._server import DemoError
from serving.codecs import write_file
from serving.registry import Registry
from serving.runtimes import sklearn

FOLDER = Path("demo")
FILES = (
    "churn.skops",
    "legacy.joblib",
    "credit.ubj",
    "rows.csv",
    "scans.csv",
    "customers.parquet",
    "digits",  # a folder: 20 PNG files of held-out digits (written by the demo's last section)
)
SEED = 2026


def customers() -> pa.Table:
    """The batch input: its first id is the one the README's precomputed answer asks for."""
    return churn.sample(10_000, SEED)


def write(registry: Registry, folder: Path = FOLDER) -> None:
    """Write the files into ``folder``, from the models just registered."""
    mv = registry.get(f"{churn.NAME}@production")
    artifact = registry.store.read(f"registry/{mv.name}/{mv.version}/{mv.artifact}")
    legacy = sklearn.dump(registry.load("house_prices@production").model, "sklearn-pickle")
    credit_mv = registry.get(f"{credit.NAME}@production")
    booster = registry.store.read(f"registry/credit/{credit_mv.version}/{credit_mv.artifact}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "churn.skops").write_bytes(artifact)
        (folder / "legacy.joblib").write_bytes(legacy)
        (folder / "credit.ubj").write_bytes(booster)
        write_file(churn.sample(5, SEED + 1), folder / "rows.csv")
        write_file(churn.sample(1000, SEED + 2), folder / "scans.csv")
        pq.write_table(customers(), folder / "customers.parquet")
    except OSError as err:
        raise DemoError(f"cannot write the README's example files in {folder}/: {err}") from err


def closing_lines(folder: Path = FOLDER) -> list[str]:
    """How to go on from here: ``mmserve`` on the PATH, and where the README's files are."""
    lines = []
    bin_dir = Path(sys.executable).parent
    if shutil.which("mmserve") != str(bin_dir / "mmserve"):
        lines += [
            f"mmserve is in {_shown(bin_dir)}, not on your PATH: run",
            f"  source {_shown(bin_dir / 'activate')}",
            f'  (or: export PATH="{_shown(bin_dir, "$PWD/")}:$PATH")',
        ]
    lines.append(f"The README's commands use the files in {folder}/: {', '.join(FILES)}")
    return lines


def _shown(path: Path, base: str = "") -> str:
    """``path`` from the working directory when it is inside it (``.venv/bin``)."""
    here = Path.cwd()
    return f"{base}{path.relative_to(here)}" if path.is_relative_to(here) else str(path)
