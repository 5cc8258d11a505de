"""The worker registry through the API (SQLite, TestClient): GET /v1/workers (admin only, alive from the
heartbeat, a job shown to its own team only), /ready's worker count (reported, never gating) and a job's
status_detail while no live worker can take it on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from service.db import workers as workers_repo
from service.db.base import session_scope
from service.db.tables import Job, Worker
from tests.api.conftest import ADMIN_KEY, bearer, tiny_spec

ROOT = bearer(ADMIN_KEY)


def _register(settings, worker_id: str, seen_ago: float = 0.0, stopped: bool = False) -> None:
    with session_scope(settings.DATABASE_URL) as session:
        workers_repo.register(session=session, worker_id=worker_id, host="gpu-host-1", pid=4242, queues=["gpu"],
                              device="cuda (CUDA_VISIBLE_DEVICES=0)")
    with session_scope(settings.DATABASE_URL) as session:
        row = session.get(Worker, worker_id)
        row.last_seen_at = datetime.now(UTC) - timedelta(seconds=seen_ago)
        row.stopped_at = datetime.now(UTC) if stopped else None


def _job(client: TestClient, auth, dataset_id: str) -> dict:
    r = client.post("/v1/jobs", headers=auth, json={"dataset_id": dataset_id, "model_name": "m", "spec": tiny_spec()})
    assert r.status_code == 202, r.text
    return r.json()


def test_workers_listed_for_admins_only(client: TestClient, settings, make_key) -> None:
    assert client.get("/v1/workers").status_code == 401
    r = client.get("/v1/workers", headers=bearer(make_key()))  # every scope but admin
    assert r.status_code == 403 and "admin" in r.json()["detail"]
    assert client.get("/v1/workers", headers=ROOT).json() == {"items": [], "alive": 0,
                                                             "lease_seconds": settings.JOB_LEASE_SECONDS}
    lease = settings.JOB_LEASE_SECONDS
    _register(settings, "h:1:aaa")
    _register(settings, "h:2:bbb", seen_ago=lease + 5)  # killed: stopped heartbeating
    _register(settings, "h:3:ccc", stopped=True)  # clean shutdown
    body = client.get("/v1/workers", headers=bearer(make_key(["admin"], team="beta"))).json()
    assert body["alive"] == 1
    by_id = {w["id"]: w for w in body["items"]}
    assert {k: by_id["h:1:aaa"][k] for k in ("host", "pid", "queues", "device", "alive", "current_job")} == {
        "host": "gpu-host-1", "pid": 4242, "queues": ["gpu"], "device": "cuda (CUDA_VISIBLE_DEVICES=0)",
        "alive": True, "current_job": None}
    assert by_id["h:2:bbb"]["alive"] is False and by_id["h:3:ccc"]["alive"] is False
    assert by_id["h:3:ccc"]["stopped_at"] is not None and by_id["h:1:aaa"]["last_seen_at"].endswith("Z")


def test_current_job_shown_to_its_team(client: TestClient, settings, auth, dataset_id, make_key) -> None:
    _register(settings, "h:1:aaa")
    job = _job(client, auth, dataset_id)  # team alpha
    with session_scope(settings.DATABASE_URL) as session:
        row = session.get(Job, job["id"])
        row.status, row.worker, row.attempts = "running", "h:1:aaa", 1
    for headers, expected in ((ROOT, job["id"]), (bearer(make_key(["admin"], team="alpha")), job["id"]),
                              (bearer(make_key(["admin"], team="beta")), None)):
        items = client.get("/v1/workers", headers=headers).json()["items"]
        assert [w["current_job"] for w in items] == [expected]


def test_ready_reports_workers_without_gating(client: TestClient, settings) -> None:
    r = client.get("/ready")
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"database": "ok", "broker": "ok"}
    assert r.json()["workers"] == {"alive": 0, "detail": "no worker alive: queued jobs wait until one starts"}
    _register(settings, "h:1:aaa")
    _register(settings, "h:2:bbb")
    r = client.get("/ready")
    assert r.status_code == 200 and r.json()["workers"]["alive"] == 2, r.text


def test_job_says_it_waits_for_a_worker(client: TestClient, settings, auth, dataset_id) -> None:
    job = _job(client, auth, dataset_id)
    assert job["status_detail"] is None  # the 202 answer is the row as created
    got = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()
    assert (got["status"], got["status_detail"]) == ("queued", "waiting for a worker: none is alive")
    listed = client.get("/v1/jobs", headers=auth).json()["items"]
    assert [j["status_detail"] for j in listed] == ["waiting for a worker: none is alive"]

    _register(settings, "h:1:aaa")
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth).json()["status_detail"] is None

    # running on a worker that stopped heartbeating: says so until a live worker's reaper requeues it
    _register(settings, "h:9:dead", seen_ago=settings.JOB_LEASE_SECONDS + 1)
    with session_scope(settings.DATABASE_URL) as session:
        row = session.get(Job, job["id"])
        row.status, row.worker, row.attempts = "running", "h:9:dead", 1
    detail = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()["status_detail"]
    assert detail.startswith("its worker stopped heartbeating") and "none is alive" not in detail
    with session_scope(settings.DATABASE_URL) as session:
        session.get(Worker, "h:1:aaa").stopped_at = datetime.now(UTC)
    detail = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()["status_detail"]
    assert detail.endswith("(waiting for a worker: none is alive)"), detail
