"""Workers seen and supervised, with real processes:
- `headwise serve` (embedded: SQLite, SQLite broker): kill -9 its whole worker (the Celery parent and its
  training child) mid-training -> serve starts a new worker, whose reaper requeues the job once its lease
  expires; the job resumes from its checkpoint and ends with exactly one version;
- distributed (PostgreSQL + Redis, `headwise api` + two `headwise worker`): the worker running the job dies,
  the OTHER one's reaper requeues it and finishes it; GET /v1/workers shows who died."""

from __future__ import annotations

import os
import secrets
import signal
from pathlib import Path

import httpx
import pytest

from tests.chaos.conftest import FAST, Stack, chaos_spec
from tests.e2e.harness import (
    Proc,
    base_env,
    expect,
    free_port,
    headwise_cmd,
    make_dataset,
    pid_running,
    poll_job,
    wait_healthy,
    wait_until,
)

pytestmark = pytest.mark.slow
EPOCHS = 60


def _mid_training(client: httpx.Client, job_id: str, epoch: int = 3):
    def check():
        job = expect(client.get(f"/v1/jobs/{job_id}"), 200)
        return job if job["status"] == "running" and job["progress"].get("epoch", 0) >= epoch else None

    return check


def _alive_workers(client: httpx.Client) -> list[dict]:
    return [w for w in expect(client.get("/v1/workers"), 200)["items"] if w["alive"]]


def test_serve_restarts_its_killed_worker_and_the_job_finishes_once(tmp_path: Path) -> None:
    port, admin = free_port(), "scale-admin-" + secrets.token_urlsafe(16)
    env = base_env(HEADWISE_DATA_DIR=str(tmp_path / "data"), HEADWISE_HOST="127.0.0.1", HEADWISE_PORT=str(port),
                   HEADWISE_ADMIN_KEY=admin, **FAST)
    serve = Proc("serve", headwise_cmd("serve"), env, tmp_path / "serve.log")
    base = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {admin}"}, timeout=60)
    try:
        wait_healthy(base, serve)
        first = wait_until("the supervised worker to register", lambda: _alive_workers(client), 90, proc=serve)
        assert len(first) == 1 and first[0]["queues"] == ["gpu"] and first[0]["device"].startswith("cpu"), first
        ready = expect(client.get("/ready"), 200)
        assert ready["workers"]["alive"] == 1, ready

        path = make_dataset(tmp_path / "dataset", n=160)
        with open(path, "rb") as fh:
            dataset = expect(client.post("/v1/datasets", files={"file": (path.name, fh)}), 201)["id"]
        body = {"dataset_id": dataset, "model_name": "supervised", "spec": chaos_spec(EPOCHS)}
        job_id = expect(client.post("/v1/jobs", json=body), 202)["id"]
        before = wait_until("the job to train 3 epochs", _mid_training(client, job_id), 150, 0.2, proc=serve)
        running_on = [w for w in _alive_workers(client) if w["current_job"] == job_id]
        assert [w["id"] for w in running_on] == [first[0]["id"]], running_on

        worker_pids = serve.descendants()  # the Celery parent and its training child
        assert len(worker_pids) >= 2 and first[0]["pid"] in worker_pids, (worker_pids, first)
        for pid in worker_pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_until("the killed worker to be gone", lambda: not any(pid_running(p) for p in worker_pids), 15)

        wait_until("serve to restart its worker", lambda: "restarting it in" in serve.output(), 30, proc=serve)
        second = wait_until("a new worker to register",
                            lambda: [w for w in _alive_workers(client) if w["id"] != first[0]["id"]], 90, proc=serve)
        assert second[0]["pid"] not in worker_pids

        done = poll_job(client, job_id, ["succeeded"], timeout=240, procs=[serve])
        assert done["attempts"] == 2, done
        assert [h["epoch"] for h in done["history"]] == list(range(1, EPOCHS + 1))
        killed_at = len(before["history"])
        assert done["history"][:killed_at] == before["history"], "epochs before the kill were retrained"
        versions = expect(client.get("/v1/models/supervised"), 200)["versions"]
        assert [(v["version"], v["job_id"]) for v in versions] == [(1, job_id)]
        workers = {w["id"]: w for w in expect(client.get("/v1/workers"), 200)["items"]}
        assert workers[first[0]["id"]]["alive"] is False and workers[second[0]["id"]]["alive"] is True
    finally:
        client.close()
        serve.stop()
    assert not any(pid_running(p) for p in serve.descendants())


def test_distributed_job_survives_one_of_two_workers(stack: Stack) -> None:
    procs = [stack.start_worker(), stack.start_worker()]
    wait_until("two workers to register", lambda: len(_alive_workers(stack.client)) == 2, 90, proc=procs[0])
    dataset = stack.upload_example()
    job_id = stack.create_job(dataset, EPOCHS, "two-workers")
    wait_until("the job to train 3 epochs", _mid_training(stack.client, job_id), 150, 0.2)

    [busy] = [w for w in _alive_workers(stack.client) if w["current_job"] == job_id]
    victim = next(p for p in procs if p.pid == busy["pid"])  # `headwise worker` execs Celery: same pid
    survivor = next(p for p in procs if p is not victim)
    stack.kill(victim)

    done = poll_job(stack.client, job_id, ["succeeded"], timeout=240, procs=[survivor, stack.api])
    assert done["attempts"] == 2 and len(done["history"]) == EPOCHS, done
    assert "requeued" in survivor.output()
    versions = expect(stack.client.get("/v1/models/two-workers"), 200)["versions"]
    assert [(v["version"], v["job_id"]) for v in versions] == [(1, job_id)]
    workers = {w["pid"]: w for w in expect(stack.client.get("/v1/workers"), 200)["items"]}
    assert workers[victim.pid]["alive"] is False and workers[survivor.pid]["alive"] is True
    assert workers[survivor.pid]["current_job"] is None  # finished
