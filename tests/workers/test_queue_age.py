"""How long the oldest waiting message has waited (``mmserve_jobs_queue_age_seconds``), in
both queues: the time a message was sent, read back from Redis; a job not yet taken, in
the embedded queue."""

from __future__ import annotations

import json
import threading
import time

import redis

from serving.settings import JobSettings, Settings
from tests.services import RedisServer
from workers.app import make_celery
from workers.jobs import Job, new_token, now
from workers.queue import SENT_HEADER, LocalQueue, RedisQueue


def job() -> Job:
    token = new_token()
    return Job(
        id=token,
        model="lr:1",
        requested="lr",
        content_type="text/csv",
        accept="application/json",
        input_key=f"jobs/{token}/input",
        created_at=now(),
        time_limit_s=60,
    )


def test_the_age_is_that_of_the_oldest_message_sent(broker: RedisServer) -> None:
    settings = Settings(_env_file=None, broker_url=broker.url, jobs=JobSettings(queue="ages"))
    queue = RedisQueue(make_celery(settings), broker.url, settings.jobs)
    with redis.Redis.from_url(broker.url, decode_responses=True) as client:
        client.delete("ages")
        assert queue.age() == 0.0
        before = time.time()
        queue.enqueue(job())
        queue.enqueue(job())
        sent = [float(json.loads(m)["headers"][SENT_HEADER]) for m in client.lrange("ages", 0, -1)]
        second, first = sent  # pushed on the left, taken from the right
        assert before <= first <= second
        assert queue.depth() == 2
        assert within(queue, first)  # the oldest's, not the newest's
        client.rpop("ages")
        assert within(queue, second)
        client.rpop("ages")
        assert queue.age() == 0.0
        client.lpush("ages", '{"headers": {}}')  # sent by an mmserve before the header: unknown
        assert queue.age() == 0.0
        client.delete("ages")


def test_the_embedded_queue_ages_a_job_until_it_is_taken() -> None:
    go = threading.Event()
    queue = LocalQueue(lambda token: go.wait(10), threads=1)
    assert queue.age() == 0.0
    running, waiting = job(), job()
    queue.enqueue(running)
    queue.enqueue(waiting)
    assert queue.depth() == 2 and queue.age() > 0
    claimed = queue.claim(waiting.id)
    assert claimed is not None
    with claimed:
        assert queue.depth() == 1
    go.set()
    queue.close(wait=True)
    assert queue.depth() == 0
    assert queue.age() == 0.0


def within(queue: RedisQueue, sent: float) -> bool:
    """Whether the queue's age is that of a message sent at ``sent``, as of its call."""
    start = time.time()
    age = queue.age()
    return start - sent <= age <= time.time() - sent
