"""A schedule fires a batch run through a real ``mmserve beat`` and ``mmserve worker``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from batch.schedules import Schedule, load
from serving.registry import Registry
from serving.store import Store
from tests import fixtures
from tests.batch.test_runner import dataset
from tests.services import mmserve_worker, redis_server, stop


def test_a_schedule_takes_cron_or_every_and_dates_its_output(tmp_path: Path) -> None:
    spec = {"model": "lr", "input": "in.parquet", "output": "out/{date}"}
    (tmp_path / "s.yaml").write_text(
        f"- name: nightly\n  cron: '0 2 * * *'\n  spec: {json.dumps(spec)}\n"
        f"- name: often\n  every: 30\n  spec: {json.dumps(spec)}\n"
    )
    nightly, often = load(tmp_path / "s.yaml")
    assert str(nightly.timing()) == "<crontab: 0 2 * * * (m/h/dM/MY/d)>"
    assert often.timing().total_seconds() == 30
    when = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
    spec_then, run_id = nightly.run_of(when)
    assert spec_then.output == "out/2026-11-23"
    assert nightly.run_of(when)[1] == run_id != often.run_of(when)[1]
    with pytest.raises(ValidationError, match="either cron or every"):
        Schedule.model_validate({"name": "x", "spec": spec})
    with pytest.raises(ValidationError, match="cron takes 5 fields"):
        Schedule.model_validate({"name": "x", "cron": "0 2 * *", "spec": spec})


@pytest.mark.slow
def test_beat_fires_the_scheduled_run(tmp_path: Path) -> None:
    store = Store.from_url(str(tmp_path / "store"))
    Registry(store).register(fixtures.logistic(), "lr")
    pq.write_table(dataset(300), tmp_path / "in.parquet")
    spec = {"model": "lr", "input": str(tmp_path / "in.parquet"),
            "output": str(tmp_path / "scores" / "{date}"), "id_column": "id"}  # fmt: skip
    (tmp_path / "schedules.yaml").write_text(
        f"- name: often\n  every: 1\n  spec: {json.dumps(spec)}\n"
    )
    manifest = tmp_path / "scores" / datetime.now(UTC).date().isoformat() / "_manifest.json"
    with redis_server() as broker:
        env = {"MMSERVE_STORE_URL": store.url, "MMSERVE_BROKER_URL": broker.url,
               "MMSERVE_BATCH__ROOTS": json.dumps([str(tmp_path)])}  # fmt: skip
        # Only the beat reads the schedules: the schedule travels to the worker in its message.
        beat_env = {**os.environ, **env, "MMSERVE_SCHEDULES": str(tmp_path / "schedules.yaml")}
        mmserve = os.path.join(os.path.dirname(sys.executable), "mmserve")
        with (
            mmserve_worker(env, str(tmp_path / "worker.log"), "--concurrency", "1"),
            open(tmp_path / "beat.log", "wb") as log,
        ):
            beat = subprocess.Popen(
                [mmserve, "beat"], env=beat_env, stdout=log, stderr=subprocess.STDOUT
            )
            try:
                deadline = time.monotonic() + 60
                while not manifest.exists():
                    said = (tmp_path / "worker.log").read_text()[-2000:]
                    assert time.monotonic() < deadline and beat.poll() is None, said
                    time.sleep(0.2)
            finally:
                stop(beat)
    written = json.loads(manifest.read_text())
    assert (written["rows"], written["model"]) == (300, "lr:1")
