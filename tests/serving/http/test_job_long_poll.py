"""A long poll of a job's status in embedded mode (no broker: the jobs run in the server's
own threads, which tell the waiting requests themselves)."""

from __future__ import annotations

from tests.serving.http.conftest import Server


def test_an_embedded_long_poll_answers_once_the_job_finished(server: Server) -> None:
    submitted = server.client.post(
        "/v1/models/lr/async",
        content=b"0.5,-1.25,2.0,0.0,3.5\n",
        headers={"content-type": "text/csv", "accept": "application/json"},
    )
    assert submitted.status_code == 202, submitted.text
    token = submitted.json()["job_id"]
    record = server.client.get(f"/v1/jobs/{token}", params={"wait": 20}).json()
    assert record["status"] == "succeeded", record["error"]
    result = server.client.get(f"/v1/jobs/{token}/result")
    real_time = server.client.post(
        "/v1/models/lr:predict", json={"instances": [[0.5, -1.25, 2.0, 0.0, 3.5]]}
    )
    assert result.json()["predictions"] == real_time.json()["predictions"]
