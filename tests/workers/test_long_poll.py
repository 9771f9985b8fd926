"""Long polls of a job's status (``GET /v1/jobs/{token}?wait=S``) on a real ``mmserve serve``
and ``mmserve worker`` over Redis: one request answers once the job finished, or with its
record as it is when the wait is over; the wait is bounded."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.services import mmserve_worker
from tests.workers.stack import Stack, submit


@pytest.fixture(scope="module")
def worker(stack: Stack) -> Iterator[None]:
    with mmserve_worker(stack.env, str(stack.logs / "worker.log"), "--concurrency", "1"):
        yield


def test_a_long_poll_answers_once_the_job_finished(stack: Stack, worker: None) -> None:
    # The model takes 2 s: a plain status read would still say queued or running.
    token = submit(stack, "sleepy")
    response = stack.client.get(f"/v1/jobs/{token}", params={"wait": 20})
    assert response.status_code == 200
    record = response.json()
    assert record["job_id"] == token
    assert record["status"] == "succeeded", record["error"]
    assert record["finished_at"] is not None


def test_a_long_poll_of_a_finished_job_answers_its_record(stack: Stack, worker: None) -> None:
    token = submit(stack, "lr")
    first = stack.client.get(f"/v1/jobs/{token}", params={"wait": 20}).json()
    again = stack.client.get(f"/v1/jobs/{token}", params={"wait": 20}).json()
    assert first["status"] == again["status"] == "succeeded"
    assert again == first


def test_a_long_poll_answers_the_record_as_it_is_after_its_wait(stack: Stack, worker: None) -> None:
    token = submit(stack, "sleepy")
    record = stack.client.get(f"/v1/jobs/{token}", params={"wait": 0.2}).json()
    assert record["job_id"] == token
    assert record["status"] in ("queued", "running")
    assert record["finished_at"] is None
    done = stack.client.get(f"/v1/jobs/{token}", params={"wait": 20}).json()
    assert done["status"] == "succeeded"


@pytest.mark.parametrize(
    ("wait", "error"),
    [
        ("20.5", "query.wait: Input should be less than or equal to 20"),
        ("-1", "query.wait: Input should be greater than or equal to 0"),
        ("soon", "query.wait: Input should be a valid number, unable to parse string as a number"),
    ],
)
def test_a_wait_out_of_bounds_is_refused_naming_it(stack: Stack, wait: str, error: str) -> None:
    token = submit(stack, "lr")
    response = stack.client.get(f"/v1/jobs/{token}", params={"wait": wait})
    assert response.status_code == 422
    assert response.json() == {"error": error}


def test_a_long_poll_of_an_unknown_job_is_a_404(stack: Stack) -> None:
    response = stack.client.get(f"/v1/jobs/{'0' * 32}", params={"wait": 1})
    assert response.status_code == 404
