"""PostgreSQL down (a PRIVATE server, crashed with `pg_ctl stop -m immediate`) while a job trains: /ready says 503
naming the database, /health stays 200, authenticated requests get 503 with Retry-After (never 500, never 401),
an upload leaves no file behind; once PostgreSQL is back everything answers again and the job still finishes
with exactly one model version."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.chaos.conftest import Stack, started_stack
from tests.chaos.servers import PrivatePostgres
from tests.conftest import unavailable
from tests.e2e.harness import expect, expect_error, poll_job, wait_until

pytestmark = pytest.mark.slow
EPOCHS = 80
USER_SCOPES = ["datasets:write", "jobs:write", "models:read", "predict"]


@pytest.fixture
def postgres():
    try:
        server = PrivatePostgres().start()
    except (RuntimeError, OSError, AssertionError) as exc:
        unavailable(f"cannot run a private PostgreSQL server: {exc}")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def stack(tmp_path: Path, postgres: PrivatePostgres, shared_redis_url: str):
    with started_stack(tmp_path, postgres.create_database("headwise"), shared_redis_url) as s:
        yield s


def assert_unavailable(resp: httpx.Response) -> None:
    body = expect_error(resp, 503, "ServiceUnavailable")
    assert "database" in body["detail"], body
    assert resp.headers.get("retry-after"), resp.headers


def test_postgres_down_is_503_and_recovers(stack: Stack, postgres: PrivatePostgres) -> None:
    worker = stack.start_worker()
    keys = [expect(stack.client.post("/v1/keys", json={"name": f"user{i}", "scopes": USER_SCOPES}), 201)["key"]
            for i in range(2)]
    used, unused = (httpx.Client(base_url=stack.base_url, headers=stack.auth(k), timeout=30) for k in keys)
    dataset = stack.upload_example()
    job_id = stack.create_job(dataset, EPOCHS, "chaos-pg")
    wait_until("the job to train 2 epochs", lambda: stack.job(job_id)["progress"].get("epoch", 0) >= 2, 150,
               interval=0.2, proc=worker)
    assert used.get("/v1/datasets").status_code == 200  # this key's lookup is now cached (5 s)

    postgres.stop("immediate")
    try:
        ready = stack.client.get("/ready")
        assert ready.status_code == 503, ready.text
        assert ready.json()["checks"]["database"].startswith("unreachable"), ready.json()
        assert "database" in ready.json()["detail"]
        assert stack.client.get("/health").status_code == 200
        assert_unavailable(used.get("/v1/datasets"))  # cached key: the query fails
        assert_unavailable(unused.get("/v1/jobs"))  # uncached key: the key lookup itself fails
        assert_unavailable(stack.client.get(f"/v1/jobs/{job_id}"))  # HEADWISE_ADMIN_KEY needs no lookup
        assert_unavailable(stack.client.post("/v1/jobs", json={"dataset_id": dataset, "model_name": "x",
                                                                "spec": {"tasks": [{"name": "category",
                                                                                    "type": "multiclass"}]}}))
        with open(stack.tmp / "dataset" / "example.zip", "rb") as fh:
            assert_unavailable(stack.client.post("/v1/datasets", files={"file": ("again.zip", fh)}))
        assert not any((stack.data_dir / "tmp").iterdir()), "the refused upload left a file in tmp/"
        assert len(list((stack.data_dir / "datasets").iterdir())) == 1, "the refused upload left a dataset dir"
        time.sleep(3)  # an outage of a few seconds while the worker trains
        assert stack.api.alive() and worker.alive()
    finally:
        postgres.start()

    wait_until("/ready after PostgreSQL is back", lambda: stack.client.get("/ready").status_code == 200, 60)
    assert used.get("/v1/datasets").status_code == 200 and unused.get("/v1/jobs").status_code == 200
    done = poll_job(used, job_id, ["succeeded"], timeout=180, procs=[worker, stack.api])
    assert [h["epoch"] for h in done["history"]] == list(range(1, EPOCHS + 1))
    versions = expect(used.get("/v1/models/chaos-pg"), 200)["versions"]
    assert [(v["version"], v["job_id"]) for v in versions] == [(1, job_id)]
    used.close()
    unused.close()
