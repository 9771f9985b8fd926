"""A schedule fires a batch run through a real ``mmserve beat`` and ``mmserve worker``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from batch.schedules import Schedule, load
from serving.errors import InvalidSchedules
from serving.registry import Registry
from serving.store import Store
from tests import fixtures
from tests.batch.test_runner import dataset
from tests.services import mmserve_worker, redis_server, stop


def test_a_schedule_takes_cron_or_every_and_dates_its_output(tmp_path: Path) -> None:
    spec = {"model": "lr", "input": "in.parquet", "output": "out/{date}"}
    (tmp_path / "s.yaml").write_text(
        f"- name: nightly\n  cron: '0 2 * * *'\n  spec: {json.dumps(spec)}\n"
        f"- name: often\n  every: 30\n  spec: {json.dumps({**spec, 'output': 'o/{datetime}'})}\n"
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


def schedule(output: str, **timing: object) -> dict[str, object]:
    return {"name": "often", **timing, "spec": {"model": "lr", "input": "in", "output": output}}


@pytest.mark.parametrize(
    ("timing", "output", "why"),
    [
        ({"every": 15}, "out/{date}", "every 15 s, but its output changes once a day ({date})"),
        (
            {"cron": "*/15 * * * *"},
            "out/{date}",
            "more than once a day (cron '*/15 * * * *'), but its output changes once a day",
        ),
        ({"cron": "0 2 * * *"}, "out/", "on cron '0 2 * * *', but its output is the same"),
        ({"every": 86400}, "out/{time}", "every 86400 s, but its output repeats every day"),
        ({"every": 0.5}, "out/{datetime}", "every 0.5 s, but its output changes once a second"),
    ],
)
def test_a_schedule_whose_output_repeats_within_its_period_is_refused_at_load(
    tmp_path: Path, timing: dict[str, object], output: str, why: str
) -> None:
    # A firing into the output of an earlier one resumed that finished run: it "succeeded"
    # in milliseconds, scoring nothing.
    (tmp_path / "s.yaml").write_text(json.dumps([schedule(output, **timing)]))
    with pytest.raises(InvalidSchedules) as refused:
        load(tmp_path / "s.yaml")
    assert refused.value.message.startswith(f"{tmp_path / 's.yaml'}: schedule 'often' fires {why}")
    assert "put {datetime} in it" in refused.value.message  # and says what to use


@pytest.mark.parametrize(
    ("timing", "output"),
    [
        ({"every": 15}, "out/{datetime}"),
        ({"every": 15}, "out/{date}/{time}"),
        ({"every": 1}, "out/{datetime}"),
        ({"every": 86400}, "out/{date}"),
        ({"cron": "0 2 * * *"}, "out/{date}"),
        ({"cron": "*/15 * * * *"}, "out/{datetime}"),
    ],
)
def test_a_schedule_whose_output_changes_at_every_firing_loads(
    tmp_path: Path, timing: dict[str, object], output: str
) -> None:
    (tmp_path / "s.yaml").write_text(json.dumps([schedule(output, **timing)]))
    assert load(tmp_path / "s.yaml")[0].spec.output == output


def test_each_firing_of_a_frequent_schedule_writes_its_own_run() -> None:
    often = Schedule.model_validate(schedule("out/{datetime}", every=15))
    first = datetime(2026, 11, 23, 2, 0, 0, 250_000, tzinfo=UTC)
    spec_1, run_1 = often.run_of(first)
    spec_2, run_2 = often.run_of(first + timedelta(seconds=15))
    assert (spec_1.output, spec_2.output) == ("out/20261123T020000Z", "out/20261123T020015Z")
    assert run_1 != run_2
    assert often.run_of(first)[1] == run_1  # the same firing delivered again: the same run
    split = Schedule.model_validate(schedule("out/{date}/{time}", every=15))
    assert split.run_of(first)[0].output == "out/2026-11-23/020000"


def test_beat_refuses_a_schedule_that_would_repeat_its_output(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(json.dumps([schedule("out/{date}", every=15)]))
    env = {**os.environ, "MMSERVE_SCHEDULES": str(tmp_path / "s.yaml"),
           "MMSERVE_BROKER_URL": "redis://127.0.0.1:9/0"}  # fmt: skip
    mmserve = os.path.join(os.path.dirname(sys.executable), "mmserve")
    beat = subprocess.run([mmserve, "beat"], env=env, capture_output=True, text=True, timeout=60)
    assert beat.returncode == 2
    assert beat.stderr.startswith(
        f"error: {tmp_path / 's.yaml'}: schedule 'often' fires every 15 s, but its output "
        "changes once a day ({date})"
    )
    assert "Traceback" not in beat.stderr


@pytest.mark.slow
def test_beat_fires_each_run_of_a_frequent_schedule(tmp_path: Path) -> None:
    store = Store.from_url(str(tmp_path / "store"))
    Registry(store).register(fixtures.logistic(), "lr")
    pq.write_table(dataset(300), tmp_path / "in.parquet")
    spec = {"model": "lr", "input": str(tmp_path / "in.parquet"),
            "output": str(tmp_path / "scores" / "{datetime}"), "id_column": "id"}  # fmt: skip
    (tmp_path / "schedules.yaml").write_text(
        f"- name: often\n  every: 1\n  spec: {json.dumps(spec)}\n"
    )
    scores = tmp_path / "scores"
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
                # Each firing scores into its own output: a run resumed would write nothing.
                while len(list(scores.glob("*/_manifest.json"))) < 2:
                    said = (tmp_path / "worker.log").read_text()[-2000:]
                    assert time.monotonic() < deadline and beat.poll() is None, said
                    time.sleep(0.2)
            finally:
                stop(beat)
    manifests = sorted(scores.glob("*/_manifest.json"))
    for manifest in manifests[:2]:
        assert re.fullmatch(r"\d{8}T\d{6}Z", manifest.parent.name)
        written = json.loads(manifest.read_text())
        assert (written["rows"], written["model"]) == (300, "lr:1")
    assert len({json.loads(m.read_text())["run_id"] for m in manifests}) == len(manifests)
