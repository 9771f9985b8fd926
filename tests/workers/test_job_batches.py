"""An async job on a table (CSV, JSON lines, parquet, Arrow) is scored as a batch run scores
a partition: read from the store ``jobs.batch_rows`` rows at a time, each batch through the
one predict path, the answers streamed to the job's output. Its answer is the whole-input
path's, byte for byte. The runner runs in this process, against a local folder and against
moto's S3 server."""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from serving import codecs
from serving.codecs import sagemaker
from serving.errors import MMServeError
from serving.registry import Registry
from serving.settings import JobSettings
from serving.store import Store
from tests import fixtures
from workers._job_batches import ROW_GROUP, Answers, headerless
from workers.jobs import Job, JobError, Jobs, Status, key, new_token, now
from workers.queue import LocalQueue
from workers.runner import Runner

ROWS = 1_000
BATCH = 100  # rows read and scored at a time: ROWS is ten batches

INPUTS: dict[str, tuple[str, Callable[[pa.Table], bytes]]] = {
    "csv": (codecs.CSV, lambda t: codecs.encode(t, codecs.CSV)),
    "csv-headerless": (codecs.CSV, lambda t: sagemaker.encode(t, codecs.CSV)),
    "jsonl": (codecs.JSONL, lambda t: codecs.encode(t, codecs.JSONL)),
    "parquet": (codecs.PARQUET, lambda t: codecs.encode(t, codecs.PARQUET)),
    "arrow": (codecs.ARROW, lambda t: codecs.encode(t, codecs.ARROW)),
}


def rows(count: int = ROWS) -> pa.Table:
    x, _ = fixtures.numeric_data(count, seed=3)
    return fixtures.numeric_table(x)


def run_job(
    registry: Registry, model: str, data: bytes, content_type: str, accept: str, **asked: object
) -> Job:
    """Store ``data`` as a job's input and run the job here, as a worker does; ``asked``:
    more of the job's fields (``id_column``...)."""
    store = registry.store
    token = new_token()
    job = Job(
        id=token,
        model=model,
        requested=model,
        content_type=content_type,
        accept=accept,
        input_key=key(token, "input"),
        created_at=now(),
        time_limit_s=60,
    ).model_copy(update=asked)
    store.write(job.input_key, data)
    Jobs(store).create(job)
    runner = Runner(registry, LocalQueue(lambda _: None), JobSettings(batch_rows=BATCH))
    return runner.run(token)


def whole_input_answer(
    registry: Registry, model: str, data: bytes, kind: str, accept: str, header: bool = True
):
    """What the job answered before it read in batches: decode all, predict, encode (a CSV
    answer with its header row unless the input is CSV without one)."""
    predictor = registry.load(model)
    features = [f.name for f in predictor.inputs]
    answer = predictor.predict(sagemaker.decode(data, kind, features))
    if accept == codecs.CSV and header:
        return codecs.encode(answer, codecs.CSV)
    return sagemaker.encode(answer, accept)


