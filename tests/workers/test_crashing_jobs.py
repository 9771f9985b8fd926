"""A job whose input crashed a native parser, run by a real ``mmserve worker``: the job fails
once, naming the line, and the worker goes on to the next job."""

from __future__ import annotations

import pytest

from tests.services import mmserve_worker
from tests.serving.http.test_crashing_bodies import ROW, null_at_second_block
from tests.workers.stack import Stack, submit, wait


@pytest.mark.slow
def test_a_null_line_at_a_blocks_start_fails_the_job_not_the_worker(stack: Stack) -> None:
    body, line = null_at_second_block()
    with mmserve_worker(stack.env, str(stack.logs / "worker.log"), "--concurrency", "1") as proc:
        bad = submit(stack, "lr", body, **{"content-type": "application/jsonlines"})
        record = wait(stack, [bad])[bad]
        assert (record["status"], record["attempts"]) == ("failed", 1)
        assert record["error"]["type"] == "DecodeError"
        assert f"line {line} is not a JSON object (one object per line)" in (
            record["error"]["message"]
        )
        good = submit(stack, "lr", ROW * 3, **{"content-type": "application/jsonlines"})
        assert wait(stack, [good])[good]["status"] == "succeeded"
        assert proc.poll() is None
