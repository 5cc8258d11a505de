"""Restart Redis during a job (a PRIVATE redis-server that keeps nothing on disk, so the restart loses every
message): the running job finishes, the job that was waiting in the queue is not lost (the worker's reaper rings
the doorbell again for queued jobs whose message vanished), a job submitted while Redis is down is refused with a
clear 503 instead of being silently lost, and the queue works again after the restart."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.chaos.conftest import Stack, started_stack
from tests.chaos.servers import PrivateRedis
from tests.conftest import unavailable
from tests.e2e.harness import expect, expect_error, poll_job, wait_until

pytestmark = pytest.mark.slow
# The running job must outlast the outage on any machine: not a number of epochs (60 took 1.5 s on a fast one and
# ended before Redis was killed) but a time budget. It trains until training.max_minutes, then registers.
BUDGET_MINUTES = 0.25


@pytest.fixture
def redis_server():
    try:
        server = PrivateRedis().start()
    except (RuntimeError, AssertionError) as exc:
        unavailable(f"cannot start a private redis-server: {exc}")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def stack(tmp_path: Path, shared_pg_url: str, redis_server: PrivateRedis):
    with started_stack(tmp_path, shared_pg_url, redis_server.url) as s:
        yield s


def test_redis_restart_during_a_job_loses_nothing(stack: Stack, redis_server: PrivateRedis) -> None:
    worker = stack.start_worker()
    dataset = stack.upload_example()
    running = stack.create_job(dataset, 10000, "chaos-redis", max_minutes=BUDGET_MINUTES)
    waiting = stack.create_job(dataset, 3, "chaos-redis")  # queued behind the running one (one worker slot)

    def mid_training():
        job = stack.job(running)
        return job["status"] == "running" and job["progress"].get("epoch", 0) >= 2

    wait_until("the first job to train 2 epochs", mid_training, 150, interval=0.2, proc=worker)
    assert stack.job(waiting)["status"] == "queued"

    redis_server.kill()  # every queued message is gone with it
    ready = stack.client.get("/ready")
    assert ready.status_code == 503 and ready.json()["checks"]["broker"] != "ok", ready.text
    assert stack.job(running)["status"] == "running"  # the database still answers
    refused = stack.client.post("/v1/jobs", json={"dataset_id": dataset, "model_name": "chaos-redis",
                                                   "spec": {"tasks": [{"name": "category", "type": "multiclass"}]}})
    body = expect_error(refused, 503, "ServiceUnavailable")
    assert "broker" in body["detail"]
    failed = [j for j in expect(stack.client.get("/v1/jobs?status=failed"), 200)["items"]]
    assert len(failed) == 1 and "could not enqueue" in failed[0]["error"]  # told, not silently queued forever
    time.sleep(2)
    redis_server.start()  # same port, empty
    wait_until("/ready after the restart", lambda: stack.client.get("/ready").status_code == 200, 60)
    assert stack.job(running)["status"] == "running", "the job ended before the outage did: raise BUDGET_MINUTES"

    first = poll_job(stack.client, running, ["succeeded"], timeout=180, procs=[worker, stack.api])
    second = poll_job(stack.client, waiting, ["succeeded"], timeout=120, procs=[worker, stack.api])
    assert first["model"]["version"] != second["model"]["version"]
    third = poll_job(stack.client, stack.create_job(dataset, 2, "chaos-redis"), ["succeeded"], timeout=120,
                     procs=[worker, stack.api])
    assert "job(s) again" in worker.output()  # the reaper noticed the lost message and rang again
    versions = expect(stack.client.get("/v1/models/chaos-redis"), 200)["versions"]
    assert sorted(v["job_id"] for v in versions) == sorted([running, waiting, third["id"]])
    assert first["attempts"] == 1 and second["attempts"] == 1