@pytest.mark.parametrize("accept", sagemaker.ACCEPTED)
@pytest.mark.parametrize("given", sorted(INPUTS))
def test_a_table_job_in_batches_answers_the_whole_input_answer(
    registry: Registry, given: str, accept: str
) -> None:
    registry.register(fixtures.logistic(), "lr")
    kind, encode = INPUTS[given]
    data = encode(rows())
    job = run_job(registry, "lr:1", data, kind, accept)
    assert job.status is Status.SUCCEEDED, job.error
    answer = registry.store.read(job.output_key)
    expected = whole_input_answer(registry, "lr:1", data, kind, accept, given != "csv-headerless")
    if accept != codecs.ARROW:
        assert answer == expected
        return
    # An Arrow stream is written a record batch at a time: the same table, in ten batches.
    batches = list(ipc.open_stream(answer))
    assert [b.num_rows for b in batches] == [BATCH] * (ROWS // BATCH)
    assert pa.Table.from_batches(batches).equals(ipc.open_stream(expected).read_all())


@pytest.mark.parametrize("given", sorted(INPUTS))
def test_a_table_job_reaches_the_model_a_batch_at_a_time(registry: Registry, given: str) -> None:
    x, y = fixtures.numeric_data(10)
    model = fixtures.CallRows().fit(x, y)
    registry.register(model, "calls", flavor="sklearn-pickle", trust_pickle=True)
    kind, encode = INPUTS[given]
    job = run_job(registry, "calls:1", encode(rows()), kind, codecs.PARQUET)
    assert job.status is Status.SUCCEEDED, job.error
    answer = codecs.decode(registry.store.read(job.output_key), codecs.PARQUET)
    # Every row's model call had one batch of rows, padded to a multiple of 8 (row_block).
    assert answer.column("prediction").to_pylist() == [104.0] * ROWS


def with_null(at: int) -> bytes:
    table = rows()
    column = table.column("f2").to_pylist()
    column[at] = None
    return codecs.encode(table.set_column(2, "f2", pa.array(column, pa.float64())), codecs.CSV)


BAD_INPUTS = {
    "empty": (b"", codecs.CSV),
    "blank": (b"\n \n", codecs.JSONL),
    "too-few-values": (b"1,2\n3,4\n", codecs.CSV),
    "a-null-in-the-fifth-batch": (with_null(437), codecs.CSV),
    "a-later-row-too-short": (sagemaker.encode(rows(), codecs.CSV) + b"1,2\n", codecs.CSV),
    "not-parquet": (b"PAR1 but no footer", codecs.PARQUET),
    "a-cut-arrow-stream": (codecs.encode(rows(), codecs.ARROW)[:-3000], codecs.ARROW),
    "no-object-first": (b"null\n" + codecs.encode(rows(), codecs.JSONL), codecs.JSONL),
}


@pytest.mark.parametrize("given", sorted(BAD_INPUTS))
def test_a_bad_table_fails_the_job_as_the_whole_input_path_did(
    registry: Registry, given: str
) -> None:
    registry.register(fixtures.logistic(), "lr")
    data, kind = BAD_INPUTS[given]
    with pytest.raises(MMServeError) as raised:
        whole_input_answer(registry, "lr:1", data, kind, codecs.JSON)
    job = run_job(registry, "lr:1", data, kind, codecs.JSON)
    assert job.status is Status.FAILED
    # pyarrow's whole-file parquet reader says which source it could not open: a '<Buffer>'.
    message = raised.value.message.replace("Could not open Parquet input source '<Buffer>': ", "")
    assert job.error == JobError(type=type(raised.value).__name__, message=message)
    assert not registry.store.exists(job.output_key)


def test_a_null_past_the_first_batch_is_named_by_its_row_in_the_input(registry: Registry) -> None:
    registry.register(fixtures.logistic(), "lr")
    job = run_job(registry, "lr:1", with_null(437), codecs.CSV, codecs.JSON)
    assert job.error == JobError(
        type="NullValue", message="column 'f2' has a null value at row 437"
    )


def test_an_output_written_by_an_earlier_run_stays(registry: Registry, store: Store) -> None:
    registry.register(fixtures.logistic(), "lr")
    token = new_token()
    store.create(key(token, "output"), b"earlier")
    job = Job(
        id=token,
        model="lr:1",
        requested="lr",
        content_type=codecs.CSV,
        accept=codecs.CSV,
        input_key=key(token, "input"),
        created_at=now(),
        time_limit_s=60,
    )
    store.write(job.input_key, codecs.encode(rows(), codecs.CSV))
    Jobs(store).create(job)
    runner = Runner(registry, LocalQueue(lambda _: None), JobSettings(batch_rows=BATCH))
    assert runner.run(token).status is Status.SUCCEEDED
    assert store.read(job.output_key) == b"earlier"


def answers_in_batches(
    table: pa.Table, accept: str, sizes: list[int], header: bool = False
) -> bytes:
    sink = io.BytesIO()
    answers = Answers(accept, sink, header)
    start = 0
    for size in itertools.cycle(sizes):  # a job writes one batch at least
        answers.write(table.slice(start, size))
        start += size
        if start >= table.num_rows:
            break
    answers.close()
    return sink.getvalue()


def test_a_parquet_answer_in_batches_has_the_whole_answers_row_groups() -> None:
    rows = 2 * ROW_GROUP + 12_345
    rng = np.random.default_rng(0)
    table = pa.table(
        {
            "label": rng.integers(0, 2, rows),
            "proba_0": rng.random(rows),
            "proba_1": rng.random(rows),
        }
    )
    answer = answers_in_batches(table, codecs.PARQUET, [65_536, 1_000, 99_999])
    assert answer == sagemaker.encode(table, codecs.PARQUET)
    assert pq.ParquetFile(pa.BufferReader(answer)).metadata.num_row_groups == 3


@pytest.mark.parametrize("accept", [codecs.JSON, codecs.JSONL, codecs.CSV, codecs.PARQUET])
def test_answers_with_nan_and_empty_batches_are_the_whole_answers_bytes(accept: str) -> None:
    values = [0.5, float("nan"), float("inf"), -1.0, None, 2.0, 3.0]
    table = pa.table({"label": list(range(7)), "score": pa.array(values, pa.float64())})
    assert answers_in_batches(table, accept, [2, 0, 3]) == sagemaker.encode(table, accept)
    empty = table.slice(0, 0)
    assert answers_in_batches(empty, accept, [1]) == sagemaker.encode(empty, accept)


def test_a_csv_answer_in_batches_has_one_header_row_first() -> None:
    table = pa.table({"label": list(range(7)), "score": pa.array([0.5] * 7, pa.float64())})
    assert answers_in_batches(table, codecs.CSV, [2, 0, 3], header=True) == codecs.encode(
        table, codecs.CSV
    )


@pytest.mark.parametrize("given", ["csv", "jsonl", "parquet", "arrow"])
def test_a_job_keeps_the_id_and_kept_columns_in_front_of_the_answer(
    registry: Registry, given: str
) -> None:
    registry.register(fixtures.logistic(), "lr")
    table = rows(250)
    table = table.add_column(0, "id", pa.array([f"row-{i}" for i in range(250)]))
    table = table.append_column("region", pa.array(["north", "south"] * 125))
    kind, encode = INPUTS[given]
    job = run_job(
        registry, "lr:1", encode(table), kind, codecs.CSV, id_column="id", keep_columns=["region"]
    )
    assert job.status is Status.SUCCEEDED, job.error
    expected = registry.load("lr:1").predict(table, passthrough=["id", "region"])
    assert registry.store.read(job.output_key) == codecs.encode(expected, codecs.CSV)


def test_a_json_job_keeps_its_columns_too_and_positional_rows_have_none(registry: Registry) -> None:
    registry.register(fixtures.logistic(), "lr")
    table = rows(3).add_column(0, "id", pa.array([7, 8, 9]))
    records = json.dumps(table.to_pylist()).encode()
    job = run_job(registry, "lr:1", records, codecs.JSON, codecs.JSONL, id_column="id")
    assert job.status is Status.SUCCEEDED, job.error
    expected = registry.load("lr:1").predict(table, passthrough=["id"])
    assert registry.store.read(job.output_key) == codecs.encode(expected, codecs.JSONL)
    positional = json.dumps(rows(3).to_pandas().values.tolist()).encode()
    job = run_job(registry, "lr:1", positional, codecs.JSON, codecs.JSONL, id_column="id")
    assert job.error == JobError(type="MissingColumn", message="missing column 'id'")


@pytest.mark.parametrize(
    "head",
    [
        b"1,2,3\n4,5,6\n",
        b"1,2,3",
        b" 1 , 2 ,x\n",
        b",,\n",
        b"\t1,2,3\r\n",
        b"1e5,-0,nan\n",
        b"f0,f1,f2\n1,2,3\n",
        b"a,f1,c\n",
        b'"1,2",3,4\n',
        b"1,2\n",
        b"1,2,3,4\n",
        b"\n1,2,3\n",
        b"1;2;3\n",
    ],
)
def test_a_first_line_of_plain_values_is_headerless_as_the_decoder_says(head: bytes) -> None:
    # The shortcut for plain rows of values answers what decoding the first line answers.
    features = ["f0", "f1", "f2"]
    line = head[: head.find(b"\n") + 1] or head
    try:
        probe = sagemaker.decode(line, codecs.CSV, features)
        expected: object = isinstance(probe, pa.Table) and probe.num_rows > 0
    except MMServeError as err:
        expected = err.message
    try:
        found: object = headerless(head, codecs.CSV, features)
    except MMServeError as err:
        found = err.message
    assert found == expected
