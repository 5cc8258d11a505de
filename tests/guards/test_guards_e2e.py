"""Resource guards through real processes (headwise api + headwise worker, PostgreSQL, Redis): the careless spec
refused at creation, an out-of-memory training contained and failed once, team quotas and fair ordering."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.e2e.harness import expect, expect_error, make_dataset, poll_job, tiny_spec, wait_until
from tests.guards.conftest import team_key

pytestmark = pytest.mark.slow
GIB = 1024**3


def upload(stack, headers, n=96, image_size=16, name="example") -> str:
    path = make_dataset(stack.tmp / f"ds-{name}-{n}", n=n, image_size=image_size)
    with open(path, "rb") as fh:
        return expect(stack.client.post("/v1/datasets", headers=headers,
                                        files={"file": (path.name, fh)}), 201)["id"]


def job_body(dataset_id: str, spec: dict, model: str = "m") -> dict:
    return {"dataset_id": dataset_id, "model_name": model, "spec": spec}


def careless_spec() -> dict:
    spec = tiny_spec()
    spec["model"] = {"image_size": 512, "width": 64, "depth": 2}
    spec["training"] = {"batch_size": 256, "device": "cpu"}
    return spec


def test_careless_spec_is_refused_at_creation_and_the_audit_shows_the_estimate(make_stack):
    stack = make_stack()  # the default budget: 60% of this host's RAM
    ds = upload(stack, stack.auth(stack.admin_key), n=300)
    body = expect_error(stack.client.post("/v1/jobs", json=job_body(ds, careless_spec())), 422, "SpecError")
    detail = body["detail"]
    assert detail.startswith("training.batch_size: estimated peak training memory"), detail
    assert "HEADWISE_WORKER_MEMORY_BYTES=" in detail and "the largest batch_size that fits is " in detail, detail
    fits = int(detail.rsplit("the largest batch_size that fits is ", 1)[1].split()[0].rstrip(";"))
    assert 1 <= fits < 256
    assert expect(stack.client.get("/v1/jobs"), 200)["total"] == 0  # nothing was queued

    audit = expect(stack.client.post(f"/v1/datasets/{ds}/audit", json={"spec": careless_spec()}), 200)
    memory = audit["memory"]
    assert memory["fits"] is False and memory["largest_batch_size"] == fits
    assert memory["peak_bytes"] > memory["budget_bytes"] and memory["parts"]["train_step"] > 0
    assert audit["fits"] is False and audit["spec_errors"] == []  # the audit is a dry run: 200, fits false
    assert "; ".join(audit["limit_errors"]) == detail

    fixed = careless_spec()
    fixed["training"]["batch_size"] = fits
    ok = expect(stack.client.post(f"/v1/datasets/{ds}/audit", json={"spec": fixed}), 200)
    assert ok["memory"]["fits"] is True and ok["fits"] is True and not ok["spec_errors"] and not ok["limit_errors"]


def oom_spec() -> dict:
    """Cheap to start, ~1.5 GB at its first step: passes an 8 GiB estimate, meets a 700 MB hard limit."""
    spec = tiny_spec(epochs=2)
    spec["model"] = {"image_size": 128, "width": 64, "depth": 2}
    spec["training"] = {"epochs": 2, "batch_size": 128, "device": "cpu", "val_fraction": 0.2}
    return spec


def test_training_over_the_hard_limit_fails_once_with_the_oom_message(make_stack):
    stack = make_stack(HEADWISE_WORKER_MEMORY_BYTES=str(8 * GIB))
    worker_env = {"HEADWISE_WORKER_MEMORY_BYTES": str(700 * 1024**2)}  # this worker's hard limit
    stack.env.update(worker_env)
    worker = stack.start_worker()
    ds = upload(stack, stack.auth(stack.admin_key), n=160)
    job_id = expect(stack.client.post("/v1/jobs", json=job_body(ds, oom_spec())), 202)["id"]
    # the worker reports its 700 MB budget and does not claim a job estimated above it: the job says why it waits
    wait_until("the worker saw the job", lambda: job_id in worker.output(), 60)
    job = expect(stack.client.get(f"/v1/jobs/{job_id}"), 200)
    assert (job["status"], job["attempts"]) == ("queued", 0), job
    assert job["status_detail"].startswith("waiting for a worker with a memory budget of at least "), job
    assert "the 1 live worker(s) have at most 700.0 MiB (HEADWISE_WORKER_MEMORY_BYTES)" in job["status_detail"]
    workers = expect(stack.client.get("/v1/workers"), 200)["items"]
    assert [w["memory_budget_bytes"] for w in workers] == [700 * 1024**2] and workers[0]["memory_used_bytes"] > 0
    # an estimate that is wrong (simulated: the row's estimate cleared, as for a job queued before estimates
    # were stored): the worker claims it once the reaper rings again, and the hard limit is the last line
    from service.db.base import session_scope
    from service.db.tables import Job

    with session_scope(stack.env["HEADWISE_DATABASE_URL"]) as session:
        session.get(Job, job_id).memory_bytes = None
    job = poll_job(stack.client, job_id, ("failed",), timeout=240, procs=[worker, stack.api])
    assert job["attempts"] == 1, job  # deterministic: no retry, no requeue
    assert job["error"].startswith("out of memory: training ran out of host memory"), job["error"]
    assert "HEADWISE_WORKER_MEMORY_BYTES=734003200" in job["error"]
    assert "lower training.batch_size to " in job["error"], job["error"]
    assert "can't allocate memory" in job["error"] or "MemoryError" in job["error"], job["error"]
    assert expect(stack.client.get("/ready"), 200)["status"] == "ok"
    # the worker survived (its child failed, not the worker): the next job runs on it
    small = expect(stack.client.post("/v1/jobs", json=job_body(ds, tiny_spec(epochs=1), "ok")), 202)["id"]
    assert poll_job(stack.client, small, ("succeeded",), timeout=180, procs=[worker])["attempts"] == 1
    time.sleep(1)
    assert expect(stack.client.get(f"/v1/jobs/{job_id}"), 200)["attempts"] == 1  # the reaper left it alone


def test_team_quotas_usage_and_fair_order(make_stack):
    stack = make_stack(HEADWISE_TEAM_MAX_ACTIVE_JOBS="4", HEADWISE_JOB_MAX_SAMPLE_EPOCHS="2000")
    alpha, beta = team_key(stack, "alpha"), team_key(stack, "beta")
    ds_a, ds_b = upload(stack, alpha, name="a"), upload(stack, beta, name="b")
    spec = tiny_spec(epochs=1)

    a_jobs = [expect(stack.client.post("/v1/jobs", headers=alpha, json=job_body(ds_a, spec, f"a{i}")), 202)["id"]
              for i in range(4)]
    body = expect_error(stack.client.post("/v1/jobs", headers=alpha, json=job_body(ds_a, spec)), 429,
                        "TooManyRequests")
    assert "team 'alpha' has 4 active (queued + running) jobs; the limit is 4" in body["detail"], body
    assert "HEADWISE_TEAM_MAX_ACTIVE_JOBS" in body["detail"]
    usage = expect(stack.client.get("/v1/usage", headers=alpha), 200)
    assert usage["team"] == "alpha" and usage["active_jobs"]["used"] == 4 and usage["active_jobs"]["limit"] == 4
    assert usage["storage_bytes"]["datasets"] > 0 and usage["storage_bytes"]["artifacts"] == 0

    big = tiny_spec(epochs=50)  # 50 epochs x 96 samples = 4800 > 2000
    body = expect_error(stack.client.post("/v1/jobs", headers=beta, json=job_body(ds_b, big)), 422)
    assert body["detail"].startswith("training.epochs: 50 epochs x 96 samples = 4800 exceeds the per-job "
                                     "limit of 2000 (HEADWISE_JOB_MAX_SAMPLE_EPOCHS)"), body
    b_job = expect(stack.client.post("/v1/jobs", headers=beta, json=job_body(ds_b, spec, "b")), 202)["id"]
    assert expect(stack.client.get("/v1/usage", headers=beta), 200)["active_jobs"]["used"] == 1

    worker = stack.start_worker()  # one worker, one job at a time: the order is the claim order
    started = {}
    for job_id, headers in [*((j, alpha) for j in a_jobs), (b_job, beta)]:
        with httpx.Client(base_url=stack.base_url, headers=headers, timeout=60) as client:
            job = poll_job(client, job_id, ("succeeded",), timeout=240, procs=[worker])
        started[job_id] = job["started_at"]
    order = sorted(started, key=started.get)
    # beta's single job does not wait behind alpha's four: alpha's oldest first, then beta, then alpha's rest
    assert order == [a_jobs[0], b_job, *a_jobs[1:]], order
    after = expect(stack.client.get("/v1/usage", headers=alpha), 200)
    assert after["active_jobs"]["used"] == 0 and after["storage_bytes"]["artifacts"] > 0


def test_storage_quota_refuses_an_upload_with_use_and_limit(make_stack, tmp_path):
    path = make_dataset(tmp_path / "sized", n=96)
    size = path.stat().st_size
    stack = make_stack(HEADWISE_TEAM_MAX_STORAGE_BYTES=str(int(size * 1.5)))
    alpha, beta = team_key(stack, "alpha"), team_key(stack, "beta")
    upload(stack, alpha, name="first")
    with open(path, "rb") as fh:
        body = expect_error(stack.client.post("/v1/datasets", headers=alpha, files={"file": (path.name, fh)}),
                            413, "PayloadTooLarge")
    assert body["detail"].startswith(f"storage quota: team 'alpha' stores {size} bytes"), body
    assert f"the limit is {int(size * 1.5)} (HEADWISE_TEAM_MAX_STORAGE_BYTES)" in body["detail"]
    assert expect(stack.client.get("/v1/datasets", headers=alpha), 200)["total"] == 1
    assert not any((stack.data_dir / "tmp").iterdir())
    upload(stack, beta, name="beta")  # another team's quota is its own
    usage = expect(stack.client.get("/v1/usage", headers=alpha), 200)["storage_bytes"]
    assert usage["used"] == size and usage["limit"] == int(size * 1.5)
    wait_until("API ready", lambda: stack.client.get("/ready").status_code == 200, 10)

