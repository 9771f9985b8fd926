"""What Spark and Ray share (batch.engines), in this process: a job planned on the driver
from metadata, a task's batches scored as a batch run's part, rejects, refusals."""

from __future__ import annotations

import pickle
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch import engines
from batch.parts import BadRow
from serving.errors import MissingColumn
from tests.batch.engine_runs import World, dataset, with_nulls


def test_a_job_is_pinned_and_typed_on_the_driver_from_metadata_alone(world: World) -> None:
    job = engines.plan("churn@production,churn:2", world.settings, passthrough=["id"])
    assert job.model == "churn:1,churn:2"  # each step of the chain
    assert job.outputs == pa.schema(
        [("label", pa.int64()), ("proba_0", pa.float64()), ("proba_1", pa.float64())]
    )
    assert job.source.store_url == str(world.registry.store.url)  # an absolute path
    assert pickle.loads(pickle.dumps(job)) == job  # shipped to executors as it is
    # A chain's answers are its last step's (the first step's outputs feed it, unused here).
    table = dataset(300)
    answers = engines.score_batches(job, table.to_batches(max_chunksize=64), "here", "x")
    expected = world.registry.load("churn:2").predict(table, ["id"])
    assert pa.Table.from_batches(list(answers)).equals(expected)
    # churn:2 answers otherwise than churn:1: an unpinned alias would show in the answers.
    first = world.registry.load("churn:1").predict(table, ["id"])
    assert not first.column("label").equals(expected.column("label"))


def test_a_tasks_rejects_are_numbered_across_its_batches(world: World, tmp_path: Path) -> None:
    table = with_nulls(dataset(300), "income", [7, 250])
    rejects = str(tmp_path / "rejects")
    job = engines.plan("churn:1", world.settings, ["id"], "skip", rejects)
    scored = list(engines.score_batches(job, table.to_batches(100), "here", "part-00004.parquet"))
    assert pa.Table.from_batches(scored).column("id").to_pylist() == [
        i for i in range(300) if i not in (7, 250)
    ]
    set_aside = pq.read_table(tmp_path / "rejects" / "part-00004.parquet")
    assert set_aside.to_pydict() == {
        "id": [7, 250],
        "row": [7, 250],
        "reason": ["column 'income' has a null value"] * 2,
    }
    fail = engines.plan("churn:1", world.settings, ["id"])
    # The task's rows start at id 100: id 250 is its row 150, in its second batch.
    message = r"Spark partition 4 row 150: column 'income' has a null value \(id=250\)"
    with pytest.raises(BadRow, match=message):
        list(engines.score_batches(fail, table.slice(100).to_batches(100), "Spark partition 4", ""))


def test_the_driver_refuses_a_job_no_task_could_run(world: World) -> None:
    with pytest.raises(ValueError, match=r"on_error='skip' needs rejects="):
        engines.plan("churn:1", world.settings, on_error="skip")
    with pytest.raises(ValueError, match=r"on_error must be 'fail' or 'skip', not 'drop'"):
        engines.plan("churn:1", world.settings, on_error="drop")  # type: ignore[arg-type]
    with pytest.raises(MissingColumn, match="missing column 'customer_id'"):
        engines.plan("churn:1", world.settings, ["customer_id"], columns=["id", "age"])
    with pytest.raises(ValueError, match="passthrough column 'label' is also an answer"):
        engines.plan("churn:1", world.settings, ["label"])
    job = engines.plan("churn:1", world.settings, ["customer_id"])  # Ray: columns unknown
    model = engines.scorer(job)
    with pytest.raises(MissingColumn, match="missing column 'customer_id'"):
        engines.score(job, model, dataset(10), "Ray Data batch")
