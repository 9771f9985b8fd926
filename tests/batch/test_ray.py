"""Ray Data scores a dataset by the one predict path (batch.ray): the batch runner's answers
bit for bit, the version pinned on the driver, bad rows set aside or failing the job."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import ray
import ray.data

from batch.parts import BadRow
from batch.ray import Scorer, pin
from tests.batch import engine_runs
from tests.batch.engine_runs import World, by_id, dataset, with_nulls

pytestmark = [
    pytest.mark.slow,  # a Ray cluster: its GCS, raylet and worker processes
    # Ray 2.60's own DataContext() sets its deprecated fields (use_push_based_shuffle,
    # use_polars) to their defaults when it is first made, warning from ray.data.context
    # itself: nothing a caller passes avoids it.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context"),
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def scored(ds: ray.data.Dataset, actors: int = 2, **kwargs: object) -> pa.Table:
    """``ds`` scored by up to ``actors`` Scorer actors built with ``kwargs`` (batches of
    25,000 rows), in id order."""
    out = ds.map_batches(
        Scorer,
        fn_constructor_kwargs=kwargs,
        batch_format="pyarrow",
        batch_size=25_000,
        # At least one actor: Ray may read the small dataset as one block, one actor's work.
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
        num_cpus=0.5,  # two actors leave a CPU for Ray's own tasks (listing the files)
    )
    return by_id(pa.concat_tables(ray.get(out.to_arrow_refs())))


def test_ray_scores_what_the_batch_runner_scores_with_the_version_pinned_by_pin(
    cluster: None, world: World
) -> None:
    ref = pin("churn@production", world.settings)
    assert ref == "churn:1"
    ds = ray.data.read_parquet(str(world.input))
    # The alias moves before any actor starts: the answers are churn:1's all the same.
    world.registry.set_alias("churn", "production", 2)
    try:
        got = scored(ds, ref=ref, passthrough=["id"], settings=world.settings)
        assert pin("churn@production", world.settings) == "churn:2"
    finally:
        world.registry.set_alias("churn", "production", 1)
    assert got.num_rows == engine_runs.ROWS
    assert got.schema == world.expected.schema
    assert got.equals(world.expected)  # every bit of every answer


def test_bad_rows_are_set_aside_with_their_ids_and_reasons(
    cluster: None, world: World, tmp_path: Path
) -> None:
    table = with_nulls(dataset(1_000), "income", [7, 600])
    rejects = tmp_path / "rejects"
    got = scored(
        ray.data.from_arrow(table), actors=1, ref="churn:1", passthrough=["id"],
        on_error="skip", rejects=str(rejects), settings=world.settings,
    )  # fmt: skip
    assert got.column("id").to_pylist() == [i for i in range(1_000) if i not in (7, 600)]
    kept = table.filter(pc.is_valid(table["income"]))
    assert got.equals(by_id(world.registry.load("churn:1").predict(kept, ["id"])))
    set_aside = pq.read_table(rejects).sort_by("id")
    assert set_aside.column_names == ["id", "row", "reason"]
    assert set_aside.column("id").to_pylist() == [7, 600]
    assert set_aside.column("row").to_pylist() == [7, 600]  # one batch: its rows are the ids
    assert set_aside.column("reason").to_pylist() == ["column 'income' has a null value"] * 2


def test_a_bad_row_fails_the_job_naming_it(cluster: None, world: World) -> None:
    table = with_nulls(dataset(100), "income", [7])
    message = "Ray Data batch row 7: column 'income' has a null value (id=7)"
    context = ray.data.DataContext.get_current()
    context.raise_original_map_exception = True  # the BadRow itself, not Ray's wrapper of it
    try:
        with pytest.raises(BadRow, match=re.escape(message)):
            scored(ray.data.from_arrow(table), actors=1, ref="churn:1", passthrough=["id"],
                   settings=world.settings)  # fmt: skip
    finally:
        context.raise_original_map_exception = False
